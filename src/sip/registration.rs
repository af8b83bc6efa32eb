//! Upstream registration of the gateway's SIP account (RFC 3261 §10, digest per RFC 7616/8760):
//! REGISTER, answer 401/407 challenges, refresh well before the granted expiry, `423` → retry
//! with Min-Expires, failures → capped exponential backoff, un-REGISTER (`Expires: 0`) on
//! shutdown. Pure: it builds requests and reads responses; the user agent sends them in
//! non-INVITE client transactions (which add Via and handle retransmission) and reports back.

use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Request, Response};

use super::auth::{
    AuthKind, Authorization, Challenge, DigestClient, DigestRequest, Rechallenge, challenge_in,
};

/// After a failure, wait this long before the first retry, doubling up to [`BACKOFF_MAX`]:
/// fast enough to ride out a registrar restart, slow enough not to lock out an account whose
/// password is wrong.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Challenges answered per registration attempt before giving up (a server that challenges
/// forever must not make us loop).
const MAX_CHALLENGES: u32 = 3;

/// What the account is and where it registers.
#[derive(Debug, Clone)]
pub struct RegistrationParams {
    /// Request-URI of REGISTER, e.g. `sip:pbx.example.net` (RFC 3261 §10.2: no user part).
    pub registrar: String,
    /// Address of record: `sip:gateway@pbx.example.net`.
    pub aor: String,
    /// The Contact URI (without angle brackets), e.g. `sip:gateway@192.0.2.5:5070;transport=tcp`.
    pub contact: String,
    pub expires: u32,
    /// Call-ID kept for the life of the registration (RFC 3261 §10.2.4: refreshes reuse it).
    pub call_id: String,
    pub from_tag: String,
    pub user_agent: String,
}

/// Where the registration stands; `/about/health` shows the reason while not registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// Nothing sent yet.
    Idle,
    /// A REGISTER is in flight (first, after a challenge, or a retry).
    Registering,
    /// Registered; `expires` seconds granted by the registrar.
    Registered {
        expires: u32,
    },
    /// The last attempt failed; the next one is due at `retry_at`.
    Failed {
        reason: String,
        retry_at: Instant,
    },
    /// `Expires: 0` sent or done.
    Unregistering,
    Unregistered,
}

/// Outputs for the user agent.
#[derive(Debug)]
pub enum RegOutput {
    /// Send this REGISTER in a new non-INVITE client transaction toward the registrar.
    Send(Box<Request>),
    /// The state changed (log it once, update health and metrics).
    State(RegState),
    /// The registrar accepted a REGISTER (first, refresh or renewal): count it.
    Confirmed { expires: u32 },
}

/// The registration state machine.
#[derive(Debug)]
pub struct Registration {
    params: RegistrationParams,
    digest: DigestClient,
    cnonce: fn() -> String,
    state: RegState,
    cseq: u32,
    /// Expiry we ask for next (raised by 423 Min-Expires).
    expires: u32,
    /// Credentials sent with the REGISTER in flight, to judge a re-challenge.
    sent_auth: Option<(AuthKind, Authorization)>,
    challenges: u32,
    failures: u32,
    /// When the next REGISTER (refresh or retry) is due.
    due: Option<Instant>,
    /// Whether the REGISTER in flight is the un-REGISTER.
    unregistering: bool,
    /// A REGISTER is in flight (at most one at a time).
    in_flight: bool,
    out: Vec<RegOutput>,
}

impl Registration {
    pub fn new(params: RegistrationParams, digest: DigestClient, cnonce: fn() -> String) -> Self {
        let expires = params.expires;
        Registration {
            params,
            digest,
            cnonce,
            state: RegState::Idle,
            cseq: 0,
            expires,
            sent_auth: None,
            challenges: 0,
            failures: 0,
            due: None,
            unregistering: false,
            in_flight: false,
            out: Vec::new(),
        }
    }

    pub fn state(&self) -> &RegState {
        &self.state
    }

