//! The Jingle (XEP-0166/0167/0176/0320/0338/0339) and Jingle Message Initiation (XEP-0353)
//! wire model for 1:1 audio calls, and only the wire model: typed values parsed from and
//! serialized to minidom `Element`s (Jingle, JMI, `<reason/>`, the Jingle IQ errors).
//!
//! It knows nothing of SIP or of the media engine: what these values mean to the WebRTC leg and
//! the bridge is `call::jingle_media`, the SIP status ⇄ `<reason/>` mapping `call::reason`.
//!
//! Pure: no I/O, no clock, no session state (that belongs to the session state machine). Parsing
//! never panics; every missing or malformed required attribute is a [`JingleError`] naming the
//! element and attribute, which the caller answers with `bad-request` (PROTOCOLS.md §2.3).
//! Unknown children that an answer may have to echo (rtcp-fb, rtp-hdrext, ssrc-group, bandwidth)
//! are kept as raw elements so parsing never fails on them.

use std::fmt;
use std::str::FromStr;

use minidom::Element;
use minidom::rxml::NcName;
use thiserror::Error;

use super::stanza::{ErrorType, StanzaError, nc, reply};

/// `<jingle/>` and `<reason/>` (XEP-0166).
pub const NS_JINGLE: &str = "urn:xmpp:jingle:1";
/// Jingle-specific error conditions (XEP-0166 §10).
pub const NS_JINGLE_ERRORS: &str = "urn:xmpp:jingle:errors:1";
/// RTP description, `encryption`/`crypto` (XEP-0167).
pub const NS_RTP: &str = "urn:xmpp:jingle:apps:rtp:1";
/// The disco feature for audio (XEP-0167 §11); not an element namespace.
pub const NS_RTP_AUDIO: &str = "urn:xmpp:jingle:apps:rtp:audio";
/// RTP session-info payloads (XEP-0167 §7).
pub const NS_RTP_INFO: &str = "urn:xmpp:jingle:apps:rtp:info:1";
/// ICE-UDP transport (XEP-0176).
pub const NS_ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";
/// DTLS fingerprint (XEP-0320).
pub const NS_DTLS: &str = "urn:xmpp:jingle:apps:dtls:0";
/// rtcp-fb (XEP-0293).
pub const NS_RTCP_FB: &str = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0";
/// rtp-hdrext (XEP-0294).
pub const NS_RTP_HDREXT: &str = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0";
/// `source` / `ssrc-group` (XEP-0339).
pub const NS_SSMA: &str = "urn:xmpp:jingle:apps:rtp:ssma:0";
/// `group` (XEP-0338).
pub const NS_GROUPING: &str = "urn:xmpp:jingle:apps:grouping:0";
/// Jingle Message Initiation (XEP-0353).
pub const NS_JMI: &str = "urn:xmpp:jingle-message:0";

/// A peer's Jingle or JMI input we cannot accept. Each variant names what was wrong so the IQ
/// error text (and the log) says it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JingleError {
    #[error("expected <{expected} xmlns='{ns}'/>, got <{got}/>")]
    UnexpectedElement {
        expected: &'static str,
        ns: &'static str,
        got: String,
    },
    #[error("<{element}/> lacks the required '{attribute}' attribute")]
    MissingAttribute {
        element: &'static str,
        attribute: &'static str,
    },
    #[error("<{element} {attribute}='{value}'/>: invalid value")]
    InvalidAttribute {
        element: &'static str,
        attribute: &'static str,
        value: String,
    },
    #[error("unknown Jingle action '{0}'")]
    UnknownAction(String),
    #[error("unknown JMI element <{0}/>")]
    UnknownJmi(String),
    /// The transport carries no fingerprint with a hash function we can check (RFC 8122 §5);
    /// without one DTLS cannot be authenticated.
    #[error("no usable DTLS fingerprint in the transport")]
    NoFingerprint,
    #[error("DTLS fingerprint: {0}")]
    Fingerprint(String),
}

fn missing(element: &'static str, attribute: &'static str) -> JingleError {
    JingleError::MissingAttribute { element, attribute }
}

fn invalid(element: &'static str, attribute: &'static str, value: &str) -> JingleError {
    JingleError::InvalidAttribute {
        element,
        attribute,
        value: value.to_owned(),
    }
}

fn req<'a>(
    el: &'a Element,
    element: &'static str,
    attribute: &'static str,
) -> Result<&'a str, JingleError> {
    el.attr(attribute).ok_or(missing(element, attribute))
}

fn num<T: FromStr>(
    value: &str,
    element: &'static str,
    attribute: &'static str,
) -> Result<T, JingleError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(element, attribute, value))
}

fn req_num<T: FromStr>(
    el: &Element,
    element: &'static str,
    attribute: &'static str,
) -> Result<T, JingleError> {
    num(req(el, element, attribute)?, element, attribute)
}

fn opt_num<T: FromStr>(
    el: &Element,
    element: &'static str,
    attribute: &'static str,
) -> Result<Option<T>, JingleError> {
    el.attr(attribute)
        .map(|v| num(v, element, attribute))
        .transpose()
}

fn expect(el: &Element, name: &'static str, ns: &'static str) -> Result<(), JingleError> {
    if el.is(name, ns) {
        Ok(())
    } else {
        Err(JingleError::UnexpectedElement {
            expected: name,
            ns,
            got: el.name().to_owned(),
        })
    }
}

/// Builds an element, skipping `None` attributes (attribute names are NCName constants).
fn build(name: &str, ns: &str, attrs: &[(&'static str, Option<String>)]) -> Element {
    let mut b = Element::builder(name, ns);
    for (k, v) in attrs {
        if let Some(v) = v {
            b = b.attr(nc(k), v.as_str());
        }
    }
    b.build()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Actions, parties, senders
// ---------------------------------------------------------------------------------------------

/// The `action` of a `<jingle/>` (XEP-0166 §7.2, plus the Jitsi and XEP-0339 extras we must at
/// least recognise to ack or refuse them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    SessionInitiate,
    SessionAccept,
    SessionTerminate,
    SessionInfo,
    TransportInfo,
    TransportReplace,
    TransportAccept,
    TransportReject,
    ContentModify,
    ContentAdd,
    ContentAccept,
    ContentReject,
    ContentRemove,
    DescriptionInfo,
    SecurityInfo,
    SourceAdd,
    SourceRemove,
    /// Jitsi's older spelling of `source-add` (PROTOCOLS.md §2.8).
    AddSource,
    /// Jitsi's older spelling of `source-remove`.
    RemoveSource,
}

impl Action {
    pub const ALL: [Action; 19] = [
        Action::SessionInitiate,
        Action::SessionAccept,
        Action::SessionTerminate,
        Action::SessionInfo,
        Action::TransportInfo,
        Action::TransportReplace,
        Action::TransportAccept,
        Action::TransportReject,
        Action::ContentModify,
        Action::ContentAdd,
        Action::ContentAccept,
        Action::ContentReject,
        Action::ContentRemove,
        Action::DescriptionInfo,
        Action::SecurityInfo,
        Action::SourceAdd,
        Action::SourceRemove,
        Action::AddSource,
        Action::RemoveSource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::SessionInitiate => "session-initiate",
            Action::SessionAccept => "session-accept",
            Action::SessionTerminate => "session-terminate",
            Action::SessionInfo => "session-info",
            Action::TransportInfo => "transport-info",
            Action::TransportReplace => "transport-replace",
            Action::TransportAccept => "transport-accept",
            Action::TransportReject => "transport-reject",
            Action::ContentModify => "content-modify",
            Action::ContentAdd => "content-add",
            Action::ContentAccept => "content-accept",
            Action::ContentReject => "content-reject",
            Action::ContentRemove => "content-remove",
            Action::DescriptionInfo => "description-info",
            Action::SecurityInfo => "security-info",
            Action::SourceAdd => "source-add",
            Action::SourceRemove => "source-remove",
            Action::AddSource => "addsource",
            Action::RemoveSource => "removesource",
        }
    }

    /// `source-add` and its Jitsi alias: the caller handles both alike.
    pub fn is_source_add(self) -> bool {
        matches!(self, Action::SourceAdd | Action::AddSource)
    }

    /// `source-remove` and its Jitsi alias.
    pub fn is_source_remove(self) -> bool {
        matches!(self, Action::SourceRemove | Action::RemoveSource)
    }
}

impl FromStr for Action {
    type Err = JingleError;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == v)
            .ok_or_else(|| JingleError::UnknownAction(v.to_owned()))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the two parties of a session: the value of `content@creator` and `mute@creator`, and
/// our own role when mapping `senders` to a media direction (PROTOCOLS.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    Initiator,
    Responder,
}

impl Party {
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Initiator => "initiator",
            Party::Responder => "responder",
        }
    }

    fn parse(v: &str, element: &'static str) -> Result<Self, JingleError> {
        match v {
            "initiator" => Ok(Party::Initiator),
            "responder" => Ok(Party::Responder),
            _ => Err(invalid(element, "creator", v)),
        }
    }
}

