//! What the call layer knows of XMPP users' devices: the available resources whose presence
//! reached the gateway (a subscription to a contact, or directed presence), and their XEP-0115
//! capabilities, learnt with disco#info and checked against the caps hash. Used to decide how
//! to ring a callee (PROTOCOLS.md §2.9): a XEP-0353 propose when a device does JMI or nothing is
//! known, a direct `session-initiate` when the known devices do Jingle audio but not JMI. A
//! device going unavailable ends its call.

use std::collections::HashMap;

use minidom::Element;

use crate::xmpp::disco::{NS_CAPS, NS_JINGLE_AUDIO, caps_ver_of};
use crate::xmpp::jingle::NS_JMI;
use crate::xmpp::stanza::NS_DISCO_INFO;

/// Resources kept per user and users kept at all: a bound on what presence from the network
/// can make us hold.
const MAX_RESOURCES: usize = 16;
const MAX_USERS: usize = 100_000;
const MAX_CAPS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Device {
    priority: i32,
    /// `node#ver` of its caps, when it sent caps with `hash='sha-1'`.
    caps: Option<(String, String)>,
}

/// How to ring a callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ring {
    /// A JMI propose to the bare JID (a device does JMI, or nothing is known).
    Propose,
    /// A `session-initiate` straight to this full JID: its known devices do Jingle audio and
    /// none does JMI.
    Direct(String),
}

/// What a presence stanza changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Nothing,
    /// A device became (or stays) available; `Some((full JID, node, ver))` when its caps are
    /// unknown and should be asked for with disco#info (`node#ver`).
    Available(Option<(String, String, String)>),
    /// This full JID went away.
    Unavailable(String),
}

#[derive(Debug, Default)]
pub struct Presences {
    users: HashMap<String, HashMap<String, Device>>,
    /// Verified caps: ver → features.
    caps: HashMap<String, Vec<String>>,
}

fn split(jid: &str) -> Option<(&str, &str)> {
    let (bare, resource) = jid.split_once('/')?;
    (!bare.is_empty() && !resource.is_empty()).then_some((bare, resource))
}

impl Presences {
    /// A presence stanza from the XMPP network (any type).
    pub fn on_presence(&mut self, p: &Element) -> Update {
        let Some(from) = p.attr("from") else {
            return Update::Nothing;
        };
        let Some((bare, resource)) = split(from) else {
            return Update::Nothing;
        };
        match p.attr("type") {
            None => {}
            Some("unavailable") | Some("error") => {
                let gone = self
                    .users
                    .get_mut(bare)
                    .and_then(|r| r.remove(resource))
                    .is_some();
                if self.users.get(bare).is_some_and(HashMap::is_empty) {
                    self.users.remove(bare);
                }
                return if gone {
                    Update::Unavailable(from.to_string())
                } else {
                    Update::Nothing
                };
            }
            // subscribe, probe, …: not about a device being there.
            Some(_) => return Update::Nothing,
        }
        let priority = p
            .children()
            .find(|c| c.name() == "priority")
            .and_then(|c| c.text().trim().parse::<i32>().ok())
            .unwrap_or(0);
        let caps = p
            .get_child("c", NS_CAPS)
            .filter(|c| c.attr("hash") == Some("sha-1"))
            .and_then(|c| Some((c.attr("node")?.to_string(), c.attr("ver")?.to_string())));
        if !self.users.contains_key(bare) && self.users.len() >= MAX_USERS {
            return Update::Nothing;
        }
        let devices = self.users.entry(bare.to_string()).or_default();
        if !devices.contains_key(resource) && devices.len() >= MAX_RESOURCES {
            return Update::Nothing;
        }
        let ask = caps
            .as_ref()
            .filter(|(_, ver)| !self.caps.contains_key(ver))
            .map(|(node, ver)| (from.to_string(), node.clone(), ver.clone()));
        devices.insert(resource.to_string(), Device { priority, caps });
        Update::Available(ask)
    }

    /// A disco#info result for `node#ver`: kept when its hash is `ver` (XEP-0115 §5.4), so a
    /// client cannot make us believe wrong features of other clients.
    pub fn on_disco_info(&mut self, ver: &str, query: &Element) -> bool {
        if !query.is("query", NS_DISCO_INFO) || caps_ver_of(query) != ver {
            return false;
        }
        if self.caps.len() >= MAX_CAPS {
            self.caps.clear();
        }
        let features = query
            .children()
            .filter(|c| c.name() == "feature")
            .filter_map(|c| c.attr("var").map(str::to_string))
            .collect();
        self.caps.insert(ver.to_string(), features);
        true
    }

