//! The WebRTC leg: ICE (RFC 8445) + DTLS-SRTP (RFC 5763/5764, RFC 8842) toward one WebRTC peer
//! (browser, Conversations, Jitsi Videobridge), on a single rtcp-mux transport (RFC 5761).
//!
//! Owns: one ICE agent (host candidates on the configured address only, ports inside
//! `[media] min_port..=max_port`), one DTLS association whose peer certificate **must** match the
//! fingerprint signalled in Jingle (XEP-0320) — this is the security of the whole leg — and the two
//! SRTP contexts derived from it. Exactly one task per leg (the driver, [`run_leg`]) reads the
//! transport, demultiplexes DTLS / SRTP / SRTCP (RFC 7983) and hands plain RTP/RTCP to the call
//! layer; sending protects in the caller's task, so there is no task per packet.
//!
//! Must not touch: Jingle or SIP types (the call layer translates), other legs, codecs.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dtls::config::{ClientAuthType, Config as DtlsConfig, ExtendedMasterSecretType};
use dtls::conn::DTLSConn;
use dtls::crypto::Certificate;
use dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, trace, warn};
use webrtc_ice::agent::Agent;
use webrtc_ice::agent::agent_config::AgentConfig;
use webrtc_ice::candidate::Candidate as IceCandidate;
use webrtc_ice::candidate::CandidateType as IceCandidateType;
use webrtc_ice::candidate::candidate_base::unmarshal_candidate;
use webrtc_ice::mdns::MulticastDnsMode;
use webrtc_ice::network_type::NetworkType;
use webrtc_ice::state::ConnectionState;
use webrtc_ice::udp_network::{EphemeralUDP, UDPNetwork};
use webrtc_srtp::config::Config as SrtpConfig;
use webrtc_srtp::context::Context as SrtpContext;
use webrtc_srtp::protection_profile::ProtectionProfile;
use webrtc_util::Conn;

/// Default bound on ICE + DTLS together. Browsers give up on ICE after ~30 s (Chrome's
/// `failed` timeout); waiting longer only holds ports.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long local host gathering may take. Host gathering is a bind per address, so this only
/// trips if the runtime is starved.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Receive buffer: larger than any UDP datagram a sane peer sends over a 1500-byte MTU path, and
/// large enough that the ICE agent never reports a short buffer.
const RECV_BUFFER_SIZE: usize = 8192;

/// Depth of the plain-media channel to the call layer: 256 × 20 ms = 5 s of audio. When the
/// consumer stalls longer, packets are dropped (and counted) rather than blocking the reader.
const MEDIA_CHANNEL_DEPTH: usize = 256;

/// DTLS records queued toward the DTLS state machine. Only handshake flights and alerts travel
/// here, a few packets per flight.
const DTLS_CHANNEL_DEPTH: usize = 32;

/// Bound on tearing down the agent and DTLS; `Agent::close` has a known deadlock FIXME upstream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// SRTP protection profiles we offer in `use_srtp` (RFC 5764 §4.1.2) by default, preferred
/// first. AEAD_AES_128_GCM (RFC 7714) is what Chrome prefers; AES_CM_128_HMAC_SHA1_80 is
/// mandatory to implement (RFC 8827 §6.5) and what aiortc/libsrtp and older Jitsi pick.
pub const DEFAULT_SRTP_PROFILES: [SrtpProfile; 2] =
    [SrtpProfile::AeadAes128Gcm, SrtpProfile::AesCm128HmacSha1_80];

