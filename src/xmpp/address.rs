//! Address mapping between what a user types (a phone number, a SIP address) and the JIDs of
//! the gateway's contacts. Owns XEP-0106 escaping and the encoded-domain convention of the
//! Kamailio `xmpp` module (PROTOCOLS.md §6.2, §7); touches no I/O.
//!
//! * `+1 (555) 123-4567` → `+15551234567@gateway.example.com` (E.164 numbers stay digits)
//! * `sip:bob@pbx.example.net` → `bob*pbx.example.net@gateway.example.com` (`*` is
//!   `mapping.domain_separator`); characters a localpart forbids are XEP-0106-escaped.

use std::fmt;

/// Longest phone number accepted: E.164 allows 15 digits; PBX extensions with prefixes and
/// DTMF-style suffixes rarely exceed 32.
const MAX_NUMBER_DIGITS: usize = 32;
/// RFC 7622 §3.3.1: a localpart is at most 1023 octets.
const MAX_LOCALPART: usize = 1023;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptError {
    Empty,
    NotAnAddress(String),
    TooLong,
}

impl fmt::Display for PromptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptError::Empty => f.write_str("empty prompt: type a phone number or a SIP address"),
            PromptError::NotAnAddress(why) => write!(
                f,
                "not a phone number or SIP address ({why}); examples: +15551234567, sip:bob@pbx.example.net"
            ),
            PromptError::TooLong => f.write_str("address too long for a JID localpart"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AddressMapper {
    component: String,
    separator: char,
}

impl AddressMapper {
    pub fn new(component: impl Into<String>, separator: char) -> Self {
        AddressMapper {
            component: component.into(),
            separator,
        }
    }

    /// XEP-0100 `jabber:iq:gateway` set: what the user typed → the JID to add or call.
    pub fn prompt_to_jid(&self, prompt: &str) -> Result<String, PromptError> {
        let p = prompt.trim();
        if p.is_empty() {
            return Err(PromptError::Empty);
        }
        let lower = p.to_ascii_lowercase();
        let (rest, scheme_tel) = if lower.starts_with("tel:") {
            (&p[4..], true)
        } else if lower.starts_with("sips:") {
            (&p[5..], false)
        } else if lower.starts_with("sip:") {
            (&p[4..], false)
        } else {
            (p, false)
        };
        let local = if let Some(number) = phone_number(strip_params(rest)) {
            number
        } else if scheme_tel {
            return Err(PromptError::NotAnAddress(
                "a tel: URI must hold a number".into(),
            ));
        } else if let Some((user, host)) = rest.split_once('@') {
            let host = strip_params(host).to_ascii_lowercase();
            if !valid_host(&host) {
                return Err(PromptError::NotAnAddress(format!("`{host}` is not a host")));
            }
            let user = percent_decode(user)
                .ok_or_else(|| PromptError::NotAnAddress("bad %-escape in the user part".into()))?;
            if user.is_empty() {
                return Err(PromptError::NotAnAddress("the user part is empty".into()));
            }
            let user = phone_number(&user).unwrap_or(user);
            format!(
                "{}{}{}",
                escape_localpart(&user),
                self.separator,
                escape_localpart(&host)
            )
        } else {
            return Err(PromptError::NotAnAddress(
                "neither digits nor user@host".into(),
            ));
        };
        if local.len() > MAX_LOCALPART {
            return Err(PromptError::TooLong);
        }
        Ok(format!("{local}@{}", self.component))
    }
}

/// Where a gateway contact's localpart leads on the SIP side (RFC 7247 §6, Kamailio `xmpp`
/// module style): digits (with an optional `+`) are a phone number at `sip_domain` with
/// `user=phone`; `user<sep>host` is `sip:user@host`, the user part percent-encoded where SIP
/// needs it. XEP-0106 escapes in the localpart are undone first. `None` for anything else.
pub fn contact_to_sip_uri(localpart: &str, separator: char, sip_domain: &str) -> Option<String> {
    let local = unescape_localpart(localpart);
    if let Some(number) = phone_number(&local) {
        return Some(format!("sip:{number}@{sip_domain};user=phone"));
    }
    let (user, host) = local.rsplit_once(separator)?;
    let host = host.to_ascii_lowercase();
    if user.is_empty() || !valid_host(&host) {
        return None;
    }
    let mut enc = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    Some(format!("sip:{enc}@{host}"))
}

/// The user part of a SIP or SIPS URI (`sip:juliet*example.com@gw.example.net;transport=udp`
/// → `juliet*example.com`), still percent-encoded; `None` without one.
pub fn sip_uri_user(uri: &str) -> Option<&str> {
    let uri = uri.trim().trim_start_matches('<');
    let lower = uri.get(..5).unwrap_or("").to_ascii_lowercase();
    let rest = if lower.starts_with("sips:") {
        &uri[5..]
    } else if lower.starts_with("sip:") {
        &uri[4..]
    } else {
        return None;
    };
    let (user, _) = rest.split_once('@')?;
    // Userinfo may carry a password (`user:pw@`, RFC 3261 §19.1.1; never used, but legal).
    let user = user.split(':').next().unwrap_or("");
    (!user.is_empty()).then_some(user)
}

/// The XMPP user a SIP user part names (RFC 7247 §6, Kamailio `xmpp` module style):
/// `juliet*example.com` (percent-decoded first) → `juliet@example.com`, the localpart
/// XEP-0106-escaped where a JID needs it, the domain lowercased. The last `separator` splits,
/// since a domain cannot hold it. `None` when the user part does not name an XMPP user.
pub fn sip_user_to_jid(user: &str, separator: char) -> Option<String> {
    let user = percent_decode(user)?;
    let (local, domain) = user.rsplit_once(separator)?;
    let domain = domain.to_ascii_lowercase();
    if local.is_empty() || !valid_host(&domain) || domain.contains(':') {
        return None;
    }
    let local = escape_localpart(local);
    (local.len() <= MAX_LOCALPART).then(|| format!("{local}@{domain}"))
}

/// XEP-0106 §4.3: undoes [`escape_localpart`] (`\20` → space and so on); unknown escapes stay.
pub fn unescape_localpart(s: &str) -> String {
    const ESCAPES: [(&str, char); 10] = [
        ("\\20", ' '),
        ("\\22", '"'),
        ("\\26", '&'),
        ("\\27", '\''),
        ("\\2f", '/'),
        ("\\3a", ':'),
        ("\\3c", '<'),
        ("\\3e", '>'),
        ("\\40", '@'),
        ("\\5c", '\\'),
    ];
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    'outer: while !rest.is_empty() {
        if rest.starts_with('\\') {
            for (code, c) in ESCAPES {
                if rest.len() >= 3
                    && rest.is_char_boundary(3)
                    && rest[..3].eq_ignore_ascii_case(code)
                {
                    out.push(c);
                    rest = &rest[3..];
                    continue 'outer;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// Drops `;params` and `?headers` from a URI part.
fn strip_params(s: &str) -> &str {
    s.split([';', '?']).next().unwrap_or("")
}

/// A dialable number with visual separators removed (RFC 3966 §5.1.1 lists `-.()` and space),
/// keeping a leading `+`. `None` if it holds anything else.
fn phone_number(s: &str) -> Option<String> {
    let s = s.trim();
    let (plus, digits) = match s.strip_prefix('+') {
        Some(d) => ("+", d),
        None => ("", s),
    };
    let mut out = String::from(plus);
    for c in digits.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' | '.' | '(' | ')' | '/' => {}
            _ => return None,
        }
    }
    let n = out.len() - plus.len();
    (n > 0 && n <= MAX_NUMBER_DIGITS).then_some(out)
}

fn valid_host(h: &str) -> bool {
    let h = h.split(':').next().unwrap_or("");
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// XEP-0106 §4.2: escapes the characters a localpart may not hold (and `\` itself, so the
/// mapping can be reversed).
pub fn escape_localpart(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push_str("\\20"),
            '"' => out.push_str("\\22"),
            '&' => out.push_str("\\26"),
            '\'' => out.push_str("\\27"),
            '/' => out.push_str("\\2f"),
            ':' => out.push_str("\\3a"),
            '<' => out.push_str("\\3c"),
            '>' => out.push_str("\\3e"),
            '@' => out.push_str("\\40"),
            '\\' => out.push_str("\\5c"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_map_to_sip_uris_and_back() {
        assert_eq!(
            contact_to_sip_uri("bob*sip.test", '*', "pbx.test").as_deref(),
            Some("sip:bob@sip.test")
        );
        assert_eq!(
            contact_to_sip_uri("+15551234567", '*', "pbx.test").as_deref(),
            Some("sip:+15551234567@pbx.test;user=phone")
        );
        // XEP-0106 escapes undone, then SIP-escaped where needed
        assert_eq!(
            contact_to_sip_uri("john\\20doe*Sip.Test", '*', "pbx.test").as_deref(),
            Some("sip:john%20doe@sip.test")
        );
        // the last separator splits user from host
        assert_eq!(
            contact_to_sip_uri("a*b*sip.test", '*', "pbx.test").as_deref(),
            Some("sip:a*b@sip.test")
        );
        assert_eq!(contact_to_sip_uri("nohost", '*', "pbx.test"), None);
        assert_eq!(contact_to_sip_uri("bob*bad host", '*', "pbx.test"), None);
        assert_eq!(contact_to_sip_uri("*sip.test", '*', "pbx.test"), None);
        // round trip with the prompt mapping
        let jid = m().prompt_to_jid("sip:bob@sip.test").unwrap();
        let local = jid.split('@').next().unwrap();
        assert_eq!(
            contact_to_sip_uri(local, '*', "pbx.test").as_deref(),
            Some("sip:bob@sip.test")
        );
        assert_eq!(
            unescape_localpart(&escape_localpart("a b\\c@d")),
            "a b\\c@d"
        );
    }

    fn m() -> AddressMapper {
        AddressMapper::new("gateway.example.com", '*')
    }

    #[test]
    fn phone_numbers() {
        assert_eq!(
            m().prompt_to_jid("+1 (555) 123-4567").unwrap(),
            "+15551234567@gateway.example.com"
        );
        assert_eq!(
            m().prompt_to_jid("tel:+44.20.7946.0018").unwrap(),
            "+442079460018@gateway.example.com"
        );
        assert_eq!(m().prompt_to_jid("100").unwrap(), "100@gateway.example.com");
        assert_eq!(
            m().prompt_to_jid("sip:+15551234567@pbx.example.net;user=phone")
                .unwrap(),
            "+15551234567*pbx.example.net@gateway.example.com"
        );
    }

    #[test]
    fn sip_addresses() {
        assert_eq!(
            m().prompt_to_jid("sip:bob@pbx.example.net").unwrap(),
            "bob*pbx.example.net@gateway.example.com"
        );
        assert_eq!(
            m().prompt_to_jid("bob@PBX.example.net;transport=tcp")
                .unwrap(),
            "bob*pbx.example.net@gateway.example.com"
        );
        assert_eq!(
            m().prompt_to_jid("sip:o'malley@sip.example").unwrap(),
            "o\\27malley*sip.example@gateway.example.com"
        );
        assert_eq!(
            m().prompt_to_jid("sip:f%C3%BC@sip.example").unwrap(),
            "fü*sip.example@gateway.example.com"
        );
        assert_eq!(
            m().prompt_to_jid("sip:bob@pbx.example.net:5080").unwrap(),
            "bob*pbx.example.net\\3a5080@gateway.example.com"
        );
        let pct = AddressMapper::new("gw.example.com", '%');
        assert_eq!(
            pct.prompt_to_jid("bob@pbx.example.net").unwrap(),
            "bob%pbx.example.net@gw.example.com"
        );
    }

    #[test]
    fn rejects() {
        assert_eq!(m().prompt_to_jid("  "), Err(PromptError::Empty));
        assert!(matches!(
            m().prompt_to_jid("hello"),
            Err(PromptError::NotAnAddress(_))
        ));
        assert!(matches!(
            m().prompt_to_jid("tel:abc"),
            Err(PromptError::NotAnAddress(_))
        ));
        assert!(matches!(
            m().prompt_to_jid("bob@"),
            Err(PromptError::NotAnAddress(_))
        ));
        assert!(matches!(
            m().prompt_to_jid("@host.example"),
            Err(PromptError::NotAnAddress(_))
        ));
        assert!(matches!(
            m().prompt_to_jid("a%zz@host.example"),
            Err(PromptError::NotAnAddress(_))
        ));
        assert!(matches!(
            m().prompt_to_jid("bob@bad host"),
            Err(PromptError::NotAnAddress(_))
        ));
        assert_eq!(
            m().prompt_to_jid(&format!("{}@h.example", "a".repeat(2000))),
            Err(PromptError::TooLong)
        );
        // multi-byte input must not panic on slicing
        assert!(m().prompt_to_jid("ü%").is_err());
        assert!(m().prompt_to_jid("%ü@h.example").is_err());
    }

    #[test]
    fn sip_users_map_to_xmpp_users() {
        assert_eq!(
            sip_uri_user("sip:juliet*example.com@gw.example.net;transport=udp"),
            Some("juliet*example.com")
        );
        assert_eq!(sip_uri_user("SIPS:a:pw@h"), Some("a"));
        assert_eq!(sip_uri_user("sip:gw.example.net"), None);
        assert_eq!(sip_uri_user("tel:+1555"), None);
        assert_eq!(
            sip_user_to_jid("juliet*Example.COM", '*').as_deref(),
            Some("juliet@example.com")
        );
        // Percent-decoded on the SIP side, XEP-0106-escaped on the XMPP side (RFC 7247 §6).
        assert_eq!(
            sip_user_to_jid("d%27artagnan*example.com", '*').as_deref(),
            Some("d\\27artagnan@example.com")
        );
        assert_eq!(
            sip_user_to_jid("a*b*example.com", '*').as_deref(),
            Some("a*b@example.com")
        );
        assert_eq!(sip_user_to_jid("juliet", '*'), None);
        assert_eq!(sip_user_to_jid("*example.com", '*'), None);
        assert_eq!(sip_user_to_jid("juliet*", '*'), None);
        assert_eq!(sip_user_to_jid("juliet*exa mple.com", '*'), None);
        assert_eq!(sip_user_to_jid("bad%zz*example.com", '*'), None);
    }
}
