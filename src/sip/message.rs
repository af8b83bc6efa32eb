//! From bytes to SIP messages and back, before any transaction sees them: RFC 3261 §18.3 framing
//! on streams and datagrams, RFC 5626 CRLF keep-alives, the 64 KiB size limit, parsing with
//! `rsip` plus the checks rsip does not make (§8.2.2: the mandatory headers), and a last-resort
//! `400 Bad Request` built from the raw header lines of a request rsip could not parse.
//! Pure: no sockets here (`transport.rs` owns them).

use rsip::prelude::*;
use rsip::{Request, Response, SipMessage};

/// Largest message accepted on any transport. RFC 3261 §18.1.1 keeps UDP messages under the
/// path MTU; 64 KiB is the UDP datagram ceiling and far above any real SIP message (SDP with
/// many codecs is a few KiB), so anything bigger is an attack or a bug, not a call.
pub const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("no Content-Length on a stream transport (RFC 3261 §18.3)")]
    NoContentLength,
    #[error("unreadable Content-Length")]
    BadContentLength,
    #[error("body shorter than Content-Length")]
    Truncated,
    #[error("message ends inside its headers (no empty line)")]
    NoHeaderEnd,
}

/// One unit read from a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message: start line, headers and exactly Content-Length bytes of body.
    Message(Vec<u8>),
    /// RFC 5626 §3.5.1 keep-alive ping (CRLFCRLF); answer with a pong.
    Ping,
    /// RFC 5626 §3.5.1 keep-alive pong (CRLF).
    Pong,
}

/// Where the header section ends (index just past the empty line).
fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// `Content-Length` (or compact `l`) from a header section, if present.
fn content_length(head: &[u8]) -> Result<Option<usize>, FrameError> {
    let text = String::from_utf8_lossy(head);
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            return value
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| FrameError::BadContentLength);
        }
    }
    Ok(None)
}

/// Accumulates bytes from a stream transport (TCP, later TLS) and cuts them into frames.
/// Memory is bounded: at most one message of [`MAX_MESSAGE`] is ever buffered.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// What is buffered, for building an error response after a framing error.
    pub fn raw_head(&self) -> Option<&[u8]> {
        (!self.buf.is_empty()).then_some(&self.buf[..self.buf.len().min(MAX_MESSAGE)])
    }

    /// Bytes held but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `None` if more bytes are needed. After an `Err` the stream is
    /// out of sync and must be closed (§18.3: a stream with a bad Content-Length cannot be
    /// re-framed).
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.drain(..4);
            return Some(Ok(Frame::Ping));
        }
        if self.buf.starts_with(b"\r\n") && self.buf.get(2) != Some(&b'\r') {
            self.buf.drain(..2);
            return Some(Ok(Frame::Pong));
        }
        let Some(end) = header_end(&self.buf) else {
            return (self.buf.len() > MAX_MESSAGE).then_some(Err(FrameError::TooLarge));
        };
        let len = match content_length(&self.buf[..end]) {
            Ok(Some(n)) => n,
            Ok(None) => return Some(Err(FrameError::NoContentLength)),
            Err(e) => return Some(Err(e)),
        };
        let total = match end.checked_add(len) {
            Some(t) if t <= MAX_MESSAGE => t,
            _ => return Some(Err(FrameError::TooLarge)),
        };
        if self.buf.len() < total {
            return None;
        }
        let rest = self.buf.split_off(total);
        let msg = std::mem::replace(&mut self.buf, rest);
        Some(Ok(Frame::Message(msg)))
    }
}

