//! The XMPP side: the XEP-0114 link (the only XMPP I/O), the stanza router (the one place that
//! decides where a stanza goes: its own answers, or a typed event for the call layer), and the
//! wire models (`jingle`, `disco`, `stanza`, `address`). It knows nothing of SIP or media: the
//! call layer (`crate::call`) converts.
pub mod address;
pub mod depth;
pub mod disco;
pub mod jingle;
pub mod link;
pub mod router;
pub mod stanza;
