//! The SIP user agent core: glues the transport's bytes to the transaction table, the
//! registration and the request policy, and answers what a UA must answer by itself (OPTIONS,
//! requests it does not serve, malformed input). Pure: inputs are bytes with their peer, timer
//! ticks and commands; outputs ([`UaOutput`]) are bytes for a peer and events. The async driver
//! (`service.rs`) owns the sockets and the clock.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response, SipMessage};
use tracing::{debug, info, warn};

use super::auth::{
    AuthKind, Authorization, DigestClient, DigestRequest, Rechallenge, challenge_in, random_cnonce,
};
use super::dialog::{Dialog, ReinviteVerdict, Reinvites, Retransmit, Retransmit2xx};
use super::message::{self, raw_error_response, raw_request_method, reason_phrase, response_to};
use super::policy::{self, Trust, Verdict};
use super::registration::{RegOutput, RegState, Registration};
use super::sdp;
use super::transaction::{
    Action, Incoming, ResponseOutcome, Role, TableConfig, Timer, TransactionKey, TransactionTable,
};
use super::transport::{Peer, Proto};
use crate::metrics::{Metrics, TxOutcome};

/// What the user agent needs to know about itself and its upstream.
#[derive(Debug, Clone)]
pub struct UaSettings {
    /// host:port we put in Via sent-by and Contact.
    pub sent_by: String,
    /// Our Contact URI (no angle brackets).
    pub contact: String,
    /// The account's address of record, `sip:user@domain`; From of our requests.
    pub aor: String,
    /// Next hop for out-of-dialog requests: the outbound proxy, else the registrar.
    pub next_hop: Option<Peer>,
    /// `Route` to add when the next hop is an outbound proxy (loose routing, RFC 3261 §16.12).
    pub route: Option<String>,
    /// The registrar's address, to recognise its flow and send keep-alives.
    pub registrar: Option<Peer>,
    /// Request-URI of keep-alive OPTIONS (the registrar URI).
    pub registrar_uri: Option<String>,
    pub trust: Trust,
    pub table: TableConfig,
    pub keepalive: Duration,
    pub max_dialogs: usize,
    pub user_agent: String,
    /// Prefix for branches, tags and Call-IDs, random per process so two runs never collide.
    pub id_prefix: String,
    /// Incoming INVITEs are offered to the call layer ([`UaEvent::Incoming`]); when false they
    /// get 480 (no call layer running).
    pub accept_calls: bool,
}

/// Identifies a request a caller asked us to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

#[derive(Debug)]
pub enum UaEvent {
    Registration(RegState),
    /// Final outcome of a request sent with [`UserAgent::request`]; 408 when it timed out,
    /// 503 when the transport failed (RFC 3261 §8.1.3.1).
    Completed {
        id: RequestId,
        code: u16,
        reason: String,
    },
    /// A new INVITE for the call layer: answer it with [`UserAgent::ring`],
    /// [`UserAgent::answer`] or [`UserAgent::reject`].
    Incoming {
        id: RequestId,
        /// From's URI (the caller) and display name.
        from: String,
        from_display: Option<String>,
        /// To's URI and the Request-URI (the callee).
        to: String,
        request_uri: String,
        call_id: String,
        /// The offer (empty for an offerless INVITE, which the call layer refuses).
        sdp: Vec<u8>,
        /// Jitsi's `Jitsi-Conference-Room` header (which room a dial-in joins).
        room: Option<String>,
    },
    /// A provisional response (180, 183) to our INVITE, with its SDP if any (early media).
    Progress {
        id: RequestId,
        code: u16,
        sdp: Option<Vec<u8>>,
    },
    /// Our INVITE was answered (2xx, already ACKed): the SDP answer.
    Answered {
        id: RequestId,
        sdp: Vec<u8>,
    },
    /// The peer sent a re-INVITE (hold, new address): answer with
    /// [`UserAgent::answer_reinvite`].
    Reoffer {
        id: RequestId,
        sdp: Vec<u8>,
    },
    /// The final answer to our re-INVITE ([`UserAgent::reinvite`]): 2xx with the SDP answer
    /// (already ACKed), or the failure (RFC 3261 §14.1: the session stays as it was; 481 and
    /// 408 mean the dialog is gone and the call layer should hang up).
    ReinviteAnswered {
        id: RequestId,
        code: u16,
        sdp: Vec<u8>,
    },
    /// Not from the user agent itself: the SIP service's answer to the call layer's INVITE
    /// command with the same `tag` — the new call's request id and SIP Call-ID, or why no
    /// INVITE went out.
    InviteSent {
        tag: u64,
        result: Result<(RequestId, String), String>,
    },
    /// A call ended: the INVITE's final code (487 when the caller cancelled ours, or when we
    /// cancelled) and, if it was answered, the BYE's (`bye_by_peer` when the far end hung up
    /// first).
    CallEnded {
        id: RequestId,
        code: u16,
        reason: String,
        bye: Option<u16>,
        bye_by_peer: bool,
    },
}

#[derive(Debug)]
pub enum UaOutput {
    Send { to: Peer, bytes: Vec<u8> },
    Event(UaEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Register,
    KeepAlive,
    Request(RequestId),
    /// The INVITE of a probe call (see [`UserAgent::call`]).
    Call(RequestId),
    /// The BYE ending a call.
    Bye(RequestId),
    /// The CANCEL of our INVITE (its outcome is the INVITE's 487).
    Cancel(RequestId),
    /// A re-INVITE we sent in an established call (hold, resume).
    Reinvite(RequestId),
}

/// An INVITE we received and have not answered finally yet.
#[derive(Debug)]
struct UasInvite {
    key: TransactionKey,
    req: Request,
    local_tag: String,
    from: Peer,
    /// Reason phrase for the final response, when the standard one says too little.
    phrase: Option<String>,
}

/// A call: a probe placed by [`UserAgent::call`] (INVITE, ACK, hold, BYE, no media), or a
/// bridged call the call layer drives ([`UserAgent::invite`], [`UaEvent::Incoming`]).
#[derive(Debug, Default)]
struct ProbeCall {
    /// `Some`: a probe call held this long; `None`: a bridged call.
    hold: Option<Duration>,
    /// The INVITE we received, until we answer it finally.
    uas: Option<UasInvite>,
    /// A re-INVITE waiting for the call layer's answer.
    pending_reinvite: Option<(TransactionKey, Request)>,
    /// A 1xx arrived for our INVITE (CANCEL may be sent from then on, RFC 3261 §9.1).
    provisional: bool,
    /// The call layer asked to cancel before any 1xx: sent when one arrives.
    cancel_requested: bool,
    /// Our CANCEL went out for the current INVITE: further 1xx (180 then 183) send no other.
    cancel_sent: bool,
    answered_reported: bool,
    dialog: Option<Dialog>,
    /// Where ACK and BYE go (first route, else the remote target, else the proxy).
    hop: Option<Peer>,
    invite_code: Option<u16>,
    bye_due: Option<Instant>,
    bye_sent: bool,
    reinvites: Reinvites,
    /// Our 2xx to a re-INVITE, retransmitted until its ACK (RFC 3261 §13.3.1.4).
    uas_2xx: Option<(TransactionKey, Response, Retransmit2xx)>,
    /// Our current SDP (offer or answer), repeated in answers to re-INVITEs.
    sdp: Vec<u8>,
    /// RFC 3326 `Reason` for our BYE (e.g. `SIP;cause=503;text="ICE failed"`).
    bye_reason: Option<String>,
    /// Our re-INVITE as built (before Via), for answering a 401/407 to it.
    reinvite_auth: Option<Outgoing>,
    /// 2xx from other forks of our INVITE (a proxy that rang several phones, two of which
    /// answered): their To tag and the stray dialog we ACKed and BYEd (RFC 3261 §13.2.2.4).
    forks: Vec<(String, RequestId)>,
}

impl ProbeCall {
    /// The dialog of a 2xx from another fork: ACKed, then ended with a BYE, never reported.
    fn stray(dialog: Dialog, hop: Peer) -> Self {
        ProbeCall {
            provisional: true,
            answered_reported: true,
            dialog: Some(dialog),
            hop: Some(hop),
            invite_code: Some(200),
            bye_reason: Some("SIP;cause=200;text=\"answered elsewhere\"".into()),
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UaError {
    #[error(
        "no next hop for {0}: configure sip.registrar or sip.outbound_proxy, or use an IP address in the URI"
    )]
    NoRoute(String),
    #[error("not a usable SIP URI: {0}")]
    BadUri(String),
    #[error("transaction layer refused the request: {0}")]
    Table(String),
    #[error("sip.max_dialogs ({0}) reached")]
    TooManyDialogs(usize),
    #[error("no such call (already ended?)")]
    UnknownCall,
    #[error("the call is not in a state where this can be done: {0}")]
    WrongState(&'static str),
}

/// A request we originated, kept to answer 401/407 challenges (RFC 3261 §22.2).
#[derive(Debug)]
struct Outgoing {
    /// As built (or last sent with credentials), before Via was added.
    req: Request,
    to: Peer,
    cseq: u32,
    challenges: u32,
    sent_auth: Option<(AuthKind, Authorization)>,
}

impl Outgoing {
    fn new(req: Request, to: Peer, cseq: u32) -> Self {
        Outgoing {
            req,
            to,
            cseq,
            challenges: 0,
            sent_auth: None,
        }
    }

    /// The request again with CSeq `cseq` and our answer to the 401/407 `resp`; `None` when it
    /// is not to be answered: not a challenge, too many, or our last answer refused (a wrong
    /// password: RFC 3261 §22.2 says not to insist).
    fn answer(&mut self, digest: &mut DigestClient, resp: &Response, cseq: u32) -> Option<Request> {
        let kind = AuthKind::from_status(resp.status_code.code())?;
        self.challenges += 1;
        if self.challenges > MAX_CHALLENGES {
            return None;
        }
        let (challenge, verdict) = challenge_in(&resp.headers, kind, self.sent_auth.as_ref())?;
        if verdict == Rechallenge::Failed {
            warn!(
                code = resp.status_code.code(),
                method = %self.req.method,
                "credentials refused (wrong sip.password?)"
            );
            return None;
        }
        let method = self.req.method.to_string();
        let uri = self.req.uri.to_string();
        let auth = digest
            .authorize(
                &challenge,
                &DigestRequest {
                    method: &method,
                    uri: &uri,
                    body: &self.req.body,
                },
                random_cnonce,
            )
            .ok()?;
        let mut req = self.req.clone();
        req.headers.retain(|h| {
            !matches!(
                h,
                Header::CSeq(_) | Header::Authorization(_) | Header::ProxyAuthorization(_)
            )
        });
        req.headers
            .push(rsip::headers::CSeq::new(format!("{cseq} {method}")).into());
        let value = auth.value().to_string();
        req.headers.push(match kind {
            AuthKind::Www => rsip::headers::Authorization::new(value).into(),
            AuthKind::Proxy => rsip::headers::ProxyAuthorization::new(value).into(),
        });
        self.sent_auth = Some((kind, auth));
        self.cseq = cseq;
        self.req = req.clone();
        Some(req)
    }
}

/// Challenges answered per request before the 401/407 is passed up as the outcome.
const MAX_CHALLENGES: u32 = 2;

pub struct UserAgent {
    calls: HashMap<RequestId, ProbeCall>,
    s: UaSettings,
    digest: Option<DigestClient>,
    outgoing: HashMap<RequestId, Outgoing>,
    table: TransactionTable,
    peers: HashMap<TransactionKey, Peer>,
    purposes: HashMap<TransactionKey, Purpose>,
    registration: Option<Registration>,
    keepalive_due: Option<Instant>,
    keepalive_in_flight: bool,
    metrics: Arc<Metrics>,
    next: u64,
    out: VecDeque<UaOutput>,
}

impl UserAgent {
    pub fn new(
        s: UaSettings,
        registration: Option<Registration>,
        digest: Option<DigestClient>,
        metrics: Arc<Metrics>,
    ) -> Self {
        UserAgent {
            calls: HashMap::new(),
            digest,
            outgoing: HashMap::new(),
            table: TransactionTable::new(s.table),
            s,
            peers: HashMap::new(),
            purposes: HashMap::new(),
            registration,
            keepalive_due: None,
            keepalive_in_flight: false,
            metrics,
            next: 0,
            out: VecDeque::new(),
        }
    }

    pub fn registration_state(&self) -> Option<&RegState> {
        self.registration.as_ref().map(|r| r.state())
    }

    /// Starts registering (if an account is configured).
    pub fn start(&mut self, now: Instant) {
        if let Some(r) = self.registration.as_mut() {
            r.start(now);
        }
        self.pump(now);
    }

    /// Un-registers; the driver keeps running until [`UserAgent::is_idle`] or a deadline.
    pub fn shutdown(&mut self, now: Instant) {
        self.keepalive_due = None;
        // The call layer has stopped: new INVITEs get 480 instead of waiting for it.
        self.s.accept_calls = false;
        if let Some(r) = self.registration.as_mut() {
            r.unregister(now);
        }
        self.pump(now);
    }

    /// Calls (dialogs and INVITEs, ours or theirs) not yet over: a BYE or CANCEL still
    /// waiting for its answer counts, so shutdown can let them finish.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// True when no REGISTER is in flight (used to wait for the un-REGISTER on shutdown).
    pub fn is_idle(&self) -> bool {
        !self.purposes.values().any(|p| *p == Purpose::Register)
    }

    pub fn poll_output(&mut self) -> Option<UaOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.table.poll_timeout(),
            self.registration.as_ref().and_then(|r| r.poll_timeout()),
            self.keepalive_due,
            self.calls.values().filter_map(|c| c.bye_due).min(),
            self.calls
                .values()
                .filter_map(|c| c.uas_2xx.as_ref().and_then(|(_, _, r)| r.poll_timeout()))
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn on_timeout(&mut self, now: Instant) {
        self.table.on_timeout(now);
        if let Some(r) = self.registration.as_mut() {
            r.on_timeout(now);
        }
        if self.keepalive_due.is_some_and(|d| d <= now) {
            self.keepalive_due = None;
            self.send_keepalive(now);
        }
        let due: Vec<RequestId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.bye_due.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.send_bye(id, now);
        }
        let mut give_up = Vec::new();
        for (id, call) in self.calls.iter_mut() {
            if let Some((key, resp, retx)) = call.uas_2xx.as_mut() {
                match retx.on_timeout(now) {
                    Retransmit::Send => {
                        let _ = self.table.send_response(key, resp.clone(), now);
                    }
                    Retransmit::GiveUp => give_up.push(*id),
                    Retransmit::Idle => {}
                }
            }
        }
        for id in give_up {
            warn!(
                ?id,
                "no ACK for our 2xx within 64*T1; ending the call (RFC 3261 §13.3.1.4)"
            );
            if let Some(c) = self.calls.get_mut(&id) {
                c.uas_2xx = None;
            }
            self.send_bye(id, now);
        }
        self.pump(now);
    }

    /// Sending to `to` failed, or a connection we opened to it closed.
    pub fn on_send_failed(&mut self, to: Peer, now: Instant) {
        let keys: Vec<TransactionKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.addr == to.addr && p.proto == to.proto)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let _ = self.table.on_transport_error(&k, now);
        }
        // The flow to the registrar broke: register again now (RFC 5626 §4.4.1).
        if self
            .s
            .registrar
            .is_some_and(|r| r.addr == to.addr && r.proto == to.proto)
            && let Some(r) = self.registration.as_mut()
            && r.is_registered()
        {
            info!(registrar = %to.addr, "flow to the registrar broke; registering again");
            r.flow_failed(now);
        }
        self.pump(now);
    }

