//! The call layer: one XMPP ⇄ SIP call, joining Jingle signalling, SIP dialogs and the media
//! bridge.

pub mod jingle_media;
pub mod manager;
pub mod presence;
pub mod reason;
pub mod sdp_media;