/// `content@senders` (XEP-0166 §7.3): who sends media. Absent means `both`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Senders {
    #[default]
    Both,
    Initiator,
    Responder,
    None,
}

impl Senders {
    pub fn as_str(self) -> &'static str {
        match self {
            Senders::Both => "both",
            Senders::Initiator => "initiator",
            Senders::Responder => "responder",
            Senders::None => "none",
        }
    }

    fn parse(v: &str) -> Result<Self, JingleError> {
        match v {
            "both" => Ok(Senders::Both),
            "initiator" => Ok(Senders::Initiator),
            "responder" => Ok(Senders::Responder),
            "none" => Ok(Senders::None),
            // lib-jitsi-meet's non-standard `rejected` (PROTOCOLS.md §3.1) is refused here: we
            // never offer to Jitsi endpoints in a way that invites it.
            _ => Err(invalid("content", "senders", v)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// <jingle/>
// ---------------------------------------------------------------------------------------------

/// One `<jingle/>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jingle {
    pub action: Action,
    /// Chosen by the initiator; for JMI calls it is the JMI `id` (PROTOCOLS.md §2.9).
    pub sid: String,
    /// Sent on session-initiate only.
    pub initiator: Option<String>,
    /// Sent on session-accept only.
    pub responder: Option<String>,
    pub contents: Vec<Content>,
    pub reason: Option<Reason>,
    /// The payload of a `session-info`; `None` for every other action.
    pub info: Option<SessionInfo>,
    /// Content names of an XEP-0338 `<group semantics='BUNDLE'/>`; other semantics are ignored.
    pub group_bundle: Option<Vec<String>>,
}

impl Jingle {
    /// A `<jingle/>` with only `action` and `sid`; fill in the rest with struct update syntax.
    pub fn new(action: Action, sid: impl Into<String>) -> Self {
        Jingle {
            action,
            sid: sid.into(),
            initiator: None,
            responder: None,
            contents: Vec::new(),
            reason: None,
            info: None,
            group_bundle: None,
        }
    }

    /// The `<jingle/>` child of an IQ, parsed; `None` when the IQ carries no Jingle at all (the
    /// caller answers `service-unavailable`, PROTOCOLS.md §2.3).
    pub fn from_iq(iq: &Element) -> Option<Result<Jingle, JingleError>> {
        iq.get_child("jingle", NS_JINGLE).map(Jingle::from_element)
    }

    /// Parses a `<jingle/>`. Children we do not model (Jitsi's `<bridge-session/>`, …) are
    /// skipped; a session-info's first other child becomes [`Jingle::info`].
    pub fn from_element(el: &Element) -> Result<Jingle, JingleError> {
        expect(el, "jingle", NS_JINGLE)?;
        let action: Action = req(el, "jingle", "action")?.parse()?;
        let sid = req(el, "jingle", "sid")?.to_owned();
        let mut j = Jingle::new(action, sid);
        j.initiator = el.attr("initiator").map(str::to_owned);
        j.responder = el.attr("responder").map(str::to_owned);
        let mut payload: Option<SessionInfo> = None;
        for c in el.children() {
            if c.is("content", NS_JINGLE) {
                j.contents.push(Content::from_element(c, action)?);
            } else if c.is("reason", NS_JINGLE) {
                j.reason = Some(Reason::from_element(c)?);
            } else if c.is("group", NS_GROUPING) {
                if c.attr("semantics") == Some("BUNDLE") {
                    let names = c
                        .children()
                        .filter(|n| n.name() == "content")
                        .map(|n| req(n, "content", "name").map(str::to_owned))
                        .collect::<Result<Vec<_>, _>>()?;
                    j.group_bundle = Some(names);
                }
            } else if action == Action::SessionInfo && payload.is_none() {
                payload = Some(SessionInfo::from_element(c)?);
            }
        }
        if action == Action::SessionInfo {
            j.info = Some(payload.unwrap_or(SessionInfo::Ping));
        }
        Ok(j)
    }

    /// Serializes; `group` comes first, as Jicofo and lib-jitsi-meet emit it.
    pub fn to_element(&self) -> Element {
        let mut el = build(
            "jingle",
            NS_JINGLE,
            &[
                ("action", s(self.action.as_str())),
                ("initiator", self.initiator.clone()),
                ("responder", self.responder.clone()),
                ("sid", Some(self.sid.clone())),
            ],
        );
        if let Some(names) = &self.group_bundle {
            let mut g = build("group", NS_GROUPING, &[("semantics", s("BUNDLE"))]);
            for n in names {
                g.append_child(build("content", NS_GROUPING, &[("name", Some(n.clone()))]));
            }
            el.append_child(g);
        }
        for c in &self.contents {
            el.append_child(c.to_element());
        }
        if let Some(r) = &self.reason {
            el.append_child(r.to_element());
        }
        if let Some(info) = &self.info
            && let Some(p) = info.to_element()
        {
            el.append_child(p);
        }
        el
    }

    /// The IQ-set carrying this Jingle (the caller sets `id`, `from`, `to`).
    pub fn to_iq(&self, ns: &str, id: &str, from: &str, to: &str) -> Element {
        let mut iq = build(
            "iq",
            ns,
            &[
                ("type", s("set")),
                ("id", s(id)),
                ("from", s(from)),
                ("to", s(to)),
            ],
        );
        iq.append_child(self.to_element());
        iq
    }

    /// The content named `name`, if any.
    pub fn content(&self, name: &str) -> Option<&Content> {
        self.contents.iter().find(|c| c.name == name)
    }
}

/// Jingle-specific IQ error conditions (XEP-0166 §10, PROTOCOLS.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JingleErrorCondition {
    /// sid unknown or already ended; stanza condition `item-not-found`.
    UnknownSession,
    /// Action impossible in this state; `unexpected-request`.
    OutOfOrder,
    /// Simultaneous initiates or duplicate actions; `conflict`.
    TieBreak,
    /// Unknown session-info payload; `feature-not-implemented`.
    UnsupportedInfo,
}

impl JingleErrorCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            JingleErrorCondition::UnknownSession => "unknown-session",
            JingleErrorCondition::OutOfOrder => "out-of-order",
            JingleErrorCondition::TieBreak => "tie-break",
            JingleErrorCondition::UnsupportedInfo => "unsupported-info",
        }
    }

    /// The RFC 6120 stanza error that must accompany the Jingle condition.
    pub fn stanza_error(self) -> StanzaError {
        match self {
            JingleErrorCondition::UnknownSession => {
                StanzaError::new(ErrorType::Cancel, "item-not-found")
            }
            JingleErrorCondition::OutOfOrder => {
                StanzaError::new(ErrorType::Wait, "unexpected-request")
            }
            JingleErrorCondition::TieBreak => StanzaError::new(ErrorType::Cancel, "conflict"),
            JingleErrorCondition::UnsupportedInfo => {
                StanzaError::new(ErrorType::Modify, "feature-not-implemented")
            }
        }
    }
}

/// The error reply to a Jingle IQ with both the stanza condition and the Jingle condition
/// inside `<error/>` (XEP-0166 §10).
pub fn jingle_error_reply(iq: &Element, cond: JingleErrorCondition) -> Element {
    let ns = iq.ns();
    let mut r = reply(iq, "error");
    let mut e = cond.stanza_error().to_element(&ns);
    e.append_child(Element::bare(cond.as_str(), NS_JINGLE_ERRORS));
    r.append_child(e);
    r
}

// ---------------------------------------------------------------------------------------------
// <content/>
// ---------------------------------------------------------------------------------------------

/// One `<content/>` (XEP-0166 §7.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub creator: Party,
    /// Equal to the SDP `a=mid` on the WebRTC side; never rename it (PROTOCOLS.md §3.1).
    pub name: String,
    pub senders: Senders,
    pub description: Option<RtpDescription>,
    pub transport: Option<IceUdpTransport>,
}

impl Content {
    fn from_element(el: &Element, action: Action) -> Result<Content, JingleError> {
        let name = req(el, "content", "name")?.to_owned();
        // Jitsi's source-add/remove deltas carry only `name` (PROTOCOLS.md §2.8); everywhere
        // else `creator` is required (XEP-0166 §7.3).
        let creator = match el.attr("creator") {
            Some(v) => Party::parse(v, "content")?,
            None if action.is_source_add() || action.is_source_remove() => Party::Initiator,
            None => return Err(missing("content", "creator")),
        };
        let senders = match el.attr("senders") {
            Some(v) => Senders::parse(v)?,
            None if action == Action::ContentModify => {
                return Err(missing("content", "senders"));
            }
            None => Senders::Both,
        };
        let mut description = None;
        let mut transport = None;
        for c in el.children() {
            if c.is("description", NS_RTP) {
                description = Some(RtpDescription::from_element(c)?);
            } else if c.is("transport", NS_ICE_UDP) {
                transport = Some(IceUdpTransport::from_element(c)?);
            }
        }
        Ok(Content {
            creator,
            name,
            senders,
            description,
            transport,
        })
    }