    /// Bytes framed by the transport.
    pub fn on_inbound(&mut self, bytes: &[u8], from: Peer, now: Instant) {
        match message::parse(bytes) {
            Ok(SipMessage::Request(req)) => self.on_request(req, from, now),
            Ok(SipMessage::Response(resp)) => self.on_response(resp, now),
            Err(e) => {
                let unknown = raw_request_method(bytes).filter(|m| policy::is_unknown_method(m));
                let reply = match &unknown {
                    Some(_) => raw_error_response(bytes, 501, reason_phrase(501)),
                    None => raw_error_response(bytes, 400, &e.reason_phrase()),
                };
                match reply {
                    Some(r) => {
                        self.metrics.sip_rejected.fetch_add(1, Relaxed);
                        debug!(error = %e, from = %from.addr, method = ?unknown, "answering an unusable request");
                        self.out.push_back(UaOutput::Send { to: from, bytes: r });
                    }
                    None => debug!(error = %e, from = %from.addr, "dropping unusable SIP message"),
                }
            }
        }
        self.pump(now);
    }

    /// Sends an out-of-dialog request (OPTIONS, MESSAGE) to `uri`; the outcome arrives as
    /// [`UaEvent::Completed`].
    pub fn request(
        &mut self,
        method: Method,
        uri: &str,
        body: Option<(&str, Vec<u8>)>,
        now: Instant,
    ) -> Result<RequestId, UaError> {
        let target = parse_target(uri)?;
        let to = self
            .next_hop_for(&target)
            .ok_or_else(|| UaError::NoRoute(uri.to_string()))?;
        let uri = target.to_string();
        let uri = uri.as_str();
        let id = RequestId(self.fresh());
        let mut req = self.new_request(method, target, uri);
        if let Some((ctype, bytes)) = body {
            req.headers
                .push(rsip::headers::ContentType::new(ctype).into());
            let (h, b) = (&mut req.headers, &mut req.body);
            message::set_body(h, b, bytes);
        }
        self.send_client(req.clone(), to, Purpose::Request(id), now)?;
        self.outgoing.insert(id, Outgoing::new(req, to, 1));
        self.pump(now);
        Ok(id)
    }

    fn next_hop_for(&self, target: &rsip::Uri) -> Option<Peer> {
        if let Some(hop) = self.s.next_hop {
            return Some(hop);
        }
        // No proxy: only a literal IP address in the URI can be reached without DNS.
        Peer::from_literal_uri(target, Proto::Udp)
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
    fn tag(&mut self) -> String {
        let n = self.fresh();
        format!("{}{n}", self.s.id_prefix)
    }
    fn call_id(&mut self) -> String {
        let host = self.s.sent_by.split(':').next().unwrap_or("gw").to_string();
        let n = self.fresh();
        format!("{}{n}@{host}", self.s.id_prefix)
    }

    /// Our Via with a fresh branch (RFC 3261 §8.1.1.7) and `rport` (RFC 3581).
    fn via(&mut self, proto: Proto) -> Header {
        let n = self.fresh();
        let via = format!(
            "SIP/2.0/{} {};branch=z9hG4bK{}{n};rport",
            proto.via_token(),
            self.s.sent_by,
            self.s.id_prefix
        );
        rsip::headers::Via::new(via).into()
    }

    /// An out-of-dialog request from our AoR (RFC 3261 §8.1.1): new Call-ID and From tag,
    /// CSeq 1, no body yet (callers with a body use `message::set_body`). No Via: `send_client`
    /// adds it.
    fn new_request(&mut self, method: Method, target: rsip::Uri, uri: &str) -> Request {
        let tag = self.tag();
        let call_id = self.call_id();
        let mut headers = rsip::Headers::default();
        headers.push(rsip::headers::MaxForwards::new("70").into());
        headers.push(rsip::headers::From::new(format!("<{}>;tag={tag}", self.s.aor)).into());
        headers.push(rsip::headers::To::new(format!("<{uri}>")).into());
        headers.push(rsip::headers::CallId::new(call_id).into());
        headers.push(rsip::headers::CSeq::new(format!("1 {method}")).into());
        headers.push(rsip::headers::UserAgent::new(self.s.user_agent.clone()).into());
        headers.push(rsip::headers::ContentLength::new("0").into());
        Request {
            method,
            uri: target,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        }
    }

    /// Adds our Via (and the outbound proxy's Route) and starts a client transaction.
    fn send_client(
        &mut self,
        mut req: Request,
        to: Peer,
        purpose: Purpose,
        now: Instant,
    ) -> Result<(), UaError> {
        let mut headers = rsip::Headers::default();
        headers.push(self.via(to.proto));
        if let Some(route) = &self.s.route {
            headers.push(rsip::headers::Route::new(route.clone()).into());
        }
        for h in req.headers.iter() {
            headers.push(h.clone());
        }
        req.headers = headers;
        let key = self
            .table
            .send_request(req, to.proto.reliable(), now)
            .map_err(|e| UaError::Table(e.to_string()))?;
        self.peers.insert(key.clone(), to);
        self.purposes.insert(key, purpose);
        Ok(())
    }

    fn send_keepalive(&mut self, now: Instant) {
        let (Some(registrar), Some(uri)) = (self.s.registrar, self.s.registrar_uri.clone()) else {
            return;
        };
        if !self
            .registration
            .as_ref()
            .is_some_and(|r| r.is_registered())
        {
            return;
        }
        match registrar.proto {
            // RFC 5626 §4.4.1: CRLF ping on connection-oriented flows.
            Proto::Tcp => {
                self.out.push_back(UaOutput::Send {
                    to: registrar,
                    bytes: b"\r\n\r\n".to_vec(),
                });
                self.keepalive_due = Some(now + self.s.keepalive);
            }
            // Jigasi's KEEP_ALIVE_METHOD=OPTIONS: any answer proves the path alive.
            Proto::Udp => {
                if self.keepalive_in_flight {
                    return;
                }
                let Ok(target) = rsip::Uri::try_from(uri.as_str()) else {
                    return;
                };
                let req = self.new_request(Method::Options, target, &uri);
                if self
                    .send_client(req, registrar, Purpose::KeepAlive, now)
                    .is_ok()
                {
                    self.keepalive_in_flight = true;
                }
            }
        }
    }

    fn on_request(&mut self, mut req: Request, from: Peer, now: Instant) {
        mark_received(&mut req, from.addr);
        match self.table.on_request(req, from.proto.reliable(), now) {
            Ok(Incoming::New { key, request }) => {
                self.peers.insert(key.clone(), from);
                self.on_new_request(key, request, from, now);
            }
            Ok(Incoming::Cancel {
                key,
                request,
                invite,
            }) => {
                self.peers.insert(key.clone(), from);
                match invite {
                    Some(ikey) => {
                        self.respond(&key, &request, 200, now);
                        // Our pending incoming call, if it is one: 487 with its dialog tag.
                        let call = self
                            .calls
                            .iter()
                            .find(|(_, c)| c.uas.as_ref().is_some_and(|u| u.key == ikey))
                            .map(|(id, _)| *id);
                        match call {
                            Some(id) => {
                                let _ = self.reject(id, 487, None, now);
                                self.out.push_back(UaOutput::Event(UaEvent::CallEnded {
                                    id,
                                    code: 487,
                                    reason: reason_phrase(487).to_string(),
                                    bye: None,
                                    bye_by_peer: true,
                                }));
                            }
                            None => {
                                if let Some(inv) =
                                    self.table.get(&ikey).map(|t| t.request().clone())
                                {
                                    self.respond(&ikey, &inv, 487, now);
                                }
                            }
                        }
                    }
                    None => self.respond(&key, &request, 481, now),
                }
            }
            Ok(Incoming::Merged { key, request, .. }) => {
                self.peers.insert(key.clone(), from);
                self.respond(&key, &request, 482, now);
            }
            Ok(Incoming::Absorbed(_)) => {}
            // An ACK for a 2xx: we send no 2xx to INVITE yet, so there is no dialog for it.
            Ok(Incoming::Ack(ack)) => {
                let call = self
                    .calls
                    .values_mut()
                    .find(|c| c.dialog.as_ref().is_some_and(|d| d.matches(&ack)));
                match call {
                    Some(c) => {
                        if let Some((_, _, r)) = c.uas_2xx.as_mut() {
                            r.on_ack();
                        }
                        c.uas_2xx = None;
                        c.reinvites.incoming = false;
                    }
                    None => debug!(from = %from.addr, "ACK outside any dialog ignored"),
                }
            }
            Err(rejected) => {
                self.metrics.sip_rejected.fetch_add(1, Relaxed);
                let resp = response_to(
                    &rejected.request,
                    400,
                    Some(&format!("Bad Request ({})", rejected.error)),
                    Some(&self.tag()),
                );
                self.out.push_back(UaOutput::Send {
                    to: from,
                    bytes: message::to_bytes(&resp.into()),
                });
            }
        }
    }

    fn on_new_request(&mut self, key: TransactionKey, req: Request, from: Peer, now: Instant) {
        if has_to_tag(&req) {
            self.on_in_dialog_request(key, req, now);
            return;
        }
        if req.method == Method::Invite && self.calls.len() >= self.s.max_dialogs {
            // RFC 3261 §21.5.4: overloaded; tell the peer when to try again.
            self.metrics.sip_rejected.fetch_add(1, Relaxed);
            warn!(
                max = self.s.max_dialogs,
                "sip.max_dialogs reached; INVITE refused with 503"
            );
            self.respond(&key, &req, 503, now);
            return;
        }
        let verdict = policy::out_of_dialog(&req.method, from.addr.ip(), &self.s.trust);
        debug!(method = %req.method, from = %from.addr, ?verdict, "request");
        match verdict {
            Verdict::Forbidden => {
                self.metrics.sip_rejected.fetch_add(1, Relaxed);
                warn!(method = %req.method, from = %from.addr, "request from an untrusted peer refused (add it to sip.trusted?)");
                self.respond(&key, &req, 403, now);
            }
            Verdict::NotAllowed => self.respond(&key, &req, 405, now),
            Verdict::NotImplemented => self.respond(&key, &req, 501, now),
            Verdict::Accept => match req.method {
                Method::Options => self.respond(&key, &req, 200, now),
                // Until calls and messages are bridged (later issues), say so clearly rather
                // than accept and drop: 480 tells the caller to try again later.
                Method::Invite if self.s.accept_calls => self.incoming_call(key, req, from),
                Method::Invite | Method::Message => self.respond(&key, &req, 480, now),
                Method::Bye => {
                    let call = self
                        .calls
                        .iter()
                        .find(|(_, c)| c.dialog.as_ref().is_some_and(|d| d.matches(&req)))
                        .map(|(id, _)| *id);
                    match call {
                        Some(id) => {
                            self.respond(&key, &req, 200, now);
                            self.end_call(id, Some(200), true);
                        }
                        None => self.respond(&key, &req, 481, now),
                    }
                }
                Method::Cancel => self.respond(&key, &req, 481, now),
                Method::Ack => {}
                _ => self.respond(&key, &req, 405, now),
            },
        }
    }

    /// A new INVITE for the call layer.
    fn incoming_call(&mut self, key: TransactionKey, req: Request, from: Peer) {
        let local_tag = self.tag();
        // An INVITE that cannot make a dialog (no Contact, no From tag…) could be answered but
        // never ACKed or hung up: refuse it before anyone rings.
        if let Err(e) = Dialog::from_uas(&req, &local_tag) {
            debug!(error = %e, "INVITE cannot form a dialog; 400");
            let resp = response_to(
                &req,
                400,
                Some("Bad Request (no dialog possible)"),
                Some(&local_tag),
            );
            if let Err(e) = self.table.send_response(&key, resp, Instant::now()) {
                debug!(error = %e, "cannot answer the INVITE");
            }
            return;
        }
        let id = RequestId(self.fresh());
        let header_value = |name: &str| {
            req.headers.iter().find_map(|h| match h {
                Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.trim().to_string()),
                _ => None,
            })
        };
        let (mut from_uri, mut from_display, mut to_uri, mut call_id) =
            (String::new(), None, String::new(), String::new());
        for h in req.headers.iter() {
            match h {
                Header::From(f) => {
                    from_uri = super::dialog::addr_spec(f.value());
                    from_display = display_name(f.value());
                }
                Header::To(t) => to_uri = super::dialog::addr_spec(t.value()),
                Header::CallId(c) => call_id = c.value().to_string(),
                _ => {}
            }
        }
        let event = UaEvent::Incoming {
            id,
            from: from_uri,
            from_display,
            to: to_uri,
            request_uri: req.uri.to_string(),
            call_id,
            sdp: req.body.clone(),
            room: header_value("Jitsi-Conference-Room"),
        };
        self.calls.insert(
            id,
            ProbeCall {
                uas: Some(UasInvite {
                    key,
                    req,
                    local_tag,
                    from,
                    phrase: None,
                }),
                answered_reported: true,
                ..Default::default()
            },
        );
        self.out.push_back(UaOutput::Event(event));
    }

