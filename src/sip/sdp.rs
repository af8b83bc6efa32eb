//! SDP for the SIP leg: the session-description model (RFC 4566, updated by RFC 8866), its
//! parser and printer, and the RFC 3264 offer/answer rules the gateway applies as a SIP user
//! agent: building our offer, answering a peer's offer, checking a peer's answer, re-offers
//! for hold and resume, and the summary of what was negotiated that the media engine needs.
//!
//! Must not touch: sockets, RTP, codec DSP, the clock, randomness (session ids are injected),
//! or Jingle. `jingle/sdp.rs` maps these types to Jingle elements (PROTOCOLS.md §3); nothing
//! here knows about XML. SIP messages are not seen either: callers hand in the body bytes of
//! an `application/sdp` part and take back text.
//!
//! Parsing follows RFC 4566 §5 in spirit: unknown line types are ignored, attributes whose
//! value we cannot type are kept raw (in order, so printing loses nothing), and a repeat of a
//! line that may appear only once is ignored (the first one counts). Only what makes the
//! description unusable is an error: no `v=0`, no `o=`, a broken `o=`/`c=`/`b=`/`t=`/`m=`
//! line, a non-numeric port or payload type, or input beyond the limits below. CR, LF and
//! CRLF all end a line.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::config::Secret;

/// Largest SDP body accepted. An audio-only SIP offer is well under 1 KiB; a browser offer
/// with audio, video, data channel and a dozen ICE candidates is 6–10 KiB. 16 KiB leaves room
/// for that and bounds what a hostile peer can make us allocate per message.
pub const MAX_SDP_BYTES: usize = 16 * 1024;

/// Most `m=` sections accepted. The gateway uses one audio stream; browsers bundle audio,
/// video and data (3), Jitsi adds a few more. 16 is generous and caps the answer we build.
pub const MAX_MEDIA: usize = 16;

/// Most formats on one `m=` line. The RTP payload-type space has 128 values; real offers
/// list at most ~40 (Chrome's video line). 64 keeps every real offer and bounds the work of
/// the intersection in [`create_answer`].
pub const MAX_FORMATS: usize = 64;

/// Peer text quoted in an error is cut to this many characters: enough to diagnose, too
/// short to flood a log.
const MAX_EXCERPT_CHARS: usize = 64;

/// Errors of the SDP parser. Peer text is cut to a short excerpt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is larger than [`MAX_SDP_BYTES`].
    #[error("SDP body of {len} bytes exceeds the {MAX_SDP_BYTES}-byte limit")]
    TooLarge { len: usize },
    /// The first line is not `v=0` (RFC 4566 §5.1: the only version).
    #[error("SDP does not start with v=0 (RFC 4566 §5.1)")]
    NoVersion,
    /// A mandatory line is absent. Only `o=` is enforced: it identifies the session and its
    /// version, which RFC 3264 §8 needs to tell a new offer from a repeated one.
    #[error("SDP lacks the mandatory {kind}= line")]
    Missing { kind: char },
    /// A line of a known type whose syntax is broken; `line` counts from 1.
    #[error("SDP line {line} ({kind}=): {reason}: {excerpt:?}")]
    Malformed {
        line: usize,
        kind: char,
        reason: &'static str,
        excerpt: String,
    },
    /// More than [`MAX_MEDIA`] `m=` sections.
    #[error("SDP line {line}: more than {MAX_MEDIA} m= sections")]
    TooManyMedia { line: usize },
    /// More than [`MAX_FORMATS`] formats on one `m=` line.
    #[error("SDP line {line}: more than {MAX_FORMATS} formats on one m= line")]
    TooManyFormats { line: usize },
}

fn malformed(line: usize, kind: char, reason: &'static str, text: &str) -> SdpError {
    SdpError::Malformed {
        line,
        kind,
        reason,
        excerpt: text.chars().take(MAX_EXCERPT_CHARS).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Payload types and codecs
// ---------------------------------------------------------------------------------------------

/// An RTP payload type: 7 bits (RFC 3550 §5.1), so 0–127.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// Static payload types of the audio codecs the gateway cares about (RFC 3551 table 4).
    pub const PCMU: PayloadType = PayloadType(0);
    pub const GSM: PayloadType = PayloadType(3);
    pub const PCMA: PayloadType = PayloadType(8);
    pub const G722: PayloadType = PayloadType(9);
    pub const G729: PayloadType = PayloadType(18);

    /// `None` above 127: the RTP header has only 7 bits for it.
    pub const fn new(value: u8) -> Option<Self> {
        if value <= 127 {
            Some(PayloadType(value))
        } else {
            None
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// 96–127 is the dynamic range, bound per session by `a=rtpmap` (RFC 3551 §3).
    pub const fn is_dynamic(self) -> bool {
        self.0 >= 96
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn parse_pt(s: &str) -> Option<PayloadType> {
    s.parse::<u8>().ok().and_then(PayloadType::new)
}

/// RFC 3551 table 4 (audio) and table 5 (video): payload types usable without `a=rtpmap`.
/// 14 (MPA) has no fixed channel count; 1 is what RFC 4566 §6 assumes when absent.
const STATIC_PAYLOAD_TYPES: &[(u8, &str, u32, u16)] = &[
    (0, "PCMU", 8000, 1),
    (3, "GSM", 8000, 1),
    (4, "G723", 8000, 1),
    (5, "DVI4", 8000, 1),
    (6, "DVI4", 16000, 1),
    (7, "LPC", 8000, 1),
    (8, "PCMA", 8000, 1),
    // RTP clock 8000 although G.722 samples at 16 kHz: RFC 3551 §4.5.2 kept an old mistake.
    (9, "G722", 8000, 1),
    (10, "L16", 44100, 2),
    (11, "L16", 44100, 1),
    (12, "QCELP", 8000, 1),
    (13, "CN", 8000, 1),
    (14, "MPA", 90000, 1),
    (15, "G728", 8000, 1),
    (16, "DVI4", 11025, 1),
    (17, "DVI4", 22050, 1),
    (18, "G729", 8000, 1),
    (25, "CelB", 90000, 1),
    (26, "JPEG", 90000, 1),
    (28, "nv", 90000, 1),
    (31, "H261", 90000, 1),
    (32, "MPV", 90000, 1),
    (33, "MP2T", 90000, 1),
    (34, "H263", 90000, 1),
];

/// A media format as SDP describes it: what a media engine needs to pick an encoder.
/// Names compare case-insensitively (RFC 4855: media subtype names are case-insensitive).
#[derive(Debug, Clone, Eq)]
pub struct Codec {
    /// Encoding name as in `a=rtpmap`, e.g. `opus`, `PCMU`, `telephone-event`.
    pub name: String,
    /// RTP clock rate (Hz), which is not always the sampling rate (see [`Codec::g722`]).
    pub clock_rate: u32,
    /// Audio channels; 1 when `a=rtpmap` leaves it out (RFC 4566 §6).
    pub channels: u16,
    /// The `a=fmtp` parameter string, if any, e.g. `minptime=10;useinbandfec=1`.
    pub fmtp: Option<String>,
}

impl PartialEq for Codec {
    fn eq(&self, other: &Self) -> bool {
        self.same_format(other) && self.fmtp == other.fmtp
    }
}

impl Codec {
    pub fn new(name: impl Into<String>, clock_rate: u32, channels: u16) -> Self {
        Codec {
            name: name.into(),
            clock_rate,
            channels,
            fmtp: None,
        }
    }

    pub fn with_fmtp(mut self, fmtp: impl Into<String>) -> Self {
        self.fmtp = Some(fmtp.into());
        self
    }

    /// `opus/48000/2`, always, whatever the real rate and channel count (RFC 7587 §7).
    pub fn opus() -> Self {
        Codec::new("opus", 48000, 2)
    }

    /// `G722/8000`: RFC 3551 §4.5.2 fixes the RTP clock at 8000 though G.722 samples at 16 kHz.
    pub fn g722() -> Self {
        Codec::new("G722", 8000, 1)
    }

    /// G.711 µ-law, static payload type 0 (RFC 3551 §4.5.14).
    pub fn pcmu() -> Self {
        Codec::new("PCMU", 8000, 1)
    }

    /// G.711 A-law, static payload type 8 (RFC 3551 §4.5.14).
    pub fn pcma() -> Self {
        Codec::new("PCMA", 8000, 1)
    }

    /// RFC 4733 DTMF events at 8000 Hz, announcing events 0–15 (digits, `*`, `#`, A–D) and
    /// 16 (hook flash, from RFC 2833 §3.10), the set SIP phones and Jitsi use.
    pub fn telephone_event() -> Self {
        Codec::new("telephone-event", 8000, 1).with_fmtp("0-16")
    }

    /// Same encoding, clock and channels; `fmtp` is not compared. That is what matching an
    /// offered audio format to one of ours means (RFC 3264 §6.1).
    pub fn same_format(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }

    /// RFC 4733 events rather than audio.
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }

    /// The codec a static payload type stands for when no `a=rtpmap` names it.
    pub fn from_static(pt: PayloadType) -> Option<Codec> {
        STATIC_PAYLOAD_TYPES
            .iter()
            .find(|(n, ..)| *n == pt.0)
            .map(|&(_, name, clock, channels)| Codec::new(name, clock, channels))
    }

    /// The static payload type of this codec, if RFC 3551 assigns one.
    pub fn static_payload_type(&self) -> Option<PayloadType> {
        STATIC_PAYLOAD_TYPES
            .iter()
            .find(|&&(_, name, clock, channels)| {
                self.name.eq_ignore_ascii_case(name)
                    && self.clock_rate == clock
                    && self.channels == channels
            })
            .map(|&(pt, ..)| PayloadType(pt))
    }

    fn rtpmap(&self, pt: PayloadType) -> Rtpmap {
        Rtpmap {
            pt,
            encoding: self.name.clone(),
            clock_rate: self.clock_rate,
            channels: (self.channels != 1).then_some(self.channels),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.clock_rate)?;
        if self.channels != 1 {
            write!(f, "/{}", self.channels)?;
        }
        Ok(())
    }
}

/// A codec bound to a payload type number in one SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadCodec {
    pub pt: PayloadType,
    pub codec: Codec,
}

impl PayloadCodec {
    pub fn new(pt: PayloadType, codec: Codec) -> Self {
        PayloadCodec { pt, codec }
    }
}

/// Splits an `a=fmtp` parameter string at `;` into `(Some(name), value)` for `name=value` and
/// `(None, token)` for a bare token such as telephone-event's `0-16` or RED's `111/111`
/// (PROTOCOLS.md §3.1 maps the latter to a Jingle parameter with an empty name). Empty pieces
/// are skipped; whitespace around pieces is trimmed.
pub fn fmtp_parameters(params: &str) -> impl Iterator<Item = (Option<&str>, &str)> {
    params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((name, value)) => (Some(name.trim()), value.trim()),
            None => (None, p),
        })
}

// ---------------------------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------------------------

/// `<addrtype>` of `o=` and `c=` (RFC 4566 §5.2, §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrType {
    Ip4,
    Ip6,
    Other(String),
}

impl AddrType {
    fn parse(s: &str) -> Self {
        match s {
            "IP4" => AddrType::Ip4,
            "IP6" => AddrType::Ip6,
            other => AddrType::Other(other.to_owned()),
        }
    }

    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddrType::Ip4,
            IpAddr::V6(_) => AddrType::Ip6,
        }
    }
}

impl fmt::Display for AddrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrType::Ip4 => f.write_str("IP4"),
            AddrType::Ip6 => f.write_str("IP6"),
            AddrType::Other(s) => Text(s).fmt(f),
        }
    }
}

/// An address of `o=`, `c=` or `a=rtcp`: an IP literal of the announced family, or anything
/// else kept as text (a host name, a multicast address with `/ttl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Ip(IpAddr),
    Other(String),
}

