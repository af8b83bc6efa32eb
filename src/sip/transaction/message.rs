//! The few header fields the transaction layer reads: the top Via (sent-by and branch),
//! CSeq, Call-ID, the From and To tags, and Route. Parsed here, from the raw header text,
//! rather than with rsip 0.4's typed headers, because those do not know the compact forms
//! (`v:`, `f:`, `t:`, `i:` end up as `Header::Other`), and the typed Via rejects an IPv6
//! sent-by. Everything here returns `None`/`Err` on bad input and never panics.

use rsip::prelude::UntypedHeader;
use rsip::{Header, Headers, Method};

use super::key::{KeyError, SentBy};

/// A header field the transaction layer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Field {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Route,
    Timestamp,
}

impl Field {
    fn long_name(self) -> &'static str {
        match self {
            Field::Via => "Via",
            Field::From => "From",
            Field::To => "To",
            Field::CallId => "Call-ID",
            Field::CSeq => "CSeq",
            Field::Route => "Route",
            Field::Timestamp => "Timestamp",
        }
    }

    /// The compact form of RFC 3261 §7.3.3, for the fields that have one.
    fn compact_name(self) -> Option<&'static str> {
        match self {
            Field::Via => Some("v"),
            Field::From => Some("f"),
            Field::To => Some("t"),
            Field::CallId => Some("i"),
            Field::CSeq | Field::Route | Field::Timestamp => None,
        }
    }
}

/// The raw value of `header` if it is the field `field`, in long or compact form.
pub(super) fn value_of(header: &Header, field: Field) -> Option<&str> {
    match (header, field) {
        (Header::Via(h), Field::Via) => Some(h.value()),
        (Header::From(h), Field::From) => Some(h.value()),
        (Header::To(h), Field::To) => Some(h.value()),
        (Header::CallId(h), Field::CallId) => Some(h.value()),
        (Header::CSeq(h), Field::CSeq) => Some(h.value()),
        (Header::Route(h), Field::Route) => Some(h.value()),
        (Header::Timestamp(h), Field::Timestamp) => Some(h.value()),
        (Header::Other(name, value), field)
            if name.eq_ignore_ascii_case(field.long_name())
                || field
                    .compact_name()
                    .is_some_and(|c| name.eq_ignore_ascii_case(c)) =>
        {
            Some(value)
        }
        _ => None,
    }
}

/// The value of the first header of `field`, trimmed.
pub(super) fn first(headers: &Headers, field: Field) -> Option<&str> {
    headers
        .iter()
        .find_map(|h| value_of(h, field))
        .map(str::trim)
}

/// The Call-ID, if present and not empty.
pub(super) fn call_id(headers: &Headers) -> Option<&str> {
    first(headers, Field::CallId).filter(|v| !v.is_empty())
}

/// The `tag` parameter of the first From or To header.
pub(super) fn tag(headers: &Headers, field: Field) -> Option<&str> {
    first(headers, field).and_then(tag_of)
}

/// The top Via of a message, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TopVia<'a> {
    /// The first via-parm, trimmed: what an ACK for a non-2xx copies (§17.1.1.3).
    pub raw: &'a str,
    pub sent_by: SentBy,
    pub branch: Option<&'a str>,
}

/// Parses the top Via: the first via-parm of the first Via header.
pub(super) fn top_via(headers: &Headers) -> Result<TopVia<'_>, KeyError> {
    let value = first(headers, Field::Via).ok_or(KeyError::MissingVia)?;
    parse_via(value)
}

/// Parses the first via-parm of a Via header value (RFC 3261 §25.1):
/// `SIP / 2.0 / UDP host[:port] *(; param)`, possibly followed by `, via-parm`.
pub(super) fn parse_via(value: &str) -> Result<TopVia<'_>, KeyError> {
    let raw = match find_unquoted(value, ',') {
        Some(comma) => &value[..comma],
        None => value,
    }
    .trim();
    let malformed = |reason: &'static str| KeyError::MalformedVia {
        value: raw.to_owned(),
        reason,
    };
    let (head, params) = match find_unquoted(raw, ';') {
        Some(semi) => (&raw[..semi], &raw[semi + 1..]),
        None => (raw, ""),
    };
    let mut parts = head.splitn(3, '/');
    let protocol = parts.next().unwrap_or_default().trim();
    let version = parts.next().map(str::trim).unwrap_or_default();
    let rest = parts.next().map(str::trim).unwrap_or_default();
    if !protocol.eq_ignore_ascii_case("SIP") {
        return Err(malformed("protocol name is not SIP"));
    }
    if version.is_empty() {
        return Err(malformed("no protocol version"));
    }
    let (transport, sent_by) = rest
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or_else(|| malformed("no transport and sent-by"))?;
    if transport.is_empty() || !transport.chars().all(is_token_char) {
        return Err(malformed("bad transport"));
    }
    let sent_by = parse_sent_by(sent_by.trim()).ok_or_else(|| malformed("bad sent-by"))?;
    let branch = param(params, "branch").filter(|b| !b.is_empty());
    Ok(TopVia {
        raw,
        sent_by,
        branch,
    })
}

/// `host [ ":" port ]`, where an IPv6 host is bracketed (§25.1).
fn parse_sent_by(text: &str) -> Option<SentBy> {
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let close = inner.find(']')?;
        // `close` indexes `inner`, which starts one byte into `text`; both brackets are ASCII.
        let host = &text[..close + 2];
        let after = inner[close + 1..].trim_start();
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?.trim())
        };
        (host, port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host.trim_end(), Some(port.trim())),
            None => (text, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c));
    if !host_ok {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some(SentBy::new(host, port))
}

