//! The media engine (media B2BUA): a WebRTC leg (ICE + DTLS-SRTP) toward XMPP/Jingle peers and
//! a plain RTP leg toward SIP, with codec passthrough or transcoding between them.
//!
//! Landed so far, each with its tests: codecs and transcoding (`codec`), RTP parsing, per-leg
//! rewriting and RTCP (`rtp`), the adaptive jitter buffer (`jitter`), RFC 4733 relay (`dtmf`),
//! symmetric RTP latching for the SIP leg (`latch`),
//! the media port allocator (`ports`) and the WebRTC leg (`webrtc`). The bridge that joins two
//! legs for a call, and its API for the call layer, come next.

pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod latch;
pub mod ports;
pub mod rtp;
pub mod webrtc;
