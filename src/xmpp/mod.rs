//! The XMPP side: the XEP-0114 link (the only XMPP I/O), the stanza router and what it answers.
pub mod address;
pub mod disco;
pub mod jingle;
pub mod link;
pub mod router;
pub mod stanza;
