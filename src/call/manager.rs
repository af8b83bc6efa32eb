//! The call manager: one task that joins Jingle sessions on the XMPP side, SIP dialogs and the
//! media bridge of each call.
//!
//! * XMPP → SIP: a `session-initiate` (XEP-0166/0167, ICE-UDP, DTLS; a XEP-0353 propose is
//!   answered with `<proceed/>` first) is acked at once, the bridge allocated, the mapped SIP
//!   address INVITEd with an offer that lists the WebRTC side's codecs first (so passthrough is
//!   possible); 180/183 → `<ringing/>` (183 with SDP starts early media); 200 → `session-accept`
//!   with our ICE/DTLS transport.
//! * SIP → XMPP: an INVITE for `juliet*example.com` rings `juliet@example.com` with a JMI
//!   `<propose/>` from the caller's contact JID; `<ringing/>` → 180; `<proceed/>` from a full JID
//!   → `session-initiate` to it (the SIP side's codecs first); `session-accept` → 200 with our
//!   SDP answer; `<reject/>` → 486/603; no answer within `calls.ring_timeout` → `<retract/>` and
//!   480; CANCEL → `<retract/>`.
//! * Both: failures and hang-ups both ways with the reasons of PROTOCOLS.md §2.7, trickled
//!   candidates, SIP re-INVITE (hold) answered, media freed when a call ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use minidom::Element;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::jingle_media;
use super::presence::{Presences, Ring, Update};
use super::reason::{self, sip_reason};
use super::sdp_media::{self, SessionVersion, SrtpPolicy};
use crate::media::bridge::{
    Bridge, BridgeEvent, BridgeLocal, Direction as LegDirection, LegCodecs, LegKind, MediaEngine,
    WebRtcRole, plan,
};
use crate::sip::sdp::SessionDescription;
use crate::sip::service::CallCommand;
use crate::sip::ua::{RequestId, UaEvent};
use crate::xmpp::address::{AddressMapper, contact_to_sip_uri, sip_uri_user, sip_user_to_jid};
use crate::xmpp::jingle::{
    self, Action, Jingle, JingleErrorCondition, JmiKind, JmiMessage, Party, Reason,
    ReasonCondition, SessionInfo,
};
use crate::xmpp::link::{LinkHandle, LinkState};
use crate::xmpp::router::{CALL_ID_PREFIX, CONTACT_RESOURCE, Routed};
use crate::xmpp::stanza::{ErrorType, StanzaError, elem, error_reply, reply, text_elem};

const NS_CLIENT: &str = "jabber:component:accept";
/// XEP-0172 user nickname: the SIP caller's display name.
const NS_NICK: &str = "http://jabber.org/protocol/nick";

/// How the caller appears on the SIP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerId {
    /// From is the gateway's SIP account; the XMPP caller's bare JID is the display name.
    /// Works with every registrar (most insist that From matches the authenticated account).
    Account,
    /// From user is the caller's JID mapped as RFC 7247 says (`juliet*example.com@<domain>`).
    Mapped,
}

/// Settings of the call layer.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// The component's domain (`gateway.example.com`).
    pub component: String,
    /// `mapping.domain_separator`.
    pub separator: char,
    /// Domain for phone numbers (`+1555…` → `sip:+1555…@<domain>;user=phone`): the account's.
    pub sip_domain: String,
    pub caller_id: CallerId,
    /// `calls.ring_timeout`: how long an incoming SIP call rings before 480.
    pub ring_timeout: Duration,
}

/// Which way a call goes, and what only that direction needs.
enum Direction {
    /// An XMPP user called a SIP address: their Jingle offer, answered with `session-accept`.
    ToSip,
    /// A SIP caller rings an XMPP user: we propose (JMI), then initiate once a device proceeds.
    FromSip {
        /// The callee's bare JID (where the propose went; only its devices may answer).
        callee: String,
        /// True until a device sends `<proceed/>`: the call is a JMI propose, not a session yet.
        proposing: bool,
        /// The message id of our propose, so an error bounce finds the call.
        propose_id: String,
    },
}

/// One call.
struct Call {
    sid: String,
    dir: Direction,
    /// The XMPP party (full JID once known; the callee's bare JID while proposing) and our JID
    /// in the session (the contact, `…/gw`).
    peer: String,
    us: String,
    bridge: Bridge,
    local: BridgeLocal,
    /// The Jingle offer: theirs (we answer in its terms) or ours (SIP → XMPP).
    offer: jingle::RtpDescription,
    content_name: String,
    content_creator: Party,
    /// The WebRTC leg's codecs: their offer's, or (SIP → XMPP) their answer's.
    webrtc_codecs: LegCodecs,
    /// The codecs of the SIP side's answer, once it came (XMPP → SIP).
    sip_codecs: Option<LegCodecs>,
    sip: Option<RequestId>,
    /// The SIP leg's offer: ours (XMPP → SIP) or the caller's (SIP → XMPP).
    sip_offer: SessionDescription,
    /// The last SDP we sent on the SIP leg (offer or answer): a re-INVITE starts from it.
    sip_local: Option<SessionDescription>,
    /// Our re-INVITE offer waiting for its answer, and whether it puts the call on hold.
    reoffer: Option<(SessionDescription, bool)>,
    /// Hold wanted by the XMPP party; `on_hold` is what the SIP side last agreed to.
    want_hold: bool,
    on_hold: bool,
    /// The SIP side holds us (its last offer left us receiving only, or nothing).
    held_by_sip: bool,
    /// The id of our session-initiate / session-accept: an error to it ends the call.
    session_iq: Option<String>,
    session: SessionVersion,
    ringing_sent: bool,
    accepted: bool,
    started: Instant,
    /// How it ended, when the code that ends it knows better than the reason says.
    outcome: Option<Outcome>,
    /// XMPP → SIP with `calls.caller_id = mapped`: the Request-URI while the INVITE goes out
    /// with the mapped From; if the SIP side refuses that From (401/403/407), the call is
    /// placed again to it as the account.
    mapped_from: Option<String>,
}

impl Call {
    fn inbound(&self) -> bool {
        matches!(self.dir, Direction::FromSip { .. })
    }
}

type CallKey = u64;

/// Delayed work for a call.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// `calls.ring_timeout` is up.
    Ring(CallKey),
    /// Try the hold/resume re-INVITE again (after 491 glare or 500, RFC 3261 §14.1).
    Resync(CallKey),
}

/// How a call ended, for the counters (`xsg_calls_total{outcome=…}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Busy,
    Declined,
    NoAnswer,
    Cancelled,
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Answered,
        Outcome::Busy,
        Outcome::Declined,
        Outcome::NoAnswer,
        Outcome::Cancelled,
        Outcome::Failed,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Busy => "busy",
            Outcome::Declined => "declined",
            Outcome::NoAnswer => "no_answer",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "failed",
        }
    }
    /// An unanswered call's outcome from the reason it ended with.
    fn of_unanswered(reason: &ReasonCondition) -> Outcome {
        match reason {
            ReasonCondition::Busy => Outcome::Busy,
            ReasonCondition::Decline => Outcome::Declined,
            ReasonCondition::Timeout => Outcome::NoAnswer,
            ReasonCondition::Cancel | ReasonCondition::Success => Outcome::Cancelled,
            _ => Outcome::Failed,
        }
    }
}

/// Counters the admin API shows (`/about/stats` "calls", `/metrics` `xsg_calls_*`).
#[derive(Debug, Default, Clone, Copy)]
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

/// How to end the SIP leg: the final response to an unanswered incoming INVITE (`code`,
/// `phrase`), or CANCEL / BYE with an RFC 3326 `Reason` header for ours and answered ones.
struct SipEnd {
    code: u16,
    reason: Option<String>,
    phrase: Option<String>,
}