/// Errors of the WebRTC leg API (failures after `connect` arrive as [`LegEvent::Failed`]).
#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    #[error("invalid port range {min}..={max}")]
    InvalidPortRange { min: u16, max: u16 },
    #[error("no SRTP protection profile configured")]
    NoSrtpProfile,
    #[error("ICE agent: {0}")]
    Ice(#[from] webrtc_ice::Error),
    #[error("no host candidate could be gathered on {0} within the port range")]
    NoCandidates(IpAddr),
    #[error("certificate generation: {0}")]
    Certificate(dtls::Error),
    #[error("unsupported fingerprint hash function {0:?}")]
    UnsupportedHash(String),
    #[error("malformed fingerprint value for {hash}: {reason}")]
    MalformedFingerprint {
        hash: HashFunction,
        reason: &'static str,
    },
    #[error("remote description carries no fingerprint with a supported hash (sha-256/384/512)")]
    NoUsableFingerprint,
    #[error("DTLS setup {local} (local) and {remote} (remote) do not give a DTLS role")]
    IncompatibleSetup { local: Setup, remote: Setup },
    #[error("unknown DTLS setup value {0:?}")]
    UnknownSetup(String),
    #[error("empty ICE ufrag or pwd in the remote description")]
    MissingIceCredentials,
    #[error("invalid remote candidate: {0}")]
    InvalidCandidate(String),
    #[error("remote description already set (ICE restart is not supported yet)")]
    RemoteAlreadySet,
    #[error("remote description not set")]
    RemoteNotSet,
    #[error("connect() already called")]
    AlreadyConnecting,
    #[error("leg is not connected (no SRTP keys yet, or closed)")]
    NotConnected,
    #[error("SRTP: {0}")]
    Srtp(#[from] webrtc_srtp::Error),
    #[error("transport send: {0}")]
    Send(#[from] webrtc_util::Error),
}

/// `a=setup` / XEP-0320 `setup` (RFC 4145 §4, RFC 5763 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// The answer to an offered `setup` (RFC 5763 §5: the answerer SHOULD pick `active`; RFC
    /// 8842 §5.2). An offer of `active` forces `passive`.
    pub fn answer_to(offer: Setup) -> Result<Setup, WebRtcError> {
        match offer {
            Setup::Actpass | Setup::Passive => Ok(Setup::Active),
            Setup::Active => Ok(Setup::Passive),
            Setup::Holdconn => Err(WebRtcError::IncompatibleSetup {
                local: Setup::Active,
                remote: offer,
            }),
        }
    }

    /// True when we are the DTLS client given our and the peer's `setup` (RFC 4145 §4).
    pub fn dtls_is_client(local: Setup, remote: Setup) -> Result<bool, WebRtcError> {
        match (local, remote) {
            (Setup::Actpass, Setup::Active) | (Setup::Passive, Setup::Actpass | Setup::Active) => {
                Ok(false)
            }
            (Setup::Actpass, Setup::Passive) | (Setup::Active, Setup::Actpass | Setup::Passive) => {
                Ok(true)
            }
            _ => Err(WebRtcError::IncompatibleSetup { local, remote }),
        }
    }
}

impl std::str::FromStr for Setup {
    type Err = WebRtcError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Setup::Active),
            "passive" => Ok(Setup::Passive),
            "actpass" => Ok(Setup::Actpass),
            "holdconn" => Ok(Setup::Holdconn),
            other => Err(WebRtcError::UnknownSetup(other.to_owned())),
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Hash functions of RFC 8122 fingerprints that we can check (sha-1 and md5 are refused: RFC
/// 8122 §5 deprecates them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HashFunction {
    Sha256,
    Sha384,
    Sha512,
}

impl HashFunction {
    /// Parses the IANA "Hash Function Textual Names" value, case-insensitively (RFC 8122 §5).
    pub fn parse(name: &str) -> Result<Self, WebRtcError> {
        match name.to_ascii_lowercase().as_str() {
            "sha-256" => Ok(HashFunction::Sha256),
            "sha-384" => Ok(HashFunction::Sha384),
            "sha-512" => Ok(HashFunction::Sha512),
            _ => Err(WebRtcError::UnsupportedHash(name.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HashFunction::Sha256 => "sha-256",
            HashFunction::Sha384 => "sha-384",
            HashFunction::Sha512 => "sha-512",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            HashFunction::Sha256 => 32,
            HashFunction::Sha384 => 48,
            HashFunction::Sha512 => 64,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashFunction::Sha256 => Sha256::digest(data).to_vec(),
            HashFunction::Sha384 => Sha384::digest(data).to_vec(),
            HashFunction::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

impl fmt::Display for HashFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate fingerprint (RFC 8122 §5, XEP-0320 `<fingerprint hash=…>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub hash: HashFunction,
    pub value: Vec<u8>,
}

impl Fingerprint {
    /// Parses `hash` (e.g. `sha-256`) and the colon-separated hex `value` (either case).
    pub fn parse(hash: &str, value: &str) -> Result<Self, WebRtcError> {
        let hash = HashFunction::parse(hash)?;
        let malformed = |reason| WebRtcError::MalformedFingerprint { hash, reason };
        let mut bytes = Vec::with_capacity(hash.digest_len());
        for pair in value.trim().split(':') {
            if pair.len() != 2 {
                return Err(malformed("each byte must be two hex digits"));
            }
            let b = u8::from_str_radix(pair, 16).map_err(|_| malformed("not hex"))?;
            bytes.push(b);
        }
        if bytes.len() != hash.digest_len() {
            return Err(malformed("wrong length for the hash function"));
        }
        Ok(Fingerprint { hash, value: bytes })
    }

    /// The fingerprint of a DER certificate.
    pub fn of_der(hash: HashFunction, der: &[u8]) -> Self {
        Fingerprint {
            hash,
            value: hash.digest(der),
        }
    }

    /// Colon-separated uppercase hex, as in SDP `a=fingerprint` and XEP-0320.
    pub fn to_hex(&self) -> String {
        hex_colon(&self.value)
    }
}

fn hex_colon(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Checks the peer's end-entity certificate against the signalled fingerprints: only the
/// strongest supported hash function present is considered (RFC 8122 §5), and the certificate
/// must match one of the fingerprints using it.
fn certificate_matches(der: &[u8], signalled: &[Fingerprint]) -> bool {
    let Some(strongest) = signalled.iter().map(|f| f.hash).max() else {
        return false;
    };
    let actual = strongest.digest(der);
    signalled
        .iter()
        .filter(|f| f.hash == strongest)
        .any(|f| f.value == actual)
}

/// ICE candidate type (RFC 8445 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    Host,
    ServerReflexive,
    PeerReflexive,
    Relay,
}

impl CandidateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relay => "relay",
        }
    }

    fn from_ice(t: IceCandidateType) -> Option<Self> {
        match t {
            IceCandidateType::Host => Some(CandidateKind::Host),
            IceCandidateType::ServerReflexive => Some(CandidateKind::ServerReflexive),
            IceCandidateType::PeerReflexive => Some(CandidateKind::PeerReflexive),
            IceCandidateType::Relay => Some(CandidateKind::Relay),
            IceCandidateType::Unspecified => None,
        }
    }
}

/// One UDP ICE candidate, as carried by Jingle ICE-UDP `<candidate/>` or SDP `a=candidate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub foundation: String,
    /// 1 = RTP; we use rtcp-mux, so only component 1 is ever used.
    pub component: u16,
    pub ip: IpAddr,
    pub port: u16,
    pub priority: u32,
    pub kind: CandidateKind,
    /// `rel-addr`/`rel-port` for srflx/prflx/relay candidates.
    pub related: Option<SocketAddr>,
}

impl Candidate {
    fn from_ice(c: &(dyn IceCandidate + Send + Sync)) -> Option<Self> {
        let ip: IpAddr = c.address().parse().ok()?;
        Some(Candidate {
            foundation: c.foundation(),
            component: c.component(),
            ip,
            port: c.port(),
            priority: c.priority(),
            kind: CandidateKind::from_ice(c.candidate_type())?,
            related: c.related_address().and_then(|r| {
                r.address
                    .parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, r.port))
            }),
        })
    }

    /// The `a=candidate` value form understood by `webrtc_ice::unmarshal_candidate`. Fields are
    /// validated first so that a hostile foundation cannot smuggle extra tokens in.
    fn to_ice(&self) -> Result<Arc<dyn IceCandidate + Send + Sync>, WebRtcError> {
        if self.foundation.is_empty()
            || self.foundation.len() > 32
            || !self.foundation.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(WebRtcError::InvalidCandidate(
                "foundation must be 1-32 visible ASCII characters".into(),
            ));
        }
        if self.port == 0 {
            return Err(WebRtcError::InvalidCandidate("port 0".into()));
        }
        let mut s = format!(
            "{} {} udp {} {} {} typ {}",
            self.foundation,
            self.component,
            self.priority,
            self.ip,
            self.port,
            self.kind.as_str()
        );
        if let Some(r) = self.related {
            s.push_str(&format!(" raddr {} rport {}", r.ip(), r.port()));
        }
        let c =
            unmarshal_candidate(&s).map_err(|e| WebRtcError::InvalidCandidate(e.to_string()))?;
        Ok(Arc::new(c))
    }
}

/// Configuration of one leg.
#[derive(Debug, Clone)]
pub struct LegConfig {
    /// The only address candidates are gathered on (`[media] bind_ip`). Must be an address of a
    /// local interface; 127.0.0.1 is allowed (tests, local peers).
    pub bind_ip: IpAddr,
    /// `[media] public_ip` for 1:1 NAT: advertised instead of `bind_ip` in host candidates.
    pub public_ip: Option<IpAddr>,
    /// Inclusive UDP port range (`[media] min_port..=max_port`).
    pub min_port: u16,
    pub max_port: u16,
    /// ICE role (RFC 8445 §6.1.1): the offerer is normally controlling.
    pub ice_controlling: bool,
    /// Our `setup`: `actpass` when we offer, [`Setup::answer_to`] the offer when we answer.
    pub setup: Setup,
    /// Bound on ICE + DTLS from `connect()`.
    pub connect_timeout: Duration,
    /// SRTP profiles offered in DTLS `use_srtp`, preferred first; must not be empty.
    pub srtp_profiles: Vec<SrtpProfile>,
}

impl LegConfig {
    /// We send the offer (session-initiate / SIP-originated call): controlling, `actpass`.
    pub fn offerer(bind_ip: IpAddr, min_port: u16, max_port: u16) -> Self {
        LegConfig {
            bind_ip,
            public_ip: None,
            min_port,
            max_port,
            ice_controlling: true,
            setup: Setup::Actpass,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            srtp_profiles: DEFAULT_SRTP_PROFILES.to_vec(),
        }
    }

    /// We answer an offer: controlled, `active` (RFC 5763 §5 recommendation; Jitsi does this).
    pub fn answerer(bind_ip: IpAddr, min_port: u16, max_port: u16) -> Self {
        LegConfig {
            bind_ip,
            public_ip: None,
            min_port,
            max_port,
            ice_controlling: false,
            setup: Setup::Active,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            srtp_profiles: DEFAULT_SRTP_PROFILES.to_vec(),
        }
    }
}

/// What we signal to the peer (Jingle transport + XEP-0320 fingerprint).
#[derive(Clone)]
pub struct LocalDescription {
    pub ufrag: String,
    pub pwd: String,
    /// SHA-256 of our certificate, colon-separated uppercase hex.
    pub fingerprint_sha256: String,
    pub setup: Setup,
    pub candidates: Vec<Candidate>,
}

impl fmt::Debug for LocalDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalDescription")
            .field("ufrag", &self.ufrag)
            .field("pwd", &"***")
            .field("fingerprint_sha256", &self.fingerprint_sha256)
            .field("setup", &self.setup)
            .field("candidates", &self.candidates)
            .finish()
    }
}

/// What the peer signalled.
#[derive(Clone)]
pub struct RemoteDescription {
    pub ufrag: String,
    pub pwd: String,
    /// All fingerprints the peer sent (aiortc sends sha-256/384/512); at least one must use a
    /// supported hash.
    pub fingerprints: Vec<Fingerprint>,
    pub setup: Setup,
    pub candidates: Vec<Candidate>,
}

impl fmt::Debug for RemoteDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteDescription")
            .field("ufrag", &self.ufrag)
            .field("pwd", &"***")
            .field("fingerprints", &self.fingerprints)
            .field("setup", &self.setup)
            .field("candidates", &self.candidates)
            .finish()
    }
}

