//! One call's state machine, pure (DESIGN.md, "Seams"): Jingle on the XMPP side, a SIP dialog
//! on the other, and the commands for the media bridge between them. No I/O, no tasks, no
//! clock: every input comes with the time ([`Env`]) and the randomness it may need, and every
//! effect is an [`Output`] the driver carries out (a stanza to send, a SIP command, a media
//! command, a timer to arm, a counter to bump). The bridge answers its commands with
//! [`MediaEvent`]s, fed back as inputs: the session never waits for it.
//!
//! The phases of a call ([`Phase`]) are named as PROTOCOLS.md §2 tells the flows:
//!
//! * XMPP → SIP: [`Phase::Preparing`] (session-initiate acked, media being set up) →
//!   [`Phase::Inviting`] (the INVITE is with the SIP user agent) → [`Phase::Calling`] →
//!   [`Phase::Ringing`] (180/183 told as `<ringing/>`) → [`Phase::Connecting`] (200 came, the
//!   bridge takes the SIP answer) → [`Phase::Answered`] (`session-accept` sent).
//! * SIP → XMPP: [`Phase::Allocating`] (media before anyone rings) → [`Phase::Proposing`]
//!   (XEP-0353 `<propose/>` to every device) → [`Phase::Initiated`] (`session-initiate` to the
//!   device that proceeded) → [`Phase::Accepting`] (`session-accept` came, the bridge takes both
//!   sides) → [`Phase::Answered`] (200 sent).
//! * An answered call's hold ([`Hold`]): [`OurHold::HeldByUs`] when the XMPP party's hold
//!   was agreed by the phone (our re-INVITE), [`PhoneHold::HeldByPhone`] when the phone holds us.
//!
//! What this module must not touch: sockets, tokio, the wall clock, a random generator — the driver
//! (`manager.rs`) and the engine (`engine.rs`) own those.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use minidom::Element;
use tracing::{debug, info, warn};

use super::jingle_media::{
    DEFAULT_OFFER_CODECS, DEFAULT_TELEPHONE_EVENT, answer_description, leg_codecs, media_candidate,
    offer_description, remote_description, transport_from_local,
};
use super::reason::{reason_to_sip_status, sip_reason, sip_status_to_reason};
use super::sdp_media::{self, SessionVersion, SrtpPolicy};
use crate::media::bridge::{
    BridgeEvent, BridgeLocal, Direction as LegDirection, LegCodecs, LegKind, SipRemote, WebRtcRole,
    plan,
};
use crate::media::codec::Codec;
use crate::media::sdes::CryptoAttribute;
use crate::media::webrtc::{Candidate, RemoteDescription};
use crate::sip::sdp::{self, SessionDescription};
use crate::sip::service::CallCommand;
use crate::sip::ua::{RequestId, UaEvent};
use crate::xmpp::jingle::{
    self, Action, Jingle, JingleErrorCondition, JmiKind, JmiMessage, Party, Reason,
    ReasonCondition, SessionInfo,
};
use crate::xmpp::router::{CALL_ID_PREFIX, CONTACT_RESOURCE};
use crate::xmpp::stanza::{ErrorType, StanzaError, elem, error_reply, reply, text_elem};

pub(crate) const NS_CLIENT: &str = "jabber:component:accept";
/// XEP-0172 user nickname: the SIP caller's display name.
const NS_NICK: &str = "http://jabber.org/protocol/nick";

/// A call's id inside the gateway: the driver's key, the tag of its INVITE, and part of the
/// ids of every IQ and message the call sends (so that their answers find it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

impl std::fmt::Display for CallKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl CallKey {
    /// The call an IQ or message id of ours belongs to (`xsg-call-<key>-…`).
    pub fn of_stanza_id(id: &str) -> Option<CallKey> {
        let rest = id.strip_prefix(CALL_ID_PREFIX)?;
        let digits = rest.split('-').next()?;
        digits.parse().ok().map(CallKey)
    }
}

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

/// The time of an input and the randomness it may use (session ids, back-off jitter); the
/// driver draws them, tests choose them.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    pub now: Instant,
    pub random: u64,
}

impl Env {
    /// A second independent-looking value from the same draw (SplitMix64's finaliser).
    fn random2(&self) -> u64 {
        let mut z = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
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

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// An XMPP user calls a SIP address.
    ToSip,
    /// A SIP caller rings an XMPP user.
    FromSip,
}

impl Way {
    pub fn as_str(self) -> &'static str {
        match self {
            Way::ToSip => "xmpp-to-sip",
            Way::FromSip => "sip-to-xmpp",
        }
    }
}

/// Whether the caller was told the callee rings (`<ringing/>` or 180): once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    Silent,
    Ringing,
}

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    // XMPP → SIP
    /// The caller's session-initiate was acked; the bridge is being made (ports, candidates,
    /// DTLS certificate) and given the caller's transport.
    Preparing,
    /// The INVITE is with the SIP user agent (its request id comes back).
    Inviting,
    /// The INVITE is out; nothing from the far end yet.
    Calling,
    /// 180/183 came; the caller was told `<ringing/>`.
    Ringing,
    /// 200 came (ACKed by the user agent); the bridge takes the SIP answer, then
    /// session-accept.
    Connecting,
    // SIP → XMPP
    /// The INVITE is checked; the bridge is being made before anyone rings.
    Allocating,
    /// `<propose/>` went to every device of the callee; waiting for one to proceed.
    Proposing(Alert),
    /// session-initiate went to one device (that proceeded, or that does not do JMI).
    Initiated(Alert),
    /// The device's session-accept came; the bridge takes both legs, then 200.
    Accepting,
    // both
    /// Talking (or on hold, see [`Hold`]).
    Answered,
    /// Over: nothing more comes out of this session.
    Ended,
}

/// The XMPP party's side of hold, as the phone agreed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OurHold {
    Talking,
    /// Our hold re-INVITE (`sendonly`) was answered 2xx.
    HeldByUs,
}

/// The phone's side of hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneHold {
    Talking,
    /// The phone's last offer left us receiving only, or nothing (told to the XMPP party as
    /// session-info `<hold/>`).
    HeldByPhone,
}

/// Hold in both directions (RFC 3264 §8.4, XEP-0167 §7.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// What the XMPP party asked for last (session-info hold/active, content-modify); may be
    /// asked before the call is answered, and is then carried out once it is.
    pub wanted: OurHold,
    /// What the phone last agreed to.
    pub agreed: OurHold,
    pub phone: PhoneHold,
    /// Our re-INVITE waiting for its final answer, and the hold state it asks for: one at a
    /// time.
    reinvite: Option<(SessionDescription, OurHold)>,
}

/// Delayed work of a call; fired by [`Input::Timer`] at the deadline of [`Output::Timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// `calls.ring_timeout` is up.
    Ring,
    /// Try the hold/resume re-INVITE again (after 491 glare or 500, RFC 3261 §14.1).
    Resync,
}

/// Why the bridge was asked something: its answer comes back with it.
#[derive(Debug, Clone)]
pub enum Step {
    /// XMPP → SIP: a 183's SDP (early media); these are the SIP side's codecs.
    EarlyMedia(LegCodecs),
    /// XMPP → SIP: the 200's SDP.
    Answer(LegCodecs),
    /// SIP → XMPP: the callee's session-accept (the WebRTC leg, then the caller's offer as
    /// remote).
    Accept(Box<SipRemote>),
    /// The phone's re-INVITE.
    Reoffer,
    /// The answer to our re-INVITE.
    ReinviteAnswer,
}

