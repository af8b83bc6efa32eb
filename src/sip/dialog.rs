//! INVITE dialogs (RFC 3261 §12): the state two user agents share after a 2xx (or a 1xx with a
//! To tag): Call-ID, tags, CSeq counters, the route set and the remote target. Builds the
//! requests sent inside the dialog (ACK for 2xx, BYE, re-INVITE) and checks requests received
//! in it. Pure: no transactions, no I/O.

use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response};

/// RFC 3261 §12: a dialog is identified by Call-ID, local tag and remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response with a To tag (RFC 3261 §12.1).
    Early,
    Confirmed,
    Terminated,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DialogError {
    #[error("response has no To tag")]
    NoRemoteTag,
    #[error("2xx to INVITE has no usable Contact")]
    NoContact,
    #[error("missing {0} header")]
    Missing(&'static str),
    /// RFC 3261 §12.2.2: a request with a lower CSeq than the last one is out of order (500).
    #[error("CSeq {got} lower than {last}")]
    CSeqOutOfOrder { got: u32, last: u32 },
}

#[derive(Debug, Clone)]
pub struct Dialog {
    pub id: DialogId,
    pub state: DialogState,
    /// Our URI as in From (UAC) or To (UAS), with no tag.
    pub local_uri: String,
    pub remote_uri: String,
    /// Where in-dialog requests go: the peer's Contact (refreshed by re-INVITE 2xx, §12.2.1.2).
    pub remote_target: String,
    /// Route headers for in-dialog requests, in the order they are sent.
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
    /// CSeq number of the INVITE that created the dialog (its ACK reuses it, §13.2.2.4).
    pub invite_cseq: u32,
}

/// `<sip:x>;tag=y` → `("<sip:x>", Some("y"))`: the name-addr and its tag.
fn split_tag(value: &str) -> (String, Option<String>) {
    let mut tag = None;
    let mut kept = Vec::new();
    // Parameters after the closing '>' (or after the URI when there are no brackets).
    let (addr, params) = match value.find('>') {
        Some(i) => (&value[..=i], &value[i + 1..]),
        None => match value.find(';') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        },
    };
    for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match p.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("tag") => {
                tag = Some(v.trim().to_string())
            }
            _ => kept.push(p.to_string()),
        }
    }
    let mut out = addr.trim().to_string();
    for p in kept {
        out.push(';');
        out.push_str(&p);
    }
    (out, tag)
}

/// The URI inside a name-addr (`"Bob" <sip:bob@h;transport=tcp>;expires=3` → `sip:bob@h;transport=tcp`).
pub fn addr_spec(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].trim().to_string(),
        _ => value.split(';').next().unwrap_or(value).trim().to_string(),
    }
}

fn header_value(headers: &rsip::Headers, pick: fn(&Header) -> Option<&str>) -> Option<&str> {
    headers.iter().find_map(pick)
}

fn from_of(h: &Header) -> Option<&str> {
    match h {
        Header::From(v) => Some(v.value()),
        _ => None,
    }
}
fn to_of(h: &Header) -> Option<&str> {
    match h {
        Header::To(v) => Some(v.value()),
        _ => None,
    }
}
fn call_id_of(h: &Header) -> Option<&str> {
    match h {
        Header::CallId(v) => Some(v.value()),
        _ => None,
    }
}
fn contact_of(h: &Header) -> Option<&str> {
    match h {
        Header::Contact(v) => Some(v.value()),
        _ => None,
    }
}

/// A header every dialog-forming message must carry.
fn required<'a>(
    headers: &'a rsip::Headers,
    pick: fn(&Header) -> Option<&str>,
    name: &'static str,
) -> Result<&'a str, DialogError> {
    header_value(headers, pick).ok_or(DialogError::Missing(name))
}

/// The CSeq number of a message's headers.
pub fn cseq_of(headers: &rsip::Headers) -> Option<u32> {
    cseq_number(headers)
}

fn cseq_number(headers: &rsip::Headers) -> Option<u32> {
    headers.iter().find_map(|h| match h {
        Header::CSeq(c) => c
            .value()
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok()),
        _ => None,
    })
}