    /// How to ring `bare`.
    pub fn ring(&self, bare: &str) -> Ring {
        let Some(devices) = self.users.get(bare) else {
            return Ring::Propose;
        };
        let mut audio: Vec<(&String, &Device)> = Vec::new();
        for (resource, d) in devices {
            let Some(features) = d.caps.as_ref().and_then(|(_, ver)| self.caps.get(ver)) else {
                // A device we know nothing about may do JMI: propose.
                return Ring::Propose;
            };
            if features.iter().any(|f| f == NS_JMI) {
                return Ring::Propose;
            }
            if features.iter().any(|f| f == NS_JINGLE_AUDIO) {
                audio.push((resource, d));
            }
        }
        // The highest priority wins; ties go to the first name, so the choice is stable.
        audio.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then(a.0.cmp(b.0)));
        match audio.first() {
            Some((resource, _)) => Ring::Direct(format!("{bare}/{resource}")),
            None => Ring::Propose,
        }
    }

    /// Is this full JID a device we have seen available and not gone?
    pub fn is_available(&self, full: &str) -> bool {
        split(full).is_some_and(|(b, r)| self.users.get(b).is_some_and(|d| d.contains_key(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    /// XEP-0115 §5.3, the complex example (identities in two languages, an extended form).
    #[test]
    fn caps_hash_matches_the_xep_examples() {
        let simple = el("<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity category='client' name='Exodus 0.9.1' type='pc'/>\
            <feature var='http://jabber.org/protocol/caps'/>\
            <feature var='http://jabber.org/protocol/disco#info'/>\
            <feature var='http://jabber.org/protocol/disco#items'/>\
            <feature var='http://jabber.org/protocol/muc'/></query>");
        assert_eq!(caps_ver_of(&simple), "QgayPKawpkPSDYmwT/WM94uAlu0=");
        let complex = el("<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
            <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
            <feature var='http://jabber.org/protocol/caps'/>\
            <feature var='http://jabber.org/protocol/disco#info'/>\
            <feature var='http://jabber.org/protocol/disco#items'/>\
            <feature var='http://jabber.org/protocol/muc'/>\
            <x xmlns='jabber:x:data' type='result'>\
              <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
              <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
              <field var='os'><value>Mac</value></field>\
              <field var='os_version'><value>10.5.1</value></field>\
              <field var='software'><value>Psi</value></field>\
              <field var='software_version'><value>0.11</value></field>\
            </x></query>");
        assert_eq!(caps_ver_of(&complex), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    fn presence(from: &str, extra: &str) -> Element {
        el(&format!(
            "<presence xmlns='jabber:component:accept' from='{from}' to='c@gw'>{extra}</presence>"
        ))
    }

    fn disco(features: &[&str]) -> Element {
        let mut x = String::from(
            "<query xmlns='http://jabber.org/protocol/disco#info'><identity category='client' type='phone' name='T'/>",
        );
        for f in features {
            x.push_str(&format!("<feature var='{f}'/>"));
        }
        x.push_str("</query>");
        el(&x)
    }

    #[test]
    fn rings_directly_only_when_every_known_device_lacks_jmi() {
        let mut p = Presences::default();
        assert_eq!(p.ring("juliet@example.com"), Ring::Propose, "nothing known");
        let old = disco(&[NS_JINGLE_AUDIO]);
        let ver = caps_ver_of(&old);
        let caps = format!("<c xmlns='{NS_CAPS}' hash='sha-1' node='n' ver='{ver}'/>");
        let u = p.on_presence(&presence("juliet@example.com/a", &caps));
        assert_eq!(
            u,
            Update::Available(Some((
                "juliet@example.com/a".into(),
                "n".into(),
                ver.clone()
            )))
        );
        assert_eq!(
            p.ring("juliet@example.com"),
            Ring::Propose,
            "caps not known yet"
        );
        assert!(
            !p.on_disco_info("forged", &old),
            "a result must match its hash"
        );
        assert!(p.on_disco_info(&ver, &old));
        assert_eq!(
            p.ring("juliet@example.com"),
            Ring::Direct("juliet@example.com/a".into())
        );
        // A second device with higher priority, same caps: it is chosen.
        let caps_b = format!("{caps}<priority>5</priority>");
        assert_eq!(
            p.on_presence(&presence("juliet@example.com/b", &caps_b)),
            Update::Available(None)
        );
        assert_eq!(
            p.ring("juliet@example.com"),
            Ring::Direct("juliet@example.com/b".into())
        );
        // A device that does JMI: propose (every device will ring).
        let jmi = disco(&[NS_JINGLE_AUDIO, NS_JMI]);
        let jver = caps_ver_of(&jmi);
        p.on_presence(&presence(
            "juliet@example.com/c",
            &format!("<c xmlns='{NS_CAPS}' hash='sha-1' node='n' ver='{jver}'/>"),
        ));
        p.on_disco_info(&jver, &jmi);
        assert_eq!(p.ring("juliet@example.com"), Ring::Propose);
        assert_eq!(
            p.on_presence(&el(
                "<presence xmlns='jabber:component:accept' type='unavailable' from='juliet@example.com/c'/>"
            )),
            Update::Unavailable("juliet@example.com/c".into())
        );
        assert!(!p.is_available("juliet@example.com/c"));
        assert!(p.is_available("juliet@example.com/b"));
        assert_eq!(
            p.ring("juliet@example.com"),
            Ring::Direct("juliet@example.com/b".into())
        );
        // A device without caps may do anything: propose.
        p.on_presence(&presence("juliet@example.com/d", ""));
        assert_eq!(p.ring("juliet@example.com"), Ring::Propose);
    }

    #[test]
    fn presence_from_the_network_is_bounded_and_odd_ones_are_ignored() {
        let mut p = Presences::default();
        assert_eq!(
            p.on_presence(&presence("no-resource@example.com", "")),
            Update::Nothing
        );
        assert_eq!(
            p.on_presence(&el(
                "<presence xmlns='jabber:component:accept' type='subscribe' from='a@b/c'/>"
            )),
            Update::Nothing
        );
        for i in 0..(MAX_RESOURCES + 5) {
            p.on_presence(&presence(&format!("a@b/r{i}"), ""));
        }
        assert_eq!(p.users["a@b"].len(), MAX_RESOURCES);
        assert_eq!(
            p.on_presence(&el(
                "<presence xmlns='jabber:component:accept' type='unavailable' from='x@y/z'/>"
            )),
            Update::Nothing,
            "unavailable for an unknown device changes nothing"
        );
    }
}
