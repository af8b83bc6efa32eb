//! Every call of the gateway, pure: the [`Session`]s by typed id, the indexes that find a
//! session for a stanza or a SIP event, the timers of all calls in one deadline structure,
//! what the call layer knows of users' devices ([`Presences`]) and the call counters. It does
//! no I/O and reads no clock: the driver (`manager.rs`) feeds it routed stanzas, SIP user
//! agent events, bridge events and the time, carries out its [`Action`]s and sleeps until
//! [`Engine::poll_timeout`].
//!
//! Each session has its tracing span (`call{key dir sid call_id}`): everything logged for a
//! call, here, in the session and in its bridge, carries its Jingle sid and SIP Call-ID.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

use minidom::Element;
use tracing::{Span, debug, field, info, info_span, warn};

use super::presence::{Presences, Ring, Update};
use super::session::{
    CallConfig, CallKey, Env, Input, MediaCommand, MediaEvent, NS_CLIENT, Outcome, Output, Session,
    Stat, Timer, Way, jmi_message,
};
use crate::sip::service::CallCommand;
use crate::sip::ua::{RequestId, UaEvent};
use crate::xmpp::address::{AddressMapper, sip_uri_user, sip_user_to_jid};
use crate::xmpp::jingle::{
    self, Action as JingleAction, Jingle, JingleErrorCondition, JmiKind, JmiMessage,
};
use crate::xmpp::router::{CALL_ID_PREFIX, CONTACT_RESOURCE, Routed};
use crate::xmpp::stanza::{NS_DISCO_INFO, NS_STANZAS, StanzaError, elem, error_reply};

/// Counters the admin API shows (`/about/stats` "calls", `/metrics` `xsg_calls_*`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallStats {
    pub active: usize,
    /// Calls started, XMPP → SIP and SIP → XMPP.
    pub started_to_sip: u64,
    pub started_from_sip: u64,
    /// Ended calls by [`Outcome`] (indexed as `Outcome::ALL`); answered ones count once answered.
    pub outcomes: [u64; 6],
    /// Setup time of answered calls: session-initiate → session-accept (XMPP → SIP), INVITE →
    /// 200 (SIP → XMPP); sum and count, and the last one.
    pub setup_ms_sum: u64,
    pub setup_count: u64,
    pub setup_ms_last: Option<u64>,
    /// The media engine's view: UDP ports held and bridges alive (both 0 when idle).
    pub media_ports_in_use: usize,
    pub media_bridges: usize,
}

impl CallStats {
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes[o as usize]
    }
    fn count(&mut self, o: Outcome) {
        self.outcomes[o as usize] += 1;
    }
}

/// What the engine asks the driver to do.
#[derive(Debug)]
pub enum Action {
    Xmpp(Element),
    Sip(CallCommand),
    /// A command for the bridge of call `key` (the first is always `Create`).
    Media(CallKey, MediaCommand),
}

/// Where a session is indexed, to undo it when that changes.
#[derive(Debug, Default, Clone)]
struct Index {
    jingle: Option<(String, String)>,
    sip: Option<RequestId>,
    jmi: Option<String>,
}

struct Entry {
    /// Boxed: the map keeps spare room for entries, and a session is a few kB.
    session: Box<Session>,
    /// The session's INVITE was on its way at the end of the last input.
    inviting: bool,
    span: Span,
    index: Index,
    started: Instant,
}

/// Disco#info queries for caps we wait for at most: queries nobody answered are forgotten past
/// this, rather than grow.
const MAX_DISCO_PENDING: usize = 256;

pub struct Engine {
    cfg: CallConfig,
    mapper: AddressMapper,
    calls: HashMap<CallKey, Entry>,
    by_jingle: HashMap<(String, String), CallKey>,
    by_sip: HashMap<RequestId, CallKey>,
    by_jmi: HashMap<String, CallKey>,
    timers: BTreeSet<(Instant, CallKey, Timer)>,
    next: u64,
    stats: CallStats,
    presences: Presences,
    /// Our disco#info queries for caps: IQ id → ver.
    disco_pending: HashMap<String, String>,
    draining: bool,
    link_up: bool,
    /// Calls that ended while their INVITE was on its way: cancelled when its request id comes
    /// back ([`UaEvent::InviteSent`]).
    orphan_invites: HashSet<CallKey>,
    out: VecDeque<Action>,
}

fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