impl Address {
    fn parse(addr_type: &AddrType, s: &str) -> Self {
        let ip = match addr_type {
            AddrType::Ip4 => s.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
            AddrType::Ip6 => s.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
            AddrType::Other(_) => None,
        };
        ip.map_or_else(|| Address::Other(s.to_owned()), Address::Ip)
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ip(ip) => Some(*ip),
            Address::Other(_) => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => ip.fmt(f),
            Address::Other(s) => Text(s).fmt(f),
        }
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`
/// (RFC 4566 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    /// Opaque: RFC 4566 asks for digits, but only equality matters (RFC 3264 §8), so we do not
    /// insist that it fits a number.
    pub session_id: String,
    /// Incremented on every change (RFC 3264 §8), hence numeric.
    pub session_version: u64,
    pub net_type: String,
    pub addr_type: AddrType,
    pub address: Address,
}

impl Origin {
    fn parse(no: usize, v: &str) -> Result<Self, SdpError> {
        let f: Vec<&str> = v.split_ascii_whitespace().collect();
        let [username, session_id, version, net_type, addr_type, address] = f[..] else {
            return Err(malformed(no, 'o', "expected 6 fields", v));
        };
        let session_version = version
            .parse()
            .map_err(|_| malformed(no, 'o', "non-numeric sess-version", v))?;
        let addr_type = AddrType::parse(addr_type);
        Ok(Origin {
            username: username.to_owned(),
            session_id: session_id.to_owned(),
            session_version,
            net_type: net_type.to_owned(),
            address: Address::parse(&addr_type, address),
            addr_type,
        })
    }

    /// The fields that name the session; all but the version (RFC 4566 §5.2).
    fn same_session(&self, other: &Origin) -> bool {
        self.username == other.username
            && self.session_id == other.session_id
            && self.net_type == other.net_type
            && self.addr_type == other.addr_type
            && self.address == other.address
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            Text(&self.username),
            Text(&self.session_id),
            self.session_version,
            Text(&self.net_type),
            self.addr_type,
            self.address
        )
    }
}

/// `c=<nettype> <addrtype> <connection-address>` (RFC 4566 §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub net_type: String,
    pub addr_type: AddrType,
    pub address: Address,
}

impl Connection {
    /// `IN IP4 …` or `IN IP6 …` for an IP literal.
    pub fn from_ip(ip: IpAddr) -> Self {
        Connection {
            net_type: "IN".to_owned(),
            addr_type: AddrType::of(ip),
            address: Address::Ip(ip),
        }
    }

    fn parse_fields(f: &[&str]) -> Option<Self> {
        let [net_type, addr_type, address] = *f else {
            return None;
        };
        let addr_type = AddrType::parse(addr_type);
        Some(Connection {
            net_type: net_type.to_owned(),
            address: Address::parse(&addr_type, address),
            addr_type,
        })
    }

    fn parse(no: usize, v: &str) -> Result<Self, SdpError> {
        let f: Vec<&str> = v.split_ascii_whitespace().collect();
        Connection::parse_fields(&f).ok_or_else(|| malformed(no, 'c', "expected 3 fields", v))
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            Text(&self.net_type),
            self.addr_type,
            self.address
        )
    }
}

/// `b=<bwtype>:<bandwidth>` (RFC 4566 §5.8), e.g. `AS:64` (kbit/s) or `TIAS:64000` (bit/s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    pub kind: String,
    pub value: u64,
}

impl Bandwidth {
    fn parse(no: usize, v: &str) -> Result<Self, SdpError> {
        let (kind, value) = v
            .split_once(':')
            .ok_or_else(|| malformed(no, 'b', "expected <bwtype>:<bandwidth>", v))?;
        let value = value
            .parse()
            .map_err(|_| malformed(no, 'b', "non-numeric bandwidth", v))?;
        Ok(Bandwidth {
            kind: kind.to_owned(),
            value,
        })
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Text(&self.kind), self.value)
    }
}

/// `t=<start> <stop>` with its `r=` lines kept as text (RFC 4566 §5.9, §5.10). SIP sessions
/// use `t=0 0` (RFC 3264 §5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timing {
    pub start: u64,
    pub stop: u64,
    pub repeats: Vec<String>,
}

impl Timing {
    fn parse(no: usize, v: &str) -> Result<Self, SdpError> {
        let f: Vec<&str> = v.split_ascii_whitespace().collect();
        let [start, stop] = f[..] else {
            return Err(malformed(no, 't', "expected <start> <stop>", v));
        };
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| malformed(no, 't', "non-numeric time", v))
        };
        Ok(Timing {
            start: num(start)?,
            stop: num(stop)?,
            repeats: Vec::new(),
        })
    }
}

/// Media direction (RFC 4566 §6, RFC 3264 §5.1), from the point of view of the SDP's author.
/// Absent means `sendrecv`; a media-level value overrides the session-level one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub const fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub const fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub const fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The direction to answer `self` (the offer's) with when we would like `local`
    /// (RFC 3264 §6.1): we send only if the offerer receives and receive only if it sends.
    /// So sendonly ↔ recvonly, inactive stays inactive, and sendrecv gives `local`.
    pub const fn answer(self, local: Direction) -> Self {
        Direction::from_flags(
            self.receives() && local.sends(),
            self.sends() && local.receives(),
        )
    }

    /// Putting a stream on hold (RFC 3264 §8.4): sendrecv → sendonly, recvonly → inactive.
    pub const fn held(self) -> Self {
        Direction::from_flags(self.sends(), false)
    }

    /// Taking a stream off hold, the inverse of [`Direction::held`].
    pub const fn resumed(self) -> Self {
        Direction::from_flags(self.sends(), true)
    }

    fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]` (RFC 4566 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtpmap {
    pub pt: PayloadType,
    pub encoding: String,
    pub clock_rate: u32,
    /// Kept as written, so `PCMU/8000/1` and `PCMU/8000` each print back unchanged.
    pub channels: Option<u16>,
}

/// `a=fmtp:<pt> <parameters>` (RFC 4566 §6). Split the string with [`fmtp_parameters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    pub pt: PayloadType,
    pub params: String,
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp {
    pub port: u16,
    pub connection: Option<Connection>,
}

/// `a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]` (RFC 4568 §9.1). The key
/// parameters carry the SRTP master key, so they are a [`Secret`] and never show in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: String,
    pub key_params: Secret,
    pub session_params: Option<String>,
}

/// `a=fingerprint:<hash-func> <fingerprint>` (RFC 8122 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub hash: String,
    pub value: String,
}

/// `a=setup` (RFC 4145 §4): who opens the DTLS/TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

impl Setup {
    fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

/// One `a=` line. The ones the gateway acts on are typed; every other one, and a typed one
/// whose value does not parse, is kept as [`Attribute::Other`] (RFC 4566 §5.13: ignore what
/// is not understood) so that printing gives it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    Rtpmap(Rtpmap),
    Fmtp(Fmtp),
    /// `a=ptime`, milliseconds of media per packet the author wants to receive.
    Ptime(u32),
    /// `a=maxptime` (RFC 4566 §6).
    MaxPtime(u32),
    Direction(Direction),
    Rtcp(Rtcp),
    /// `a=rtcp-mux` (RFC 5761 §5.1.1).
    RtcpMux,
    Crypto(Crypto),
    Fingerprint(Fingerprint),
    Setup(Setup),
    /// `a=ice-ufrag` (RFC 8839 §5.4).
    IceUfrag(String),
    /// `a=ice-pwd`: the ICE password, a credential, so it is a [`Secret`].
    IcePwd(Secret),
    /// `a=candidate`, value kept as text (RFC 8839 §5.1); `jingle/sdp.rs` splits it.
    Candidate(String),
    /// `a=mid` (RFC 5888 §4).
    Mid(String),
    /// `a=ssrc`, value kept as text (RFC 5576 §4.1).
    Ssrc(String),
    Other {
        name: String,
        value: Option<String>,
    },
}

impl Attribute {
    fn parse(line: &str) -> Attribute {
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (line, None),
        };
        Attribute::typed(name, value).unwrap_or_else(|| Attribute::Other {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        })
    }

    fn typed(name: &str, value: Option<&str>) -> Option<Attribute> {
        let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        Some(match (name, value) {
            ("rtpmap", Some(v)) => Attribute::Rtpmap(parse_rtpmap(v)?),
            ("fmtp", Some(v)) => {
                let v = v.trim_start();
                let (pt, params) = v.split_once([' ', '\t']).unwrap_or((v, ""));
                Attribute::Fmtp(Fmtp {
                    pt: parse_pt(pt)?,
                    params: params.trim_start().to_owned(),
                })
            }
            ("ptime", Some(v)) => Attribute::Ptime(v.trim().parse().ok()?),
            ("maxptime", Some(v)) => Attribute::MaxPtime(v.trim().parse().ok()?),
            ("sendrecv", None) => Attribute::Direction(Direction::SendRecv),
            ("sendonly", None) => Attribute::Direction(Direction::SendOnly),
            ("recvonly", None) => Attribute::Direction(Direction::RecvOnly),
            ("inactive", None) => Attribute::Direction(Direction::Inactive),
            ("rtcp", Some(v)) => {
                let f: Vec<&str> = v.split_ascii_whitespace().collect();
                let (port, rest) = f.split_first()?;
                let connection = match rest {
                    [] => None,
                    _ => Some(Connection::parse_fields(rest)?),
                };
                Attribute::Rtcp(Rtcp {
                    port: port.parse().ok()?,
                    connection,
                })
            }
            ("rtcp-mux", None) => Attribute::RtcpMux,
            ("crypto", Some(v)) => {
                let mut f = v.split_ascii_whitespace();
                let tag = f.next()?.parse().ok()?;
                let suite = f.next()?.to_owned();
                let key_params = Secret::new(f.next()?);
                let rest: Vec<&str> = f.collect();
                Attribute::Crypto(Crypto {
                    tag,
                    suite,
                    key_params,
                    session_params: (!rest.is_empty()).then(|| rest.join(" ")),
                })
            }
            ("fingerprint", Some(v)) => {
                let f: Vec<&str> = v.split_ascii_whitespace().collect();
                let [hash, value] = f[..] else { return None };
                Attribute::Fingerprint(Fingerprint {
                    hash: hash.to_owned(),
                    value: value.to_owned(),
                })
            }
            ("setup", Some(v)) => Attribute::Setup(match v.trim() {
                "active" => Setup::Active,
                "passive" => Setup::Passive,
                "actpass" => Setup::ActPass,
                "holdconn" => Setup::HoldConn,
                _ => return None,
            }),
            ("ice-ufrag", Some(v)) => Attribute::IceUfrag(text(v)?),
            ("ice-pwd", Some(v)) => Attribute::IcePwd(Secret::new(text(v)?)),
            ("candidate", Some(v)) => Attribute::Candidate(text(v)?),
            ("mid", Some(v)) => Attribute::Mid(text(v)?),
            ("ssrc", Some(v)) => Attribute::Ssrc(text(v)?),
            _ => return None,
        })
    }
}

fn parse_rtpmap(v: &str) -> Option<Rtpmap> {
    let f: Vec<&str> = v.split_ascii_whitespace().collect();
    let [pt, encoding] = f[..] else { return None };
    let parts: Vec<&str> = encoding.split('/').collect();
    let (name, clock, channels) = match parts[..] {
        [name, clock] => (name, clock, None),
        [name, clock, channels] => (name, clock, Some(channels.parse().ok()?)),
        _ => return None,
    };
    Some(Rtpmap {
        pt: parse_pt(pt)?,
        encoding: name.to_owned(),
        clock_rate: clock.parse().ok()?,
        channels,
    })
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Rtpmap(r) => {
                write!(f, "rtpmap:{} {}/{}", r.pt, Text(&r.encoding), r.clock_rate)?;
                if let Some(ch) = r.channels {
                    write!(f, "/{ch}")?;
                }
                Ok(())
            }
            Attribute::Fmtp(p) if p.params.is_empty() => write!(f, "fmtp:{}", p.pt),
            Attribute::Fmtp(p) => write!(f, "fmtp:{} {}", p.pt, Text(&p.params)),
            Attribute::Ptime(p) => write!(f, "ptime:{p}"),
            Attribute::MaxPtime(p) => write!(f, "maxptime:{p}"),
            Attribute::Direction(d) => f.write_str(d.as_str()),
            Attribute::Rtcp(r) => {
                write!(f, "rtcp:{}", r.port)?;
                if let Some(c) = &r.connection {
                    write!(f, " {c}")?;
                }
                Ok(())
            }
            Attribute::RtcpMux => f.write_str("rtcp-mux"),
            Attribute::Crypto(c) => {
                write!(
                    f,
                    "crypto:{} {} {}",
                    c.tag,
                    Text(&c.suite),
                    Text(c.key_params.expose())
                )?;
                if let Some(p) = &c.session_params {
                    write!(f, " {}", Text(p))?;
                }
                Ok(())
            }
            Attribute::Fingerprint(p) => {
                write!(f, "fingerprint:{} {}", Text(&p.hash), Text(&p.value))
            }
            Attribute::Setup(s) => write!(f, "setup:{}", s.as_str()),
            Attribute::IceUfrag(v) => write!(f, "ice-ufrag:{}", Text(v)),
            Attribute::IcePwd(v) => write!(f, "ice-pwd:{}", Text(v.expose())),
            Attribute::Candidate(v) => write!(f, "candidate:{}", Text(v)),
            Attribute::Mid(v) => write!(f, "mid:{}", Text(v)),
            Attribute::Ssrc(v) => write!(f, "ssrc:{}", Text(v)),
            Attribute::Other { name, value } => {
                Text(name).fmt(f)?;
                if let Some(v) = value {
                    write!(f, ":{}", Text(v))?;
                }
                Ok(())
            }
        }
    }
}

/// Writes a string without CR or LF. Parsed values never hold them; this stops a value built
/// elsewhere (say from a Jingle element) from injecting lines into the SDP we send.
struct Text<'a>(&'a str);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.split(['\r', '\n']).try_for_each(|p| f.write_str(p))
    }
}

// ---------------------------------------------------------------------------------------------
// Media and session descriptions
// ---------------------------------------------------------------------------------------------

/// `<media>` of `m=` (RFC 4566 §5.14, RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaType {
    Audio,
    Video,
    Text,
    Application,
    Message,
    Image,
    Other(String),
}

impl MediaType {
    fn parse(s: &str) -> Self {
        match s {
            "audio" => MediaType::Audio,
            "video" => MediaType::Video,
            "text" => MediaType::Text,
            "application" => MediaType::Application,
            "message" => MediaType::Message,
            "image" => MediaType::Image,
            other => MediaType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaType::Audio => "audio",
            MediaType::Video => "video",
            MediaType::Text => "text",
            MediaType::Application => "application",
            MediaType::Message => "message",
            MediaType::Image => "image",
            MediaType::Other(s) => return Text(s).fmt(f),
        })
    }
}

/// `<proto>` of `m=`. `RTP/AVP` is plain RTP (RFC 3551), `RTP/SAVP` SDES-keyed SRTP
/// (RFC 3711, RFC 4568), the `F` variants add RTCP feedback (RFC 4585, RFC 5124), and the
/// `UDP/TLS/` ones are DTLS-SRTP (RFC 5764), which is the WebRTC leg's business, not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proto {
    RtpAvp,
    RtpAvpf,
    RtpSavp,
    RtpSavpf,
    UdpTlsRtpSavp,
    UdpTlsRtpSavpf,
    Other(String),
}

impl Proto {
    fn parse(s: &str) -> Self {
        match s {
            "RTP/AVP" => Proto::RtpAvp,
            "RTP/AVPF" => Proto::RtpAvpf,
            "RTP/SAVP" => Proto::RtpSavp,
            "RTP/SAVPF" => Proto::RtpSavpf,
            "UDP/TLS/RTP/SAVP" => Proto::UdpTlsRtpSavp,
            "UDP/TLS/RTP/SAVPF" => Proto::UdpTlsRtpSavpf,
            other => Proto::Other(other.to_owned()),
        }
    }