/// What the call asks of its bridge. The driver keeps one bridge per call and carries these
/// out in order.
#[derive(Debug, Clone)]
pub enum MediaCommand {
    /// Make the bridge (ports, ICE candidates, DTLS certificate) and, for a call we answer on
    /// the WebRTC side, apply the peer's transport and codecs; answered by
    /// [`MediaEvent::Created`].
    Create {
        role: WebRtcRole,
        webrtc_remote: Option<(RemoteDescription, LegCodecs)>,
    },
    /// The WebRTC peer's transport and codecs; answered by [`MediaEvent::WebRtcRemoteSet`].
    SetWebRtcRemote {
        remote: RemoteDescription,
        codecs: LegCodecs,
        step: Step,
    },
    /// A trickled candidate (XEP-0176 transport-info); a refusal is only logged.
    AddCandidate(Candidate),
    /// The SIP side's media; answered by [`MediaEvent::SipRemoteSet`].
    SetSipRemote { remote: Box<SipRemote>, step: Step },
    /// Stop both legs and free the ports.
    Close,
}

/// Why a bridge could not be made.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateError {
    /// No ports, no candidates, no certificate.
    Allocate(String),
    /// The WebRTC peer's transport was refused.
    WebRtcRemote(String),
}

/// What the bridge answers (or reports by itself).
#[derive(Debug, Clone)]
pub enum MediaEvent {
    Created(Result<BridgeLocal, CreateError>),
    WebRtcRemoteSet {
        step: Step,
        result: Result<(), String>,
    },
    /// The `a=crypto` for our SDP answer when the SIP side uses SDES.
    SipRemoteSet {
        step: Step,
        result: Result<Option<CryptoAttribute>, String>,
    },
    /// Progress and failures of the running bridge.
    Bridge(BridgeEvent),
}

/// A counter to bump (`/about/stats`, `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Started(Way),
    Answered {
        setup: Duration,
    },
    /// An unanswered call ended this way (answered ones were counted when answered).
    Ended(Outcome),
}

/// What a session asks the driver to do.
#[derive(Debug, Clone)]
pub enum Output {
    Xmpp(Element),
    Sip(CallCommand),
    Media(MediaCommand),
    Timer { timer: Timer, at: Instant },
    Stat(Stat),
}

/// One input for a session; the driver has found the session it belongs to.
#[derive(Debug)]
pub enum Input {
    /// A Jingle IQ set of this session (not session-initiate: that makes a session).
    Jingle {
        iq: Element,
        jingle: Jingle,
    },
    /// A JMI answer to our propose, from `from` (a full JID).
    Jmi {
        from: String,
        jmi: JmiMessage,
    },
    /// An error reply to one of our IQs (`id`) from `from`.
    IqError {
        from: String,
        id: String,
    },
    /// A message of ours (`id`) bounced: the callee's server said `condition`.
    ProposeBounced {
        from: String,
        id: String,
        condition: String,
    },
    /// The XMPP device of the call went unavailable.
    DeviceGone,
    /// The SIP user agent: the INVITE we asked for went out (request id, Call-ID) or not.
    InviteSent(Result<(RequestId, String), String>),
    /// The SIP user agent's news of this call.
    Sip(UaEvent),
    Media(MediaEvent),
    Timer(Timer),
    /// The component link is lost: nothing said to or by the XMPP party can be trusted.
    LinkLost,
    /// The gateway stops.
    Shutdown,
}

/// How to end the SIP leg: the final response to an unanswered incoming INVITE (`code`,
/// `phrase`), or CANCEL / BYE with an RFC 3326 `Reason` header for ours and answered ones.
#[derive(Debug, Clone)]
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

/// Which way, and what only that way needs.
#[derive(Debug)]
enum Dir {
    ToSip {
        /// The Request-URI.
        uri: String,
        /// Whether the caller was told `<ringing/>` (kept across a second INVITE).
        alert: Alert,
        /// `calls.caller_id = mapped`: set while the INVITE goes out with the mapped From; if
        /// the SIP side refuses that From (401/403/407) the call is placed again as the
        /// account.
        mapped: bool,
    },
    FromSip {
        /// The callee's bare JID (where the propose went; only its devices may answer).
        callee: String,
        /// Its devices that do Jingle but not JMI: one gets session-initiate at once.
        direct: Option<String>,
        /// The caller's display name (XEP-0172 nick in presence and propose).
        nick: Option<String>,
        /// The id of our propose message: only its bounce means the callee's server refused.
        propose_id: Option<String>,
    },
}

/// The phone's re-INVITE, while the bridge takes its offer.
#[derive(Debug)]
struct PendingReoffer {
    id: RequestId,
    offer: SessionDescription,
    remote: SipRemote,
    /// Our direction as the phone's offer asks it (before our own hold is applied).
    theirs: LegDirection,
    session: SessionVersion,
}

/// One call.
#[derive(Debug)]
pub struct Session {
    key: CallKey,
    sid: String,
    dir: Dir,
    phase: Phase,
    /// The XMPP party (full JID once known; the callee's bare JID while proposing) and our JID
    /// in the session (the contact, `…/gw`).
    peer: String,
    us: String,
    /// Asked for (a `Close` is due when the call ends).
    bridge_asked: bool,
    local: Option<BridgeLocal>,
    /// The Jingle offer: theirs (we answer in its terms) or ours (SIP → XMPP, made once the
    /// bridge tells its SSRC).
    offer: Option<jingle::RtpDescription>,
    content_name: String,
    content_creator: Party,
    /// The WebRTC leg's codecs: their offer's, or (SIP → XMPP) their answer's.
    webrtc_codecs: LegCodecs,
    /// The codecs of the SIP side's answer, once it came (XMPP → SIP).
    sip_codecs: Option<LegCodecs>,
    sip: Option<RequestId>,
    /// The SIP leg's offer: ours (XMPP → SIP) or the caller's (SIP → XMPP).
    sip_offer: Option<SessionDescription>,
    /// The last SDP we sent on the SIP leg (offer or answer): a re-INVITE starts from it.
    sip_local: Option<SessionDescription>,
    session: SessionVersion,
    /// The id of our session-initiate / session-accept: an error to it ends the call.
    session_iq: Option<String>,
    hold: Hold,
    reoffer: Option<PendingReoffer>,
    started: Instant,
    /// Counted as started (only such calls count an outcome).
    counted: bool,
    /// How it ended, when the code that ends it knows better than the reason says.
    outcome: Option<Outcome>,
    next_id: u64,
    out: VecDeque<Output>,
}

fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// A `<message/>` carrying one JMI element (XEP-0353), with the hints that keep it out of
/// message archives but let it reach every device (and offline storage: a missed call).
pub(crate) fn jmi_message(from: &str, to: &str, id: Option<&str>, jmi: JmiMessage) -> Element {
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

impl Session {
    fn new(key: CallKey, sid: String, dir: Dir, peer: String, us: String, env: &Env) -> Self {
        Session {
            key,
            sid,
            dir,
            phase: Phase::Ended,
            peer,
            us,
            bridge_asked: false,
            local: None,
            offer: None,
            content_name: "audio".into(),
            content_creator: Party::Initiator,
            webrtc_codecs: LegCodecs::default(),
            sip_codecs: None,
            sip: None,
            sip_offer: None,
            sip_local: None,
            session: SessionVersion {
                id: (env.random2() as u32).into(),
                version: 1,
            },
            session_iq: None,
            hold: Hold {
                wanted: OurHold::Talking,
                agreed: OurHold::Talking,
                phone: PhoneHold::Talking,
                reinvite: None,
            },
            reoffer: None,
            started: env.now,
            counted: false,
            outcome: None,
            next_id: 0,
            out: VecDeque::new(),
        }
    }

    /// An XMPP user's session-initiate to a contact (PROTOCOLS.md §2.2, §2.3: ack first, then
    /// work). Refusals are answered at once and leave the session [`Phase::Ended`].
    pub fn to_sip(
        key: CallKey,
        iq: &Element,
        j: Jingle,
        cfg: &CallConfig,
        draining: bool,
        env: &Env,
    ) -> Session {
        let from = iq.attr("from").unwrap_or_default().to_string();
        let to = iq.attr("to").unwrap_or_default().to_string();
        let local = to.split('@').next().unwrap_or_default();
        let uri = crate::xmpp::address::contact_to_sip_uri(local, cfg.separator, &cfg.sip_domain);
        let mapped = cfg.caller_id == CallerId::Mapped;
        let mut s = Session::new(
            key,
            j.sid.clone(),
            Dir::ToSip {
                uri: uri.clone().unwrap_or_default(),
                alert: Alert::Silent,
                mapped,
            },
            from,
            to.clone(),
            env,
        );
        let Some(content) = j
            .contents
            .iter()
            .find(|c| c.description.as_ref().is_some_and(|d| d.media == "audio"))
        else {
            s.xmpp(error_reply(
                iq,
                &StanzaError::bad_request("no audio content: this gateway carries voice calls"),
            ));
            return s;
        };
        let (Some(desc), Some(transport)) = (&content.description, &content.transport) else {
            s.xmpp(error_reply(
                iq,
                &StanzaError::bad_request(
                    "the audio content needs an RTP description and an ICE-UDP transport",
                ),
            ));
            return s;
        };
        if uri.is_none() {
            s.xmpp(error_reply(
                iq,
                &StanzaError::new(ErrorType::Cancel, "item-not-found").with_text(format!(
                    "{to} is not a SIP address or phone number: use +15551234567@{c} or user{sep}sip.example.com@{c}",
                    c = cfg.component,
                    sep = cfg.separator
                )),
            ));
            return s;
        }
        s.xmpp(reply(iq, "result"));
        // From here on the caller knows the session: every refusal is a session-terminate.
        s.phase = Phase::Preparing;
        if draining {
            s.terminate_now(
                Reason::new(ReasonCondition::Gone)
                    .with_text("503 Service Unavailable (the gateway is shutting down)"),
            );
            return s;
        }
        let remote = match remote_description(transport) {
            Ok(r) => r,
            Err(e) => {
                s.terminate_now(
                    Reason::new(ReasonCondition::FailedTransport).with_text(e.to_string()),
                );
                return s;
            }
        };
        let webrtc_codecs = leg_codecs(desc);
        if webrtc_codecs.audio.is_empty() {
            s.terminate_now(
                Reason::new(ReasonCondition::FailedApplication)
                    .with_text("no codec this gateway can use (Opus, G.722, PCMU, PCMA)"),
            );
            return s;
        }
        s.offer = Some(desc.clone());
        s.content_name = content.name.clone();
        s.content_creator = content.creator;
        s.webrtc_codecs = webrtc_codecs.clone();
        s.bridge_asked = true;
        s.media(MediaCommand::Create {
            role: WebRtcRole::Answerer,
            webrtc_remote: Some((remote, webrtc_codecs)),
        });
        s
    }

    /// A SIP caller dials an XMPP user: check what we can before ringing anyone (PROTOCOLS.md
    /// §2.4), then make the bridge. `callee` is the mapped JID (`None`: the address names no
    /// XMPP user); `caller` the caller's JID at the gateway; `direct` a device of the callee
    /// to send session-initiate to at once (one that does Jingle but not JMI).
    #[allow(clippy::too_many_arguments)]
    pub fn from_sip(
        key: CallKey,
        id: RequestId,
        callee: Option<String>,
        caller: String,
        nick: Option<String>,
        sdp: &[u8],
        direct: Option<String>,
        cfg: &CallConfig,
        refuse: Option<(u16, &str)>,
        env: &Env,
    ) -> Session {
        let sid = format!("xsg{:016x}", env.random);
        let us = format!("{caller}/{CONTACT_RESOURCE}");
        let mut s = Session::new(
            key,
            sid,
            Dir::FromSip {
                callee: callee.clone().unwrap_or_default(),
                direct: direct.clone(),
                nick: nick.filter(|n| !n.is_empty()),
                propose_id: None,
            },
            direct.unwrap_or_else(|| callee.clone().unwrap_or_default()),
            us,
            env,
        );
        s.sip = Some(id);
        let sep = cfg.separator;
        let reject = |s: &mut Session, code: u16, phrase: String| {
            s.sip_cmd(CallCommand::Reject {
                id,
                code,
                phrase: Some(phrase),
            });
        };
        if let Some((code, phrase)) = refuse {
            reject(&mut s, code, phrase.to_string());
            return s;
        }
        let Some(callee) = callee else {
            reject(
                &mut s,
                404,
                format!(
                    "Not Found (dial an XMPP user as user{sep}xmpp-domain, e.g. juliet{sep}example.com)"
                ),
            );
            return s;
        };
        let callee_domain = callee.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if callee_domain.eq_ignore_ascii_case(&cfg.component) {
            // Our own contacts are SIP addresses: calling them from SIP would loop.
            reject(
                &mut s,
                482,
                format!("Loop Detected ({callee} is a SIP address behind this gateway)"),
            );
            return s;
        }
        if sdp.is_empty() {
            reject(
                &mut s,
                488,
                "Not Acceptable Here (an INVITE without an SDP offer is not supported)".into(),
            );
            return s;
        }
        match SessionDescription::parse(sdp) {
            Ok(o) => s.sip_offer = Some(o),
            Err(e) => {
                reject(&mut s, 400, format!("Bad Request (SDP: {e})"));
                return s;
            }
        }
        s.phase = Phase::Allocating;
        s.bridge_asked = true;
        s.media(MediaCommand::Create {
            role: WebRtcRole::Offerer,
            webrtc_remote: None,
        });
        s
    }

    // ------------------------------------------------------------------ accessors

    pub fn key(&self) -> CallKey {
        self.key
    }
    pub fn sid(&self) -> &str {
        &self.sid
    }
    pub fn way(&self) -> Way {
        match self.dir {
            Dir::ToSip { .. } => Way::ToSip,
            Dir::FromSip { .. } => Way::FromSip,
        }
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn hold(&self) -> &Hold {
        &self.hold
    }
    pub fn is_over(&self) -> bool {
        self.phase == Phase::Ended
    }
    /// The XMPP device of the call, once there is one (a full JID).
    pub fn peer(&self) -> &str {
        &self.peer
    }
    /// The Jingle session's key for incoming IQs, (peer, sid), once the peer knows it.
    pub fn jingle_key(&self) -> Option<(&str, &str)> {
        let known = match self.dir {
            Dir::ToSip { .. } => true,
            Dir::FromSip { .. } => matches!(
                self.phase,
                Phase::Initiated(_) | Phase::Accepting | Phase::Answered
            ),
        };
        (known && !self.is_over()).then_some((self.peer.as_str(), self.sid.as_str()))
    }
    /// The SIP user agent's id of the call's INVITE, while it has one.
    pub fn sip_id(&self) -> Option<RequestId> {
        self.sip
    }
    /// The JMI id of our propose (SIP → XMPP): the callee's devices answer with it.
    pub fn jmi_id(&self) -> Option<&str> {
        matches!(self.dir, Dir::FromSip { .. }).then_some(self.sid.as_str())
    }

    /// Our INVITE is with the SIP user agent and its request id has not come back: if the
    /// call ends now, that INVITE must be cancelled once it does.
    pub fn invite_in_flight(&self) -> bool {
        self.phase == Phase::Inviting
    }

    /// The next thing to do, until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Everything to do, at once: the queue goes with it, so that a call does not keep the
    /// room its busiest moment needed for as long as it lasts.
    pub fn take_outputs(&mut self) -> VecDeque<Output> {
        std::mem::take(&mut self.out)
    }

    fn xmpp(&mut self, el: Element) {
        self.out.push_back(Output::Xmpp(el));
    }
    fn sip_cmd(&mut self, c: CallCommand) {
        self.out.push_back(Output::Sip(c));
    }
    fn media(&mut self, c: MediaCommand) {
        self.out.push_back(Output::Media(c));
    }
    fn stat(&mut self, s: Stat) {
        self.out.push_back(Output::Stat(s));
    }
    fn answered(&self) -> bool {
        self.phase == Phase::Answered
    }
    fn inbound(&self) -> bool {
        matches!(self.dir, Dir::FromSip { .. })
    }

    /// A fresh id for an IQ or message of this call (its answers are routed back by it).
    fn stanza_id(&mut self) -> String {
        self.next_id += 1;
        format!("{CALL_ID_PREFIX}{}-{}", self.key, self.next_id)
    }

    fn send_jingle(&mut self, j: Jingle) -> String {
        let id = self.stanza_id();
        let iq = j.to_iq(NS_CLIENT, &id, &self.us, &self.peer);
        self.xmpp(iq);
        id
    }

    /// A session-terminate for a call that never got further than the caller's
    /// session-initiate (nothing else to end).
    fn terminate_now(&mut self, reason: Reason) {
        let mut t = Jingle::new(Action::SessionTerminate, self.sid.clone());
        t.reason = Some(reason);
        self.send_jingle(t);
        self.phase = Phase::Ended;
    }

    // ------------------------------------------------------------------ inputs

    /// Feeds one input; the effects are queued for [`Self::poll_output`].
    pub fn handle(&mut self, input: Input, cfg: &CallConfig, env: &Env) {
        // The engine drops a session once it is over: nothing reaches it afterwards.
        if self.is_over() {
            return;
        }
        match input {
            Input::Jingle { iq, jingle } => self.on_jingle(iq, jingle),
            Input::Jmi { from, jmi } => self.on_jmi(&from, jmi),
            Input::IqError { from, id } => self.on_iq_error(&from, &id),
            Input::ProposeBounced {
                from,
                id,
                condition,
            } => self.on_bounce(&from, &id, &condition),
            Input::DeviceGone => {
                info!(peer = %self.peer, "the XMPP device of a call went offline; ending the call");
                let end = SipEnd::code(480)
                    .phrase("Temporarily Unavailable (the XMPP user went offline)")
                    .reason("XMPP;text=\"the XMPP user went offline\"");
                self.fail(None, Some(end));
            }
            Input::InviteSent(r) => self.on_invite_sent(r),
            Input::Sip(ev) => self.on_sip(ev, cfg, env),
            Input::Media(ev) => self.on_media(ev, cfg, env),
            Input::Timer(Timer::Ring) => self.on_ring_timeout(),
            Input::Timer(Timer::Resync) => self.sync_hold(),
            Input::LinkLost => self.fail(
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
            ),
            Input::Shutdown => self.end(
                Some(Reason::new(ReasonCondition::Gone).with_text("the gateway is shutting down")),
                Some(
                    SipEnd::code(503).phrase("Service Unavailable (the gateway is shutting down)"),
                ),
            ),
        }
    }

    // ------------------------------------------------------------------ XMPP side

    fn on_jingle(&mut self, iq: Element, j: Jingle) {
        match j.action {
            Action::SessionInitiate => self.xmpp(jingle::jingle_error_reply(
                &iq,
                JingleErrorCondition::OutOfOrder,
            )),
            Action::SessionTerminate => {
                self.xmpp(reply(&iq, "result"));
                // An XMPP callee hanging up before answering declines; an XMPP caller doing
                // so cancels.
                let inbound = self.inbound();
                let sip = match j.reason.as_ref().map(|r| &r.condition) {
                    Some(ReasonCondition::Success) | None if inbound => SipEnd::code(603),
                    Some(ReasonCondition::Success) | None => SipEnd::code(487),
                    Some(c) => SipEnd::code(reason_to_sip_status(c))
                        .reason(format!("XMPP;text=\"{}\"", c.as_str())),
                };
                self.end(None, Some(sip));
            }
            Action::SessionAccept if matches!(self.phase, Phase::Initiated(_)) => {
                self.xmpp(reply(&iq, "result"));
                self.on_session_accept(j);
            }
            Action::TransportInfo => {
                self.xmpp(reply(&iq, "result"));
                let cands: Vec<Candidate> = j
                    .contents
                    .iter()
                    .filter_map(|c| c.transport.as_ref())
                    .flat_map(|t| t.candidates.iter().filter_map(media_candidate))
                    .collect();
                for c in cands {
                    self.media(MediaCommand::AddCandidate(c));
                }
            }
            Action::SessionInfo => match j.info {
                Some(SessionInfo::Unsupported { .. }) => self.xmpp(jingle::jingle_error_reply(
                    &iq,
                    JingleErrorCondition::UnsupportedInfo,
                )),
                Some(SessionInfo::Ringing) => {
                    // XEP-0167 §7.2: the callee's device rings (a session-initiate without JMI).
                    self.xmpp(reply(&iq, "result"));
                    self.ring_sip();
                }
                Some(info @ (SessionInfo::Hold | SessionInfo::Unhold | SessionInfo::Active)) => {
                    self.xmpp(reply(&iq, "result"));
                    self.set_hold(info == SessionInfo::Hold);
                }
                _ => self.xmpp(reply(&iq, "result")),
            },
            Action::ContentModify => {
                // XEP-0166 §7.2.5: senders changed; anything but both ways is a hold.
                self.xmpp(reply(&iq, "result"));
                if let Some(c) = j.contents.first() {
                    let hold = c.senders != jingle::Senders::Both;
                    self.set_hold(hold);
                }
            }
            // Jitsi source-add/remove and the rest: accepted; they change nothing on the SIP
            // side.
            _ => self.xmpp(reply(&iq, "result")),
        }
    }

    fn on_jmi(&mut self, from: &str, jmi: JmiMessage) {
        let Dir::FromSip { callee, .. } = &self.dir else {
            return;
        };
        if !bare(from).eq_ignore_ascii_case(callee) {
            warn!(%from, %callee, "JMI answer from someone other than the callee; ignored");
            return;
        }
        let proposing = matches!(self.phase, Phase::Proposing(_));
        match jmi.kind {
            JmiKind::Ringing => self.ring_sip(),
            JmiKind::Proceed => {
                let Phase::Proposing(alert) = self.phase else {
                    // Another device of the callee proceeded first (or a repeat): the session
                    // is with the first one.
                    debug!(%from, "late <proceed/>; the call went to another device");
                    return;
                };
                self.peer = from.to_string();
                self.phase = Phase::Initiated(alert);
                self.initiate();
            }
            JmiKind::Reject { reason } => {
                let busy = reason
                    .as_ref()
                    .is_some_and(|r| r.condition == ReasonCondition::Busy);
                let code = if busy { 486 } else { 603 };
                if !proposing {
                    // A session is under way with the device that proceeded: only it may end
                    // the call, and then its session ends too.
                    if from != self.peer {
                        debug!(%from, "<reject/> from another device after a proceed; ignored");
                        return;
                    }
                    let cond = if busy {
                        ReasonCondition::Busy
                    } else {
                        ReasonCondition::Decline
                    };
                    info!(%from, code, "the XMPP user rejected the call");
                    self.end(Some(Reason::new(cond)), Some(SipEnd::code(code)));
                    return;
                }
                info!(%from, code, "the XMPP user rejected the call");
                // No retract: the reject already told the callee's other devices (carbons).
                self.end(None, Some(SipEnd::code(code)));
            }
            // <accept/> (legacy, to one's own bare JID), <retract/> and <finish/> from the
            // callee carry nothing for us: the session's own actions end it.
            _ => {}
        }
    }

    /// Only an error to the IQ that opens the session for the peer (our session-initiate or
    /// session-accept) means it refused the call; errors to session-info and the like change
    /// nothing.
    fn on_iq_error(&mut self, from: &str, id: &str) {
        if self.session_iq.as_deref() != Some(id) || from != self.peer {
            debug!(id, "error reply to call signalling; ignored");
            return;
        }
        info!(%from, "the XMPP client refused the session; ending the call");
        self.fail(
            None,
            Some(
                SipEnd::code(480)
                    .phrase("Temporarily Unavailable (the XMPP client refused the session)")
                    .reason("XMPP;text=\"the XMPP client refused the session\""),
            ),
        );
    }

    /// An error bounce of our propose: the callee's server refused the message. Only a bounce
    /// from the callee's side while still proposing means anything.
    fn on_bounce(&mut self, from: &str, id: &str, condition: &str) {
        let Dir::FromSip {
            callee, propose_id, ..
        } = &self.dir
        else {
            return;
        };
        if !matches!(self.phase, Phase::Proposing(_))
            || propose_id.as_deref() != Some(id)
            || !bare(from).eq_ignore_ascii_case(callee)
        {
            return;
        }
        info!(%condition, "the callee's server refused the call's propose");
        let (code, text) = match condition {
            "item-not-found" | "remote-server-not-found" | "jid-malformed" => (404, "Not Found"),
            _ => (480, "Temporarily Unavailable"),
        };
        // Nothing to retract: the propose never arrived.
        self.fail(
            None,
            Some(SipEnd::code(code).phrase(format!("{text} (the XMPP server said {condition})"))),
        );
    }

    /// The XMPP callee's device rings (JMI `<ringing/>` or session-info): 180 to the SIP
    /// caller, once.
    fn ring_sip(&mut self) {
        let (Phase::Proposing(alert) | Phase::Initiated(alert)) = &mut self.phase else {
            return;
        };
        if *alert == Alert::Ringing {
            return;
        }
        *alert = Alert::Ringing;
        if let Some(id) = self.sip {
            self.sip_cmd(CallCommand::Ring {
                id,
                code: 180,
                sdp: None,
            });
        }
    }

    /// A device of the callee proceeded (or does not do JMI): send it our session-initiate.
    fn initiate(&mut self) {
        let (Some(offer), Some(local)) = (&self.offer, &self.local) else {
            return;
        };
        let mut init = Jingle::new(Action::SessionInitiate, self.sid.clone());
        init.initiator = Some(self.us.clone());
        init.contents = vec![jingle::Content {
            creator: Party::Initiator,
            name: self.content_name.clone(),
            senders: jingle::Senders::Both,
            description: Some(offer.clone()),
            transport: Some(transport_from_local(&local.webrtc)),
        }];
        init.group_bundle = Some(vec![self.content_name.clone()]);
        debug!(peer = %self.peer, "session-initiate to the callee's device");
        let id = self.send_jingle(init);
        self.session_iq = Some(id);
    }

    /// The XMPP callee accepted: the bridge gets the WebRTC leg and the caller's offer; the
    /// 200 goes once it has them ([`Step::Accept`]).
    fn on_session_accept(&mut self, j: Jingle) {
        let content = j
            .contents
            .iter()
            .find(|c| c.name == self.content_name)
            .or_else(|| j.contents.first());
        let parts = content.and_then(|c| Some((c.description.as_ref()?, c.transport.as_ref()?)));
        let Some((desc, transport)) = parts else {
            self.fail_accept("the session-accept has no audio description and transport");
            return;
        };
        // Only what we offered counts: the answer uses our payload type numbers.
        let offered = self
            .offer
            .as_ref()
            .map(|o| &o.payload_types[..])
            .unwrap_or(&[]);
        let mut webrtc_codecs = leg_codecs(desc);
        webrtc_codecs
            .audio
            .retain(|f| offered.iter().any(|p| p.id == f.pt));
        if webrtc_codecs.audio.is_empty() {
            self.fail_accept("the session-accept chose no codec we offered");
            return;
        }
        let remote = match remote_description(transport) {
            Ok(r) => r,
            Err(e) => {
                self.fail_accept(&e.to_string());
                return;
            }
        };
        // The SIP answer: the codec the client chose first, if the caller has it
        // (passthrough), else the caller's order (transcoding).
        let prefer: Vec<Codec> = webrtc_codecs.audio.iter().map(|f| f.codec).collect();
        let (Some(offer), Some(local)) = (&self.sip_offer, &self.local) else {
            return;
        };
        let sip_remote = match sdp_media::sip_remote_from_offer(offer, &local.sip, &prefer) {
            Ok(r) => r,
            Err(e) => {
                self.fail_accept(&e.to_string());
                return;
            }
        };
        self.webrtc_codecs = webrtc_codecs.clone();
        self.phase = Phase::Accepting;
        self.media(MediaCommand::SetWebRtcRemote {
            remote,
            codecs: webrtc_codecs,
            step: Step::Accept(Box::new(sip_remote.clone())),
        });
        self.media(MediaCommand::SetSipRemote {
            remote: Box::new(sip_remote.clone()),
            step: Step::Accept(Box::new(sip_remote)),
        });
    }

    /// The callee's session-accept cannot be used: end both sides.
    fn fail_accept(&mut self, why: &str) {
        warn!(%why, "unusable session-accept");
        self.fail(
            Some(Reason::new(ReasonCondition::FailedApplication).with_text(why.to_string())),
            Some(SipEnd::code(488).phrase(format!("Not Acceptable Here ({why})"))),
        );
    }

    /// Nobody answered within `calls.ring_timeout`.
    fn on_ring_timeout(&mut self) {
        // Accepting: the callee answered; the bridge is taking the answer.
        if matches!(self.phase, Phase::Answered | Phase::Accepting) {
            return;
        }
        info!("no answer within calls.ring_timeout; the caller gets 480");
        self.end(
            Some(Reason::new(ReasonCondition::Timeout).with_text("no answer")),
            Some(SipEnd::code(480).phrase("Temporarily Unavailable (no answer)")),
        );
    }

    // ------------------------------------------------------------------ media

    fn on_media(&mut self, ev: MediaEvent, cfg: &CallConfig, env: &Env) {
        match ev {
            MediaEvent::Created(Ok(local)) => self.on_created(local, cfg, env),
            MediaEvent::Created(Err(e)) => {
                // The bridge is gone already; nothing to close.
                self.bridge_asked = false;
                match (e, &self.dir) {
                    (CreateError::Allocate(e), Dir::ToSip { .. }) => {
                        warn!("cannot allocate media for a call: {e}");
                        self.end(
                            Some(
                                Reason::new(ReasonCondition::GeneralError)
                                    .with_text(format!("503 Service Unavailable (media: {e})")),
                            ),
                            None,
                        );
                    }
                    (CreateError::WebRtcRemote(e), Dir::ToSip { .. }) => self.end(
                        Some(Reason::new(ReasonCondition::FailedTransport).with_text(e)),
                        None,
                    ),
                    (
                        CreateError::Allocate(e) | CreateError::WebRtcRemote(e),
                        Dir::FromSip { .. },
                    ) => {
                        warn!("cannot allocate media for a call: {e}");
                        self.end(
                            None,
                            Some(
                                SipEnd::code(503)
                                    .phrase(format!("Service Unavailable (media: {e})")),
                            ),
                        );
                    }
                }
            }
            MediaEvent::WebRtcRemoteSet { step, result } => {
                if let (Step::Accept(_), Err(e)) = (&step, &result)
                    && self.phase == Phase::Accepting
                {
                    self.fail_accept(e);
                }
            }
            MediaEvent::SipRemoteSet { step, result } => self.on_sip_remote_set(step, result, env),
            MediaEvent::Bridge(BridgeEvent::Failed {
                leg: LegKind::WebRtc,
                reason,
            }) => {
                warn!(%reason, "WebRTC leg failed; ending the call");
                let cond = if reason.contains("fingerprint") {
                    ReasonCondition::SecurityError
                } else {
                    ReasonCondition::ConnectivityError
                };
                let sip_reason = format!("SIP;cause=503;text=\"{}\"", reason.replace('"', "'"));
                self.fail(
                    Some(Reason::new(cond).with_text(reason)),
                    Some(SipEnd::code(503).reason(sip_reason)),
                );
            }
            MediaEvent::Bridge(BridgeEvent::Dtmf { from, digit, .. }) => {
                debug!(?from, %digit, "DTMF")
            }
            MediaEvent::Bridge(other) => debug!(?other, "bridge event"),
        }
    }

    /// The bridge is there: XMPP → SIP, INVITE the SIP side with an offer that lists the WebRTC
    /// side's codecs first (so passthrough is possible); SIP → XMPP, check the caller's offer
    /// against it, then ring the callee.
    fn on_created(&mut self, local: BridgeLocal, cfg: &CallConfig, env: &Env) {
        match self.phase {
            Phase::Preparing => {
                let prefer: Vec<Codec> = self.webrtc_codecs.audio.iter().map(|f| f.codec).collect();
                let offer =
                    sdp_media::sip_offer(&local.sip, &prefer, SrtpPolicy::Plain, self.session);
                self.local = Some(local);
                self.sip_local = Some(offer.clone());
                self.sip_offer = Some(offer);
                self.place_invite(cfg, matches!(self.dir, Dir::ToSip { mapped: true, .. }));
            }
            Phase::Allocating => self.ring_callee(local, cfg, env),
            _ => {}
        }
    }

    /// INVITEs the SIP address for the XMPP caller: From is the mapped caller
    /// (`juliet*example.com@<sip domain>`) when `mapped`, else the account with the JID as
    /// display name. Its request id comes back as [`Input::InviteSent`].
    fn place_invite(&mut self, cfg: &CallConfig, mapped: bool) {
        let Dir::ToSip { uri, .. } = &self.dir else {
            return;
        };
        let caller = bare(&self.peer).to_string();
        let (from_user, from_display) = if mapped {
            (
                Some(caller.replacen('@', &cfg.separator.to_string(), 1)),
                None,
            )
        } else {
            (None, Some(caller))
        };
        let sdp = self
            .sip_offer
            .as_ref()
            .map(|o| o.to_string().into_bytes())
            .unwrap_or_default();
        let cmd = CallCommand::Invite {
            tag: self.key.0,
            uri: uri.clone(),
            from_user,
            from_display,
            sdp,
        };
        self.sip = None;
        self.phase = Phase::Inviting;
        self.sip_cmd(cmd);
    }

    fn on_invite_sent(&mut self, r: Result<(RequestId, String), String>) {
        if self.phase != Phase::Inviting {
            return;
        }
        match r {
            Ok((id, call_id)) => {
                self.sip = Some(id);
                // A second INVITE (the caller ID retry) does not ring the caller again.
                self.phase = match self.dir {
                    Dir::ToSip {
                        alert: Alert::Ringing,
                        ..
                    } => Phase::Ringing,
                    _ => Phase::Calling,
                };
                if !self.counted {
                    self.counted = true;
                    self.stat(Stat::Started(Way::ToSip));
                    let uri = match &self.dir {
                        Dir::ToSip { uri, .. } => uri.as_str(),
                        Dir::FromSip { .. } => "",
                    };
                    info!(sid = %self.sid, from = %self.peer, %uri, %call_id, "call XMPP → SIP started");
                }
            }
            Err(why) => {
                warn!(%why, "cannot send the INVITE");
                self.end(
                    Some(
                        Reason::new(ReasonCondition::GeneralError).with_text(format!("500 {why}")),
                    ),
                    None,
                );
            }
        }
    }

    /// SIP → XMPP with the bridge made: the caller's offer must carry audio we can use, then
    /// directed presence with caps (so the callee's client knows the caller takes Jingle
    /// audio, and shows a name), then the propose to every device of the callee — or
    /// session-initiate straight to a device that does Jingle but not JMI.
    fn ring_callee(&mut self, local: BridgeLocal, cfg: &CallConfig, env: &Env) {
        let Some(offer) = &self.sip_offer else { return };
        // Checked now so that nobody rings for a call that cannot carry audio.
        let sip_remote = match sdp_media::sip_remote_from_offer(offer, &local.sip, &[]) {
            Ok(r) => r,
            Err(e) => {
                info!("incoming call refused: {e}");
                let code = e.status().unwrap_or(488);
                self.end(
                    None,
                    Some(SipEnd::code(code).phrase(format!("Not Acceptable Here ({e})"))),
                );
                return;
            }
        };
        let Dir::FromSip {
            callee,
            direct,
            nick,
            ..
        } = &self.dir
        else {
            return;
        };
        let (callee, direct, nick) = (callee.clone(), direct.clone(), nick.clone());
        let mut presence = elem(
            "presence",
            NS_CLIENT,
            &[("from", Some(&self.us)), ("to", Some(&callee))],
        );
        presence.append_child(crate::xmpp::disco::contact_caps());
        if let Some(name) = &nick {
            presence.append_child(text_elem("nick", NS_NICK, name));
        }
        self.xmpp(presence);
        // Our Jingle offer: the SIP side's codecs first (so the client may pick one and spare
        // transcoding), then the rest of what WebRTC clients have.
        let mut codecs: Vec<(u8, Codec)> = Vec::new();
        for f in &sip_remote.codecs.audio {
            if let Some(&(pt, c)) = DEFAULT_OFFER_CODECS.iter().find(|(_, c)| *c == f.codec) {
                codecs.push((pt, c));
            }
        }
        for &(pt, c) in &DEFAULT_OFFER_CODECS {
            if !codecs.iter().any(|(_, have)| *have == c) {
                codecs.push((pt, c));
            }
        }
        // The SSRC and CNAME the bridge really sends with: browsers play announced SSRCs only.
        self.offer = Some(offer_description(
            &codecs,
            Some(DEFAULT_TELEPHONE_EVENT),
            local.webrtc_ssrc,
            &local.webrtc_cname,
        ));
        self.sip_codecs = Some(sip_remote.codecs);
        self.local = Some(local);
        self.out.push_back(Output::Timer {
            timer: Timer::Ring,
            at: env.now + cfg.ring_timeout,
        });
        self.counted = true;
        self.stat(Stat::Started(Way::FromSip));
        info!(sid = %self.sid, %callee, direct = ?direct, "call SIP → XMPP: ringing the XMPP user");
        match direct {
            Some(full) => {
                self.peer = full;
                self.phase = Phase::Initiated(Alert::Silent);
                self.initiate();
            }
            None => {
                let propose_id = self.stanza_id();
                let mut propose = jmi_message(
                    &self.us,
                    &callee,
                    Some(&propose_id),
                    JmiMessage {
                        kind: JmiKind::Propose {
                            media: vec!["audio".into()],
                        },
                        id: self.sid.clone(),
                    },
                );
                if let Some(name) = &nick {
                    propose.append_child(text_elem("nick", NS_NICK, name));
                }
                if let Dir::FromSip { propose_id: p, .. } = &mut self.dir {
                    *p = Some(propose_id);
                }
                self.xmpp(propose);
                self.phase = Phase::Proposing(Alert::Silent);
            }
        }
    }

    fn on_sip_remote_set(
        &mut self,
        step: Step,
        result: Result<Option<CryptoAttribute>, String>,
        env: &Env,
    ) {
        match step {
            Step::EarlyMedia(codecs) => match result {
                Ok(_) => self.sip_codecs = Some(codecs),
                Err(e) => warn!("bridge refused the SIP answer: {e}"),
            },
            Step::Answer(codecs) => {
                if self.phase != Phase::Connecting {
                    return;
                }
                match result {
                    Ok(_) => {
                        self.sip_codecs = Some(codecs);
                        self.accept(env);
                        self.sync_hold();
                    }
                    Err(e) => {
                        warn!("bridge refused the SIP answer: {e}");
                        self.fail_unusable_answer();
                    }
                }
            }
            Step::Accept(remote) => {
                if self.phase != Phase::Accepting {
                    return;
                }
                let crypto = match result {
                    Ok(c) => c,
                    Err(e) => {
                        self.fail_accept(&e);
                        return;
                    }
                };
                let (Some(offer), Some(local)) = (&self.sip_offer, &self.local) else {
                    return;
                };
                let answer = match sdp_media::build_answer(
                    offer,
                    &local.sip,
                    &remote,
                    crypto.as_ref(),
                    self.session,
                ) {
                    Ok(a) => a,
                    Err(e) => {
                        self.fail_accept(&e.to_string());
                        return;
                    }
                };
                self.sip_codecs = Some(remote.codecs.clone());
                self.sip_local = Some(answer.clone());
                self.phase = Phase::Answered;
                let Some(id) = self.sip else { return };
                self.sip_cmd(CallCommand::Answer {
                    id,
                    sdp: answer.to_string().into_bytes(),
                });
                let setup = env.now.saturating_duration_since(self.started);
                self.stat(Stat::Answered { setup });
                info!(
                    setup_ms = setup.as_millis() as u64,
                    "call SIP → XMPP answered: 200 OK sent"
                );
                self.sync_hold();
            }
            Step::Reoffer => {
                let Some(p) = self.reoffer.take() else { return };
                let answer = result.and_then(|crypto| {
                    let local = self.local.as_ref().ok_or("no media")?;
                    sdp_media::build_answer(
                        &p.offer,
                        &local.sip,
                        &p.remote,
                        crypto.as_ref(),
                        p.session,
                    )
                    .map_err(|e| e.to_string())
                });
                match answer {
                    Ok(answer) => self.answer_reoffer(p, answer),
                    Err(e) => {
                        warn!("unusable re-INVITE, refused with 488: {e}");
                        self.sip_cmd(CallCommand::RejectReinvite {
                            id: p.id,
                            code: 488,
                        });
                    }
                }
            }
            Step::ReinviteAnswer => {
                if let Err(e) = result {
                    warn!("bridge refused the re-INVITE answer: {e}");
                }
            }
        }
    }

    /// The 200's SDP cannot be used: end both sides.
    fn fail_unusable_answer(&mut self) {
        self.fail(
            Some(
                Reason::new(ReasonCondition::FailedApplication)
                    .with_text("488 the SIP side's answer is unusable"),
            ),
            Some(SipEnd::code(488).reason("SIP;cause=488;text=\"unusable SDP answer\"")),
        );
    }

    // ------------------------------------------------------------------ SIP side

    fn on_sip(&mut self, ev: UaEvent, cfg: &CallConfig, env: &Env) {
        match ev {
            UaEvent::Progress { code, sdp, .. } => {
                if let Some(sdp) = sdp
                    && let Some(remote) = self.sip_answer(&sdp)
                {
                    // Early media (183 with SDP): start the SIP leg's media now.
                    let codecs = remote.codecs.clone();
                    self.media(MediaCommand::SetSipRemote {
                        remote: Box::new(remote),
                        step: Step::EarlyMedia(codecs),
                    });
                }
                if (180..=183).contains(&code) && self.phase == Phase::Calling {
                    self.phase = Phase::Ringing;
                    if let Dir::ToSip { alert, .. } = &mut self.dir {
                        *alert = Alert::Ringing;
                    }
                    let mut info = Jingle::new(Action::SessionInfo, self.sid.clone());
                    info.info = Some(SessionInfo::Ringing);
                    self.send_jingle(info);
                }
            }
            UaEvent::Answered { sdp, .. } => {
                if !matches!(self.phase, Phase::Calling | Phase::Ringing) {
                    return;
                }
                match self.sip_answer(&sdp) {
                    Some(remote) => {
                        self.phase = Phase::Connecting;
                        let codecs = remote.codecs.clone();
                        self.media(MediaCommand::SetSipRemote {
                            remote: Box::new(remote),
                            step: Step::Answer(codecs),
                        });
                    }
                    None => self.fail_unusable_answer(),
                }
            }
            UaEvent::Reoffer { id, sdp } => self.on_reoffer(id, &sdp),
            UaEvent::ReinviteAnswered { code, sdp, .. } => {
                self.on_reinvite_answered(code, &sdp, env)
            }
            UaEvent::CallEnded {
                code,
                reason,
                bye_by_peer,
                ..
            } => {
                self.sip = None;
                if self.retry_as_account(code, cfg) {
                    return;
                }
                let jreason = if self.answered() || bye_by_peer && code < 300 {
                    Reason::new(ReasonCondition::Success)
                } else {
                    sip_reason(code, &reason)
                };
                self.end(Some(jreason), None);
            }
            UaEvent::Incoming { .. }
            | UaEvent::Registration(_)
            | UaEvent::Completed { .. }
            | UaEvent::InviteSent { .. } => {}
        }
    }

    /// The SIP side's SDP answer (in a 183 or the 200) to our offer, for the bridge; `None`
    /// (logged) when it cannot be used.
    fn sip_answer(&self, sdp: &[u8]) -> Option<SipRemote> {
        let offer = self.sip_offer.as_ref()?;
        let parsed = match SessionDescription::parse(sdp) {
            Ok(p) => p,
            Err(e) => {
                warn!("SIP answer is not SDP: {e}");
                return None;
            }
        };
        match sdp_media::sip_remote_from_answer(&parsed, offer) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!("SIP answer unusable: {e}");
                None
            }
        }
    }

    /// `calls.caller_id = mapped`: the SIP side refused our INVITE with the mapped From
    /// (`code` 401/403/407: registrars that check From against the credentials do). Places the
    /// call again as the account; true if that INVITE is on its way.
    fn retry_as_account(&mut self, code: u16, cfg: &CallConfig) -> bool {
        let Dir::ToSip { mapped, uri, .. } = &mut self.dir else {
            return false;
        };
        if !*mapped
            || !matches!(self.phase, Phase::Calling | Phase::Ringing)
            || !matches!(code, 401 | 403 | 407)
        {
            return false;
        }
        *mapped = false;
        info!(%uri, caller = %bare(&self.peer), code, "the SIP side refused the mapped caller ID; calling again as the account (calls.caller_id)");
        self.place_invite(cfg, false);
        true
    }

    /// Sends session-accept with the codec the plan picked on the WebRTC leg.
    fn accept(&mut self, env: &Env) {
        let (Some(offer), Some(local)) = (&self.offer, &self.local) else {
            return;
        };
        // The same choice the bridge makes (pure): the answer lists what will flow.
        let sip_codecs = self.sip_codecs.clone().unwrap_or_default();
        let chosen = match plan(&self.webrtc_codecs, &sip_codecs) {
            Ok(p) => LegCodecs {
                audio: vec![p.webrtc],
                // RFC 4733 §2.1: telephone-event on the chosen codec's clock, if offered.
                telephone_event: p.webrtc_event,
                ..Default::default()
            },
            Err(_) => self.webrtc_codecs.clone(),
        };
        // The SSRC and CNAME the bridge really sends with: browsers play announced SSRCs only.
        let mut description =
            answer_description(offer, &chosen, local.webrtc_ssrc, &local.webrtc_cname);
        description.rtcp_mux = true;
        let transport = transport_from_local(&local.webrtc);
        let mut accept = Jingle::new(Action::SessionAccept, self.sid.clone());
        accept.responder = Some(self.us.clone());
        accept.contents = vec![jingle::Content {
            creator: self.content_creator,
            name: self.content_name.clone(),
            senders: jingle::Senders::Both,
            description: Some(description),
            transport: Some(transport),
        }];
        accept.group_bundle = Some(vec![self.content_name.clone()]);
        let id = self.send_jingle(accept);
        self.session_iq = Some(id);
        self.phase = Phase::Answered;
        let setup = env.now.saturating_duration_since(self.started);
        self.stat(Stat::Answered { setup });
        info!(
            setup_ms = setup.as_millis() as u64,
            "call answered: session-accept sent"
        );
    }

    /// The XMPP party put the call on hold (or resumed it): tell the SIP side with a
    /// re-INVITE (`sendonly` / `sendrecv`, RFC 3264 §8.4), one at a time.
    fn set_hold(&mut self, hold: bool) {
        self.hold.wanted = if hold {
            OurHold::HeldByUs
        } else {
            OurHold::Talking
        };
        self.sync_hold();
    }

    fn sync_hold(&mut self) {
        if !self.answered() || self.hold.reinvite.is_some() || self.hold.wanted == self.hold.agreed
        {
            return;
        }
        let (Some(id), Some(last)) = (self.sip, self.sip_local.as_ref()) else {
            return;
        };
        let wanted = self.hold.wanted;
        let dir = match wanted {
            OurHold::HeldByUs => sdp::Direction::SendOnly,
            OurHold::Talking => sdp::Direction::SendRecv,
        };
        let offer = sdp_media::reoffer_with_direction(last, dir);
        let bytes = offer.to_string().into_bytes();
        self.hold.reinvite = Some((offer, wanted));
        info!(
            hold = wanted == OurHold::HeldByUs,
            "re-INVITE to the SIP side"
        );
        self.sip_cmd(CallCommand::Reinvite { id, sdp: bytes });
    }

    /// The SIP side's answer to our re-INVITE.
    fn on_reinvite_answered(&mut self, code: u16, sdp: &[u8], env: &Env) {
        let Some((offer, hold)) = self.hold.reinvite.take() else {
            return;
        };
        if code == 481 || code == 408 {
            // RFC 3261 §14.1: the dialog is gone.
            warn!(
                code,
                "re-INVITE says the SIP dialog is gone; ending the call"
            );
            self.end(
                Some(sip_reason(code, "")),
                Some(SipEnd::code(code).reason(format!("SIP;cause={code}"))),
            );
            return;
        }
        if code == 491 || code == 500 || code == 503 {
            // Glare or a busy peer (RFC 3261 §14.1): the session stays as it was; try again
            // after 2.1–4 s.
            info!(
                code,
                hold = hold == OurHold::HeldByUs,
                "re-INVITE not taken now; trying again shortly"
            );
            self.out.push_back(Output::Timer {
                timer: Timer::Resync,
                at: env.now + Duration::from_millis(2100 + env.random % 1900),
            });
            return;
        }
        if !(200..300).contains(&code) {
            // Refused for good: the session stays as it was, and we stop asking (the next
            // hold/resume from the XMPP side tries again).
            warn!(
                code,
                hold = hold == OurHold::HeldByUs,
                "the SIP side refused our re-INVITE"
            );
            self.hold.wanted = self.hold.agreed;
            return;
        }
        // The 2xx ends this offer/answer either way: what we offered is our last SDP (and its
        // version the one to go on from), even when the answer is unusable — asking again
        // would only loop.
        self.hold.agreed = hold;
        self.session.version = self.session.version.max(offer.origin.session_version);
        match SessionDescription::parse(sdp)
            .map_err(|e| e.to_string())
            .and_then(|a| sdp_media::sip_remote_from_answer(&a, &offer).map_err(|e| e.to_string()))
        {
            Ok(remote) => self.media(MediaCommand::SetSipRemote {
                remote: Box::new(remote),
                step: Step::ReinviteAnswer,
            }),
            Err(e) => warn!("unusable answer to our re-INVITE (media unchanged): {e}"),
        }
        self.sip_local = Some(offer);
        self.sync_hold();
    }

    /// A SIP re-INVITE (hold, new address): the bridge takes the new offer, then we answer in
    /// kind ([`Step::Reoffer`]).
    fn on_reoffer(&mut self, id: RequestId, sdp: &[u8]) {
        if self.reoffer.is_some() {
            // RFC 3261 §14.2: a second re-INVITE while one is being answered gets 500.
            self.sip_cmd(CallCommand::RejectReinvite { id, code: 500 });
            return;
        }
        let Some(local) = &self.local else {
            self.sip_cmd(CallCommand::RejectReinvite { id, code: 488 });
            return;
        };
        let prefer: Vec<Codec> = self.webrtc_codecs.audio.iter().map(|f| f.codec).collect();
        let session = SessionVersion {
            version: self.session.version + 1,
            ..self.session
        };
        let parsed = SessionDescription::parse(sdp)
            .map_err(|e| e.to_string())
            .and_then(|offer| {
                sdp_media::sip_remote_from_offer(&offer, &local.sip, &prefer)
                    .map(|r| (offer, r))
                    .map_err(|e| e.to_string())
            });
        let (offer, mut remote) = match parsed {
            Ok(x) => x,
            Err(e) => {
                warn!("unusable re-INVITE, refused with 488: {e}");
                self.sip_cmd(CallCommand::RejectReinvite { id, code: 488 });
                return;
            }
        };
        let theirs = remote.local_direction;
        if self.hold.agreed == OurHold::HeldByUs {
            // We hold the phone: a re-INVITE from it (a session refresh, a new address) does
            // not take the hold off.
            remote.local_direction = theirs.without_receiving();
        }
        self.media(MediaCommand::SetSipRemote {
            remote: Box::new(remote.clone()),
            step: Step::Reoffer,
        });
        self.reoffer = Some(PendingReoffer {
            id,
            offer,
            remote,
            theirs,
            session,
        });
    }

    fn answer_reoffer(&mut self, p: PendingReoffer, answer: SessionDescription) {
        self.session = p.session;
        self.sip_local = Some(answer.clone());
        self.sip_cmd(CallCommand::AnswerReinvite {
            id: p.id,
            sdp: answer.to_string().into_bytes(),
        });
        // The phone put us on hold (we may only receive, or nothing) or took us off it: tell
        // the XMPP party (XEP-0167 §7.1), so its client shows it.
        let held = if matches!(p.theirs, LegDirection::RecvOnly | LegDirection::Inactive) {
            PhoneHold::HeldByPhone
        } else {
            PhoneHold::Talking
        };
        if held != self.hold.phone && self.answered() {
            self.hold.phone = held;
            let mut info = Jingle::new(Action::SessionInfo, self.sid.clone());
            info.info = Some(match held {
                PhoneHold::HeldByPhone => SessionInfo::Hold,
                PhoneHold::Talking => SessionInfo::Active,
            });
            self.send_jingle(info);
        }
    }

    // ------------------------------------------------------------------ ending

    /// [`Self::end`] for a call that failed (counted so when it was not answered).
    fn fail(&mut self, jingle: Option<Reason>, sip: Option<SipEnd>) {
        self.outcome.get_or_insert(Outcome::Failed);
        self.end(jingle, sip);
    }

    /// Ends the call on both sides and frees its media. `jingle`: the reason to tell the XMPP
    /// party (a `<retract/>` while we are still proposing, else `session-terminate`); `None`
    /// when they ended it. `sip`: how to end the SIP leg; `None` when the SIP side ended it.
    fn end(&mut self, jingle: Option<Reason>, sip: Option<SipEnd>) {
        if self.is_over() {
            return;
        }
        let answered = self.answered();
        if self.counted && !answered {
            let outcome = self.outcome.unwrap_or_else(|| {
                let cond = jingle.as_ref().map(|r| r.condition).unwrap_or_else(|| {
                    sip.as_ref()
                        .map(|s| sip_status_to_reason(s.code))
                        .unwrap_or(ReasonCondition::Cancel)
                });
                Outcome::of_unanswered(&cond)
            });
            self.stat(Stat::Ended(outcome));
        }
        match (jingle, &self.dir, self.phase) {
            (Some(r), Dir::FromSip { callee, .. }, Phase::Proposing(_)) => {
                let retract = JmiMessage {
                    kind: JmiKind::Retract { reason: Some(r) },
                    id: self.sid.clone(),
                };
                let m = jmi_message(&self.us, &callee.clone(), None, retract);
                self.xmpp(m);
            }
            // Nobody on the XMPP side has heard of the call yet.
            (_, Dir::FromSip { .. }, Phase::Allocating) => {}
            (Some(r), _, _) => {
                let mut t = Jingle::new(Action::SessionTerminate, self.sid.clone());
                t.reason = Some(r);
                self.send_jingle(t);
            }
            (None, _, _) => {}
        }
        if let (Some(_), Some(p)) = (self.sip, self.reoffer.take()) {
            // The phone's re-INVITE still waited for the bridge: it gets its final answer.
            self.sip_cmd(CallCommand::RejectReinvite {
                id: p.id,
                code: 487,
            });
        }
        if let (Some(id), Some(end)) = (self.sip, sip) {
            let cmd = if self.inbound() && !answered {
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
            self.sip_cmd(cmd);
        }
        if self.bridge_asked {
            self.media(MediaCommand::Close);
        }
        self.phase = Phase::Ended;
        self.sip = None;
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