/// The SRTP profile negotiated through `use_srtp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpProfile {
    AesCm128HmacSha1_80,
    AeadAes128Gcm,
}

impl SrtpProfile {
    fn to_dtls(self) -> SrtpProtectionProfile {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        }
    }
}

/// Why a leg failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailReason {
    #[error("ICE failed: no candidate pair works")]
    IceFailed,
    #[error("timed out after {0:?} establishing ICE + DTLS")]
    Timeout(Duration),
    #[error("DTLS handshake failed: {0}")]
    DtlsHandshake(String),
    #[error(
        "DTLS fingerprint mismatch: the peer certificate does not match the signalled fingerprint"
    )]
    FingerprintMismatch,
    #[error("SRTP setup failed: {0}")]
    Srtp(String),
    #[error("transport error: {0}")]
    Transport(String),
}

/// Leg lifecycle events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// ICE selected a pair, DTLS is up, fingerprint verified, SRTP keyed.
    Connected {
        local: SocketAddr,
        remote: SocketAddr,
        profile: SrtpProfile,
        /// Time from `connect()` to SRTP keys.
        elapsed: Duration,
    },
    /// Terminal.
    Failed(FailReason),
    /// Terminal: closed by `close()` or by the peer's DTLS close_notify.
    Closed,
}

/// Plain (unprotected) media from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPacket {
    Rtp(Vec<u8>),
    Rtcp(Vec<u8>),
}

/// Receivers handed out by [`WebRtcLeg::connect`].
#[derive(Debug)]
pub struct LegReceivers {
    pub events: mpsc::UnboundedReceiver<LegEvent>,
    pub media: mpsc::Receiver<MediaPacket>,
}

/// Counters (relaxed atomics; for stats and tests).
#[derive(Debug, Default)]
pub struct LegStats {
    pub rtp_sent: AtomicU64,
    pub rtcp_sent: AtomicU64,
    pub rtp_received: AtomicU64,
    pub rtcp_received: AtomicU64,
    /// SRTP/SRTCP packets that failed authentication, replay or parsing.
    pub unprotect_failures: AtomicU64,
    /// Plain packets dropped because the call layer did not drain `media` fast enough.
    pub media_dropped: AtomicU64,
    /// Datagrams that are neither DTLS nor RTP/RTCP (RFC 7983), ignored.
    pub unknown_dropped: AtomicU64,
}

