//! What the gateway says about itself in XEP-0030 service discovery (PROTOCOLS.md §1.5).
//! A feature is listed only once it really works; later issues add Jingle and friends here.

use minidom::Element;

use super::stanza::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_GATEWAY, NS_PING, NS_VERSION, elem};

/// `(category, type)`; the registry has `gateway/pstn` (telephony) and `gateway/simple` (SIP IM
/// and presence), and no `gateway/sip`.
pub const DOMAIN_IDENTITIES: &[(&str, &str)] = &[("gateway", "pstn"), ("gateway", "simple")];

/// Features of the component domain, sorted (XEP-0115 §5.1 sorts too, which keeps caps stable).
pub const DOMAIN_FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_GATEWAY,
    NS_VERSION,
    NS_PING,
];

/// A contact (`+1555…@gateway`) is shown as a phone. Call features join when calls work.
pub const CONTACT_IDENTITIES: &[(&str, &str)] = &[("client", "phone")];
pub const CONTACT_FEATURES: &[&str] = &[NS_DISCO_INFO];

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
