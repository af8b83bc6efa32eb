//! The call manager: one task that joins Jingle sessions on the XMPP side, SIP dialogs and the
//! media bridge of each call.
//!
//! Done so far: XMPP → SIP calls started with a direct `session-initiate` (XEP-0166/0167, ICE-UDP,
//! DTLS): ack at once, allocate the bridge, INVITE the mapped SIP address with an offer that lists
//! the WebRTC side's codecs first (so passthrough is possible); 180/183 → `<ringing/>` (183 with
//! SDP starts early media); 200 → `session-accept` with our ICE/DTLS transport; failures and
//! hang-ups both ways with the reasons of PROTOCOLS.md §2.7; trickled candidates; SIP re-INVITE
//! (hold) answered. SIP → XMPP calls and JMI come next: an incoming INVITE is answered 480 with
//! a reason saying so.

use std::collections::HashMap;
use std::time::Instant;

use minidom::Element;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::sdp_media::{self, SessionVersion, SrtpPolicy};
use crate::media::bridge::{
    Bridge, BridgeEvent, BridgeLocal, LegCodecs, LegKind, MediaEngine, WebRtcRole, plan,
};
use crate::sip::sdp::SessionDescription;
use crate::sip::service::CallCommand;
use crate::sip::ua::{RequestId, UaEvent};
use crate::xmpp::address::contact_to_sip_uri;
use crate::xmpp::jingle::{
    self, Action, Jingle, JingleErrorCondition, Party, Reason, ReasonCondition, SessionInfo,
};
use crate::xmpp::link::{CALL_IQ_PREFIX, LinkHandle};
use crate::xmpp::stanza::{ErrorType, StanzaError, error_reply, reply};

const NS_CLIENT: &str = "jabber:component:accept";

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
}

/// One call.
struct Call {
    sid: String,
    /// The XMPP party (full JID) and our JID in the session (their `to`).
    peer: String,
    us: String,
    bridge: Bridge,
    local: BridgeLocal,
    /// Their Jingle offer (we answer in its terms) and the codecs it gave the WebRTC leg.
    offer: jingle::RtpDescription,
    content_name: String,
    content_creator: Party,
    webrtc_codecs: LegCodecs,
    /// The codecs of the SIP side's answer, once it came.
    sip_codecs: Option<LegCodecs>,
    sip: Option<RequestId>,
    sip_offer: SessionDescription,
    session: SessionVersion,
    ringing_sent: bool,
    accepted: bool,
    started: Instant,
}

type CallKey = u64;

/// Counters the admin API shows.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallStats {
    pub active: usize,
    pub started: u64,
    pub answered: u64,
    pub failed: u64,
}

pub struct CallManager {
    cfg: CallConfig,
    media: MediaEngine,
    sip: mpsc::Sender<CallCommand>,
    xmpp: LinkHandle,
    calls: HashMap<CallKey, Call>,
    by_sid: HashMap<(String, String), CallKey>,
    by_sip: HashMap<RequestId, CallKey>,
    bridge_tx: mpsc::UnboundedSender<(CallKey, BridgeEvent)>,
    next: u64,
    stats: CallStats,
}

/// XEP-0166 reason for a SIP status, with the code carried in `<text/>`.
fn sip_reason(code: u16, phrase: &str) -> Reason {
    Reason::new(jingle::sip_status_to_reason(code)).with_text(jingle::reason_text(code, phrase))
}

impl CallManager {
    pub fn new(
        cfg: CallConfig,
        media: MediaEngine,
        sip: mpsc::Sender<CallCommand>,
        xmpp: LinkHandle,
    ) -> (Self, mpsc::UnboundedReceiver<(CallKey, BridgeEvent)>) {
        let (bridge_tx, bridge_rx) = mpsc::unbounded_channel();
        (
            CallManager {
                cfg,
                media,
                sip,
                xmpp,
                calls: HashMap::new(),
                by_sid: HashMap::new(),
                by_sip: HashMap::new(),
                bridge_tx,
                next: 0,
                stats: CallStats::default(),
            },
            bridge_rx,
        )
    }