/// Protect side: the outbound SRTP context and the transport, filled in once keyed.
struct Sender {
    ctx: SrtpContext,
    conn: Arc<dyn Conn + Send + Sync>,
}

/// One WebRTC leg. Create with [`WebRtcLeg::new`], signal the [`LocalDescription`], apply the
/// peer's with [`set_remote`](Self::set_remote), then [`connect`](Self::connect).
pub struct WebRtcLeg {
    config: LegConfig,
    agent: Arc<Agent>,
    certificate: Option<Certificate>,
    remote: Option<RemoteDescription>,
    sender: Arc<Mutex<Option<Sender>>>,
    stats: Arc<LegStats>,
    shutdown: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
    closed: bool,
}

/// Gathered candidates, ICE credentials, certificate and its SHA-256 fingerprint.
type Prepared = (Vec<Candidate>, String, String, Certificate, String);

/// The fallible part of [`WebRtcLeg::new`] after the agent exists, so that every error path
/// closes the agent (and its sockets).
async fn prepare(agent: &Agent, bind_ip: IpAddr) -> Result<Prepared, WebRtcError> {
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    agent.on_candidate(Box::new(
        move |c: Option<Arc<dyn IceCandidate + Send + Sync>>| {
            if c.is_none() {
                let _ = done_tx.try_send(());
            }
            Box::pin(async {})
        },
    ));
    agent.gather_candidates()?;
    if tokio::time::timeout(GATHER_TIMEOUT, done_rx.recv())
        .await
        .is_err()
    {
        warn!("ICE host gathering did not complete in {GATHER_TIMEOUT:?}");
    }
    let candidates: Vec<Candidate> = agent
        .get_local_candidates()
        .await?
        .iter()
        .filter_map(|c| Candidate::from_ice(c.as_ref()))
        .collect();
    if candidates.is_empty() {
        return Err(WebRtcError::NoCandidates(bind_ip));
    }
    let (ufrag, pwd) = agent.get_local_user_credentials().await;
    let certificate = Certificate::generate_self_signed(vec!["xmpp-sip-gateway".into()])
        .map_err(WebRtcError::Certificate)?;
    let fingerprint_sha256 = certificate
        .certificate
        .first()
        .map(|der| Fingerprint::of_der(HashFunction::Sha256, der.as_ref()).to_hex())
        .unwrap_or_default();
    Ok((candidates, ufrag, pwd, certificate, fingerprint_sha256))
}

impl WebRtcLeg {
    /// Creates the ICE agent, gathers host candidates on `bind_ip` inside the port range and
    /// generates the DTLS certificate (ECDSA P-256, self-signed; RFC 8827 §6.5).
    pub async fn new(config: LegConfig) -> Result<(Self, LocalDescription), WebRtcError> {
        if config.srtp_profiles.is_empty() {
            return Err(WebRtcError::NoSrtpProfile);
        }
        if config.min_port == 0 || config.max_port < config.min_port {
            return Err(WebRtcError::InvalidPortRange {
                min: config.min_port,
                max: config.max_port,
            });
        }
        let bind_ip = config.bind_ip;
        let ip_filter: webrtc_ice::agent::agent_config::IpFilterFn =
            Box::new(move |ip: IpAddr| ip == bind_ip);
        let agent = Agent::new(AgentConfig {
            udp_network: UDPNetwork::Ephemeral(EphemeralUDP::new(
                config.min_port,
                config.max_port,
            )?),
            network_types: vec![if bind_ip.is_ipv4() {
                NetworkType::Udp4
            } else {
                NetworkType::Udp6
            }],
            candidate_types: vec![IceCandidateType::Host],
            // 1:1 NAT (`[media] public_ip`): advertise the public address in place of the host
            // one; the socket stays bound to `bind_ip`.
            nat_1to1_ips: config.public_ip.iter().map(|ip| ip.to_string()).collect(),
            nat_1to1_ip_candidate_type: IceCandidateType::Host,
            // No mDNS: it would bind 0.0.0.0:5353 and multicast queries off-host.
            multicast_dns_mode: MulticastDnsMode::Disabled,
            ip_filter: Arc::new(Some(ip_filter)),
            // The agent skips loopback addresses unless told; allow it only when asked for.
            include_loopback: bind_ip.is_loopback(),
            is_controlling: config.ice_controlling,
            ..Default::default()
        })
        .await?;
        let agent = Arc::new(agent);
        let prepared = match prepare(&agent, bind_ip).await {
            Ok(p) => p,
            Err(e) => {
                close_agent(&agent).await;
                return Err(e);
            }
        };
        let (candidates, ufrag, pwd, certificate, fingerprint_sha256) = prepared;

        let local = LocalDescription {
            ufrag,
            pwd,
            fingerprint_sha256,
            setup: config.setup,
            candidates,
        };
        debug!(?local, "WebRTC leg gathered");
        Ok((
            WebRtcLeg {
                config,
                agent,
                certificate: Some(certificate),
                remote: None,
                sender: Arc::new(Mutex::new(None)),
                stats: Arc::new(LegStats::default()),
                shutdown: None,
                task: None,
                closed: false,
            },
            local,
        ))
    }

    /// Applies the peer's description: ICE credentials, fingerprints, setup and candidates.
    pub fn set_remote(&mut self, remote: RemoteDescription) -> Result<(), WebRtcError> {
        if self.remote.is_some() {
            return Err(WebRtcError::RemoteAlreadySet);
        }
        if remote.ufrag.is_empty() || remote.pwd.is_empty() {
            return Err(WebRtcError::MissingIceCredentials);
        }
        if remote.fingerprints.is_empty() {
            return Err(WebRtcError::NoUsableFingerprint);
        }
        Setup::dtls_is_client(self.config.setup, remote.setup)?;
        for c in &remote.candidates {
            self.add_remote_candidate(c)?;
        }
        self.remote = Some(remote);
        Ok(())
    }