    /// RTP-based: formats are payload type numbers (RFC 4566 §5.14). Also true for
    /// transports we do not name, such as `TCP/RTP/AVP` (RFC 4571).
    pub fn is_rtp(&self) -> bool {
        match self {
            Proto::Other(s) => s.contains("RTP/AVP") || s.contains("RTP/SAVP"),
            _ => true,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Proto::RtpAvp => "RTP/AVP",
            Proto::RtpAvpf => "RTP/AVPF",
            Proto::RtpSavp => "RTP/SAVP",
            Proto::RtpSavpf => "RTP/SAVPF",
            Proto::UdpTlsRtpSavp => "UDP/TLS/RTP/SAVP",
            Proto::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
            Proto::Other(s) => s,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Text(self.as_str()).fmt(f)
    }
}

/// The format list of `m=`: payload types for RTP, opaque tokens otherwise
/// (e.g. `webrtc-datachannel`, `t38`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Formats {
    Rtp(Vec<PayloadType>),
    Other(Vec<String>),
}

impl Formats {
    pub fn len(&self) -> usize {
        match self {
            Formats::Rtp(v) => v.len(),
            Formats::Other(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn first_only(&self) -> Formats {
        match self {
            Formats::Rtp(v) => Formats::Rtp(v.iter().take(1).copied().collect()),
            Formats::Other(v) => Formats::Other(v.iter().take(1).cloned().collect()),
        }
    }
}

impl fmt::Display for Formats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Formats::Rtp(v) => v.iter().try_for_each(|pt| write!(f, " {pt}")),
            Formats::Other(v) => v.iter().try_for_each(|s| write!(f, " {}", Text(s))),
        }
    }
}

/// One media section: `m=` and the `i=`, `c=`, `b=`, `k=`, `a=` lines under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub media_type: MediaType,
    /// 0 marks a rejected or disabled stream (RFC 3264 §5.1, §6).
    pub port: u16,
    /// The `/<number of ports>` suffix (RFC 4566 §5.14), rare outside multicast.
    pub port_count: Option<u16>,
    pub proto: Proto,
    pub formats: Formats,
    pub title: Option<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    pub key: Option<String>,
    /// In order of appearance.
    pub attributes: Vec<Attribute>,
}

impl MediaDescription {
    pub fn new(media_type: MediaType, port: u16, proto: Proto, formats: Formats) -> Self {
        MediaDescription {
            media_type,
            port,
            port_count: None,
            proto,
            formats,
            title: None,
            connection: None,
            bandwidths: Vec::new(),
            key: None,
            attributes: Vec::new(),
        }
    }

    /// `m=<media> <port>[/<count>] <proto> <fmt> ...` (RFC 4566 §5.14).
    fn parse(no: usize, v: &str) -> Result<Self, SdpError> {
        let mut f = v.split_ascii_whitespace();
        let (Some(media), Some(port), Some(proto)) = (f.next(), f.next(), f.next()) else {
            return Err(malformed(
                no,
                'm',
                "expected <media> <port> <proto> <fmt>",
                v,
            ));
        };
        let (port, count) = match port.split_once('/') {
            Some((p, c)) => (p, Some(c)),
            None => (port, None),
        };
        let port = port
            .parse()
            .map_err(|_| malformed(no, 'm', "non-numeric port", v))?;
        let port_count = count
            .map(str::parse)
            .transpose()
            .map_err(|_| malformed(no, 'm', "non-numeric port count", v))?;
        let proto = Proto::parse(proto);
        let tokens: Vec<&str> = f.collect();
        if tokens.is_empty() {
            return Err(malformed(no, 'm', "no format (RFC 4566 §5.14)", v));
        }
        if tokens.len() > MAX_FORMATS {
            return Err(SdpError::TooManyFormats { line: no });
        }
        let formats = if proto.is_rtp() {
            let pts = tokens
                .iter()
                .map(|t| parse_pt(t).ok_or_else(|| malformed(no, 'm', "invalid payload type", v)))
                .collect::<Result<_, _>>()?;
            Formats::Rtp(pts)
        } else {
            Formats::Other(tokens.iter().map(|t| (*t).to_owned()).collect())
        };
        Ok(MediaDescription {
            port_count,
            ..MediaDescription::new(MediaType::parse(media), port, proto, formats)
        })
    }

    /// The payload types of an RTP m-line, in order; empty for other transports.
    pub fn payload_types(&self) -> &[PayloadType] {
        match &self.formats {
            Formats::Rtp(v) => v,
            Formats::Other(_) => &[],
        }
    }

    pub fn rtpmap(&self, pt: PayloadType) -> Option<&Rtpmap> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Rtpmap(r) if r.pt == pt => Some(r),
            _ => None,
        })
    }

    pub fn fmtp(&self, pt: PayloadType) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Fmtp(p) if p.pt == pt => Some(p.params.as_str()),
            _ => None,
        })
    }

    /// What `pt` stands for here: its `a=rtpmap`, else the static assignment of RFC 3551,
    /// with its `a=fmtp` if any. `None` for a dynamic type nobody mapped.
    pub fn codec(&self, pt: PayloadType) -> Option<Codec> {
        let base = match self.rtpmap(pt) {
            Some(r) => Codec::new(r.encoding.clone(), r.clock_rate, r.channels.unwrap_or(1)),
            None => Codec::from_static(pt)?,
        };
        let fmtp = self.fmtp(pt).filter(|p| !p.is_empty()).map(str::to_owned);
        Some(Codec { fmtp, ..base })
    }

    pub fn ptime(&self) -> Option<u32> {
        ptime_in(&self.attributes)
    }

    /// The media-level direction attribute; see [`SessionDescription::direction_of`] for the
    /// effective one.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// Replaces every direction attribute by `direction`, where the first one was.
    pub fn set_direction(&mut self, direction: Direction) {
        let at = self
            .attributes
            .iter()
            .position(|a| matches!(a, Attribute::Direction(_)));
        self.attributes
            .retain(|a| !matches!(a, Attribute::Direction(_)));
        let attr = Attribute::Direction(direction);
        match at {
            Some(i) => self.attributes.insert(i, attr),
            None => self.attributes.push(attr),
        }
    }

    pub fn rtcp(&self) -> Option<&Rtcp> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Rtcp(r) => Some(r),
            _ => None,
        })
    }

    pub fn rtcp_mux(&self) -> bool {
        self.attributes.contains(&Attribute::RtcpMux)
    }

    pub fn crypto(&self) -> impl Iterator<Item = &Crypto> {
        self.attributes.iter().filter_map(|a| match a {
            Attribute::Crypto(c) => Some(c),
            _ => None,
        })
    }

    pub fn mid(&self) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Mid(m) => Some(m.as_str()),
            _ => None,
        })
    }

    /// Port 0: rejected in an answer, disabled in an offer (RFC 3264 §5.1, §6).
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }
}

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media_type, self.port)?;
        if let Some(c) = self.port_count {
            write!(f, "/{c}")?;
        }
        write!(f, " {}{}\r\n", self.proto, self.formats)?;
        if let Some(i) = &self.title {
            write!(f, "i={}\r\n", Text(i))?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        for b in &self.bandwidths {
            write!(f, "b={b}\r\n")?;
        }
        if let Some(k) = &self.key {
            write!(f, "k={}\r\n", Text(k))?;
        }
        for a in &self.attributes {
            write!(f, "a={a}\r\n")?;
        }
        Ok(())
    }
}

fn ptime_in(attrs: &[Attribute]) -> Option<u32> {
    attrs.iter().find_map(|a| match a {
        Attribute::Ptime(p) => Some(*p),
        _ => None,
    })
}

fn direction_in(attrs: &[Attribute]) -> Option<Direction> {
    attrs.iter().find_map(|a| match a {
        Attribute::Direction(d) => Some(*d),
        _ => None,
    })
}

/// A whole session description. `v=` is not stored: 0 is the only version (RFC 4566 §5.1).
/// `Display` prints it with CRLF line ends in the order of RFC 4566 §5. The text holds SRTP
/// keys when `a=crypto` is present: do not log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    /// `s=`; `-` when the peer left it out (RFC 3264 §5 recommends `-` for unicast).
    pub session_name: String,
    pub info: Option<String>,
    pub uri: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    /// Session-level `c=`, the default for media without their own (RFC 4566 §5.7).
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    /// At least one; `t=0 0` is filled in when the peer left it out.
    pub timing: Vec<Timing>,
    pub time_zones: Option<String>,
    pub key: Option<String>,
    /// Session-level attributes, in order.
    pub attributes: Vec<Attribute>,
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// `s=-` and `t=0 0` (RFC 3264 §5), nothing else.
    fn empty(origin: Origin) -> Self {
        SessionDescription {
            origin,
            session_name: "-".to_owned(),
            info: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: None,
            bandwidths: Vec::new(),
            timing: vec![Timing::default()],
            time_zones: None,
            key: None,
            attributes: Vec::new(),
            media: Vec::new(),
        }
    }

    /// Parses an `application/sdp` body. See the module comment for what is tolerated.
    pub fn parse(input: &[u8]) -> Result<Self, SdpError> {
        if input.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge { len: input.len() });
        }
        // RFC 8866 §5 makes UTF-8 the default charset. Stray bytes in free text (an old
        // phone's Latin-1 `s=`) are replaced rather than failing the call; the lines that
        // matter are ASCII.
        let text = String::from_utf8_lossy(input);
        let mut lines = lines(&text)
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.is_empty());
        match lines.next() {
            Some((_, v)) if v.strip_prefix("v=").map(str::trim) == Some("0") => {}
            _ => return Err(SdpError::NoVersion),
        }
        let mut origin = None;
        // The placeholder origin is replaced by the parsed one at the end, or we fail.
        let mut sdp = SessionDescription::empty(Origin {
            username: String::new(),
            session_id: String::new(),
            session_version: 0,
            net_type: String::new(),
            addr_type: AddrType::Ip4,
            address: Address::Other(String::new()),
        });
        let mut session_name = None;
        let mut timing: Vec<Timing> = Vec::new();
        let mut current: Option<MediaDescription> = None;
        for (no, line) in lines {
            let b = line.as_bytes();
            // Not `<letter>=`: not an SDP line at all; ignored like an unknown type (§5).
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_alphabetic() {
                continue;
            }
            let kind = char::from(b[0]);
            // Slicing is safe: the first two bytes are ASCII.
            let value = &line[2..];
            if kind == 'm' {
                if sdp.media.len() + usize::from(current.is_some()) >= MAX_MEDIA {
                    return Err(SdpError::TooManyMedia { line: no });
                }
                sdp.media.extend(current.take());
                current = Some(MediaDescription::parse(no, value)?);
                continue;
            }
            if let Some(m) = current.as_mut() {
                match kind {
                    'i' => set_once(&mut m.title, value),
                    'c' if m.connection.is_none() => {
                        m.connection = Some(Connection::parse(no, value)?);
                    }
                    'b' => m.bandwidths.push(Bandwidth::parse(no, value)?),
                    'k' => set_once(&mut m.key, value),
                    'a' => m.attributes.push(Attribute::parse(value)),
                    _ => {}
                }
                continue;
            }
            match kind {
                'o' if origin.is_none() => origin = Some(Origin::parse(no, value)?),
                's' => set_once(&mut session_name, value),
                'i' => set_once(&mut sdp.info, value),
                'u' => set_once(&mut sdp.uri, value),
                'e' => sdp.emails.push(value.to_owned()),
                'p' => sdp.phones.push(value.to_owned()),
                'c' if sdp.connection.is_none() => {
                    sdp.connection = Some(Connection::parse(no, value)?);
                }
                'b' => sdp.bandwidths.push(Bandwidth::parse(no, value)?),
                't' => timing.push(Timing::parse(no, value)?),
                'r' => {
                    if let Some(t) = timing.last_mut() {
                        t.repeats.push(value.to_owned());
                    }
                }
                'z' => set_once(&mut sdp.time_zones, value),
                'k' => set_once(&mut sdp.key, value),
                'a' => sdp.attributes.push(Attribute::parse(value)),
                _ => {}
            }
        }
        sdp.media.extend(current);
        sdp.origin = origin.ok_or(SdpError::Missing { kind: 'o' })?;
        if let Some(name) = session_name {
            sdp.session_name = name;
        }
        if !timing.is_empty() {
            sdp.timing = timing;
        }
        Ok(sdp)
    }

    /// Session-level direction attribute, the default for every media section.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// Effective direction of media section `index`: its own attribute, else the session's,
    /// else `sendrecv` (RFC 3264 §5.1).
    pub fn direction_of(&self, index: usize) -> Direction {
        self.media
            .get(index)
            .and_then(MediaDescription::direction)
            .or_else(|| self.direction())
            .unwrap_or_default()
    }

    /// Effective `c=` of media section `index`: its own, else the session's (RFC 4566 §5.7).
    pub fn connection_of(&self, index: usize) -> Option<&Connection> {
        self.media
            .get(index)
            .and_then(|m| m.connection.as_ref())
            .or(self.connection.as_ref())
    }

    /// True when `self` repeats `previous`: same session and same `o=` version, so by
    /// RFC 3264 §8 nothing changed (typical of RFC 4028 session refreshes).
    pub fn is_unchanged_from(&self, previous: &SessionDescription) -> bool {
        self.origin.same_session(&previous.origin)
            && self.origin.session_version == previous.origin.session_version
    }

    /// A new offer in the same session built from our last SDP (offer or answer): the same
    /// m-lines (RFC 3264 §8: never fewer than before), `o=` version + 1, and `direction` on
    /// every stream in use. Hold is `reoffer(current.held())`, resume
    /// `reoffer(current.resumed())` (§8.4).
    pub fn reoffer(&self, direction: Direction) -> SessionDescription {
        let mut next = self.clone();
        // u64 from 0 or a small seed cannot realistically reach the end; saturating keeps
        // the function total.
        next.origin.session_version = next.origin.session_version.saturating_add(1);
        next.attributes
            .retain(|a| !matches!(a, Attribute::Direction(_)));
        for m in next.media.iter_mut().filter(|m| !m.is_rejected()) {
            m.set_direction(direction);
        }
        next
    }
}