/// All Record-Route entries in order (several may share one header line).
fn record_routes(headers: &rsip::Headers) -> Vec<String> {
    let mut out = Vec::new();
    for h in headers.iter() {
        if let Header::RecordRoute(rr) = h {
            out.extend(split_list(rr.value()));
        }
    }
    out
}

/// Splits a comma-separated header list, ignoring commas inside `<…>` and quotes.
fn split_list(v: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
    for c in v.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

impl Dialog {
    /// UAC side (RFC 3261 §12.1.2): from our INVITE and a response with a To tag.
    pub fn from_uac(invite: &Request, resp: &Response) -> Result<Dialog, DialogError> {
        let from = required(&invite.headers, from_of, "From")?;
        let to = required(&resp.headers, to_of, "To")?;
        let call_id = required(&invite.headers, call_id_of, "Call-ID")?;
        let (local_uri, local_tag) = split_tag(from);
        let (remote_uri, remote_tag) = split_tag(to);
        let remote_tag = remote_tag.ok_or(DialogError::NoRemoteTag)?;
        let code = resp.status_code.code();
        let remote_target = header_value(&resp.headers, contact_of)
            .map(addr_spec)
            .or_else(|| (code < 200).then(|| invite.uri.to_string()))
            .ok_or(DialogError::NoContact)?;
        // §12.1.2: the UAC's route set is the Record-Route list in reverse.
        let mut route_set = record_routes(&resp.headers);
        route_set.reverse();
        let invite_cseq = cseq_number(&invite.headers).ok_or(DialogError::Missing("CSeq"))?;
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag: local_tag.unwrap_or_default(),
                remote_tag,
            },
            state: if (200..300).contains(&code) {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_uri,
            remote_uri,
            remote_target,
            route_set,
            local_cseq: invite_cseq,
            remote_cseq: None,
            invite_cseq,
        })
    }

    /// UAS side (RFC 3261 §12.1.1): from the INVITE we received and the To tag we chose.
    pub fn from_uas(invite: &Request, local_tag: &str) -> Result<Dialog, DialogError> {
        let from = required(&invite.headers, from_of, "From")?;
        let to = required(&invite.headers, to_of, "To")?;
        let call_id = required(&invite.headers, call_id_of, "Call-ID")?;
        let (remote_uri, remote_tag) = split_tag(from);
        let (local_uri, _) = split_tag(to);
        let remote_target = header_value(&invite.headers, contact_of)
            .map(addr_spec)
            .ok_or(DialogError::NoContact)?;
        let remote_cseq = cseq_number(&invite.headers).ok_or(DialogError::Missing("CSeq"))?;
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag: local_tag.to_string(),
                remote_tag: remote_tag.ok_or(DialogError::NoRemoteTag)?,
            },
            state: DialogState::Early,
            local_uri,
            remote_uri,
            remote_target,
            // §12.1.1: the UAS's route set is the Record-Route list in order.
            route_set: record_routes(&invite.headers),
            local_cseq: 0,
            remote_cseq: Some(remote_cseq),
            invite_cseq: remote_cseq,
        })
    }

    /// Where to send an in-dialog request: the first route if it is a loose router, else the
    /// remote target (strict routing, RFC 2543, is not supported).
    pub fn next_hop_uri(&self) -> String {
        self.route_set
            .first()
            .map(|r| addr_spec(r))
            .unwrap_or_else(|| self.remote_target.clone())
    }

    /// An in-dialog request (§12.2.1.1) without Via (the caller adds it). `cseq` = None takes
    /// the next local CSeq; ACK passes the INVITE's.
    pub fn request(
        &mut self,
        method: Method,
        cseq: Option<u32>,
        user_agent: &str,
    ) -> Result<Request, DialogError> {
        let n = match cseq {
            Some(n) => n,
            None => {
                self.local_cseq += 1;
                self.local_cseq
            }
        };
        let uri =
            rsip::Uri::try_from(self.remote_target.as_str()).map_err(|_| DialogError::NoContact)?;
        let mut headers = rsip::Headers::default();
        for r in &self.route_set {
            headers.push(rsip::headers::Route::new(r.clone()).into());
        }
        headers.push(rsip::headers::MaxForwards::new("70").into());
        headers.push(
            rsip::headers::From::new(format!("{};tag={}", self.local_uri, self.id.local_tag))
                .into(),
        );
        headers.push(
            rsip::headers::To::new(format!("{};tag={}", self.remote_uri, self.id.remote_tag))
                .into(),
        );
        headers.push(rsip::headers::CallId::new(self.id.call_id.clone()).into());
        headers.push(rsip::headers::CSeq::new(format!("{n} {method}")).into());
        headers.push(rsip::headers::UserAgent::new(user_agent.to_string()).into());
        headers.push(rsip::headers::ContentLength::new("0").into());
        Ok(Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        })
    }

    /// The ACK for a 2xx (§13.2.2.4): same CSeq number as the INVITE, method ACK.
    pub fn ack(&mut self, user_agent: &str) -> Result<Request, DialogError> {
        self.request(Method::Ack, Some(self.invite_cseq), user_agent)
    }

    /// Whether `req` belongs to this dialog (Call-ID and both tags, §12.2.2).
    pub fn matches(&self, req: &Request) -> bool {
        let call_id = header_value(&req.headers, call_id_of);
        let from_tag = header_value(&req.headers, from_of).and_then(|v| split_tag(v).1);
        let to_tag = header_value(&req.headers, to_of).and_then(|v| split_tag(v).1);
        call_id == Some(self.id.call_id.as_str())
            && from_tag.as_deref() == Some(self.id.remote_tag.as_str())
            && to_tag.as_deref() == Some(self.id.local_tag.as_str())
    }

    /// Checks and records the CSeq of a request received in the dialog (§12.2.2). ACK and
    /// CANCEL carry the CSeq of their INVITE and are not checked.
    pub fn accept_remote_cseq(&mut self, req: &Request) -> Result<(), DialogError> {
        if matches!(req.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let n = cseq_number(&req.headers).ok_or(DialogError::Missing("CSeq"))?;
        if let Some(last) = self.remote_cseq
            && n <= last
        {
            return Err(DialogError::CSeqOutOfOrder { got: n, last });
        }
        self.remote_cseq = Some(n);
        Ok(())
    }

    /// A 2xx to a re-INVITE or a target-refresh request updates the remote target (§12.2.1.2).
    pub fn refresh_target(&mut self, resp: &Response) {
        if let Some(c) = header_value(&resp.headers, contact_of) {
            self.remote_target = addr_spec(c);
        }
    }
}