    /// Adds one remote candidate (trickle, XEP-0176 transport-info). Candidates for components
    /// other than 1 are ignored: we require rtcp-mux.
    pub fn add_remote_candidate(&self, candidate: &Candidate) -> Result<(), WebRtcError> {
        if candidate.component != 1 {
            trace!(?candidate, "ignoring non-RTP component (rtcp-mux only)");
            return Ok(());
        }
        let c = candidate.to_ice()?;
        self.agent.add_remote_candidate(&c)?;
        Ok(())
    }

    /// Starts ICE, then DTLS, then SRTP, in the leg's single driver task. Progress arrives as
    /// [`LegEvent`]s; plain media on `media`.
    pub fn connect(&mut self) -> Result<LegReceivers, WebRtcError> {
        if self.task.is_some() {
            return Err(WebRtcError::AlreadyConnecting);
        }
        let remote = self.remote.clone().ok_or(WebRtcError::RemoteNotSet)?;
        let certificate = self
            .certificate
            .take()
            .ok_or(WebRtcError::AlreadyConnecting)?;
        let is_client = Setup::dtls_is_client(self.config.setup, remote.setup)?;

        let (events_tx, events) = mpsc::unbounded_channel();
        let (media_tx, media) = mpsc::channel(MEDIA_CHANNEL_DEPTH);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (ice_state_tx, ice_state_rx) = mpsc::unbounded_channel();
        self.agent
            .on_connection_state_change(Box::new(move |s: ConnectionState| {
                let _ = ice_state_tx.send(s);
                Box::pin(async {})
            }));

        let ctx = LegTask {
            agent: Arc::clone(&self.agent),
            controlling: self.config.ice_controlling,
            is_client,
            remote,
            certificate,
            connect_timeout: self.config.connect_timeout,
            srtp_profiles: self.config.srtp_profiles.clone(),
            sender: Arc::clone(&self.sender),
            stats: Arc::clone(&self.stats),
            events: events_tx,
            media: media_tx,
            shutdown: shutdown_rx,
            ice_state: ice_state_rx,
        };
        let span = tracing::info_span!("webrtc_leg", controlling = self.config.ice_controlling);
        self.task = Some(tokio::spawn(run_leg(ctx).instrument(span)));
        self.shutdown = Some(shutdown_tx);
        Ok(LegReceivers { events, media })
    }