    pub fn to_element(&self) -> Element {
        let mut el = build(
            "content",
            NS_JINGLE,
            &[
                ("creator", s(self.creator.as_str())),
                ("name", Some(self.name.clone())),
                ("senders", s(self.senders.as_str())),
            ],
        );
        if let Some(d) = &self.description {
            el.append_child(d.to_element());
        }
        if let Some(t) = &self.transport {
            el.append_child(t.to_element());
        }
        el
    }
}

// ---------------------------------------------------------------------------------------------
// <description xmlns='urn:xmpp:jingle:apps:rtp:1'/>
// ---------------------------------------------------------------------------------------------

/// An RTP `<description/>` (XEP-0167 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpDescription {
    pub media: String,
    /// In preference order, preferred first.
    pub payload_types: Vec<PayloadType>,
    pub rtcp_mux: bool,
    /// XEP-0339 sources.
    pub sources: Vec<Source>,
    /// XEP-0339 `<ssrc-group/>`, raw.
    pub ssrc_groups: Vec<Element>,
    /// XEP-0294 `<rtp-hdrext/>` and `<extmap-allow-mixed/>`, raw so an answer can echo the
    /// accepted ones unmodified.
    pub rtp_hdrext: Vec<Element>,
    /// Description-level XEP-0293 `<rtcp-fb/>` / `<rtcp-fb-trr-int/>` (`a=rtcp-fb:*`), raw.
    pub rtcp_fb: Vec<Element>,
    /// `<encryption/>` SDES crypto lines (XEP-0167 §7.3); empty for DTLS-SRTP.
    pub crypto: Vec<Crypto>,
    /// `<encryption required='1'/>`.
    pub encryption_required: bool,
    /// Anything else (e.g. `<bandwidth/>`), raw.
    pub other: Vec<Element>,
}

impl RtpDescription {
    /// An empty description for `media` (e.g. `audio`).
    pub fn new(media: impl Into<String>) -> Self {
        RtpDescription {
            media: media.into(),
            payload_types: Vec::new(),
            rtcp_mux: false,
            sources: Vec::new(),
            ssrc_groups: Vec::new(),
            rtp_hdrext: Vec::new(),
            rtcp_fb: Vec::new(),
            crypto: Vec::new(),
            encryption_required: false,
            other: Vec::new(),
        }
    }

    pub(crate) fn from_element(el: &Element) -> Result<RtpDescription, JingleError> {
        let mut d = RtpDescription::new(req(el, "description", "media")?);
        for c in el.children() {
            match c.name() {
                "payload-type" => d.payload_types.push(PayloadType::from_element(c)?),
                "rtcp-mux" => d.rtcp_mux = true,
                "source" => d.sources.push(Source::from_element(c)?),
                "ssrc-group" => d.ssrc_groups.push(c.clone()),
                "rtp-hdrext" | "extmap-allow-mixed" => d.rtp_hdrext.push(c.clone()),
                "rtcp-fb" | "rtcp-fb-trr-int" => d.rtcp_fb.push(c.clone()),
                "encryption" if c.has_ns(NS_RTP) => {
                    d.encryption_required = matches!(c.attr("required"), Some("1") | Some("true"));
                    for k in c.children().filter(|k| k.name() == "crypto") {
                        d.crypto.push(Crypto::from_element(k)?);
                    }
                }
                _ => d.other.push(c.clone()),
            }
        }
        Ok(d)
    }

    pub fn to_element(&self) -> Element {
        let mut el = build(
            "description",
            NS_RTP,
            &[("media", Some(self.media.clone()))],
        );
        for p in &self.payload_types {
            el.append_child(p.to_element());
        }
        if !self.crypto.is_empty() {
            let mut enc = build(
                "encryption",
                NS_RTP,
                &[("required", self.encryption_required.then(|| "1".to_owned()))],
            );
            for k in &self.crypto {
                enc.append_child(k.to_element());
            }
            el.append_child(enc);
        }
        for e in self.rtcp_fb.iter().chain(&self.rtp_hdrext) {
            el.append_child(e.clone());
        }
        if self.rtcp_mux {
            el.append_child(Element::bare("rtcp-mux", NS_RTP));
        }
        for src in &self.sources {
            el.append_child(src.to_element());
        }
        for e in self.ssrc_groups.iter().chain(&self.other) {
            el.append_child(e.clone());
        }
        el
    }
}

/// A `<payload-type/>` (XEP-0167 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadType {
    pub id: u8,
    /// Required for dynamic ids (96–127); static ids may omit it (RFC 3551 defaults apply).
    pub name: Option<String>,
    pub clockrate: Option<u32>,
    /// Default 1; omitted on output when 1.
    pub channels: u8,
    pub ptime: Option<u32>,
    pub maxptime: Option<u32>,
    /// fmtp parameters in document order; a valueless SDP token has an empty name
    /// (PROTOCOLS.md §3.1), a name-only parameter an empty value.
    pub parameters: Vec<(String, String)>,
    /// XEP-0293 `<rtcp-fb/>` / `<rtcp-fb-trr-int/>` of this payload type, raw.
    pub rtcp_fb: Vec<Element>,
}

impl PayloadType {
    /// A payload type with no parameters and one channel.
    pub fn new(id: u8, name: &str, clockrate: u32) -> Self {
        PayloadType {
            id,
            name: Some(name.to_owned()),
            clockrate: Some(clockrate),
            channels: 1,
            ptime: None,
            maxptime: None,
            parameters: Vec::new(),
            rtcp_fb: Vec::new(),
        }
    }

    fn from_element(el: &Element) -> Result<PayloadType, JingleError> {
        const E: &str = "payload-type";
        let id: u8 = req_num(el, E, "id")?;
        if id > 127 {
            return Err(invalid(E, "id", &id.to_string()));
        }
        let name = el.attr("name").map(str::to_owned);
        if name.is_none() && id >= 96 {
            return Err(missing(E, "name"));
        }
        let channels = opt_num::<u8>(el, E, "channels")?.unwrap_or(1);
        if channels == 0 {
            return Err(invalid(E, "channels", "0"));
        }
        let mut p = PayloadType {
            id,
            name,
            clockrate: opt_num(el, E, "clockrate")?,
            channels,
            ptime: opt_num(el, E, "ptime")?,
            maxptime: opt_num(el, E, "maxptime")?,
            parameters: Vec::new(),
            rtcp_fb: Vec::new(),
        };
        for c in el.children() {
            match c.name() {
                "parameter" => p.parameters.push((
                    c.attr("name").unwrap_or_default().to_owned(),
                    c.attr("value").unwrap_or_default().to_owned(),
                )),
                "rtcp-fb" | "rtcp-fb-trr-int" => p.rtcp_fb.push(c.clone()),
                _ => {}
            }
        }
        Ok(p)
    }

    pub fn to_element(&self) -> Element {
        let mut el = build(
            "payload-type",
            NS_RTP,
            &[
                ("id", Some(self.id.to_string())),
                ("name", self.name.clone()),
                ("clockrate", self.clockrate.map(|v| v.to_string())),
                (
                    "channels",
                    (self.channels != 1).then(|| self.channels.to_string()),
                ),
                ("ptime", self.ptime.map(|v| v.to_string())),
                ("maxptime", self.maxptime.map(|v| v.to_string())),
            ],
        );
        for (n, v) in &self.parameters {
            el.append_child(build(
                "parameter",
                NS_RTP,
                &[("name", Some(n.clone())), ("value", Some(v.clone()))],
            ));
        }
        for e in &self.rtcp_fb {
            el.append_child(e.clone());
        }
        el
    }

    /// The value of fmtp parameter `name`, if present.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_telephone_event(&self) -> bool {
        self.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case("telephone-event"))
    }
}

/// An XEP-0339 `<source/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub ssrc: u32,
    /// `cname`, `msid`, …; a valueless SDP attribute has an empty value.
    pub parameters: Vec<(String, String)>,
}

impl Source {
    fn from_element(el: &Element) -> Result<Source, JingleError> {
        let ssrc = req_num(el, "source", "ssrc")?;
        let parameters = el
            .children()
            .filter(|c| c.name() == "parameter")
            .map(|c| {
                (
                    c.attr("name").unwrap_or_default().to_owned(),
                    c.attr("value").unwrap_or_default().to_owned(),
                )
            })
            .collect();
        Ok(Source { ssrc, parameters })
    }

    pub fn to_element(&self) -> Element {
        let mut el = build("source", NS_SSMA, &[("ssrc", Some(self.ssrc.to_string()))]);
        for (n, v) in &self.parameters {
            el.append_child(build(
                "parameter",
                NS_SSMA,
                &[
                    ("name", Some(n.clone())),
                    ("value", (!v.is_empty()).then(|| v.clone())),
                ],
            ));
        }
        el
    }