    /// A request with a To tag belongs to a dialog (RFC 3261 §12.2.2): ours, or 481.
    fn on_in_dialog_request(&mut self, key: TransactionKey, req: Request, now: Instant) {
        let id = self
            .calls
            .iter()
            .find(|(_, c)| c.dialog.as_ref().is_some_and(|d| d.matches(&req)))
            .map(|(id, _)| *id);
        let Some(id) = id else {
            self.respond(&key, &req, 481, now);
            return;
        };
        let call = self.calls.get_mut(&id).expect("id was just found in calls");
        let Some(dialog) = call.dialog.as_mut() else {
            self.respond(&key, &req, 481, now);
            return;
        };
        if dialog.accept_remote_cseq(&req).is_err() {
            // §12.2.2: a lower CSeq is out of order.
            self.respond(&key, &req, 500, now);
            return;
        }
        match req.method {
            Method::Bye => {
                self.respond(&key, &req, 200, now);
                self.end_call(id, Some(200), true);
            }
            Method::Invite => match call.reinvites.on_incoming() {
                ReinviteVerdict::Glare491 => self.respond(&key, &req, 491, now),
                ReinviteVerdict::Busy500 => self.respond(&key, &req, 500, now),
                ReinviteVerdict::Accept => {
                    // §12.2.2: a re-INVITE's Contact refreshes the remote target.
                    if let Some(c) = req.headers.iter().find_map(|h| match h {
                        Header::Contact(c) => Some(super::dialog::addr_spec(c.value())),
                        _ => None,
                    }) {
                        dialog.remote_target = c;
                    }
                    if call.hold.is_none() {
                        // A bridged call: the call layer answers (hold changes our direction).
                        let sdp = req.body.clone();
                        call.pending_reinvite = Some((key, req));
                        self.out
                            .push_back(UaOutput::Event(UaEvent::Reoffer { id, sdp }));
                    } else {
                        // The probe call's media never changes: answer with the same SDP, and
                        // keep the 2xx going until the ACK (§13.3.1.4).
                        self.answer_reinvite_with(id, key, &req, now);
                    }
                }
            },
            Method::Options => self.respond(&key, &req, 200, now),
            _ => self.respond(&key, &req, 405, now),
        }
    }

    /// Answers the server transaction `key` with `code` (plus the headers that code needs).
    fn respond(&mut self, key: &TransactionKey, req: &Request, code: u16, now: Instant) {
        let phrase = match code {
            480 if req.method == Method::Invite => "Temporarily Unavailable (not taking calls now)",
            480 => "Temporarily Unavailable (messages are not bridged yet)",
            403 => "Forbidden (not a trusted peer)",
            c => reason_phrase(c),
        };
        let tag = (code > 100).then(|| self.tag());
        let mut resp = response_to(req, code, Some(phrase), tag.as_deref());
        if matches!(code, 200 | 405) && req.method == Method::Options || code == 405 {
            resp.headers
                .push(rsip::headers::Allow::new(policy::ALLOW).into());
        }
        if code == 200 && req.method == Method::Options {
            resp.headers
                .push(rsip::headers::Accept::new(policy::ACCEPT).into());
            if !policy::SUPPORTED.is_empty() {
                resp.headers
                    .push(rsip::headers::Supported::new(policy::SUPPORTED).into());
            }
        }
        if code == 503 {
            // Calls end within minutes; a minute is a fair hint (RFC 3261 §20.33).
            resp.headers
                .push(rsip::headers::RetryAfter::new("60").into());
        }
        if code == 500 && req.method == Method::Invite {
            // §14.2: a re-INVITE that crosses one still pending gets 500 with Retry-After 0–10 s.
            resp.headers
                .push(rsip::headers::RetryAfter::new("5").into());
        }
        resp.headers.push(Header::Server(rsip::headers::Server::new(
            self.s.user_agent.clone(),
        )));
        if let Err(e) = self.table.send_response(key, resp, now) {
            debug!(error = %e, "could not answer");
        }
    }

    fn on_response(&mut self, resp: Response, now: Instant) {
        match self.table.on_response(resp, now) {
            Ok(ResponseOutcome::Matched(_)) => {}
            Ok(ResponseOutcome::Unmatched(r)) => {
                debug!(status = %r.status_code, "response matches no transaction; dropped")
            }
            Err(e) => debug!(error = %e, "unusable response dropped"),
        }
    }

