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
    /// A probe call ended: the INVITE's final code and, if it was answered, the BYE's
    /// (`bye_by_peer` when the far end hung up first).
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
    /// The BYE ending a probe call.
    Bye(RequestId),
}

/// A call placed by [`UserAgent::call`]: INVITE, ACK, hold, BYE. It carries no media (its
/// offer is `a=inactive`) until the media engine exists; it proves signalling end to end.
#[derive(Debug)]
struct ProbeCall {
    hold: Duration,
    dialog: Option<Dialog>,
    /// Where ACK and BYE go (first route, else the remote target, else the proxy).
    hop: Option<Peer>,
    invite_code: Option<u16>,
    bye_due: Option<Instant>,
    bye_sent: bool,
    reinvites: Reinvites,
    /// Our 2xx to a re-INVITE, retransmitted until its ACK (RFC 3261 §13.3.1.4).
    uas_2xx: Option<(TransactionKey, Response, Retransmit2xx)>,
    /// Our offer, repeated in answers to re-INVITEs (the probe call's media never changes).
    sdp: Vec<u8>,
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
}

/// A request we originated, kept to answer 401/407 challenges (RFC 3261 §22.2).
#[derive(Debug)]
struct Outgoing {
    /// As built, before Via and Route were added.
    req: Request,
    to: Peer,
    cseq: u32,
    challenges: u32,
    sent_auth: Option<(AuthKind, Authorization)>,
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
        if let Some(r) = self.registration.as_mut() {
            r.unregister(now);
        }
        self.pump(now);
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
        self.outgoing.insert(
            id,
            Outgoing {
                req,
                to,
                cseq: 1,
                challenges: 0,
                sent_auth: None,
            },
        );
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
                        self.answer(&key, &request, 200, now);
                        if let Some(inv) = self.table.get(&ikey).map(|t| t.request().clone()) {
                            self.answer(&ikey, &inv, 487, now);
                        }
                    }
                    None => self.answer(&key, &request, 481, now),
                }
            }
            Ok(Incoming::Merged { key, request, .. }) => {
                self.peers.insert(key.clone(), from);
                self.answer(&key, &request, 482, now);
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
            self.answer(&key, &req, 503, now);
            return;
        }
        let verdict = policy::out_of_dialog(&req.method, from.addr.ip(), &self.s.trust);
        debug!(method = %req.method, from = %from.addr, ?verdict, "request");
        match verdict {
            Verdict::Forbidden => {
                self.metrics.sip_rejected.fetch_add(1, Relaxed);
                warn!(method = %req.method, from = %from.addr, "request from an untrusted peer refused (add it to sip.trusted?)");
                self.answer(&key, &req, 403, now);
            }
            Verdict::NotAllowed => self.answer(&key, &req, 405, now),
            Verdict::NotImplemented => self.answer(&key, &req, 501, now),
            Verdict::Accept => match req.method {
                Method::Options => self.answer(&key, &req, 200, now),
                // Until calls and messages are bridged (later issues), say so clearly rather
                // than accept and drop: 480 tells the caller to try again later.
                Method::Invite | Method::Message => self.answer(&key, &req, 480, now),
                Method::Bye => {
                    let call = self
                        .calls
                        .iter()
                        .find(|(_, c)| c.dialog.as_ref().is_some_and(|d| d.matches(&req)))
                        .map(|(id, _)| *id);
                    match call {
                        Some(id) => {
                            self.answer(&key, &req, 200, now);
                            self.end_call(id, Some(200), true);
                        }
                        None => self.answer(&key, &req, 481, now),
                    }
                }
                Method::Cancel => self.answer(&key, &req, 481, now),
                Method::Ack => {}
                _ => self.answer(&key, &req, 405, now),
            },
        }
    }

    /// A request with a To tag belongs to a dialog (RFC 3261 §12.2.2): ours, or 481.
    fn on_in_dialog_request(&mut self, key: TransactionKey, req: Request, now: Instant) {
        let id = self
            .calls
            .iter()
            .find(|(_, c)| c.dialog.as_ref().is_some_and(|d| d.matches(&req)))
            .map(|(id, _)| *id);
        let Some(id) = id else {
            self.answer(&key, &req, 481, now);
            return;
        };
        let call = self.calls.get_mut(&id).expect("id was just found in calls");
        let Some(dialog) = call.dialog.as_mut() else {
            self.answer(&key, &req, 481, now);
            return;
        };
        if dialog.accept_remote_cseq(&req).is_err() {
            // §12.2.2: a lower CSeq is out of order.
            self.answer(&key, &req, 500, now);
            return;
        }
        match req.method {
            Method::Bye => {
                self.answer(&key, &req, 200, now);
                self.end_call(id, Some(200), true);
            }
            Method::Invite => match call.reinvites.on_incoming() {
                ReinviteVerdict::Glare491 => self.answer(&key, &req, 491, now),
                ReinviteVerdict::Busy500 => self.answer(&key, &req, 500, now),
                ReinviteVerdict::Accept => {
                    // §12.2.2: a re-INVITE's Contact refreshes the remote target.
                    if let Some(c) = req.headers.iter().find_map(|h| match h {
                        Header::Contact(c) => Some(super::dialog::addr_spec(c.value())),
                        _ => None,
                    }) {
                        dialog.remote_target = c;
                    }
                    // The probe call's media never changes: answer with the same SDP, and keep
                    // the 2xx going until the ACK (§13.3.1.4).
                    let sdp = call.sdp.clone();
                    let tag = dialog.id.local_tag.clone();
                    let contact = self.s.contact.clone();
                    let mut resp = response_to(&req, 200, Some("OK"), Some(&tag));
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
            },
            Method::Options => self.answer(&key, &req, 200, now),
            _ => self.answer(&key, &req, 405, now),
        }
    }

    /// Answers the server transaction `key` with `code` (plus the headers that code needs).
    fn answer(&mut self, key: &TransactionKey, req: &Request, code: u16, now: Instant) {
        let phrase = match code {
            480 if req.method == Method::Invite => {
                "Temporarily Unavailable (calls are not bridged yet)"
            }
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
        let code = resp.status_code.code();
        let Some(kind) = AuthKind::from_status(code) else {
            return false;
        };
        let (Some(digest), Some(out)) = (self.digest.as_mut(), self.outgoing.get_mut(&id)) else {
            return false;
        };
        out.challenges += 1;
        if out.challenges > MAX_CHALLENGES {
            return false;
        }
        let Some((challenge, verdict)) = challenge_in(&resp.headers, kind, out.sent_auth.as_ref())
        else {
            return false;
        };
        if verdict == Rechallenge::Failed {
            warn!(
                code,
                "credentials refused for an outgoing request (wrong sip.password?)"
            );
            return false;
        }
        let method = out.req.method.to_string();
        let uri = out.req.uri.to_string();
        let Ok(auth) = digest.authorize(
            &challenge,
            &DigestRequest {
                method: &method,
                uri: &uri,
                body: &out.req.body,
            },
            random_cnonce,
        ) else {
            return false;
        };
        out.cseq += 1;
        let cseq = format!("{} {method}", out.cseq);
        let mut req = out.req.clone();
        req.headers.retain(|h| {
            !matches!(
                h,
                Header::CSeq(_) | Header::Authorization(_) | Header::ProxyAuthorization(_)
            )
        });
        req.headers.push(rsip::headers::CSeq::new(cseq).into());
        match kind {
            AuthKind::Www => req
                .headers
                .push(rsip::headers::Authorization::new(auth.value().to_string()).into()),
            AuthKind::Proxy => req
                .headers
                .push(rsip::headers::ProxyAuthorization::new(auth.value().to_string()).into()),
        }
        out.sent_auth = Some((kind, auth));
        out.req = req.clone();
        let to = out.to;
        let purpose = if self.calls.contains_key(&id) {
            Purpose::Call(id)
        } else {
            Purpose::Request(id)
        };
        self.send_client(req, to, purpose, now).is_ok()
    }

    /// Places a probe call: INVITE `uri` (offer `a=inactive`: no media yet), ACK the 2xx,
    /// hold for `hold`, BYE. The outcome arrives as [`UaEvent::CallEnded`].
    pub fn call(&mut self, uri: &str, hold: Duration, now: Instant) -> Result<RequestId, UaError> {
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
        local.session_id = id.0;
        local.session_version = 1;
        let sdp = sdp::create_offer(&local).to_string();
        let mut req = self.new_request(Method::Invite, target, uri);
        req.headers
            .push(rsip::headers::Contact::new(format!("<{}>", self.s.contact)).into());
        req.headers
            .push(rsip::headers::Allow::new(policy::ALLOW).into());
        req.headers
            .push(rsip::headers::ContentType::new("application/sdp").into());
        {
            let (h, b) = (&mut req.headers, &mut req.body);
            message::set_body(h, b, sdp.into_bytes());
        }
        self.calls.insert(
            id,
            ProbeCall {
                hold,
                dialog: None,
                hop: None,
                invite_code: None,
                bye_due: None,
                bye_sent: false,
                reinvites: Reinvites::default(),
                uas_2xx: None,
                sdp: req.body.clone(),
            },
        );
        self.send_client(req.clone(), to, Purpose::Call(id), now)?;
        self.outgoing.insert(
            id,
            Outgoing {
                req,
                to,
                cseq: 1,
                challenges: 0,
                sent_auth: None,
            },
        );
        self.pump(now);
        Ok(id)
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
        if call.dialog.is_none() {
            match Dialog::from_uac(&invite, resp) {
                Ok(d) => {
                    call.hop = Some(hop_of(&d.next_hop_uri(), fallback));
                    call.dialog = Some(d);
                    call.invite_code = Some(code);
                    call.bye_due = Some(now + call.hold);
                }
                Err(e) => {
                    warn!(error = %e, "2xx to INVITE unusable; the call cannot be confirmed");
                    return;
                }
            }
        }
        // ACK every 2xx, retransmissions included (RFC 3261 §13.2.2.4).
        let (Some(dialog), Some(hop)) = (call.dialog.as_mut(), call.hop) else {
            return;
        };
        if let Ok(ack) = dialog.ack(&self.s.user_agent) {
            let mut msg = ack;
            let mut headers = rsip::Headers::default();
            headers.push(self.via(hop.proto));
            for h in msg.headers.iter() {
                headers.push(h.clone());
            }
            msg.headers = headers;
            self.out.push_back(UaOutput::Send {
                to: hop,
                bytes: message::to_bytes(&msg.into()),
            });
        }
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
            return;
        };
        match dialog.request(Method::Bye, None, &self.s.user_agent) {
            Ok(bye) => {
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
}
