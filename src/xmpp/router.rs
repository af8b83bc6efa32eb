//! The stanza router: the one place that decides where every stanza the server hands the
//! component goes. [`Router::handle`] turns one inbound stanza into typed [`Routed`] events:
//! the router's own answers ([`Routed::Reply`]: disco, ping, version, XEP-0100, presence
//! answers, errors) and the stanzas for the call layer (Jingle IQs, JMI messages, replies and
//! bounces of what the call layer sent, users' presence). Pure: no I/O, no clock, no tasks
//! (DESIGN.md, "Seams"); it must not know how the events are delivered (that is the link's job)
//! nor what the call layer does with them.
//!
//! Guarantees (RFC 6120 §8.2.3, PROTOCOLS.md §1.4): every IQ `get`/`set` gets exactly one
//! `result` or `error`, either a [`Routed::Reply`] or, for a [`Routed::Jingle`], from the call
//! layer; errors are never answered with errors; every reply carries `from` and `to`. Later
//! issues route messages, MUC presence and Rayo here too (the variants exist, unused yet).

use minidom::Element;
use tracing::{debug, trace};

use super::address::AddressMapper;
use super::disco;
use super::stanza::{
    ErrorType, Kind, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_GATEWAY, NS_PING, NS_VERSION, StanzaError,
    elem, error_reply, reply, text_elem,
};
use crate::PRODUCT_NAME;

pub const IDENTITY_NAME: &str = "SIP gateway";
/// The resource of a contact's presence and of its side of Jingle sessions.
pub const CONTACT_RESOURCE: &str = "gw";

/// The call layer prefixes the ids of the IQs and messages it sends with this, so that their
/// replies (IQ `result`/`error`) and bounces (message `error`) are routed back to it
/// ([`Routed::CallIqReply`], [`Routed::CallMessageError`]) rather than dropped by the router.
pub const CALL_ID_PREFIX: &str = "xsg-call-";

/// XEP-0166 Jingle.
const NS_JINGLE: &str = "urn:xmpp:jingle:1";
/// XEP-0353 Jingle Message Initiation.
const NS_JMI: &str = "urn:xmpp:jingle-message:0";

/// What the router decided for one inbound stanza.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// Send back on the link (the router's own answers: disco, ping, version, XEP-0100,
    /// presence answers, errors).
    Reply(Element),
    /// A Jingle IQ set (XEP-0166) for the call layer, which answers it.
    Jingle(Element),
    /// A message carrying XEP-0353 Jingle Message Initiation (`urn:xmpp:jingle-message:0`).
    Jmi(Element),
    /// A result or error answering an IQ the call layer sent (its id starts with
    /// [`CALL_ID_PREFIX`]).
    CallIqReply(Element),
    /// An error bounce of a message the call layer sent (a JMI propose; id with
    /// [`CALL_ID_PREFIX`]).
    CallMessageError(Element),
    /// A user's presence, for the call layer's view of devices and caps (the router answers
    /// probes and subscriptions itself with [`Routed::Reply`]).
    Presence(Element),
    /// A chat message to a contact, for SIP MESSAGE bridging. Not produced yet (the router
    /// answers with an error, as it always has).
    Message(Element),
    /// Presence from a MUC room (Jitsi conferences). Not produced yet.
    MucPresence(Element),
    /// A Rayo IQ (XEP-0327, Jitsi dial-out). Not produced yet.
    Rayo(Element),
}

impl Routed {
    /// Is this one of the router's own answers, to be sent back on the link?
    pub fn is_reply(&self) -> bool {
        matches!(self, Routed::Reply(_))
    }

    /// The stanza, whatever its destination.
    pub fn element(&self) -> &Element {
        match self {
            Routed::Reply(el)
            | Routed::Jingle(el)
            | Routed::Jmi(el)
            | Routed::CallIqReply(el)
            | Routed::CallMessageError(el)
            | Routed::Presence(el)
            | Routed::Message(el)
            | Routed::MucPresence(el)
            | Routed::Rayo(el) => el,
        }
    }