    /// Drains the table and the registration until both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some((key, action)) = self.table.poll_action() {
                progressed = true;
                self.on_action(key, action, now);
            }
            let outputs: Vec<RegOutput> = match self.registration.as_mut() {
                Some(r) => std::iter::from_fn(|| r.poll_output()).collect(),
                None => Vec::new(),
            };
            for o in outputs {
                progressed = true;
                match o {
                    RegOutput::Send(req) => {
                        let Some(to) = self.s.registrar else {
                            continue;
                        };
                        let to = self.s.next_hop.unwrap_or(to);
                        if let Err(e) = self.send_client(*req, to, Purpose::Register, now) {
                            warn!(error = %e, "cannot send REGISTER");
                        }
                    }
                    RegOutput::Confirmed { expires } => {
                        self.metrics.sip_registrations.fetch_add(1, Relaxed);
                        debug!(expires, "REGISTER accepted");
                    }
                    RegOutput::State(state) => {
                        match &state {
                            RegState::Registered { expires } => {
                                self.metrics.sip_registered.store(true, Relaxed);
                                if self.keepalive_due.is_none() && !self.s.keepalive.is_zero() {
                                    self.keepalive_due = Some(now + self.s.keepalive);
                                }
                                info!(expires, aor = %self.s.aor, "SIP account registered");
                            }
                            RegState::Failed { reason, retry_at } => {
                                self.metrics.sip_registered.store(false, Relaxed);
                                self.metrics.sip_registration_failures.fetch_add(1, Relaxed);
                                warn!(%reason, retry_in = ?retry_at.saturating_duration_since(now), "SIP registration failed; retrying with backoff");
                            }
                            RegState::Registering | RegState::Idle | RegState::Unregistering => {
                                self.metrics.sip_registered.store(false, Relaxed);
                            }
                            RegState::Unregistered => {
                                self.metrics.sip_registered.store(false, Relaxed);
                                info!("SIP account unregistered");
                            }
                        }
                        self.out
                            .push_back(UaOutput::Event(UaEvent::Registration(state)));
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_action(&mut self, key: TransactionKey, action: Action, now: Instant) {
        match action {
            Action::Send(msg) => match self.peers.get(&key) {
                Some(to) => self.out.push_back(UaOutput::Send {
                    to: *to,
                    bytes: message::to_bytes(&msg),
                }),
                None => debug!(%key, "no peer for a transaction message"),
            },
            Action::Deliver(resp) => {
                let code = resp.status_code.code();
                if code < 200 {
                    if let Some(Purpose::Call(id)) = self.purposes.get(&key).copied() {
                        self.on_call_provisional(id, &resp, now);
                    }
                    return;
                }
                self.metrics.sip_transaction(if code < 300 {
                    TxOutcome::Success
                } else {
                    TxOutcome::Failure
                });
                match self.purposes.get(&key).copied() {
                    Some(Purpose::Register) => {
                        if let Some(r) = self.registration.as_mut() {
                            r.on_response(&resp, now);
                        }
                    }
                    Some(Purpose::KeepAlive) => self.keepalive_answered(now),
                    Some(Purpose::Request(id)) if !self.retry_with_credentials(id, &resp, now) => {
                        self.outgoing.remove(&id);
                        self.out.push_back(UaOutput::Event(UaEvent::Completed {
                            id,
                            code,
                            reason: reason_phrase(code).to_string(),
                        }));
                    }
                    Some(Purpose::Request(_)) | None => {}
                    Some(Purpose::Call(id)) => {
                        self.on_call_response(id, &resp, now);
                        // INVITE transactions stay until Terminated: 2xx retransmissions
                        // (RFC 6026 Accepted state) must be ACKed again.
                        return;
                    }
                    Some(Purpose::Bye(id)) => self.end_call(id, Some(code), false),
                    Some(Purpose::Cancel(_)) => {}
                    Some(Purpose::Reinvite(id)) => {
                        self.on_reinvite_response(id, &resp, now);
                        // Like the initial INVITE: 2xx retransmissions are ACKed again.
                        return;
                    }
                }
                // Only the first final response matters to a non-INVITE purpose.
                self.purposes.remove(&key);
            }
            Action::Ack(_) => {}
            Action::Timeout(timer) => {
                self.metrics.sip_transaction(TxOutcome::Timeout);
                self.client_failed(
                    &key,
                    408,
                    &format!("no answer (Timer {timer:?})"),
                    timer,
                    now,
                );
            }
            Action::TransportError => {
                self.metrics.sip_transaction(TxOutcome::TransportError);
                self.client_failed(&key, 503, "transport error", Timer::F, now);
            }
            Action::Terminated => {
                if key.role() == Role::Server {
                    self.metrics.sip_transaction(TxOutcome::Answered);
                }
                self.peers.remove(&key);
                self.purposes.remove(&key);
            }
        }
    }

    /// Answers a 401/407 to a request we sent: same Call-ID and From tag, CSeq + 1, with
    /// `Authorization` or `Proxy-Authorization` (RFC 3261 §22.2, §22.3). False when we cannot
    /// or must not (no credentials, wrong password, too many rounds).
    fn retry_with_credentials(&mut self, id: RequestId, resp: &Response, now: Instant) -> bool {
        let (Some(digest), Some(out)) = (self.digest.as_mut(), self.outgoing.get_mut(&id)) else {
            return false;
        };
        let Some(req) = out.answer(digest, resp, out.cseq + 1) else {
            return false;
        };
        let to = out.to;
        let purpose = if let Some(call) = self.calls.get_mut(&id) {
            // A CANCEL waits for a 1xx to the retried INVITE (RFC 3261 §9.1), not the first's.
            call.provisional = false;
            call.cancel_sent = false;
            Purpose::Call(id)
        } else {
            Purpose::Request(id)
        };
        self.send_client(req, to, purpose, now).is_ok()
    }

    /// Answers a 401/407 to our re-INVITE (RFC 3261 §22.2: a UAS or proxy may challenge
    /// in-dialog requests too): the same re-INVITE again with the next CSeq and credentials.
    /// False when it cannot or must not be answered (no credentials, refused twice).
    fn reinvite_with_credentials(&mut self, id: RequestId, resp: &Response, now: Instant) -> bool {
        let (Some(digest), Some(call)) = (self.digest.as_mut(), self.calls.get_mut(&id)) else {
            return false;
        };
        let (Some(out), Some(dialog), Some(hop)) =
            (call.reinvite_auth.as_mut(), call.dialog.as_mut(), call.hop)
        else {
            return false;
        };
        let Some(req) = out.answer(digest, resp, dialog.local_cseq + 1) else {
            return false;
        };
        dialog.local_cseq += 1;
        info!(
            code = resp.status_code.code(),
            "re-INVITE challenged: sent again with credentials"
        );
        self.send_client(req, hop, Purpose::Reinvite(id), now)
            .is_ok()
    }

    /// Places a probe call: INVITE `uri` (offer `a=inactive`: no media yet), ACK the 2xx,
    /// hold for `hold`, BYE. The outcome arrives as [`UaEvent::CallEnded`].
    pub fn call(&mut self, uri: &str, hold: Duration, now: Instant) -> Result<RequestId, UaError> {
        // The probe call's offer comes from the SDP model (RFC 3264), with no media: port 9
        // (discard) and a=inactive, so the far end sends nothing anywhere.
        let host = self
            .s
            .sent_by
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.s.sent_by)
            .trim_matches(['[', ']'])
            .to_string();
        let address = host
            .parse::<std::net::IpAddr>()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let codecs = vec![
            sdp::PayloadCodec::new(sdp::PayloadType::PCMU, sdp::Codec::pcmu()),
            sdp::PayloadCodec::new(sdp::PayloadType::PCMA, sdp::Codec::pcma()),
        ];
        let mut local = sdp::LocalMedia::new(address, 9, codecs);
        local.direction = sdp::Direction::Inactive;
        local.session_id = self.next + 1;
        local.session_version = 1;
        let sdp = sdp::create_offer(&local).to_string();
        self.start_invite(uri, None, None, sdp.into_bytes(), Some(hold), now)
    }

    /// Places a bridged call: INVITE `uri` with our SDP offer, From `from_user` at the
    /// account's domain (the account itself when `None`). Progress arrives as
    /// [`UaEvent::Progress`], [`UaEvent::Answered`] and [`UaEvent::CallEnded`].
    pub fn invite(
        &mut self,
        uri: &str,
        from_user: Option<&str>,
        from_display: Option<&str>,
        sdp: Vec<u8>,
        now: Instant,
    ) -> Result<RequestId, UaError> {
        self.start_invite(uri, from_user, from_display, sdp, None, now)
    }

    /// The SIP Call-ID of a call we placed with [`Self::invite`] (for logs: the id an
    /// operator greps).
    pub fn call_id_of(&self, id: RequestId) -> Option<String> {
        self.outgoing
            .get(&id)?
            .req
            .headers
            .iter()
            .find_map(|h| match h {
                Header::CallId(c) => Some(c.value().to_string()),
                _ => None,
            })
    }

    fn start_invite(
        &mut self,
        uri: &str,
        from_user: Option<&str>,
        from_display: Option<&str>,
        sdp: Vec<u8>,
        hold: Option<Duration>,
        now: Instant,
    ) -> Result<RequestId, UaError> {
        if self.calls.len() >= self.s.max_dialogs {
            return Err(UaError::TooManyDialogs(self.s.max_dialogs));
        }
        let target = parse_target(uri)?;
        let to = self
            .next_hop_for(&target)
            .ok_or_else(|| UaError::NoRoute(uri.to_string()))?;
        let uri = target.to_string();
        let uri = uri.as_str();
        let id = RequestId(self.fresh());
        let mut req = self.new_request(Method::Invite, target, uri);
        if let Some(display) = from_display {
            // RFC 3261 §25.1 quoted-string: escape quotes and backslashes, drop controls.
            let quoted: String = display
                .chars()
                .filter(|c| !c.is_control())
                .flat_map(|c| match c {
                    '"' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            for h in req.headers.iter_mut() {
                if let Header::From(f) = h {
                    *f = rsip::headers::From::new(format!("\"{quoted}\" {}", f.value()));
                }
            }
        }
        if let Some(user) = from_user {
            let domain = self
                .s
                .aor
                .split_once('@')
                .map(|(_, d)| d)
                .unwrap_or("invalid");
            let user = escape_user(user);
            for h in req.headers.iter_mut() {
                if let Header::From(f) = h {
                    let tag = f
                        .value()
                        .split_once(";tag=")
                        .map(|(_, t)| t.to_string())
                        .unwrap_or_default();
                    let display = f
                        .value()
                        .split_once('<')
                        .map(|(d, _)| d.to_string())
                        .unwrap_or_default();
                    *f = rsip::headers::From::new(format!(
                        "{display}<sip:{user}@{domain}>;tag={tag}"
                    ));
                }
            }
        }
        req.headers
            .push(rsip::headers::Contact::new(format!("<{}>", self.s.contact)).into());
        req.headers
            .push(rsip::headers::Allow::new(policy::ALLOW).into());
        req.headers
            .push(rsip::headers::ContentType::new("application/sdp").into());
        {
            let (h, b) = (&mut req.headers, &mut req.body);
            message::set_body(h, b, sdp);
        }
        self.calls.insert(
            id,
            ProbeCall {
                hold,
                sdp: req.body.clone(),
                ..Default::default()
            },
        );
        if let Err(e) = self.send_client(req.clone(), to, Purpose::Call(id), now) {
            self.calls.remove(&id);
            return Err(e);
        }
        self.outgoing.insert(id, Outgoing::new(req, to, 1));
        self.pump(now);
        Ok(id)
    }

    /// A 1xx to our INVITE: report it (bridged calls) and send a CANCEL that was waiting for it.
    fn on_call_provisional(&mut self, id: RequestId, resp: &Response, now: Instant) {
        let code = resp.status_code.code();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.provisional = true;
        if call.cancel_requested {
            if !call.cancel_sent {
                self.send_cancel(id, now);
            }
            return;
        }
        if code > 100 && call.hold.is_none() {
            let sdp = (!resp.body.is_empty()).then(|| resp.body.clone());
            self.out
                .push_back(UaOutput::Event(UaEvent::Progress { id, code, sdp }));
        }
    }

    /// CANCELs our INVITE (RFC 3261 §9.1): same Request-URI, top Via, Route, From, To,
    /// Call-ID and CSeq number as the INVITE we sent.
    fn send_cancel(&mut self, id: RequestId, now: Instant) {
        // The INVITE that went on: after a 401/407 the challenged one lingers (Timer D) under
        // the same purpose, and a CANCEL for it matches nothing upstream. The retry has the
        // higher CSeq.
        let key = self
            .purposes
            .iter()
            .filter(|(_, p)| **p == Purpose::Call(id))
            .filter_map(|(k, _)| {
                let cseq = super::dialog::cseq_of(&self.table.get(k)?.request().headers)?;
                Some((cseq, k))
            })
            .max_by_key(|(cseq, _)| *cseq)
            .map(|(_, k)| k.clone());
        let Some(key) = key else { return };
        if let Some(call) = self.calls.get_mut(&id) {
            call.cancel_sent = true;
        }
        let (Some(invite), Some(to)) = (
            self.table.get(&key).map(|t| t.request().clone()),
            self.peers.get(&key).copied(),
        ) else {
            return;
        };
        let mut headers = rsip::Headers::default();
        let mut via_done = false;
        for h in invite.headers.iter() {
            match h {
                Header::Via(_) if !via_done => {
                    via_done = true;
                    headers.push(h.clone());
                }
                Header::Route(_)
                | Header::From(_)
                | Header::To(_)
                | Header::CallId(_)
                | Header::MaxForwards(_) => headers.push(h.clone()),
                Header::CSeq(c) => {
                    let n = c
                        .value()
                        .split_whitespace()
                        .next()
                        .unwrap_or("1")
                        .to_string();
                    headers.push(rsip::headers::CSeq::new(format!("{n} CANCEL")).into());
                }
                _ => {}
            }
        }
        headers.push(rsip::headers::ContentLength::new("0").into());
        let cancel = Request {
            method: Method::Cancel,
            uri: invite.uri.clone(),
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        };
        match self.table.send_request(cancel, to.proto.reliable(), now) {
            Ok(k) => {
                self.peers.insert(k.clone(), to);
                self.purposes.insert(k, Purpose::Cancel(id));
            }
            Err(e) => warn!(error = %e, "cannot send CANCEL"),
        }
    }

    /// Ends a bridged call from our side: CANCEL while our INVITE is unanswered, BYE once
    /// confirmed (with an RFC 3326 `Reason` when given), or the final `reject_code` (e.g. 480)
    /// to an INVITE we received and have not answered.
    pub fn hangup(
        &mut self,
        id: RequestId,
        reject_code: u16,
        reason: Option<&str>,
        now: Instant,
    ) -> Result<(), UaError> {
        let call = self.calls.get_mut(&id).ok_or(UaError::UnknownCall)?;
        if call.uas.is_some() {
            return self.reject(id, reject_code, None, now);
        }
        if call.dialog.is_some() {
            call.bye_reason = reason.map(str::to_string);
            self.send_bye(id, now);
        } else if call.provisional {
            call.cancel_requested = true;
            if !call.cancel_sent {
                self.send_cancel(id, now);
            }
        } else {
            call.cancel_requested = true;
        }
        self.pump(now);
        Ok(())
    }

    fn uas_respond(
        &mut self,
        id: RequestId,
        code: u16,
        sdp: Option<Vec<u8>>,
        now: Instant,
    ) -> Result<(), UaError> {
        let call = self.calls.get_mut(&id).ok_or(UaError::UnknownCall)?;
        let uas = call
            .uas
            .as_ref()
            .ok_or(UaError::WrongState("not an unanswered incoming call"))?;
        let phrase = uas.phrase.as_deref().unwrap_or(reason_phrase(code));
        let mut resp = response_to(&uas.req, code, Some(phrase), Some(&uas.local_tag));
        if code < 300 {
            resp.headers
                .push(rsip::headers::Contact::new(format!("<{}>", self.s.contact)).into());
        }
        if (200..300).contains(&code) {
            resp.headers
                .push(rsip::headers::Allow::new(policy::ALLOW).into());
        }
        if let Some(body) = sdp {
            resp.headers
                .push(rsip::headers::ContentType::new("application/sdp").into());
            let (h, b) = (&mut resp.headers, &mut resp.body);
            message::set_body(h, b, body);
        }
        resp.headers.push(Header::Server(rsip::headers::Server::new(
            self.s.user_agent.clone(),
        )));
        let key = uas.key.clone();
        self.table
            .send_response(&key, resp.clone(), now)
            .map_err(|e| UaError::Table(e.to_string()))?;
        if (200..300).contains(&code) {
            let timers = self.s.table.timers;
            if let Some(call) = self.calls.get_mut(&id)
                && let Some(uas) = call.uas.take()
            {
                match Dialog::from_uas(&uas.req, &uas.local_tag) {
                    Ok(d) => {
                        call.hop = Some(hop_of(&d.next_hop_uri(), uas.from));
                        call.dialog = Some(d);
                    }
                    Err(e) => warn!(error = %e, "INVITE unusable for a dialog"),
                }
                call.invite_code = Some(code);
                call.sdp = resp.body.clone();
                call.uas_2xx = Some((key, resp, Retransmit2xx::new(now, timers.t1, timers.t2)));
            }
        } else if code >= 300 {
            self.calls.remove(&id);
        }
        self.pump(now);
        Ok(())
    }

    /// A provisional answer (180 Ringing, or 183 with early-media SDP) to an incoming call.
    pub fn ring(
        &mut self,
        id: RequestId,
        code: u16,
        sdp: Option<Vec<u8>>,
        now: Instant,
    ) -> Result<(), UaError> {
        if !(101..200).contains(&code) {
            return Err(UaError::WrongState("ring takes a 1xx code"));
        }
        self.uas_respond(id, code, sdp, now)
    }

    /// Accepts an incoming call with our SDP answer (200, retransmitted until the ACK).
    pub fn answer(&mut self, id: RequestId, sdp: Vec<u8>, now: Instant) -> Result<(), UaError> {
        self.uas_respond(id, 200, Some(sdp), now)
    }

    /// Refuses an incoming call with a final error code (486, 603, 480, 488...), with the
    /// standard reason phrase unless `phrase` says more.
    pub fn reject(
        &mut self,
        id: RequestId,
        code: u16,
        phrase: Option<&str>,
        now: Instant,
    ) -> Result<(), UaError> {
        if code < 300 {
            return Err(UaError::WrongState("reject takes a 3xx-6xx code"));
        }
        if let Some(p) = phrase
            && let Some(uas) = self.calls.get_mut(&id).and_then(|c| c.uas.as_mut())
        {
            uas.phrase = Some(p.chars().filter(|c| !c.is_control()).collect());
        }
        self.uas_respond(id, code, None, now)
    }

    /// Sends a re-INVITE with `sdp` in call `id`'s dialog (RFC 3261 §14.1; hold and resume).
    /// Its answer comes as [`UaEvent::ReinviteAnswered`]. One at a time.
    pub fn reinvite(&mut self, id: RequestId, sdp: Vec<u8>, now: Instant) -> Result<(), UaError> {
        let contact = self.s.contact.clone();
        let user_agent = self.s.user_agent.clone();
        let call = self.calls.get_mut(&id).ok_or(UaError::UnknownCall)?;
        if call.reinvites.outgoing || call.pending_reinvite.is_some() || call.reinvites.incoming {
            return Err(UaError::WrongState("a re-INVITE is already in progress"));
        }
        if call.bye_sent {
            return Err(UaError::WrongState("the call is ending"));
        }
        let (Some(dialog), Some(hop)) = (call.dialog.as_mut(), call.hop) else {
            return Err(UaError::WrongState("no established dialog"));
        };
        let mut req = dialog
            .request(Method::Invite, None, &user_agent)
            .map_err(|_| UaError::WrongState("cannot build a request in this dialog"))?;
        req.headers
            .push(rsip::headers::Contact::new(format!("<{contact}>")).into());
        req.headers
            .push(rsip::headers::ContentType::new("application/sdp").into());
        let (h, b) = (&mut req.headers, &mut req.body);
        message::set_body(h, b, sdp);
        // RFC 3261 §14.2: while ours is pending, theirs gets 491.
        call.reinvites.outgoing = true;
        call.reinvite_auth = Some(Outgoing::new(req.clone(), hop, dialog.local_cseq));
        if let Err(e) = self.send_client(req, hop, Purpose::Reinvite(id), now) {
            if let Some(c) = self.calls.get_mut(&id) {
                c.reinvites.outgoing = false;
            }
            warn!(error = %e, "cannot send re-INVITE");
            return Err(UaError::WrongState("cannot send the re-INVITE"));
        }
        self.pump(now);
        Ok(())
    }

    /// A final response to our re-INVITE: ACK a 2xx (each retransmission too), report once;
    /// a 401/407 is answered with credentials first.
    fn on_reinvite_response(&mut self, id: RequestId, resp: &Response, now: Instant) {
        let code = resp.status_code.code();
        if matches!(code, 401 | 407)
            && self.calls.get(&id).is_some_and(|c| c.reinvites.outgoing)
            && self.reinvite_with_credentials(id, resp, now)
        {
            return;
        }
        if (200..300).contains(&code) {
            self.send_ack(id, resp);
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        // Reported once: 2xx retransmissions only get their ACK.
        if std::mem::take(&mut call.reinvites.outgoing) {
            self.out
                .push_back(UaOutput::Event(UaEvent::ReinviteAnswered {
                    id,
                    code,
                    sdp: resp.body.clone(),
                }));
        }
    }

    /// Answers a pending re-INVITE ([`UaEvent::Reoffer`]) with our SDP.
    pub fn answer_reinvite(
        &mut self,
        id: RequestId,
        sdp: Vec<u8>,
        now: Instant,
    ) -> Result<(), UaError> {
        let call = self.calls.get_mut(&id).ok_or(UaError::UnknownCall)?;
        let (key, req) = call
            .pending_reinvite
            .take()
            .ok_or(UaError::WrongState("no re-INVITE is waiting for an answer"))?;
        call.sdp = sdp;
        self.answer_reinvite_with(id, key, &req, now);
        self.pump(now);
        Ok(())
    }

    /// 200 to a re-INVITE with the call's current SDP, kept going until its ACK.
    /// Refuses a pending re-INVITE (RFC 3261 §14.2: the session stays as it was), e.g. 488
    /// when its offer cannot be used.
    pub fn reject_reinvite(
        &mut self,
        id: RequestId,
        code: u16,
        now: Instant,
    ) -> Result<(), UaError> {
        if code < 300 {
            return Err(UaError::WrongState("reject takes a 3xx-6xx code"));
        }
        let call = self.calls.get_mut(&id).ok_or(UaError::UnknownCall)?;
        let (key, req) = call
            .pending_reinvite
            .take()
            .ok_or(UaError::WrongState("no re-INVITE is waiting for an answer"))?;
        // Its ACK is absorbed by the server transaction: the re-INVITE is over now.
        call.reinvites.incoming = false;
        let tag = call.dialog.as_ref().map(|d| d.id.local_tag.clone());
        let resp = response_to(&req, code, Some(reason_phrase(code)), tag.as_deref());
        if let Err(e) = self.table.send_response(&key, resp, now) {
            debug!(error = %e, "cannot refuse the re-INVITE");
        }
        self.pump(now);
        Ok(())
    }

    fn answer_reinvite_with(
        &mut self,
        id: RequestId,
        key: TransactionKey,
        req: &Request,
        now: Instant,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let Some(dialog) = call.dialog.as_ref() else {
            return;
        };
        let sdp = call.sdp.clone();
        let tag = dialog.id.local_tag.clone();
        let contact = self.s.contact.clone();
        let mut resp = response_to(req, 200, Some("OK"), Some(&tag));
        resp.headers
            .push(rsip::headers::Contact::new(format!("<{contact}>")).into());
        resp.headers
            .push(rsip::headers::ContentType::new("application/sdp").into());
        {
            let (h, b) = (&mut resp.headers, &mut resp.body);
            message::set_body(h, b, sdp);
        }
        let timers = self.s.table.timers;
        if self.table.send_response(&key, resp.clone(), now).is_ok() {
            let retx = Retransmit2xx::new(now, timers.t1, timers.t2);
            if let Some(c) = self.calls.get_mut(&id) {
                c.uas_2xx = Some((key, resp, retx));
            }
        }
    }

    fn on_call_response(&mut self, id: RequestId, resp: &Response, now: Instant) {
        let code = resp.status_code.code();
        if code >= 300 {
            if self.calls.get(&id).is_some_and(|c| c.invite_code.is_some()) {
                return;
            }
            // The ICT already ACKed the failure (RFC 3261 §17.1.1.3).
            if !self.retry_with_credentials(id, resp, now) {
                self.outgoing.remove(&id);
                self.calls.remove(&id);
                self.out.push_back(UaOutput::Event(UaEvent::CallEnded {
                    id,
                    code,
                    reason: reason_phrase(code).to_string(),
                    bye: None,
                    bye_by_peer: false,
                }));
            }
            return;
        }
        let Some(out) = self.outgoing.get(&id) else {
            return;
        };
        let (invite, fallback) = (out.req.clone(), out.to);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(d) = &call.dialog
            && let Ok(other) = Dialog::from_uac(&invite, resp)
            && other.id.remote_tag != d.id.remote_tag
        {
            self.forked_2xx(id, other, resp, fallback, now);
            return;
        }
        if call.dialog.is_none() {
            match Dialog::from_uac(&invite, resp) {
                Ok(d) => {
                    call.hop = Some(hop_of(&d.next_hop_uri(), fallback));
                    call.dialog = Some(d);
                    call.invite_code = Some(code);
                    call.bye_due = call.hold.map(|h| now + h);
                }
                Err(e) => {
                    warn!(error = %e, "2xx to INVITE unusable; the call cannot be confirmed");
                    return;
                }
            }
        }
        // ACK every 2xx, retransmissions included (RFC 3261 §13.2.2.4).
        if call.dialog.is_none() || call.hop.is_none() {
            return;
        }
        self.send_ack(id, resp);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.hold.is_none() && !call.answered_reported {
            call.answered_reported = true;
            if call.cancel_requested {
                // The 2xx crossed our CANCEL (or came before any 1xx): end it with a BYE.
                self.send_bye(id, now);
            } else {
                self.out.push_back(UaOutput::Event(UaEvent::Answered {
                    id,
                    sdp: resp.body.clone(),
                }));
            }
        }
    }

    /// A 2xx to call `id`'s INVITE from another fork than the one whose dialog we keep: ACK it
    /// and end that dialog with a BYE (RFC 3261 §13.2.2.4); its retransmissions are ACKed again.
    fn forked_2xx(
        &mut self,
        id: RequestId,
        dialog: Dialog,
        resp: &Response,
        fallback: Peer,
        now: Instant,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if let Some((_, fork)) = call.forks.iter().find(|(t, _)| *t == dialog.id.remote_tag) {
            let fork = *fork;
            self.send_ack(fork, resp);
            return;
        }
        let fork = RequestId(self.fresh());
        info!(tag = %dialog.id.remote_tag, "a second fork answered our INVITE: ACK and BYE it");
        let hop = hop_of(&dialog.next_hop_uri(), fallback);
        if let Some(call) = self.calls.get_mut(&id) {
            call.forks.push((dialog.id.remote_tag.clone(), fork));
        }
        self.calls.insert(fork, ProbeCall::stray(dialog, hop));
        self.send_ack(fork, resp);
        self.send_bye(fork, now);
    }

    /// ACKs `resp`, a 2xx to the INVITE (or re-INVITE) of call `id`'s dialog, with a fresh Via
    /// and the 2xx's own CSeq: a late retransmission of the first 2xx may come after a
    /// re-INVITE of ours.
    fn send_ack(&mut self, id: RequestId, resp: &Response) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let (Some(dialog), Some(hop)) = (call.dialog.as_mut(), call.hop) else {
            return;
        };
        if let Some(n) = super::dialog::cseq_of(&resp.headers) {
            dialog.invite_cseq = n;
        }
        let Ok(mut ack) = dialog.ack(&self.s.user_agent) else {
            return;
        };
        let mut headers = rsip::Headers::default();
        headers.push(self.via(hop.proto));
        for h in ack.headers.iter() {
            headers.push(h.clone());
        }
        ack.headers = headers;
        self.out.push_back(UaOutput::Send {
            to: hop,
            bytes: message::to_bytes(&ack.into()),
        });
    }

    fn send_bye(&mut self, id: RequestId, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.bye_due = None;
        if call.bye_sent {
            return;
        }
        call.bye_sent = true;
        let (Some(dialog), Some(hop)) = (call.dialog.as_mut(), call.hop) else {
            // Nothing to send a BYE in: the call is over as far as we can tell.
            self.end_call(id, None, false);
            return;
        };
        match dialog.request(Method::Bye, None, &self.s.user_agent) {
            Ok(mut bye) => {
                if let Some(reason) = call.bye_reason.take() {
                    bye.headers.push(Header::Other("Reason".into(), reason));
                }
                if let Err(e) = self.send_client(bye, hop, Purpose::Bye(id), now) {
                    warn!(error = %e, "cannot send BYE");
                    self.end_call(id, None, false);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot build BYE");
                self.end_call(id, None, false);
            }
        }
    }

    fn end_call(&mut self, id: RequestId, bye: Option<u16>, by_peer: bool) {
        self.outgoing.remove(&id);
        if let Some(call) = self.calls.remove(&id) {
            let code = call.invite_code.unwrap_or(0);
            self.out.push_back(UaOutput::Event(UaEvent::CallEnded {
                id,
                code,
                reason: reason_phrase(code).to_string(),
                bye,
                bye_by_peer: by_peer,
            }));
        }
    }

    fn keepalive_answered(&mut self, now: Instant) {
        self.keepalive_in_flight = false;
        if !self.s.keepalive.is_zero() {
            self.keepalive_due = Some(now + self.s.keepalive);
        }
    }

    fn client_failed(
        &mut self,
        key: &TransactionKey,
        code: u16,
        why: &str,
        _timer: Timer,
        now: Instant,
    ) {
        match self.purposes.remove(key) {
            Some(Purpose::Register) => {
                if let Some(r) = self.registration.as_mut() {
                    r.on_failure(why, now);
                }
            }
            Some(Purpose::KeepAlive) => {
                self.keepalive_in_flight = false;
                warn!(%why, "registrar did not answer the keep-alive; registering again");
                if let Some(r) = self.registration.as_mut() {
                    r.flow_failed(now);
                }
            }
            Some(Purpose::Call(id)) => {
                self.outgoing.remove(&id);
                self.calls.remove(&id);
                self.out.push_back(UaOutput::Event(UaEvent::CallEnded {
                    id,
                    code,
                    reason: reason_phrase(code).to_string(),
                    bye: None,
                    bye_by_peer: false,
                }));
            }
            Some(Purpose::Bye(id)) => self.end_call(id, Some(code), false),
            // The INVITE's own transaction reports the outcome (487 or its timeout).
            Some(Purpose::Cancel(_)) => {}
            Some(Purpose::Reinvite(id)) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.reinvites.outgoing = false;
                }
                self.out
                    .push_back(UaOutput::Event(UaEvent::ReinviteAnswered {
                        id,
                        code,
                        sdp: Vec::new(),
                    }));
            }
            Some(Purpose::Request(id)) => {
                self.outgoing.remove(&id);
                self.out.push_back(UaOutput::Event(UaEvent::Completed {
                    id,
                    code,
                    reason: reason_phrase(code).to_string(),
                }))
            }
            None => {}
        }
    }
}

/// A Request-URI given by a caller: `sip:` or `sips:` only (no `tel:` without a gateway
/// domain), no characters that would break a header, and parseable.
fn parse_target(uri: &str) -> Result<rsip::Uri, UaError> {
    let bad = || UaError::BadUri(uri.to_string());
    let lower = uri.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:"))
        || uri
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
    {
        return Err(bad());
    }
    let parsed = rsip::Uri::try_from(uri).map_err(|_| bad())?;
    if parsed.host().to_string().is_empty() {
        return Err(bad());
    }
    Ok(parsed)
}

/// Whether the request carries a To tag, i.e. claims to be inside a dialog.
/// The display name of a From/To value (`"Alice" <sip:...>` or `Alice <sip:...>`).
fn display_name(value: &str) -> Option<String> {
    let (before, _) = value.split_once('<')?;
    let name = before.trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// A SIP user part from arbitrary text: RFC 3261 `user` characters stay, the rest is
/// percent-encoded (RFC 7247 §6 leaves the mapping of XMPP localparts to us).
fn escape_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn has_to_tag(req: &Request) -> bool {
    req.headers.iter().any(|h| match h {
        Header::To(t) => t.value().to_ascii_lowercase().contains(";tag="),
        _ => false,
    })
}

/// The transport address of an in-dialog next hop: an IP literal in the URI, else `fallback`
/// (the proxy we sent the INVITE through; DNS is not used here).
fn hop_of(uri: &str, fallback: Peer) -> Peer {
    rsip::Uri::try_from(uri)
        .ok()
        .and_then(|u| Peer::from_literal_uri(&u, fallback.proto))
        .unwrap_or(fallback)
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: record where the request really came from in its top Via
/// (`received`, and `rport` filled in when the client asked for it).
fn mark_received(req: &mut Request, from: SocketAddr) {
    for h in req.headers.iter_mut() {
        if let Header::Via(via) = h {
            let value = via.value().to_string();
            // Several Vias may share one header line; only the first (top) one is ours to mark.
            let (top, rest) = match value.split_once(',') {
                Some((t, r)) => (t.to_string(), Some(r.to_string())),
                None => (value.clone(), None),
            };
            let mut params: Vec<String> = top.split(';').map(|p| p.trim().to_string()).collect();
            let sent_host = params
                .first()
                .and_then(|sb| sb.split_whitespace().nth(1))
                .map(|hp| {
                    hp.trim_start_matches('[')
                        .split([']', ':'])
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default();
            for p in params.iter_mut().skip(1) {
                if p.eq_ignore_ascii_case("rport") {
                    *p = format!("rport={}", from.port());
                }
            }
            if sent_host != from.ip().to_string()
                && !params
                    .iter()
                    .any(|p| p.to_ascii_lowercase().starts_with("received="))
            {
                params.push(format!("received={}", from.ip()));
            }
            let mut new = params.join(";");
            if let Some(r) = rest {
                new.push(',');
                new.push_str(&r);
            }
            *via = rsip::headers::Via::new(new);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::prelude::*;

    fn ua(max_dialogs: usize) -> UserAgent {
        let settings = UaSettings {
            sent_by: "127.0.0.1:5070".into(),
            contact: "sip:gateway@127.0.0.1:5070;transport=udp".into(),
            aor: "sip:gateway@sip.test".into(),
            next_hop: Some(Peer {
                proto: Proto::Udp,
                addr: "127.0.0.1:5060".parse().unwrap(),
                conn: None,
            }),
            route: None,
            registrar: None,
            registrar_uri: None,
            trust: Trust {
                servers: vec!["127.0.0.1".parse().unwrap()],
                networks: vec![],
            },
            table: TableConfig::default(),
            keepalive: Duration::ZERO,
            max_dialogs,
            user_agent: "test".into(),
            id_prefix: "t".into(),
            accept_calls: false,
        };
        UserAgent::new(settings, None, None, Arc::new(Metrics::default()))
    }

    fn request(method: &str, branch: &str, extra: &str) -> String {
        format!(
            "{method} sip:gateway@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:bob@sip.test>;tag=b1\r\nTo: <sip:gateway@sip.test>{extra}\r\nCall-ID: {branch}@h\r\nCSeq: 1 {method}\r\nContact: <sip:bob@127.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn replies(ua: &mut UserAgent, bytes: &[u8], from: &str) -> Vec<String> {
        let peer = Peer {
            proto: Proto::Udp,
            addr: from.parse().unwrap(),
            conn: None,
        };
        ua.on_inbound(bytes, peer, Instant::now());
        std::iter::from_fn(|| ua.poll_output())
            .filter_map(|o| match o {
                UaOutput::Send { bytes, .. } => Some(String::from_utf8_lossy(&bytes).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn answers_by_itself() {
        let mut u = ua(10);
        let r = replies(
            &mut u,
            request("OPTIONS", "o1", "").as_bytes(),
            "192.0.2.9:5080",
        );
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].starts_with("SIP/2.0 200 OK\r\n"), "{}", r[0]);
        assert!(r[0].contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE"));
        assert!(r[0].contains("Accept: application/sdp"));
        assert!(
            r[0].contains("received=192.0.2.9") && r[0].contains("rport=5080"),
            "{}",
            r[0]
        );

        let r = replies(
            &mut u,
            request("MESSAGE", "m1", "").as_bytes(),
            "192.0.2.9:5080",
        );
        assert!(r[0].starts_with("SIP/2.0 403 "), "{}", r[0]);
        let r = replies(
            &mut u,
            request("MESSAGE", "m2", "").as_bytes(),
            "127.0.0.1:5080",
        );
        assert!(r[0].starts_with("SIP/2.0 480 "), "{}", r[0]);
        let r = replies(
            &mut u,
            request("SUBSCRIBE", "s1", "").as_bytes(),
            "127.0.0.1:5080",
        );
        assert!(
            r[0].starts_with("SIP/2.0 405 ") && r[0].contains("Allow:"),
            "{}",
            r[0]
        );
        let r = replies(
            &mut u,
            request("FOO", "f1", "").as_bytes(),
            "127.0.0.1:5080",
        );
        assert!(r[0].starts_with("SIP/2.0 501 "), "{}", r[0]);
        let r = replies(
            &mut u,
            request("BYE", "b1", ";tag=nope").as_bytes(),
            "127.0.0.1:5080",
        );
        assert!(r[0].starts_with("SIP/2.0 481 "), "{}", r[0]);
        let r = replies(
            &mut u,
            request("OPTIONS", "o2", "")
                .replace("Call-ID: o2@h\r\n", "")
                .as_bytes(),
            "127.0.0.1:5080",
        );
        assert!(
            r[0].starts_with("SIP/2.0 400 Bad Request (missing or malformed Call-ID)"),
            "{}",
            r[0]
        );
        assert!(replies(&mut u, b"\x16\x03\x01 garbage", "127.0.0.1:5080").is_empty());
        // a retransmission is absorbed: the 403'd MESSAGE gets the same final again, once
        let r = replies(
            &mut u,
            request("MESSAGE", "m1", "").as_bytes(),
            "192.0.2.9:5080",
        );
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("SIP/2.0 403 "));
    }

    #[test]
    fn bad_uris_are_refused_before_anything_is_sent() {
        let mut u = ua(10);
        for bad in [
            "not a sip uri",
            "sip:bob@sip.test>",
            "http://example.com/x",
            "tel:+123",
            "sip:a b@c",
            "",
        ] {
            assert!(
                matches!(
                    u.request(Method::Options, bad, None, Instant::now()),
                    Err(UaError::BadUri(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(std::iter::from_fn(|| u.poll_output()).count(), 0);
        assert!(
            u.request(Method::Options, "sip:bob@sip.test", None, Instant::now())
                .is_ok()
        );
    }

    #[test]
    fn max_dialogs_gives_503_with_retry_after() {
        let mut u = ua(1);
        u.call("sip:bob@sip.test", Duration::from_secs(1), Instant::now())
            .unwrap();
        let _ = std::iter::from_fn(|| u.poll_output()).count();
        assert!(matches!(
            u.call("sip:carol@sip.test", Duration::ZERO, Instant::now()),
            Err(UaError::TooManyDialogs(1))
        ));
        let r = replies(
            &mut u,
            request("INVITE", "i1", "").as_bytes(),
            "127.0.0.1:5080",
        );
        let final_ = r
            .iter()
            .find(|m| !m.starts_with("SIP/2.0 100"))
            .expect("a final response");
        assert!(
            final_.starts_with("SIP/2.0 503 ") && final_.contains("Retry-After: 60"),
            "{final_}"
        );
    }

    #[test]
    fn received_and_rport() {
        let text = "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP host.example:5071;branch=z9hG4bK1;rport\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:gw@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Request(mut req) = SipMessage::try_from(text).unwrap() else {
            unreachable!()
        };
        mark_received(&mut req, "192.0.2.7:40000".parse().unwrap());
        let via = req.via_header().unwrap().value().to_string();
        assert_eq!(
            via,
            "SIP/2.0/UDP host.example:5071;branch=z9hG4bK1;rport=40000;received=192.0.2.7"
        );
        // same host: no received
        let text2 = text.replace("host.example", "192.0.2.7");
        let SipMessage::Request(mut req) = SipMessage::try_from(text2.as_str()).unwrap() else {
            unreachable!()
        };
        mark_received(&mut req, "192.0.2.7:5071".parse().unwrap());
        assert_eq!(
            req.via_header().unwrap().value(),
            "SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bK1;rport=5071"
        );
    }

    // ---------------------------------------------------------------- bridged calls

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    fn upstream() -> Peer {
        Peer {
            proto: Proto::Udp,
            addr: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        }
    }

    /// Everything the UA put out: messages sent (as text) and events.
    fn drain(ua: &mut UserAgent) -> (Vec<String>, Vec<UaEvent>) {
        let (mut sent, mut events) = (Vec::new(), Vec::new());
        while let Some(o) = ua.poll_output() {
            match o {
                UaOutput::Send { bytes, .. } => {
                    sent.push(String::from_utf8_lossy(&bytes).into_owned())
                }
                UaOutput::Event(e) => events.push(e),
            }
        }
        (sent, events)
    }

    fn header<'a>(msg: &'a str, name: &str) -> &'a str {
        msg.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim())
            })
            .unwrap_or_else(|| panic!("no {name} in {msg}"))
    }

    /// A response to `req` (our request, as sent) from the far end.
    /// `u` calls sip:bob@sip.test with OFFER: the call's id and what was sent (the INVITE).
    fn invite_bob(u: &mut UserAgent, now: Instant) -> (RequestId, Vec<String>) {
        let id = u
            .invite(
                "sip:bob@sip.test",
                None,
                None,
                OFFER.as_bytes().to_vec(),
                now,
            )
            .unwrap();
        (id, drain(u).0)
    }

    /// A UA with the account's credentials (gateway / gatewaypw), for challenges.
    fn ua_with_credentials() -> UserAgent {
        let settings = ua(10).s.clone();
        let digest = DigestClient::new("gateway", crate::config::Secret::new("gatewaypw")).unwrap();
        UserAgent::new(settings, None, Some(digest), Arc::new(Metrics::default()))
    }

    fn response(req: &str, code: u16, phrase: &str, to_tag: Option<&str>, body: &str) -> String {
        let to = match to_tag {
            Some(t) => format!("{};tag={t}", header(req, "To")),
            None => header(req, "To").to_string(),
        };
        let ctype = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_string()
        };
        format!(
            "SIP/2.0 {code} {phrase}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:bob@127.0.0.1:5080>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            header(req, "Via"),
            header(req, "From"),
            header(req, "Call-ID"),
            header(req, "CSeq"),
            body.len()
        )
    }

    #[test]
    fn a_late_2xx_of_the_first_invite_is_acked_with_its_own_cseq_after_a_reinvite() {
        let mut u = ua(10);
        let now = Instant::now();
        let (id, sent) = invite_bob(&mut u, now);
        let first_ok = response(&sent[0], 200, "OK", Some("b7"), OFFER);
        u.on_inbound(first_ok.as_bytes(), upstream(), now);
        drain(&mut u);
        u.reinvite(id, OFFER.replace("sendrecv", "sendonly").into_bytes(), now)
            .unwrap();
        let (sent, _) = drain(&mut u);
        let reinvite = sent.iter().find(|m| m.starts_with("INVITE ")).unwrap();
        assert_eq!(header(reinvite, "CSeq"), "2 INVITE");
        u.on_inbound(
            response(reinvite, 200, "OK", Some("b7"), OFFER).as_bytes(),
            upstream(),
            now,
        );
        let (sent, _) = drain(&mut u);
        let ack = sent.iter().find(|m| m.starts_with("ACK ")).expect("ACK");
        assert_eq!(header(ack, "CSeq"), "2 ACK");
        u.on_inbound(first_ok.as_bytes(), upstream(), now);
        let (sent, events) = drain(&mut u);
        let ack = sent.iter().find(|m| m.starts_with("ACK ")).expect("ACK");
        assert_eq!(header(ack, "CSeq"), "1 ACK", "the 2xx's own CSeq");
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn a_challenged_reinvite_is_sent_again_with_credentials() {
        let mut u = ua_with_credentials();
        let now = Instant::now();
        let (id, sent) = invite_bob(&mut u, now);
        u.on_inbound(
            response(&sent[0], 200, "OK", Some("b7"), OFFER).as_bytes(),
            upstream(),
            now,
        );
        drain(&mut u);
        let hold = OFFER.replace("sendrecv", "sendonly");
        u.reinvite(id, hold.clone().into_bytes(), now).unwrap();
        let (sent, _) = drain(&mut u);
        let first = sent
            .iter()
            .find(|m| m.starts_with("INVITE "))
            .unwrap()
            .clone();
        assert_eq!(header(&first, "CSeq"), "2 INVITE");
        let challenge = |req: &str, nonce: &str| {
            response(req, 401, "Unauthorized", Some("b7"), "").replace(
                "Content-Length: 0",
                &format!("WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"{nonce}\", algorithm=MD5\r\nContent-Length: 0"),
            )
        };
        u.on_inbound(challenge(&first, "n1").as_bytes(), upstream(), now);
        let (sent, events) = drain(&mut u);
        assert!(events.is_empty(), "not reported yet: {events:?}");
        let retry = sent
            .iter()
            .find(|m| m.starts_with("INVITE "))
            .unwrap_or_else(|| panic!("re-INVITE sent again: {sent:?}"))
            .clone();
        assert_eq!(header(&retry, "CSeq"), "3 INVITE");
        assert!(
            header(&retry, "Authorization").contains("nonce=\"n1\""),
            "{retry}"
        );
        assert_eq!(header(&retry, "Call-ID"), header(&first, "Call-ID"));
        assert!(retry.ends_with(&hold), "the same offer: {retry}");
        u.on_inbound(
            response(&retry, 200, "OK", Some("b7"), OFFER).as_bytes(),
            upstream(),
            now,
        );
        let (sent, events) = drain(&mut u);
        let ack = sent.iter().find(|m| m.starts_with("ACK ")).expect("ACK");
        assert_eq!(header(ack, "CSeq"), "3 ACK");
        assert!(
            matches!(&events[..], [UaEvent::ReinviteAnswered { code: 200, .. }]),
            "{events:?}"
        );
        // The next re-INVITE refused again with the nonce we answered: wrong password, not
        // retried; the call layer hears the 401.
        u.reinvite(id, OFFER.as_bytes().to_vec(), now).unwrap();
        let (sent, _) = drain(&mut u);
        let third = sent
            .iter()
            .find(|m| m.starts_with("INVITE "))
            .unwrap()
            .clone();
        u.on_inbound(challenge(&third, "n1").as_bytes(), upstream(), now);
        let (sent, _) = drain(&mut u);
        let again = sent
            .iter()
            .find(|m| m.starts_with("INVITE "))
            .unwrap()
            .clone();
        u.on_inbound(challenge(&again, "n1").as_bytes(), upstream(), now);
        let (sent, events) = drain(&mut u);
        assert!(!sent.iter().any(|m| m.starts_with("INVITE ")), "{sent:?}");
        assert!(
            matches!(&events[..], [UaEvent::ReinviteAnswered { code: 401, .. }]),
            "{events:?}"
        );
    }

    #[test]
    fn a_second_forked_2xx_is_acked_and_byed_and_the_call_goes_on() {
        let mut u = ua(10);
        let now = Instant::now();
        let (id, sent) = invite_bob(&mut u, now);
        let invite = sent[0].clone();
        u.on_inbound(
            response(&invite, 200, "OK", Some("desk"), OFFER).as_bytes(),
            upstream(),
            now,
        );
        let (_, events) = drain(&mut u);
        assert!(
            matches!(&events[..], [UaEvent::Answered { id: i, .. }] if *i == id),
            "{events:?}"
        );
        // The proxy forked: a second phone answered too.
        let second = response(&invite, 200, "OK", Some("soft"), OFFER);
        u.on_inbound(second.as_bytes(), upstream(), now);
        let (sent, events) = drain(&mut u);
        assert!(events.is_empty(), "nothing for the call layer: {events:?}");
        let ack = sent.iter().find(|m| m.starts_with("ACK ")).expect("ACK");
        assert!(header(ack, "To").ends_with(";tag=soft"), "{ack}");
        let bye = sent.iter().find(|m| m.starts_with("BYE ")).expect("BYE");
        assert!(header(bye, "To").ends_with(";tag=soft"), "{bye}");
        assert_eq!(
            header(bye, "Reason"),
            "SIP;cause=200;text=\"answered elsewhere\""
        );
        // Its retransmission is ACKed again, without a second BYE.
        u.on_inbound(second.as_bytes(), upstream(), now);
        let (sent, _) = drain(&mut u);
        assert_eq!(
            sent.iter().filter(|m| m.starts_with("ACK ")).count(),
            1,
            "{sent:?}"
        );
        assert!(!sent.iter().any(|m| m.starts_with("BYE ")), "{sent:?}");
        u.on_inbound(
            response(bye, 200, "OK", Some("soft"), "").as_bytes(),
            upstream(),
            now,
        );
        drain(&mut u);
        // The first dialog is untouched: hanging up BYEs the desk phone.
        u.hangup(id, 480, None, now).unwrap();
        let (sent, _) = drain(&mut u);
        let bye = sent.iter().find(|m| m.starts_with("BYE ")).expect("BYE");
        assert!(header(bye, "To").ends_with(";tag=desk"), "{bye}");
    }

    #[test]
    fn outgoing_call_rings_is_answered_acked_and_hung_up_with_a_reason() {
        let mut u = ua(10);
        let now = Instant::now();
        let id = u
            .invite(
                "sip:+15551234567@sip.test;user=phone",
                Some("juliet*example.com"),
                None,
                OFFER.as_bytes().to_vec(),
                now,
            )
            .unwrap();
        let (sent, _) = drain(&mut u);
        let invite = &sent[0];
        assert!(invite.starts_with("INVITE sip:+15551234567@sip.test;user=phone SIP/2.0"));
        assert!(
            header(invite, "From").starts_with("<sip:juliet*example.com@sip.test>;tag="),
            "{invite}"
        );
        assert!(invite.ends_with(OFFER), "the offer is the body");
        u.on_inbound(
            response(invite, 180, "Ringing", Some("b7"), "").as_bytes(),
            upstream(),
            now,
        );
        let (_, events) = drain(&mut u);
        assert!(
            matches!(&events[..], [UaEvent::Progress { id: i, code: 180, sdp: None }] if *i == id),
            "{events:?}"
        );
        u.on_inbound(
            response(invite, 200, "OK", Some("b7"), OFFER).as_bytes(),
            upstream(),
            now,
        );
        let (sent, events) = drain(&mut u);
        assert!(
            sent.iter()
                .any(|m| m.starts_with("ACK sip:bob@127.0.0.1:5080")),
            "{sent:?}"
        );
        assert!(
            matches!(&events[..], [UaEvent::Answered { id: i, sdp }] if *i == id && sdp == OFFER.as_bytes()),
            "{events:?}"
        );
        u.hangup(id, 480, Some("SIP;cause=503;text=\"ICE failed\""), now)
            .unwrap();
        let (sent, _) = drain(&mut u);
        let bye = sent
            .iter()
            .find(|m| m.starts_with("BYE "))
            .expect("BYE sent");
        assert_eq!(header(bye, "Reason"), "SIP;cause=503;text=\"ICE failed\"");
        u.on_inbound(
            response(bye, 200, "OK", Some("b7"), "").as_bytes(),
            upstream(),
            now,
        );
        let (_, events) = drain(&mut u);
        assert!(
            matches!(
                &events[..],
                [UaEvent::CallEnded {
                    code: 200,
                    bye: Some(200),
                    bye_by_peer: false,
                    ..
                }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn cancel_after_a_407_goes_to_the_retried_invite() {
        let mut u = ua_with_credentials();
        let now = Instant::now();
        let (id, sent) = invite_bob(&mut u, now);
        let first = sent[0].clone();
        // The proxy's 100 Trying to the first INVITE counts for that transaction only.
        u.on_inbound(
            response(&first, 100, "Trying", None, "").as_bytes(),
            upstream(),
            now,
        );
        let challenge = response(&first, 407, "Proxy Authentication Required", Some("px"), "")
            .replace(
                "Content-Length: 0",
                "Proxy-Authenticate: Digest realm=\"sip.test\", nonce=\"abc\", algorithm=MD5\r\nContent-Length: 0",
            );
        u.on_inbound(challenge.as_bytes(), upstream(), now);
        let (sent, _) = drain(&mut u);
        let retry = sent
            .iter()
            .find(|m| m.starts_with("INVITE "))
            .unwrap_or_else(|| panic!("INVITE retried with credentials: {sent:?}"))
            .clone();
        assert_eq!(header(&retry, "CSeq"), "2 INVITE");
        // Hung up before any 1xx to the retry: the CANCEL waits for one (RFC 3261 §9.1).
        u.hangup(id, 487, None, now).unwrap();
        let (sent, _) = drain(&mut u);
        assert!(
            !sent.iter().any(|m| m.starts_with("CANCEL ")),
            "CANCEL before a 1xx to the retried INVITE: {sent:?}"
        );
        u.on_inbound(
            response(&retry, 180, "Ringing", Some("b9"), "").as_bytes(),
            upstream(),
            now,
        );
        let (sent, _) = drain(&mut u);
        let cancel = sent
            .iter()
            .find(|m| m.starts_with("CANCEL "))
            .expect("CANCEL");
        assert_eq!(
            header(cancel, "Via"),
            header(&retry, "Via"),
            "the retry's branch"
        );
        assert_eq!(header(cancel, "CSeq"), "2 CANCEL");
        // A 183 after the 180: no second CANCEL.
        u.on_inbound(
            response(&retry, 183, "Session Progress", Some("b9"), "").as_bytes(),
            upstream(),
            now,
        );
        let (sent, _) = drain(&mut u);
        assert!(
            !sent.iter().any(|m| m.starts_with("CANCEL ")),
            "a second CANCEL: {sent:?}"
        );
    }

    #[test]
    fn outgoing_call_cancelled_after_ringing_ends_with_487() {
        let mut u = ua(10);
        let now = Instant::now();
        let (id, sent) = invite_bob(&mut u, now);
        let invite = sent[0].clone();
        // Cancel before any 1xx: held back until one arrives (RFC 3261 §9.1).
        u.hangup(id, 480, None, now).unwrap();
        let (sent, _) = drain(&mut u);
        assert!(sent.iter().all(|m| !m.starts_with("CANCEL")), "{sent:?}");
        u.on_inbound(
            response(&invite, 180, "Ringing", Some("b8"), "").as_bytes(),
            upstream(),
            now,
        );
        let (sent, events) = drain(&mut u);
        assert!(events.is_empty(), "no Progress once cancelled: {events:?}");
        let cancel = sent
            .iter()
            .find(|m| m.starts_with("CANCEL "))
            .expect("CANCEL");
        assert_eq!(header(cancel, "Via"), header(&invite, "Via"), "same branch");
        assert_eq!(header(cancel, "CSeq"), "1 CANCEL");
        assert_eq!(header(cancel, "Call-ID"), header(&invite, "Call-ID"));
        u.on_inbound(
            response(cancel, 200, "OK", None, "").as_bytes(),
            upstream(),
            now,
        );
        u.on_inbound(
            response(&invite, 487, "Request Terminated", Some("b8"), "").as_bytes(),
            upstream(),
            now,
        );
        let (sent, events) = drain(&mut u);
        assert!(
            sent.iter().any(|m| m.starts_with("ACK ")),
            "the ICT ACKs the 487"
        );
        assert!(
            matches!(
                &events[..],
                [UaEvent::CallEnded {
                    code: 487,
                    bye: None,
                    ..
                }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn outgoing_call_busy() {
        let mut u = ua(10);
        let now = Instant::now();
        u.invite(
            "sip:bob@sip.test",
            None,
            None,
            OFFER.as_bytes().to_vec(),
            now,
        )
        .unwrap();
        let (sent, _) = drain(&mut u);
        u.on_inbound(
            response(&sent[0], 486, "Busy Here", Some("b9"), "").as_bytes(),
            upstream(),
            now,
        );
        let (_, events) = drain(&mut u);
        assert!(
            matches!(
                &events[..],
                [UaEvent::CallEnded {
                    code: 486,
                    bye: None,
                    ..
                }]
            ),
            "{events:?}"
        );
        assert!(u.calls.is_empty());
    }

    fn accepting_ua() -> UserAgent {
        let mut u = ua(10);
        u.s.accept_calls = true;
        u
    }

    fn incoming_invite(branch: &str) -> String {
        format!(
            "INVITE sip:alice*xmpp.test@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: \"Bob\" <sip:bob@sip.test>;tag=b1\r\nTo: <sip:alice*xmpp.test@sip.test>\r\nCall-ID: {branch}@h\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5080>\r\nJitsi-Conference-Room: room1@conference.xmpp.test\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
            OFFER.len()
        )
    }

    fn phone() -> Peer {
        Peer {
            proto: Proto::Udp,
            addr: "127.0.0.1:5080".parse().unwrap(),
            conn: None,
        }
    }

    #[test]
    fn incoming_call_rings_is_answered_and_the_caller_hangs_up() {
        let mut u = accepting_ua();
        let now = Instant::now();
        u.on_inbound(incoming_invite("in1").as_bytes(), phone(), now);
        let (_, events) = drain(&mut u);
        let id = match &events[..] {
            [
                UaEvent::Incoming {
                    id,
                    from,
                    from_display,
                    to,
                    request_uri,
                    sdp,
                    room,
                    ..
                },
            ] => {
                assert_eq!(from, "sip:bob@sip.test");
                assert_eq!(from_display.as_deref(), Some("Bob"));
                assert_eq!(to, "sip:alice*xmpp.test@sip.test");
                assert_eq!(request_uri, "sip:alice*xmpp.test@127.0.0.1:5070");
                assert_eq!(sdp, OFFER.as_bytes());
                assert_eq!(room.as_deref(), Some("room1@conference.xmpp.test"));
                *id
            }
            other => panic!("{other:?}"),
        };
        u.ring(id, 180, None, now).unwrap();
        let (sent, _) = drain(&mut u);
        let ringing = sent
            .iter()
            .find(|m| m.starts_with("SIP/2.0 180"))
            .expect("180");
        let to = header(ringing, "To").to_string();
        assert!(to.contains(";tag="), "{ringing}");
        u.answer(id, OFFER.as_bytes().to_vec(), now).unwrap();
        let (sent, _) = drain(&mut u);
        let ok = sent
            .iter()
            .find(|m| m.starts_with("SIP/2.0 200"))
            .expect("200");
        assert_eq!(header(ok, "To"), to, "the same dialog tag as the 180");
        assert!(ok.contains("Contact: <sip:gateway@127.0.0.1:5070;transport=udp>"));
        assert!(ok.ends_with(OFFER));
        // The 200 is retransmitted until the ACK (RFC 3261 §13.3.1.4).
        u.on_timeout(now + Duration::from_millis(600));
        let (sent, _) = drain(&mut u);
        assert!(
            sent.iter().any(|m| m.starts_with("SIP/2.0 200")),
            "{sent:?}"
        );
        let ack = format!(
            "ACK sip:gateway@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKack1\r\nMax-Forwards: 70\r\nFrom: \"Bob\" <sip:bob@sip.test>;tag=b1\r\nTo: {to}\r\nCall-ID: in1@h\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        u.on_inbound(ack.as_bytes(), phone(), now);
        u.on_timeout(now + Duration::from_millis(1700));
        let (sent, _) = drain(&mut u);
        assert!(
            sent.iter().all(|m| !m.starts_with("SIP/2.0 200")),
            "ACKed: {sent:?}"
        );
        let bye = format!(
            "BYE sip:gateway@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKbye1\r\nMax-Forwards: 70\r\nFrom: \"Bob\" <sip:bob@sip.test>;tag=b1\r\nTo: {to}\r\nCall-ID: in1@h\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        u.on_inbound(bye.as_bytes(), phone(), now);
        let (sent, events) = drain(&mut u);
        assert!(
            sent.iter().any(|m| m.starts_with("SIP/2.0 200")),
            "{sent:?}"
        );
        assert!(
            matches!(&events[..], [UaEvent::CallEnded { id: i, bye_by_peer: true, .. }] if *i == id),
            "{events:?}"
        );
    }

    #[test]
    fn our_reinvite_is_sent_in_the_dialog_acked_and_reported() {
        let mut u = accepting_ua();
        let now = Instant::now();
        u.on_inbound(incoming_invite("rei").as_bytes(), phone(), now);
        let (_, events) = drain(&mut u);
        let [UaEvent::Incoming { id, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        let id = *id;
        // No dialog yet: nothing to re-INVITE.
        assert!(u.reinvite(id, vec![], now).is_err());
        u.answer(id, OFFER.as_bytes().to_vec(), now).unwrap();
        let (sent, _) = drain(&mut u);
        let ok = sent
            .iter()
            .find(|m| m.starts_with("SIP/2.0 200"))
            .expect("200");
        let to = header(ok, "To").to_string();
        let ack = format!(
            "ACK sip:gateway@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKack2\r\nMax-Forwards: 70\r\nFrom: \"Bob\" <sip:bob@sip.test>;tag=b1\r\nTo: {to}\r\nCall-ID: rei@h\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        u.on_inbound(ack.as_bytes(), phone(), now);
        drain(&mut u);

        let hold = OFFER.replace("sendrecv", "sendonly");
        u.reinvite(id, hold.clone().into_bytes(), now).unwrap();
        assert!(
            u.reinvite(id, vec![], now).is_err(),
            "one re-INVITE at a time"
        );
        let (sent, _) = drain(&mut u);
        let invite = sent
            .iter()
            .find(|m| m.starts_with("INVITE sip:bob@127.0.0.1:5080 SIP/2.0"))
            .unwrap_or_else(|| panic!("re-INVITE to the phone's Contact: {sent:?}"));
        assert_eq!(header(invite, "Call-ID"), "rei@h");
        assert_eq!(header(invite, "CSeq"), "1 INVITE");
        assert!(header(invite, "From").contains("tag="), "{invite}");
        assert!(header(invite, "To").contains("tag=b1"), "{invite}");
        assert!(invite.ends_with(&hold), "{invite}");
        let answer = OFFER.replace("sendrecv", "recvonly");
        let resp = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: rei@h\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5080>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            header(invite, "Via"),
            header(invite, "From"),
            header(invite, "To"),
            answer.len()
        );
        u.on_inbound(resp.as_bytes(), phone(), now);
        let (sent, events) = drain(&mut u);
        let ack = sent
            .iter()
            .find(|m| m.starts_with("ACK "))
            .unwrap_or_else(|| panic!("2xx ACKed: {sent:?}"));
        assert_eq!(header(ack, "CSeq"), "1 ACK");
        match &events[..] {
            [
                UaEvent::ReinviteAnswered {
                    id: i,
                    code: 200,
                    sdp,
                },
            ] => {
                assert_eq!(*i, id);
                assert_eq!(sdp, answer.as_bytes());
            }
            other => panic!("{other:?}"),
        }
        // A retransmitted 200 is ACKed again and not reported twice.
        u.on_inbound(resp.as_bytes(), phone(), now);
        let (sent, events) = drain(&mut u);
        assert!(sent.iter().any(|m| m.starts_with("ACK ")), "{sent:?}");
        assert!(events.is_empty(), "{events:?}");
        // Ours is over: the phone's own re-INVITE reaches the call layer (no 491 glare).
        let theirs = format!(
            "INVITE sip:gateway@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKtheirs\r\nMax-Forwards: 70\r\nFrom: \"Bob\" <sip:bob@sip.test>;tag=b1\r\nTo: {to}\r\nCall-ID: rei@h\r\nCSeq: 2 INVITE\r\nContact: <sip:bob@127.0.0.1:5080>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
            OFFER.len()
        );
        u.on_inbound(theirs.as_bytes(), phone(), now);
        let (sent, events) = drain(&mut u);
        assert!(
            matches!(&events[..], [UaEvent::Reoffer { .. }]),
            "{events:?} {sent:?}"
        );
        u.reject_reinvite(id, 488, now).unwrap();
        drain(&mut u);
        // The next in-dialog request takes the next CSeq.
        u.hangup(id, 480, None, now).unwrap();
        let (sent, _) = drain(&mut u);
        let bye = sent.iter().find(|m| m.starts_with("BYE ")).expect("BYE");
        assert_eq!(header(bye, "CSeq"), "2 BYE");
    }

    #[test]
    fn incoming_invite_that_cannot_form_a_dialog_is_refused_400_before_ringing() {
        let mut u = accepting_ua();
        let now = Instant::now();
        let invite =
            incoming_invite("nocontact").replace("Contact: <sip:bob@127.0.0.1:5080>\r\n", "");
        u.on_inbound(invite.as_bytes(), phone(), now);
        let (sent, events) = drain(&mut u);
        assert!(events.is_empty(), "nobody rings: {events:?}");
        assert!(
            sent.iter().any(|m| m.starts_with("SIP/2.0 400")),
            "{sent:?}"
        );
        assert_eq!(u.active_calls(), 0);
    }

    #[test]
    fn a_refused_reinvite_does_not_block_the_next_one() {
        let mut u = accepting_ua();
        let now = Instant::now();
        u.on_inbound(incoming_invite("rr").as_bytes(), phone(), now);
        let (_, events) = drain(&mut u);
        let [UaEvent::Incoming { id, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        let id = *id;
        u.answer(id, OFFER.as_bytes().to_vec(), now).unwrap();
        let (sent, _) = drain(&mut u);
        let to = header(
            sent.iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap(),
            "To",
        )
        .to_string();
        let in_dialog = |method: &str, branch: &str, cseq: u32, body: &str| {
            format!(
                "{method} sip:gateway@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: \"Bob\" <sip:bob@sip.test>;tag=b1\r\nTo: {to}\r\nCall-ID: rr@h\r\nCSeq: {cseq} {method}\r\nContact: <sip:bob@127.0.0.1:5080>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        u.on_inbound(in_dialog("ACK", "a1", 1, "").as_bytes(), phone(), now);
        drain(&mut u);
        for (n, branch) in [(2, "re1"), (3, "re2")] {
            u.on_inbound(
                in_dialog("INVITE", branch, n, OFFER).as_bytes(),
                phone(),
                now,
            );
            let (_, events) = drain(&mut u);
            assert!(
                matches!(&events[..], [UaEvent::Reoffer { .. }]),
                "re-INVITE {n} reaches the call layer: {events:?}"
            );
            u.reject_reinvite(id, 488, now).unwrap();
            let (sent, _) = drain(&mut u);
            assert!(
                sent.iter().any(|m| m.starts_with("SIP/2.0 488")),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn incoming_call_cancelled_by_the_caller_gets_487() {
        let mut u = accepting_ua();
        let now = Instant::now();
        u.on_inbound(incoming_invite("in2").as_bytes(), phone(), now);
        let (_, events) = drain(&mut u);
        let [UaEvent::Incoming { id, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        let id = *id;
        let cancel = "CANCEL sip:alice*xmpp.test@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKin2;rport\r\nMax-Forwards: 70\r\nFrom: \"Bob\" <sip:bob@sip.test>;tag=b1\r\nTo: <sip:alice*xmpp.test@sip.test>\r\nCall-ID: in2@h\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
        u.on_inbound(cancel.as_bytes(), phone(), now);
        let (sent, events) = drain(&mut u);
        assert!(
            sent.iter()
                .any(|m| m.starts_with("SIP/2.0 200") && m.contains("CANCEL"))
        );
        assert!(
            sent.iter().any(|m| m.starts_with("SIP/2.0 487")),
            "{sent:?}"
        );
        assert!(
            matches!(&events[..], [UaEvent::CallEnded { id: i, code: 487, .. }] if *i == id),
            "{events:?}"
        );
        assert!(matches!(
            u.answer(id, vec![], now),
            Err(UaError::UnknownCall)
        ));
    }

    #[test]
    fn incoming_call_rejected_busy_and_calls_off_means_480() {
        let mut u = accepting_ua();
        let now = Instant::now();
        u.on_inbound(incoming_invite("in3").as_bytes(), phone(), now);
        let (_, events) = drain(&mut u);
        let [UaEvent::Incoming { id, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        u.reject(*id, 486, None, now).unwrap();
        let (sent, _) = drain(&mut u);
        assert!(
            sent.iter().any(|m| m.starts_with("SIP/2.0 486 Busy Here")),
            "{sent:?}"
        );
        assert!(u.calls.is_empty());
        let mut off = ua(10);
        off.on_inbound(incoming_invite("in4").as_bytes(), phone(), now);
        let (sent, events) = drain(&mut off);
        assert!(events.is_empty());
        assert!(
            sent.iter().any(|m| m.starts_with("SIP/2.0 480")),
            "{sent:?}"
        );
    }
}