/// Frames one UDP datagram (RFC 3261 §18.3: a body longer than Content-Length is truncated; a
/// shorter one makes the message unusable). A datagram of only CR/LF is a keep-alive.
pub fn frame_datagram(data: &[u8]) -> Result<Frame, FrameError> {
    if data.len() > MAX_MESSAGE {
        return Err(FrameError::TooLarge);
    }
    if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
        return Ok(if data.len() >= 4 {
            Frame::Ping
        } else {
            Frame::Pong
        });
    }
    let Some(end) = header_end(data) else {
        // RFC 3261 §7: the header section always ends with an empty line; without it the
        // datagram was cut, and naming a header as "malformed" would mislead the sender.
        return Err(FrameError::NoHeaderEnd);
    };
    match content_length(&data[..end])? {
        // `n` comes from the sender: added with care (near usize::MAX it would wrap). More
        // than the datagram holds, however much more, is a truncated message (§18.3: 400).
        Some(n) => match end.checked_add(n) {
            Some(total) if total <= data.len() => Ok(Frame::Message(data[..total].to_vec())),
            _ => Err(FrameError::Truncated),
        },
        None => Ok(Frame::Message(data.to_vec())),
    }
}

/// Why an incoming message cannot be used. Carries what a 400 needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unparsable SIP message: {0}")]
    Syntax(String),
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    #[error("CSeq method does not match the request method")]
    CSeqMethod,
}

impl ParseError {
    /// Reason phrase of the 400 (RFC 3261 §21.4.1 allows any phrase; say what was wrong).
    pub fn reason_phrase(&self) -> String {
        match self {
            ParseError::Syntax(_) => "Bad Request (unparsable message)".into(),
            ParseError::Header(h) => format!("Bad Request (missing or malformed {h})"),
            ParseError::CSeqMethod => "Bad Request (CSeq method mismatch)".into(),
        }
    }
}

/// Parses a framed message and checks the headers every transaction relies on
/// (RFC 3261 §8.1.1: Via, From, To, Call-ID, CSeq; Max-Forwards is tolerated when missing).
pub fn parse(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    let msg = SipMessage::try_from(bytes).map_err(|e| ParseError::Syntax(e.to_string()))?;
    check_headers(&msg)?;
    Ok(msg)
}

fn check_headers(msg: &SipMessage) -> Result<(), ParseError> {
    // Only presence here: rsip's typed Via rejects IPv6 sent-by (`[2001:db8::1]:5060`); the
    // transaction layer parses Via itself and answers 400 for a malformed one.
    let via = msg.via_header().map_err(|_| ParseError::Header("Via"))?;
    if via.value().trim().is_empty() {
        return Err(ParseError::Header("Via"));
    }
    msg.from_header()
        .ok()
        .and_then(|v| v.typed().ok())
        .ok_or(ParseError::Header("From"))?;
    msg.to_header()
        .ok()
        .and_then(|v| v.typed().ok())
        .ok_or(ParseError::Header("To"))?;
    let call_id = msg
        .call_id_header()
        .map_err(|_| ParseError::Header("Call-ID"))?;
    if call_id.value().trim().is_empty() {
        return Err(ParseError::Header("Call-ID"));
    }
    let cseq = msg
        .cseq_header()
        .ok()
        .and_then(|v| v.typed().ok())
        .ok_or(ParseError::Header("CSeq"))?;
    if let SipMessage::Request(r) = msg
        && cseq.method != r.method
    {
        return Err(ParseError::CSeqMethod);
    }
    Ok(())
}

