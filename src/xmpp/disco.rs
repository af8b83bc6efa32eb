//! What the gateway says about itself in XEP-0030 service discovery (PROTOCOLS.md §1.5).
//! A feature is listed only once it really works.

use minidom::Element;

use super::stanza::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_GATEWAY, NS_PING, NS_VERSION, elem};

/// `(category, type)`; the registry has `gateway/pstn` (telephony) and `gateway/simple` (SIP IM
/// and presence), and no `gateway/sip`.
pub const DOMAIN_IDENTITIES: &[(&str, &str)] = &[("gateway", "pstn"), ("gateway", "simple")];

/// XEP-0167 §11: a client that takes Jingle audio calls.
pub const NS_JINGLE_AUDIO: &str = "urn:xmpp:jingle:apps:rtp:audio";

/// Jingle audio calls (XEP-0166/0167/0176/0320) and XEP-0353 JMI, as PROTOCOLS.md §1.5 lists
/// them; `urn:ietf:rfc:3264` says we are an offer/answer gateway (XEP-0176 §2).
const CALL_FEATURES: [&str; 7] = [
    "urn:ietf:rfc:3264",
    "urn:xmpp:jingle-message:0",
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:dtls:0",
    "urn:xmpp:jingle:apps:rtp:1",
    NS_JINGLE_AUDIO,
    "urn:xmpp:jingle:transports:ice-udp:1",
];

/// Features of the component domain.
pub const DOMAIN_FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_GATEWAY,
    NS_VERSION,
    NS_PING,
    CALL_FEATURES[0],
    CALL_FEATURES[1],
    CALL_FEATURES[2],
    CALL_FEATURES[3],
    CALL_FEATURES[4],
    CALL_FEATURES[5],
    CALL_FEATURES[6],
];

/// A contact (`+1555…@gateway`) is shown as a phone that takes Jingle audio calls, so that
/// Conversations and Dino offer a call button (they look for these in the caps of a presence).
pub const CONTACT_IDENTITIES: &[(&str, &str)] = &[("client", "phone")];
pub const CONTACT_FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_CAPS,
    CALL_FEATURES[0],
    CALL_FEATURES[1],
    CALL_FEATURES[2],
    CALL_FEATURES[3],
    CALL_FEATURES[4],
    CALL_FEATURES[5],
    CALL_FEATURES[6],
];

/// XEP-0115 entity capabilities.
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// Our caps node (XEP-0115 §6.1: a URI identifying the software).
pub const CAPS_NODE: &str = "https://github.com/xmpp-sip-gateway/xmpp-sip-gateway";

/// XEP-0115 §5.1 verification string of our own identities and features (one name, no
/// language), SHA-1, base64.
pub fn caps_ver(identities: &[(&str, &str)], name: &str, features: &[&str]) -> String {
    caps_ver_of(&info_query(identities, name, features))
}

/// XEP-0115 §5.1 verification string of a disco#info `<query/>`, SHA-1, base64: identities
/// (`category/type/lang/name<`, sorted), features (sorted), then extended forms (XEP-0128, by
/// FORM_TYPE: `FORM_TYPE<`, then each field sorted by var: `var<` and its values sorted).
pub fn caps_ver_of(query: &Element) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut ids: Vec<String> = query
        .children()
        .filter(|c| c.name() == "identity")
        .map(|c| {
            format!(
                "{}/{}/{}/{}<",
                c.attr("category").unwrap_or(""),
                c.attr("type").unwrap_or(""),
                c.attr_ns("http://www.w3.org/XML/1998/namespace", "lang")
                    .unwrap_or(""),
                c.attr("name").unwrap_or("")
            )
        })
        .collect();
    ids.sort();
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    features.sort_unstable();
    let mut forms: Vec<(String, String)> = query
        .children()
        .filter(|c| c.is("x", "jabber:x:data"))
        .filter_map(|x| {
            let field_values = |f: &Element| -> Vec<String> {
                let mut v: Vec<String> = f
                    .children()
                    .filter(|c| c.name() == "value")
                    .map(|c| c.text())
                    .collect();
                v.sort();
                v
            };
            let form_type = x
                .children()
                .find(|f| f.name() == "field" && f.attr("var") == Some("FORM_TYPE"))
                .map(field_values)?
                .into_iter()
                .next()?;
            let mut fields: Vec<(String, Vec<String>)> = x
                .children()
                .filter(|f| f.name() == "field" && f.attr("var") != Some("FORM_TYPE"))
                .map(|f| (f.attr("var").unwrap_or("").to_string(), field_values(f)))
                .collect();
            fields.sort();
            let mut s = format!("{form_type}<");
            for (var, values) in fields {
                s.push_str(&var);
                s.push('<');
                for v in values {
                    s.push_str(&v);
                    s.push('<');
                }
            }
            Some((form_type, s))
        })
        .collect();
    forms.sort();
    let mut s = ids.concat();
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    for (_, f) in forms {
        s.push_str(&f);
    }
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()))
}

/// The caps `ver` of a gateway contact: hashed once, since every contact presence carries it.
pub fn contact_caps_ver() -> &'static str {
    static VER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VER.get_or_init(|| {
        caps_ver(
            CONTACT_IDENTITIES,
            crate::xmpp::router::IDENTITY_NAME,
            CONTACT_FEATURES,
        )
    })
}

/// The `<c/>` caps element for a contact's presence.
pub fn contact_caps() -> Element {
    elem(
        "c",
        NS_CAPS,
        &[
            ("hash", Some("sha-1")),
            ("node", Some(CAPS_NODE)),
            ("ver", Some(contact_caps_ver())),
        ],
    )
}

/// The `<query/>` of a disco#info result.
pub fn info_query(identities: &[(&str, &str)], name: &str, features: &[&str]) -> Element {
    let mut q = Element::bare("query", NS_DISCO_INFO);
    for (category, type_) in identities {
        q.append_child(elem(
            "identity",
            NS_DISCO_INFO,
            &[
                ("category", Some(category)),
                ("type", Some(type_)),
                ("name", Some(name)),
            ],
        ));
    }
    for f in features {
        q.append_child(elem("feature", NS_DISCO_INFO, &[("var", Some(f))]));
    }
    q
}

/// The `<query/>` of an (empty) disco#items result.
pub fn items_query() -> Element {
    Element::bare("query", NS_DISCO_ITEMS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.2's worked example ("Exodus 0.9.1").
    #[test]
    fn caps_ver_matches_the_xep_example() {
        let ver = caps_ver(
            &[("client", "pc")],
            "Exodus 0.9.1",
            &[
                "http://jabber.org/protocol/caps",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc",
            ],
        );
        assert_eq!(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }
}