impl SipEnd {
    fn code(code: u16) -> Self {
        SipEnd {
            code,
            reason: None,
            phrase: None,
        }
    }
    fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    fn phrase(mut self, p: impl Into<String>) -> Self {
        self.phrase = Some(p.into());
        self
    }
}

pub struct CallManager {
    cfg: CallConfig,
    media: MediaEngine,
    mapper: AddressMapper,
    sip: mpsc::Sender<CallCommand>,
    xmpp: LinkHandle,
    calls: HashMap<CallKey, Call>,
    by_sid: HashMap<(String, String), CallKey>,
    by_sip: HashMap<RequestId, CallKey>,
    /// SIP → XMPP calls by JMI id (= sid): a device's ringing/proceed/reject finds its call.
    by_jmi: HashMap<String, CallKey>,
    bridge_tx: mpsc::UnboundedSender<(CallKey, BridgeEvent)>,
    timer_tx: mpsc::UnboundedSender<Timer>,
    timer_rx: Option<mpsc::UnboundedReceiver<Timer>>,
    next: u64,
    stats: CallStats,
    /// Users' devices seen available, and their capabilities.
    presences: Presences,
    /// Our disco#info queries for caps: IQ id → ver.
    disco_pending: HashMap<String, String>,
    /// Set by a graceful shutdown (`POST /about/shutdown`): calls in progress go on, new ones
    /// are refused.
    draining: Arc<AtomicBool>,
    /// The component link's state: when it is lost every call ends (stanzas to and from the
    /// XMPP parties are lost meanwhile, so no call state can be trusted), and SIP calls are
    /// refused until it is back.
    link: Option<watch::Receiver<LinkState>>,
    link_up: bool,
}

fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

impl CallManager {
    pub fn new(
        cfg: CallConfig,
        media: MediaEngine,
        sip: mpsc::Sender<CallCommand>,
        xmpp: LinkHandle,
    ) -> (Self, mpsc::UnboundedReceiver<(CallKey, BridgeEvent)>) {
        let (bridge_tx, bridge_rx) = mpsc::unbounded_channel();
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        (
            CallManager {
                mapper: AddressMapper::new(cfg.component.clone(), cfg.separator),
                cfg,
                media,
                sip,
                xmpp,
                calls: HashMap::new(),
                by_sid: HashMap::new(),
                by_sip: HashMap::new(),
                by_jmi: HashMap::new(),
                bridge_tx,
                timer_tx,
                timer_rx: Some(timer_rx),
                next: 0,
                stats: CallStats::default(),
                draining: Arc::new(AtomicBool::new(false)),
                presences: Presences::default(),
                disco_pending: HashMap::new(),
                link: None,
                link_up: true,
            },
            bridge_rx,
        )
    }

    /// Shares the flag a graceful shutdown sets: from then on new calls are refused.
    pub fn with_draining(mut self, draining: Arc<AtomicBool>) -> Self {
        self.draining = draining;
        self
    }

