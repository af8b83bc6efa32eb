//! xmpp-sip-gateway: an XMPP external component (XEP-0114) bridging XMPP and SIP.
//! The binary (`main.rs`) only wires these modules together.
#![forbid(unsafe_code)]

pub mod admin;
pub mod call;
pub mod config;
pub mod media;
pub mod metrics;
pub mod sip;
pub mod xmpp;
