//! Small helpers to read and build stanzas on top of minidom. Owns the namespace constants and
//! the stanza-error shape of RFC 6120 §8.3; it knows nothing about what a stanza means.

use minidom::Element;
use minidom::rxml::NcName;

/// Default namespace of a XEP-0114 stream.
pub const NS_COMPONENT: &str = "jabber:component:accept";
/// Stanzas from `jabber:client` are accepted too (Prosody passes some through unchanged).
pub const NS_CLIENT: &str = "jabber:client";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_VERSION: &str = "jabber:iq:version";
pub const NS_GATEWAY: &str = "jabber:iq:gateway";

/// Attribute names are compile-time constants; this turns one into the `NcName` minidom wants.
pub fn nc(name: &'static str) -> NcName {
    NcName::try_from(name).expect("attribute names used in this crate are valid NCNames")
}

/// Builds an element in `ns` with attributes, skipping `None` values.
pub fn elem(name: &str, ns: &str, attrs: &[(&'static str, Option<&str>)]) -> Element {
    let mut b = Element::builder(name, ns);
    for (k, v) in attrs {
        if let Some(v) = v {
            b = b.attr(nc(k), *v);
        }
    }
    b.build()
}

/// A text-only child such as `<name>x</name>`.
pub fn text_elem(name: &str, ns: &str, text: &str) -> Element {
    Element::builder(name, ns).append(text).build()
}

/// The three stanza kinds; anything else at the top level of the stream is `Other`. The type is
/// the metrics label ([`crate::metrics::StanzaKind`]), so the counters need no XMPP; which
/// element is which kind is decided here.
pub use crate::metrics::StanzaKind as Kind;

impl Kind {
    pub fn of(el: &Element) -> Kind {
        if !(el.has_ns(NS_COMPONENT) || el.has_ns(NS_CLIENT)) {
            return Kind::Other;
        }
        match el.name() {
            "iq" => Kind::Iq,
            "message" => Kind::Message,
            "presence" => Kind::Presence,
            _ => Kind::Other,
        }
    }
}

/// Error `type` attribute (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Cancel,
    Modify,
    Wait,
    Auth,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
            ErrorType::Auth => "auth",
        }
    }
}

/// A stanza error: condition (an element of `urn:ietf:params:xml:ns:xmpp-stanzas`), type and
/// an optional human-readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: &'static str,
    pub text: Option<String>,
}

impl StanzaError {
    pub fn new(kind: ErrorType, condition: &'static str) -> Self {
        StanzaError {
            kind,
            condition,
            text: None,
        }
    }
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    pub fn service_unavailable() -> Self {
        Self::new(ErrorType::Cancel, "service-unavailable")
    }
    pub fn bad_request(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Modify, "bad-request").with_text(text)
    }
    pub fn to_element(&self, ns: &str) -> Element {
        let mut b = Element::builder("error", ns)
            .attr(nc("type"), self.kind.as_str())
            .append(Element::bare(self.condition, NS_STANZAS));
        if let Some(t) = &self.text {
            b = b.append(
                Element::builder("text", NS_STANZAS)
                    .append(t.as_str())
                    .build(),
            );
        }
        b.build()
    }
}

/// The reply skeleton for `stanza`: same name, `id`, swapped `from`/`to`, given `type`.
pub fn reply(stanza: &Element, type_: &str) -> Element {
    elem(
        stanza.name(),
        &stanza.ns(),
        &[
            ("type", Some(type_)),
            ("id", stanza.attr("id")),
            ("from", stanza.attr("to")),
            ("to", stanza.attr("from")),
        ],
    )
}

/// An error reply to `stanza` (RFC 6120 §8.3.1).
pub fn error_reply(stanza: &Element, err: &StanzaError) -> Element {
    let mut r = reply(stanza, "error");
    r.append_child(err.to_element(&stanza.ns()));
    r
}

/// The defined condition of an error stanza or stream error, if any.
pub fn error_condition(error: &Element, ns: &str) -> Option<String> {
    error
        .children()
        .find(|c| c.has_ns(ns) && c.name() != "text")
        .map(|c| c.name().to_string())
}

/// The `<text/>` of an error stanza or stream error, if any.
pub fn error_text(error: &Element, ns: &str) -> Option<String> {
    error.get_child("text", ns).map(|t| t.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_addresses() {
        let iq: Element = "<iq xmlns='jabber:component:accept' type='get' id='a1' from='u@example.com/r' to='gw.example.com'><x xmlns='urn:x'/></iq>".parse().unwrap();
        let r = error_reply(&iq, &StanzaError::service_unavailable());
        assert_eq!(r.attr("type"), Some("error"));
        assert_eq!(r.attr("id"), Some("a1"));
        assert_eq!(r.attr("to"), Some("u@example.com/r"));
        assert_eq!(r.attr("from"), Some("gw.example.com"));
        let e = r.get_child("error", NS_COMPONENT).unwrap();
        assert_eq!(e.attr("type"), Some("cancel"));
        assert_eq!(
            error_condition(e, NS_STANZAS).as_deref(),
            Some("service-unavailable")
        );
    }
}