    /// The `cname` parameter, if present.
    pub fn cname(&self) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == "cname")
            .map(|(_, v)| v.as_str())
    }
}

/// An SDES `<crypto/>` line (XEP-0167 §7.3, RFC 4568). `key_params` is a secret: `Debug` hides
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: String,
    pub crypto_suite: String,
    pub key_params: String,
    pub session_params: Option<String>,
}

impl fmt::Debug for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crypto")
            .field("tag", &self.tag)
            .field("crypto_suite", &self.crypto_suite)
            .field("key_params", &"***")
            .field("session_params", &self.session_params)
            .finish()
    }
}

impl Crypto {
    fn from_element(el: &Element) -> Result<Crypto, JingleError> {
        Ok(Crypto {
            tag: req(el, "crypto", "tag")?.to_owned(),
            crypto_suite: req(el, "crypto", "crypto-suite")?.to_owned(),
            key_params: req(el, "crypto", "key-params")?.to_owned(),
            session_params: el.attr("session-params").map(str::to_owned),
        })
    }

    pub fn to_element(&self) -> Element {
        build(
            "crypto",
            NS_RTP,
            &[
                ("crypto-suite", Some(self.crypto_suite.clone())),
                ("key-params", Some(self.key_params.clone())),
                ("session-params", self.session_params.clone()),
                ("tag", Some(self.tag.clone())),
            ],
        )
    }
}

// ---------------------------------------------------------------------------------------------
// <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'/>
// ---------------------------------------------------------------------------------------------

/// An ICE-UDP `<transport/>` (XEP-0176) with XEP-0320 fingerprints. `pwd` is a secret: `Debug`
/// hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct IceUdpTransport {
    pub ufrag: String,
    pub pwd: String,
    pub fingerprints: Vec<DtlsFingerprint>,
    pub candidates: Vec<JingleCandidate>,
    /// Jitsi (Jicofo, lib-jitsi-meet) also puts `<rtcp-mux/>` inside the transport.
    pub rtcp_mux: bool,
    /// Anything else (Jitsi's `<web-socket/>`, …), raw.
    pub other: Vec<Element>,
}

impl fmt::Debug for IceUdpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceUdpTransport")
            .field("ufrag", &self.ufrag)
            .field("pwd", &"***")
            .field("fingerprints", &self.fingerprints)
            .field("candidates", &self.candidates)
            .field("rtcp_mux", &self.rtcp_mux)
            .field("other", &self.other)
            .finish()
    }
}

impl IceUdpTransport {
    fn from_element(el: &Element) -> Result<IceUdpTransport, JingleError> {
        let mut t = IceUdpTransport {
            ufrag: req(el, "transport", "ufrag")?.to_owned(),
            pwd: req(el, "transport", "pwd")?.to_owned(),
            fingerprints: Vec::new(),
            candidates: Vec::new(),
            rtcp_mux: false,
            other: Vec::new(),
        };
        for c in el.children() {
            match c.name() {
                "candidate" => t.candidates.push(JingleCandidate::from_element(c)?),
                "fingerprint" => t.fingerprints.push(DtlsFingerprint::from_element(c)?),
                "rtcp-mux" => t.rtcp_mux = true,
                _ => t.other.push(c.clone()),
            }
        }
        Ok(t)
    }

    /// Serializes; a candidate whose `id` is not an NCName gets `c1`, `c2`, … by position, as
    /// XEP-0176 requires an NCName there.
    pub fn to_element(&self) -> Element {
        let mut el = build(
            "transport",
            NS_ICE_UDP,
            &[
                ("pwd", Some(self.pwd.clone())),
                ("ufrag", Some(self.ufrag.clone())),
            ],
        );
        for f in &self.fingerprints {
            el.append_child(f.to_element());
        }
        for (i, c) in self.candidates.iter().enumerate() {
            el.append_child(c.to_element(i + 1));
        }
        if self.rtcp_mux {
            el.append_child(Element::bare("rtcp-mux", NS_ICE_UDP));
        }
        for e in &self.other {
            el.append_child(e.clone());
        }
        el
    }
}

/// The `setup` attribute of an XEP-0320 `<fingerprint/>`: the DTLS role, with the values of
/// SDP `a=setup` (RFC 4145 §4, RFC 5763 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setup {
    Active,
    Passive,
    Actpass,
    Holdconn,
}

impl Setup {
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::Actpass => "actpass",
            Setup::Holdconn => "holdconn",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        match v {
            "active" => Some(Setup::Active),
            "passive" => Some(Setup::Passive),
            "actpass" => Some(Setup::Actpass),
            "holdconn" => Some(Setup::Holdconn),
            _ => None,
        }
    }
}

/// An XEP-0320 `<fingerprint/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsFingerprint {
    pub hash: String,
    /// Required by XEP-0320 ≥ 0.3; older senders leave it out.
    pub setup: Option<Setup>,
    /// Colon-separated hex, as sent.
    pub value: String,
}

impl DtlsFingerprint {
    fn from_element(el: &Element) -> Result<DtlsFingerprint, JingleError> {
        let setup = el
            .attr("setup")
            .map(|v| Setup::parse(v).ok_or_else(|| invalid("fingerprint", "setup", v)))
            .transpose()?;
        Ok(DtlsFingerprint {
            hash: req(el, "fingerprint", "hash")?.to_owned(),
            setup,
            value: el.text().trim().to_owned(),
        })
    }

    pub fn to_element(&self) -> Element {
        let mut el = build(
            "fingerprint",
            NS_DTLS,
            &[
                ("hash", Some(self.hash.clone())),
                ("setup", self.setup.map(|v| v.as_str().to_owned())),
            ],
        );
        el.append_text(self.value.as_str());
        el
    }
}

/// The `type` of an ICE-UDP `<candidate/>` (XEP-0176 §5.1, the candidate types of RFC 8445
/// §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateType {
    Host,
    ServerReflexive,
    PeerReflexive,
    Relay,
}

impl CandidateType {
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::ServerReflexive => "srflx",
            CandidateType::PeerReflexive => "prflx",
            CandidateType::Relay => "relay",
        }
    }
}

/// An ICE-UDP `<candidate/>` (XEP-0176 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JingleCandidate {
    pub component: u16,
    pub foundation: String,
    /// Required by XEP-0176, but some clients leave it out; absent reads as 0.
    pub generation: u32,
    /// An NCName; replaced on output if it is not one.
    pub id: String,
    /// An IP address, or an mDNS `.local` name (which the call layer skips).
    pub ip: String,
    pub port: u16,
    pub priority: u32,
    /// `udp` or `tcp` (case as sent).
    pub protocol: String,
    pub kind: CandidateType,
    pub network: Option<u32>,
    pub rel_addr: Option<String>,
    pub rel_port: Option<u16>,
    pub tcptype: Option<String>,
}

impl JingleCandidate {
    fn from_element(el: &Element) -> Result<JingleCandidate, JingleError> {
        const E: &str = "candidate";
        let type_ = req(el, E, "type")?;
        let kind = match type_ {
            "host" => CandidateType::Host,
            "srflx" => CandidateType::ServerReflexive,
            "prflx" => CandidateType::PeerReflexive,
            "relay" => CandidateType::Relay,
            _ => return Err(invalid(E, "type", type_)),
        };
        Ok(JingleCandidate {
            component: req_num(el, E, "component")?,
            foundation: req(el, E, "foundation")?.to_owned(),
            generation: opt_num(el, E, "generation")?.unwrap_or(0),
            id: el.attr("id").unwrap_or_default().to_owned(),
            ip: req(el, E, "ip")?.to_owned(),
            port: req_num(el, E, "port")?,
            priority: req_num(el, E, "priority")?,
            protocol: req(el, E, "protocol")?.to_owned(),
            kind,
            network: opt_num(el, E, "network")?,
            rel_addr: el.attr("rel-addr").map(str::to_owned),
            rel_port: opt_num(el, E, "rel-port")?,
            tcptype: el.attr("tcptype").map(str::to_owned),
        })
    }

    /// `position` (1-based) names the candidate when its own id is not an NCName.
    fn to_element(&self, position: usize) -> Element {
        let id = if NcName::try_from(self.id.as_str()).is_ok() {
            self.id.clone()
        } else {
            format!("c{position}")
        };
        build(
            "candidate",
            NS_ICE_UDP,
            &[
                ("component", Some(self.component.to_string())),
                ("foundation", Some(self.foundation.clone())),
                ("generation", Some(self.generation.to_string())),
                ("id", Some(id)),
                ("ip", Some(self.ip.clone())),
                ("network", self.network.map(|v| v.to_string())),
                ("port", Some(self.port.to_string())),
                ("priority", Some(self.priority.to_string())),
                ("protocol", Some(self.protocol.clone())),
                ("rel-addr", self.rel_addr.clone()),
                ("rel-port", self.rel_port.map(|v| v.to_string())),
                ("tcptype", self.tcptype.clone()),
                ("type", s(self.kind.as_str())),
            ],
        )
    }
}