    /// Protects one plain RTP packet and sends it to the selected pair.
    pub async fn send_rtp(&self, packet: &[u8]) -> Result<(), WebRtcError> {
        self.send_protected(packet, false).await?;
        self.stats.rtp_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Protects one plain RTCP (compound) packet and sends it on the same transport (rtcp-mux).
    pub async fn send_rtcp(&self, packet: &[u8]) -> Result<(), WebRtcError> {
        self.send_protected(packet, true).await?;
        self.stats.rtcp_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn send_protected(&self, packet: &[u8], rtcp: bool) -> Result<(), WebRtcError> {
        let (protected, conn) = {
            // A poisoned lock only means another sender panicked mid-encrypt; the context is
            // still usable for later packets.
            let mut guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
            let s = guard.as_mut().ok_or(WebRtcError::NotConnected)?;
            let protected = if rtcp {
                s.ctx.encrypt_rtcp(packet)?
            } else {
                s.ctx.encrypt_rtp(packet)?
            };
            (protected, Arc::clone(&s.conn))
        };
        conn.send(&protected).await?;
        Ok(())
    }

    /// Counters of this leg.
    pub fn stats(&self) -> &LegStats {
        &self.stats
    }

    /// Stops the leg: DTLS close_notify, ICE agent closed, sockets released, the driver task
    /// joined. A `Closed` event is emitted if the leg had not already failed.
    pub async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(CLOSE_TIMEOUT * 3, task).await.is_err() {
                warn!("WebRTC leg task did not stop in time; aborting");
                abort.abort();
            }
        } else {
            close_agent(&self.agent).await;
        }
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for WebRtcLeg {
    fn drop(&mut self) {
        // Dropping the watch sender tells the driver to stop and clean up; if it never started,
        // the agent's sockets are closed on a spawned task.
        if self.task.is_none()
            && !self.closed
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let agent = Arc::clone(&self.agent);
            handle.spawn(async move { close_agent(&agent).await });
        }
    }
}

async fn close_agent(agent: &Agent) {
    match tokio::time::timeout(CLOSE_TIMEOUT, agent.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("ICE agent close: {e}"),
        Err(_) => warn!("ICE agent close timed out"),
    }
}

/// Everything the driver task owns.
struct LegTask {
    agent: Arc<Agent>,
    controlling: bool,
    is_client: bool,
    remote: RemoteDescription,
    certificate: Certificate,
    connect_timeout: Duration,
    srtp_profiles: Vec<SrtpProfile>,
    sender: Arc<Mutex<Option<Sender>>>,
    stats: Arc<LegStats>,
    events: mpsc::UnboundedSender<LegEvent>,
    media: mpsc::Sender<MediaPacket>,
    shutdown: watch::Receiver<bool>,
    ice_state: mpsc::UnboundedReceiver<ConnectionState>,
}

/// Outcome of a phase: stop quietly (closed) or fail.
enum Stop {
    Closed,
    Failed(FailReason),
}

/// RFC 7983 §7 first-byte demultiplexing.
#[derive(Debug, PartialEq, Eq)]
enum Demux {
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

fn classify(packet: &[u8]) -> Demux {
    match packet.first() {
        Some(20..=63) => Demux::Dtls,
        // RFC 5761 §4: with rtcp-mux, RTCP packet types 192–223 occupy the second byte.
        Some(128..=191) => match packet.get(1) {
            Some(192..=223) => Demux::Rtcp,
            Some(_) => Demux::Rtp,
            None => Demux::Other,
        },
        _ => Demux::Other,
    }
}

async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    // A dropped sender (leg dropped) counts as a request too.
    let _ = rx.wait_for(|v| *v).await;
}

async fn run_leg(mut t: LegTask) {
    let started = Instant::now();
    let mut dtls: Option<Arc<DTLSConn>> = None;
    let result = drive(&mut t, started, &mut dtls).await;
    t.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(conn) = dtls {
        // Sends close_notify (RFC 5246 §7.2.1) so the peer learns at once.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
    }
    close_agent(&t.agent).await;
    let event = match result {
        Stop::Closed => LegEvent::Closed,
        Stop::Failed(reason) => {
            info!(%reason, "WebRTC leg failed");
            LegEvent::Failed(reason)
        }
    };
    let _ = t.events.send(event);
}

async fn drive(t: &mut LegTask, started: Instant, dtls_out: &mut Option<Arc<DTLSConn>>) -> Stop {
    let deadline = tokio::time::Instant::from_std(started + t.connect_timeout);

    // Phase 1: ICE (RFC 8445). dial = controlling, accept = controlled.
    let (cancel_tx, cancel_rx) = mpsc::channel(1);
    let ufrag = t.remote.ufrag.clone();
    let pwd = t.remote.pwd.clone();
    let agent = Arc::clone(&t.agent);
    let controlling = t.controlling;
    let ice = async move {
        if controlling {
            agent
                .dial(cancel_rx, ufrag, pwd)
                .await
                .map(|c| c as Arc<dyn Conn + Send + Sync>)
        } else {
            agent
                .accept(cancel_rx, ufrag, pwd)
                .await
                .map(|c| c as Arc<dyn Conn + Send + Sync>)
        }
    };
    tokio::pin!(ice);
    let conn: Arc<dyn Conn + Send + Sync> = loop {
        tokio::select! {
            r = &mut ice => match r {
                Ok(c) => break c,
                Err(e) => return Stop::Failed(FailReason::Transport(e.to_string())),
            },
            s = t.ice_state.recv() => {
                if matches!(s, Some(ConnectionState::Failed) | None) {
                    let _ = cancel_tx.try_send(());
                    return Stop::Failed(FailReason::IceFailed);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let _ = cancel_tx.try_send(());
                return Stop::Failed(FailReason::Timeout(t.connect_timeout));
            }
            _ = shutdown_requested(&mut t.shutdown) => {
                let _ = cancel_tx.try_send(());
                return Stop::Closed;
            }
        }
    };
    let (local_addr, remote_addr) = match t.agent.get_selected_candidate_pair() {
        Some(p) => (p.local.addr(), p.remote.addr()),
        None => (
            conn.local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            conn.remote_addr()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        ),
    };
    debug!(%local_addr, %remote_addr, elapsed = ?started.elapsed(), "ICE connected");

    // Phase 2: DTLS (RFC 5763), with our own demux feeding DTLS records to it.
    let (dtls_tx, dtls_rx) = mpsc::channel(DTLS_CHANNEL_DEPTH);
    let endpoint: Arc<dyn Conn + Send + Sync> = Arc::new(DtlsEndpoint {
        ice: Arc::clone(&conn),
        rx: tokio::sync::Mutex::new(dtls_rx),
    });
    let mismatch = Arc::new(AtomicBool::new(false));
    let config = dtls_config(
        t.certificate.clone(),
        &t.srtp_profiles,
        t.remote.fingerprints.clone(),
        Arc::clone(&mismatch),
    );
    let is_client = t.is_client;
    let handshake = DTLSConn::new(endpoint, config, is_client, None);
    tokio::pin!(handshake);
    let mut buf = vec![0u8; RECV_BUFFER_SIZE];
    let dtls = loop {
        tokio::select! {
            r = &mut handshake => match r {
                Ok(c) => break Arc::new(c),
                Err(e) => {
                    if mismatch.load(Ordering::SeqCst) {
                        return Stop::Failed(FailReason::FingerprintMismatch);
                    }
                    return Stop::Failed(FailReason::DtlsHandshake(e.to_string()));
                }
            },
            r = conn.recv(&mut buf) => match r {
                Ok(n) => {
                    if classify(&buf[..n]) == Demux::Dtls {
                        let _ = dtls_tx.try_send(buf[..n].to_vec());
                    } else {
                        // SRTP before our keys exist cannot be authenticated; drop it.
                        t.stats.unknown_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => return Stop::Failed(FailReason::Transport(e.to_string())),
            },
            s = t.ice_state.recv() => {
                if matches!(s, Some(ConnectionState::Failed) | None) {
                    return Stop::Failed(FailReason::IceFailed);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Stop::Failed(FailReason::Timeout(t.connect_timeout));
            }
            _ = shutdown_requested(&mut t.shutdown) => return Stop::Closed,
        }
    };
    *dtls_out = Some(Arc::clone(&dtls));

    // Defence in depth: check the certificate again after the handshake, in case the callback
    // was not consulted (e.g. a library path that skips it).
    let state = dtls.connection_state().await;
    match state.peer_certificates.first() {
        Some(der) if certificate_matches(der, &t.remote.fingerprints) => {}
        _ => return Stop::Failed(FailReason::FingerprintMismatch),
    }

    // Phase 3: SRTP keys (RFC 5764 §4.2).
    let (profile, srtp_profile) = match dtls.selected_srtpprotection_profile() {
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => (
            ProtectionProfile::Aes128CmHmacSha1_80,
            SrtpProfile::AesCm128HmacSha1_80,
        ),
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => {
            (ProtectionProfile::AeadAes128Gcm, SrtpProfile::AeadAes128Gcm)
        }
        other => {
            return Stop::Failed(FailReason::Srtp(format!(
                "unexpected protection profile {other:?}"
            )));
        }
    };
    let mut srtp_config = SrtpConfig {
        profile,
        ..Default::default()
    };
    if let Err(e) = srtp_config
        .extract_session_keys_from_dtls(state, is_client)
        .await
    {
        return Stop::Failed(FailReason::Srtp(e.to_string()));
    }
    let keys = &srtp_config.keys;
    let local_ctx = SrtpContext::new(
        &keys.local_master_key,
        &keys.local_master_salt,
        profile,
        None,
        None,
    );
    // Bounded per-SSRC state and SRTCP framing checks (see `sdes::SrtpReceiver`).
    let remote_ctx =
        super::sdes::SrtpReceiver::new(&keys.remote_master_key, &keys.remote_master_salt, profile);
    let (local_ctx, mut remote_ctx) = match (local_ctx, remote_ctx) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) => return Stop::Failed(FailReason::Srtp(e.to_string())),
        (_, Err(e)) => return Stop::Failed(FailReason::Srtp(e.to_string())),
    };
    *t.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sender {
        ctx: local_ctx,
        conn: Arc::clone(&conn),
    });
    let elapsed = started.elapsed();
    info!(?elapsed, ?srtp_profile, %remote_addr, "WebRTC leg connected");
    let _ = t.events.send(LegEvent::Connected {
        local: local_addr,
        remote: remote_addr,
        profile: srtp_profile,
        elapsed,
    });

    // Phase 4: media. The DTLS reader keeps handling post-handshake records (retransmitted
    // Finished, alerts); its read side ending means the peer sent close_notify or a fatal alert.
    let dtls_ended = async {
        let mut scratch = [0u8; 1500];
        loop {
            if let Err(e) = dtls.read(&mut scratch, None).await {
                return e;
            }
        }
    };
    tokio::pin!(dtls_ended);
    loop {
        tokio::select! {
            r = conn.recv(&mut buf) => match r {
                Ok(n) => handle_media(t, &mut remote_ctx, &dtls_tx, &buf[..n]),
                Err(e) => return Stop::Failed(FailReason::Transport(e.to_string())),
            },
            e = &mut dtls_ended => {
                debug!("DTLS ended: {e}");
                return Stop::Closed;
            }
            s = t.ice_state.recv() => match s {
                Some(ConnectionState::Failed) | None => return Stop::Failed(FailReason::IceFailed),
                Some(s) => debug!(%s, "ICE state"),
            },
            _ = shutdown_requested(&mut t.shutdown) => return Stop::Closed,
        }
    }
}

fn handle_media(
    t: &LegTask,
    remote_ctx: &mut super::sdes::SrtpReceiver,
    dtls_tx: &mpsc::Sender<Vec<u8>>,
    packet: &[u8],
) {
    let (plain, rtcp) = match classify(packet) {
        Demux::Dtls => {
            let _ = dtls_tx.try_send(packet.to_vec());
            return;
        }
        Demux::Rtp => (remote_ctx.decrypt_rtp(packet), false),
        // Frame-checked first: webrtc-srtp 0.17.2 panics on short SRTCP and skips
        // authentication when the E flag is clear (see `sdes::check_srtcp_framing`).
        Demux::Rtcp => (remote_ctx.decrypt_rtcp(packet), true),
        Demux::Other => {
            t.stats.unknown_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let plain = match plain {
        Ok(p) => p,
        Err(e) => {
            trace!("SRTP unprotect failed: {e}");
            t.stats.unprotect_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let (counter, msg) = if rtcp {
        (&t.stats.rtcp_received, MediaPacket::Rtcp(plain.into()))
    } else {
        (&t.stats.rtp_received, MediaPacket::Rtp(plain.into()))
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if t.media.try_send(msg).is_err() {
        t.stats.media_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Builds the DTLS configuration: our certificate, both SRTP profiles, extended master secret
/// required (RFC 7627; every WebRTC stack supports it), a client certificate required of the
/// peer (RFC 5763 §5: the server MUST request it), and chain validation replaced by the
/// fingerprint check (self-signed certificates; RFC 8122 §5).
fn dtls_config(
    certificate: Certificate,
    profiles: &[SrtpProfile],
    fingerprints: Vec<Fingerprint>,
    mismatch: Arc<AtomicBool>,
) -> DtlsConfig {
    DtlsConfig {
        certificates: vec![certificate],
        srtp_protection_profiles: profiles.iter().map(|p| p.to_dtls()).collect(),
        extended_master_secret: ExtendedMasterSecretType::Require,
        client_auth: ClientAuthType::RequireAnyClientCert,
        insecure_skip_verify: true,
        verify_peer_certificate: Some(verifier(move |certs: &[Vec<u8>]| match certs.first() {
            Some(der) if certificate_matches(der, &fingerprints) => Ok(()),
            _ => {
                mismatch.store(true, Ordering::SeqCst);
                Err(dtls::Error::Other(
                    "peer certificate does not match the signalled fingerprint".into(),
                ))
            }
        })),
        ..Default::default()
    }
}

/// Adapts a closure to dtls's `VerifyPeerCertificateFn`, whose type alias is crate-private and
/// whose second argument (rustls `CertificateDer` chains, always empty with
/// `insecure_skip_verify`) we cannot name without a direct rustls dependency.
#[allow(clippy::type_complexity)]
fn verifier<T>(
    f: impl Fn(&[Vec<u8>]) -> Result<(), dtls::Error> + Send + Sync + 'static,
) -> Arc<dyn Fn(&[Vec<u8>], &[T]) -> Result<(), dtls::Error> + Send + Sync> {
    Arc::new(move |certs: &[Vec<u8>], _chains: &[T]| f(certs))
}

/// The DTLS side of our demux: DTLS reads records the driver routed here and writes straight
/// to the ICE transport.
struct DtlsEndpoint {
    ice: Arc<dyn Conn + Send + Sync>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
}

type ConnFuture<'a, T> = Pin<Box<dyn Future<Output = webrtc_util::Result<T>> + Send + 'a>>;

fn not_applicable() -> webrtc_util::Error {
    webrtc_util::Error::Other("not applicable to the DTLS endpoint".into())
}

// `Conn` is declared with `#[async_trait]`; without that crate as a direct dependency the
// methods are written in their expanded form.
impl Conn for DtlsEndpoint {
    fn connect<'l0, 'at>(&'l0 self, _addr: SocketAddr) -> ConnFuture<'at, ()>
    where
        'l0: 'at,
        Self: 'at,
    {
        Box::pin(async { Err(not_applicable()) })
    }

    fn recv<'l0, 'l1, 'at>(&'l0 self, buf: &'l1 mut [u8]) -> ConnFuture<'at, usize>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async move {
            let mut rx = self.rx.lock().await;
            match rx.recv().await {
                Some(p) => {
                    let n = p.len().min(buf.len());
                    buf[..n].copy_from_slice(&p[..n]);
                    Ok(n)
                }
                // The driver is gone. Returning an error would make dtls's reader loop spin
                // (it only stops on close), so wait; dropping the DTLSConn ends the reader.
                None => std::future::pending().await,
            }
        })
    }

    fn recv_from<'l0, 'l1, 'at>(
        &'l0 self,
        buf: &'l1 mut [u8],
    ) -> ConnFuture<'at, (usize, SocketAddr)>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async move {
            let n = self.recv(buf).await?;
            let from = self
                .ice
                .remote_addr()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            Ok((n, from))
        })
    }

    fn send<'l0, 'l1, 'at>(&'l0 self, buf: &'l1 [u8]) -> ConnFuture<'at, usize>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async move { self.ice.send(buf).await })
    }

    fn send_to<'l0, 'l1, 'at>(
        &'l0 self,
        _buf: &'l1 [u8],
        _target: SocketAddr,
    ) -> ConnFuture<'at, usize>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async { Err(not_applicable()) })
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.ice.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.ice.remote_addr()
    }