/// Splits at CRLF, LF or a lone CR, each counting as one line end, so that line numbers in
/// errors match what an editor shows whichever convention the peer used.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let line = &rest[..end];
        let after = &rest[end..];
        // Both terminators are one byte, so these offsets stay on char boundaries.
        let skip = if after.starts_with("\r\n") {
            2
        } else {
            usize::from(!after.is_empty())
        };
        rest = &after[skip..];
        Some(line)
    })
}

fn set_once(slot: &mut Option<String>, value: &str) {
    if slot.is_none() {
        *slot = Some(value.to_owned());
    }
}

impl FromStr for SessionDescription {
    type Err = SdpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionDescription::parse(s.as_bytes())
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v=0\r\no={}\r\ns={}\r\n",
            self.origin,
            Text(&self.session_name)
        )?;
        if let Some(i) = &self.info {
            write!(f, "i={}\r\n", Text(i))?;
        }
        if let Some(u) = &self.uri {
            write!(f, "u={}\r\n", Text(u))?;
        }
        for e in &self.emails {
            write!(f, "e={}\r\n", Text(e))?;
        }
        for p in &self.phones {
            write!(f, "p={}\r\n", Text(p))?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        for b in &self.bandwidths {
            write!(f, "b={b}\r\n")?;
        }
        if self.timing.is_empty() {
            f.write_str("t=0 0\r\n")?;
        }
        for t in &self.timing {
            write!(f, "t={} {}\r\n", t.start, t.stop)?;
            for r in &t.repeats {
                write!(f, "r={}\r\n", Text(r))?;
            }
        }
        if let Some(z) = &self.time_zones {
            write!(f, "z={}\r\n", Text(z))?;
        }
        if let Some(k) = &self.key {
            write!(f, "k={}\r\n", Text(k))?;
        }
        for a in &self.attributes {
            write!(f, "a={a}\r\n")?;
        }
        self.media.iter().try_for_each(|m| m.fmt(f))
    }
}

// ---------------------------------------------------------------------------------------------
// Offer/answer (RFC 3264)
// ---------------------------------------------------------------------------------------------

/// What we can do on the SIP leg, filled in by the media engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Where we receive RTP; also written in `o=`.
    pub address: IpAddr,
    /// Our RTP port. Our RTCP is on `rtp_port + 1` (RFC 3550 §11) unless rtcp-mux is agreed.
    pub rtp_port: u16,
    /// Audio codecs in our order of preference, with the payload type to offer each with:
    /// the static one where RFC 3551 has it, 96–127 otherwise. Entries repeating an earlier
    /// payload type are skipped.
    pub codecs: Vec<PayloadCodec>,
    /// RFC 4733 events, typically [`Codec::telephone_event`] on 101.
    pub telephone_event: Option<PayloadCodec>,
    /// Packetization we want to receive, in ms; 20 is the telephony norm (RFC 3551 §4.5).
    pub ptime: Option<u32>,
    pub direction: Direction,
    /// We can take RTP and RTCP on one port (RFC 5761).
    pub rtcp_mux: bool,
    /// Our SDES keys, one per suite we accept (RFC 4568). Non-empty makes our offer
    /// `RTP/SAVP`; an `RTP/SAVP` offer can only be answered with one of these suites.
    pub crypto: Vec<Crypto>,
    /// Answer in our codec order rather than the offerer's (RFC 3264 §6.1 lets either be
    /// used; the offerer's is the default).
    pub prefer_local_order: bool,
    /// `o=` sess-id, injected so tests are deterministic (RFC 4566 §5.2 suggests an NTP
    /// timestamp).
    pub session_id: u64,
    /// `o=` sess-version of the SDP built now; raise it for every changed SDP (RFC 3264 §8).
    pub session_version: u64,
}

impl LocalMedia {
    /// Defaults: telephone-event on 101 (the usual choice of SIP phones), ptime 20,
    /// sendrecv, no rtcp-mux, no crypto, offerer's order, session id and version 0.
    pub fn new(address: IpAddr, rtp_port: u16, codecs: Vec<PayloadCodec>) -> Self {
        LocalMedia {
            address,
            rtp_port,
            codecs,
            telephone_event: Some(PayloadCodec::new(
                PayloadType(101),
                Codec::telephone_event(),
            )),
            ptime: Some(20),
            direction: Direction::SendRecv,
            rtcp_mux: false,
            crypto: Vec::new(),
            prefer_local_order: false,
            session_id: 0,
            session_version: 0,
        }
    }

    fn session(&self, media: Vec<MediaDescription>) -> SessionDescription {
        SessionDescription {
            connection: Some(Connection::from_ip(self.address)),
            media,
            ..SessionDescription::empty(Origin {
                username: "-".to_owned(),
                session_id: self.session_id.to_string(),
                session_version: self.session_version,
                net_type: "IN".to_owned(),
                addr_type: AddrType::of(self.address),
                address: Address::Ip(self.address),
            })
        }
    }
}

/// Why an offered stream could not be used (and, when no audio stream is left, why the
/// offer fails). Each maps to an RFC 3261 §20.43 warning code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatibility {
    #[error("no usable audio stream")]
    NoAudio,
    #[error("transport profile {0} not supported on the SIP leg")]
    Profile(Proto),
    #[error("no SDES crypto suite in common (RFC 4568)")]
    NoCryptoSuite,
    #[error("no c= line for the stream (RFC 4566 §5.7)")]
    NoConnectionAddress,
    #[error("connection address is not an IP literal")]
    AddressNotIp,
    #[error("connection address family differs from ours")]
    AddressFamily,
    #[error("no RTCP port: RTP on 65535 and no a=rtcp")]
    RtcpPort,
}

/// Offer/answer failures. For [`create_answer`], answer the INVITE with
/// [`OfferError::status`] and a `Warning` built from [`OfferError::warning`]. For
/// [`apply_answer`] the dialog exists already: ACK the 2xx, then BYE (RFC 3261 §13.2.2.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// No audio codec in common with the offer (RFC 3264 §6).
    #[error("no codec in common")]
    NoCommonCodec,
    #[error("incompatible session description: {0}")]
    Incompatible(#[from] Incompatibility),
    /// The answer does not have one m-line per offered one (RFC 3264 §6).
    #[error("answer has {answered} m-lines for {offered} offered")]
    MediaCountMismatch { offered: usize, answered: usize },
    /// The answer changed the media type or transport of m-line `index` (RFC 3264 §6).
    #[error("answer m-line {index} changes media type or transport")]
    MediaMismatch { index: usize },
    /// The answer lists a format that was not offered on m-line `index` (RFC 3264 §6.1).
    #[error("answer m-line {index} has format {format:?} that was not offered")]
    FormatNotOffered { index: usize, format: String },
    /// The answer rejected (port 0) every audio stream we offered.
    #[error("answer rejected every audio stream")]
    Rejected,
}

impl OfferError {
    /// `488 Not Acceptable Here` (RFC 3261 §21.4.26; RFC 3264 §6 for a refused offer).
    pub const fn status(&self) -> u16 {
        488
    }

    /// `warn-code` and `warn-text` for the `Warning` header (RFC 3261 §20.43).
    pub const fn warning(&self) -> (u16, &'static str) {
        match self {
            OfferError::NoCommonCodec => (305, "Incompatible media format"),
            OfferError::Incompatible(i) => match i {
                Incompatibility::NoAudio => (304, "Media type not available"),
                Incompatibility::Profile(_) => (302, "Incompatible transport protocol"),
                Incompatibility::NoCryptoSuite => (306, "Attribute not understood"),
                Incompatibility::AddressNotIp | Incompatibility::AddressFamily => {
                    (301, "Incompatible network address formats")
                }
                Incompatibility::NoConnectionAddress | Incompatibility::RtcpPort => {
                    (307, "Session description parameter not understood")
                }
            },
            OfferError::MediaCountMismatch { .. }
            | OfferError::MediaMismatch { .. }
            | OfferError::FormatNotOffered { .. }
            | OfferError::Rejected => (307, "Session description parameter not understood"),
        }
    }
}

/// What the media engine needs for the one audio stream that was agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the m-line in the offer (and answer).
    pub media_index: usize,
    pub profile: Proto,
    /// Where to send RTP: media-level `c=` over session-level, and the m-line port.
    /// An unspecified address (`0.0.0.0`, `::`) means send nothing (RFC 3264 §8.4).
    pub remote_rtp: SocketAddr,
    /// Where to send RTCP: the RTP address with rtcp-mux, else `a=rtcp` (RFC 3605), else
    /// RTP port + 1 (RFC 3550 §11).
    pub remote_rtcp: SocketAddr,
    pub rtcp_mux: bool,
    /// The codec to send: the first in common, in the order of the answer. Its payload type
    /// and fmtp are the peer's (RFC 3264 §5.1: an SDP's numbers say what its author
    /// receives); as answerer we mirror them, so incoming packets use the same numbers.
    pub codec: PayloadCodec,
    /// Every codec in common (the peer may switch among them), `codec` first.
    pub codecs: Vec<PayloadCodec>,
    /// The peer's RFC 4733 telephone-event payload type, if both sides have it.
    pub telephone_event: Option<PayloadCodec>,
    /// The peer's `a=ptime` (media level, else session level): how it wants to receive.
    pub ptime: Option<u32>,
    /// What we do, from our side: send if it `sends()`, receive if it `receives()`.
    pub direction: Direction,
    /// The peer's SDP says it will not receive: `sendonly`/`inactive` (RFC 3264 §8.4) or the
    /// RFC 2543 `c=0.0.0.0` form. In an offer that is the peer holding the call; in an
    /// answer it may just echo our own hold.
    pub remote_hold: bool,
    /// SDES keys (RFC 4568 §6.1): the peer's line decrypts what it sends us, ours encrypts
    /// what we send. Both `None` on `RTP/AVP`.
    pub remote_crypto: Option<Crypto>,
    pub local_crypto: Option<Crypto>,
}

/// Our answer and what it agrees to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub sdp: SessionDescription,
    pub negotiated: Negotiated,
}

/// Our initial offer: one audio stream (RFC 3264 §5). `rtpmap` is written for static
/// payload types as well, which RFC 4566 §6 allows and some peers need.
pub fn create_offer(local: &LocalMedia) -> SessionDescription {
    let proto = if local.crypto.is_empty() {
        Proto::RtpAvp
    } else {
        Proto::RtpSavp
    };
    let mut entries: Vec<&PayloadCodec> = Vec::new();
    for pc in local.codecs.iter().chain(&local.telephone_event) {
        if entries.iter().all(|e| e.pt != pc.pt) {
            entries.push(pc);
        }
    }
    let formats = Formats::Rtp(entries.iter().map(|e| e.pt).collect());
    let mut m = MediaDescription::new(MediaType::Audio, local.rtp_port, proto, formats);
    for e in &entries {
        push_format(&mut m.attributes, e.pt, &e.codec);
    }
    if let Some(p) = local.ptime {
        m.attributes.push(Attribute::Ptime(p));
    }
    if local.rtcp_mux {
        m.attributes.push(Attribute::RtcpMux);
    }
    m.attributes
        .extend(local.crypto.iter().cloned().map(Attribute::Crypto));
    m.attributes.push(Attribute::Direction(local.direction));
    local.session(vec![m])
}

fn push_format(attrs: &mut Vec<Attribute>, pt: PayloadType, codec: &Codec) {
    attrs.push(Attribute::Rtpmap(codec.rtpmap(pt)));
    if let Some(p) = &codec.fmtp {
        attrs.push(Attribute::Fmtp(Fmtp {
            pt,
            params: p.clone(),
        }));
    }
}

