//! The media bridge: one call's audio between a WebRTC leg (ICE + DTLS-SRTP, toward browsers,
//! Conversations, Jitsi Videobridge) and a SIP leg (plain RTP/AVP, or SDES-SRTP when the SIP
//! side offers `a=crypto`), and the API the call layer drives it with.
//!
//! The API knows nothing of SIP or Jingle: the call layer turns SDP or Jingle into a
//! [`RemoteDescription`] / [`SipRemote`] plus the [`LegCodecs`] negotiated on each leg, and turns
//! [`BridgeLocal`] back into its own signalling.
//!
//! Life of a bridge: [`MediaEngine::create_bridge`] allocates the ports and gathers ICE
//! candidates; the call layer signals [`BridgeLocal`]; it applies the peer descriptions with
//! [`Bridge::set_webrtc_remote`] (which starts ICE and DTLS at once) and
//! [`Bridge::set_sip_remote`]; once both legs' codecs are known the bridge picks a
//! [`MediaPlan`] and media flows. Progress arrives as [`BridgeEvent`]s; [`Bridge::close`] (or
//! dropping the [`Bridge`]) stops everything and returns the ports.
//!
//! One task per call owns both legs' media state (the WebRTC leg keeps its own ICE/DTLS driver
//! task). Per packet there is no task and no allocation of ours: packets are rewritten in place
//! in buffers owned by the task (the SRTP crate allocates its output buffer, see
//! docs/BENCHMARKS.md).
//!
//! Shared codec → passthrough: headers rewritten per leg (our SSRC, one continuous sequence
//! space, timestamps scaled), payload untouched, never decoded. No shared codec → transcoding:
//! an adaptive jitter buffer, decode → resample → encode in 20 ms frames, concealment for lost
//! packets; the transcoded frames still go through the same rewriter so the outgoing stream
//! stays one stream with telephone-events. telephone-event (RFC 4733) is relayed when both legs
//! negotiated it, and every key press is reported as [`BridgeEvent::Dtmf`] either way.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, trace, warn};

use super::codec::{Codec, Transcoder, TranscoderConfig};
use super::dtmf::{DtmfDetector, DtmfRelay, TelephoneEvent};
use super::jitter::{JitterBuffer, JitterConfig, PacketMeta, Pop};
use super::latch::{Evidence, Latch, Verdict};
use super::ports::{PortAllocator, PortGuard, PortMode, PortsError};
use super::rtp::{
    self, FIXED_HEADER_LEN, PtMap, Rewrite, Rewriter, RewriterConfig, RtcpSession, RtpPacket,
};
use super::sdes::{CryptoAttribute, SdesError, SdesKey, SdesSession, SdesSuite};
use super::webrtc::{
    Candidate, LegConfig, LegEvent, LegReceivers, LocalDescription, MediaPacket, RemoteDescription,
    WebRtcError, WebRtcLeg,
};

/// Largest datagram we read: an Ethernet MTU plus headroom; a bigger datagram is truncated by the
/// kernel and then fails to parse or authenticate, so it is dropped.
const MAX_DATAGRAM: usize = 1500;
/// The header in front of a transcoded payload: our frames carry a fixed 12-byte header (no
/// CSRCs, no extension).
const OUT_HEADER_ROOM: usize = FIXED_HEADER_LEN;
/// The SDES suite we offer: the one every SIP phone with SRTP implements (RFC 4568 §6.2.1).
pub const DEFAULT_SDES_SUITE: SdesSuite = SdesSuite::AesCm128HmacSha1_80;

/// Settings shared by every bridge (`[media]`).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The local address both legs bind and gather on.
    pub bind_ip: IpAddr,
    /// 1:1 NAT: advertised in place of `bind_ip` (ICE host candidates and the SIP leg's address).
    pub public_ip: Option<IpAddr>,
    /// Inclusive UDP port range for every media socket.
    pub min_port: u16,
    pub max_port: u16,
    /// Bound on ICE + DTLS on the WebRTC leg.
    pub connect_timeout: Duration,
    /// Opus encoder settings on the transcoding path.
    pub transcoder: TranscoderConfig,
}

/// The address of the interface that holds the default route: the source address the kernel
/// picks for a UDP socket connected toward a TEST-NET-1 address (connecting a UDP socket sends
/// nothing). 127.0.0.1 when there is no route at all (e.g. a loopback-only namespace).
pub fn default_route_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect((std::net::Ipv4Addr::new(192, 0, 2, 1), 9))?;
        Ok(s.local_addr()?.ip())
    };
    probe()
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

impl MediaConfig {
    /// From `[media]`: `bind_ip` detected when not set ([`default_route_ip`]). Checks that the
    /// address is one of this host's by binding it once, so a typo fails at startup naming the
    /// key rather than at the first call.
    pub fn from_config(c: &crate::config::MediaConfig) -> Result<Self, String> {
        let bind_ip = c.bind_ip.unwrap_or_else(default_route_ip);
        std::net::UdpSocket::bind((bind_ip, 0)).map_err(|e| {
            format!(
                "media.bind_ip: cannot bind {bind_ip}: {e} (it must be an address of this host)"
            )
        })?;
        Ok(Self {
            public_ip: c.public_ip,
            ..Self::new(bind_ip, c.min_port, c.max_port)
        })
    }

    pub fn new(bind_ip: IpAddr, min_port: u16, max_port: u16) -> Self {
        Self {
            bind_ip,
            public_ip: None,
            min_port,
            max_port,
            connect_timeout: super::webrtc::DEFAULT_CONNECT_TIMEOUT,
            transcoder: TranscoderConfig::default(),
        }
    }
}

/// Why a bridge could not be created or changed. Every variant is a clean error the call layer
/// turns into SIP 488/503 or a Jingle reason; none is a panic.
#[derive(Debug, Error)]
pub enum MediaError {
    /// The port range is used up: SIP 503, Jingle `general-error`.
    #[error("no media ports free: {0}")]
    Ports(#[from] PortsError),
    #[error("WebRTC leg: {0}")]
    WebRtc(#[from] WebRtcError),
    #[error("SDES-SRTP: {0}")]
    Sdes(#[from] SdesError),
    /// The legs' codec lists cannot be bridged: SIP 488, Jingle `failed-application`.
    #[error("no usable audio codec on the {0} leg")]
    NoCodec(LegKind),
    #[error("socket setup failed: {0}")]
    Io(#[from] std::io::Error),
    /// A second remote description with different codecs (a re-INVITE changing codecs is not
    /// supported yet; the caller answers 488).
    #[error("the {0} leg's codecs cannot change during a call")]
    CodecChange(LegKind),
    #[error("the bridge has stopped")]
    Stopped,
}

/// Which side of the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegKind {
    WebRtc,
    Sip,
}

impl LegKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LegKind::WebRtc => "webrtc",
            LegKind::Sip => "sip",
        }
    }
}