// ---------------------------------------------------------------------------------------------
// <reason/>
// ---------------------------------------------------------------------------------------------

/// The defined conditions of a Jingle `<reason/>` (XEP-0166 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCondition {
    AlternativeSession,
    Busy,
    Cancel,
    ConnectivityError,
    Decline,
    Expired,
    FailedApplication,
    FailedTransport,
    GeneralError,
    Gone,
    IncompatibleParameters,
    MediaError,
    SecurityError,
    Success,
    Timeout,
    UnsupportedApplications,
    UnsupportedTransports,
}

impl ReasonCondition {
    pub const ALL: [ReasonCondition; 17] = [
        ReasonCondition::AlternativeSession,
        ReasonCondition::Busy,
        ReasonCondition::Cancel,
        ReasonCondition::ConnectivityError,
        ReasonCondition::Decline,
        ReasonCondition::Expired,
        ReasonCondition::FailedApplication,
        ReasonCondition::FailedTransport,
        ReasonCondition::GeneralError,
        ReasonCondition::Gone,
        ReasonCondition::IncompatibleParameters,
        ReasonCondition::MediaError,
        ReasonCondition::SecurityError,
        ReasonCondition::Success,
        ReasonCondition::Timeout,
        ReasonCondition::UnsupportedApplications,
        ReasonCondition::UnsupportedTransports,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCondition::AlternativeSession => "alternative-session",
            ReasonCondition::Busy => "busy",
            ReasonCondition::Cancel => "cancel",
            ReasonCondition::ConnectivityError => "connectivity-error",
            ReasonCondition::Decline => "decline",
            ReasonCondition::Expired => "expired",
            ReasonCondition::FailedApplication => "failed-application",
            ReasonCondition::FailedTransport => "failed-transport",
            ReasonCondition::GeneralError => "general-error",
            ReasonCondition::Gone => "gone",
            ReasonCondition::IncompatibleParameters => "incompatible-parameters",
            ReasonCondition::MediaError => "media-error",
            ReasonCondition::SecurityError => "security-error",
            ReasonCondition::Success => "success",
            ReasonCondition::Timeout => "timeout",
            ReasonCondition::UnsupportedApplications => "unsupported-applications",
            ReasonCondition::UnsupportedTransports => "unsupported-transports",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        ReasonCondition::ALL.into_iter().find(|c| c.as_str() == v)
    }
}

impl fmt::Display for ReasonCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `<reason/>` (XEP-0166 §7.4), in session-terminate and in JMI reject/retract/finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub condition: ReasonCondition,
    pub text: Option<String>,
    /// Other children kept raw: `<sid/>` of alternative-session, `<tie-break/>` (JMI
    /// collisions, PROTOCOLS.md §2.9), MongooseIM's `<sip-error/>`.
    pub extra: Vec<Element>,
}

impl Reason {
    pub fn new(condition: ReasonCondition) -> Self {
        Reason {
            condition,
            text: None,
            extra: Vec::new(),
        }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// A missing or unknown condition reads as `general-error` rather than failing: a
    /// session-terminate must end the session whatever its reason looks like.
    fn from_element(el: &Element) -> Result<Reason, JingleError> {
        expect(el, "reason", NS_JINGLE)?;
        let mut condition = None;
        let mut text = None;
        let mut extra = Vec::new();
        for c in el.children() {
            if c.is("text", NS_JINGLE) {
                text = Some(c.text());
                continue;
            }
            match ReasonCondition::parse(c.name()).filter(|_| c.has_ns(NS_JINGLE)) {
                Some(cond) if condition.is_none() => condition = Some(cond),
                _ => extra.push(c.clone()),
            }
        }
        Ok(Reason {
            condition: condition.unwrap_or(ReasonCondition::GeneralError),
            text,
            extra,
        })
    }

    pub fn to_element(&self) -> Element {
        let mut el = Element::bare("reason", NS_JINGLE);
        el.append_child(Element::bare(self.condition.as_str(), NS_JINGLE));
        if let Some(t) = &self.text {
            el.append_child(
                Element::builder("text", NS_JINGLE)
                    .append(t.as_str())
                    .build(),
            );
        }
        for e in &self.extra {
            el.append_child(e.clone());
        }
        el
    }
}

// ---------------------------------------------------------------------------------------------
// session-info
// ---------------------------------------------------------------------------------------------

/// The payload of a `session-info` (XEP-0167 §7, XEP-0166 §6.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionInfo {
    /// An empty session-info: a ping, acked and otherwise ignored.
    Ping,
    /// SIP 180.
    Ringing,
    Hold,
    Unhold,
    Active,
    Mute {
        creator: Option<Party>,
        name: Option<String>,
    },
    Unmute {
        creator: Option<Party>,
        name: Option<String>,
    },
    /// A payload we do not understand; the caller answers `feature-not-implemented` +
    /// `<unsupported-info/>` ([`JingleErrorCondition::UnsupportedInfo`]).
    Unsupported {
        name: String,
        ns: String,
    },
}

impl SessionInfo {
    fn from_element(el: &Element) -> Result<SessionInfo, JingleError> {
        if !el.has_ns(NS_RTP_INFO) {
            return Ok(SessionInfo::Unsupported {
                name: el.name().to_owned(),
                ns: el.ns(),
            });
        }
        let creator = || {
            el.attr("creator")
                .map(|v| Party::parse(v, "mute"))
                .transpose()
        };
        let name = el.attr("name").map(str::to_owned);
        Ok(match el.name() {
            "ringing" => SessionInfo::Ringing,
            "hold" => SessionInfo::Hold,
            "unhold" => SessionInfo::Unhold,
            "active" => SessionInfo::Active,
            "mute" => SessionInfo::Mute {
                creator: creator()?,
                name,
            },
            "unmute" => SessionInfo::Unmute {
                creator: creator()?,
                name,
            },
            other => SessionInfo::Unsupported {
                name: other.to_owned(),
                ns: el.ns(),
            },
        })
    }

    /// The payload element; `None` for a ping (and for `Unsupported`, which we never send).
    pub fn to_element(&self) -> Option<Element> {
        let bare = |n: &str| Some(Element::bare(n, NS_RTP_INFO));
        let with = |n: &str, creator: &Option<Party>, name: &Option<String>| {
            Some(build(
                n,
                NS_RTP_INFO,
                &[
                    ("creator", creator.map(|c| c.as_str().to_owned())),
                    ("name", name.clone()),
                ],
            ))
        };
        match self {
            SessionInfo::Ping | SessionInfo::Unsupported { .. } => None,
            SessionInfo::Ringing => bare("ringing"),
            SessionInfo::Hold => bare("hold"),
            SessionInfo::Unhold => bare("unhold"),
            SessionInfo::Active => bare("active"),
            SessionInfo::Mute { creator, name } => with("mute", creator, name),
            SessionInfo::Unmute { creator, name } => with("unmute", creator, name),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JMI (XEP-0353)
// ---------------------------------------------------------------------------------------------

/// What a JMI element says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JmiKind {
    /// The `media` of each RTP `<description/>` offered (e.g. `["audio"]`).
    Propose {
        media: Vec<String>,
    },
    Ringing,
    Proceed,
    /// Legacy: Conversations sends it to its own bare JID; ignore it (PROTOCOLS.md §2.9).
    Accept,
    Reject {
        reason: Option<Reason>,
    },
    Retract {
        reason: Option<Reason>,
    },
    Finish {
        reason: Option<Reason>,
    },
}

/// One JMI element (XEP-0353), child of a `<message/>`. Its `id` becomes the Jingle `sid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JmiMessage {
    pub kind: JmiKind,
    pub id: String,
}

impl JmiMessage {
    /// The JMI child of a `<message/>`, parsed; `None` when there is none.
    pub fn from_message(msg: &Element) -> Option<Result<JmiMessage, JingleError>> {
        msg.children()
            .find(|c| c.has_ns(NS_JMI))
            .map(JmiMessage::from_element)
    }

