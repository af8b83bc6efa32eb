//! The stanza router: every stanza the server hands the component goes through [`Router::handle`],
//! which returns the stanzas to send back. Pure: no I/O, no clock, no tasks (DESIGN.md, "Seams").
//!
//! Guarantees (RFC 6120 §8.2.3, PROTOCOLS.md §1.4): every IQ `get`/`set` gets exactly one
//! `result` or `error`; errors are never answered with errors; every reply carries `from` and
//! `to`. Later issues plug call, message and presence handlers in here.

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

    /// Handles one inbound stanza; pushes replies onto `out`.
    pub fn handle(&self, stanza: &Element, out: &mut Vec<Element>) {
        trace!(stanza = ?stanza.name(), from = ?stanza.attr("from"), to = ?stanza.attr("to"), "in");
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

    fn iq(&self, iq: &Element, out: &mut Vec<Element>) {
        let type_ = iq.attr("type").unwrap_or("");
        match type_ {
            "get" | "set" => {}
            "result" | "error" => {
                // Replies to our own keepalive pings and, later, to our requests.
                debug!(id = ?iq.attr("id"), type_, "iq reply");
                return;
            }
            _ => {
                out.push(error_reply(
                    iq,
                    &StanzaError::bad_request("iq type must be get, set, result or error"),
                ));
                return;
            }
        }
        let mut children = iq.children();
        let (Some(payload), None) = (children.next(), children.next()) else {
            // RFC 6120 §8.2.3: an IQ get/set holds exactly one payload element.
            out.push(error_reply(
                iq,
                &StanzaError::bad_request("an iq get/set must contain exactly one payload element"),
            ));
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
                out.push(r);
            }
            Err(e) => {
                debug!(id = ?iq.attr("id"), payload = payload.name(), ns = %ns, condition = e.condition, "iq error");
                out.push(error_reply(iq, &e));
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

    fn message(&self, msg: &Element, out: &mut Vec<Element>) {
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
        out.push(error_reply(
            msg,
            &StanzaError::service_unavailable().with_text(text),
        ));
    }

    fn presence(&self, p: &Element, out: &mut Vec<Element>) {
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
            Some("probe") => out.push(current()),
            // RFC 6121 §3.1.3: approve, then send current presence. Prosody keeps no roster for
            // components, so approval is all the state there is.
            Some("subscribe") => {
                out.push(send(Some("subscribed")));
                out.push(current());
            }
            Some("unsubscribe") => out.push(send(Some("unsubscribed"))),
            _ => debug!(type_ = ?p.attr("type"), "presence ignored"),
        }
    }
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

    fn run(xml: &str) -> Vec<Element> {
        let el: Element = xml.parse().expect("test fixture parses");
        let mut out = Vec::new();
        r().handle(&el, &mut out);
        out
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