impl fmt::Display for LegKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Our role in the WebRTC leg's offer/answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebRtcRole {
    /// We send the offer (a SIP caller reaches an XMPP user): ICE controlling, `setup:actpass`.
    Offerer,
    /// We answer (an XMPP user or Jicofo calls out): ICE controlled, `setup:active`.
    Answerer,
}

/// One negotiated audio payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    pub pt: u8,
    pub codec: Codec,
}

/// The negotiated telephone-event format (RFC 4733) of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEventFormat {
    pub pt: u8,
    pub clock: u32,
}

/// What one leg negotiated: audio formats, preferred first, and telephone-event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegCodecs {
    pub audio: Vec<AudioFormat>,
    pub telephone_event: Option<TelephoneEventFormat>,
    /// Further telephone-event formats the leg offered (other clocks: a browser offers
    /// telephone-event/48000 and /8000); the plan takes the one on the chosen codec's clock.
    pub other_telephone_events: Vec<TelephoneEventFormat>,
}

impl LegCodecs {
    /// Every telephone-event format of the leg, the preferred one first.
    pub fn telephone_events(&self) -> impl Iterator<Item = &TelephoneEventFormat> {
        self.telephone_event
            .iter()
            .chain(&self.other_telephone_events)
    }
    /// The leg's telephone-event format on `clock` (RFC 4733 §2.1), not clashing with `audio_pt`.
    pub fn telephone_event_on(&self, clock: u32, audio_pt: u8) -> Option<TelephoneEventFormat> {
        self.telephone_events()
            .find(|t| t.clock == clock && t.pt != audio_pt)
            .copied()
    }
}

/// How the bridge carries audio, chosen once both legs' codecs are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPlan {
    pub webrtc: AudioFormat,
    pub sip: AudioFormat,
    /// `false`: the legs share the codec and packets pass through undecoded.
    pub transcode: bool,
    /// Each leg's telephone-event format on its chosen codec's clock, if it has one.
    pub webrtc_event: Option<TelephoneEventFormat>,
    pub sip_event: Option<TelephoneEventFormat>,
}

impl MediaPlan {
    /// telephone-event relayed between the legs (both negotiated it on their audio clock).
    pub fn dtmf_relay(&self) -> bool {
        self.webrtc_event.is_some() && self.sip_event.is_some()
    }
}

/// Chooses the plan: the first codec of the WebRTC leg's list that the SIP leg also has
/// (passthrough); failing that, each leg's first codec (transcoding). The WebRTC list leads
/// because the call layer offers the WebRTC side's codecs first on the SIP side, so a shared
/// codec is found whenever the SIP side has one.
pub fn plan(webrtc: &LegCodecs, sip: &LegCodecs) -> Result<MediaPlan, MediaError> {
    let first_w = *webrtc
        .audio
        .first()
        .ok_or(MediaError::NoCodec(LegKind::WebRtc))?;
    let first_s = *sip.audio.first().ok_or(MediaError::NoCodec(LegKind::Sip))?;
    let shared = webrtc.audio.iter().find_map(|w| {
        sip.audio
            .iter()
            .find(|s| s.codec == w.codec)
            .map(|s| (*w, *s))
    });
    let (w, s, transcode) = match shared {
        Some((w, s)) => (w, s, false),
        None => (first_w, first_s, true),
    };
    // One rewriter per direction scales audio and telephone-event timestamps by one ratio, so
    // each leg's events must run on that leg's audio clock (RFC 4733 §2.1).
    let webrtc_event = webrtc.telephone_event_on(w.codec.clock_rate(), w.pt);
    let sip_event = sip.telephone_event_on(s.codec.clock_rate(), s.pt);
    Ok(MediaPlan {
        webrtc: w,
        sip: s,
        transcode,
        webrtc_event,
        sip_event,
    })
}

/// SIP media direction (RFC 3264 §5.1), for hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// Do we send on a leg whose (local) direction is this?
    fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
    /// This direction with receiving taken out (we hold the other side: RFC 3264 §8.4).
    pub fn without_receiving(self) -> Direction {
        match self {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        }
    }
}