/// Parses `CSeq: <number> <method>` (§20.16).
pub(super) fn cseq(headers: &Headers) -> Result<(u32, Method), KeyError> {
    let value = first(headers, Field::CSeq).ok_or(KeyError::MissingCSeq)?;
    let malformed = || KeyError::MalformedCSeq(value.to_owned());
    let mut words = value.split_ascii_whitespace();
    let (Some(number), Some(method), None) = (words.next(), words.next(), words.next()) else {
        return Err(malformed());
    };
    let number = number.parse::<u32>().map_err(|_| malformed())?;
    let method = method.parse::<Method>().map_err(|_| malformed())?;
    Ok((number, method))
}

/// The `tag` parameter of a From/To value: `"Name" <uri;uri-params>;tag=x` or `uri;tag=x`.
pub(super) fn tag_of(value: &str) -> Option<&str> {
    // In the name-addr form the header params follow '>'; in the addr-spec form they
    // follow the first ';' (the URI cannot carry params there, §20.10).
    let params = match find_unquoted(value, '<') {
        Some(open) => {
            let after_open = &value[open..];
            let close = after_open.find('>')?;
            let rest = after_open[close + 1..].trim_start();
            rest.strip_prefix(';')?
        }
        None => &value[find_unquoted(value, ';')? + 1..],
    };
    param(params, "tag").filter(|t| !t.is_empty())
}

/// The value of parameter `name` in `a=1;b;c=2` (names case-insensitive, §7.3.1).
fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = params;
    loop {
        let (item, next) = match find_unquoted(rest, ';') {
            Some(semi) => (&rest[..semi], Some(&rest[semi + 1..])),
            None => (rest, None),
        };
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (item.trim(), ""),
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(value);
        }
        rest = next?;
    }
}

/// The byte index of the first `target` outside a quoted string and outside `<...>`.
fn find_unquoted(text: &str, target: char) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut angle = 0usize;
    for (index, c) in text.char_indices() {
        if in_quotes {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        if c == target && angle == 0 {
            return Some(index);
        }
        match c {
            '"' => in_quotes = true,
            '<' => angle += 1,
            '>' => angle = angle.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_params_and_second_via_parm() {
        let via = parse_via(
            "SIP/2.0/UDP pc33.Atlanta.example.com:5060;rport;branch=z9hG4bK776asdhds , SIP/2.0/TCP p;branch=z9hG4bKx",
        )
        .expect("valid Via");
        assert_eq!(
            via.raw,
            "SIP/2.0/UDP pc33.Atlanta.example.com:5060;rport;branch=z9hG4bK776asdhds"
        );
        assert_eq!(via.sent_by.host(), "pc33.atlanta.example.com");
        assert_eq!(via.sent_by.port(), Some(5060));
        assert_eq!(via.branch, Some("z9hG4bK776asdhds"));
    }

    #[test]
    fn via_with_spaces_ipv6_and_no_branch() {
        let via = parse_via("SIP / 2.0 / TCP [2001:db8::1]:5070 ; received=192.0.2.1")
            .expect("valid Via");
        assert_eq!(via.sent_by.host(), "[2001:db8::1]");
        assert_eq!(via.sent_by.port(), Some(5070));
        assert_eq!(via.branch, None);
        let bare = parse_via("SIP/2.0/UDP [::1]").expect("valid Via");
        assert_eq!(bare.sent_by.port(), None);
    }

    #[test]
    fn malformed_vias_are_errors() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "HTTP/1.1/TCP host",
            "SIP/2.0/UDP host:notaport;branch=z9hG4bK1",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP [::1:5060",
            "SIP/2.0/UDP [::1]x",
            "SIP/2.0/U(P host",
            "SIP//UDP host",
            "garbage",
            "ü/ü/ü ü",
        ] {
            assert!(
                matches!(parse_via(bad), Err(KeyError::MalformedVia { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tags() {
        assert_eq!(
            tag_of("\"Bob; <x>\" <sip:bob@b.example.com;tag=uri-param>;tag=a6c85cf"),
            Some("a6c85cf")
        );
        assert_eq!(tag_of("sip:bob@b.example.com;TAG=x1"), Some("x1"));
        assert_eq!(tag_of("<sip:bob@b.example.com;tag=uri-param>"), None);
        assert_eq!(tag_of("Bob <sip:bob@b.example.com"), None);
        assert_eq!(tag_of("sip:bob@b.example.com;tag="), None);
        assert_eq!(tag_of(""), None);
    }

    #[test]
    fn cseq_values() {
        let headers: Headers =
            vec![Header::CSeq(rsip::headers::CSeq::new(" 4711   INVITE "))].into();
        assert_eq!(cseq(&headers), Ok((4711, Method::Invite)));
        for bad in [
            "INVITE",
            "1",
            "1 INVITE x",
            "-1 INVITE",
            "1 FOO",
            "99999999999 BYE",
        ] {
            let headers: Headers = vec![Header::CSeq(rsip::headers::CSeq::new(bad))].into();
            assert!(
                matches!(cseq(&headers), Err(KeyError::MalformedCSeq(_))),
                "{bad:?}"
            );
        }
        assert_eq!(cseq(&Headers::default()), Err(KeyError::MissingCSeq));
    }

    #[test]
    fn compact_forms_are_read() {
        let headers: Headers = vec![
            Header::Other("v".into(), "SIP/2.0/UDP h;branch=z9hG4bKc".into()),
            Header::Other("i".into(), "abc@h".into()),
            Header::Other("f".into(), "<sip:a@h>;tag=ft".into()),
        ]
        .into();
        assert_eq!(top_via(&headers).map(|v| v.branch), Ok(Some("z9hG4bKc")));
        assert_eq!(call_id(&headers), Some("abc@h"));
        assert_eq!(tag(&headers, Field::From), Some("ft"));
        assert_eq!(tag(&headers, Field::To), None);
    }
}