    fn close<'l0, 'at>(&'l0 self) -> ConnFuture<'at, ()>
    where
        'l0: 'at,
        Self: 'at,
    {
        // The ICE transport belongs to the agent, which the driver closes.
        Box::pin(async { Ok(()) })
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_roles_follow_rfc_4145() {
        assert!(!Setup::dtls_is_client(Setup::Actpass, Setup::Active).unwrap());
        assert!(Setup::dtls_is_client(Setup::Actpass, Setup::Passive).unwrap());
        assert!(Setup::dtls_is_client(Setup::Active, Setup::Actpass).unwrap());
        assert!(!Setup::dtls_is_client(Setup::Passive, Setup::Actpass).unwrap());
        assert!(Setup::dtls_is_client(Setup::Actpass, Setup::Actpass).is_err());
        assert!(Setup::dtls_is_client(Setup::Active, Setup::Active).is_err());
        assert!(Setup::dtls_is_client(Setup::Passive, Setup::Passive).is_err());
        assert_eq!(Setup::answer_to(Setup::Actpass).unwrap(), Setup::Active);
        assert_eq!(Setup::answer_to(Setup::Active).unwrap(), Setup::Passive);
        assert_eq!("actpass".parse::<Setup>().unwrap(), Setup::Actpass);
        assert!("bogus".parse::<Setup>().is_err());
    }

    #[test]
    fn fingerprint_parse_and_format_roundtrip() {
        // From PROTOCOLS.md §2.2 (a Conversations session-initiate).
        let v = "3D:C0:FB:B6:C7:69:D0:EF:4C:4B:03:D9:76:AB:BC:42:8D:AD:AC:4A:B7:30:60:9A:43:95:B9:12:90:E8:CC:B9";
        let f = Fingerprint::parse("SHA-256", &v.to_lowercase()).unwrap();
        assert_eq!(f.hash, HashFunction::Sha256);
        assert_eq!(f.to_hex(), v);
        assert!(Fingerprint::parse("sha-1", "AB").is_err());
        assert!(Fingerprint::parse("sha-256", "3D:C0").is_err());
        assert!(Fingerprint::parse("sha-256", &v.replace(':', "")).is_err());
        assert!(Fingerprint::parse("sha-256", &v.replace("3D", "ZZ")).is_err());
    }

    #[test]
    fn certificate_check_uses_strongest_hash() {
        let der = b"not really a certificate";
        let s256 = Fingerprint::of_der(HashFunction::Sha256, der);
        let s512 = Fingerprint::of_der(HashFunction::Sha512, der);
        let wrong512 = Fingerprint {
            hash: HashFunction::Sha512,
            value: vec![0; 64],
        };
        assert!(certificate_matches(der, std::slice::from_ref(&s256)));
        assert!(certificate_matches(der, &[s256.clone(), s512]));
        // A correct weaker hash does not rescue a wrong stronger one.
        assert!(!certificate_matches(der, &[s256, wrong512]));
        assert!(!certificate_matches(der, &[]));
        assert!(!certificate_matches(
            b"other",
            &[Fingerprint::of_der(HashFunction::Sha256, der)]
        ));
    }

    #[test]
    fn demux_follows_rfc_7983() {
        assert_eq!(classify(&[22, 254, 253]), Demux::Dtls);
        assert_eq!(classify(&[0x80, 0x00]), Demux::Rtp);
        assert_eq!(classify(&[0x80, 0xE0]), Demux::Rtp); // PT 96 with marker
        assert_eq!(classify(&[0x81, 200]), Demux::Rtcp); // SR
        assert_eq!(classify(&[0x80, 201]), Demux::Rtcp); // RR
        assert_eq!(classify(&[0x00, 0x01]), Demux::Other); // STUN
        assert_eq!(classify(&[]), Demux::Other);
        assert_eq!(classify(&[0x80]), Demux::Other);
    }

    #[test]
    fn srtp_protect_hides_payload_and_roundtrips() {
        let key = [7u8; 16];
        let salt = [9u8; 14];
        let p = ProtectionProfile::Aes128CmHmacSha1_80;
        let mut tx = SrtpContext::new(&key, &salt, p, None, None).unwrap();
        let mut rx = SrtpContext::new(
            &key,
            &salt,
            p,
            Some(webrtc_srtp::option::srtp_replay_protection(64)),
            None,
        )
        .unwrap();
        let mut plain = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
        plain.extend_from_slice(b"recognizable payload");
        let protected = tx.encrypt_rtp(&plain).unwrap();
        assert_eq!(protected.len(), plain.len() + 10); // HMAC-SHA1-80 tag
        assert_eq!(protected[..12], plain[..12]); // header stays clear
        assert_ne!(protected[12..plain.len()], plain[12..]);
        assert_eq!(&rx.decrypt_rtp(&protected).unwrap()[..], &plain[..]);
        // Replay and tampering are rejected.
        assert!(rx.decrypt_rtp(&protected).is_err());
        let mut tampered = protected.to_vec();
        tampered[14] ^= 1;
        tampered[3] = 2;
        assert!(rx.decrypt_rtp(&tampered).is_err());
    }
}