/// Answers `offer` (RFC 3264 §6): one m-line per offered one, in the same order. The first
/// usable audio stream is accepted; every other m-line gets port 0 with the first offered
/// format. Fails when no audio stream can be accepted; the error of the first audio m-line
/// tried says why.
pub fn create_answer(offer: &SessionDescription, local: &LocalMedia) -> Result<Answer, OfferError> {
    let mut media = Vec::with_capacity(offer.media.len());
    let mut negotiated = None;
    let mut failure = None;
    for (index, m) in offer.media.iter().enumerate() {
        if negotiated.is_none() && m.media_type == MediaType::Audio && !m.is_rejected() {
            match answer_audio(offer, index, local) {
                Ok((line, n)) => {
                    media.push(line);
                    negotiated = Some(n);
                    continue;
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        media.push(rejected(m));
    }
    let negotiated = negotiated
        .ok_or_else(|| failure.unwrap_or(OfferError::Incompatible(Incompatibility::NoAudio)))?;
    Ok(Answer {
        sdp: local.session(media),
        negotiated,
    })
}

/// The m-line that refuses `m`: port 0, same media and proto, first format (RFC 3264 §6),
/// and the `a=mid` so grouping still lines up (RFC 5888).
fn rejected(m: &MediaDescription) -> MediaDescription {
    let mut line = MediaDescription::new(
        m.media_type.clone(),
        0,
        m.proto.clone(),
        m.formats.first_only(),
    );
    if let Some(mid) = m.mid() {
        line.attributes.push(Attribute::Mid(mid.to_owned()));
    }
    line
}

/// Is the SDES profile in use? `None` for profiles the SIP leg does not speak.
fn sdes(proto: &Proto) -> Option<bool> {
    match proto {
        Proto::RtpAvp | Proto::RtpAvpf => Some(false),
        Proto::RtpSavp | Proto::RtpSavpf => Some(true),
        _ => None,
    }
}

fn answer_audio(
    offer: &SessionDescription,
    index: usize,
    local: &LocalMedia,
) -> Result<(MediaDescription, Negotiated), OfferError> {
    // `index` comes from enumerating `offer.media`.
    let m = &offer.media[index];
    let secure = sdes(&m.proto).ok_or_else(|| Incompatibility::Profile(m.proto.clone()))?;
    let rtcp_mux = m.rtcp_mux() && local.rtcp_mux;
    let remote = remote_transport(offer, index, rtcp_mux)?;
    if !remote.rtp.ip().is_unspecified()
        && AddrType::of(remote.rtp.ip()) != AddrType::of(local.address)
    {
        return Err(Incompatibility::AddressFamily.into());
    }

    // Intersection in the offerer's order, keeping the offerer's numbers (§6.1).
    let mut common: Vec<(usize, PayloadCodec, &PayloadCodec)> = Vec::new();
    let mut events: Option<(PayloadCodec, &PayloadCodec)> = None;
    for &pt in m.payload_types() {
        let Some(codec) = m.codec(pt) else { continue };
        if codec.is_telephone_event() {
            if let Some(ours) = local.telephone_event.as_ref()
                && events.is_none()
                && ours.codec.same_format(&codec)
            {
                events = Some((PayloadCodec::new(pt, codec), ours));
            }
        } else if let Some(rank) = local
            .codecs
            .iter()
            .position(|l| !l.codec.is_telephone_event() && l.codec.same_format(&codec))
        {
            common.push((rank, PayloadCodec::new(pt, codec), &local.codecs[rank]));
        }
    }
    if local.prefer_local_order {
        common.sort_by_key(|(rank, ..)| *rank);
    }
    if common.is_empty() {
        return Err(OfferError::NoCommonCodec);
    }

    // RFC 4568 §7.1.2: pick the first offered suite we have, answer with its tag, our key.
    let (remote_crypto, local_crypto) = if secure {
        let (theirs, ours) = m
            .crypto()
            .find_map(|c| {
                local
                    .crypto
                    .iter()
                    .find(|l| l.suite == c.suite)
                    .map(|l| (c, l))
            })
            .ok_or(Incompatibility::NoCryptoSuite)?;
        let ours = Crypto {
            tag: theirs.tag,
            ..ours.clone()
        };
        (Some(theirs.clone()), Some(ours))
    } else {
        (None, None)
    };

    let offered_direction = offer.direction_of(index);
    let direction = offered_direction.answer(local.direction);

    let mut formats: Vec<PayloadType> = common.iter().map(|(_, pc, _)| pc.pt).collect();
    formats.extend(events.as_ref().map(|(pc, _)| pc.pt));
    let mut line = MediaDescription::new(
        MediaType::Audio,
        local.rtp_port,
        m.proto.clone(),
        Formats::Rtp(formats),
    );
    if let Some(mid) = m.mid() {
        line.attributes.push(Attribute::Mid(mid.to_owned()));
    }
    // The fmtp we write describes what we receive, so it is ours (RFC 4566 §6); for
    // telephone-event, ours if we have one, else the offerer's event list.
    for (_, theirs, ours) in &common {
        let codec = Codec {
            fmtp: ours.codec.fmtp.clone(),
            ..theirs.codec.clone()
        };
        push_format(&mut line.attributes, theirs.pt, &codec);
    }
    if let Some((theirs, ours)) = &events {
        let codec = Codec {
            fmtp: ours
                .codec
                .fmtp
                .clone()
                .or_else(|| theirs.codec.fmtp.clone()),
            ..theirs.codec.clone()
        };
        push_format(&mut line.attributes, theirs.pt, &codec);
    }
    if let Some(p) = local.ptime {
        line.attributes.push(Attribute::Ptime(p));
    }
    if rtcp_mux {
        line.attributes.push(Attribute::RtcpMux);
    }
    line.attributes
        .extend(local_crypto.iter().cloned().map(Attribute::Crypto));
    line.attributes.push(Attribute::Direction(direction));

    let codecs: Vec<PayloadCodec> = common.into_iter().map(|(_, pc, _)| pc).collect();
    let negotiated = Negotiated {
        media_index: index,
        profile: m.proto.clone(),
        remote_rtp: remote.rtp,
        remote_rtcp: remote.rtcp,
        rtcp_mux,
        // Not empty: checked above.
        codec: codecs[0].clone(),
        codecs,
        telephone_event: events.map(|(pc, _)| pc),
        ptime: m.ptime().or_else(|| ptime_in(&offer.attributes)),
        direction: remote.restrict(direction),
        remote_hold: remote.on_hold(offered_direction),
        remote_crypto,
        local_crypto,
    };
    Ok((line, negotiated))
}

/// Checks the peer's `answer` to our `offer` and extracts the agreed audio stream
/// (RFC 3264 §6, §7): one m-line per offered one with the same media type and transport,
/// only offered formats, and at least one audio stream accepted.
pub fn apply_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<Negotiated, OfferError> {
    if offer.media.len() != answer.media.len() {
        return Err(OfferError::MediaCountMismatch {
            offered: offer.media.len(),
            answered: answer.media.len(),
        });
    }
    let mut result = None;
    for (index, (o, a)) in offer.media.iter().zip(&answer.media).enumerate() {
        if a.is_rejected() {
            continue;
        }
        if o.media_type != a.media_type || o.proto != a.proto {
            return Err(OfferError::MediaMismatch { index });
        }
        let codecs = answered_formats(index, o, a)?;
        if result.is_none() && a.media_type == MediaType::Audio && !o.is_rejected() {
            result = Some(negotiate_answer(offer, answer, index, codecs)?);
        }
    }
    result.ok_or(OfferError::Rejected)
}

/// The answer's formats that we know, in its order, after checking each was offered.
/// A format matches by codec (the answerer may renumber, RFC 3264 §6.1 says SHOULD not), or
/// by number when the answer does not say what a dynamic number means (it mirrored ours).
fn answered_formats(
    index: usize,
    o: &MediaDescription,
    a: &MediaDescription,
) -> Result<Vec<PayloadCodec>, OfferError> {
    match (&o.formats, &a.formats) {
        (Formats::Rtp(offered), Formats::Rtp(answered)) => {
            let mut known = Vec::new();
            for &pt in answered {
                let by_codec = a.codec(pt).and_then(|c| {
                    offered
                        .iter()
                        .any(|&op| o.codec(op).is_some_and(|oc| oc.same_format(&c)))
                        .then_some(c)
                });
                let codec = match by_codec {
                    Some(c) => Some(c),
                    None if a.rtpmap(pt).is_none() && offered.contains(&pt) => o.codec(pt),
                    None => {
                        return Err(OfferError::FormatNotOffered {
                            index,
                            format: pt.to_string(),
                        });
                    }
                };
                known.extend(codec.map(|c| PayloadCodec::new(pt, c)));
            }
            Ok(known)
        }
        (Formats::Other(offered), Formats::Other(answered)) => {
            match answered.iter().find(|f| !offered.contains(f)) {
                Some(f) => Err(OfferError::FormatNotOffered {
                    index,
                    format: f.clone(),
                }),
                None => Ok(Vec::new()),
            }
        }
        _ => Err(OfferError::MediaMismatch { index }),
    }
}

fn negotiate_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
    index: usize,
    known: Vec<PayloadCodec>,
) -> Result<Negotiated, OfferError> {
    // `apply_answer` checked both have this m-line.
    let (o, a) = (&offer.media[index], &answer.media[index]);
    let (events, codecs): (Vec<PayloadCodec>, Vec<PayloadCodec>) = known
        .into_iter()
        .partition(|pc| pc.codec.is_telephone_event());
    let codec = codecs.first().cloned().ok_or(OfferError::NoCommonCodec)?;
    let (remote_crypto, local_crypto) = if sdes(&a.proto) == Some(true) {
        let theirs = a.crypto().next().ok_or(Incompatibility::NoCryptoSuite)?;
        let ours = o
            .crypto()
            .find(|c| c.tag == theirs.tag && c.suite == theirs.suite)
            .ok_or(Incompatibility::NoCryptoSuite)?;
        (Some(theirs.clone()), Some(ours.clone()))
    } else {
        (None, None)
    };
    let rtcp_mux = o.rtcp_mux() && a.rtcp_mux();
    let remote = remote_transport(answer, index, rtcp_mux)?;
    let (ours, theirs) = (offer.direction_of(index), answer.direction_of(index));
    let direction = Direction::from_flags(
        ours.sends() && theirs.receives(),
        ours.receives() && theirs.sends(),
    );
    Ok(Negotiated {
        media_index: index,
        profile: a.proto.clone(),
        remote_rtp: remote.rtp,
        remote_rtcp: remote.rtcp,
        rtcp_mux,
        codec,
        codecs,
        telephone_event: events.into_iter().next(),
        ptime: a.ptime().or_else(|| ptime_in(&answer.attributes)),
        direction: remote.restrict(direction),
        remote_hold: remote.on_hold(theirs),
        remote_crypto,
        local_crypto,
    })
}

/// The peer's transport addresses for one m-line.
struct RemoteTransport {
    rtp: SocketAddr,
    rtcp: SocketAddr,
}

impl RemoteTransport {
    /// RFC 3264 §8.4: with `c=0.0.0.0` "neither RTP nor RTCP should be sent to the peer".
    fn restrict(&self, direction: Direction) -> Direction {
        if self.rtp.ip().is_unspecified() {
            Direction::from_flags(false, direction.receives())
        } else {
            direction
        }
    }

    fn on_hold(&self, remote_direction: Direction) -> bool {
        !remote_direction.receives() || self.rtp.ip().is_unspecified()
    }
}

fn remote_transport(
    sdp: &SessionDescription,
    index: usize,
    rtcp_mux: bool,
) -> Result<RemoteTransport, Incompatibility> {
    // Callers pass the index of an m-line they just read from `sdp`.
    let m = &sdp.media[index];
    let ip = sdp
        .connection_of(index)
        .ok_or(Incompatibility::NoConnectionAddress)?
        .address
        .ip()
        .ok_or(Incompatibility::AddressNotIp)?;
    let rtp = SocketAddr::new(ip, m.port);
    let rtcp = if rtcp_mux {
        rtp
    } else if let Some(r) = m.rtcp() {
        let ip = r
            .connection
            .as_ref()
            .and_then(|c| c.address.ip())
            .unwrap_or(ip);
        SocketAddr::new(ip, r.port)
    } else {
        SocketAddr::new(ip, m.port.checked_add(1).ok_or(Incompatibility::RtcpPort)?)
    };
    Ok(RemoteTransport { rtp, rtcp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// PROTOCOLS.md §5.3, as written there (LF line ends).
    const PROTOCOLS_EXAMPLE: &str = "v=0
o=- 4005 4005 IN IP4 198.51.100.7
s=-
c=IN IP4 198.51.100.7
t=0 0
m=audio 40000 RTP/AVP 9 0 8 111 101
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
";

    /// An INVITE body as baresip 1.0 sends it.
    const BARESIP_OFFER: &str = "v=0\r\n\
o=- 1956733432 3183226219 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 10000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=ssrc:1931452370 cname:sip:alice@127.0.0.1\r\n\
a=rtcp-rsize\r\n\
a=ptime:20\r\n";

    /// A browser offer (Chrome shape): DTLS-SRTP, ICE, BUNDLE, plus a data channel.
    const WEBRTC_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0 network-id 1\r\n\
a=ice-ufrag:Oyef\r\n\
a=ice-pwd:7Wl2Ww5pwrjgdQEVXBa3DlRm\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 5C:6A:1F:7E:22:9D:4E:8B:03:AA:61:C9:0D:F2:44:B7:19:E8:50:3C:7F:A1:D6:2B:98:0E:CC:45:73:B2:6D:11\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=sendrecv\r\n\
a=msid:- 3a1b0f5e-8c3d-4b7a-9e21-5f6d7c8b9a01\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:3735928559 cname:Yv5wFbVxzzQ1sRk2\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Oyef\r\n\
a=ice-pwd:7Wl2Ww5pwrjgdQEVXBa3DlRm\r\n\
a=fingerprint:sha-256 5C:6A:1F:7E:22:9D:4E:8B:03:AA:61:C9:0D:F2:44:B7:19:E8:50:3C:7F:A1:D6:2B:98:0E:CC:45:73:B2:6D:11\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=sctp-port:5000\r\n\
a=max-message-size:262144\r\n";

    const FIXTURES: [&str; 3] = [PROTOCOLS_EXAMPLE, BARESIP_OFFER, WEBRTC_OFFER];

    fn parse(s: &str) -> SessionDescription {
        match s.parse() {
            Ok(sdp) => sdp,
            Err(e) => panic!("fixture does not parse: {e}"),
        }
    }

    fn pt(n: u8) -> PayloadType {
        PayloadType::new(n).expect("test payload types are below 128")
    }

    fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// The gateway's SIP leg as most tests want it: PCMU, PCMA, telephone-event 101.
    fn local() -> LocalMedia {
        let mut l = LocalMedia::new(
            ip4(192, 0, 2, 10),
            30000,
            vec![
                PayloadCodec::new(PayloadType::PCMU, Codec::pcmu()),
                PayloadCodec::new(PayloadType::PCMA, Codec::pcma()),
            ],
        );
        l.session_id = 77;
        l.session_version = 1;
        l
    }

    fn key(tag: u32, suite: &str, key: &str) -> Crypto {
        Crypto {
            tag,
            suite: suite.to_owned(),
            key_params: Secret::new(format!("inline:{key}")),
            session_params: None,
        }
    }

    fn answer(offer: &str, local: &LocalMedia) -> Answer {
        match create_answer(&parse(offer), local) {
            Ok(a) => a,
            Err(e) => panic!("offer refused: {e}"),
        }
    }

    fn audio_offer(m_line: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             {m_line}\r\n{extra}"
        )
    }

    fn round_trip(sdp: &SessionDescription) {
        let text = sdp.to_string();
        assert!(
            !text.replace("\r\n", "").contains(['\r', '\n']),
            "bare line end in {text:?}"
        );
        match text.parse::<SessionDescription>() {
            Ok(again) => assert_eq!(&again, sdp, "round trip changed {text}"),
            Err(e) => panic!("printed SDP does not parse: {e}\n{text}"),
        }
    }

    // --- parsing ---------------------------------------------------------------------------

    #[test]
    fn parses_the_protocols_example() {
        let sdp = parse(PROTOCOLS_EXAMPLE);
        assert_eq!(sdp.origin.session_id, "4005");
        assert_eq!(sdp.origin.session_version, 4005);
        assert_eq!(sdp.origin.address, Address::Ip(ip4(198, 51, 100, 7)));
        assert_eq!(sdp.session_name, "-");
        assert_eq!(
            sdp.connection,
            Some(Connection::from_ip(ip4(198, 51, 100, 7)))
        );
        assert_eq!(sdp.timing, vec![Timing::default()]);
        let [m] = &sdp.media[..] else {
            panic!("one m-line expected")
        };
        assert_eq!(m.media_type, MediaType::Audio);
        assert_eq!(m.port, 40000);
        assert_eq!(m.proto, Proto::RtpAvp);
        assert_eq!(m.payload_types(), [pt(9), pt(0), pt(8), pt(111), pt(101)]);
        assert_eq!(m.codec(pt(9)), Some(Codec::g722()));
        assert_eq!(
            m.codec(pt(111)),
            Some(Codec::opus().with_fmtp("minptime=10;useinbandfec=1"))
        );
        assert_eq!(m.codec(pt(101)), Some(Codec::telephone_event()));
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(m.direction(), Some(Direction::SendRecv));
        round_trip(&sdp);
    }

    #[test]
    fn parses_a_baresip_offer() {
        let sdp = parse(BARESIP_OFFER);
        assert_eq!(sdp.origin.session_version, 3183226219);
        let m = &sdp.media[0];
        assert_eq!(m.port, 10000);
        assert_eq!(m.payload_types(), [pt(0), pt(8), pt(101)]);
        assert_eq!(m.fmtp(pt(101)), Some("0-15"));
        assert!(m.attributes.contains(&Attribute::Ssrc(
            "1931452370 cname:sip:alice@127.0.0.1".to_owned()
        )));
        assert!(m.attributes.contains(&Attribute::Other {
            name: "label".to_owned(),
            value: Some("1".to_owned())
        }));
        assert!(m.attributes.contains(&Attribute::Other {
            name: "rtcp-rsize".to_owned(),
            value: None
        }));
        assert!(!m.rtcp_mux());
        round_trip(&sdp);
        // Printing keeps every attribute in its place.
        assert_eq!(sdp.to_string(), BARESIP_OFFER);
    }

    #[test]
    fn parses_a_webrtc_offer() {
        let sdp = parse(WEBRTC_OFFER);
        assert_eq!(sdp.origin.session_id, "4611731400430051336");
        assert_eq!(sdp.connection, None);
        assert_eq!(sdp.attributes.len(), 3);
        let audio = &sdp.media[0];
        assert_eq!(audio.proto, Proto::UdpTlsRtpSavpf);
        assert_eq!(
            audio.codec(pt(111)).map(|c| c.name),
            Some("opus".to_owned())
        );
        assert_eq!(
            audio.codec(pt(63)).and_then(|c| c.fmtp),
            Some("111/111".to_owned())
        );
        assert_eq!(audio.mid(), Some("0"));
        assert!(audio.rtcp_mux());
        assert_eq!(
            audio.rtcp(),
            Some(&Rtcp {
                port: 9,
                connection: Some(Connection::from_ip(ip4(0, 0, 0, 0)))
            })
        );
        assert!(audio.attributes.contains(&Attribute::Setup(Setup::ActPass)));
        assert!(
            audio
                .attributes
                .contains(&Attribute::IceUfrag("Oyef".to_owned()))
        );
        assert!(
            audio
                .attributes
                .contains(&Attribute::IcePwd(Secret::new("7Wl2Ww5pwrjgdQEVXBa3DlRm")))
        );
        assert!(audio.attributes.iter().any(|a| matches!(a,
            Attribute::Fingerprint(f) if f.hash == "sha-256" && f.value.starts_with("5C:6A"))));
        assert!(audio.attributes.iter().any(|a| matches!(a,
            Attribute::Candidate(c) if c.ends_with("network-id 1"))));
        assert!(audio.attributes.contains(&Attribute::Other {
            name: "extmap".to_owned(),
            value: Some("1 urn:ietf:params:rtp-hdrext:ssrc-audio-level".to_owned())
        }));
        let data = &sdp.media[1];
        assert_eq!(data.media_type, MediaType::Application);
        assert_eq!(data.proto, Proto::Other("UDP/DTLS/SCTP".to_owned()));
        assert_eq!(
            data.formats,
            Formats::Other(vec!["webrtc-datachannel".to_owned()])
        );
        assert!(data.payload_types().is_empty());
        round_trip(&sdp);
        assert_eq!(sdp.to_string(), WEBRTC_OFFER);
    }

    #[test]
    fn lf_crlf_and_cr_line_ends_parse_alike() {
        let crlf = PROTOCOLS_EXAMPLE.replace('\n', "\r\n");
        let cr = PROTOCOLS_EXAMPLE.replace('\n', "\r");
        assert_eq!(parse(&crlf), parse(PROTOCOLS_EXAMPLE));
        assert_eq!(parse(&cr), parse(PROTOCOLS_EXAMPLE));
        // The printer always writes CRLF.
        assert_eq!(parse(PROTOCOLS_EXAMPLE).to_string(), crlf);
    }

    #[test]
    fn prints_lines_in_rfc4566_order() {
        // Written out of order on purpose; the printer restores RFC 4566 §5 order.
        let sdp = parse(
            "v=0\nk=prompt\na=tool:x\nz=2882844526 -1h\nt=1 2\nr=7d 1h 0 25h\nb=AS:64\n\
             c=IN IP4 192.0.2.1\np=+1 617 555-6011\ne=j@example.com\nu=http://x/\ni=info\n\
             s=Talk\no=jdoe 1 2 IN IP4 192.0.2.1\n\
             m=audio 5000/2 RTP/AVP 0\na=recvonly\nk=clear:x\nb=TIAS:64000\n\
             c=IN IP6 2001:DB8::1\ni=voice\n",
        );
        assert_eq!(
            sdp.to_string(),
            "v=0\r\no=jdoe 1 2 IN IP4 192.0.2.1\r\ns=Talk\r\ni=info\r\nu=http://x/\r\n\
             e=j@example.com\r\np=+1 617 555-6011\r\nc=IN IP4 192.0.2.1\r\nb=AS:64\r\n\
             t=1 2\r\nr=7d 1h 0 25h\r\nz=2882844526 -1h\r\nk=prompt\r\na=tool:x\r\n\
             m=audio 5000/2 RTP/AVP 0\r\ni=voice\r\nc=IN IP6 2001:db8::1\r\nb=TIAS:64000\r\n\
             k=clear:x\r\na=recvonly\r\n"
        );
        round_trip(&sdp);
    }

    #[test]
    fn static_payload_types_need_no_rtpmap() {
        let sdp = parse(&audio_offer("m=audio 5000 RTP/AVP 0 8 9 3 18 13 96", ""));
        let m = &sdp.media[0];
        assert_eq!(m.codec(pt(0)), Some(Codec::pcmu()));
        assert_eq!(m.codec(pt(8)), Some(Codec::pcma()));
        assert_eq!(m.codec(pt(9)), Some(Codec::g722()));
        assert_eq!(m.codec(pt(3)), Some(Codec::new("GSM", 8000, 1)));
        assert_eq!(m.codec(pt(18)), Some(Codec::new("G729", 8000, 1)));
        assert_eq!(m.codec(pt(13)), Some(Codec::new("CN", 8000, 1)));
        // A dynamic number nobody mapped means nothing.
        assert_eq!(m.codec(pt(96)), None);
        // An rtpmap overrides the static table.
        let sdp = parse(&audio_offer(
            "m=audio 5000 RTP/AVP 0",
            "a=rtpmap:0 PCMA/8000\r\n",
        ));
        assert_eq!(sdp.media[0].codec(pt(0)), Some(Codec::pcma()));
    }

    #[test]
    fn codec_model() {
        assert_eq!(Codec::new("OPUS", 48000, 2), Codec::opus());
        assert!(Codec::new("pcmu", 8000, 1).same_format(&Codec::pcmu()));
        assert!(!Codec::new("PCMU", 16000, 1).same_format(&Codec::pcmu()));
        assert!(!Codec::new("opus", 48000, 1).same_format(&Codec::opus()));
        assert!(Codec::opus().with_fmtp("a=1").same_format(&Codec::opus()));
        assert_ne!(Codec::opus().with_fmtp("a=1"), Codec::opus());
        assert_eq!(Codec::g722().clock_rate, 8000);
        assert_eq!(Codec::opus().to_string(), "opus/48000/2");
        assert_eq!(Codec::g722().to_string(), "G722/8000");
        assert_eq!(Codec::pcmu().static_payload_type(), Some(PayloadType::PCMU));
        assert_eq!(Codec::pcma().static_payload_type(), Some(PayloadType::PCMA));
        assert_eq!(Codec::g722().static_payload_type(), Some(PayloadType::G722));
        assert_eq!(Codec::opus().static_payload_type(), None);
        assert!(Codec::new("Telephone-Event", 8000, 1).is_telephone_event());
        assert_eq!(PayloadType::new(128), None);
        assert!(pt(96).is_dynamic() && !pt(95).is_dynamic());
    }

    #[test]
    fn fmtp_parameters_split_pairs_and_tokens() {
        let p: Vec<_> = fmtp_parameters("minptime=10; useinbandfec=1;;").collect();
        assert_eq!(p, [(Some("minptime"), "10"), (Some("useinbandfec"), "1")]);
        let p: Vec<_> = fmtp_parameters("0-16").collect();
        assert_eq!(p, [(None, "0-16")]);
        let p: Vec<_> = fmtp_parameters("111/111").collect();
        assert_eq!(p, [(None, "111/111")]);
        assert_eq!(fmtp_parameters("").count(), 0);
    }

    #[test]
    fn unknown_lines_are_ignored_and_unknown_attributes_kept() {
        let sdp = parse(&audio_offer(
            "m=audio 5000 RTP/AVP 0",
            "x=whatever\r\nnot an sdp line\r\nY=upper\r\na=foo\r\na=bar:baz qux\r\n\
             a=ptime:abc\r\na=rtpmap:0 PCMU\r\na=setup:sideways\r\na=\r\n",
        ));
        let names: Vec<String> = sdp.media[0]
            .attributes
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "foo",
                "bar:baz qux",
                "ptime:abc",
                "rtpmap:0 PCMU",
                "setup:sideways",
                ""
            ]
        );
        assert_eq!(sdp.media[0].ptime(), None);
        round_trip(&sdp);
    }

    #[test]
    fn repeated_single_lines_keep_the_first_and_fill_defaults() {
        let sdp = parse(
            "v=0\no=- 1 1 IN IP4 192.0.2.1\no=- 9 9 IN IP4 192.0.2.9\n\
                         c=IN IP4 192.0.2.1\nc=IN IP4 192.0.2.2\nm=audio 1 RTP/AVP 0\nt=5 5\n",
        );
        assert_eq!(sdp.origin.session_version, 1);
        assert_eq!(sdp.connection, Some(Connection::from_ip(ip4(192, 0, 2, 1))));
        // No s= and no t= at session level: defaults, so printing gives valid SDP.
        assert_eq!(sdp.session_name, "-");
        assert_eq!(sdp.timing, vec![Timing::default()]);
        round_trip(&sdp);
    }

    #[test]
    fn unusable_sdp_is_a_typed_error_naming_the_line() {
        assert_eq!(SessionDescription::parse(b""), Err(SdpError::NoVersion));
        assert_eq!(
            "v=1\no=- 1 1 IN IP4 1.2.3.4\n".parse::<SessionDescription>(),
            Err(SdpError::NoVersion)
        );
        assert_eq!(
            "o=- 1 1 IN IP4 1.2.3.4\nv=0\n".parse::<SessionDescription>(),
            Err(SdpError::NoVersion)
        );
        assert_eq!(
            "v=0\ns=-\n".parse::<SessionDescription>(),
            Err(SdpError::Missing { kind: 'o' })
        );
        let cases: &[(&str, usize, char, &str)] = &[
            ("o=- 1 x IN IP4 1.2.3.4", 2, 'o', "non-numeric sess-version"),
            ("o=- 1 1 IN IP4", 2, 'o', "expected 6 fields"),
            ("c=IN IP4", 2, 'c', "expected 3 fields"),
            ("b=AS", 2, 'b', "expected <bwtype>:<bandwidth>"),
            ("b=AS:lots", 2, 'b', "non-numeric bandwidth"),
            ("t=0", 2, 't', "expected <start> <stop>"),
            ("m=audio", 2, 'm', "expected <media> <port> <proto> <fmt>"),
            ("m=audio 5000 RTP/AVP", 2, 'm', "no format (RFC 4566 §5.14)"),
            ("m=audio port RTP/AVP 0", 2, 'm', "non-numeric port"),
            ("m=audio 70000 RTP/AVP 0", 2, 'm', "non-numeric port"),
            ("m=audio 5000/x RTP/AVP 0", 2, 'm', "non-numeric port count"),
            (
                "m=audio 5000 RTP/AVP 0 PCMU",
                2,
                'm',
                "invalid payload type",
            ),
            ("m=audio 5000 RTP/AVP 128", 2, 'm', "invalid payload type"),
        ];
        for (&(line, no, kind, reason), end) in
            cases.iter().zip(["\n", "\r\n", "\r"].iter().cycle())
        {
            let text = format!("v=0{end}{end}{line}{end}o=- 1 1 IN IP4 1.2.3.4{end}");
            let no = no + 1; // the blank line counts
            match text.parse::<SessionDescription>() {
                Err(SdpError::Malformed {
                    line: l,
                    kind: k,
                    reason: r,
                    excerpt,
                }) => {
                    assert_eq!((l, k, r), (no, kind, reason), "{line}");
                    assert_eq!(excerpt, line[2..]);
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        // Non-RTP transports have token formats, not numbers.
        assert!(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=image 5000 udptl t38\n"
                .parse::<SessionDescription>()
                .is_ok()
        );
    }

    #[test]
    fn limits_bound_what_a_peer_can_make_us_allocate() {
        let big = format!("{}a=x:{}\r\n", BARESIP_OFFER, "y".repeat(MAX_SDP_BYTES));
        assert_eq!(
            SessionDescription::parse(big.as_bytes()),
            Err(SdpError::TooLarge { len: big.len() })
        );
        let mut ok = String::from("v=0\no=- 1 1 IN IP4 1.2.3.4\n");
        ok.push_str(&"m=audio 0 RTP/AVP 0\n".repeat(MAX_MEDIA));
        assert_eq!(parse(&ok).media.len(), MAX_MEDIA);
        ok.push_str("m=audio 0 RTP/AVP 0\n");
        assert_eq!(
            ok.parse::<SessionDescription>(),
            Err(SdpError::TooManyMedia {
                line: MAX_MEDIA + 3
            })
        );
        let formats = |n: usize| (0..n).map(|i| format!(" {}", i % 128)).collect::<String>();
        let at_limit = format!(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 1 RTP/AVP{}\n",
            formats(MAX_FORMATS)
        );
        assert_eq!(parse(&at_limit).media[0].formats.len(), MAX_FORMATS);
        let over = format!(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 1 RTP/AVP{}\n",
            formats(MAX_FORMATS + 1)
        );
        assert_eq!(
            over.parse::<SessionDescription>(),
            Err(SdpError::TooManyFormats { line: 3 })
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let sdp = parse(&audio_offer(
            "m=audio 5000 RTP/SAVP 0",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 \
             inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n\
             a=ice-pwd:hunter2hunter2hunter2\r\n",
        ));
        let debug = format!("{sdp:?}");
        assert!(!debug.contains("WVNfX19"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        // The wire form must carry them.
        assert!(
            sdp.to_string()
                .contains("inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4")
        );
        round_trip(&sdp);
    }

    #[test]
    fn printer_drops_line_breaks_from_built_values() {
        let mut sdp = create_offer(&local());
        sdp.session_name = "x\r\na=injected".to_owned();
        sdp.media[0]
            .attributes
            .push(Attribute::Mid("a\nb".to_owned()));
        let text = sdp.to_string();
        assert!(text.contains("s=xa=injected\r\n"));
        assert!(text.contains("a=mid:ab\r\n"));
    }

    // --- offers ----------------------------------------------------------------------------

    #[test]
    fn offer_lists_our_codecs_in_order_with_telephone_event() {
        let mut l = local();
        l.codecs.insert(
            0,
            PayloadCodec::new(pt(96), Codec::opus().with_fmtp("useinbandfec=1")),
        );
        l.codecs
            .push(PayloadCodec::new(PayloadType::G722, Codec::g722()));
        l.codecs
            .push(PayloadCodec::new(PayloadType::PCMU, Codec::pcmu())); // repeat: skipped
        l.rtcp_mux = true;
        let sdp = create_offer(&l);
        assert_eq!(
            sdp.to_string(),
            "v=0\r\no=- 77 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
             m=audio 30000 RTP/AVP 96 0 8 9 101\r\n\
             a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
             a=ptime:20\r\na=rtcp-mux\r\na=sendrecv\r\n"
        );
        round_trip(&sdp);
    }

    #[test]
    fn offer_with_crypto_is_savp_and_ipv6_is_ip6() {
        let mut l = local();
        l.address = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10));
        l.crypto = vec![key(1, "AES_CM_128_HMAC_SHA1_80", "AAAA")];
        l.telephone_event = None;
        l.ptime = None;
        l.direction = Direction::SendOnly;
        let text = create_offer(&l).to_string();
        assert!(text.contains("o=- 77 1 IN IP6 2001:db8::a\r\n"), "{text}");
        assert!(text.contains("c=IN IP6 2001:db8::a\r\n"), "{text}");
        assert!(text.contains("m=audio 30000 RTP/SAVP 0 8\r\n"), "{text}");
        assert!(
            text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n"),
            "{text}"
        );
        assert!(text.ends_with("a=sendonly\r\n"), "{text}");
        assert!(!text.contains("ptime") && !text.contains("telephone-event"));
    }

    // --- answers ---------------------------------------------------------------------------

    #[test]
    fn answer_keeps_m_line_count_and_order_rejecting_video() {
        let offer = audio_offer(
            "m=video 6000 RTP/AVP 96 97",
            "a=rtpmap:96 H264/90000\r\na=mid:v\r\n\
             m=audio 5000 RTP/AVP 0 8\r\na=mid:a\r\n\
             m=audio 5002 RTP/AVP 0\r\n\
             m=image 7000 udptl t38\r\n",
        );
        let a = answer(&offer, &local());
        let lines: Vec<String> = a
            .sdp
            .media
            .iter()
            .map(|m| format!("{} {} {}{}", m.media_type, m.port, m.proto, m.formats))
            .collect();
        assert_eq!(
            lines,
            [
                "video 0 RTP/AVP 96",
                "audio 30000 RTP/AVP 0 8",
                // A second audio stream: we run one, so it is refused.
                "audio 0 RTP/AVP 0",
                "image 0 udptl t38",
            ]
        );
        assert_eq!(a.sdp.media[0].mid(), Some("v"));
        assert_eq!(a.sdp.media[1].mid(), Some("a"));
        assert_eq!(a.negotiated.media_index, 1);
        round_trip(&a.sdp);
    }

    #[test]
    fn answer_mirrors_the_offered_telephone_event_payload_type() {
        let mut l = local();
        l.telephone_event = Some(PayloadCodec::new(pt(126), Codec::telephone_event()));
        let a = answer(BARESIP_OFFER, &l);
        let m = &a.sdp.media[0];
        assert_eq!(m.payload_types(), [pt(0), pt(8), pt(101)]);
        assert_eq!(
            m.codec(pt(101)).map(|c| c.name),
            Some("telephone-event".to_owned())
        );
        assert_eq!(m.fmtp(pt(101)), Some("0-16"));
        assert_eq!(m.rtpmap(pt(126)), None);
        assert_eq!(
            a.negotiated.telephone_event,
            Some(PayloadCodec::new(
                pt(101),
                Codec::new("telephone-event", 8000, 1).with_fmtp("0-15")
            ))
        );
        // Without telephone-event on our side it is left out.
        l.telephone_event = None;
        let a = answer(BARESIP_OFFER, &l);
        assert_eq!(a.sdp.media[0].payload_types(), [pt(0), pt(8)]);
        assert_eq!(a.negotiated.telephone_event, None);
    }

    #[test]
    fn answer_mirrors_dynamic_codec_numbers() {
        let mut l = local();
        l.codecs = vec![PayloadCodec::new(
            pt(96),
            Codec::opus().with_fmtp("useinbandfec=1"),
        )];
        let a = answer(PROTOCOLS_EXAMPLE, &l);
        let m = &a.sdp.media[0];
        assert_eq!(m.payload_types(), [pt(111), pt(101)]);
        // Our fmtp: it says how we want to receive.
        assert_eq!(
            m.codec(pt(111)),
            Some(Codec::opus().with_fmtp("useinbandfec=1"))
        );
        // The negotiated codec is the peer's description.
        assert_eq!(
            a.negotiated.codec,
            PayloadCodec::new(
                pt(111),
                Codec::opus().with_fmtp("minptime=10;useinbandfec=1")
            )
        );
    }

    #[test]
    fn answer_intersects_codecs_in_the_offerers_order_unless_we_prefer_ours() {
        let mut l = local();
        l.codecs.reverse(); // PCMA, PCMU
        let a = answer(PROTOCOLS_EXAMPLE, &l);
        assert_eq!(a.sdp.media[0].payload_types(), [pt(0), pt(8), pt(101)]);
        assert_eq!(a.negotiated.codec, PayloadCodec::new(pt(0), Codec::pcmu()));
        assert_eq!(
            a.negotiated.codecs,
            [
                PayloadCodec::new(pt(0), Codec::pcmu()),
                PayloadCodec::new(pt(8), Codec::pcma())
            ]
        );
        assert_eq!(a.negotiated.ptime, Some(20));
        l.prefer_local_order = true;
        let a = answer(PROTOCOLS_EXAMPLE, &l);
        assert_eq!(a.sdp.media[0].payload_types(), [pt(8), pt(0), pt(101)]);
        assert_eq!(a.negotiated.codec, PayloadCodec::new(pt(8), Codec::pcma()));
        let text = a.sdp.to_string();
        assert!(
            text.ends_with(
                "m=audio 30000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn answer_understands_static_payload_type_without_rtpmap() {
        let a = answer(&audio_offer("m=audio 5000 RTP/AVP 0", ""), &local());
        assert_eq!(a.sdp.media[0].payload_types(), [pt(0)]);
        assert_eq!(a.negotiated.codec, PayloadCodec::new(pt(0), Codec::pcmu()));
        assert_eq!(
            a.negotiated.remote_rtp,
            "203.0.113.5:5000"
                .parse::<std::net::SocketAddr>()
                .expect("literal")
        );
        assert_eq!(
            a.negotiated.remote_rtcp,
            "203.0.113.5:5001"
                .parse::<std::net::SocketAddr>()
                .expect("literal")
        );
    }

    #[test]
    fn answer_direction_complements_the_offer() {
        use Direction::*;
        let table = [
            (SendRecv, SendRecv, SendRecv),
            (SendRecv, SendOnly, SendOnly),
            (SendRecv, RecvOnly, RecvOnly),
            (SendRecv, Inactive, Inactive),
            (SendOnly, SendRecv, RecvOnly),
            (SendOnly, SendOnly, Inactive),
            (RecvOnly, SendRecv, SendOnly),
            (RecvOnly, RecvOnly, Inactive),
            (Inactive, SendRecv, Inactive),
            (Inactive, SendOnly, Inactive),
        ];
        for (offered, ours, expected) in table {
            assert_eq!(offered.answer(ours), expected, "{offered:?} / {ours:?}");
            let offer = audio_offer(
                "m=audio 5000 RTP/AVP 0",
                &format!("a={}\r\n", offered.as_str()),
            );
            let mut l = local();
            l.direction = ours;
            let a = answer(&offer, &l);
            assert_eq!(a.sdp.media[0].direction(), Some(expected));
            assert_eq!(a.negotiated.direction, expected);
        }
        // A session-level direction is inherited by the m-line.
        let offer = "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
                     a=sendonly\r\nm=audio 5000 RTP/AVP 0\r\n";
        let a = answer(offer, &local());
        assert_eq!(a.sdp.media[0].direction(), Some(RecvOnly));
    }

    #[test]
    fn answer_has_rtcp_mux_only_when_offered_and_supported() {
        let with = audio_offer("m=audio 5000 RTP/AVP 0", "a=rtcp-mux\r\n");
        let without = audio_offer("m=audio 5000 RTP/AVP 0", "");
        let mut l = local();
        for (offer, ours, expected) in [
            (&with, true, true),
            (&without, true, false),
            (&with, false, false),
        ] {
            l.rtcp_mux = ours;
            let a = answer(offer, &l);
            assert_eq!(a.sdp.media[0].rtcp_mux(), expected);
            assert_eq!(a.negotiated.rtcp_mux, expected);
            let rtcp_port = if expected { 5000 } else { 5001 };
            assert_eq!(a.negotiated.remote_rtcp.port(), rtcp_port);
        }
    }

    #[test]
    fn savp_offer_needs_a_crypto_suite_we_have() {
        let offer = audio_offer(
            "m=audio 5000 RTP/SAVP 0",
            "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:BBBB\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:CCCC|2^31\r\n",
        );
        let err = create_answer(&parse(&offer), &local()).expect_err("no keys of ours");
        assert_eq!(
            err,
            OfferError::Incompatible(Incompatibility::NoCryptoSuite)
        );
        assert_eq!(err.status(), 488);

        let mut l = local();
        l.crypto = vec![key(9, "AES_CM_128_HMAC_SHA1_80", "DDDD")];
        let a = answer(&offer, &l);
        let m = &a.sdp.media[0];
        assert_eq!(m.proto, Proto::RtpSavp);
        assert_eq!(
            m.crypto().collect::<Vec<_>>(),
            [&key(2, "AES_CM_128_HMAC_SHA1_80", "DDDD")]
        );
        assert_eq!(a.negotiated.profile, Proto::RtpSavp);
        let mut theirs = key(2, "AES_CM_128_HMAC_SHA1_80", "CCCC|2^31");
        theirs.key_params = Secret::new("inline:CCCC|2^31");
        assert_eq!(a.negotiated.remote_crypto, Some(theirs));
        assert_eq!(
            a.negotiated.local_crypto,
            Some(key(2, "AES_CM_128_HMAC_SHA1_80", "DDDD"))
        );

        // Plain RTP/AVP: any crypto of ours is left out, profile echoed.
        let a = answer(BARESIP_OFFER, &l);
        assert_eq!(a.sdp.media[0].proto, Proto::RtpAvp);
        assert_eq!(a.sdp.media[0].crypto().count(), 0);
        assert_eq!(a.negotiated.local_crypto, None);
    }

    #[test]
    fn no_common_codec_is_488_with_a_warning() {
        let offer = audio_offer("m=audio 5000 RTP/AVP 9 96", "a=rtpmap:96 opus/48000/2\r\n");
        let err = create_answer(&parse(&offer), &local()).expect_err("no codec in common");
        assert_eq!(err, OfferError::NoCommonCodec);
        assert_eq!(err.status(), 488);
        assert_eq!(err.warning(), (305, "Incompatible media format"));
        // Only telephone-event in common is still no codec.
        let offer = audio_offer(
            "m=audio 5000 RTP/AVP 101",
            "a=rtpmap:101 telephone-event/8000\r\n",
        );
        assert_eq!(
            create_answer(&parse(&offer), &local()).err(),
            Some(OfferError::NoCommonCodec)
        );
    }

    #[test]
    fn unusable_offers_are_refused_with_reasons() {
        let refuse = |offer: &str, l: &LocalMedia| {
            create_answer(&parse(offer), l).expect_err("offer must be refused")
        };
        let l = local();
        // DTLS-SRTP belongs to the WebRTC leg.
        let err = refuse(WEBRTC_OFFER, &l);
        assert_eq!(
            err,
            OfferError::Incompatible(Incompatibility::Profile(Proto::UdpTlsRtpSavpf))
        );
        assert_eq!(err.warning().0, 302);
        let video_only = audio_offer("m=video 5000 RTP/AVP 31", "");
        assert_eq!(refuse(&video_only, &l), Incompatibility::NoAudio.into());
        assert_eq!(refuse(&video_only, &l).warning().0, 304);
        let disabled = audio_offer("m=audio 0 RTP/AVP 0", "");
        assert_eq!(refuse(&disabled, &l), Incompatibility::NoAudio.into());
        let no_c =
            "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
        assert_eq!(
            refuse(no_c, &l),
            Incompatibility::NoConnectionAddress.into()
        );
        let fqdn = no_c.replace("m=audio", "c=IN IP4 media.example.com\r\nm=audio");
        assert_eq!(refuse(&fqdn, &l), Incompatibility::AddressNotIp.into());
        let v6 = no_c.replace("m=audio", "c=IN IP6 2001:db8::5\r\nm=audio");
        assert_eq!(refuse(&v6, &l), Incompatibility::AddressFamily.into());
        let top = audio_offer("m=audio 65535 RTP/AVP 0", "");
        assert_eq!(refuse(&top, &l), Incompatibility::RtcpPort.into());
        for e in [refuse(&top, &l), refuse(no_c, &l), refuse(&fqdn, &l)] {
            assert_eq!(e.status(), 488);
            assert!(!e.warning().1.is_empty());
        }
    }

    // --- negotiated transport and hold -----------------------------------------------------

    #[test]
    fn media_level_connection_overrides_session_level() {
        let offer = audio_offer("m=audio 5000 RTP/AVP 0", "c=IN IP4 198.51.100.99\r\n");
        let a = answer(&offer, &local());
        assert_eq!(
            a.negotiated.remote_rtp,
            "198.51.100.99:5000"
                .parse::<std::net::SocketAddr>()
                .expect("literal")
        );
        assert_eq!(
            a.negotiated.remote_rtcp,
            "198.51.100.99:5001"
                .parse::<std::net::SocketAddr>()
                .expect("literal")
        );
    }

    #[test]
    fn rtcp_attribute_is_honoured() {
        let offer = audio_offer("m=audio 5000 RTP/AVP 0", "a=rtcp:6001\r\n");
        let a = answer(&offer, &local());
        assert_eq!(
            a.negotiated.remote_rtcp,
            "203.0.113.5:6001"
                .parse::<std::net::SocketAddr>()
                .expect("literal")
        );
        let offer = audio_offer(
            "m=audio 5000 RTP/AVP 0",
            "a=rtcp:6001 IN IP4 198.51.100.1\r\n",
        );
        let a = answer(&offer, &local());
        assert_eq!(
            a.negotiated.remote_rtcp,
            "198.51.100.1:6001"
                .parse::<std::net::SocketAddr>()
                .expect("literal")
        );
        // rtcp-mux agreed: RTCP shares the RTP port whatever a=rtcp says.
        let offer = audio_offer("m=audio 5000 RTP/AVP 0", "a=rtcp:6001\r\na=rtcp-mux\r\n");
        let mut l = local();
        l.rtcp_mux = true;
        assert_eq!(answer(&offer, &l).negotiated.remote_rtcp.port(), 5000);
    }

    #[test]
    fn hold_is_recognized_from_sendonly_and_from_zero_address() {
        let plain = answer(&audio_offer("m=audio 5000 RTP/AVP 0", ""), &local());
        assert!(!plain.negotiated.remote_hold);

        let held = answer(
            &audio_offer("m=audio 5000 RTP/AVP 0", "a=sendonly\r\n"),
            &local(),
        );
        assert!(held.negotiated.remote_hold);
        assert_eq!(held.negotiated.direction, Direction::RecvOnly);

        let inactive = answer(
            &audio_offer("m=audio 5000 RTP/AVP 0", "a=inactive\r\n"),
            &local(),
        );
        assert!(inactive.negotiated.remote_hold);

        // RFC 2543 hold: send nothing to 0.0.0.0, but the answer's attribute stays as usual.
        let old = "v=0\r\no=- 1 2 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                   m=audio 5000 RTP/AVP 0\r\n";
        let a = answer(old, &local());
        assert!(a.negotiated.remote_hold);
        assert!(!a.negotiated.direction.sends());
        assert!(a.negotiated.direction.receives());
        assert_eq!(a.sdp.media[0].direction(), Some(Direction::SendRecv));
        assert!(a.negotiated.remote_rtp.ip().is_unspecified());
    }

    // --- apply_answer ----------------------------------------------------------------------

    #[test]
    fn apply_answer_accepts_a_matching_answer() {
        let mut ours = local();
        ours.codecs
            .insert(0, PayloadCodec::new(pt(96), Codec::opus()));
        let offer = create_offer(&ours);
        let mut peer = LocalMedia::new(
            ip4(203, 0, 113, 9),
            4000,
            vec![
                PayloadCodec::new(pt(0), Codec::pcmu()),
                PayloadCodec::new(pt(120), Codec::opus()),
            ],
        );
        peer.prefer_local_order = true;
        peer.direction = Direction::RecvOnly;
        let their = create_answer(&offer, &peer).expect("peer accepts");
        let n = apply_answer(&offer, &their.sdp).expect("answer is valid");
        assert_eq!(n.codec, PayloadCodec::new(PayloadType::PCMU, Codec::pcmu()));
        assert_eq!(n.codecs.len(), 2);
        assert_eq!(n.codecs[1].pt, pt(96));
        assert_eq!(n.telephone_event.map(|t| t.pt), Some(pt(101)));
        assert_eq!(
            n.remote_rtp,
            "203.0.113.9:4000"
                .parse::<std::net::SocketAddr>()
                .expect("literal")
        );
        assert_eq!(n.direction, Direction::SendOnly);
        assert!(!n.remote_hold);
        assert_eq!(n.ptime, Some(20));
    }

    #[test]
    fn apply_answer_checks_the_answer() {
        let offer = create_offer(&local());
        let base = "v=0\r\no=- 5 5 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\n";
        let apply = |body: &str| apply_answer(&offer, &parse(&format!("{base}{body}")));

        // A subset, static PT without rtpmap, dynamic telephone-event mirrored without rtpmap.
        let n = apply("m=audio 4000 RTP/AVP 8 101\r\n").expect("subset is fine");
        assert_eq!(n.codec, PayloadCodec::new(pt(8), Codec::pcma()));
        assert_eq!(n.telephone_event.map(|t| t.pt), Some(pt(101)));
        // Renumbered telephone-event (SHOULD not, but legal): matched by codec.
        let n = apply("m=audio 4000 RTP/AVP 0 100\r\na=rtpmap:100 telephone-event/8000\r\n")
            .expect("renumbered is fine");
        assert_eq!(n.telephone_event.map(|t| t.pt), Some(pt(100)));

        assert_eq!(
            apply("m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 31\r\n"),
            Err(OfferError::MediaCountMismatch {
                offered: 1,
                answered: 2
            })
        );
        assert_eq!(
            apply(""),
            Err(OfferError::MediaCountMismatch {
                offered: 1,
                answered: 0
            })
        );
        assert_eq!(
            apply("m=audio 4000 RTP/AVP 0 9\r\n"),
            Err(OfferError::FormatNotOffered {
                index: 0,
                format: "9".to_owned()
            })
        );
        assert_eq!(
            apply("m=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 opus/48000/2\r\n"),
            Err(OfferError::FormatNotOffered {
                index: 0,
                format: "96".to_owned()
            })
        );
        assert_eq!(
            apply("m=audio 4000 RTP/AVP 97\r\n"),
            Err(OfferError::FormatNotOffered {
                index: 0,
                format: "97".to_owned()
            })
        );
        assert_eq!(
            apply("m=audio 4000 RTP/SAVP 0\r\n"),
            Err(OfferError::MediaMismatch { index: 0 })
        );
        assert_eq!(
            apply("m=video 4000 RTP/AVP 0\r\n"),
            Err(OfferError::MediaMismatch { index: 0 })
        );
        assert_eq!(apply("m=audio 0 RTP/AVP 0\r\n"), Err(OfferError::Rejected));
        assert_eq!(
            apply("m=audio 4000 RTP/AVP 101\r\n"),
            Err(OfferError::NoCommonCodec)
        );
    }

    #[test]
    fn apply_answer_reads_hold_and_crypto() {
        let mut l = local();
        l.crypto = vec![key(1, "AES_CM_128_HMAC_SHA1_80", "MINE")];
        let offer = create_offer(&l);
        let base = "v=0\r\no=- 5 5 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\n\
                    m=audio 4000 RTP/SAVP 0\r\n";
        let n = apply_answer(
            &offer,
            &parse(&format!(
                "{base}a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:THEIRS\r\na=sendonly\r\n"
            )),
        )
        .expect("valid");
        assert_eq!(
            n.local_crypto,
            Some(key(1, "AES_CM_128_HMAC_SHA1_80", "MINE"))
        );
        assert_eq!(
            n.remote_crypto,
            Some(key(1, "AES_CM_128_HMAC_SHA1_80", "THEIRS"))
        );
        assert!(n.remote_hold);
        assert_eq!(n.direction, Direction::RecvOnly);
        assert_eq!(
            apply_answer(&offer, &parse(base)),
            Err(OfferError::Incompatible(Incompatibility::NoCryptoSuite))
        );
    }

    // --- re-offers -------------------------------------------------------------------------

    #[test]
    fn hold_and_resume_reoffers_bump_the_version() {
        use Direction::*;
        for (d, held, resumed) in [
            (SendRecv, SendOnly, SendRecv),
            (RecvOnly, Inactive, RecvOnly),
            (SendOnly, SendOnly, SendRecv),
            (Inactive, Inactive, RecvOnly),
        ] {
            assert_eq!(d.held(), held, "{d:?}");
            assert_eq!(d.resumed(), resumed, "{d:?}");
        }
        assert_eq!(SendRecv.held().resumed(), SendRecv);
        assert_eq!(RecvOnly.held().resumed(), RecvOnly);

        let first = create_offer(&local());
        let hold = first.reoffer(SendRecv.held());
        assert_eq!(
            hold.origin.session_version,
            first.origin.session_version + 1
        );
        assert_eq!(hold.origin.session_id, first.origin.session_id);
        assert_eq!(hold.media[0].direction(), Some(SendOnly));
        assert_eq!(
            hold.media[0].attributes.len(),
            first.media[0].attributes.len()
        );
        assert!(!hold.is_unchanged_from(&first));
        assert!(first.clone().is_unchanged_from(&first));
        let resume = hold.reoffer(SendOnly.resumed());
        assert_eq!(
            resume.origin.session_version,
            first.origin.session_version + 2
        );
        assert_eq!(resume.media[0].direction(), Some(SendRecv));

        // A re-offer from our answer keeps the rejected m-lines (RFC 3264 §8).
        let offer = audio_offer("m=video 6000 RTP/AVP 31", "m=audio 5000 RTP/AVP 0\r\n");
        let ours = answer(&offer, &local()).sdp;
        let hold = ours.reoffer(Inactive);
        assert_eq!(hold.media.len(), 2);
        assert_eq!(hold.media[0].direction(), None);
        assert_eq!(hold.media[1].direction(), Some(Inactive));
        // The peer sees it as a hold.
        let peer = answer(&hold.to_string(), &local());
        assert!(peer.negotiated.remote_hold);
        assert_eq!(peer.negotiated.direction, Inactive);
    }

    // --- hostile input ---------------------------------------------------------------------

    /// Whatever parses must print and parse back to the same value, and answering it must
    /// not panic.
    fn survive(input: &[u8]) {
        if let Ok(sdp) = SessionDescription::parse(input) {
            round_trip(&sdp);
            let mut l = local();
            l.crypto = vec![key(1, "AES_CM_128_HMAC_SHA1_80", "K")];
            l.rtcp_mux = true;
            if let Ok(a) = create_answer(&sdp, &l) {
                round_trip(&a.sdp);
                let _ = apply_answer(&sdp, &a.sdp);
            }
            let _ = apply_answer(&sdp, &sdp);
            let _ = sdp.reoffer(Direction::Inactive);
        }
    }

    /// Deterministic xorshift: no clock, no global RNG, same bytes on every run.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn every_prefix_of_the_fixtures_is_handled() {
        for fixture in FIXTURES {
            let bytes = fixture.as_bytes();
            for end in 0..=bytes.len() {
                survive(&bytes[..end]);
            }
        }
    }

    #[test]
    fn random_bytes_and_mutations_are_handled() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        // Alphabet biased toward SDP syntax so the parser gets past its first lines.
        let alphabet = b"vosctmab=:/ 0123456789\r\n-RTP/AVPINIP4.rtpmapfmtpsendonlycrypto";
        for _ in 0..2000 {
            let len = (rng.next() % 300) as usize;
            let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            survive(&noise);
            let mut sdpish = b"v=0\no=- 1 1 IN IP4 1.2.3.4\n".to_vec();
            sdpish.extend((0..len).map(|_| alphabet[(rng.next() as usize) % alphabet.len()]));
            survive(&sdpish);
        }
        for fixture in FIXTURES {
            for _ in 0..500 {
                let mut bytes = fixture.as_bytes().to_vec();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % bytes.len();
                    match rng.next() % 3 {
                        0 => bytes[i] = rng.next() as u8,
                        1 => {
                            bytes.remove(i);
                        }
                        _ => bytes.insert(i, alphabet[(rng.next() as usize) % alphabet.len()]),
                    }
                }
                survive(&bytes);
            }
        }
    }
}
