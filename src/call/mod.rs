//! The call layer: the only place where the two protocols meet. One call joins a Jingle
//! session on the XMPP side, a SIP dialog on the other and the media bridge between them.
//!
//! * `session.rs`: one call's pure state machine (named phases, outputs for the driver).
//! * `engine.rs`: every call, pure — sessions by [`session::CallKey`], indexes, timers,
//!   callee devices, counters, one tracing span per call.
//! * `manager.rs`: the driver — the only part with tasks, channels and the clock.
//! * `reason.rs` (SIP status ⇄ Jingle reason), `jingle_media.rs` (Jingle ⇄ media types),
//!   `sdp_media.rs` (SDP ⇄ media types), `presence.rs` (users' devices and their caps).

pub mod engine;
pub mod jingle_media;
pub mod manager;
pub mod presence;
pub mod reason;
pub mod sdp_media;
pub mod session;