impl Engine {
    pub fn new(cfg: CallConfig) -> Self {
        Engine {
            mapper: AddressMapper::new(cfg.component.clone(), cfg.separator),
            cfg,
            calls: HashMap::new(),
            by_jingle: HashMap::new(),
            by_sip: HashMap::new(),
            by_jmi: HashMap::new(),
            timers: BTreeSet::new(),
            next: 0,
            stats: CallStats::default(),
            presences: Presences::default(),
            disco_pending: HashMap::new(),
            draining: false,
            link_up: true,
            orphan_invites: HashSet::new(),
            out: VecDeque::new(),
        }
    }

    /// A graceful shutdown (`POST /about/shutdown`) is under way: calls in progress go on, new
    /// ones are refused.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    pub fn stats(&self) -> CallStats {
        CallStats {
            active: self.calls.len(),
            ..self.stats
        }
    }

    pub fn session(&self, key: CallKey) -> Option<&Session> {
        self.calls.get(&key).map(|e| &*e.session)
    }

    /// The span of call `key` (its bridge's task runs in it).
    pub fn span(&self, key: CallKey) -> Option<Span> {
        self.calls.get(&key).map(|e| e.span.clone())
    }

    pub fn keys(&self) -> impl Iterator<Item = CallKey> + '_ {
        self.calls.keys().copied()
    }

    /// INVITEs of ended calls still waiting for their request id (to be cancelled): the
    /// driver's shutdown waits a little for them.
    pub fn has_orphan_invites(&self) -> bool {
        !self.orphan_invites.is_empty()
    }

    /// Entries in the (jingle, SIP, JMI) indexes: all 0 once no call is left.
    #[cfg(test)]
    pub(crate) fn index_sizes(&self) -> (usize, usize, usize) {
        (self.by_jingle.len(), self.by_sip.len(), self.by_jmi.len())
    }

    /// The next thing to do, until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// When [`Self::on_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _, _)| *at)
    }

    /// Fires every timer due at `env.now`.
    pub fn on_timeout(&mut self, env: &Env) {
        while let Some(&(at, key, timer)) = self.timers.first() {
            if at > env.now {
                break;
            }
            self.timers.pop_first();
            self.feed(key, Input::Timer(timer), env);
        }
    }

    /// The component link went up or down: when it is lost, whatever the XMPP parties sent
    /// since is lost (Prosody bounces stanzas for a disconnected component), so every call
    /// ends. The SIP side gets BYE / CANCEL / 503 now; the XMPP side gets its session-terminate
    /// or retract when the link is back (they wait in the link's queue). SIP calls are refused
    /// while it is down.
    pub fn on_link(&mut self, up: bool, env: &Env) {
        let lost = self.link_up && !up;
        self.link_up = up;
        if lost {
            let keys: Vec<CallKey> = self.calls.keys().copied().collect();
            if !keys.is_empty() {
                warn!(calls = keys.len(), "component link lost: ending every call");
            }
            for key in keys {
                self.feed(key, Input::LinkLost, env);
            }
        }
    }

    /// The gateway stops: every call ends on both sides.
    pub fn shutdown(&mut self, env: &Env) {
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        for key in keys {
            self.feed(key, Input::Shutdown, env);
        }
    }

    // ------------------------------------------------------------------ sessions

    fn new_key(&mut self) -> CallKey {
        self.next += 1;
        CallKey(self.next)
    }

    /// Takes a new session in (if it is not over already) and carries out what it asks.
    fn admit(&mut self, session: Session, span: Span, env: &Env) {
        let key = session.key();
        self.calls.insert(
            key,
            Entry {
                session: Box::new(session),
                inviting: false,
                span,
                index: Index::default(),
                started: env.now,
            },
        );
        self.drain(key, env.now);
    }

    /// Feeds `input` to call `key` in its span, then carries out what it asks.
    fn feed(&mut self, key: CallKey, input: Input, env: &Env) {
        let Some(e) = self.calls.get_mut(&key) else {
            return;
        };
        let cfg = &self.cfg;
        e.span.in_scope(|| e.session.handle(input, cfg, env));
        self.drain(key, env.now);
    }

    fn drain(&mut self, key: CallKey, now: Instant) {
        let Some(e) = self.calls.get_mut(&key) else {
            return;
        };
        for o in e.session.take_outputs() {
            match o {
                Output::Xmpp(el) => self.out.push_back(Action::Xmpp(el)),
                Output::Sip(c) => self.out.push_back(Action::Sip(c)),
                Output::Media(c) => self.out.push_back(Action::Media(key, c)),
                Output::Timer { timer, at } => {
                    self.timers.insert((at, key, timer));
                }
                Output::Stat(Stat::Started(Way::ToSip)) => self.stats.started_to_sip += 1,
                Output::Stat(Stat::Started(Way::FromSip)) => self.stats.started_from_sip += 1,
                Output::Stat(Stat::Answered { setup }) => {
                    let ms = setup.as_millis() as u64;
                    self.stats.count(Outcome::Answered);
                    self.stats.setup_ms_sum += ms;
                    self.stats.setup_count += 1;
                    self.stats.setup_ms_last = Some(ms);
                }
                Output::Stat(Stat::Ended(o)) => self.stats.count(o),
            }
        }
        // Re-index where the session can be found now (compared borrowed first: most inputs
        // change nothing here, and need not allocate).
        let s = &e.session;
        let over = s.is_over();
        let jingle = s.jingle_key();
        let sip = s.sip_id().filter(|_| !over);
        let jmi = s.jmi_id().filter(|_| !over);
        let same = e
            .index
            .jingle
            .as_ref()
            .map(|(p, i)| (p.as_str(), i.as_str()))
            == jingle
            && e.index.sip == sip
            && e.index.jmi.as_deref() == jmi;
        if !same {
            let index = Index {
                jingle: jingle.map(|(p, i)| (p.to_string(), i.to_string())),
                sip,
                jmi: jmi.map(str::to_string),
            };
            let old = std::mem::replace(&mut e.index, index.clone());
            if let Some(j) = old.jingle {
                self.by_jingle.remove(&j);
            }
            if let Some(id) = old.sip {
                self.by_sip.remove(&id);
            }
            if let Some(j) = old.jmi {
                self.by_jmi.remove(&j);
            }
            if let Some(j) = index.jingle {
                self.by_jingle.insert(j, key);
            }
            if let Some(id) = index.sip {
                self.by_sip.insert(id, key);
            }
            if let Some(j) = index.jmi {
                self.by_jmi.insert(j, key);
            }
        }
        if !e.session.is_over() {
            e.inviting = e.session.invite_in_flight();
        } else {
            let e = self.calls.remove(&key).expect("looked up above");
            if e.inviting {
                self.orphan_invites.insert(key);
            }
            self.timers.retain(|(_, k, _)| *k != key);
            let secs = now.saturating_duration_since(e.started).as_secs();
            e.span.in_scope(|| info!(secs, "call ended"));
        }
    }

    // ------------------------------------------------------------------ XMPP side

    /// A stanza the router gave the call layer.
    pub fn on_routed(&mut self, routed: Routed, env: &Env) {
        match routed {
            Routed::Jingle(iq) => self.on_jingle_iq(iq, env),
            Routed::Jmi(msg) => self.on_jmi(&msg, env),
            Routed::CallIqReply(iq) => self.on_iq_reply(&iq, env),
            Routed::CallMessageError(msg) => self.on_message_error(&msg, env),
            Routed::Presence(p) => self.on_presence(&p, env),
            Routed::Reply(_) | Routed::Message(_) | Routed::MucPresence(_) | Routed::Rayo(_) => {
                debug!("routed stanza the call layer does not take")
            }
        }
    }

    fn on_jingle_iq(&mut self, iq: Element, env: &Env) {
        let parsed = match Jingle::from_iq(&iq) {
            Some(Ok(j)) => j,
            Some(Err(e)) => {
                self.out.push_back(Action::Xmpp(error_reply(
                    &iq,
                    &StanzaError::bad_request(e.to_string()),
                )));
                return;
            }
            None => {
                self.out.push_back(Action::Xmpp(error_reply(
                    &iq,
                    &StanzaError::service_unavailable(),
                )));
                return;
            }
        };
        let from = iq.attr("from").unwrap_or_default().to_string();
        let key = self
            .by_jingle
            .get(&(from.clone(), parsed.sid.clone()))
            .copied();
        match (parsed.action, key) {
            (JingleAction::SessionInitiate, None) => {
                let key = self.new_key();
                let span = call_span(key, Way::ToSip, &parsed.sid, None);
                let session = span
                    .in_scope(|| Session::to_sip(key, &iq, parsed, &self.cfg, self.draining, env));
                self.admit(session, span, env);
            }
            (_, None) => self.out.push_back(Action::Xmpp(jingle::jingle_error_reply(
                &iq,
                JingleErrorCondition::UnknownSession,
            ))),
            (_, Some(key)) => self.feed(key, Input::Jingle { iq, jingle: parsed }, env),
        }
    }

    fn on_jmi(&mut self, msg: &Element, env: &Env) {
        let Some(Ok(jmi)) = JmiMessage::from_message(msg) else {
            return;
        };
        let (Some(from), Some(to)) = (msg.attr("from"), msg.attr("to")) else {
            return;
        };
        if let JmiKind::Propose { .. } = jmi.kind {
            // An XMPP → SIP call: we do not ring through JMI (the SIP side rings once the
            // INVITE is out), so tell the client to send session-initiate right away by
            // answering with <proceed/> from a full JID of the contact.
            let us = format!("{}/{CONTACT_RESOURCE}", bare(to));
            let proceed = JmiMessage {
                kind: JmiKind::Proceed,
                id: jmi.id.clone(),
            };
            self.out
                .push_back(Action::Xmpp(jmi_message(&us, from, None, proceed)));
            return;
        }
        // The rest answer our propose (SIP → XMPP).
        let Some(key) = self.by_jmi.get(&jmi.id).copied() else {
            debug!(id = %jmi.id, %from, "JMI message for no call of ours");
            return;
        };
        let from = from.to_string();
        self.feed(key, Input::Jmi { from, jmi }, env);
    }

    fn on_iq_reply(&mut self, iq: &Element, env: &Env) {
        let Some(id) = iq.attr("id") else { return };
        if let Some(ver) = self.disco_pending.remove(id) {
            // A device that does not answer disco keeps unknown caps.
            if iq.attr("type") == Some("result") {
                let known = iq
                    .get_child("query", NS_DISCO_INFO)
                    .is_some_and(|q| self.presences.on_disco_info(&ver, q));
                debug!(%ver, known, "caps learnt");
            }
            return;
        }
        if iq.attr("type") != Some("error") {
            return;
        }
        let Some(key) = CallKey::of_stanza_id(id) else {
            debug!(id, "error reply to call signalling of no call; ignored");
            return;
        };
        let input = Input::IqError {
            from: iq.attr("from").unwrap_or_default().to_string(),
            id: id.to_string(),
        };
        self.feed(key, input, env);
    }

    /// An error bounce of our propose: the callee's server refused the message.
    fn on_message_error(&mut self, msg: &Element, env: &Env) {
        let Some(key) = msg.attr("id").and_then(CallKey::of_stanza_id) else {
            return;
        };
        let condition = msg
            .get_child("error", NS_CLIENT)
            .and_then(|e| {
                e.children()
                    .find(|c| c.ns() == NS_STANZAS && c.name() != "text")
            })
            .map(|c| c.name().to_string())
            .unwrap_or_else(|| "undefined-condition".into());
        let input = Input::ProposeBounced {
            from: msg.attr("from").unwrap_or_default().to_string(),
            id: msg.attr("id").unwrap_or_default().to_string(),
            condition,
        };
        self.feed(key, input, env);
    }

    /// A user's device came or went.
    fn on_presence(&mut self, p: &Element, env: &Env) {
        match self.presences.on_presence(p) {
            Update::Available(Some((full, node, ver))) => {
                if self.disco_pending.values().any(|v| *v == ver) {
                    return;
                }
                if self.disco_pending.len() >= MAX_DISCO_PENDING {
                    // Queries nobody answered: forget them rather than stop learning.
                    self.disco_pending.clear();
                }
                self.next += 1;
                let id = format!("{CALL_ID_PREFIX}d{}", self.next);
                let mut iq = elem(
                    "iq",
                    NS_CLIENT,
                    &[
                        ("type", Some("get")),
                        ("id", Some(&id)),
                        ("from", Some(&self.cfg.component)),
                        ("to", Some(&full)),
                    ],
                );
                iq.append_child(elem(
                    "query",
                    NS_DISCO_INFO,
                    &[("node", Some(&format!("{node}#{ver}")))],
                ));
                self.disco_pending.insert(id, ver);
                self.out.push_back(Action::Xmpp(iq));
            }
            Update::Unavailable(full) => {
                // Its calls cannot go on: the SIP side hears that the user is gone.
                let keys: Vec<CallKey> = self
                    .calls
                    .iter()
                    .filter(|(_, e)| e.session.peer() == full)
                    .map(|(k, _)| *k)
                    .collect();
                for key in keys {
                    self.feed(key, Input::DeviceGone, env);
                }
            }
            Update::Available(None) | Update::Nothing => {}
        }
    }

    // ------------------------------------------------------------------ SIP side

    /// An event of the SIP user agent.
    pub fn on_ua(&mut self, ev: UaEvent, env: &Env) {
        match ev {
            UaEvent::Incoming {
                id,
                from,
                from_display,
                to,
                request_uri,
                call_id,
                sdp,
                room: _,
            } => self.on_incoming(
                id,
                &from,
                from_display,
                &to,
                &request_uri,
                &call_id,
                &sdp,
                env,
            ),
            UaEvent::InviteSent { tag, result } => {
                let key = CallKey(tag);
                match self.calls.get(&key) {
                    Some(e) => {
                        if let Ok((_, call_id)) = &result {
                            e.span.record("call_id", call_id.as_str());
                        }
                        self.feed(key, Input::InviteSent(result), env);
                    }
                    None => {
                        // The call ended while its INVITE was on the way: cancel it.
                        self.orphan_invites.remove(&key);
                        if let Ok((id, _)) = result {
                            self.out.push_back(Action::Sip(CallCommand::Hangup {
                                id,
                                code: 487,
                                reason: None,
                            }));
                        }
                    }
                }
            }
            UaEvent::Registration(_) | UaEvent::Completed { .. } => {}
            UaEvent::Progress { id, .. }
            | UaEvent::Answered { id, .. }
            | UaEvent::Reoffer { id, .. }
            | UaEvent::ReinviteAnswered { id, .. }
            | UaEvent::CallEnded { id, .. } => {
                let Some(key) = self.by_sip.get(&id).copied() else {
                    return;
                };
                self.feed(key, Input::Sip(ev), env);
            }
        }
    }

    /// A SIP caller dials an XMPP user (`juliet*example.com@…`).
    #[allow(clippy::too_many_arguments)]
    fn on_incoming(
        &mut self,
        id: RequestId,
        from: &str,
        from_display: Option<String>,
        to: &str,
        request_uri: &str,
        call_id: &str,
        sdp: &[u8],
        env: &Env,
    ) {
        let sep = self.cfg.separator;
        // The Request-URI names the callee when the upstream keeps it (a trunk, Kamailio's
        // xmpp module); a registrar that rewrote it to our Contact leaves it in To.
        let callee = sip_uri_user(request_uri)
            .and_then(|u| sip_user_to_jid(u, sep))
            .or_else(|| sip_uri_user(to).and_then(|u| sip_user_to_jid(u, sep)));
        let refuse = if self.draining {
            Some((503, "Service Unavailable (the gateway is shutting down)"))
        } else if !self.link_up {
            info!(%request_uri, "incoming call while the component link is down");
            Some((
                480,
                "Temporarily Unavailable (the gateway is not connected to its XMPP server)",
            ))
        } else {
            None
        };
        if callee.is_none() && refuse.is_none() {
            info!(%request_uri, %to, "incoming call for no XMPP user");
        }
        let caller = self
            .mapper
            .prompt_to_jid(from)
            .unwrap_or_else(|_| format!("unknown{sep}invalid@{}", self.cfg.component));
        // Devices that do Jingle audio but not JMI (as far as their verified caps tell) get
        // session-initiate straight away; otherwise every device rings with the propose.
        let direct = match callee.as_deref().map(|c| self.presences.ring(c)) {
            Some(Ring::Direct(full)) => Some(full),
            _ => None,
        };
        let key = self.new_key();
        // Made before its span (it logs nothing while made; its outputs go out in the span).
        let session = Session::from_sip(
            key,
            id,
            callee,
            caller,
            from_display,
            sdp,
            direct,
            &self.cfg,
            refuse,
            env,
        );
        let span = call_span(key, Way::FromSip, session.sid(), Some(call_id));
        self.admit(session, span, env);
    }

    // ------------------------------------------------------------------ media

    /// An answer or event of call `key`'s bridge.
    pub fn on_media(&mut self, key: CallKey, ev: MediaEvent, env: &Env) {
        self.feed(key, Input::Media(ev), env);
    }
}

/// `call{key dir sid call_id}`: the span of one call.
fn call_span(key: CallKey, way: Way, sid: &str, call_id: Option<&str>) -> Span {
    let span = info_span!(
        "call",
        key = key.0,
        dir = way.as_str(),
        sid = %sid,
        call_id = field::Empty
    );
    if let Some(c) = call_id {
        span.record("call_id", c);
    }
    span
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