/// The method token of a request start line, if `raw` starts with one (`INVITE sip:… SIP/2.0`).
pub fn raw_request_method(raw: &[u8]) -> Option<String> {
    let line_end = raw.iter().position(|b| *b == b'\r' || *b == b'\n')?;
    let line = std::str::from_utf8(&raw[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, _uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    (version == "SIP/2.0" && !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| method.to_string())
}

/// A `400 Bad Request` for a request rsip could not parse; see [`raw_error_response`].
pub fn raw_bad_request(raw: &[u8], reason: &str) -> Option<Vec<u8>> {
    raw_error_response(raw, 400, reason)
}

/// An error response (400, 413, …) for a request we cannot parse, built from its raw header
/// lines (RFC 3261 §8.2.6.2: copy Via, From, To, Call-ID, CSeq). `None` when no response can be
/// routed (not a request, an ACK — never answered — or no Via): such input is dropped.
pub fn raw_error_response(raw: &[u8], code: u16, reason: &str) -> Option<Vec<u8>> {
    let method = raw_request_method(raw)?;
    if method == "ACK" {
        return None;
    }
    let head_end = header_end(raw).unwrap_or(raw.len());
    // Header values are copied as the bytes they are: decoding them (U+FFFD for each invalid
    // byte, 3 bytes in UTF-8) would let a request of junk draw an answer three times its size.
    let mut copied: Vec<(&str, &[u8])> = Vec::new();
    let mut has_via = false;
    for line in raw[..head_end].split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let name = String::from_utf8_lossy(name);
        let canonical = match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => {
                has_via = true;
                "Via"
            }
            "from" | "f" => "From",
            "to" | "t" => "To",
            "call-id" | "i" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        copied.push((canonical, value));
    }
    if !has_via {
        return None;
    }
    // The phrase must not contain CR/LF (it came from us, but keep the message well-formed).
    let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
    let mut out = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
    for (name, value) in copied {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        if name == "To" && !value.to_ascii_lowercase().windows(5).any(|w| w == b";tag=") {
            out.extend_from_slice(b";tag=xsg400");
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(out)
}

/// RFC 3261 §21 reason phrases, for what we send and for what we report of responses received:
/// rsip prints a parsed status code as its enum name (`486 BusyHere`), so nobody should print it.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        401 => "Unauthorized",
        402 => "Payment Required",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        410 => "Gone",
        414 => "Request-URI Too Long",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        491 => "Request Pending",
        493 => "Undecipherable",
        502 => "Bad Gateway",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        603 => "Decline",
        c if c < 200 => "Session Progress",
        c if c < 300 => "OK",
        c if c < 400 => "Redirection",
        c if c < 500 => "Client Error",
        c if c < 600 => "Server Error",
        _ => "Global Failure",
    }
}

/// Serializes a message for the wire. rsip prints `Content-Length` from the header it holds,
/// so callers must keep that header right; [`set_body`] does.
pub fn to_bytes(msg: &SipMessage) -> Vec<u8> {
    msg.to_string().into_bytes()
}

/// Replaces the body and the Content-Length header together.
pub fn set_body(headers: &mut rsip::Headers, body: &mut Vec<u8>, new_body: Vec<u8>) {
    headers.retain(|h| !matches!(h, rsip::Header::ContentLength(_)));
    headers.push(rsip::headers::ContentLength::from(new_body.len() as u32).into());
    *body = new_body;
}

/// A response to `req` with the headers RFC 3261 §8.2.6.2 says to copy (Via, From, To,
/// Call-ID, CSeq), a To tag when `to_tag` is given and the request had none, and no body.
pub fn response_to(
    req: &Request,
    code: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
) -> Response {
    let mut headers = rsip::Headers::default();
    for h in req.headers.iter() {
        match h {
            rsip::Header::Via(_)
            | rsip::Header::From(_)
            | rsip::Header::CallId(_)
            | rsip::Header::CSeq(_) => headers.push(h.clone()),
            rsip::Header::To(to) => {
                let mut value = to.value().to_string();
                if let Some(tag) = to_tag
                    && !value.to_ascii_lowercase().contains(";tag=")
                {
                    value.push_str(&format!(";tag={tag}"));
                }
                headers.push(rsip::headers::To::new(value).into());
            }
            _ => {}
        }
    }
    headers.push(rsip::headers::ContentLength::from(0u32).into());
    let status_code = match reason {
        Some(phrase) => rsip::StatusCode::Other(code, phrase.to_string()),
        None => rsip::StatusCode::from(code),
    };
    Response {
        status_code,
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 item 5: a Content-Length near 2^64 wrapped `end + n` (a panic in the debug
    /// build, the UDP receive task gone; a misframed message in release). Any length past the
    /// datagram's end is a truncated message (400), as a merely large one always was.
    #[test]
    fn a_huge_content_length_is_truncated_not_a_wrap() {
        for n in [usize::MAX, usize::MAX - 10, MAX_MESSAGE + 1, 10] {
            let dgram = format!(
                "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: {n}\r\n\r\nbody"
            );
            assert_eq!(
                frame_datagram(dgram.as_bytes()),
                Err(FrameError::Truncated),
                "{n}"
            );
        }
    }

    /// Issue 11 item 4: the last-resort 400 copied headers through a lossy UTF-8 decoding, so a
    /// 20 KB request of invalid bytes drew a 60 KB answer. The answer is now no larger than
    /// the request (plus its status line and To tag) and carries the bytes as they came.
    #[test]
    fn the_last_resort_answer_does_not_amplify_invalid_bytes() {
        let mut req = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 OPTIONS\r\nCall-ID: ".to_vec();
        req.extend(std::iter::repeat_n(0xFF_u8, 20_000));
        req.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let answer = raw_error_response(&req, 400, "Bad Request").expect("an answer");
        assert!(
            answer.len() <= req.len() + 64,
            "answer {} bytes for a request of {}",
            answer.len(),
            req.len()
        );
        assert!(
            answer.windows(4).any(|w| w == [0xFF; 4]),
            "the Call-ID as it came"
        );
        assert!(answer.starts_with(b"SIP/2.0 400 Bad Request\r\n"));
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains("To: <sip:a@b>;tag=xsg400\r\n"), "{text:.200}");
    }

    const OPTIONS: &str = "OPTIONS sip:gw@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5071;branch=z9hG4bK-1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@sip.test>;tag=a1\r\n\
To: <sip:gw@sip.test>\r\n\
Call-ID: c1@127.0.0.1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 5\r\n\r\nhello";

    #[test]
    fn stream_framing_in_pieces_and_back_to_back() {
        let mut f = StreamFramer::new();
        let two = format!("{OPTIONS}{OPTIONS}");
        for chunk in two.as_bytes().chunks(7) {
            f.push(chunk);
        }
        assert_eq!(
            f.next_frame(),
            Some(Ok(Frame::Message(OPTIONS.as_bytes().to_vec())))
        );
        assert_eq!(
            f.next_frame(),
            Some(Ok(Frame::Message(OPTIONS.as_bytes().to_vec())))
        );
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn stream_keepalives() {
        let mut f = StreamFramer::new();
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_frame(), Some(Ok(Frame::Ping)));
        f.push(b"\r\n");
        assert_eq!(f.next_frame(), Some(Ok(Frame::Pong)));
        f.push(format!("\r\n{OPTIONS}").as_bytes());
        assert_eq!(f.next_frame(), Some(Ok(Frame::Pong)));
        assert!(matches!(f.next_frame(), Some(Ok(Frame::Message(_)))));
    }

    #[test]
    fn stream_limits() {
        let mut f = StreamFramer::new();
        f.push(b"INVITE sip:x SIP/2.0\r\nContent-Length: 10000000\r\n\r\n");
        assert_eq!(f.next_frame(), Some(Err(FrameError::TooLarge)));
        let mut f = StreamFramer::new();
        f.push(&vec![b'a'; MAX_MESSAGE + 1]);
        assert_eq!(f.next_frame(), Some(Err(FrameError::TooLarge)));
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Some(Err(FrameError::NoContentLength)));
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:x SIP/2.0\r\nl: -3\r\n\r\n");
        assert_eq!(f.next_frame(), Some(Err(FrameError::BadContentLength)));
        let mut f = StreamFramer::new();
        f.push(
            format!(
                "OPTIONS sip:x SIP/2.0\r\nContent-Length: {}\r\n\r\n",
                usize::MAX
            )
            .as_bytes(),
        );
        assert!(f.next_frame().unwrap().is_err());
    }

    #[test]
    fn datagrams() {
        assert_eq!(frame_datagram(b"\r\n\r\n"), Ok(Frame::Ping));
        let mut long = OPTIONS.as_bytes().to_vec();
        long.extend_from_slice(b"trailing garbage");
        assert_eq!(
            frame_datagram(&long),
            Ok(Frame::Message(OPTIONS.as_bytes().to_vec()))
        );
        assert_eq!(
            frame_datagram(&OPTIONS.as_bytes()[..OPTIONS.len() - 2]),
            Err(FrameError::Truncated)
        );
    }

    #[test]
    fn parse_checks_mandatory_headers() {
        let msg = parse(OPTIONS.as_bytes()).unwrap();
        assert!(msg.is_request());
        let no_callid = OPTIONS.replace("Call-ID: c1@127.0.0.1\r\n", "");
        assert_eq!(
            parse(no_callid.as_bytes()).unwrap_err(),
            ParseError::Header("Call-ID")
        );
        let wrong_cseq = OPTIONS.replace("1 OPTIONS", "1 INVITE");
        assert_eq!(
            parse(wrong_cseq.as_bytes()).unwrap_err(),
            ParseError::CSeqMethod
        );
        assert!(parse(b"\x00\x01garbage").is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn ipv6_via_is_accepted() {
        let v6 = OPTIONS.replace(
            "SIP/2.0/TCP 127.0.0.1:5071",
            "SIP/2.0/TCP [2001:db8::1]:5071",
        );
        assert!(parse(v6.as_bytes()).is_ok());
    }

    #[test]
    fn raw_400_from_broken_request() {
        let broken = OPTIONS.replace("Call-ID: c1@127.0.0.1\r\n", "");
        let r = raw_bad_request(
            broken.as_bytes(),
            "Bad Request (missing or malformed Call-ID)",
        )
        .unwrap();
        let text = String::from_utf8(r).unwrap();
        assert!(
            text.starts_with("SIP/2.0 400 Bad Request (missing or malformed Call-ID)\r\n"),
            "{text}"
        );
        assert!(text.contains("Via: SIP/2.0/TCP 127.0.0.1:5071;branch=z9hG4bK-1;rport\r\n"));
        assert!(text.contains("To: <sip:gw@sip.test>;tag=xsg400\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        // no Via, a response, an ACK, garbage: nothing to answer
        assert_eq!(
            raw_bad_request(OPTIONS.replace("Via", "Xia").as_bytes(), "x"),
            None
        );
        assert_eq!(
            raw_bad_request(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", "x"),
            None
        );
        assert_eq!(
            raw_bad_request(b"ACK sip:x SIP/2.0\r\nVia: x\r\n\r\n", "x"),
            None
        );
        assert_eq!(raw_bad_request(b"\xff\xfe", "x"), None);
    }

    #[test]
    fn response_copies_headers_and_adds_tag() {
        let SipMessage::Request(req) = parse(OPTIONS.as_bytes()).unwrap() else {
            panic!("fixture is a request")
        };
        let resp = response_to(&req, 200, None, Some("gwtag"));
        let text = SipMessage::from(resp).to_string();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(text.contains("To: <sip:gw@sip.test>;tag=gwtag"), "{text}");
        assert!(text.contains("Call-ID: c1@127.0.0.1"));
        assert!(text.contains("Content-Length: 0"));
        let reparsed = parse(text.as_bytes()).unwrap();
        assert!(reparsed.is_response());
    }

    #[test]
    fn no_panic_on_garbage() {
        let seeds: [&[u8]; 6] = [
            OPTIONS.as_bytes(),
            b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\n",
            b"\r\n\r\n\r\n",
            b"SIP/2.0 999\r\n\r\n",
            b"INVITE  SIP/2.0\r\n\r\n",
            "ÜNVITE sip:ü@ü SIP/2.0\r\nVia: ü\r\n\r\n".as_bytes(),
        ];
        for seed in seeds {
            for cut in 0..seed.len() {
                let part = &seed[..cut];
                let _ = frame_datagram(part);
                let _ = parse(part);
                let _ = raw_bad_request(part, "x");
                let mut f = StreamFramer::new();
                f.push(part);
                while let Some(Ok(_)) = f.next_frame() {}
            }
        }
    }
}