    pub fn from_element(el: &Element) -> Result<JmiMessage, JingleError> {
        if !el.has_ns(NS_JMI) {
            return Err(JingleError::UnexpectedElement {
                expected: "propose",
                ns: NS_JMI,
                got: el.name().to_owned(),
            });
        }
        let element: &'static str = match el.name() {
            "propose" => "propose",
            "ringing" => "ringing",
            "proceed" => "proceed",
            "accept" => "accept",
            "reject" => "reject",
            "retract" => "retract",
            "finish" => "finish",
            other => return Err(JingleError::UnknownJmi(other.to_owned())),
        };
        let id = req(el, element, "id")?.to_owned();
        let reason = || {
            el.get_child("reason", NS_JINGLE)
                .map(Reason::from_element)
                .transpose()
        };
        let kind = match element {
            "propose" => JmiKind::Propose {
                media: el
                    .children()
                    .filter(|c| c.is("description", NS_RTP))
                    .filter_map(|c| c.attr("media").map(str::to_owned))
                    .collect(),
            },
            "ringing" => JmiKind::Ringing,
            "proceed" => JmiKind::Proceed,
            "accept" => JmiKind::Accept,
            "reject" => JmiKind::Reject { reason: reason()? },
            "retract" => JmiKind::Retract { reason: reason()? },
            _ => JmiKind::Finish { reason: reason()? },
        };
        Ok(JmiMessage { kind, id })
    }

    /// The JMI child element to put in a `<message/>`.
    pub fn to_element(&self) -> Element {
        let (name, reason) = match &self.kind {
            JmiKind::Propose { .. } => ("propose", None),
            JmiKind::Ringing => ("ringing", None),
            JmiKind::Proceed => ("proceed", None),
            JmiKind::Accept => ("accept", None),
            JmiKind::Reject { reason } => ("reject", reason.as_ref()),
            JmiKind::Retract { reason } => ("retract", reason.as_ref()),
            JmiKind::Finish { reason } => ("finish", reason.as_ref()),
        };
        let mut el = build(name, NS_JMI, &[("id", Some(self.id.clone()))]);
        if let JmiKind::Propose { media } = &self.kind {
            for m in media {
                el.append_child(build("description", NS_RTP, &[("media", Some(m.clone()))]));
            }
        }
        if let Some(r) = reason {
            el.append_child(r.to_element());
        }
        el
    }
}

/// Captured stanzas (PROTOCOLS.md §2) and helpers shared by the tests of the wire model and of
/// the call layer's conversions (`call::jingle_media`).
#[cfg(test)]
pub(crate) mod fixtures {
    use minidom::Element;

    use super::Jingle;
    use crate::xmpp::stanza::NS_CLIENT;

    /// PROTOCOLS.md fixtures are stanzas without a stream; wrapping them in an element with the
    /// client namespace gives them the default namespace they have on the wire.
    pub fn stanza(xml: &str) -> Element {
        let wrapped = format!("<stream xmlns='{NS_CLIENT}'>{xml}</stream>");
        let root: Element = wrapped.parse().expect("fixture parses");
        root.children()
            .next()
            .expect("fixture has a stanza")
            .clone()
    }

    pub fn jingle(xml: &str) -> Jingle {
        Jingle::from_iq(&stanza(xml))
            .expect("has jingle")
            .expect("jingle parses")
    }

    pub fn roundtrip(j: &Jingle) -> Jingle {
        let xml = String::from(&j.to_element());
        let el: Element = xml.parse().expect("our output parses");
        Jingle::from_element(&el).expect("our output is valid Jingle")
    }

    // PROTOCOLS.md §2.2, verbatim.
    pub const INITIATE: &str = r#"<iq from='juliet@example.com/phone' to='+15551234567@sip.example.com/gw' id='si1' type='set'>
 <jingle xmlns='urn:xmpp:jingle:1' action='session-initiate'
         initiator='juliet@example.com/phone' sid='a73sjjvkla37jfea'>
  <group xmlns='urn:xmpp:jingle:apps:grouping:0' semantics='BUNDLE'><content name='audio'/></group>
  <content creator='initiator' name='audio' senders='both'>
   <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
    <payload-type id='111' name='opus' clockrate='48000' channels='2'>
     <parameter name='minptime' value='10'/>
     <parameter name='useinbandfec' value='1'/>
     <rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='transport-cc'/>
    </payload-type>
    <payload-type id='9' name='G722' clockrate='8000'/>
    <payload-type id='0' name='PCMU' clockrate='8000'/>
    <payload-type id='126' name='telephone-event' clockrate='8000'/>
    <rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='1'
                uri='urn:ietf:params:rtp-hdrext:ssrc-audio-level'/>
    <rtcp-mux/>
    <source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='3735928559'>
     <parameter name='cname' value='Yv5wvbCdsDW2Prgd'/>
     <parameter name='msid' value='stream0 track0'/>
    </source>
   </description>
   <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='8hhy' pwd='asd88fgpdd777uzjYhagZg'>
    <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>3D:C0:FB:B6:C7:69:D0:EF:4C:4B:03:D9:76:AB:BC:42:8D:AD:AC:4A:B7:30:60:9A:43:95:B9:12:90:E8:CC:B9</fingerprint>
    <candidate component='1' foundation='1' generation='0' id='c1' ip='10.0.0.5' network='0'
               port='50000' priority='2130706431' protocol='udp' type='host'/>
    <candidate component='1' foundation='2' generation='0' id='c2' ip='192.0.2.10' network='0'
               port='50000' priority='1694498815' protocol='udp' type='srflx'
               rel-addr='10.0.0.5' rel-port='50000'/>
   </transport>
  </content>
 </jingle></iq>"#;

    // PROTOCOLS.md §2.5, verbatim.
    pub const ACCEPT: &str = r#"<iq from='+15551234567@sip.example.com/gw' to='juliet@example.com/phone' id='sa1' type='set'>
 <jingle xmlns='urn:xmpp:jingle:1' action='session-accept' responder='+15551234567@sip.example.com/gw'
         sid='a73sjjvkla37jfea'>
  <group xmlns='urn:xmpp:jingle:apps:grouping:0' semantics='BUNDLE'><content name='audio'/></group>
  <content creator='initiator' name='audio' senders='both'>
   <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
    <payload-type id='111' name='opus' clockrate='48000' channels='2'>
     <parameter name='minptime' value='10'/><parameter name='useinbandfec' value='1'/></payload-type>
    <payload-type id='126' name='telephone-event' clockrate='8000'/>
    <rtcp-mux/>
    <source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='287454020'>
     <parameter name='cname' value='gw-7f3a'/><parameter name='msid' value='gw0 gw0a'/></source>
   </description>
   <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='9uB6' pwd='YH75Fviy6338Vbrhrlp8Yh'>
    <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='active'>D4:C3:B7:DB:D5:AB:24:3D:CD:CE:6E:D1:29:3C:69:CA:3F:A6:6B:50:6A:54:33:01:C9:F4:68:6F:A7:87:81:6E</fingerprint>
    <candidate component='1' foundation='1' generation='0' id='g1' ip='198.51.100.7' network='0'
               port='40000' priority='2130706431' protocol='udp' type='host'/>
   </transport>
  </content></jingle></iq>"#;

    // PROTOCOLS.md §2.6, verbatim.
    pub const TRANSPORT_INFO: &str = r#"<iq from='juliet@example.com/phone' to='+15551234567@sip.example.com/gw' id='ti1' type='set'>
 <jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='a73sjjvkla37jfea'>
  <content creator='initiator' name='audio'>
   <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='8hhy' pwd='asd88fgpdd777uzjYhagZg'>
    <candidate component='1' foundation='3' generation='0' id='c3' ip='203.0.113.9' network='0'
               port='3478' priority='16777215' protocol='udp' type='relay'
               rel-addr='192.0.2.10' rel-port='50000'/></transport></content></jingle></iq>"#;

