//! The SIP side: a user agent with its own transport, RFC 3261 transactions, digest
//! authentication and upstream registration. Messages are parsed and printed with `rsip`;
//! everything rsip lacks is here, as pure state machines driven by `transport.rs`. It knows
//! nothing of XMPP: the call layer (`crate::call`) drives its calls through `service.rs`.
pub mod auth;
pub mod dialog;
pub mod message;
pub mod policy;
pub mod registration;
pub mod sdp;
pub mod service;
pub mod transaction;
pub mod transport;
pub mod ua;