    /// Runs until `shutdown`: every call is then ended on both sides.
    pub async fn run(
        mut self,
        mut bridge_rx: mpsc::UnboundedReceiver<(CallKey, BridgeEvent)>,
        mut stanzas: mpsc::Receiver<Element>,
        mut sip_events: mpsc::UnboundedReceiver<UaEvent>,
        stats: tokio::sync::watch::Sender<CallStats>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(el) = stanzas.recv() => self.on_stanza(el).await,
                Some(ev) = sip_events.recv() => self.on_sip(ev).await,
                Some((key, ev)) = bridge_rx.recv() => self.on_bridge(key, ev).await,
            }
            self.stats.active = self.calls.len();
            let _ = stats.send(self.stats);
        }
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        for key in keys {
            self.end(
                key,
                Some(Reason::new(ReasonCondition::Gone).with_text("the gateway is shutting down")),
                Some((503, None)),
            )
            .await;
        }
    }

    fn send(&self, el: Element) {
        if let Err(e) = self.xmpp.send(el) {
            warn!("cannot queue call signalling: {e}");
        }
    }

    fn iq_id(&mut self) -> String {
        self.next += 1;
        format!("{CALL_IQ_PREFIX}{}", self.next)
    }

    async fn sip_command(&self, cmd: CallCommand) {
        if self.sip.send(cmd).await.is_err() {
            warn!("the SIP side has stopped; call command dropped");
        }
    }

    // ------------------------------------------------------------------ XMPP side

    async fn on_stanza(&mut self, el: Element) {
        match el.name() {
            "iq" => match el.attr("type") {
                Some("set") => self.on_jingle_iq(el).await,
                Some("error") => self.on_iq_error(&el).await,
                _ => {}
            },
            // JMI (XEP-0353) comes with SIP → XMPP calls; a propose for an XMPP → SIP call is
            // answered with a reject for now, so the client does not wait.
            "message" => self.on_jmi(&el),
            _ => {}
        }
    }

    fn on_jmi(&mut self, msg: &Element) {
        let Some(Ok(jmi)) = jingle::JmiMessage::from_message(msg) else {
            return;
        };
        if let jingle::JmiKind::Propose { .. } = jmi.kind {
            let (Some(from), Some(to)) = (msg.attr("from"), msg.attr("to")) else {
                return;
            };
            // We cannot ring through JMI yet: tell the client to send session-initiate
            // directly by answering with <proceed/> from a full JID of the contact.
            let us = format!("{}/gw", to.split('/').next().unwrap_or(to));
            let proceed = jingle::JmiMessage {
                kind: jingle::JmiKind::Proceed,
                id: jmi.id.clone(),
            };
            let mut m = crate::xmpp::stanza::elem(
                "message",
                NS_CLIENT,
                &[
                    ("from", Some(&us)),
                    ("to", Some(from)),
                    ("type", Some("chat")),
                ],
            );
            m.append_child(proceed.to_element());
            m.append_child(Element::bare("store", "urn:xmpp:hints"));
            self.send(m);
        }
    }

    async fn on_iq_error(&mut self, iq: &Element) {
        // An error to one of our session-* IQs: the client gave up on the session.
        let Some(id) = iq.attr("id") else { return };
        debug!(id, "error reply to call signalling");
        let from = iq.attr("from").unwrap_or_default().to_string();
        let key = self
            .calls
            .iter()
            .find(|(_, c)| c.peer == from)
            .map(|(k, _)| *k);
        if let Some(key) = key
            && !self.calls.get(&key).is_some_and(|c| c.accepted)
        {
            self.end(key, None, Some((480, Some("the XMPP client refused"))))
                .await;
        }
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
                let (code, reason) = match parsed.reason.as_ref().map(|r| &r.condition) {
                    Some(ReasonCondition::Success) | None => (487, None),
                    Some(c) => (
                        jingle::reason_to_sip_status(c),
                        Some(format!("XMPP;text=\"{}\"", c.as_str())),
                    ),
                };
                self.end_sip_only(key, code, reason).await;
            }
            (Action::TransportInfo, Some(key)) => {
                self.send(reply(&iq, "result"));
                if let Some(call) = self.calls.get(&key) {
                    for c in parsed.contents.iter().filter_map(|c| c.transport.as_ref()) {
                        for cand in c.candidates.iter().filter_map(jingle::media_candidate) {
                            if let Err(e) = call.bridge.add_webrtc_candidate(cand).await {
                                debug!("remote candidate refused: {e}");
                            }
                        }
                    }
                }
            }
            (Action::SessionInfo, Some(_)) => match parsed.info {
                Some(SessionInfo::Unsupported { .. }) => self.send(jingle::jingle_error_reply(
                    &iq,
                    JingleErrorCondition::UnsupportedInfo,
                )),
                _ => self.send(reply(&iq, "result")),
            },
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
        let terminate = |reason: Reason| {
            let mut t = Jingle::new(Action::SessionTerminate, j.sid.clone());
            t.reason = Some(reason);
            t
        };
        let remote = match jingle::remote_description(transport) {
            Ok(r) => r,
            Err(e) => {
                let t = terminate(
                    Reason::new(ReasonCondition::FailedTransport).with_text(e.to_string()),
                );
                let id = self.iq_id();
                self.send(t.to_iq(NS_CLIENT, &id, &to, &from));
                return;
            }
        };
        let webrtc_codecs = jingle::leg_codecs(desc);
        if webrtc_codecs.audio.is_empty() {
            let t = terminate(
                Reason::new(ReasonCondition::FailedApplication)
                    .with_text("no codec this gateway can use (Opus, G.722, PCMU, PCMA)"),
            );
            let id = self.iq_id();
            self.send(t.to_iq(NS_CLIENT, &id, &to, &from));
            return;
        }
        let (mut bridge, local_desc) = match self.media.create_bridge(WebRtcRole::Answerer).await {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot allocate media for a call: {e}");
                let t = terminate(
                    Reason::new(ReasonCondition::GeneralError)
                        .with_text(format!("503 Service Unavailable (media: {e})")),
                );
                let id = self.iq_id();
                self.send(t.to_iq(NS_CLIENT, &id, &to, &from));
                return;
            }
        };
        if let Err(e) = bridge
            .set_webrtc_remote(remote, webrtc_codecs.clone())
            .await
        {
            let t =
                terminate(Reason::new(ReasonCondition::FailedTransport).with_text(e.to_string()));
            let id = self.iq_id();
            self.send(t.to_iq(NS_CLIENT, &id, &to, &from));
            bridge.close().await;
            return;
        }
        self.next += 1;
        let key = self.next;
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
        let session = SessionVersion {
            id: rand::random::<u32>().into(),
            version: 1,
        };
        let prefer: Vec<_> = webrtc_codecs.audio.iter().map(|f| f.codec).collect();
        let sip_offer = sdp_media::sip_offer(&local_desc.sip, &prefer, SrtpPolicy::Plain, session);
        let caller = from.split('/').next().unwrap_or(&from).to_string();
        let (from_user, from_display) = match self.cfg.caller_id {
            CallerId::Account => (None, Some(caller.clone())),
            CallerId::Mapped => (
                Some(caller.replacen('@', &self.cfg.separator.to_string(), 1)),
                None,
            ),
        };
        let (tx, rx) = oneshot::channel();
        self.sip_command(CallCommand::Invite {
            uri: uri.clone(),
            from_user,
            from_display,
            sdp: sip_offer.to_string().into_bytes(),
            reply: tx,
        })
        .await;
        let sip_id = match rx.await {
            Ok(Ok(id)) => id,
            failure => {
                let why = match failure {
                    Ok(Err(e)) => e,
                    _ => "the SIP side has stopped".to_string(),
                };
                warn!(%uri, %why, "cannot send the INVITE");
                let t = terminate(
                    Reason::new(ReasonCondition::GeneralError).with_text(format!("500 {why}")),
                );
                let id = self.iq_id();
                self.send(t.to_iq(NS_CLIENT, &id, &to, &from));
                bridge.close().await;
                return;
            }
        };
        info!(sid = %j.sid, %from, %uri, "call XMPP → SIP started");
        self.stats.started += 1;
        self.by_sid.insert((from.clone(), j.sid.clone()), key);
        self.by_sip.insert(sip_id, key);
        self.calls.insert(
            key,
            Call {
                sid: j.sid.clone(),
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
                sip_offer,
                session,
                ringing_sent: false,
                accepted: false,
                started: Instant::now(),
            },
        );
    }

    // ------------------------------------------------------------------ SIP side

    async fn on_sip(&mut self, ev: UaEvent) {
        match ev {
            UaEvent::Incoming { id, from, to, .. } => {
                // SIP → XMPP calls (JMI propose, session-initiate) are the next step.
                info!(%from, %to, "incoming SIP call refused: calls to XMPP users are not bridged yet");
                self.sip_command(CallCommand::Reject {
                    id,
                    code: 480,
                    phrase: Some(
                        "Temporarily Unavailable (calls to XMPP users are not bridged yet)".into(),
                    ),
                })
                .await;
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
                    self.end(
                        key,
                        Some(
                            Reason::new(ReasonCondition::FailedApplication)
                                .with_text("488 the SIP side's answer is unusable"),
                        ),
                        Some((488, Some("SIP;cause=488;text=\"unusable SDP answer\""))),
                    )
                    .await;
                    return;
                }
                self.accept(key);
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
                telephone_event: call.webrtc_codecs.telephone_event,
            },
            Err(_) => call.webrtc_codecs.clone(),
        };
        let ssrc: u32 = rand::random();
        let cname = format!("xsg-{:08x}", rand::random::<u32>());
        let mut description = jingle::answer_description(&call.offer, &chosen, ssrc, &cname);
        description.rtcp_mux = true;
        let transport = jingle::transport_from_local(&call.local.webrtc);
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
            c.accepted = true;
        }
        self.stats.answered += 1;
        info!(
            setup_ms = elapsed.as_millis() as u64,
            "call answered: session-accept sent"
        );
    }

    /// A SIP re-INVITE (hold, new address): update the bridge, answer in kind.
    async fn on_reoffer(&mut self, key: CallKey, id: RequestId, sdp: &[u8]) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let prefer: Vec<_> = call.webrtc_codecs.audio.iter().map(|f| f.codec).collect();
        let answer = SessionDescription::parse(sdp)
            .map_err(|e| e.to_string())
            .and_then(|offer| {
                let remote = sdp_media::sip_remote_from_offer(&offer, &call.local.sip, &prefer)
                    .map_err(|e| e.to_string())?;
                call.session.version += 1;
                Ok((offer, remote, call.session))
            });
        match answer {
            Ok((offer, remote, session)) => {
                let crypto = match call.bridge.set_sip_remote(remote.clone()).await {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("re-INVITE refused by the bridge: {e}");
                        return;
                    }
                };
                match sdp_media::build_answer(
                    &offer,
                    &call.local.sip,
                    &remote,
                    crypto.as_ref(),
                    session,
                ) {
                    Ok(a) => {
                        self.sip_command(CallCommand::AnswerReinvite {
                            id,
                            sdp: a.to_string().into_bytes(),
                        })
                        .await
                    }
                    Err(e) => warn!("cannot answer the re-INVITE: {e}"),
                }
            }
            Err(e) => warn!("unusable re-INVITE: {e}"),
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
                self.end(
                    key,
                    Some(Reason::new(cond).with_text(reason)),
                    Some((503, Some(&sip_reason))),
                )
                .await;
            }
            BridgeEvent::Dtmf { from, digit, .. } => debug!(?from, %digit, "DTMF"),
            other => debug!(?other, "bridge event"),
        }
    }

    // ------------------------------------------------------------------ ending

    /// Ends a call on both sides: session-terminate with `jingle` (if the session is still
    /// ours to end) and the SIP leg with `(code, Reason header)`; frees the media.
    async fn end(
        &mut self,
        key: CallKey,
        jingle: Option<Reason>,
        sip: Option<(u16, Option<&str>)>,
    ) {
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        self.by_sid.remove(&(call.peer.clone(), call.sid.clone()));
        if let Some(r) = jingle {
            if r.condition != ReasonCondition::Success && !call.accepted {
                self.stats.failed += 1;
            }
            let mut t = Jingle::new(Action::SessionTerminate, call.sid.clone());
            t.reason = Some(r);
            let id = self.iq_id();
            self.send(t.to_iq(NS_CLIENT, &id, &call.us, &call.peer));
        }
        if let (Some(id), Some((code, reason))) = (call.sip, sip) {
            self.by_sip.remove(&id);
            self.sip_command(CallCommand::Hangup {
                id,
                code,
                reason: reason.map(str::to_string),
            })
            .await;
        }
        info!(sid = %call.sid, secs = call.started.elapsed().as_secs(), "call ended");
        call.bridge.close().await;
    }

    /// The XMPP side ended the session: end the SIP leg only.
    async fn end_sip_only(&mut self, key: CallKey, code: u16, reason: Option<String>) {
        self.end(key, None, Some((code, reason.as_deref()))).await;
    }
}