/// RFC 3261 §13.3.1.4: the UAS core (not the transaction) retransmits its 2xx to an INVITE,
/// starting at T1 and doubling up to T2, until the ACK arrives; after 64·T1 without ACK it
/// gives up and the dialog must be ended with a BYE.
#[derive(Debug, Clone)]
pub struct Retransmit2xx {
    next: Instant,
    interval: Duration,
    t2: Duration,
    deadline: Instant,
    acked: bool,
}

/// What [`Retransmit2xx::on_timeout`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retransmit {
    /// Send the 2xx again.
    Send,
    /// No ACK within 64·T1: confirm nothing, send BYE (§13.3.1.4).
    GiveUp,
    /// Nothing due.
    Idle,
}

impl Retransmit2xx {
    /// Call right after sending the 2xx the first time.
    pub fn new(now: Instant, t1: Duration, t2: Duration) -> Self {
        Retransmit2xx {
            next: now + t1,
            interval: t1,
            t2,
            deadline: now + t1 * 64,
            acked: false,
        }
    }
    pub fn on_ack(&mut self) {
        self.acked = true;
    }
    pub fn is_done(&self) -> bool {
        self.acked
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.acked).then(|| self.next.min(self.deadline))
    }
    pub fn on_timeout(&mut self, now: Instant) -> Retransmit {
        if self.acked {
            return Retransmit::Idle;
        }
        if now >= self.deadline {
            self.acked = true;
            return Retransmit::GiveUp;
        }
        if now >= self.next {
            self.interval = (self.interval * 2).min(self.t2);
            self.next = now + self.interval;
            return Retransmit::Send;
        }
        Retransmit::Idle
    }
}

