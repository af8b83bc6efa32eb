//! The media engine (media B2BUA): a WebRTC leg (ICE + DTLS-SRTP) toward XMPP/Jingle peers and
//! a plain RTP leg toward SIP, with codec passthrough or transcoding between them.
//!
//! Parts: codecs and transcoding (`codec`), RTP parsing, per-leg rewriting and RTCP (`rtp`),
//! the adaptive jitter buffer (`jitter`), RFC 4733 relay and detection (`dtmf`), symmetric RTP
//! latching for the SIP leg (`latch`), the media port allocator (`ports`), SDES-SRTP keying for
//! the SIP leg (`sdes`), the WebRTC leg (`webrtc`), and the bridge that joins a WebRTC leg and a
//! SIP leg for one call with the API the call layer drives (`bridge`).

pub mod bridge;
pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod latch;
pub mod ports;
pub mod rtp;
pub mod sdes;
pub mod webrtc;