    /// Follows the component link: calls end when it is lost (see [`Self::on_link_lost`]).
    pub fn with_link_state(mut self, link: watch::Receiver<LinkState>) -> Self {
        self.link_up = matches!(*link.borrow(), LinkState::Up);
        self.link = Some(link);
        self
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// Runs until `shutdown`: every call is then ended on both sides.
    pub async fn run(
        mut self,
        mut bridge_rx: mpsc::UnboundedReceiver<(CallKey, BridgeEvent)>,
        mut stanzas: mpsc::Receiver<Routed>,
        mut sip_events: mpsc::UnboundedReceiver<UaEvent>,
        stats: tokio::sync::watch::Sender<CallStats>,
        shutdown: CancellationToken,
    ) {
        let mut timers = self.timer_rx.take().expect("run is called once");
        let mut link = self.link.take();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Ok(()) = async { match link.as_mut() {
                    Some(l) => l.changed().await,
                    None => std::future::pending().await,
                } } => {
                    let up = matches!(*link.as_mut().expect("polled above").borrow_and_update(), LinkState::Up);
                    if self.link_up && !up {
                        self.on_link_lost().await;
                    }
                    self.link_up = up;
                }
                Some(el) = stanzas.recv() => self.on_stanza(el).await,
                Some(ev) = sip_events.recv() => self.on_sip(ev).await,
                Some((key, ev)) = bridge_rx.recv() => self.on_bridge(key, ev).await,
                Some(t) = timers.recv() => match t {
                    Timer::Ring(key) => self.on_ring_timeout(key).await,
                    Timer::Resync(key) => self.sync_hold(key).await,
                },
            }
            self.publish(&stats);
        }
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        for key in keys {
            self.end(
                key,
                Some(Reason::new(ReasonCondition::Gone).with_text("the gateway is shutting down")),
                Some(
                    SipEnd::code(503).phrase("Service Unavailable (the gateway is shutting down)"),
                ),
            )
            .await;
        }
        self.publish(&stats);
    }

    /// The component link broke: whatever the XMPP parties sent since is lost (Prosody bounces
    /// stanzas for a disconnected component), so every call ends. The SIP side gets BYE / CANCEL
    /// / 503 now; the XMPP side gets its session-terminate or retract when the link is back (they
    /// wait in the link's queue).
    async fn on_link_lost(&mut self) {
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        if !keys.is_empty() {
            warn!(calls = keys.len(), "component link lost: ending every call");
        }
        for key in keys {
            self.fail(
                key,
                Some(
                    Reason::new(ReasonCondition::ConnectivityError)
                        .with_text("the gateway lost its connection to the XMPP server"),
                ),
                Some(
                    SipEnd::code(503)
                        .phrase("Service Unavailable (the gateway lost its XMPP server connection)")
                        .reason(
                            "SIP;cause=503;text=\"the gateway lost its XMPP server connection\"",
                        ),
                ),
            )
            .await;
        }
    }

    fn publish(&mut self, stats: &tokio::sync::watch::Sender<CallStats>) {
        self.stats.active = self.calls.len();
        self.stats.media_ports_in_use = self.media.ports_in_use();
        self.stats.media_bridges = self.media.active_bridges();
        let _ = stats.send(self.stats);
    }

    fn send(&self, el: Element) {
        if let Err(e) = self.xmpp.send(el) {
            warn!("cannot queue call signalling: {e}");
        }
    }

    fn iq_id(&mut self) -> String {
        self.next += 1;
        format!("{CALL_ID_PREFIX}{}", self.next)
    }

    async fn sip_command(&self, cmd: CallCommand) {
        if self.sip.send(cmd).await.is_err() {
            warn!("the SIP side has stopped; call command dropped");
        }
    }

    /// Sends `session-terminate` with `reason` for session `sid`, from `us` to `peer`.
    fn send_terminate(&mut self, sid: &str, us: &str, peer: &str, reason: Reason) {
        let mut t = Jingle::new(Action::SessionTerminate, sid);
        t.reason = Some(reason);
        let id = self.iq_id();
        self.send(t.to_iq(NS_CLIENT, &id, us, peer));
    }

    /// A `<message/>` carrying one JMI element (XEP-0353), with the hints that keep it out of
    /// message archives but let it reach every device (and offline storage: a missed call).
    fn jmi_message(from: &str, to: &str, id: Option<&str>, jmi: JmiMessage) -> Element {
        let mut m = elem(
            "message",
            NS_CLIENT,
            &[
                ("from", Some(from)),
                ("to", Some(to)),
                ("type", Some("chat")),
                ("id", id),
            ],
        );
        m.append_child(jmi.to_element());
        m.append_child(Element::bare("store", "urn:xmpp:hints"));
        m
    }

    /// Delivers `timer` to the run loop after `delay`.
    fn after(&self, delay: Duration, timer: Timer) {
        let tx = self.timer_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(timer);
        });
    }

    /// Starts the bridge's event forwarding for call `key`.
    fn watch_bridge(&self, key: CallKey, bridge: &mut Bridge) {
        if let Some(mut events) = bridge.take_events() {
            let tx = self.bridge_tx.clone();
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    if tx.send((key, ev)).is_err() {
                        break;
                    }
                }
            });
        }
    }

    // ------------------------------------------------------------------ XMPP side

    async fn on_stanza(&mut self, routed: Routed) {
        match routed {
            Routed::Jingle(el) => self.on_jingle_iq(el).await,
            Routed::CallIqReply(el) if el.attr("type") == Some("error") => {
                if let Some(id) = el.attr("id")
                    && self.disco_pending.remove(id).is_some()
                {
                    return; // a device that does not answer disco: its caps stay unknown
                }
                self.on_iq_error(&el).await
            }
            Routed::CallIqReply(el) => {
                if let Some(ver) = el.attr("id").and_then(|id| self.disco_pending.remove(id)) {
                    let known = el
                        .get_child("query", crate::xmpp::stanza::NS_DISCO_INFO)
                        .is_some_and(|q| self.presences.on_disco_info(&ver, q));
                    debug!(%ver, known, "caps learnt");
                }
            }
            Routed::Presence(el) => self.on_presence(&el).await,
            Routed::CallMessageError(el) => self.on_message_error(&el).await,
            Routed::Jmi(el) => self.on_jmi(&el).await,
            _ => {}
        }
    }

    async fn on_jmi(&mut self, msg: &Element) {
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
            self.send(Self::jmi_message(&us, from, None, proceed));
            return;
        }
        // The rest answer our propose (SIP → XMPP); only the callee's devices may.
        let Some(key) = self.by_jmi.get(&jmi.id).copied() else {
            debug!(id = %jmi.id, %from, "JMI message for no call of ours");
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Direction::FromSip {
            callee, proposing, ..
        } = &mut call.dir
        else {
            return;
        };
        if !bare(from).eq_ignore_ascii_case(callee) {
            warn!(%from, callee = %callee, "JMI answer from someone other than the callee; ignored");
            return;
        }
        match jmi.kind {
            JmiKind::Ringing => self.ring_sip(key).await,
            JmiKind::Proceed => {
                if !*proposing {
                    // Another device of the callee proceeded first (or a repeat): the session
                    // is with the first one.
                    debug!(%from, "late <proceed/>; the call went to another device");
                    return;
                }
                *proposing = false;
                call.peer = from.to_string();
                self.by_sid
                    .insert((from.to_string(), call.sid.clone()), key);
                self.initiate(key);
            }
            JmiKind::Reject { reason } => {
                let busy = reason
                    .as_ref()
                    .is_some_and(|r| r.condition == ReasonCondition::Busy);
                let code = if busy { 486 } else { 603 };
                if !*proposing {
                    // A session is under way with the device that proceeded: only it may end
                    // the call, and then its session ends too.
                    if from != call.peer {
                        debug!(%from, "<reject/> from another device after a proceed; ignored");
                        return;
                    }
                    let cond = if busy {
                        ReasonCondition::Busy
                    } else {
                        ReasonCondition::Decline
                    };
                    info!(%from, code, "the XMPP user rejected the call");
                    self.end(key, Some(Reason::new(cond)), Some(SipEnd::code(code)))
                        .await;
                    return;
                }
                info!(%from, code, "the XMPP user rejected the call");
                // No retract: the reject already told the callee's other devices (carbons).
                *proposing = false;
                self.end(key, None, Some(SipEnd::code(code))).await;
            }
            // <accept/> (legacy, to one's own bare JID), <retract/> and <finish/> from the
            // callee carry nothing for us: the session's own actions end it.
            _ => {}
        }
    }

    /// A user's device came or went.
    async fn on_presence(&mut self, p: &Element) {
        match self.presences.on_presence(p) {
            Update::Available(Some((full, node, ver))) => {
                if self.disco_pending.values().any(|v| *v == ver) {
                    return;
                }
                if self.disco_pending.len() > 256 {
                    // Queries nobody answered: forget them rather than stop learning.
                    self.disco_pending.clear();
                }
                let id = self.iq_id();
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
                    crate::xmpp::stanza::NS_DISCO_INFO,
                    &[("node", Some(&format!("{node}#{ver}")))],
                ));
                self.disco_pending.insert(id, ver);
                self.send(iq);
            }
            Update::Unavailable(full) => {
                // Its calls cannot go on: the SIP side hears that the user is gone.
                let keys: Vec<CallKey> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| c.peer == full)
                    .map(|(k, _)| *k)
                    .collect();
                for key in keys {
                    info!(%full, "the XMPP device of a call went offline; ending the call");
                    let end = SipEnd::code(480)
                        .phrase("Temporarily Unavailable (the XMPP user went offline)")
                        .reason("XMPP;text=\"the XMPP user went offline\"");
                    self.fail(key, None, Some(end)).await;
                }
            }
            Update::Available(None) | Update::Nothing => {}
        }
    }

    /// The XMPP callee's device rings (JMI `<ringing/>` or session-info): 180 to the SIP
    /// caller, once.
    async fn ring_sip(&mut self, key: CallKey) {
        if let Some(call) = self.calls.get_mut(&key)
            && call.inbound()
            && !call.ringing_sent
            && let Some(id) = call.sip
        {
            call.ringing_sent = true;
            self.sip_command(CallCommand::Ring {
                id,
                code: 180,
                sdp: None,
            })
            .await;
        }
    }

    /// An error bounce of our propose: the callee's server refused the message.
    async fn on_message_error(&mut self, msg: &Element) {
        let Some(id) = msg.attr("id") else { return };
        let key = self.calls.iter().find_map(|(k, c)| match &c.dir {
            // Only a bounce from the callee's side while still proposing means anything.
            Direction::FromSip {
                propose_id,
                proposing: true,
                callee,
            } if propose_id == id
                && bare(msg.attr("from").unwrap_or_default()).eq_ignore_ascii_case(callee) =>
            {
                Some(*k)
            }
            _ => None,
        });
        let Some(key) = key else { return };
        let condition = msg
            .get_child("error", NS_CLIENT)
            .and_then(|e| {
                e.children()
                    .find(|c| c.ns() == crate::xmpp::stanza::NS_STANZAS && c.name() != "text")
            })
            .map(|c| c.name().to_string())
            .unwrap_or_else(|| "undefined-condition".into());
        info!(%condition, "the callee's server refused the call's propose");
        let code = match condition.as_str() {
            "item-not-found" | "remote-server-not-found" | "jid-malformed" => 404,
            _ => 480,
        };
        if let Some(Call {
            dir: Direction::FromSip { proposing, .. },
            ..
        }) = self.calls.get_mut(&key)
        {
            *proposing = false; // nothing to retract
        }
        self.fail(
            key,
            None,
            Some(SipEnd::code(code).phrase(format!(
                "{} (the XMPP server said {condition})",
                if code == 404 {
                    "Not Found"
                } else {
                    "Temporarily Unavailable"
                }
            ))),
        )
        .await;
    }

    async fn on_iq_error(&mut self, iq: &Element) {
        // Only an error to the IQ that opens the session for the peer (our session-initiate or
        // session-accept) means it refused the call; errors to session-info and the like
        // change nothing.
        let Some(id) = iq.attr("id") else { return };
        let from = iq.attr("from").unwrap_or_default();
        let key = self
            .calls
            .iter()
            .find(|(_, c)| c.session_iq.as_deref() == Some(id) && c.peer == from)
            .map(|(k, _)| *k);
        let Some(key) = key else {
            debug!(id, "error reply to call signalling; ignored");
            return;
        };
        info!(%from, "the XMPP client refused the session; ending the call");
        self.fail(
            key,
            None,
            Some(
                SipEnd::code(480)
                    .phrase("Temporarily Unavailable (the XMPP client refused the session)")
                    .reason("XMPP;text=\"the XMPP client refused the session\""),
            ),
        )
        .await;
    }

    async fn on_jingle_iq(&mut self, iq: Element) {
        let parsed = match Jingle::from_iq(&iq) {
            Some(Ok(j)) => j,
            Some(Err(e)) => {
                self.send(error_reply(&iq, &StanzaError::bad_request(e.to_string())));
                return;
            }
            None => {
                self.send(error_reply(&iq, &StanzaError::service_unavailable()));
                return;
            }
        };
        let from = iq.attr("from").unwrap_or_default().to_string();
        let key = self
            .by_sid
            .get(&(from.clone(), parsed.sid.clone()))
            .copied();
        match (parsed.action, key) {
            (Action::SessionInitiate, None) => self.on_initiate(iq, parsed).await,
            (Action::SessionInitiate, Some(_)) => self.send(jingle::jingle_error_reply(
                &iq,
                JingleErrorCondition::OutOfOrder,
            )),
            (_, None) => self.send(jingle::jingle_error_reply(
                &iq,
                JingleErrorCondition::UnknownSession,
            )),
            (Action::SessionTerminate, Some(key)) => {
                self.send(reply(&iq, "result"));
                // An XMPP callee hanging up before answering declines; an XMPP caller doing
                // so cancels.
                let inbound = self.calls.get(&key).is_some_and(Call::inbound);
                let cond = parsed.reason.as_ref().map(|r| &r.condition);
                let sip = match cond {
                    Some(ReasonCondition::Success) | None if inbound => SipEnd::code(603),
                    Some(ReasonCondition::Success) | None => SipEnd::code(487),
                    Some(c) => SipEnd::code(reason::reason_to_sip_status(c))
                        .reason(format!("XMPP;text=\"{}\"", c.as_str())),
                };
                self.end(key, None, Some(sip)).await;
            }
            (Action::SessionAccept, Some(key))
                if self
                    .calls
                    .get(&key)
                    .is_some_and(|c| c.inbound() && !c.accepted) =>
            {
                self.send(reply(&iq, "result"));
                self.on_session_accept(key, parsed).await;
            }
            (Action::TransportInfo, Some(key)) => {
                self.send(reply(&iq, "result"));
                if let Some(call) = self.calls.get(&key) {
                    for c in parsed.contents.iter().filter_map(|c| c.transport.as_ref()) {
                        for cand in c
                            .candidates
                            .iter()
                            .filter_map(jingle_media::media_candidate)
                        {
                            if let Err(e) = call.bridge.add_webrtc_candidate(cand).await {
                                debug!("remote candidate refused: {e}");
                            }
                        }
                    }
                }
            }
            (Action::SessionInfo, Some(key)) => match parsed.info {
                Some(SessionInfo::Unsupported { .. }) => self.send(jingle::jingle_error_reply(
                    &iq,
                    JingleErrorCondition::UnsupportedInfo,
                )),
                Some(SessionInfo::Ringing) => {
                    // XEP-0167 §7.2: the callee's device rings (a session-initiate without JMI).
                    self.send(reply(&iq, "result"));
                    self.ring_sip(key).await;
                }
                Some(info @ (SessionInfo::Hold | SessionInfo::Unhold | SessionInfo::Active)) => {
                    self.send(reply(&iq, "result"));
                    self.set_hold(key, info == SessionInfo::Hold).await;
                }
                _ => self.send(reply(&iq, "result")),
            },
            (Action::ContentModify, Some(key)) => {
                // XEP-0166 §7.2.5: senders changed; anything but both ways is a hold.
                self.send(reply(&iq, "result"));
                if let Some(c) = parsed.contents.first() {
                    self.set_hold(key, c.senders != jingle::Senders::Both).await;
                }
            }
            // content-modify (hold from the XMPP side) and Jitsi source-add/remove: accepted;
            // they change nothing on the SIP side yet.
            (_, Some(_)) => self.send(reply(&iq, "result")),
        }
    }

    /// An XMPP user calls a SIP address (PROTOCOLS.md §2.2, §2.3: ack first, then work).
    async fn on_initiate(&mut self, iq: Element, j: Jingle) {
        let from = iq.attr("from").unwrap_or_default().to_string();
        let to = iq.attr("to").unwrap_or_default().to_string();
        let Some(content) = j
            .contents
            .iter()
            .find(|c| c.description.as_ref().is_some_and(|d| d.media == "audio"))
        else {
            self.send(error_reply(
                &iq,
                &StanzaError::bad_request("no audio content: this gateway carries voice calls"),
            ));
            return;
        };
        let (Some(desc), Some(transport)) = (&content.description, &content.transport) else {
            self.send(error_reply(
                &iq,
                &StanzaError::bad_request(
                    "the audio content needs an RTP description and an ICE-UDP transport",
                ),
            ));
            return;
        };
        let local = to.split('@').next().unwrap_or_default();
        let Some(uri) = contact_to_sip_uri(local, self.cfg.separator, &self.cfg.sip_domain) else {
            self.send(error_reply(
                &iq,
                &StanzaError::new(ErrorType::Cancel, "item-not-found").with_text(format!(
                    "{to} is not a SIP address or phone number: use +15551234567@{c} or user{s}sip.example.com@{c}",
                    c = self.cfg.component,
                    s = self.cfg.separator
                )),
            ));
            return;
        };
        self.send(reply(&iq, "result"));
        let sid = j.sid.clone();
        if self.is_draining() {
            self.send_terminate(
                &sid,
                &to,
                &from,
                Reason::new(ReasonCondition::Gone)
                    .with_text("503 Service Unavailable (the gateway is shutting down)"),
            );
            return;
        }
        let remote = match jingle_media::remote_description(transport) {
            Ok(r) => r,
            Err(e) => {
                self.send_terminate(
                    &sid,
                    &to,
                    &from,
                    Reason::new(ReasonCondition::FailedTransport).with_text(e.to_string()),
                );
                return;
            }
        };
        let webrtc_codecs = jingle_media::leg_codecs(desc);
        if webrtc_codecs.audio.is_empty() {
            self.send_terminate(
                &sid,
                &to,
                &from,
                Reason::new(ReasonCondition::FailedApplication)
                    .with_text("no codec this gateway can use (Opus, G.722, PCMU, PCMA)"),
            );
            return;
        }
        let (mut bridge, local_desc) = match self.media.create_bridge(WebRtcRole::Answerer).await {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot allocate media for a call: {e}");
                self.send_terminate(
                    &sid,
                    &to,
                    &from,
                    Reason::new(ReasonCondition::GeneralError)
                        .with_text(format!("503 Service Unavailable (media: {e})")),
                );
                return;
            }
        };
        if let Err(e) = bridge
            .set_webrtc_remote(remote, webrtc_codecs.clone())
            .await
        {
            self.send_terminate(
                &sid,
                &to,
                &from,
                Reason::new(ReasonCondition::FailedTransport).with_text(e.to_string()),
            );
            bridge.close().await;
            return;
        }
        self.next += 1;
        let key = self.next;
        self.watch_bridge(key, &mut bridge);
        let session = SessionVersion {
            id: rand::random::<u32>().into(),
            version: 1,
        };
        let prefer: Vec<_> = webrtc_codecs.audio.iter().map(|f| f.codec).collect();
        let sip_offer = sdp_media::sip_offer(&local_desc.sip, &prefer, SrtpPolicy::Plain, session);
        let caller = bare(&from).to_string();
        let mapped = self.cfg.caller_id == CallerId::Mapped;
        let sip_id = match self
            .send_invite(&uri, &caller, mapped, sip_offer.to_string().into_bytes())
            .await
        {
            Ok(id) => id,
            Err(why) => {
                warn!(%uri, %why, "cannot send the INVITE");
                self.send_terminate(
                    &sid,
                    &to,
                    &from,
                    Reason::new(ReasonCondition::GeneralError).with_text(format!("500 {why}")),
                );
                bridge.close().await;
                return;
            }
        };
        info!(sid = %j.sid, %from, %uri, "call XMPP → SIP started");
        self.stats.started_to_sip += 1;
        self.by_sid.insert((from.clone(), j.sid.clone()), key);
        self.by_sip.insert(sip_id, key);
        self.calls.insert(
            key,
            Call {
                sid: j.sid.clone(),
                dir: Direction::ToSip,
                peer: from,
                us: to,
                bridge,
                local: local_desc,
                offer: desc.clone(),
                content_name: content.name.clone(),
                content_creator: content.creator,
                webrtc_codecs,
                sip_codecs: None,
                sip: Some(sip_id),
                sip_offer: sip_offer.clone(),
                session,
                ringing_sent: false,
                accepted: false,
                started: Instant::now(),
                outcome: None,
                sip_local: Some(sip_offer),
                reoffer: None,
                want_hold: false,
                on_hold: false,
                held_by_sip: false,
                session_iq: None,
                mapped_from: mapped.then(|| uri.clone()),
            },
        );
    }

    /// INVITEs `uri` for the XMPP caller `caller` (bare JID): From is the mapped caller
    /// (`juliet*example.com@<sip domain>`) when `mapped`, else the account with the JID as
    /// display name.
    async fn send_invite(
        &self,
        uri: &str,
        caller: &str,
        mapped: bool,
        sdp: Vec<u8>,
    ) -> Result<RequestId, String> {
        let (from_user, from_display) = if mapped {
            (
                Some(caller.replacen('@', &self.cfg.separator.to_string(), 1)),
                None,
            )
        } else {
            (None, Some(caller.to_string()))
        };
        let (tx, rx) = oneshot::channel();
        self.sip_command(CallCommand::Invite {
            uri: uri.to_string(),
            from_user,
            from_display,
            sdp,
            reply: tx,
        })
        .await;
        match rx.await {
            Ok(r) => r,
            Err(_) => Err("the SIP side has stopped".to_string()),
        }
    }

    /// `calls.caller_id = mapped`: the SIP side refused our INVITE with the mapped From
    /// (`code` 401/403/407: registrars that check From against the credentials do). Places the
    /// call again as the account; true if that INVITE went out.
    async fn retry_as_account(&mut self, key: CallKey, code: u16) -> bool {
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        if call.accepted || !matches!(code, 401 | 403 | 407) {
            return false;
        }
        let Some(uri) = call.mapped_from.take() else {
            return false;
        };
        let caller = bare(&call.peer).to_string();
        let sdp = call.sip_offer.to_string().into_bytes();
        info!(%uri, %caller, code, "the SIP side refused the mapped caller ID; calling again as the account (calls.caller_id)");
        match self.send_invite(&uri, &caller, false, sdp).await {
            Ok(id) => {
                if let Some(call) = self.calls.get_mut(&key) {
                    call.sip = Some(id);
                }
                self.by_sip.insert(id, key);
                true
            }
            Err(why) => {
                warn!(%uri, %why, "cannot send the INVITE again");
                false
            }
        }
    }

    // ------------------------------------------------------------------ SIP → XMPP

    /// A SIP caller dials an XMPP user (`juliet*example.com@…`): check what we can before
    /// ringing anyone, then propose the call to the callee's devices (XEP-0353).
    async fn on_incoming(
        &mut self,
        id: RequestId,
        from: String,
        from_display: Option<String>,
        to: String,
        request_uri: String,
        sdp: Vec<u8>,
    ) {
        let sep = self.cfg.separator;
        // The Request-URI names the callee when the upstream keeps it (a trunk, Kamailio's
        // xmpp module); a registrar that rewrote it to our Contact leaves it in To.
        let callee = sip_uri_user(&request_uri)
            .and_then(|u| sip_user_to_jid(u, sep))
            .or_else(|| sip_uri_user(&to).and_then(|u| sip_user_to_jid(u, sep)));
        let reject = |code: u16, phrase: String| CallCommand::Reject {
            id,
            code,
            phrase: Some(phrase),
        };
        if self.is_draining() {
            self.sip_command(reject(
                503,
                "Service Unavailable (the gateway is shutting down)".into(),
            ))
            .await;
            return;
        }
        if !self.link_up {
            info!(%request_uri, "incoming call while the component link is down");
            self.sip_command(reject(
                480,
                "Temporarily Unavailable (the gateway is not connected to its XMPP server)".into(),
            ))
            .await;
            return;
        }
        let Some(callee) = callee else {
            info!(%request_uri, %to, "incoming call for no XMPP user");
            self.sip_command(reject(
                404,
                format!("Not Found (dial an XMPP user as user{sep}xmpp-domain, e.g. juliet{sep}example.com)"),
            ))
            .await;
            return;
        };
        let callee_domain = callee.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if callee_domain == self.cfg.component {
            // Our own contacts are SIP addresses: calling them from SIP would loop.
            self.sip_command(reject(
                482,
                format!("Loop Detected ({callee} is a SIP address behind this gateway)"),
            ))
            .await;
            return;
        }
        if sdp.is_empty() {
            self.sip_command(reject(
                488,
                "Not Acceptable Here (an INVITE without an SDP offer is not supported)".into(),
            ))
            .await;
            return;
        }
        let offer = match SessionDescription::parse(&sdp) {
            Ok(o) => o,
            Err(e) => {
                self.sip_command(reject(400, format!("Bad Request (SDP: {e})")))
                    .await;
                return;
            }
        };
        let (mut bridge, local) = match self.media.create_bridge(WebRtcRole::Offerer).await {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot allocate media for a call: {e}");
                self.sip_command(reject(503, format!("Service Unavailable (media: {e})")))
                    .await;
                return;
            }
        };
        // Checked now so that nobody rings for a call that cannot carry audio.
        let sip_remote = match sdp_media::sip_remote_from_offer(&offer, &local.sip, &[]) {
            Ok(r) => r,
            Err(e) => {
                info!("incoming call refused: {e}");
                let code = e.status().unwrap_or(488);
                self.sip_command(reject(code, format!("Not Acceptable Here ({e})")))
                    .await;
                bridge.close().await;
                return;
            }
        };
        let caller = self
            .mapper
            .prompt_to_jid(&from)
            .unwrap_or_else(|_| format!("unknown{sep}invalid@{}", self.cfg.component));
        let us = format!("{caller}/{CONTACT_RESOURCE}");
        let sid = format!("xsg{:016x}", rand::random::<u64>());
        self.next += 1;
        let key = self.next;
        self.watch_bridge(key, &mut bridge);

        // Directed presence with caps first, so the callee's client knows the caller takes
        // Jingle audio (and shows a name), then the propose to every device of the callee.
        let mut presence = elem(
            "presence",
            NS_CLIENT,
            &[("from", Some(&us)), ("to", Some(&callee))],
        );
        presence.append_child(crate::xmpp::disco::contact_caps());
        if let Some(name) = from_display.as_deref().filter(|n| !n.is_empty()) {
            presence.append_child(text_elem("nick", NS_NICK, name));
        }
        self.send(presence);
        let propose_id = format!("{CALL_ID_PREFIX}p-{sid}");
        let mut propose = Self::jmi_message(
            &us,
            &callee,
            Some(&propose_id),
            JmiMessage {
                kind: JmiKind::Propose {
                    media: vec!["audio".into()],
                },
                id: sid.clone(),
            },
        );
        if let Some(name) = from_display.as_deref().filter(|n| !n.is_empty()) {
            propose.append_child(text_elem("nick", NS_NICK, name));
        }
        // Devices that do Jingle audio but not JMI (as far as their verified caps tell) get
        // session-initiate straight away; otherwise every device rings with the propose.
        let direct = match self.presences.ring(&callee) {
            Ring::Direct(full) => Some(full),
            Ring::Propose => {
                self.send(propose);
                None
            }
        };
        self.after(self.cfg.ring_timeout, Timer::Ring(key));
        info!(%sid, %from, %callee, direct = ?direct, "call SIP → XMPP: ringing the XMPP user");
        self.stats.started_from_sip += 1;
        self.by_sip.insert(id, key);
        self.by_jmi.insert(sid.clone(), key);
        let webrtc_codecs = LegCodecs::default();
        // Our Jingle offer: the SIP side's codecs first (so the client may pick one and spare
        // transcoding), then the rest of what WebRTC clients have.
        let mut codecs: Vec<(u8, crate::media::codec::Codec)> = Vec::new();
        for f in &sip_remote.codecs.audio {
            if let Some(&(pt, c)) = jingle_media::DEFAULT_OFFER_CODECS
                .iter()
                .find(|(_, c)| *c == f.codec)
            {
                codecs.push((pt, c));
            }
        }
        for &(pt, c) in &jingle_media::DEFAULT_OFFER_CODECS {
            if !codecs.iter().any(|(_, have)| *have == c) {
                codecs.push((pt, c));
            }
        }
        // The SSRC and CNAME the bridge really sends with: browsers play announced SSRCs only.
        let description = jingle_media::offer_description(
            &codecs,
            Some(jingle_media::DEFAULT_TELEPHONE_EVENT),
            local.webrtc_ssrc,
            &local.webrtc_cname,
        );
        self.calls.insert(
            key,
            Call {
                sid,
                dir: Direction::FromSip {
                    callee: callee.clone(),
                    proposing: direct.is_none(),
                    propose_id,
                },
                peer: direct.clone().unwrap_or(callee),
                us,
                bridge,
                local,
                offer: description,
                content_name: "audio".into(),
                content_creator: Party::Initiator,
                webrtc_codecs,
                sip_codecs: Some(sip_remote.codecs),
                sip: Some(id),
                sip_offer: offer,
                session: SessionVersion {
                    id: rand::random::<u32>().into(),
                    version: 1,
                },
                ringing_sent: false,
                accepted: false,
                started: Instant::now(),
                outcome: None,
                sip_local: None,
                reoffer: None,
                want_hold: false,
                on_hold: false,
                held_by_sip: false,
                session_iq: None,
                mapped_from: None,
            },
        );
        if let Some(full) = direct {
            self.by_sid
                .insert((full, self.calls[&key].sid.clone()), key);
            self.initiate(key);
        }
    }

    /// A device of the callee proceeded: send it our session-initiate.
    fn initiate(&mut self, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let mut init = Jingle::new(Action::SessionInitiate, call.sid.clone());
        init.initiator = Some(call.us.clone());
        init.contents = vec![jingle::Content {
            creator: Party::Initiator,
            name: call.content_name.clone(),
            senders: jingle::Senders::Both,
            description: Some(call.offer.clone()),
            transport: Some(jingle_media::transport_from_local(&call.local.webrtc)),
        }];
        init.group_bundle = Some(vec![call.content_name.clone()]);
        let (us, peer) = (call.us.clone(), call.peer.clone());
        let id = self.iq_id();
        debug!(%peer, "session-initiate to the device that proceeded");
        self.send(init.to_iq(NS_CLIENT, &id, &us, &peer));
        if let Some(c) = self.calls.get_mut(&key) {
            c.session_iq = Some(id);
        }
    }

    /// The XMPP callee accepted: start the WebRTC leg, answer the SIP caller with 200.
    async fn on_session_accept(&mut self, key: CallKey, j: Jingle) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let content = j
            .contents
            .iter()
            .find(|c| c.name == call.content_name)
            .or_else(|| j.contents.first());
        let parts = content.and_then(|c| Some((c.description.as_ref()?, c.transport.as_ref()?)));
        let Some((desc, transport)) = parts else {
            self.fail_accept(
                key,
                "the session-accept has no audio description and transport",
            )
            .await;
            return;
        };
        // Only what we offered counts: the answer uses our payload type numbers.
        let mut webrtc_codecs = jingle_media::leg_codecs(desc);
        webrtc_codecs
            .audio
            .retain(|f| call.offer.payload_types.iter().any(|p| p.id == f.pt));
        if webrtc_codecs.audio.is_empty() {
            self.fail_accept(key, "the session-accept chose no codec we offered")
                .await;
            return;
        }
        let remote = match jingle_media::remote_description(transport) {
            Ok(r) => r,
            Err(e) => {
                self.fail_accept(key, &e.to_string()).await;
                return;
            }
        };
        if let Err(e) = call
            .bridge
            .set_webrtc_remote(remote, webrtc_codecs.clone())
            .await
        {
            self.fail_accept(key, &e.to_string()).await;
            return;
        }
        // The SIP answer: the codec the client chose first, if the caller has it
        // (passthrough), else the caller's order (transcoding).
        let prefer: Vec<_> = webrtc_codecs.audio.iter().map(|f| f.codec).collect();
        call.webrtc_codecs = webrtc_codecs;
        let answer = async {
            let remote =
                sdp_media::sip_remote_from_offer(&call.sip_offer, &call.local.sip, &prefer)
                    .map_err(|e| e.to_string())?;
            let crypto = call
                .bridge
                .set_sip_remote(remote.clone())
                .await
                .map_err(|e| e.to_string())?;
            call.sip_codecs = Some(remote.codecs.clone());
            sdp_media::build_answer(
                &call.sip_offer,
                &call.local.sip,
                &remote,
                crypto.as_ref(),
                call.session,
            )
            .map_err(|e| e.to_string())
        }
        .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.fail_accept(key, &e).await;
                return;
            }
        };
        call.accepted = true;
        call.sip_local = Some(answer.clone());
        let elapsed = call.started.elapsed();
        let Some(id) = call.sip else { return };
        self.sip_command(CallCommand::Answer {
            id,
            sdp: answer.to_string().into_bytes(),
        })
        .await;
        self.count_answered(elapsed);
        info!(
            setup_ms = elapsed.as_millis() as u64,
            "call SIP → XMPP answered: 200 OK sent"
        );
        self.sync_hold(key).await;
    }

    /// The callee's session-accept cannot be used: end both sides.
    async fn fail_accept(&mut self, key: CallKey, why: &str) {
        warn!(%why, "unusable session-accept");
        self.fail(
            key,
            Some(Reason::new(ReasonCondition::FailedApplication).with_text(why.to_string())),
            Some(SipEnd::code(488).phrase(format!("Not Acceptable Here ({why})"))),
        )
        .await;
    }

    /// Nobody answered within `calls.ring_timeout`.
    async fn on_ring_timeout(&mut self, key: CallKey) {
        if self.calls.get(&key).is_none_or(|c| c.accepted) {
            return;
        }
        info!("no answer within calls.ring_timeout; the caller gets 480");
        self.end(
            key,
            Some(Reason::new(ReasonCondition::Timeout).with_text("no answer")),
            Some(SipEnd::code(480).phrase("Temporarily Unavailable (no answer)")),
        )
        .await;
    }

    fn count_answered(&mut self, setup: Duration) {
        let ms = setup.as_millis() as u64;
        self.stats.count(Outcome::Answered);
        self.stats.setup_ms_sum += ms;
        self.stats.setup_count += 1;
        self.stats.setup_ms_last = Some(ms);
    }

    // ------------------------------------------------------------------ SIP side
    async fn on_sip(&mut self, ev: UaEvent) {
        match ev {
            UaEvent::Incoming {
                id,
                from,
                from_display,
                to,
                request_uri,
                sdp,
                ..
            } => {
                self.on_incoming(id, from, from_display, to, request_uri, sdp)
                    .await
            }
            UaEvent::Progress { id, code, sdp } => {
                let Some(key) = self.by_sip.get(&id).copied() else {
                    return;
                };
                if let Some(sdp) = sdp {
                    // Early media (183 with SDP): start the SIP leg's media now.
                    self.apply_sip_answer(key, &sdp).await;
                }
                let Some(call) = self.calls.get_mut(&key) else {
                    return;
                };
                if (180..=183).contains(&code) && !call.ringing_sent {
                    call.ringing_sent = true;
                    let mut info = Jingle::new(Action::SessionInfo, call.sid.clone());
                    info.info = Some(SessionInfo::Ringing);
                    let (us, peer) = (call.us.clone(), call.peer.clone());
                    let id = self.iq_id();
                    self.send(info.to_iq(NS_CLIENT, &id, &us, &peer));
                }
            }
            UaEvent::Answered { id, sdp } => {
                let Some(key) = self.by_sip.get(&id).copied() else {
                    return;
                };
                if !self.apply_sip_answer(key, &sdp).await {
                    self.fail(
                        key,
                        Some(
                            Reason::new(ReasonCondition::FailedApplication)
                                .with_text("488 the SIP side's answer is unusable"),
                        ),
                        Some(
                            SipEnd::code(488).reason("SIP;cause=488;text=\"unusable SDP answer\""),
                        ),
                    )
                    .await;
                    return;
                }
                self.accept(key);
                self.sync_hold(key).await;
            }
            UaEvent::Reoffer { id, sdp } => {
                let Some(key) = self.by_sip.get(&id).copied() else {
                    return;
                };
                self.on_reoffer(key, id, &sdp).await;
            }
            UaEvent::CallEnded {
                id,
                code,
                reason,
                bye_by_peer,
                ..
            } => {
                let Some(key) = self.by_sip.remove(&id) else {
                    return;
                };
                if self.retry_as_account(key, code).await {
                    return;
                }
                let accepted = self.calls.get(&key).is_some_and(|c| c.accepted);
                let jreason = if accepted || bye_by_peer && code < 300 {
                    Reason::new(ReasonCondition::Success)
                } else {
                    sip_reason(code, &reason)
                };
                if let Some(c) = self.calls.get_mut(&key) {
                    c.sip = None;
                }
                self.end(key, Some(jreason), None).await;
            }
            UaEvent::ReinviteAnswered { id, code, sdp } => {
                let Some(key) = self.by_sip.get(&id).copied() else {
                    return;
                };
                self.on_reinvite_answered(key, code, &sdp).await;
            }
            UaEvent::Registration(_) | UaEvent::Completed { .. } => {}
        }
    }

    /// Applies the SIP side's SDP answer (from a 183 or the 200) to the bridge.
    async fn apply_sip_answer(&mut self, key: CallKey, sdp: &[u8]) -> bool {
        let Some(call) = self.calls.get(&key) else {
            return false;
        };
        let parsed = match SessionDescription::parse(sdp) {
            Ok(p) => p,
            Err(e) => {
                warn!("SIP answer is not SDP: {e}");
                return false;
            }
        };
        let remote = match sdp_media::sip_remote_from_answer(&parsed, &call.sip_offer) {
            Ok(r) => r,
            Err(e) => {
                warn!("SIP answer unusable: {e}");
                return false;
            }
        };
        let codecs = remote.codecs.clone();
        match call.bridge.set_sip_remote(remote).await {
            Ok(_) => {
                if let Some(c) = self.calls.get_mut(&key) {
                    c.sip_codecs = Some(codecs);
                }
                true
            }
            Err(e) => {
                warn!("bridge refused the SIP answer: {e}");
                false
            }
        }
    }

    /// Sends session-accept with the codec the plan picked on the WebRTC leg.
    fn accept(&mut self, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.accepted {
            return;
        }
        // The same choice the bridge makes (pure): the answer lists what will flow.
        let sip_codecs = call.sip_codecs.clone().unwrap_or_default();
        let chosen = match plan(&call.webrtc_codecs, &sip_codecs) {
            Ok(p) => LegCodecs {
                audio: vec![p.webrtc],
                // RFC 4733 §2.1: telephone-event on the chosen codec's clock, if offered.
                telephone_event: p.webrtc_event,
                ..Default::default()
            },
            Err(_) => call.webrtc_codecs.clone(),
        };
        // The SSRC and CNAME the bridge really sends with: browsers play announced SSRCs only.
        let mut description = jingle_media::answer_description(
            &call.offer,
            &chosen,
            call.local.webrtc_ssrc,
            &call.local.webrtc_cname,
        );
        description.rtcp_mux = true;
        let transport = jingle_media::transport_from_local(&call.local.webrtc);
        let mut accept = Jingle::new(Action::SessionAccept, call.sid.clone());
        accept.responder = Some(call.us.clone());
        accept.contents = vec![jingle::Content {
            creator: call.content_creator,
            name: call.content_name.clone(),
            senders: jingle::Senders::Both,
            description: Some(description),
            transport: Some(transport),
        }];
        accept.group_bundle = Some(vec![call.content_name.clone()]);
        let (us, peer, elapsed) = (call.us.clone(), call.peer.clone(), call.started.elapsed());
        let id = self.iq_id();
        self.send(accept.to_iq(NS_CLIENT, &id, &us, &peer));
        if let Some(c) = self.calls.get_mut(&key) {
            c.session_iq = Some(id);
            c.accepted = true;
        }
        self.count_answered(elapsed);
        info!(
            setup_ms = elapsed.as_millis() as u64,
            "call answered: session-accept sent"
        );
    }

    /// The XMPP party put the call on hold (or resumed it): tell the SIP side with a
    /// re-INVITE (`sendonly` / `sendrecv`, RFC 3264 §8.4), one at a time.
    async fn set_hold(&mut self, key: CallKey, hold: bool) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.want_hold = hold;
        self.sync_hold(key).await;
    }

    async fn sync_hold(&mut self, key: CallKey) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.accepted || call.reoffer.is_some() || call.want_hold == call.on_hold {
            return;
        }
        let (Some(id), Some(last)) = (call.sip, call.sip_local.as_ref()) else {
            return;
        };
        let dir = if call.want_hold {
            crate::sip::sdp::Direction::SendOnly
        } else {
            crate::sip::sdp::Direction::SendRecv
        };
        let offer = sdp_media::reoffer_with_direction(last, dir);
        call.reoffer = Some((offer.clone(), call.want_hold));
        info!(hold = call.want_hold, "re-INVITE to the SIP side");
        self.sip_command(CallCommand::Reinvite {
            id,
            sdp: offer.to_string().into_bytes(),
        })
        .await;
    }

    /// The SIP side's answer to our re-INVITE.
    async fn on_reinvite_answered(&mut self, key: CallKey, code: u16, sdp: &[u8]) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some((offer, hold)) = call.reoffer.take() else {
            return;
        };
        if code == 481 || code == 408 {
            // RFC 3261 §14.1: the dialog is gone.
            warn!(
                code,
                "re-INVITE says the SIP dialog is gone; ending the call"
            );
            self.end(
                key,
                Some(sip_reason(code, "")),
                Some(SipEnd::code(code).reason(format!("SIP;cause={code}"))),
            )
            .await;
            return;
        }
        if code == 491 || code == 500 || code == 503 {
            // Glare or a busy peer (RFC 3261 §14.1): the session stays as it was; try again
            // after 2.1–4 s.
            info!(code, hold, "re-INVITE not taken now; trying again shortly");
            self.after(
                Duration::from_millis(2100 + rand::random::<u64>() % 1900),
                Timer::Resync(key),
            );
            return;
        }
        if !(200..300).contains(&code) {
            // Refused for good: the session stays as it was, and we stop asking (the next
            // hold/resume from the XMPP side tries again).
            warn!(code, hold, "the SIP side refused our re-INVITE");
            call.want_hold = call.on_hold;
            return;
        }
        // The 2xx ends this offer/answer either way: what we offered is our last SDP (and its
        // version the one to go on from), even when the answer is unusable — asking again
        // would only loop.
        call.on_hold = hold;
        call.session.version = call.session.version.max(offer.origin.session_version);
        match SessionDescription::parse(sdp)
            .map_err(|e| e.to_string())
            .and_then(|a| sdp_media::sip_remote_from_answer(&a, &offer).map_err(|e| e.to_string()))
        {
            Ok(remote) => {
                if let Err(e) = call.bridge.set_sip_remote(remote).await {
                    warn!("bridge refused the re-INVITE answer: {e}");
                }
            }
            Err(e) => warn!("unusable answer to our re-INVITE (media unchanged): {e}"),
        }
        call.sip_local = Some(offer);
        self.sync_hold(key).await;
    }

    /// A SIP re-INVITE (hold, new address): update the bridge, answer in kind.
    async fn on_reoffer(&mut self, key: CallKey, id: RequestId, sdp: &[u8]) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let prefer: Vec<_> = call.webrtc_codecs.audio.iter().map(|f| f.codec).collect();
        let session = SessionVersion {
            version: call.session.version + 1,
            ..call.session
        };
        let answer = async {
            let offer = SessionDescription::parse(sdp).map_err(|e| e.to_string())?;
            let mut remote = sdp_media::sip_remote_from_offer(&offer, &call.local.sip, &prefer)
                .map_err(|e| e.to_string())?;
            let theirs = remote.local_direction;
            if call.on_hold {
                // We hold the phone: a re-INVITE from it (a session refresh, a new address)
                // does not take the hold off.
                remote.local_direction = theirs.without_receiving();
            }
            let crypto = call
                .bridge
                .set_sip_remote(remote.clone())
                .await
                .map_err(|e| e.to_string())?;
            let answer =
                sdp_media::build_answer(&offer, &call.local.sip, &remote, crypto.as_ref(), session)
                    .map_err(|e| e.to_string())?;
            Ok::<_, String>((answer, theirs))
        }
        .await;
        let (answer, ours) = match answer {
            Ok(a) => a,
            Err(e) => {
                warn!("unusable re-INVITE, refused with 488: {e}");
                self.sip_command(CallCommand::RejectReinvite { id, code: 488 })
                    .await;
                return;
            }
        };
        call.session = session;
        call.sip_local = Some(answer.clone());
        // The phone put us on hold (we may only receive, or nothing) or took us off it: tell
        // the XMPP party (XEP-0167 §7.1), so its client shows it.
        let held = matches!(ours, LegDirection::RecvOnly | LegDirection::Inactive);
        let notify = (held != call.held_by_sip && call.accepted).then(|| {
            call.held_by_sip = held;
            let mut info = Jingle::new(Action::SessionInfo, call.sid.clone());
            info.info = Some(if held {
                SessionInfo::Hold
            } else {
                SessionInfo::Active
            });
            (info, call.us.clone(), call.peer.clone())
        });
        self.sip_command(CallCommand::AnswerReinvite {
            id,
            sdp: answer.to_string().into_bytes(),
        })
        .await;
        if let Some((info, us, peer)) = notify {
            let iq_id = self.iq_id();
            self.send(info.to_iq(NS_CLIENT, &iq_id, &us, &peer));
        }
    }

    // ------------------------------------------------------------------ media

    async fn on_bridge(&mut self, key: CallKey, ev: BridgeEvent) {
        match ev {
            BridgeEvent::Failed {
                leg: LegKind::WebRtc,
                reason,
            } => {
                warn!(%reason, "WebRTC leg failed; ending the call");
                let cond = if reason.contains("fingerprint") {
                    ReasonCondition::SecurityError
                } else {
                    ReasonCondition::ConnectivityError
                };
                let sip_reason = format!("SIP;cause=503;text=\"{}\"", reason.replace('"', "'"));
                self.fail(
                    key,
                    Some(Reason::new(cond).with_text(reason)),
                    Some(SipEnd::code(503).reason(sip_reason)),
                )
                .await;
            }
            BridgeEvent::Dtmf { from, digit, .. } => debug!(?from, %digit, "DTMF"),
            other => debug!(?other, "bridge event"),
        }
    }

    // ------------------------------------------------------------------ ending

    /// [`Self::end`] for a call that failed (counted so when it was not answered).
    async fn fail(&mut self, key: CallKey, jingle: Option<Reason>, sip: Option<SipEnd>) {
        if let Some(c) = self.calls.get_mut(&key) {
            c.outcome.get_or_insert(Outcome::Failed);
        }
        self.end(key, jingle, sip).await;
    }

    /// Ends a call on both sides and frees its media. `jingle`: the reason to tell the XMPP
    /// party (a `<retract/>` while we are still proposing, else `session-terminate`); `None`
    /// when they ended it. `sip`: how to end the SIP leg; `None` when the SIP side ended it.
    async fn end(&mut self, key: CallKey, jingle: Option<Reason>, sip: Option<SipEnd>) {
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        self.by_sid.remove(&(call.peer.clone(), call.sid.clone()));
        self.by_jmi.remove(&call.sid);
        if let Some(id) = call.sip {
            self.by_sip.remove(&id);
        }
        if !call.accepted {
            let outcome = call.outcome.unwrap_or_else(|| {
                let cond = jingle.as_ref().map(|r| r.condition).unwrap_or_else(|| {
                    sip.as_ref()
                        .map(|s| reason::sip_status_to_reason(s.code))
                        .unwrap_or(ReasonCondition::Cancel)
                });
                Outcome::of_unanswered(&cond)
            });
            self.stats.count(outcome);
        }
        match (jingle, &call.dir) {
            (
                Some(r),
                Direction::FromSip {
                    callee,
                    proposing: true,
                    ..
                },
            ) => {
                let retract = JmiMessage {
                    kind: JmiKind::Retract { reason: Some(r) },
                    id: call.sid.clone(),
                };
                self.send(Self::jmi_message(&call.us, callee, None, retract));
            }
            (Some(r), _) => self.send_terminate(&call.sid, &call.us, &call.peer, r),
            (None, _) => {}
        }
        if let (Some(id), Some(end)) = (call.sip, sip) {
            let cmd = if call.inbound() && !call.accepted {
                CallCommand::Reject {
                    id,
                    code: end.code,
                    phrase: end.phrase,
                }
            } else {
                CallCommand::Hangup {
                    id,
                    code: end.code,
                    reason: end.reason,
                }
            };
            self.sip_command(cmd).await;
        }
        info!(sid = %call.sid, secs = call.started.elapsed().as_secs(), "call ended");
        call.bridge.close().await;
    }
}