/// RFC 3261 §14: re-INVITEs within a dialog, one at a time in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reinvites {
    /// We sent a re-INVITE and have no final response yet.
    pub outgoing: bool,
    /// We received a re-INVITE and have not answered it finally yet.
    pub incoming: bool,
}

/// How to answer a re-INVITE that arrives while another is in progress (§14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReinviteVerdict {
    Accept,
    /// Ours is pending: glare, `491 Request Pending`.
    Glare491,
    /// Theirs is still pending: `500 Server Internal Error` with `Retry-After` (0–10 s).
    Busy500,
}

impl Reinvites {
    pub fn on_incoming(&mut self) -> ReinviteVerdict {
        if self.outgoing {
            ReinviteVerdict::Glare491
        } else if self.incoming {
            ReinviteVerdict::Busy500
        } else {
            self.incoming = true;
            ReinviteVerdict::Accept
        }
    }
    /// Whether we may send a re-INVITE now (§14.1: not while one is pending either way).
    pub fn may_send(&self) -> bool {
        !self.outgoing && !self.incoming
    }
}

/// §14.1: after a 491, the side that owns the Call-ID (generated it: the dialog's UAC)
/// retries after 2.1–4 s, the other after 0–2 s, both in units of 10 ms, so the two re-INVITEs
/// do not collide again. `rand01` in `[0, 1)`.
pub fn glare_retry_delay(owns_call_id: bool, rand01: f64) -> Duration {
    let r = rand01.clamp(0.0, 0.999_999);
    let tens_of_ms = if owns_call_id {
        210 + (r * 190.0) as u64
    } else {
        (r * 200.0) as u64
    };
    Duration::from_millis(tens_of_ms * 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::SipMessage;

    fn req(text: &str) -> Request {
        match SipMessage::try_from(text).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }
    fn resp(text: &str) -> Response {
        match SipMessage::try_from(text).unwrap() {
            SipMessage::Response(r) => r,
            _ => unreachable!(),
        }
    }

    const INVITE: &str = "INVITE sip:bob@sip.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:gateway@sip.test>;tag=gw1\r\nTo: <sip:bob@sip.test>\r\nCall-ID: c1@127.0.0.1\r\nCSeq: 2 INVITE\r\nContact: <sip:gateway@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n";
    const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nRecord-Route: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.1;lr>\r\nFrom: <sip:gateway@sip.test>;tag=gw1\r\nTo: <sip:bob@sip.test>;tag=bob9\r\nCall-ID: c1@127.0.0.1\r\nCSeq: 2 INVITE\r\nContact: \"Bob\" <sip:bob@127.0.0.1:5080;transport=udp>;expires=60\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn uac_dialog_ack_and_bye() {
        let mut d = Dialog::from_uac(&req(INVITE), &resp(OK)).unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.id.remote_tag, "bob9");
        assert_eq!(d.remote_target, "sip:bob@127.0.0.1:5080;transport=udp");
        assert_eq!(
            d.route_set,
            vec!["<sip:10.0.0.1;lr>", "<sip:127.0.0.1:5060;lr>"]
        );
        assert_eq!(d.next_hop_uri(), "sip:10.0.0.1;lr");
        let ack = SipMessage::from(d.ack("ua").unwrap()).to_string();
        assert!(
            ack.to_ascii_lowercase()
                .starts_with("ack sip:bob@127.0.0.1:5080;transport=udp sip/2.0\r\n"),
            "{ack}"
        );
        assert!(ack.contains("CSeq: 2 ACK"));
        assert!(ack.contains("To: <sip:bob@sip.test>;tag=bob9"));
        assert!(ack.contains("From: <sip:gateway@sip.test>;tag=gw1"));
        let bye = SipMessage::from(d.request(Method::Bye, None, "ua").unwrap()).to_string();
        assert!(bye.contains("CSeq: 3 BYE"), "{bye}");
        let routes: Vec<_> = bye.lines().filter(|l| l.starts_with("Route:")).collect();
        assert_eq!(
            routes,
            vec!["Route: <sip:10.0.0.1;lr>", "Route: <sip:127.0.0.1:5060;lr>"]
        );
    }

    #[test]
    fn uas_dialog_matching_and_cseq() {
        let mut d = Dialog::from_uas(&req(INVITE), "mine").unwrap();
        assert_eq!(d.remote_target, "sip:gateway@127.0.0.1:5070");
        let bye = req(&INVITE
            .replace("INVITE sip", "BYE sip")
            .replace("2 INVITE", "3 BYE")
            .replace("<sip:bob@sip.test>\r\n", "<sip:bob@sip.test>;tag=mine\r\n"));
        assert!(d.matches(&bye));
        assert_eq!(d.accept_remote_cseq(&bye), Ok(()));
        assert_eq!(
            d.accept_remote_cseq(&bye),
            Err(DialogError::CSeqOutOfOrder { got: 3, last: 3 })
        );
        let other = req(&INVITE.replace("tag=gw1", "tag=zz"));
        assert!(!d.matches(&other));
    }

    #[test]
    fn errors_not_panics() {
        let no_tag = OK.replace(";tag=bob9", "");
        assert_eq!(
            Dialog::from_uac(&req(INVITE), &resp(&no_tag)).unwrap_err(),
            DialogError::NoRemoteTag
        );
        let no_contact = OK.replace(
            "Contact: \"Bob\" <sip:bob@127.0.0.1:5080;transport=udp>;expires=60\r\n",
            "",
        );
        assert_eq!(
            Dialog::from_uac(&req(INVITE), &resp(&no_contact)).unwrap_err(),
            DialogError::NoContact
        );
        assert_eq!(
            split_list("<sip:a,b>, <sip:c>"),
            vec!["<sip:a,b>", "<sip:c>"]
        );
        assert_eq!(addr_spec("sip:x@y;lr"), "sip:x@y");
    }

    #[test]
    fn uas_retransmits_2xx_until_ack() {
        let t0 = Instant::now();
        let (t1, t2) = (Duration::from_millis(500), Duration::from_secs(4));
        let mut r = Retransmit2xx::new(t0, t1, t2);
        let mut sends = Vec::new();
        let mut now = t0;
        while let Some(at) = r.poll_timeout() {
            now = at;
            match r.on_timeout(now) {
                Retransmit::Send => sends.push((now - t0).as_millis()),
                Retransmit::GiveUp => break,
                Retransmit::Idle => {}
            }
        }
        // 0.5, 1.5, 3.5, 7.5, then every 4 s (T2) until 64·T1 = 32 s
        assert_eq!(
            sends,
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!((now - t0).as_secs(), 32);
        let mut r = Retransmit2xx::new(t0, t1, t2);
        assert_eq!(r.on_timeout(t0 + t1), Retransmit::Send);
        r.on_ack();
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.on_timeout(t0 + t1 * 100), Retransmit::Idle);
    }

    #[test]
    fn reinvite_glare() {
        let mut g = Reinvites::default();
        assert!(g.may_send());
        g.outgoing = true;
        assert_eq!(g.on_incoming(), ReinviteVerdict::Glare491);
        let mut g = Reinvites::default();
        assert_eq!(g.on_incoming(), ReinviteVerdict::Accept);
        assert_eq!(g.on_incoming(), ReinviteVerdict::Busy500);
        assert!(!g.may_send());
        for r in [0.0, 0.5, 0.999_999] {
            let owner = glare_retry_delay(true, r);
            assert!(
                owner >= Duration::from_millis(2100) && owner <= Duration::from_millis(4000),
                "{owner:?}"
            );
            assert_eq!(owner.as_millis() % 10, 0);
            let other = glare_retry_delay(false, r);
            assert!(other <= Duration::from_millis(2000), "{other:?}");
        }
    }

    #[test]
    fn target_refresh() {
        let mut d = Dialog::from_uac(&req(INVITE), &resp(OK)).unwrap();
        d.refresh_target(&resp(&OK.replace("127.0.0.1:5080", "127.0.0.1:6000")));
        assert_eq!(d.remote_target, "sip:bob@127.0.0.1:6000;transport=udp");
    }
}