    pub fn is_registered(&self) -> bool {
        matches!(self.state, RegState::Registered { .. })
    }

    /// Sends the first REGISTER.
    pub fn start(&mut self, now: Instant) {
        self.challenges = 0;
        self.send_register(self.expires, None, now);
    }

    /// The flow to the registrar broke (TCP connection closed, keep-alives unanswered):
    /// register again now (RFC 5626 §4.4.1 does the same on flow failure).
    pub fn flow_failed(&mut self, now: Instant) {
        if self.unregistering || self.in_flight {
            return;
        }
        self.challenges = 0;
        // Until the registrar confirms again we cannot claim to be reachable.
        self.set_state(RegState::Registering);
        self.send_register(self.expires, None, now);
    }

    /// Un-REGISTER (`Expires: 0`) on shutdown.
    pub fn unregister(&mut self, now: Instant) {
        if matches!(self.state, RegState::Unregistered | RegState::Idle) {
            return;
        }
        self.unregistering = true;
        self.challenges = 0;
        self.due = None;
        self.send_register(0, None, now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    pub fn on_timeout(&mut self, now: Instant) {
        if self.due.is_some_and(|d| d <= now) {
            self.due = None;
            self.challenges = 0;
            self.send_register(self.expires, None, now);
        }
    }

    pub fn poll_output(&mut self) -> Option<RegOutput> {
        (!self.out.is_empty()).then(|| self.out.remove(0))
    }

    /// A final response to the REGISTER in flight.
    pub fn on_response(&mut self, resp: &Response, now: Instant) {
        let code = resp.status_code.code();
        if code < 200 {
            return;
        }
        self.in_flight = false;
        if self.unregistering {
            if let Some(kind) = AuthKind::from_status(code)
                && self.answer_challenge(kind, resp, now)
            {
                return;
            }
            // Done either way: we are going away.
            self.set_state(RegState::Unregistered);
            return;
        }
        match code {
            200..=299 => {
                let granted = granted_expires(resp, &self.params.contact).unwrap_or(self.expires);
                if granted == 0 {
                    self.fail(
                        format!(
                            "SIP registration not kept by the registrar: {code} with expires=0"
                        ),
                        now,
                    );
                    return;
                }
                self.failures = 0;
                self.sent_auth = None;
                self.due = Some(now + refresh_after(granted));
                self.out.push(RegOutput::Confirmed { expires: granted });
                self.set_state(RegState::Registered { expires: granted });
            }
            401 | 407 => {
                let kind = AuthKind::from_status(code).expect("401 and 407 are auth statuses");
                if !self.answer_challenge(kind, resp, now) {
                    let why = if self.challenges > MAX_CHALLENGES {
                        "too many challenges".to_string()
                    } else {
                        "wrong username or password?".to_string()
                    };
                    self.fail(
                        format!("SIP registration refused: {code} {} ({why})", reason(resp)),
                        now,
                    );
                }
            }
            423 => match header_u32(resp, |h| match h {
                Header::MinExpires(v) => Some(v.value().to_string()),
                _ => None,
            }) {
                // RFC 3261 §10.2.8: retry with at least Min-Expires.
                Some(min) if min > self.expires && self.challenges <= MAX_CHALLENGES => {
                    self.expires = min;
                    self.challenges += 1;
                    let auth = self.sent_auth.clone();
                    self.send_register(self.expires, auth.map(|(k, _)| k), now);
                }
                _ => self.fail(
                    format!(
                        "SIP registration refused: 423 {} without a usable Min-Expires",
                        reason(resp)
                    ),
                    now,
                ),
            },
            _ => {
                let retry_after = header_u32(resp, |h| match h {
                    Header::RetryAfter(v) => {
                        Some(v.value().split(';').next().unwrap_or("").to_string())
                    }
                    _ => None,
                });
                self.fail_with_retry(
                    format!("SIP registration refused: {code} {}", reason(resp)),
                    retry_after.map(|s| Duration::from_secs(u64::from(s))),
                    now,
                );
            }
        }
    }

    /// The transaction timed out (Timer F) or the transport failed.
    pub fn on_failure(&mut self, why: &str, now: Instant) {
        self.in_flight = false;
        if self.unregistering {
            self.set_state(RegState::Unregistered);
            return;
        }
        self.fail(format!("SIP registrar unreachable: {why}"), now);
    }

    /// Answers a 401/407; false when we must not (wrong password, too many rounds, no usable
    /// challenge).
    fn answer_challenge(&mut self, kind: AuthKind, resp: &Response, now: Instant) -> bool {
        self.challenges += 1;
        if self.challenges > MAX_CHALLENGES {
            return false;
        }
        let Some((challenge, verdict)) = challenge_in(&resp.headers, kind, self.sent_auth.as_ref())
        else {
            return false;
        };
        match verdict {
            Rechallenge::Fresh | Rechallenge::Stale => {
                let expires = if self.unregistering { 0 } else { self.expires };
                self.send_with_challenge(expires, kind, &challenge, now)
            }
            Rechallenge::Failed => false,
        }
    }

    fn send_with_challenge(
        &mut self,
        expires: u32,
        kind: AuthKind,
        challenge: &Challenge,
        now: Instant,
    ) -> bool {
        let uri = self.params.registrar.clone();
        let req = DigestRequest {
            method: "REGISTER",
            uri: &uri,
            body: &[],
        };
        match self.digest.authorize(challenge, &req, self.cnonce) {
            Ok(auth) => {
                self.sent_auth = Some((kind, auth));
                self.send_register(expires, Some(kind), now);
                true
            }
            Err(_) => false,
        }
    }

    fn fail(&mut self, reason: String, now: Instant) {
        self.fail_with_retry(reason, None, now);
    }

    fn fail_with_retry(&mut self, reason: String, retry_after: Option<Duration>, now: Instant) {
        let backoff = BACKOFF_INITIAL
            .saturating_mul(1u32 << self.failures.min(10))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        let wait = retry_after.map_or(backoff, |r| r.max(backoff).min(BACKOFF_MAX * 4));
        self.sent_auth = None;
        let retry_at = now + wait;
        self.due = Some(retry_at);
        self.set_state(RegState::Failed { reason, retry_at });
    }

    fn set_state(&mut self, state: RegState) {
        if self.state != state {
            self.state = state.clone();
            self.out.push(RegOutput::State(state));
        }
    }

    /// Builds the REGISTER (no Via: the transaction layer adds it with a fresh branch).
    fn send_register(&mut self, expires: u32, auth: Option<AuthKind>, now: Instant) {
        // Whatever was scheduled (refresh, retry) is superseded: one REGISTER at a time.
        self.due = None;
        self.in_flight = true;
        self.cseq += 1;
        let p = &self.params;
        let mut headers = rsip::Headers::default();
        headers.push(rsip::headers::MaxForwards::new("70").into());
        headers.push(rsip::headers::From::new(format!("<{}>;tag={}", p.aor, p.from_tag)).into());
        headers.push(rsip::headers::To::new(format!("<{}>", p.aor)).into());
        headers.push(rsip::headers::CallId::new(p.call_id.clone()).into());
        headers.push(rsip::headers::CSeq::new(format!("{} REGISTER", self.cseq)).into());
        headers.push(rsip::headers::Contact::new(format!("<{}>", p.contact)).into());
        headers.push(rsip::headers::Expires::new(expires.to_string()).into());
        headers.push(rsip::headers::UserAgent::new(p.user_agent.clone()).into());
        match (auth, &self.sent_auth) {
            (Some(AuthKind::Www), Some((AuthKind::Www, a))) => {
                headers.push(rsip::headers::Authorization::new(a.value().to_string()).into())
            }
            (Some(AuthKind::Proxy), Some((AuthKind::Proxy, a))) => {
                headers.push(rsip::headers::ProxyAuthorization::new(a.value().to_string()).into())
            }
            _ => {}
        }
        headers.push(rsip::headers::ContentLength::new("0").into());
        let uri = match rsip::Uri::try_from(p.registrar.as_str()) {
            Ok(u) => u,
            Err(e) => {
                // The configuration was validated; this is a bug, not input.
                self.fail(format!("registrar URI unusable: {e}"), now);
                return;
            }
        };
        let req = Request {
            method: rsip::Method::Register,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        };
        if self.unregistering {
            self.set_state(RegState::Unregistering);
        } else if !self.is_registered() {
            self.set_state(RegState::Registering);
        }
        self.out.push(RegOutput::Send(Box::new(req)));
    }
}

/// Refresh at 3/4 of the granted time, and at least 30 s early when the grant allows
/// (PROTOCOLS.md §5.1: 50–80 %, ≥ 30 s early), so one lost refresh can still be retried.
pub fn refresh_after(granted: u32) -> Duration {
    let g = u64::from(granted);
    let secs = if g >= 120 {
        (g * 3 / 4).min(g - 30)
    } else {
        (g / 2).max(1)
    };
    Duration::from_secs(secs)
}

/// The expiry the registrar granted to our contact: its `expires` parameter in the Contact of
/// the 200, else the Expires header (RFC 3261 §10.2.4).
fn granted_expires(resp: &Response, our_contact: &str) -> Option<u32> {
    let ours = our_contact.to_ascii_lowercase();
    let host_port = ours
        .split_once('@')
        .map(|(_, r)| r)
        .unwrap_or(&ours)
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    for h in resp.headers.iter() {
        if let Header::Contact(c) = h {
            for contact in c.value().split(',') {
                let lc = contact.to_ascii_lowercase();
                if lc.contains(&host_port)
                    && let Some(v) = lc
                        .split(';')
                        .find_map(|p| p.trim().strip_prefix("expires="))
                    && let Ok(n) = v.trim_matches(|c: char| !c.is_ascii_digit()).parse()
                {
                    return Some(n);
                }
            }
        }
    }
    header_u32(resp, |h| match h {
        Header::Expires(v) => Some(v.value().to_string()),
        _ => None,
    })
}

fn header_u32(resp: &Response, pick: impl Fn(&Header) -> Option<String>) -> Option<u32> {
    resp.headers
        .iter()
        .find_map(pick)
        .and_then(|v| v.trim().parse().ok())
}

fn reason(resp: &Response) -> &'static str {
    super::message::reason_phrase(resp.status_code.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use rsip::SipMessage;

    fn params() -> RegistrationParams {
        RegistrationParams {
            registrar: "sip:sip.test".into(),
            aor: "sip:gateway@sip.test".into(),
            contact: "sip:gateway@127.0.0.1:5070;transport=udp".into(),
            expires: 600,
            call_id: "reg-1@127.0.0.1".into(),
            from_tag: "ft1".into(),
            user_agent: "xmpp-sip-gateway/test".into(),
        }
    }

    fn reg() -> Registration {
        let digest = DigestClient::new("gateway", Secret::new("gatewaypw")).unwrap();
        Registration::new(params(), digest, || "0a4f113b".to_string())
    }

    fn sent(r: &mut Registration) -> Request {
        let mut req = None;
        while let Some(o) = r.poll_output() {
            if let RegOutput::Send(q) = o {
                req = Some(*q);
            }
        }
        req.expect("a REGISTER was sent")
    }

    fn resp(req: &Request, status: &str, extra: &str) -> Response {
        let mut text = format!("SIP/2.0 {status}\r\n");
        for h in req.headers.iter() {
            if matches!(
                h,
                Header::From(_) | Header::To(_) | Header::CallId(_) | Header::CSeq(_)
            ) {
                text.push_str(&format!("{h}\r\n"));
            }
        }
        text.push_str("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n");
        text.push_str(extra);
        text.push_str("Content-Length: 0\r\n\r\n");
        match SipMessage::try_from(text.as_str()).unwrap() {
            SipMessage::Response(r) => r,
            _ => unreachable!(),
        }
    }

    fn header(req: &Request, name: &str) -> Option<String> {
        req.headers.iter().map(|h| h.to_string()).find(|h| {
            h.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
    }

    #[test]
    fn challenge_then_registered_then_refresh() {
        let mut r = reg();
        let t0 = Instant::now();
        r.start(t0);
        let first = sent(&mut r);
        assert_eq!(first.method, rsip::Method::Register);
        assert!(header(&first, "Authorization").is_none());
        assert_eq!(header(&first, "CSeq").unwrap(), "CSeq: 1 REGISTER");
        assert_eq!(r.state(), &RegState::Registering);

        r.on_response(
            &resp(
                &first,
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"abc\", qop=\"auth\"\r\n",
            ),
            t0,
        );
        let second = sent(&mut r);
        let auth = header(&second, "Authorization").unwrap();
        assert!(
            auth.contains("username=\"gateway\"")
                && auth.contains("nc=00000001")
                && auth.contains("uri=\"sip:sip.test\""),
            "{auth}"
        );
        assert_eq!(header(&second, "CSeq").unwrap(), "CSeq: 2 REGISTER");
        assert_eq!(header(&second, "Call-ID"), header(&first, "Call-ID"));

        r.on_response(
            &resp(
                &second,
                "200 OK",
                "Contact: <sip:gateway@127.0.0.1:5070;transport=udp>;expires=300\r\n",
            ),
            t0,
        );
        assert_eq!(r.state(), &RegState::Registered { expires: 300 });
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(225)));
        let _ = sent_none(&mut r);
        r.on_timeout(t0 + Duration::from_secs(225));
        let refresh = sent(&mut r);
        assert_eq!(header(&refresh, "CSeq").unwrap(), "CSeq: 3 REGISTER");
        assert_eq!(
            r.state(),
            &RegState::Registered { expires: 300 },
            "refresh keeps the registered state"
        );
    }

    fn sent_none(r: &mut Registration) -> usize {
        let mut n = 0;
        while r.poll_output().is_some() {
            n += 1;
        }
        n
    }

    #[test]
    fn wrong_password_fails_and_backs_off() {
        let mut r = reg();
        let t0 = Instant::now();
        r.start(t0);
        let a = sent(&mut r);
        let ch = "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"n1\", qop=\"auth\"\r\n";
        r.on_response(&resp(&a, "401 Unauthorized", ch), t0);
        let b = sent(&mut r);
        // same nonce again, not stale: our answer was rejected
        r.on_response(&resp(&b, "401 Unauthorized", ch), t0);
        match r.state() {
            RegState::Failed { reason, retry_at } => {
                assert!(reason.contains("SIP registration refused: 401"), "{reason}");
                assert_eq!(*retry_at, t0 + BACKOFF_INITIAL);
            }
            s => panic!("{s:?}"),
        }
        // retry, and the next failure waits twice as long
        r.on_timeout(t0 + BACKOFF_INITIAL);
        let c = sent(&mut r);
        let t1 = t0 + BACKOFF_INITIAL;
        r.on_response(&resp(&c, "403 Forbidden", ""), t1);
        match r.state() {
            RegState::Failed { reason, retry_at } => {
                assert_eq!(reason, "SIP registration refused: 403 Forbidden");
                assert_eq!(*retry_at, t1 + BACKOFF_INITIAL * 2);
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn stale_nonce_is_not_a_failure() {
        let mut r = reg();
        let t0 = Instant::now();
        r.start(t0);
        let a = sent(&mut r);
        r.on_response(
            &resp(
                &a,
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"n1\", qop=\"auth\"\r\n",
            ),
            t0,
        );
        let b = sent(&mut r);
        r.on_response(&resp(&b, "401 Unauthorized", "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"n2\", qop=\"auth\", stale=true\r\n"), t0);
        let c = sent(&mut r);
        assert!(
            header(&c, "Authorization")
                .unwrap()
                .contains("nonce=\"n2\"")
        );
        assert_eq!(r.state(), &RegState::Registering);
    }

    #[test]
    fn interval_too_brief_uses_min_expires() {
        let mut r = reg();
        let t0 = Instant::now();
        r.start(t0);
        let a = sent(&mut r);
        r.on_response(
            &resp(&a, "423 Interval Too Brief", "Min-Expires: 1800\r\n"),
            t0,
        );
        let b = sent(&mut r);
        assert_eq!(header(&b, "Expires").unwrap(), "Expires: 1800");
    }

    #[test]
    fn proxy_challenge_uses_proxy_authorization() {
        let mut r = reg();
        let t0 = Instant::now();
        r.start(t0);
        let a = sent(&mut r);
        r.on_response(
            &resp(
                &a,
                "407 Proxy Authentication Required",
                "Proxy-Authenticate: Digest realm=\"p\", nonce=\"x\"\r\n",
            ),
            t0,
        );
        let b = sent(&mut r);
        assert!(header(&b, "Proxy-Authorization").is_some());
        assert!(header(&b, "Authorization").is_none());
    }

    #[test]
    fn timeout_and_unregister() {
        let mut r = reg();
        let t0 = Instant::now();
        r.start(t0);
        let a = sent(&mut r);
        r.on_failure("no answer (Timer F)", t0);
        assert!(
            matches!(r.state(), RegState::Failed { reason, .. } if reason == "SIP registrar unreachable: no answer (Timer F)")
        );
        r.on_timeout(t0 + BACKOFF_INITIAL);
        let b = sent(&mut r);
        r.on_response(&resp(&b, "200 OK", "Expires: 600\r\n"), t0);
        assert_eq!(r.state(), &RegState::Registered { expires: 600 });
        let _ = a;
        r.unregister(t0);
        let c = sent(&mut r);
        assert_eq!(header(&c, "Expires").unwrap(), "Expires: 0");
        assert_eq!(r.state(), &RegState::Unregistering);
        r.on_response(&resp(&c, "200 OK", ""), t0);
        assert_eq!(r.state(), &RegState::Unregistered);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn flow_failure_sends_one_register_and_unclaims_registration() {
        let mut r = reg();
        let t0 = Instant::now();
        r.start(t0);
        let a = sent(&mut r);
        r.on_response(&resp(&a, "200 OK", "Expires: 600\r\n"), t0);
        assert!(r.is_registered());
        r.flow_failed(t0);
        let _renewal = sent(&mut r);
        assert_eq!(r.state(), &RegState::Registering);
        // the renewal's own failure reports the flow broken again: no second REGISTER
        r.flow_failed(t0);
        assert_eq!(sent_none(&mut r), 0);
        assert_eq!(r.poll_timeout(), None, "the refresh timer was superseded");
    }

    #[test]
    fn every_success_is_confirmed() {
        let mut r = reg();
        let t0 = Instant::now();
        r.start(t0);
        let a = sent(&mut r);
        r.on_response(&resp(&a, "200 OK", "Expires: 600\r\n"), t0);
        let mut confirmed = 0;
        while let Some(o) = r.poll_output() {
            confirmed += usize::from(matches!(o, RegOutput::Confirmed { .. }));
        }
        r.on_timeout(t0 + Duration::from_secs(450));
        let b = sent(&mut r);
        r.on_response(&resp(&b, "200 OK", "Expires: 600\r\n"), t0);
        while let Some(o) = r.poll_output() {
            confirmed += usize::from(matches!(o, RegOutput::Confirmed { .. }));
        }
        assert_eq!(confirmed, 2, "a refresh counts too");
    }

    #[test]
    fn refresh_timing() {
        assert_eq!(refresh_after(600), Duration::from_secs(450));
        assert_eq!(refresh_after(3600), Duration::from_secs(2700));
        assert_eq!(refresh_after(120), Duration::from_secs(90));
        assert_eq!(refresh_after(60), Duration::from_secs(30));
        assert_eq!(refresh_after(1), Duration::from_secs(1));
    }
}