    /// The §2.2 session-initiate with every attribute value replaced by garbage, or the whole
    /// attribute removed, one at a time: each mutation that is still well-formed XML, as a
    /// `<stream/>` root holding the IQ.
    pub fn mutated_initiates() -> Vec<Element> {
        const GARBAGE: [&str; 9] = [
            "",
            "-1",
            "99999999999999999999",
            "abc",
            "1:2",
            "::1",
            "ZZ:ZZ",
            "sha-1",
            "&#x1F600;",
        ];
        let mut spans = Vec::new();
        let mut from = 0;
        while let Some(eq) = INITIATE[from..].find("='") {
            let start = from + eq + 2;
            let Some(len) = INITIATE[start..].find('\'') else {
                break;
            };
            // Back up over the attribute name for the removal case.
            let name_start = INITIATE[..from + eq]
                .rfind(char::is_whitespace)
                .map_or(from + eq, |i| i + 1);
            spans.push((name_start, start, start + len));
            from = start + len + 1;
        }
        assert!(spans.len() > 40, "found {} attributes", spans.len());
        let parse = |xml: String| {
            format!("<stream xmlns='{NS_CLIENT}'>{xml}</stream>")
                .parse::<Element>()
                .ok()
        };
        let mut out = Vec::new();
        for &(name_start, start, end) in &spans {
            for g in GARBAGE {
                out.extend(parse(format!(
                    "{}{g}{}",
                    &INITIATE[..start],
                    &INITIATE[end..]
                )));
            }
            // Remove the whole attribute.
            out.extend(parse(format!(
                "{}{}",
                &INITIATE[..name_start],
                &INITIATE[end + 1..]
            )));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::xmpp::stanza::{NS_CLIENT, NS_STANZAS, error_condition};

    #[test]
    fn parses_session_initiate_example() {
        let j = jingle(INITIATE);
        assert_eq!(j.action, Action::SessionInitiate);
        assert_eq!(j.sid, "a73sjjvkla37jfea");
        assert_eq!(j.initiator.as_deref(), Some("juliet@example.com/phone"));
        assert_eq!(j.responder, None);
        assert_eq!(j.reason, None);
        assert_eq!(j.info, None);
        assert_eq!(j.group_bundle, Some(vec!["audio".to_owned()]));
        assert_eq!(j.contents.len(), 1);
        let c = j.content("audio").expect("audio content");
        assert_eq!(c.creator, Party::Initiator);
        assert_eq!(c.senders, Senders::Both);

        let d = c.description.as_ref().expect("description");
        assert_eq!(d.media, "audio");
        assert!(d.rtcp_mux);
        let ids: Vec<u8> = d.payload_types.iter().map(|p| p.id).collect();
        assert_eq!(ids, [111, 9, 0, 126]);
        let opus = &d.payload_types[0];
        assert_eq!(opus.name.as_deref(), Some("opus"));
        assert_eq!(opus.clockrate, Some(48_000));
        assert_eq!(opus.channels, 2);
        assert_eq!(opus.ptime, None);
        assert_eq!(opus.maxptime, None);
        assert_eq!(
            opus.parameters,
            [
                ("minptime".to_owned(), "10".to_owned()),
                ("useinbandfec".to_owned(), "1".to_owned())
            ]
        );
        assert_eq!(opus.rtcp_fb.len(), 1);
        assert_eq!(opus.rtcp_fb[0].attr("type"), Some("transport-cc"));
        assert!(opus.rtcp_fb[0].has_ns(NS_RTCP_FB));
        assert_eq!(d.payload_types[1].name.as_deref(), Some("G722"));
        assert_eq!(d.payload_types[1].clockrate, Some(8_000));
        assert_eq!(d.payload_types[1].channels, 1);
        assert_eq!(d.payload_types[2].name.as_deref(), Some("PCMU"));
        assert_eq!(d.payload_types[3].name.as_deref(), Some("telephone-event"));
        assert_eq!(d.rtp_hdrext.len(), 1);
        assert_eq!(
            d.rtp_hdrext[0].attr("uri"),
            Some("urn:ietf:params:rtp-hdrext:ssrc-audio-level")
        );
        assert_eq!(d.sources.len(), 1);
        assert_eq!(d.sources[0].ssrc, 3_735_928_559);
        assert_eq!(d.sources[0].cname(), Some("Yv5wvbCdsDW2Prgd"));
        assert_eq!(
            d.sources[0].parameters[1],
            ("msid".to_owned(), "stream0 track0".to_owned())
        );
        assert!(d.crypto.is_empty() && d.ssrc_groups.is_empty() && d.other.is_empty());

        let t = c.transport.as_ref().expect("transport");
        assert_eq!(t.ufrag, "8hhy");
        assert_eq!(t.pwd, "asd88fgpdd777uzjYhagZg");
        assert!(!format!("{t:?}").contains("asd88fgpdd777uzjYhagZg"));
        assert_eq!(t.fingerprints.len(), 1);
        assert_eq!(t.fingerprints[0].hash, "sha-256");
        assert_eq!(t.fingerprints[0].setup, Some(Setup::Actpass));
        assert!(t.fingerprints[0].value.starts_with("3D:C0:FB"));
        assert!(t.fingerprints[0].value.ends_with("CC:B9"));
        assert_eq!(t.candidates.len(), 2);
        let host = &t.candidates[0];
        assert_eq!(
            host,
            &JingleCandidate {
                component: 1,
                foundation: "1".into(),
                generation: 0,
                id: "c1".into(),
                ip: "10.0.0.5".into(),
                port: 50000,
                priority: 2_130_706_431,
                protocol: "udp".into(),
                kind: CandidateType::Host,
                network: Some(0),
                rel_addr: None,
                rel_port: None,
                tcptype: None,
            }
        );
        let srflx = &t.candidates[1];
        assert_eq!(srflx.kind, CandidateType::ServerReflexive);
        assert_eq!(srflx.id, "c2");
        assert_eq!(srflx.ip, "192.0.2.10");
        assert_eq!(srflx.priority, 1_694_498_815);
        assert_eq!(srflx.rel_addr.as_deref(), Some("10.0.0.5"));
        assert_eq!(srflx.rel_port, Some(50000));

        // And it survives our own serialization unchanged.
        assert_eq!(roundtrip(&j), j);
    }

    #[test]
    fn session_accept_roundtrip() {
        let j = jingle(ACCEPT);
        assert_eq!(j.action, Action::SessionAccept);
        assert_eq!(
            j.responder.as_deref(),
            Some("+15551234567@sip.example.com/gw")
        );
        let c = j.content("audio").expect("content");
        let d = c.description.as_ref().expect("description");
        assert_eq!(d.payload_types.len(), 2);
        assert_eq!(d.sources[0].ssrc, 287_454_020);
        let t = c.transport.as_ref().expect("transport");
        assert_eq!(t.fingerprints[0].setup, Some(Setup::Active));
        assert_eq!(t.candidates[0].id, "g1");
        assert_eq!(roundtrip(&j), j);

        // The IQ wrapper carries it to the right place.
        let iq = j.to_iq(NS_CLIENT, "sa1", "a@b/c", "d@e/f");
        assert_eq!(iq.attr("type"), Some("set"));
        assert_eq!(Jingle::from_iq(&iq), Some(Ok(j)));
    }

    #[test]
    fn session_terminate_busy_roundtrip() {
        let j = Jingle {
            reason: Some(Reason::new(ReasonCondition::Busy).with_text("486 Busy Here")),
            ..Jingle::new(Action::SessionTerminate, "a73sjjvkla37jfea")
        };
        let el = j.to_element();
        let r = el.get_child("reason", NS_JINGLE).expect("reason");
        assert!(r.has_child("busy", NS_JINGLE));
        assert_eq!(
            r.get_child("text", NS_JINGLE).map(|t| t.text()).as_deref(),
            Some("486 Busy Here")
        );
        assert_eq!(roundtrip(&j), j);

        // The §2.7 example itself.
        let parsed = jingle(
            "<iq from='+15551234567@sip.example.com/gw' to='juliet@example.com/phone' id='st1' type='set'>
 <jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='a73sjjvkla37jfea'>
  <reason><busy/><text>486 Busy Here</text></reason></jingle></iq>",
        );
        assert_eq!(parsed, j);
    }

    #[test]
    fn unknown_reason_reads_as_general_error() {
        let j = jingle(
            "<iq type='set' id='x'><jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'>\
             <reason><frobnicated/><sip-error xmlns='urn:x' code='499'/></reason></jingle></iq>",
        );
        let r = j.reason.expect("reason");
        assert_eq!(r.condition, ReasonCondition::GeneralError);
        assert_eq!(r.extra.len(), 2);
    }

    #[test]
    fn transport_info_parses() {
        let j = jingle(TRANSPORT_INFO);
        assert_eq!(j.action, Action::TransportInfo);
        let t = j.contents[0].transport.as_ref().expect("transport");
        assert_eq!(t.ufrag, "8hhy");
        assert!(t.fingerprints.is_empty());
        let c = &t.candidates[0];
        assert_eq!(c.kind, CandidateType::Relay);
        assert_eq!(c.port, 3478);
        assert_eq!(
            (c.rel_addr.as_deref(), c.rel_port),
            (Some("192.0.2.10"), Some(50000))
        );
        assert_eq!(roundtrip(&j), j);
    }

    #[test]
    fn session_info_payloads() {
        let ringing = jingle(
            "<iq from='+15551234567@sip.example.com/gw' to='juliet@example.com/phone' id='r1' type='set'>
 <jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='a73sjjvkla37jfea'>
  <ringing xmlns='urn:xmpp:jingle:apps:rtp:info:1'/></jingle></iq>",
        );
        assert_eq!(ringing.info, Some(SessionInfo::Ringing));
        assert_eq!(roundtrip(&ringing), ringing);

        let ping = jingle(
            "<iq type='set' id='p'><jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='s'/></iq>",
        );
        assert_eq!(ping.info, Some(SessionInfo::Ping));
        assert_eq!(roundtrip(&ping), ping);

        let mute = jingle(
            "<iq type='set' id='m'><jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='s'>\
             <mute xmlns='urn:xmpp:jingle:apps:rtp:info:1' creator='responder' name='audio'/></jingle></iq>",
        );
        assert_eq!(
            mute.info,
            Some(SessionInfo::Mute {
                creator: Some(Party::Responder),
                name: Some("audio".into())
            })
        );
        assert_eq!(roundtrip(&mute), mute);

        for other in [
            "<pause xmlns='urn:xmpp:jingle:apps:rtp:info:1'/>",
            "<checksum xmlns='urn:xmpp:jingle:apps:file-transfer:5'/>",
        ] {
            let iq = stanza(&format!(
                "<iq type='set' id='u' from='a@b/c' to='d@e/f'><jingle xmlns='urn:xmpp:jingle:1' \
                 action='session-info' sid='s'>{other}</jingle></iq>"
            ));
            let j = Jingle::from_iq(&iq).expect("jingle").expect("parses");
            assert!(
                matches!(j.info, Some(SessionInfo::Unsupported { .. })),
                "{other}"
            );
            let err = jingle_error_reply(&iq, JingleErrorCondition::UnsupportedInfo);
            let e = err.get_child("error", NS_CLIENT).expect("error");
            assert_eq!(
                error_condition(e, NS_STANZAS).as_deref(),
                Some("feature-not-implemented")
            );
            assert!(e.has_child("unsupported-info", NS_JINGLE_ERRORS));
            assert_eq!(err.attr("to"), Some("a@b/c"));
        }
    }

    #[test]
    fn jmi_examples() {
        let propose = stanza(
            "<message from='juliet@example.com/phone' to='+15551234567@sip.example.com' type='chat' id='jm-propose-ca3cf894'>
 <propose xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'>
  <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>
 <request xmlns='urn:xmpp:receipts'/><store xmlns='urn:xmpp:hints'/></message>",
        );
        let m = JmiMessage::from_message(&propose)
            .expect("jmi")
            .expect("parses");
        assert_eq!(m.id, "ca3cf894-5325-482f-a412-a6e9f832298d");
        assert_eq!(
            m.kind,
            JmiKind::Propose {
                media: vec!["audio".into()]
            }
        );
        assert_eq!(JmiMessage::from_element(&m.to_element()), Ok(m));

        let id = "ca3cf894-5325-482f-a412-a6e9f832298d";
        let reason = |c: &str| format!("<reason xmlns='urn:xmpp:jingle:1'><{c}/></reason>");
        let cases = [
            (format!("<proceed id='{id}'/>"), JmiKind::Proceed),
            (format!("<ringing id='{id}'/>"), JmiKind::Ringing),
            (format!("<accept id='{id}'/>"), JmiKind::Accept),
            (
                format!("<reject id='{id}'>{}</reject>", reason("busy")),
                JmiKind::Reject {
                    reason: Some(Reason::new(ReasonCondition::Busy)),
                },
            ),
            (
                format!("<retract id='{id}'>{}</retract>", reason("cancel")),
                JmiKind::Retract {
                    reason: Some(Reason::new(ReasonCondition::Cancel)),
                },
            ),
            (
                format!("<finish id='{id}'>{}</finish>", reason("success")),
                JmiKind::Finish {
                    reason: Some(Reason::new(ReasonCondition::Success)),
                },
            ),
            (
                format!("<retract id='{id}'/>"),
                JmiKind::Retract { reason: None },
            ),
        ];
        for (child, kind) in cases {
            let xml = child.replacen(' ', " xmlns='urn:xmpp:jingle-message:0' ", 1);
            let msg = stanza(&format!(
                "<message type='chat' from='a@b/c' to='d@e'>{xml}<store xmlns='urn:xmpp:hints'/></message>"
            ));
            let m = JmiMessage::from_message(&msg)
                .expect("jmi")
                .expect("parses");
            assert_eq!(m.kind, kind, "{child}");
            assert_eq!(m.id, id);
            assert_eq!(JmiMessage::from_element(&m.to_element()), Ok(m));
        }

        let no_id = stanza("<message><proceed xmlns='urn:xmpp:jingle-message:0'/></message>");
        assert_eq!(
            JmiMessage::from_message(&no_id),
            Some(Err(missing("proceed", "id")))
        );
        let unknown = stanza("<message><frob xmlns='urn:xmpp:jingle-message:0' id='x'/></message>");
        assert_eq!(
            JmiMessage::from_message(&unknown),
            Some(Err(JingleError::UnknownJmi("frob".into())))
        );
        assert_eq!(JmiMessage::from_message(&stanza("<message/>")), None);
    }

    #[test]
    fn missing_required_attributes_are_typed_errors() {
        let parse = |xml: &str| Jingle::from_iq(&stanza(xml)).expect("has jingle");
        assert_eq!(
            parse(&INITIATE.replace("sid='a73sjjvkla37jfea'", "")),
            Err(missing("jingle", "sid"))
        );
        assert_eq!(
            parse(&INITIATE.replace("action='session-initiate'", "")),
            Err(missing("jingle", "action"))
        );
        assert_eq!(
            parse(&INITIATE.replace("ufrag='8hhy'", "")),
            Err(missing("transport", "ufrag"))
        );
        assert_eq!(
            parse(&INITIATE.replace("action='session-initiate'", "action='session-frobnicate'")),
            Err(JingleError::UnknownAction("session-frobnicate".into()))
        );
        assert_eq!(
            parse(&INITIATE.replace("id='111' name='opus'", "id='111'")),
            Err(missing("payload-type", "name"))
        );
        assert_eq!(
            parse(&INITIATE.replace(
                "port='50000' priority='2130706431'",
                "priority='2130706431'"
            )),
            Err(missing("candidate", "port"))
        );
        assert_eq!(
            parse(&INITIATE.replace("creator='initiator' name='audio'", "name='audio'")),
            Err(missing("content", "creator"))
        );
        assert_eq!(
            parse(&INITIATE.replace("type='host'", "type='lan'")),
            Err(invalid("candidate", "type", "lan"))
        );
        // The error text names the element and attribute.
        assert_eq!(
            missing("transport", "ufrag").to_string(),
            "<transport/> lacks the required 'ufrag' attribute"
        );
    }

    #[test]
    fn content_modify_and_jitsi_source_add() {
        let cm = jingle(
            "<iq type='set' id='cm'><jingle xmlns='urn:xmpp:jingle:1' action='content-modify' sid='s'>\
             <content creator='initiator' name='audio' senders='initiator'/></jingle></iq>",
        );
        assert_eq!(cm.contents[0].senders, Senders::Initiator);
        assert_eq!(roundtrip(&cm), cm);
        let no_senders = Jingle::from_iq(&stanza(
            "<iq type='set' id='cm'><jingle xmlns='urn:xmpp:jingle:1' action='content-modify' sid='s'>\
             <content creator='initiator' name='audio'/></jingle></iq>",
        ));
        assert_eq!(no_senders, Some(Err(missing("content", "senders"))));

        let add = jingle(
            "<iq type='set' id='sa'><jingle xmlns='urn:xmpp:jingle:1' action='addsource' sid='s'>\
             <content name='audio'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>\
             <source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='42'><parameter name='msid' value='a b'/></source>\
             <ssrc-group xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' semantics='FID'><source ssrc='42'/><source ssrc='43'/></ssrc-group>\
             </description></content></jingle></iq>",
        );
        assert!(add.action.is_source_add());
        let d = add.contents[0].description.as_ref().expect("description");
        assert_eq!(d.sources[0].ssrc, 42);
        assert_eq!(d.ssrc_groups.len(), 1);
        assert!(d.payload_types.is_empty());
    }

    /// Every attribute of the §2.2 example replaced by garbage or removed, one at a time:
    /// parsing must return, never panic, and what parses survives our serialization.
    #[test]
    fn mutated_attributes_never_panic() {
        let mut parsed_ok = 0;
        let mut parsed_err = 0;
        for root in mutated_initiates() {
            for iq in root.children() {
                match Jingle::from_iq(iq) {
                    Some(Ok(j)) => {
                        parsed_ok += 1;
                        let _ = roundtrip(&j);
                    }
                    Some(Err(e)) => {
                        parsed_err += 1;
                        let _ = e.to_string();
                    }
                    None => {}
                }
            }
        }
        assert!(parsed_ok > 0 && parsed_err > 0, "{parsed_ok} {parsed_err}");
    }

    #[test]
    fn condition_and_action_names_roundtrip() {
        for c in ReasonCondition::ALL {
            assert_eq!(ReasonCondition::parse(c.as_str()), Some(c));
        }
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
    }

    #[test]
    fn jingle_error_conditions() {
        let iq = stanza(
            "<iq type='set' id='ti9' from='juliet@example.com/phone' to='gw@x/y'><jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='zz'/></iq>",
        );
        let r = jingle_error_reply(&iq, JingleErrorCondition::UnknownSession);
        assert_eq!(r.attr("type"), Some("error"));
        assert_eq!(r.attr("id"), Some("ti9"));
        let e = r.get_child("error", NS_CLIENT).expect("error");
        assert_eq!(e.attr("type"), Some("cancel"));
        assert_eq!(
            error_condition(e, NS_STANZAS).as_deref(),
            Some("item-not-found")
        );
        assert!(e.has_child("unknown-session", NS_JINGLE_ERRORS));
    }
}