/// The SIP side's media description (from its SDP).
#[derive(Debug, Clone)]
pub struct SipRemote {
    /// `c=` address and `m=` port.
    pub rtp: SocketAddr,
    /// `a=rtcp` (RFC 3605), or the RTP port + 1 when `None`.
    pub rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux` agreed: RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// The SIP side's chosen `a=crypto` (RTP/SAVP); `None` for plain RTP.
    pub crypto: Option<CryptoAttribute>,
    pub codecs: LegCodecs,
    /// *Our* direction toward the SIP side, i.e. what we put in our own SDP: when the SIP side
    /// holds us with `a=sendonly`, this is `RecvOnly` (we keep playing their music on hold to
    /// the XMPP side and send nothing); the call layer inverts the SIP side's attribute. A
    /// `c=0.0.0.0` (RFC 2543 hold) address also stops sending, whatever this says.
    pub local_direction: Direction,
}

/// Our SIP leg, for the SDP we send.
#[derive(Debug, Clone)]
pub struct SipLocal {
    /// Address and RTP port to put in `c=`/`m=` (the public IP when configured).
    pub rtp: SocketAddr,
    /// The RTCP port (RTP + 1).
    pub rtcp_port: u16,
    /// Our `a=crypto` for an RTP/SAVP offer (tag 1, [`DEFAULT_SDES_SUITE`]). When answering an
    /// offer with another suite or tag, use what [`Bridge::set_sip_remote`] returns instead.
    pub crypto: CryptoAttribute,
}

/// What the call layer signals for both legs.
#[derive(Debug, Clone)]
pub struct BridgeLocal {
    pub webrtc: LocalDescription,
    pub sip: SipLocal,
    /// The SSRC and RTCP CNAME of what the bridge sends on the WebRTC leg: announce these in
    /// the Jingle `<source/>` (browsers play only announced SSRCs).
    pub webrtc_ssrc: u32,
    pub webrtc_cname: String,
}

/// Progress of a bridge.
#[derive(Debug, Clone, PartialEq)]
pub enum BridgeEvent {
    /// Both legs' codecs are known; media flows as planned.
    Plan(MediaPlan),
    /// The WebRTC leg is up (ICE + DTLS + fingerprint verified + SRTP keyed).
    Connected {
        leg: LegKind,
        remote: SocketAddr,
        elapsed: Duration,
    },
    /// A leg failed for good (ICE, DTLS, fingerprint mismatch, timeout): end the call with the
    /// matching reason. Media toward that leg stops.
    Failed { leg: LegKind, reason: String },
    /// The SIP leg latched to (or moved to) this source address (symmetric RTP).
    Latched(SocketAddr),
    /// A finished key press received on `from`.
    Dtmf {
        from: LegKind,
        digit: char,
        duration_ms: u32,
    },
}

/// Counters of one direction of media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// RTP packets accepted from the source leg.
    pub received: u64,
    /// RTP packets sent on the sink leg (audio and telephone-event).
    pub sent: u64,
    /// Frames decoded (0 on a passthrough call: the proof it did not decode).
    pub decoded: u64,
    /// Frames produced by concealment.
    pub concealed: u64,
    /// Packets dropped: unknown payload type, duplicate, late, malformed, or no sink yet.
    pub dropped: u64,
    /// telephone-event packets relayed.
    pub dtmf: u64,
}

/// A snapshot of a bridge's state and counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BridgeStats {
    pub plan: Option<MediaPlan>,
    pub webrtc_connected: bool,
    pub webrtc_to_sip: DirectionStats,
    pub sip_to_webrtc: DirectionStats,
    /// Where the SIP leg sends now, and whether it latched to the peer's source.
    pub sip_destination: Option<SocketAddr>,
    pub sip_latched: bool,
    /// Packets from other sources dropped by the latch, and SRTP authentication failures.
    pub sip_foreign: u64,
    pub sip_unprotect_failures: u64,
    /// SRTP authentication failures on the WebRTC leg.
    pub webrtc_unprotect_failures: u64,
    /// Round-trip times from each leg's RTCP reports.
    pub webrtc_rtt: Option<Duration>,
    pub sip_rtt: Option<Duration>,
}

/// The media engine: the port range and the bridges drawing on it.
#[derive(Debug, Clone)]
pub struct MediaEngine {
    config: Arc<MediaConfig>,
    ports: PortAllocator,
    active: Arc<AtomicUsize>,
}

impl MediaEngine {
    pub fn new(config: MediaConfig) -> Result<Self, MediaError> {
        let ports = PortAllocator::new(config.min_port, config.max_port)?;
        Ok(Self {
            config: Arc::new(config),
            ports,
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Media ports held by live bridges (3 per bridge: the SIP RTP/RTCP pair and the ICE
    /// socket).
    pub fn ports_in_use(&self) -> usize {
        self.ports.in_use()
    }

    /// Bridges whose task is still running.
    pub fn active_bridges(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Allocates the ports of a new call, gathers the WebRTC leg's candidates and makes its DTLS
    /// certificate. Fails cleanly (no ports left held) when the range is used up.
    pub async fn create_bridge(
        &self,
        role: WebRtcRole,
    ) -> Result<(Bridge, BridgeLocal), MediaError> {
        let cfg = &self.config;
        let sip_lease = self
            .ports
            .allocate(cfg.bind_ip, PortMode::Pair)?
            .into_tokio()?;
        // The ICE agent binds its own socket: reserve a port for it in our range and let the
        // agent bind exactly that port, so `ports_in_use` counts every media socket.
        let ice_lease = self.ports.allocate(cfg.bind_ip, PortMode::Mux)?;
        let ice_port = ice_lease.rtp_port();
        let ice_guard = ice_lease.guard;
        drop(ice_lease.rtp);
        let mut leg_config = match role {
            WebRtcRole::Offerer => LegConfig::offerer(cfg.bind_ip, ice_port, ice_port),
            WebRtcRole::Answerer => LegConfig::answerer(cfg.bind_ip, ice_port, ice_port),
        };
        leg_config.public_ip = cfg.public_ip;
        leg_config.connect_timeout = cfg.connect_timeout;
        let (leg, webrtc_local) = WebRtcLeg::new(leg_config).await?;

        let rtp_port = sip_lease.rtp.local_addr()?.port();
        let rtcp_port = rtp_port + 1;
        let advertised = cfg.public_ip.unwrap_or(cfg.bind_ip);
        let offer_key = SdesKey::generate(DEFAULT_SDES_SUITE);
        let webrtc_ssrc: u32 = rand::random();
        let webrtc_cname = random_cname();
        let sip_local = SipLocal {
            rtp: SocketAddr::new(advertised, rtp_port),
            rtcp_port,
            crypto: CryptoAttribute::new(1, offer_key.clone()),
        };

        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        self.active.fetch_add(1, Ordering::Relaxed);
        let task = BridgeTask {
            config: Arc::clone(&self.config),
            leg,
            leg_events: None,
            leg_media: None,
            webrtc_codecs: None,
            webrtc_connected: false,
            webrtc_failed: false,
            sip_rtp: sip_lease.rtp,
            sip_rtcp: sip_lease.rtcp,
            _guards: (sip_lease.guard, ice_guard),
            sip: None,
            offer_key,
            offer_key_used: false,
            media: None,
            events: events_tx,
            stats: BridgeStats::default(),
            _active: ActiveGuard(Arc::clone(&self.active)),
            webrtc_ssrc,
            webrtc_cname: webrtc_cname.clone(),
        };
        let span = tracing::info_span!("bridge", sip_port = rtp_port, ice_port);
        let handle = tokio::spawn(task.run(cmd_rx).instrument(span));
        Ok((
            Bridge {
                cmd: cmd_tx,
                events: Some(events_rx),
                task: Some(handle),
            },
            BridgeLocal {
                webrtc: webrtc_local,
                sip: sip_local,
                webrtc_ssrc,
                webrtc_cname: webrtc_cname.clone(),
            },
        ))
    }
}

/// Requests from the [`Bridge`] handle to its task.
enum Command {
    WebRtcRemote(
        RemoteDescription,
        LegCodecs,
        oneshot::Sender<Result<(), MediaError>>,
    ),
    WebRtcCandidate(Candidate, oneshot::Sender<Result<(), MediaError>>),
    SipRemote(
        SipRemote,
        oneshot::Sender<Result<Option<CryptoAttribute>, MediaError>>,
    ),
    Stats(oneshot::Sender<BridgeStats>),
    Close(oneshot::Sender<()>),
}

/// The call layer's handle on one bridge. Dropping it stops the bridge and frees its ports.
pub struct Bridge {
    cmd: mpsc::Sender<Command>,
    events: Option<mpsc::UnboundedReceiver<BridgeEvent>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge").finish_non_exhaustive()
    }
}

impl Bridge {
    /// The event stream; `None` after the first call.
    pub fn take_events(&mut self) -> Option<mpsc::UnboundedReceiver<BridgeEvent>> {
        self.events.take()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| MediaError::Stopped)?;
        rx.await.map_err(|_| MediaError::Stopped)
    }

    /// Applies the WebRTC peer's transport description and the codecs negotiated on that leg,
    /// and starts ICE + DTLS. A fingerprint that does not match the peer's certificate ends the
    /// leg with [`BridgeEvent::Failed`].
    pub async fn set_webrtc_remote(
        &self,
        remote: RemoteDescription,
        codecs: LegCodecs,
    ) -> Result<(), MediaError> {
        self.request(|tx| Command::WebRtcRemote(remote, codecs, tx))
            .await?
    }

    /// A trickled remote candidate (XEP-0176 transport-info).
    pub async fn add_webrtc_candidate(&self, candidate: Candidate) -> Result<(), MediaError> {
        self.request(|tx| Command::WebRtcCandidate(candidate, tx))
            .await?
    }

    /// Applies the SIP side's media description; again on a re-INVITE (new address, hold).
    /// Returns the `a=crypto` to put in our SDP answer when `remote.crypto` is set (same tag and
    /// suite as the SIP side's, our own key).
    pub async fn set_sip_remote(
        &self,
        remote: SipRemote,
    ) -> Result<Option<CryptoAttribute>, MediaError> {
        self.request(|tx| Command::SipRemote(remote, tx)).await?
    }

    /// Counters and state; [`MediaError::Stopped`] once the bridge has ended.
    pub async fn stats(&self) -> Result<BridgeStats, MediaError> {
        self.request(Command::Stats).await
    }

    /// Stops both legs (DTLS close_notify, ICE agent closed), frees the ports and waits for the
    /// task to end.
    pub async fn close(mut self) {
        let _ = self.request(Command::Close).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping `cmd` ends the task's command stream; the task then closes the legs itself.
        if let Some(task) = &self.task {
            trace!(finished = task.is_finished(), "bridge handle dropped");
        }
    }
}

/// The SIP leg once its remote is known.
struct SipLeg {
    remote: SipRemote,
    latch: Latch,
    srtp: Option<SdesSession>,
    /// Our SDES key in use (the one in our last answer).
    local_key: Option<SdesKey>,
    rtcp: Option<RtcpSession>,
    /// Where the SIP side's RTCP really comes from (symmetric RTCP behind NAT).
    rtcp_dest: Option<SocketAddr>,
}

/// One direction of media: packets from `source` rewritten (and maybe transcoded) for the sink.
struct Flow {
    audio_in_pt: u8,
    te_in_pt: Option<u8>,
    rewriter: Rewriter,
    relay: Option<DtmfRelay>,
    detector: Option<DtmfDetector>,
    transcode: Option<TranscodePath>,
    /// Output packet buffer of the transcoding path (header + encoded payload), allocated once;
    /// empty on passthrough.
    out: Vec<u8>,
    stats: DirectionStats,
}

struct TranscodePath {
    jitter: JitterBuffer,
    transcoder: Transcoder,
    /// SSRC of the source stream, put on transcoded frames so the rewriter sees one stream.
    source_ssrc: u32,
    /// A rejected frame was logged (once per call: a peer sending 30 or 60 ms packets would
    /// otherwise log 50 lines a second).
    warned: bool,
}

/// What the flow wants sent for one received packet.
enum FlowOut {
    /// Send the (rewritten in place) packet.
    Send,
    /// Nothing to send now (buffered for transcoding, or dropped).
    Nothing,
}

impl Flow {
    fn new(
        from: AudioFormat,
        to: AudioFormat,
        te: Option<(TelephoneEventFormat, TelephoneEventFormat)>,
        detect: Option<TelephoneEventFormat>,
        transcode: bool,
        transcoder: TranscoderConfig,
        ssrc: Option<rtp::Ssrc>,
    ) -> Result<Self, MediaError> {
        let mut pt_map = PtMap::new();
        pt_map.insert(from.pt, to.pt);
        if let Some((i, o)) = te {
            pt_map.insert(i.pt, o.pt);
        }
        let mut config =
            RewriterConfig::random(from.codec.clock_rate(), to.codec.clock_rate(), pt_map);
        if let Some(ssrc) = ssrc {
            config.ssrc = ssrc;
        }
        let rewriter = Rewriter::new(config)
            .map_err(|e| MediaError::Io(std::io::Error::other(e.to_string())))?;
        let relay = match te {
            Some((i, o)) => Some(
                DtmfRelay::new(i.clock, o.clock)
                    .map_err(|e| MediaError::Io(std::io::Error::other(e.to_string())))?,
            ),
            None => None,
        };
        // A telephone-event payload type equal to the audio one would make every audio packet
        // an "event": a broken offer; detect nothing rather than misparse audio.
        let detect = detect.filter(|f| f.pt != from.pt);
        let detector = match detect {
            Some(f) => DtmfDetector::new(f.clock).ok(),
            None => None,
        };
        let (transcode, out) = if transcode {
            let t = Transcoder::new(from.codec, to.codec, transcoder)
                .map_err(|e| MediaError::Io(std::io::Error::other(e.to_string())))?;
            let jitter = JitterBuffer::new(JitterConfig::new(from.codec.clock_rate()))
                .map_err(|e| MediaError::Io(std::io::Error::other(e.to_string())))?;
            let out = vec![0u8; OUT_HEADER_ROOM + t.max_output_len()];
            let path = TranscodePath {
                jitter,
                transcoder: t,
                source_ssrc: 0,
                warned: false,
            };
            (Some(path), out)
        } else {
            (None, Vec::new())
        };
        Ok(Flow {
            audio_in_pt: from.pt,
            te_in_pt: detect.map(|f| f.pt),
            rewriter,
            relay,
            detector,
            transcode,
            out,
            stats: DirectionStats::default(),
        })
    }

    /// Handles one plain RTP packet from the source leg, rewriting it in place when it is to be
    /// forwarded as is. DTMF key presses found on the way are pushed to `dtmf`.
    fn on_packet(&mut self, buf: &mut [u8], now: Instant, dtmf: &mut Vec<(char, u32)>) -> FlowOut {
        let Ok(pkt) = RtpPacket::parse(buf) else {
            self.stats.dropped += 1;
            return FlowOut::Nothing;
        };
        self.stats.received += 1;
        let pt = pkt.payload_type();
        let (ssrc, seq, ts, marker) = (
            pkt.ssrc().0,
            pkt.sequence_number(),
            pkt.timestamp(),
            pkt.marker(),
        );
        if Some(pt) == self.te_in_pt {
            if let (Some(d), Ok(ev)) = (&mut self.detector, TelephoneEvent::parse(pkt.payload())) {
                d.push(ts, &ev);
                while let Some(e) = d.poll_event() {
                    dtmf.push((e.digit, e.duration_ms));
                }
            }
            return match &self.relay {
                Some(relay) => match relay.relay_packet(&mut self.rewriter, buf, now) {
                    Ok(Some(_)) => {
                        self.stats.dtmf += 1;
                        FlowOut::Send
                    }
                    _ => {
                        self.stats.dropped += 1;
                        FlowOut::Nothing
                    }
                },
                None => FlowOut::Nothing,
            };
        }
        if pt != self.audio_in_pt {
            // Comfort noise, a codec the plan did not pick, or garbage.
            self.stats.dropped += 1;
            return FlowOut::Nothing;
        }
        match &mut self.transcode {
            None => match self.rewriter.rewrite(buf, now) {
                Ok(Rewrite::Forward { .. }) => FlowOut::Send,
                _ => {
                    self.stats.dropped += 1;
                    FlowOut::Nothing
                }
            },
            Some(t) => {
                let meta = PacketMeta {
                    seq,
                    timestamp: ts,
                    payload_type: pt,
                    marker,
                };
                let header_len = pkt.header_len();
                let payload_end = pkt.as_bytes().len() - padding_len(&pkt);
                let payload = buf.get(header_len..payload_end).unwrap_or_default();
                t.source_ssrc = ssrc;
                use super::jitter::Push;
                match t.jitter.push(meta, payload, now) {
                    Push::Buffered | Push::Resynced => {}
                    _ => self.stats.dropped += 1,
                }
                FlowOut::Nothing
            }
        }
    }

    /// When the transcoding path next has a frame due.
    fn poll_timeout(&self) -> Option<Instant> {
        self.transcode
            .as_ref()
            .and_then(|t| t.jitter.poll_timeout())
    }

    /// Builds the next transcoded packet due at `now` in `self.out` and returns its length;
    /// `None` when nothing is due. Lost frames are concealed so the outgoing cadence holds.
    fn next_transcoded(&mut self, now: Instant) -> Option<usize> {
        let t = self.transcode.as_mut()?;
        loop {
            let (header, body) = self.out.split_at_mut(OUT_HEADER_ROOM);
            let (meta, encoded) = match t.jitter.pop(now) {
                Pop::Empty => return None,
                Pop::Frame(f) => {
                    let n = match t.transcoder.transcode(f.payload, body) {
                        Ok(n) => n,
                        // A malformed frame keeps the cadence with a concealed one.
                        Err(e) => {
                            if !t.warned {
                                t.warned = true;
                                warn!("cannot transcode a received frame (concealed): {e}");
                            }
                            t.transcoder.conceal(body).unwrap_or(0)
                        }
                    };
                    (f.meta, n)
                }
                Pop::Missing { seq, timestamp } => (
                    PacketMeta {
                        seq,
                        timestamp,
                        payload_type: self.audio_in_pt,
                        marker: false,
                    },
                    t.transcoder.conceal(body).unwrap_or(0),
                ),
            };
            let counts = t.transcoder.stats();
            self.stats.decoded = counts.decoded;
            self.stats.concealed = counts.concealed;
            if encoded == 0
                || rtp::write_header(
                    header,
                    meta.marker,
                    self.audio_in_pt,
                    meta.seq,
                    meta.timestamp,
                    rtp::Ssrc(t.source_ssrc),
                )
                .is_err()
            {
                self.stats.dropped += 1;
                continue;
            }
            let len = OUT_HEADER_ROOM + encoded;
            match self.rewriter.rewrite(&mut self.out[..len], now) {
                Ok(Rewrite::Forward { .. }) => return Some(len),
                _ => self.stats.dropped += 1,
            }
        }
    }
}

/// Bytes of RTP padding at the end of the packet (RFC 3550 §5.1 P bit).
fn padding_len(pkt: &RtpPacket<'_>) -> usize {
    if !pkt.has_padding() {
        return 0;
    }
    let bytes = pkt.as_bytes();
    let n = usize::from(bytes.last().copied().unwrap_or(0));
    n.min(bytes.len().saturating_sub(pkt.header_len()))
}

/// Media state once the plan is known.
struct Media {
    plan: MediaPlan,
    /// WebRTC → SIP and SIP → WebRTC.
    to_sip: Flow,
    to_webrtc: Flow,
    webrtc_rtcp: RtcpSession,
}

struct BridgeTask {
    config: Arc<MediaConfig>,
    leg: WebRtcLeg,
    leg_events: Option<mpsc::UnboundedReceiver<LegEvent>>,
    leg_media: Option<mpsc::Receiver<MediaPacket>>,
    webrtc_codecs: Option<LegCodecs>,
    webrtc_connected: bool,
    webrtc_failed: bool,
    sip_rtp: UdpSocket,
    sip_rtcp: Option<UdpSocket>,
    /// Returned to the allocator when the task ends, after the sockets are closed.
    _guards: (PortGuard, PortGuard),
    sip: Option<SipLeg>,
    offer_key: SdesKey,
    offer_key_used: bool,
    media: Option<Media>,
    events: mpsc::UnboundedSender<BridgeEvent>,
    stats: BridgeStats,
    _active: ActiveGuard,
    /// What goes on the WebRTC leg: its SSRC and CNAME (announced in signalling).
    webrtc_ssrc: u32,
    webrtc_cname: String,
}

/// Counts a live bridge task; decremented however the task ends (close, drop, panic, abort).
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A random RFC 7022 CNAME for one leg's RTCP.
fn random_cname() -> String {
    format!("{:016x}@xsg", rand::random::<u64>())
}

async fn recv_opt<T>(rx: &mut Option<impl ChannelRecv<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv_one().await,
        None => std::future::pending().await,
    }
}

/// `recv` of tokio's bounded and unbounded receivers, so one helper can wait on either.
trait ChannelRecv<T> {
    fn recv_one(&mut self) -> impl std::future::Future<Output = Option<T>> + Send;
}

impl<T: Send> ChannelRecv<T> for mpsc::Receiver<T> {
    fn recv_one(&mut self) -> impl std::future::Future<Output = Option<T>> + Send {
        self.recv()
    }
}

impl<T: Send> ChannelRecv<T> for mpsc::UnboundedReceiver<T> {
    fn recv_one(&mut self) -> impl std::future::Future<Output = Option<T>> + Send {
        self.recv()
    }
}

async fn recv_from_opt(
    socket: &Option<UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sends one plain RTP packet on the SIP leg: protected when SDES is on, to the latched (or
/// signalled) address, not at all while the SIP side holds us (`recvonly`/`inactive` for us).
async fn send_sip(
    socket: &UdpSocket,
    sip: &mut SipLeg,
    stats: &mut DirectionStats,
    packet: &[u8],
    now: Instant,
) {
    if !sip.remote.local_direction.sends() {
        stats.dropped += 1;
        return;
    }
    let dest = sip.latch.destination();
    if dest.ip().is_unspecified() || dest.port() == 0 || sip.remote.rtp.ip().is_unspecified() {
        // RFC 2543 hold (`c=0.0.0.0`) or a rejected stream: nowhere to send.
        stats.dropped += 1;
        return;
    }
    let sent = match &mut sip.srtp {
        Some(s) => match s.protect_rtp(packet) {
            Ok(p) => socket.send_to(&p, dest).await,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        },
        None => socket.send_to(packet, dest).await,
    };
    match sent {
        Ok(_) => {
            stats.sent += 1;
            if let (Ok(p), Some(rtcp)) = (RtpPacket::parse(packet), &mut sip.rtcp) {
                rtcp.on_rtp_sent(p.timestamp(), p.payload().len(), now);
            }
        }
        Err(e) => {
            stats.dropped += 1;
            trace!("SIP RTP send to {dest}: {e}");
        }
    }
}

/// Sends one plain RTP packet on the WebRTC leg once it is connected.
async fn send_webrtc(
    leg: &WebRtcLeg,
    connected: bool,
    rtcp: &mut RtcpSession,
    stats: &mut DirectionStats,
    packet: &[u8],
    now: Instant,
) {
    if !connected {
        stats.dropped += 1;
        return;
    }
    match leg.send_rtp(packet).await {
        Ok(()) => {
            stats.sent += 1;
            if let Ok(p) = RtpPacket::parse(packet) {
                rtcp.on_rtp_sent(p.timestamp(), p.payload().len(), now);
            }
        }
        Err(e) => {
            stats.dropped += 1;
            trace!("WebRTC RTP send: {e}");
        }
    }
}

impl BridgeTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut sip_buf = vec![0u8; MAX_DATAGRAM];
        let mut rtcp_buf = vec![0u8; MAX_DATAGRAM];
        let mut closed_by: Option<oneshot::Sender<()>> = None;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Close(reply)) => { closed_by = Some(reply); break; }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                ev = recv_opt(&mut self.leg_events) => match ev {
                    Some(ev) => self.on_leg_event(ev),
                    None => self.leg_events = None,
                },
                pkt = recv_opt(&mut self.leg_media) => match pkt {
                    Some(pkt) => self.on_webrtc_media(pkt).await,
                    None => self.leg_media = None,
                },
                r = self.sip_rtp.recv_from(&mut sip_buf) => match r {
                    Ok((n, from)) => self.on_sip_datagram(&mut sip_buf[..n], from).await,
                    Err(e) => debug!("SIP RTP socket: {e}"),
                },
                r = recv_from_opt(&self.sip_rtcp, &mut rtcp_buf) => match r {
                    Ok((n, from)) => self.on_sip_rtcp(&rtcp_buf[..n], from, true),
                    Err(e) => debug!("SIP RTCP socket: {e}"),
                },
                () = sleep_until_opt(wake) => self.on_timers().await,
            }
        }
        self.leg.close().await;
        info!(
            to_sip = ?self.media.as_ref().map(|m| m.to_sip.stats),
            to_webrtc = ?self.media.as_ref().map(|m| m.to_webrtc.stats),
            "bridge closed"
        );
        // Sockets and port guards drop with `self`, before the reply says the ports are free.
        drop(self);
        if let Some(reply) = closed_by {
            let _ = reply.send(());
        }
    }

    fn emit(&self, event: BridgeEvent) {
        let _ = self.events.send(event);
    }

    fn next_wake(&self) -> Option<Instant> {
        let m = self.media.as_ref()?;
        let mut wake = min_opt(m.to_sip.poll_timeout(), m.to_webrtc.poll_timeout());
        if self.webrtc_connected {
            wake = min_opt(wake, m.webrtc_rtcp.poll_timeout());
        }
        if let Some(rtcp) = self.sip.as_ref().and_then(|s| s.rtcp.as_ref()) {
            wake = min_opt(wake, rtcp.poll_timeout());
        }
        wake
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::WebRtcRemote(remote, codecs, reply) => {
                let r = self.set_webrtc_remote(remote, codecs);
                let _ = reply.send(r);
                self.try_plan();
            }
            Command::WebRtcCandidate(c, reply) => {
                let _ = reply.send(self.leg.add_remote_candidate(&c).map_err(Into::into));
            }
            Command::SipRemote(remote, reply) => {
                let r = self.set_sip_remote(remote);
                let _ = reply.send(r);
                self.try_plan();
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Close(_) => {}
        }
    }

    fn set_webrtc_remote(
        &mut self,
        remote: RemoteDescription,
        codecs: LegCodecs,
    ) -> Result<(), MediaError> {
        if codecs.audio.is_empty() {
            return Err(MediaError::NoCodec(LegKind::WebRtc));
        }
        if self.webrtc_codecs.is_some() {
            return Err(MediaError::CodecChange(LegKind::WebRtc));
        }
        self.leg.set_remote(remote)?;
        let LegReceivers { events, media } = self.leg.connect()?;
        self.leg_events = Some(events);
        self.leg_media = Some(media);
        self.webrtc_codecs = Some(codecs);
        Ok(())
    }

    fn set_sip_remote(&mut self, remote: SipRemote) -> Result<Option<CryptoAttribute>, MediaError> {
        if remote.codecs.audio.is_empty() {
            return Err(MediaError::NoCodec(LegKind::Sip));
        }
        if let Some(sip) = &self.sip
            && sip.remote.codecs != remote.codecs
        {
            return Err(MediaError::CodecChange(LegKind::Sip));
        }
        let now = Instant::now();
        // SDES: the session stays while the SIP side's key is unchanged (same suite and
        // material). Any change rebuilds both directions with a fresh key of ours, so that no
        // key is ever used again with a restarted packet index (RFC 3711 §9.1). The key we
        // offered is used once, for the first answer that picks its suite.
        let current = self.sip.as_ref().and_then(|sip| {
            let theirs = sip.remote.crypto.as_ref()?;
            Some((theirs.key.clone(), sip.local_key.clone()?))
        });
        let (rekeyed, local_key) = match &remote.crypto {
            None => (Some(None), None),
            Some(theirs) => match current {
                Some((old, ours)) if old == theirs.key => (None, Some(ours)),
                _ => {
                    let ours = if !self.offer_key_used && theirs.key.suite == self.offer_key.suite {
                        self.offer_key_used = true;
                        self.offer_key.clone()
                    } else {
                        SdesKey::generate(theirs.key.suite)
                    };
                    let session = SdesSession::new(&ours, &theirs.key)?;
                    (Some(Some(session)), Some(ours))
                }
            },
        };
        let answer = remote
            .crypto
            .as_ref()
            .zip(local_key.clone())
            .map(|(theirs, ours)| CryptoAttribute::new(theirs.tag, ours));
        match &mut self.sip {
            Some(sip) => {
                // A re-INVITE: new address (re-latch from there; `c=0.0.0.0` only stops
                // sending), new keys, hold.
                if sip.remote.rtp != remote.rtp && !remote.rtp.ip().is_unspecified() {
                    sip.latch.reset(remote.rtp, now);
                    sip.rtcp_dest = None;
                }
                if let Some(session) = rekeyed {
                    sip.srtp = session;
                }
                sip.local_key = local_key;
                sip.remote = remote;
            }
            None => {
                self.sip = Some(SipLeg {
                    latch: Latch::new(remote.rtp, now),
                    remote,
                    srtp: rekeyed.flatten(),
                    local_key,
                    rtcp: None,
                    rtcp_dest: None,
                });
            }
        }
        Ok(answer)
    }

    /// Builds the media flows once both legs' codecs are known.
    fn try_plan(&mut self) {
        if self.media.is_some() {
            return;
        }
        let (Some(w), Some(sip)) = (&self.webrtc_codecs, &mut self.sip) else {
            return;
        };
        let s = &sip.remote.codecs;
        let tc = self.config.transcoder;
        let (webrtc_ssrc, webrtc_cname) = (self.webrtc_ssrc, self.webrtc_cname.clone());
        let built = plan(w, s).and_then(|plan| {
            let te = plan.webrtc_event.zip(plan.sip_event);
            let to_sip = Flow::new(
                plan.webrtc,
                plan.sip,
                te,
                plan.webrtc_event.or(w.telephone_event),
                plan.transcode,
                tc,
                None,
            )?;
            let to_webrtc = Flow::new(
                plan.sip,
                plan.webrtc,
                te.map(|(a, b)| (b, a)),
                plan.sip_event.or(s.telephone_event),
                plan.transcode,
                tc,
                Some(rtp::Ssrc(webrtc_ssrc)),
            )?;
            let rtcp_err = |e: rtp::RtpError| MediaError::Io(std::io::Error::other(e.to_string()));
            let webrtc_rtcp = RtcpSession::new(
                to_webrtc.rewriter.ssrc(),
                plan.webrtc.codec.clock_rate(),
                &webrtc_cname,
            )
            .map_err(rtcp_err)?;
            let sip_rtcp = RtcpSession::new(
                to_sip.rewriter.ssrc(),
                plan.sip.codec.clock_rate(),
                &random_cname(),
            )
            .map_err(rtcp_err)?;
            Ok((plan, to_sip, to_webrtc, webrtc_rtcp, sip_rtcp))
        });
        match built {
            Ok((plan, to_sip, to_webrtc, webrtc_rtcp, sip_rtcp)) => {
                info!(?plan, "media plan");
                sip.rtcp = Some(sip_rtcp);
                // Packets only count toward the latch once media flows: the window opens now,
                // not when the SIP side's SDP arrived (a 183 may precede the answer by long).
                if !sip.latch.is_latched() {
                    sip.latch.reset(sip.remote.rtp, Instant::now());
                }
                self.stats.plan = Some(plan);
                self.media = Some(Media {
                    plan,
                    to_sip,
                    to_webrtc,
                    webrtc_rtcp,
                });
                self.emit(BridgeEvent::Plan(plan));
            }
            Err(e) => {
                // Not reachable with non-empty codec lists (checked when applied); reported
                // rather than assumed.
                warn!("cannot plan media: {e}");
                self.emit(BridgeEvent::Failed {
                    leg: LegKind::Sip,
                    reason: e.to_string(),
                });
            }
        }
    }

    fn on_leg_event(&mut self, ev: LegEvent) {
        match ev {
            LegEvent::Connected {
                remote, elapsed, ..
            } => {
                self.webrtc_connected = true;
                info!(%remote, ?elapsed, "WebRTC leg connected");
                self.emit(BridgeEvent::Connected {
                    leg: LegKind::WebRtc,
                    remote,
                    elapsed,
                });
            }
            LegEvent::Failed(reason) => {
                self.webrtc_connected = false;
                self.webrtc_failed = true;
                warn!("WebRTC leg failed: {reason}");
                self.emit(BridgeEvent::Failed {
                    leg: LegKind::WebRtc,
                    reason: reason.to_string(),
                });
            }
            LegEvent::Closed => {
                self.webrtc_connected = false;
                if !self.webrtc_failed {
                    self.webrtc_failed = true;
                    self.emit(BridgeEvent::Failed {
                        leg: LegKind::WebRtc,
                        reason: "the WebRTC peer closed DTLS".into(),
                    });
                }
            }
        }
    }

    /// Plain media from the WebRTC leg (SRTP already removed by the leg).
    async fn on_webrtc_media(&mut self, pkt: MediaPacket) {
        let now = Instant::now();
        let Some(media) = &mut self.media else {
            return;
        };
        match pkt {
            MediaPacket::Rtcp(buf) => {
                let _ = media.webrtc_rtcp.on_rtcp(&buf, now);
            }
            MediaPacket::Rtp(mut buf) => {
                if let Ok(p) = RtpPacket::parse(&buf) {
                    let (ssrc, seq, ts) = (p.ssrc(), p.sequence_number(), p.timestamp());
                    media.webrtc_rtcp.on_rtp_received(ssrc, seq, ts, now);
                }
                let mut dtmf = Vec::new();
                let out = media.to_sip.on_packet(&mut buf, now, &mut dtmf);
                for (digit, duration_ms) in dtmf {
                    let _ = self.events.send(BridgeEvent::Dtmf {
                        from: LegKind::WebRtc,
                        digit,
                        duration_ms,
                    });
                }
                if let (FlowOut::Send, Some(sip)) = (out, &mut self.sip) {
                    send_sip(&self.sip_rtp, sip, &mut media.to_sip.stats, &buf, now).await;
                }
                self.drain_transcoded(now).await;
            }
        }
    }

    /// One datagram on the SIP leg's RTP port: RTCP (rtcp-mux), SRTP or RTP.
    async fn on_sip_datagram(&mut self, buf: &mut [u8], from: SocketAddr) {
        if rtp::is_rtcp(buf) {
            self.on_sip_rtcp(buf, from, false);
            return;
        }
        let now = Instant::now();
        let (Some(sip), Some(media)) = (&mut self.sip, &mut self.media) else {
            // No remote yet (or no plan): nobody to bridge to.
            return;
        };
        if !sip.remote.local_direction.receives() {
            return;
        }
        // Unprotect into a scratch copy when SDES is on; the latch only moves on proof.
        let mut scratch;
        let (plain, evidence): (&mut [u8], Evidence) = match &mut sip.srtp {
            Some(s) => match s.unprotect_rtp(buf) {
                Ok(p) => {
                    scratch = p.to_vec();
                    (&mut scratch[..], Evidence::Authenticated)
                }
                Err(_) => {
                    self.stats.sip_unprotect_failures += 1;
                    return;
                }
            },
            None => {
                let negotiated = RtpPacket::parse(buf).is_ok_and(|p| {
                    let pt = p.payload_type();
                    sip.remote.codecs.audio.iter().any(|f| f.pt == pt)
                        || sip.remote.codecs.telephone_events().any(|t| t.pt == pt)
                });
                let evidence = if negotiated {
                    Evidence::NegotiatedRtp
                } else {
                    Evidence::None
                };
                (buf, evidence)
            }
        };
        match sip.latch.on_packet(from, evidence, now) {
            Verdict::FromPeer => {}
            Verdict::Latched(addr) => {
                debug!(%addr, "SIP leg latched");
                let _ = self.events.send(BridgeEvent::Latched(addr));
            }
            Verdict::Foreign => return,
        }
        if let (Ok(p), Some(rtcp)) = (RtpPacket::parse(plain), &mut sip.rtcp) {
            rtcp.on_rtp_received(p.ssrc(), p.sequence_number(), p.timestamp(), now);
        }
        let mut dtmf = Vec::new();
        let out = media.to_webrtc.on_packet(plain, now, &mut dtmf);
        for (digit, duration_ms) in dtmf {
            let _ = self.events.send(BridgeEvent::Dtmf {
                from: LegKind::Sip,
                digit,
                duration_ms,
            });
        }
        if let FlowOut::Send = out {
            send_webrtc(
                &self.leg,
                self.webrtc_connected,
                &mut media.webrtc_rtcp,
                &mut media.to_webrtc.stats,
                plain,
                now,
            )
            .await;
        }
        self.drain_transcoded(now).await;
    }

    /// RTCP from the SIP side (its RTCP port, or the RTP port with rtcp-mux).
    fn on_sip_rtcp(&mut self, buf: &[u8], from: SocketAddr, rtcp_port: bool) {
        let Some(sip) = &mut self.sip else { return };
        // Accepted only from the peer's IP (its port may differ: RTCP on port + 1).
        if from.ip() != sip.latch.destination().ip() {
            self.stats.sip_foreign += 1;
            return;
        }
        let now = Instant::now();
        let parsed = match &mut sip.srtp {
            Some(s) => match s.unprotect_rtcp(buf) {
                Ok(p) => sip.rtcp.as_mut().map(|r| r.on_rtcp(&p, now)),
                Err(_) => {
                    self.stats.sip_unprotect_failures += 1;
                    return;
                }
            },
            None => sip.rtcp.as_mut().map(|r| r.on_rtcp(buf, now)),
        };
        match parsed {
            Some(Err(e)) => trace!("bad RTCP from the SIP side: {e}"),
            // Well-formed (and authenticated, with SDES) RTCP on our RTCP port: answer there.
            _ if rtcp_port => sip.rtcp_dest = Some(from),
            _ => {}
        }
    }

    /// Sends every transcoded frame that is due, both directions.
    async fn drain_transcoded(&mut self, now: Instant) {
        let Some(media) = &mut self.media else {
            return;
        };
        if !media.plan.transcode {
            return;
        }
        while let Some(len) = media.to_webrtc.next_transcoded(now) {
            let flow = &mut media.to_webrtc;
            send_webrtc(
                &self.leg,
                self.webrtc_connected,
                &mut media.webrtc_rtcp,
                &mut flow.stats,
                &flow.out[..len],
                now,
            )
            .await;
        }
        while let Some(len) = media.to_sip.next_transcoded(now) {
            let flow = &mut media.to_sip;
            match &mut self.sip {
                Some(sip) => {
                    send_sip(&self.sip_rtp, sip, &mut flow.stats, &flow.out[..len], now).await
                }
                None => flow.stats.dropped += 1,
            }
        }
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        self.drain_transcoded(now).await;
        let wall = SystemTime::now();
        let mut report = [0u8; 512];
        let Some(media) = &mut self.media else {
            return;
        };
        if self.webrtc_connected
            && media.webrtc_rtcp.poll_timeout().is_some_and(|t| t <= now)
            && let Ok(n) = media.webrtc_rtcp.write_report(now, wall, &mut report)
        {
            let _ = self.leg.send_rtcp(&report[..n]).await;
        }
        let Some(sip) = &mut self.sip else { return };
        let Some(rtcp) = &mut sip.rtcp else { return };
        if rtcp.poll_timeout().is_some_and(|t| t <= now)
            && let Ok(n) = rtcp.write_report(now, wall, &mut report)
        {
            let rtp_dest = sip.latch.destination();
            let (socket, dest) = if sip.remote.rtcp_mux {
                (&self.sip_rtp, rtp_dest)
            } else {
                let dest = sip.rtcp_dest.or(sip.remote.rtcp).unwrap_or_else(|| {
                    SocketAddr::new(rtp_dest.ip(), rtp_dest.port().wrapping_add(1))
                });
                (self.sip_rtcp.as_ref().unwrap_or(&self.sip_rtp), dest)
            };
            let sent = match &mut sip.srtp {
                Some(s) => match s.protect_rtcp(&report[..n]) {
                    Ok(p) => socket.send_to(&p, dest).await,
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                },
                None => socket.send_to(&report[..n], dest).await,
            };
            if let Err(e) = sent {
                trace!("SIP RTCP send to {dest}: {e}");
            }
        }
    }

    fn snapshot(&self) -> BridgeStats {
        let mut s = self.stats.clone();
        s.webrtc_connected = self.webrtc_connected;
        s.webrtc_unprotect_failures = self.leg.stats().unprotect_failures.load(Ordering::Relaxed);
        if let Some(m) = &self.media {
            s.webrtc_to_sip = m.to_sip.stats;
            s.sip_to_webrtc = m.to_webrtc.stats;
            s.webrtc_rtt = m.webrtc_rtcp.remote_report().and_then(|r| r.rtt);
        }
        if let Some(sip) = &self.sip {
            s.sip_destination = Some(sip.latch.destination());
            s.sip_latched = sip.latch.is_latched();
            s.sip_foreign += sip.latch.foreign;
            s.sip_rtt = sip
                .rtcp
                .as_ref()
                .and_then(|r| r.remote_report())
                .and_then(|r| r.rtt);
        }
        s
    }
}
