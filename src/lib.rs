//! xmpp-sip-gateway: an XMPP external component (XEP-0114) bridging XMPP and SIP.
//! The binary (`main.rs`) only wires these modules together.
#![forbid(unsafe_code)]

/// The product's name, as every side announces it: the XMPP version reply (XEP-0092), the SIP
/// `User-Agent` and the admin `/about/version`. At the crate root so that `sip/` and `xmpp/`
/// share it without importing each other.
pub const PRODUCT_NAME: &str = "xmpp-sip-gateway";

pub mod admin;
pub mod call;
pub mod config;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod sip;
pub mod xmpp;