    pub fn into_element(self) -> Element {
        match self {
            Routed::Reply(el)
            | Routed::Jingle(el)
            | Routed::Jmi(el)
            | Routed::CallIqReply(el)
            | Routed::CallMessageError(el)
            | Routed::Presence(el)
            | Routed::Message(el)
            | Routed::MucPresence(el)
            | Routed::Rayo(el) => el,
        }
    }
}

/// Who a stanza is addressed to, relative to the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The component domain itself (`gateway.example.com`, any resource).
    Domain,
    /// A contact on the gateway (`+1555…@gateway.example.com[/res]`).
    Contact,
    /// Not one of ours (should not happen: the server only routes our domain to us).
    Foreign,
}

#[derive(Debug, Clone)]
pub struct Router {
    domain: String,
    mapper: AddressMapper,
}

impl Router {
    pub fn new(component_domain: impl Into<String>, separator: char) -> Self {
        let domain = component_domain.into();
        Router {
            mapper: AddressMapper::new(domain.clone(), separator),
            domain,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Classifies a `to` attribute. Domain parts compare case-insensitively (RFC 7622 §3.2).
    pub fn target(&self, to: Option<&str>) -> Target {
        let Some(to) = to else {
            return Target::Foreign;
        };
        let bare = to.split('/').next().unwrap_or(to);
        match bare.rsplit_once('@') {
            None if bare.eq_ignore_ascii_case(&self.domain) => Target::Domain,
            Some((local, d)) if d.eq_ignore_ascii_case(&self.domain) && !local.is_empty() => {
                Target::Contact
            }
            _ => Target::Foreign,
        }
    }

    /// A stanza the depth guard cut (nested deeper than `max` below itself): refused whole
    /// rather than acted on in part — `policy-violation` to an IQ get/set, nothing otherwise.
    pub fn refuse_too_deep(&self, stanza: &Element, max: u32, out: &mut Vec<Routed>) {
        if stanza.name() == "iq" && matches!(stanza.attr("type"), Some("get" | "set")) {
            let e = StanzaError::new(ErrorType::Modify, "policy-violation")
                .with_text(format!("elements nested more than {max} deep"));
            out.push(Routed::Reply(error_reply(stanza, &e)));
        }
    }

    /// Routes one inbound stanza: pushes onto `out` the router's answers ([`Routed::Reply`])
    /// and what goes to the call layer. Every stanza is either answered here, routed, both (a
    /// presence), or dropped (a reply nobody waits for, a stanza without `from`).
    pub fn handle(&self, stanza: &Element, out: &mut Vec<Routed>) {
        trace!(stanza = ?stanza.name(), from = ?stanza.attr("from"), to = ?stanza.attr("to"), "in");
        // Call signalling is classified by element name and before the `from` check below, as
        // the link did before the router took this over; kept so that behaviour does not change
        // (servers stamp `from` on everything they route, so only a broken server notices).
        if let Some(routed) = for_call_layer(stanza) {
            out.push(routed);
            return;
        }
        // The call layer watches users' presence (which devices are there and what they can
        // do); the router still answers it.
        if stanza.name() == "presence" {
            out.push(Routed::Presence(stanza.clone()));
        }
        self.answer(stanza, out);
    }

    /// Answers a routed event that has nowhere to go because no call layer is attached: as the
    /// router answers any stanza it does not serve (a Jingle IQ set gets `service-unavailable`,
    /// a JMI message an error bounce, replies and bounces are dropped). A presence was already
    /// answered by [`Router::handle`], and a reply is already an answer: nothing to add.
    pub fn unrouted(&self, routed: &Routed, out: &mut Vec<Routed>) {
        match routed {
            Routed::Reply(_) | Routed::Presence(_) => {}
            other => self.answer(other.element(), out),
        }
    }

    /// The router's own answers to a stanza.
    fn answer(&self, stanza: &Element, out: &mut Vec<Routed>) {
        if stanza.attr("from").is_none() {
            // Nobody to answer; servers stamp `from` on everything they route (RFC 6120 §8.1.2.1).
            debug!(name = stanza.name(), "dropping stanza without from");
            return;
        }
        match Kind::of(stanza) {
            Kind::Iq => self.iq(stanza, out),
            Kind::Message => self.message(stanza, out),
            Kind::Presence => self.presence(stanza, out),
            Kind::Other => {
                debug!(name = stanza.name(), ns = %stanza.ns(), "ignoring non-stanza element")
            }
        }
    }

    fn iq(&self, iq: &Element, out: &mut Vec<Routed>) {
        let type_ = iq.attr("type").unwrap_or("");
        match type_ {
            "get" | "set" => {}
            "result" | "error" => {
                // Replies to our own keepalive pings (the call layer's, by their id, were
                // routed to it in `handle`).
                debug!(id = ?iq.attr("id"), type_, "iq reply");
                return;
            }
            _ => {
                out.push(Routed::Reply(error_reply(
                    iq,
                    &StanzaError::bad_request("iq type must be get, set, result or error"),
                )));
                return;
            }
        }
        let mut children = iq.children();
        let (Some(payload), None) = (children.next(), children.next()) else {
            // RFC 6120 §8.2.3: an IQ get/set holds exactly one payload element.
            out.push(Routed::Reply(error_reply(
                iq,
                &StanzaError::bad_request("an iq get/set must contain exactly one payload element"),
            )));
            return;
        };
        let target = self.target(iq.attr("to"));
        let ns = payload.ns();
        let result = match (target, payload.name(), ns.as_str(), type_) {
            (Target::Domain, "query", NS_DISCO_INFO, "get") => self.disco_info(payload, true),
            (Target::Contact, "query", NS_DISCO_INFO, "get") => self.disco_info(payload, false),
            (Target::Domain | Target::Contact, "query", NS_DISCO_ITEMS, "get") => {
                Ok(Some(disco::items_query()))
            }
            (Target::Domain, "ping", NS_PING, "get") => Ok(None),
            (Target::Domain, "query", NS_VERSION, "get") => Ok(Some(version_query())),
            (Target::Domain, "query", NS_GATEWAY, "get") => Ok(Some(gateway_prompt_query())),
            (Target::Domain, "query", NS_GATEWAY, "set") => self.gateway_set(payload),
            _ => Err(StanzaError::service_unavailable()),
        };
        match result {
            Ok(payload) => {
                let mut r = reply(iq, "result");
                if let Some(p) = payload {
                    r.append_child(p);
                }
                out.push(Routed::Reply(r));
            }
            Err(e) => {
                debug!(id = ?iq.attr("id"), payload = payload.name(), ns = %ns, condition = e.condition, "iq error");
                out.push(Routed::Reply(error_reply(iq, &e)));
            }
        }
    }

    fn disco_info(&self, query: &Element, domain: bool) -> Result<Option<Element>, StanzaError> {
        if let Some(node) = query.attr("node") {
            // XEP-0115 §6.2: a client resolving our caps asks `node#ver`; answer the same info
            // with the node echoed. No other nodes exist.
            let ours = format!("{}#{}", disco::CAPS_NODE, disco::contact_caps_ver());
            if domain || node != ours {
                return Err(StanzaError::new(ErrorType::Cancel, "item-not-found"));
            }
            let info = disco::info_query(
                disco::CONTACT_IDENTITIES,
                IDENTITY_NAME,
                disco::CONTACT_FEATURES,
            );
            let mut q = elem("query", NS_DISCO_INFO, &[("node", Some(node))]);
            for child in info.children() {
                q.append_child(child.clone());
            }
            return Ok(Some(q));
        }
        Ok(Some(if domain {
            disco::info_query(
                disco::DOMAIN_IDENTITIES,
                IDENTITY_NAME,
                disco::DOMAIN_FEATURES,
            )
        } else {
            disco::info_query(
                disco::CONTACT_IDENTITIES,
                IDENTITY_NAME,
                disco::CONTACT_FEATURES,
            )
        }))
    }

    /// XEP-0100 §6.3: translate a legacy address into a JID.
    fn gateway_set(&self, query: &Element) -> Result<Option<Element>, StanzaError> {
        let prompt = query
            .get_child("prompt", NS_GATEWAY)
            .map(|p| p.text())
            .ok_or_else(|| StanzaError::bad_request("missing <prompt/>"))?;
        match self.mapper.prompt_to_jid(&prompt) {
            Ok(jid) => {
                let mut q = Element::bare("query", NS_GATEWAY);
                q.append_child(text_elem("jid", NS_GATEWAY, &jid));
                Ok(Some(q))
            }
            Err(e) => {
                Err(StanzaError::new(ErrorType::Modify, "not-acceptable").with_text(e.to_string()))
            }
        }
    }

    fn message(&self, msg: &Element, out: &mut Vec<Routed>) {
        if msg.attr("type") == Some("error") {
            return;
        }
        // Until SIP MESSAGE bridging lands, say so instead of swallowing the message.
        let text = match self.target(msg.attr("to")) {
            Target::Domain => format!(
                "{} does not take messages itself; write to a contact such as +15551234567@{}",
                self.domain, self.domain
            ),
            _ => "messages to SIP are not bridged by this gateway yet".to_string(),
        };
        out.push(Routed::Reply(error_reply(
            msg,
            &StanzaError::service_unavailable().with_text(text),
        )));
    }

    fn presence(&self, p: &Element, out: &mut Vec<Routed>) {
        let from = p.attr("from").unwrap_or_default();
        let to = p.attr("to").unwrap_or_default();
        let bare_to = to.split('/').next().unwrap_or(to);
        let ns = p.ns();
        let send = |type_: Option<&str>| {
            elem(
                "presence",
                &ns,
                &[("type", type_), ("from", Some(bare_to)), ("to", Some(from))],
            )
        };
        let target = self.target(Some(to));
        if target == Target::Foreign {
            return;
        }
        // A contact is "available" from the full JID `<contact>/gw` with caps listing the call
        // features: that is what makes Conversations and Dino show a call button, and the full
        // JID is where they send session-initiate. (Its SIP presence is not known yet: SIMPLE
        // presence comes later.)
        let current = || {
            if target == Target::Domain {
                send(None)
            } else {
                let full = format!("{bare_to}/{CONTACT_RESOURCE}");
                let mut el = elem(
                    "presence",
                    &ns,
                    &[("from", Some(&full)), ("to", Some(from))],
                );
                el.append_child(disco::contact_caps());
                el
            }
        };
        match p.attr("type") {
            // RFC 6121 §4.3: answer a probe with current presence.
            Some("probe") => out.push(Routed::Reply(current())),
            // RFC 6121 §3.1.3: approve, then send current presence. Prosody keeps no roster for
            // components, so approval is all the state there is.
            Some("subscribe") => {
                out.push(Routed::Reply(send(Some("subscribed"))));
                out.push(Routed::Reply(current()));
            }
            Some("unsubscribe") => out.push(Routed::Reply(send(Some("unsubscribed")))),
            _ => debug!(type_ = ?p.attr("type"), "presence ignored"),
        }
    }
}

/// Call signalling: what goes to the call layer instead of the router. Jingle IQ sets, replies
/// to its IQs and bounces of its messages (ids it prefixes with [`CALL_ID_PREFIX`]), and messages
/// carrying XEP-0353 JMI. Matched by element name and regardless of `from`, as the link did
/// before the router took this over.
fn for_call_layer(el: &Element) -> Option<Routed> {
    let ours = || {
        el.attr("id")
            .is_some_and(|id| id.starts_with(CALL_ID_PREFIX))
    };
    let routed = match el.name() {
        "iq" => match el.attr("type") {
            Some("set") if el.children().any(|c| c.is("jingle", NS_JINGLE)) => Routed::Jingle,
            Some("result") | Some("error") if ours() => Routed::CallIqReply,
            _ => return None,
        },
        "message" if el.attr("type") == Some("error") => {
            if !ours() {
                return None;
            }
            Routed::CallMessageError
        }
        "message" if el.children().any(|c| c.ns() == NS_JMI) => Routed::Jmi,
        _ => return None,
    };
    Some(routed(el.clone()))
}

fn version_query() -> Element {
    let mut q = Element::bare("query", NS_VERSION);
    q.append_child(text_elem("name", NS_VERSION, PRODUCT_NAME));
    q.append_child(text_elem("version", NS_VERSION, env!("CARGO_PKG_VERSION")));
    q
}

fn gateway_prompt_query() -> Element {
    let mut q = Element::bare("query", NS_GATEWAY);
    q.append_child(text_elem(
        "desc",
        NS_GATEWAY,
        "Enter a phone number or a SIP address to get the address to call or add",
    ));
    q.append_child(text_elem(
        "prompt",
        NS_GATEWAY,
        "Phone number or SIP address",
    ));
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::{NS_COMPONENT, NS_STANZAS, error_condition};

    fn r() -> Router {
        Router::new("gateway.example.com", '*')
    }

    fn parse(xml: &str) -> Element {
        xml.parse().expect("test fixture parses")
    }

    /// Everything the router decided for one stanza.
    fn route(xml: &str) -> Vec<Routed> {
        let mut out = Vec::new();
        r().handle(&parse(xml), &mut out);
        out
    }

    /// Only the router's own answers (what the link writes back).
    fn run(xml: &str) -> Vec<Element> {
        route(xml)
            .into_iter()
            .filter(Routed::is_reply)
            .map(Routed::into_element)
            .collect()
    }

    fn one(xml: &str) -> Element {
        let mut v = run(xml);
        assert_eq!(v.len(), 1, "expected exactly one reply to {xml}");
        v.remove(0)
    }

    fn condition(reply: &Element) -> String {
        assert_eq!(reply.attr("type"), Some("error"));
        let e = reply.get_child("error", NS_COMPONENT).expect("error child");
        error_condition(e, NS_STANZAS).unwrap()
    }

    const FROM: &str = "from='juliet@example.com/phone'";

    #[test]
    fn disco_info_on_domain() {
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='d1' {FROM} to='gateway.example.com'><query xmlns='{NS_DISCO_INFO}'/></iq>"
        ));
        assert_eq!(r.attr("type"), Some("result"));
        assert_eq!(r.attr("id"), Some("d1"));
        assert_eq!(r.attr("from"), Some("gateway.example.com"));
        assert_eq!(r.attr("to"), Some("juliet@example.com/phone"));
        let q = r.get_child("query", NS_DISCO_INFO).unwrap();
        let ids: Vec<_> = q
            .children()
            .filter(|c| c.name() == "identity")
            .map(|c| {
                (
                    c.attr("category").unwrap().to_string(),
                    c.attr("type").unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                ("gateway".into(), "pstn".into()),
                ("gateway".into(), "simple".into())
            ]
        );
        let feats: Vec<_> = q.children().filter_map(|c| c.attr("var")).collect();
        assert!(feats.contains(&NS_GATEWAY) && feats.contains(&NS_PING));
        for f in [
            "urn:xmpp:jingle:1",
            "urn:xmpp:jingle:apps:rtp:1",
            "urn:xmpp:jingle:apps:rtp:audio",
            "urn:xmpp:jingle:transports:ice-udp:1",
            "urn:xmpp:jingle:apps:dtls:0",
        ] {
            assert!(feats.contains(&f), "calls work: {f} advertised");
        }
    }

    #[test]
    fn disco_info_on_contact_and_node() {
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='d2' {FROM} to='+15551234567@gateway.example.com'><query xmlns='{NS_DISCO_INFO}'/></iq>"
        ));
        let q = r.get_child("query", NS_DISCO_INFO).unwrap();
        assert_eq!(
            q.get_child("identity", NS_DISCO_INFO)
                .unwrap()
                .attr("category"),
            Some("client")
        );
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='d3' {FROM} to='gateway.example.com'><query xmlns='{NS_DISCO_INFO}' node='x'/></iq>"
        ));
        assert_eq!(condition(&r), "item-not-found");
        // The caps node of a contact's presence resolves to the same features (XEP-0115 §6.2).
        let p = one(
            "<presence xmlns='jabber:component:accept' type='probe' from='juliet@example.com' to='100@gateway.example.com'/>",
        );
        let c = p.get_child("c", disco::NS_CAPS).expect("caps in presence");
        let node = format!("{}#{}", c.attr("node").unwrap(), c.attr("ver").unwrap());
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='d4' {FROM} to='100@gateway.example.com/gw'><query xmlns='{NS_DISCO_INFO}' node='{node}'/></iq>"
        ));
        let q = r.get_child("query", NS_DISCO_INFO).unwrap();
        assert_eq!(q.attr("node"), Some(node.as_str()));
        let feats: Vec<_> = q.children().filter_map(|c| c.attr("var")).collect();
        assert!(feats.contains(&"urn:xmpp:jingle-message:0"), "{feats:?}");
        assert_eq!(
            c.attr("ver"),
            Some(
                disco::caps_ver(
                    disco::CONTACT_IDENTITIES,
                    IDENTITY_NAME,
                    disco::CONTACT_FEATURES
                )
                .as_str()
            )
        );
    }

    #[test]
    fn ping_version_items() {
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='p' {FROM} to='gateway.example.com'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        assert_eq!(r.attr("type"), Some("result"));
        assert_eq!(r.children().count(), 0);
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='v' {FROM} to='gateway.example.com'><query xmlns='jabber:iq:version'/></iq>"
        ));
        assert_eq!(
            r.get_child("query", NS_VERSION)
                .unwrap()
                .get_child("name", NS_VERSION)
                .unwrap()
                .text(),
            PRODUCT_NAME
        );
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='i' {FROM} to='gateway.example.com'><query xmlns='{NS_DISCO_ITEMS}'/></iq>"
        ));
        assert_eq!(
            r.get_child("query", NS_DISCO_ITEMS)
                .unwrap()
                .children()
                .count(),
            0
        );
    }

    #[test]
    fn unknown_iq_gets_service_unavailable() {
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='set' id='u' {FROM} to='gateway.example.com'><query xmlns='urn:example:nope'/></iq>"
        ));
        assert_eq!(condition(&r), "service-unavailable");
        // ping to a contact: not ours to answer yet
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='u2' {FROM} to='100@gateway.example.com/x'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        assert_eq!(condition(&r), "service-unavailable");
    }

    #[test]
    fn malformed_iqs_get_bad_request() {
        for body in ["", "<a xmlns='urn:a'/><b xmlns='urn:b'/>"] {
            let r = one(&format!(
                "<iq xmlns='jabber:component:accept' type='get' id='m' {FROM} to='gateway.example.com'>{body}</iq>"
            ));
            assert_eq!(condition(&r), "bad-request");
        }
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='fetch' id='m' {FROM} to='gateway.example.com'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        assert_eq!(condition(&r), "bad-request");
    }

    #[test]
    fn replies_and_errors_are_not_answered() {
        assert!(run(&format!("<iq xmlns='jabber:component:accept' type='result' id='k' {FROM} to='gateway.example.com'/>")).is_empty());
        assert!(run(&format!("<iq xmlns='jabber:component:accept' type='error' id='k' {FROM} to='gateway.example.com'/>")).is_empty());
        assert!(run(&format!("<message xmlns='jabber:component:accept' type='error' {FROM} to='a@gateway.example.com'/>")).is_empty());
        assert!(run("<iq xmlns='jabber:component:accept' type='get' id='k' to='gateway.example.com'><ping xmlns='urn:xmpp:ping'/></iq>").is_empty());
    }

    #[test]
    fn gateway_prompt() {
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='g' {FROM} to='gateway.example.com'><query xmlns='jabber:iq:gateway'/></iq>"
        ));
        assert!(
            r.get_child("query", NS_GATEWAY)
                .unwrap()
                .get_child("prompt", NS_GATEWAY)
                .is_some()
        );
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='set' id='g' {FROM} to='gateway.example.com'><query xmlns='jabber:iq:gateway'><prompt>+1 555 123 4567</prompt></query></iq>"
        ));
        assert_eq!(
            r.get_child("query", NS_GATEWAY)
                .unwrap()
                .get_child("jid", NS_GATEWAY)
                .unwrap()
                .text(),
            "+15551234567@gateway.example.com"
        );
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='set' id='g' {FROM} to='gateway.example.com'><query xmlns='jabber:iq:gateway'><prompt>what?</prompt></query></iq>"
        ));
        assert_eq!(condition(&r), "not-acceptable");
        let r = one(&format!(
            "<iq xmlns='jabber:component:accept' type='set' id='g' {FROM} to='gateway.example.com'><query xmlns='jabber:iq:gateway'/></iq>"
        ));
        assert_eq!(condition(&r), "bad-request");
    }

    #[test]
    fn messages_bounce_with_text() {
        let r = one(&format!(
            "<message xmlns='jabber:component:accept' type='chat' {FROM} to='+1555@gateway.example.com'><body>hi</body></message>"
        ));
        assert_eq!(condition(&r), "service-unavailable");
        assert_eq!(r.name(), "message");
    }

    #[test]
    fn presence_probe_and_subscribe() {
        let r = one(
            "<presence xmlns='jabber:component:accept' type='probe' from='juliet@example.com' to='gateway.example.com'/>",
        );
        assert_eq!(r.attr("type"), None);
        assert_eq!(r.attr("to"), Some("juliet@example.com"));
        assert_eq!(r.attr("from"), Some("gateway.example.com"));
        let r = one(
            "<presence xmlns='jabber:component:accept' type='probe' from='juliet@example.com' to='100@gateway.example.com'/>",
        );
        // available from the contact's full JID, with caps (call buttons in clients)
        assert_eq!(r.attr("type"), None);
        assert_eq!(r.attr("from"), Some("100@gateway.example.com/gw"));
        let v = run(
            "<presence xmlns='jabber:component:accept' type='subscribe' from='juliet@example.com' to='gateway.example.com'/>",
        );
        assert_eq!(
            v.iter().map(|p| p.attr("type")).collect::<Vec<_>>(),
            vec![Some("subscribed"), None]
        );
        assert!(
            run(&format!(
                "<presence xmlns='jabber:component:accept' {FROM} to='gateway.example.com/x'/>"
            ))
            .is_empty()
        );
    }

    const NS: &str = "xmlns='jabber:component:accept'";

    #[test]
    fn call_signalling_goes_to_the_call_layer() {
        type Variant = fn(Element) -> Routed;
        let cases: [(String, Variant); 5] = [
            (
                format!(
                    "<iq {NS} type='set' id='1' {FROM} to='100@gateway.example.com/gw'><jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'/></iq>"
                ),
                Routed::Jingle,
            ),
            (
                format!(
                    "<iq {NS} type='result' id='xsg-call-7' {FROM} to='100@gateway.example.com/gw'/>"
                ),
                Routed::CallIqReply,
            ),
            (
                format!(
                    "<iq {NS} type='error' id='xsg-call-7' {FROM} to='100@gateway.example.com/gw'><error type='cancel'/></iq>"
                ),
                Routed::CallIqReply,
            ),
            (
                format!(
                    "<message {NS} type='chat' {FROM} to='100@gateway.example.com'><proceed xmlns='urn:xmpp:jingle-message:0' id='s'/></message>"
                ),
                Routed::Jmi,
            ),
            (
                format!(
                    "<message {NS} type='error' id='xsg-call-p-s' {FROM} to='100@gateway.example.com/gw'><error type='cancel'/></message>"
                ),
                Routed::CallMessageError,
            ),
        ];
        for (x, variant) in cases {
            // Routed there and nowhere else: the call layer answers what needs an answer.
            assert_eq!(route(&x), vec![variant(parse(&x))], "{x}");
        }
    }

    #[test]
    fn what_the_call_layer_did_not_send_is_not_routed_to_it() {
        // Replies and bounces without the call layer's id prefix: dropped (keepalive pongs).
        for x in [
            format!("<iq {NS} type='result' id='other' {FROM} to='gateway.example.com'/>"),
            format!("<iq {NS} type='error' id='other' {FROM} to='gateway.example.com'/>"),
            format!(
                "<message {NS} type='error' id='other' {FROM} to='100@gateway.example.com'><proceed xmlns='urn:xmpp:jingle-message:0' id='s'/></message>"
            ),
        ] {
            assert_eq!(route(&x), vec![], "{x}");
        }
        // A Jingle payload in an IQ get is not a Jingle action: the router answers it.
        let x = format!(
            "<iq {NS} type='get' id='j' {FROM} to='100@gateway.example.com/gw'><jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'/></iq>"
        );
        let v = route(&x);
        assert_eq!(v.len(), 1);
        assert!(v[0].is_reply());
        assert_eq!(condition(v[0].element()), "service-unavailable");
    }

    #[test]
    fn presence_is_answered_and_routed() {
        let x = format!("<presence {NS} type='subscribe' {FROM} to='100@gateway.example.com'/>");
        let v = route(&x);
        assert_eq!(v.len(), 3, "{v:?}");
        assert_eq!(v[0], Routed::Presence(parse(&x)));
        assert_eq!(
            v[1..]
                .iter()
                .map(|p| (p.is_reply(), p.element().attr("type")))
                .collect::<Vec<_>>(),
            vec![(true, Some("subscribed")), (true, None)]
        );
        // Presence the router does not answer (a user coming online) still reaches the call layer.
        let x = format!(
            "<presence {NS} {FROM} to='100@gateway.example.com'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>"
        );
        assert_eq!(route(&x), vec![Routed::Presence(parse(&x))]);
    }

    #[test]
    fn plain_message_is_answered_not_routed() {
        let v = route(&format!(
            "<message {NS} type='chat' {FROM} to='+1555@gateway.example.com'><body>hi</body></message>"
        ));
        assert_eq!(v.len(), 1);
        assert!(v[0].is_reply());
        assert_eq!(condition(v[0].element()), "service-unavailable");
    }

    #[test]
    fn stanza_without_from() {
        // Call signalling goes to the call layer even without `from`, as the link sent it there
        // before the router routed it.
        let x = format!(
            "<iq {NS} type='set' id='1' to='100@gateway.example.com/gw'><jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'/></iq>"
        );
        assert_eq!(route(&x), vec![Routed::Jingle(parse(&x))]);
        let x = format!("<iq {NS} type='result' id='xsg-call-7' to='gateway.example.com'/>");
        assert_eq!(route(&x), vec![Routed::CallIqReply(parse(&x))]);
        // Presence is routed, not answered (nobody to answer).
        let x = format!("<presence {NS} type='probe' to='100@gateway.example.com'/>");
        assert_eq!(route(&x), vec![Routed::Presence(parse(&x))]);
        // Anything else is dropped.
        for x in [
            format!(
                "<iq {NS} type='get' id='k' to='gateway.example.com'><ping xmlns='urn:xmpp:ping'/></iq>"
            ),
            format!(
                "<message {NS} type='chat' to='100@gateway.example.com'><body>hi</body></message>"
            ),
        ] {
            assert_eq!(route(&x), vec![], "{x}");
        }
    }

    #[test]
    fn without_a_call_layer_the_router_answers() {
        let unrouted = |x: &str| {
            let mut v = Vec::new();
            let router = r();
            for routed in route(x) {
                router.unrouted(&routed, &mut v);
            }
            v
        };
        // A Jingle IQ set must still get its one answer.
        let v = unrouted(&format!(
            "<iq {NS} type='set' id='1' {FROM} to='100@gateway.example.com/gw'><jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s'/></iq>"
        ));
        assert_eq!(v.len(), 1);
        assert!(v[0].is_reply());
        assert_eq!(v[0].element().name(), "iq");
        assert_eq!(condition(v[0].element()), "service-unavailable");
        // A JMI propose is bounced like any message.
        let v = unrouted(&format!(
            "<message {NS} type='chat' id='m' {FROM} to='100@gateway.example.com'><propose xmlns='urn:xmpp:jingle-message:0' id='s'/></message>"
        ));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].element().name(), "message");
        assert_eq!(condition(v[0].element()), "service-unavailable");
        // Replies, bounces and presence: nothing more (presence was answered by `handle`).
        for x in [
            format!("<iq {NS} type='result' id='xsg-call-7' {FROM} to='gateway.example.com'/>"),
            format!(
                "<message {NS} type='error' id='xsg-call-p-s' {FROM} to='100@gateway.example.com'/>"
            ),
            format!("<presence {NS} type='probe' {FROM} to='100@gateway.example.com'/>"),
        ] {
            assert_eq!(unrouted(&x), vec![], "{x}");
        }
    }

    #[test]
    fn target_classification() {
        let r = r();
        assert_eq!(r.target(Some("GATEWAY.example.com/res")), Target::Domain);
        assert_eq!(r.target(Some("a@gateway.example.com")), Target::Contact);
        assert_eq!(r.target(Some("a@other.example.com")), Target::Foreign);
        assert_eq!(r.target(Some("@gateway.example.com")), Target::Foreign);
        assert_eq!(r.target(None), Target::Foreign);
    }
}
