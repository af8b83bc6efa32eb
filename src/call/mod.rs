//! The call layer: one XMPP ⇄ SIP call, joining Jingle signalling, SIP dialogs and the media
//! bridge.

pub mod manager;
pub mod presence;
pub mod sdp_media;
