//! The XEP-0114 link: the only code that touches the component socket, and I/O only. A driver
//! around the pure [`Router`]: it connects, does the handshake (PROTOCOLS.md §1.1), feeds every
//! inbound stanza to [`Router::handle`], writes the router's [`Routed::Reply`]s and hands every
//! other [`Routed`] event to the call layer's channel, and reconnects with capped exponential
//! backoff. Where a stanza goes is decided by the router, never here. Outgoing stanzas from the
//! rest of the program wait in a bounded queue ([`LinkHandle::send`]) while the link is down; a
//! full queue is an error the caller sees.
//!
//! The stream is read as raw `minidom` elements (tokio-xmpp's `XmlStream<_, Element>`), not as
//! typed stanzas: a stanza tokio-xmpp's parsers reject would otherwise end the whole stream,
//! and the router must still be able to answer it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::parsers::component::Handshake;
use tokio_xmpp::xmlstream::{ReadError, StreamHeader, Timeouts, XmlStream, initiate_stream};
use tracing::{debug, error, info, warn};

use super::depth::{self, DepthGuard};
use super::router::{Routed, Router};
use super::stanza::{
    ErrorType, Kind, NS_COMPONENT, NS_PING, NS_STREAM, NS_STREAMS, StanzaError, elem,
    error_condition, error_reply, error_text,
};
use crate::config::{Secret, XmppConfig};
use crate::metrics::Metrics;

/// First retry delay. Half a second lets a restarting server come back without a thundering
/// herd, and keeps the gap after a restart well under the 5 s an operator notices.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Retry at least every 30 s: long enough not to hammer a server that refuses us, short enough
/// that a fixed secret takes effect within a minute.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// TCP connect plus stream header plus handshake must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which we ping the server (XEP-0199) to prove the link alive; the server
/// must answer within `RESPONSE_TIMEOUT` or the link is declared dead (a half-open TCP link
/// would otherwise swallow stanzas for minutes).
const IDLE_PING_AFTER: Duration = Duration::from_secs(60);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);
/// On shutdown, how long queued stanzas may take to drain and the server to close its side.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Capped exponential backoff with ±25 % jitter, so gateways restarted together do not
/// reconnect in lock-step. Pure: the caller supplies the random number.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }
    /// Delay before the next attempt; `rand01` in `[0, 1)`.
    pub fn next_delay(&mut self, rand01: f64) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        let base = exp.min(self.max);
        base.mul_f64(0.75 + 0.5 * rand01.clamp(0.0, 1.0))
            .min(self.max)
    }
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the link is doing, published for health checks and stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Connecting { attempt: u64 },
    Up,
    Down { reason: String, retry_in: Duration },
    Closed,
}

impl LinkState {
    pub fn label(&self) -> &'static str {
        match self {
            LinkState::Connecting { .. } => "connecting",
            LinkState::Up => "connected",
            LinkState::Down { .. } => "down",
            LinkState::Closed => "closed",
        }
    }
}

/// Why a connection attempt or an established link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out after {0:?} while connecting and authenticating")]
    ConnectTimeout(Duration),
    #[error("XEP-0114 handshake refused by the XMPP server: {condition}{}", text.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
    HandshakeRefused {
        condition: String,
        text: Option<String>,
    },
    #[error("XMPP server closed the stream with a stream error: {condition}{}", text.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
    StreamError {
        condition: String,
        text: Option<String>,
    },
    #[error("XMPP server sent no stream id in its stream header")]
    NoStreamId,
    #[error("unexpected <{0}/> during the handshake")]
    Unexpected(String),
    #[error("XMPP server closed the stream")]
    Closed,
    #[error("connection to the XMPP server lost (server stopped or restarted?): {0}")]
    Dropped(std::io::Error),
    #[error("I/O error on the component link: {0}")]
    Io(#[from] std::io::Error),
}

impl LinkError {
    /// An operator hint for errors that are configuration mistakes, not outages.
    fn hint(&self, cfg: &XmppConfig) -> Option<String> {
        let domain = cfg.component_domain();
        match self {
            LinkError::HandshakeRefused { condition, .. } => Some(match condition.as_str() {
                "not-authorized" => format!(
                    "check [xmpp] secret: it must equal the component_secret of Component \"{domain}\" on the server"
                ),
                "conflict" => format!("another process is already connected as {domain}"),
                "host-unknown" | "improper-addressing" => format!(
                    "the server has no Component \"{domain}\"; check [xmpp] subdomain and domain"
                ),
                _ => "see the XMPP server's log".into(),
            }),
            LinkError::Connect { .. } => Some(format!(
                "is the XMPP server running, with a component port at [xmpp] host:port = {}:{}?",
                cfg.host, cfg.port
            )),
            _ => None,
        }
    }
    /// Failures with the same key are logged once, not at every retry.
    fn key(&self) -> String {
        match self {
            LinkError::Connect { source, .. } => format!("connect:{:?}", source.kind()),
            LinkError::Dropped(_) => "dropped".into(),
            LinkError::HandshakeRefused { condition, .. } => format!("refused:{condition}"),
            LinkError::StreamError { condition, .. } => format!("stream:{condition}"),
            other => format!("{:?}", std::mem::discriminant(other)),
        }
    }
}

/// Errors a sender of stanzas must handle.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error(
        "outgoing stanza queue is full ({0} stanzas waiting; raise xmpp.queue_size or fix the link)"
    )]
    QueueFull(usize),
    #[error("the component link has shut down")]
    Closed,
}

/// The handle the rest of the program sends stanzas through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    tx: mpsc::Sender<Element>,
    metrics: Arc<Metrics>,
}

impl LinkHandle {
    /// Queues a stanza; it is written as soon as the link is up.
    pub fn send(&self, stanza: Element) -> Result<(), SendError> {
        self.tx.try_send(stanza).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.metrics.queue_overflows.fetch_add(1, Relaxed);
                SendError::QueueFull(self.tx.max_capacity())
            }
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
    pub fn queue_capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

/// The driver task. Create with [`Link::new`], run with [`Link::run`].
pub struct Link {
    cfg: XmppConfig,
    router: Router,
    rx: mpsc::Receiver<Element>,
    state: watch::Sender<LinkState>,
    metrics: Arc<Metrics>,
    /// Stanzas taken from the queue (or produced by the router) that could not be written
    /// because the link broke; they go out first after the next handshake.
    unsent: VecDeque<Element>,
    /// Where the router's events for the call layer go (everything but [`Routed::Reply`]).
    /// Without it, the router answers them as stanzas it does not serve ([`Router::unrouted`]).
    calls: Option<mpsc::Sender<Routed>>,
    /// Subtrees the depth guard has cut, and how many cut stanzas were refused: a stanza is
    /// searched for the guard's marker only while the first is ahead.
    cuts: Arc<std::sync::atomic::AtomicU64>,
    cuts_refused: u64,
}

type Stream = XmlStream<BufStream<QuickAck>, Element>;

/// The component's TCP stream, ACKing at once whatever it reads (Linux `TCP_QUICKACK`, re-armed
/// after each read: the kernel drops back to delayed ACKs on its own). Prosody keeps Nagle's
/// algorithm on by default (`network_settings.nagle`), so a stanza written right after another
/// waits for our ACK of the first, and a delayed ACK holds it up to 40 ms: two stanzas in a row
/// (an IQ result, then the session-initiate's transport-info) would reach us 40 ms apart.
///
/// What it reads also goes through the stanza depth limit ([`DepthGuard`]) before the XML
/// parser sees it.
struct QuickAck {
    tcp: TcpStream,
    guard: DepthGuard,
    /// Filtered bytes not yet taken by the parser.
    pending: Vec<u8>,
    taken: usize,
}

impl QuickAck {
    fn new(tcp: TcpStream, max_stanza_depth: u32, cuts: Arc<std::sync::atomic::AtomicU64>) -> Self {
        QuickAck {
            tcp,
            guard: DepthGuard::new(max_stanza_depth, cuts),
            pending: Vec::new(),
            taken: 0,
        }
    }

    fn rearm(&self) {
        #[cfg(target_os = "linux")]
        {
            let _ = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true);
        }
    }
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if this.taken < this.pending.len() {
                let n = buf.remaining().min(this.pending.len() - this.taken);
                buf.put_slice(&this.pending[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.pending.len() {
                    this.pending.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 4096];
            let mut rb = tokio::io::ReadBuf::new(&mut raw);
            match std::pin::Pin::new(&mut this.tcp).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    this.rearm();
                    // May yield nothing (a cut subtree, a held-back `<`): then read on, since
                    // an empty read would mean the end of the stream.
                    this.guard.filter(rb.filled(), &mut this.pending);
                }
                other => return other,
            }
        }
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

enum Ended {
    Shutdown,
    Lost(LinkError),
}

impl Link {
    /// Hands the router's events for the call layer (Jingle, JMI, replies to its IQs, presence)
    /// to `calls`.
    pub fn with_calls(mut self, calls: mpsc::Sender<Routed>) -> Self {
        self.calls = Some(calls);
        self
    }

    pub fn new(
        cfg: XmppConfig,
        router: Router,
        metrics: Arc<Metrics>,
    ) -> (Self, LinkHandle, watch::Receiver<LinkState>) {
        let (tx, rx) = mpsc::channel(cfg.queue_size);
        let (state, state_rx) = watch::channel(LinkState::Connecting { attempt: 1 });
        let handle = LinkHandle {
            tx,
            metrics: metrics.clone(),
        };
        (
            Link {
                cfg,
                router,
                rx,
                state,
                metrics,
                calls: None,
                unsent: VecDeque::new(),
                cuts: Arc::default(),
                cuts_refused: 0,
            },
            handle,
            state_rx,
        )
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
        let mut last_failure: Option<String> = None;
        let mut ever_up = false;
        let domain = self.cfg.component_domain();
        let addr = format!("{}:{}", self.cfg.host, self.cfg.port);
        loop {
            let attempt = self.metrics.connect_attempts.fetch_add(1, Relaxed) + 1;
            self.state.send_replace(LinkState::Connecting { attempt });
            debug!(attempt, %addr, "connecting component link");
            let connected = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = timeout(CONNECT_TIMEOUT, connect(&addr, &domain, &self.cfg.secret, self.cfg.max_stanza_depth, self.cuts.clone())) => {
                    r.unwrap_or(Err(LinkError::ConnectTimeout(CONNECT_TIMEOUT)))
                }
            };
            let failure = match connected {
                Ok(stream) => {
                    backoff.reset();
                    last_failure = None;
                    if ever_up {
                        self.metrics.reconnects.fetch_add(1, Relaxed);
                        info!(%domain, %addr, attempt, "component link up again");
                    } else {
                        info!(%domain, %addr, "component link up: connected and authenticated");
                    }
                    ever_up = true;
                    self.metrics.link_up.store(true, Relaxed);
                    self.state.send_replace(LinkState::Up);
                    let ended = self.serve(stream, &shutdown).await;
                    self.metrics.link_up.store(false, Relaxed);
                    match ended {
                        Ended::Shutdown => break,
                        Ended::Lost(e) => {
                            warn!(error = %e, "component link lost");
                            e
                        }
                    }
                }
                Err(e) => e,
            };
            if matches!(failure, LinkError::HandshakeRefused { .. }) {
                self.metrics.handshake_refusals.fetch_add(1, Relaxed);
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            let key = failure.key();
            if last_failure.as_deref() != Some(key.as_str()) {
                let hint = failure.hint(&self.cfg).unwrap_or_default();
                if matches!(failure, LinkError::HandshakeRefused { .. }) {
                    error!(error = %failure, hint, retry_in = ?delay, "component link down; retrying with backoff");
                } else {
                    warn!(error = %failure, hint, retry_in = ?delay, "component link down; retrying with backoff");
                }
                last_failure = Some(key);
            } else {
                debug!(error = %failure, retry_in = ?delay, attempt, "component link still down");
            }
            self.state.send_replace(LinkState::Down {
                reason: failure.to_string(),
                retry_in: delay,
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sleep(delay) => {}
            }
        }
        self.state.send_replace(LinkState::Closed);
        self.rx.close();
        let left = self.unsent.len() + self.rx.len();
        if left > 0 {
            warn!(
                stanzas = left,
                "shutting down with stanzas that could not be sent"
            );
        }
        info!("component link closed");
    }

    /// Runs an established link until it breaks or shutdown is requested.
    async fn serve(&mut self, mut stream: Stream, shutdown: &CancellationToken) -> Ended {
        // Whatever a broken link left behind goes out first, in order.
        while let Some(el) = self.unsent.pop_front() {
            if let Err(e) = self.write(&mut stream, el).await {
                return Ended::Lost(e);
            }
        }
        // A new stream: cuts made on the last one belong to stanzas that never came.
        self.cuts_refused = self.cuts.load(Relaxed);
        let mut routed = Vec::new();
        let mut out = Vec::new();
        let mut ping_seq: u64 = 0;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.close(stream).await;
                    return Ended::Shutdown;
                }
                item = stream.next() => match item {
                    Some(Ok(el)) => {
                        if el.is("error", NS_STREAM) {
                            return Ended::Lost(LinkError::StreamError {
                                condition: error_condition(&el, NS_STREAMS).unwrap_or_else(|| "undefined-condition".into()),
                                text: error_text(&el, NS_STREAMS),
                            });
                        }
                        self.metrics.stanza_in(Kind::of(&el));
                        if self.cuts.load(Relaxed) > self.cuts_refused && depth::was_cut(&el) {
                            // Nested deeper than xmpp.max_stanza_depth: the guard cut it
                            // before parsing; the router refuses it whole.
                            self.cuts_refused += 1;
                            let n = self.metrics.stanzas_too_deep.fetch_add(1, Relaxed) + 1;
                            if n.is_power_of_two() {
                                warn!(from = ?el.attr("from"), refused = n, max = self.cfg.max_stanza_depth,
                                      "stanza nested deeper than xmpp.max_stanza_depth refused (logged at 1, 2, 4, 8, … of them)");
                            }
                            self.router.refuse_too_deep(&el, self.cfg.max_stanza_depth, &mut routed);
                        } else {
                            self.router.handle(&el, &mut routed);
                        }
                        for event in routed.drain(..) {
                            match event {
                                Routed::Reply(reply) => out.push(reply),
                                event => self.to_calls(event, &mut out),
                            }
                        }
                        for reply in out.drain(..) {
                            if let Err(e) = self.write(&mut stream, reply).await {
                                return Ended::Lost(e);
                            }
                        }
                    }
                    Some(Err(ReadError::SoftTimeout)) => {
                        ping_seq += 1;
                        let domain = self.router.domain().to_string();
                        let mut ping = elem("iq", NS_COMPONENT, &[
                            ("type", Some("get")),
                            ("id", Some(&format!("xsg-keepalive-{ping_seq}"))),
                            ("from", Some(&domain)),
                            ("to", Some(&self.cfg.domain)),
                        ]);
                        ping.append_child(Element::bare("ping", NS_PING));
                        debug!("link idle; pinging the server");
                        if let Err(e) = self.write(&mut stream, ping).await {
                            return Ended::Lost(e);
                        }
                    }
                    Some(Err(ReadError::ParseError(e))) => {
                        warn!(error = %e, "unparsable element on the component stream; skipped");
                    }
                    // Prosody and ejabberd simply drop the TCP connection when they stop.
                    Some(Err(ReadError::HardError(e))) => return Ended::Lost(LinkError::Dropped(e)),
                    Some(Err(ReadError::StreamFooterReceived)) | None => return Ended::Lost(LinkError::Closed),
                },
                Some(el) = self.rx.recv() => {
                    if let Err(e) = self.write(&mut stream, el).await {
                        return Ended::Lost(e);
                    }
                }
            }
        }
    }

    /// Hands one routed event to the call layer; pushes onto `out` what must be written instead.
    fn to_calls(&self, event: Routed, out: &mut Vec<Element>) {
        let Some(calls) = &self.calls else {
            // No call layer: the router answers as for a stanza it does not serve (a Jingle IQ
            // set gets service-unavailable), as it did before there was a call layer.
            let mut answers = Vec::new();
            self.router.unrouted(&event, &mut answers);
            out.extend(answers.into_iter().map(Routed::into_element));
            return;
        };
        let presence = matches!(event, Routed::Presence(_));
        let Err(e) = calls.try_send(event) else {
            return;
        };
        if presence {
            debug!("call layer not taking presence");
            return;
        }
        // The call layer is saturated or gone: say so rather than let the client wait for an IQ
        // answer.
        warn!("call layer not taking signalling: {e}");
        let el = match e {
            mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => {
                ev.into_element()
            }
        };
        if el.name() == "iq" && el.attr("type") == Some("set") {
            out.push(error_reply(
                &el,
                &StanzaError::new(ErrorType::Wait, "resource-constraint"),
            ));
        }
    }

    /// Writes one stanza; on failure keeps it for the next link.
    async fn write(&mut self, stream: &mut Stream, el: Element) -> Result<(), LinkError> {
        match stream.send(&el).await {
            Ok(()) => {
                self.metrics.stanza_out(Kind::of(&el));
                Ok(())
            }
            Err(e) => {
                self.unsent.push_back(el);
                Err(LinkError::Io(e))
            }
        }
    }

    /// Clean close (RFC 6120 §4.4): flush what is queued, send `</stream:stream>`, wait
    /// briefly for the server's closing tag.
    async fn close(&mut self, mut stream: Stream) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let flush = async {
            while let Ok(el) = self.rx.try_recv() {
                if self.write(&mut stream, el).await.is_err() {
                    return;
                }
            }
            if let Err(e) = stream.shutdown().await {
                debug!(error = %e, "closing the stream");
                return;
            }
            // Drain until the server's footer or EOF.
            while let Some(item) = stream.next().await {
                if matches!(
                    item,
                    Err(ReadError::StreamFooterReceived | ReadError::HardError(_))
                ) {
                    break;
                }
            }
        };
        if tokio::time::timeout_at(deadline, flush).await.is_err() {
            debug!("server did not close its side of the stream in time");
        }
        info!("component stream closed");
    }
}

/// TCP connect, stream header, handshake (XEP-0114 §3).
async fn connect(
    addr: &str,
    domain: &str,
    secret: &Secret,
    max_stanza_depth: u32,
    cuts: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Stream, LinkError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| LinkError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    tcp.set_nodelay(true)?;
    let tcp = QuickAck::new(tcp, max_stanza_depth, cuts);
    tcp.rearm();
    let header = StreamHeader {
        from: None,
        to: Some(domain.into()),
        id: None,
    };
    let timeouts = Timeouts {
        read_timeout: IDLE_PING_AFTER,
        response_timeout: RESPONSE_TIMEOUT,
    };
    let mut pending = initiate_stream(BufStream::new(tcp), NS_COMPONENT, header, timeouts).await?;
    let id = pending
        .take_header()
        .id
        .ok_or(LinkError::NoStreamId)?
        .into_owned();
    let mut stream: Stream = pending.skip_features();
    stream
        .send(&Handshake::from_stream_id_and_password(id, secret.expose()))
        .await?;
    loop {
        match stream.next().await {
            Some(Ok(el)) if el.name() == "handshake" && el.has_ns(NS_COMPONENT) => {
                return Ok(stream);
            }
            Some(Ok(el)) if el.is("error", NS_STREAM) => {
                return Err(LinkError::HandshakeRefused {
                    condition: error_condition(&el, NS_STREAMS)
                        .unwrap_or_else(|| "undefined-condition".into()),
                    text: error_text(&el, NS_STREAMS),
                });
            }
            // Some servers announce (empty) features on a 1.0 stream; nothing to negotiate.
            Some(Ok(el)) if el.is("features", NS_STREAM) => continue,
            Some(Ok(el)) => return Err(LinkError::Unexpected(el.name().to_string())),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::ParseError(e))) => {
                return Err(LinkError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e,
                )));
            }
            Some(Err(ReadError::HardError(e))) => return Err(LinkError::Io(e)),
            Some(Err(ReadError::StreamFooterReceived)) | None => return Err(LinkError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap_with_jitter() {
        let mut b = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
        let mid: Vec<u64> = (0..10)
            .map(|_| b.next_delay(0.5).as_millis() as u64)
            .collect();
        assert_eq!(
            mid,
            vec![
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(375));
        assert!(b.next_delay(0.999) < Duration::from_millis(1250));
        for _ in 0..100 {
            assert!(b.next_delay(1.0) <= BACKOFF_MAX);
        }
    }

    fn cfg() -> XmppConfig {
        XmppConfig {
            domain: "example.com".into(),
            subdomain: "gw".into(),
            secret: Secret::new("x"),
            host: "127.0.0.1".into(),
            port: 1,
            queue_size: 2,
            max_stanza_depth: 64,
        }
    }

    #[tokio::test]
    async fn full_queue_is_an_error_not_a_drop() {
        let cfg = cfg();
        let metrics = Arc::new(Metrics::default());
        let (_link, handle, _state) =
            Link::new(cfg, Router::new("gw.example.com", '*'), metrics.clone());
        let el = || Element::bare("message", NS_COMPONENT);
        assert_eq!(handle.send(el()), Ok(()));
        assert_eq!(handle.send(el()), Ok(()));
        assert_eq!(handle.send(el()), Err(SendError::QueueFull(2)));
        assert_eq!(handle.queue_depth(), 2);
        assert_eq!(metrics.queue_overflows.load(Relaxed), 1);
    }

    /// The error condition and type of an error reply.
    fn error_of(el: &Element) -> (String, Option<&str>) {
        assert_eq!(el.attr("type"), Some("error"), "{el:?}");
        let e = el.get_child("error", NS_COMPONENT).expect("error child");
        (
            error_condition(e, crate::xmpp::stanza::NS_STANZAS).expect("a condition"),
            e.attr("type"),
        )
    }

    #[test]
    fn what_the_call_layer_cannot_take() {
        let parse = |x: &str| -> Element { x.parse().expect("test fixture parses") };
        let ns = "xmlns='jabber:component:accept' from='juliet@example.com/phone'";
        let jingle = parse(&format!(
            "<iq {ns} type='set' id='1' to='100@gw.example.com/gw'><jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s'/></iq>"
        ));
        let jmi = parse(&format!(
            "<message {ns} type='chat' to='100@gw.example.com'><propose xmlns='urn:xmpp:jingle-message:0' id='s'/></message>"
        ));
        let presence = parse(&format!("<presence {ns} to='100@gw.example.com'/>"));
        let (link, _handle, _state) = Link::new(
            cfg(),
            Router::new("gw.example.com", '*'),
            Arc::new(Metrics::default()),
        );
        let mut out = Vec::new();

        // No call layer: the router answers, as it did before there was one.
        link.to_calls(Routed::Jingle(jingle.clone()), &mut out);
        link.to_calls(Routed::Presence(presence.clone()), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            error_of(&out[0]),
            ("service-unavailable".into(), Some("cancel"))
        );
        out.clear();

        // A full call layer: an IQ set is told to wait; the rest is dropped.
        let (tx, mut rx) = mpsc::channel(1);
        let link = link.with_calls(tx);
        link.to_calls(Routed::Presence(presence.clone()), &mut out);
        assert!(out.is_empty());
        link.to_calls(Routed::Jingle(jingle.clone()), &mut out);
        link.to_calls(Routed::Jmi(jmi.clone()), &mut out);
        link.to_calls(Routed::Presence(presence.clone()), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].name(), "iq");
        assert_eq!(
            error_of(&out[0]),
            ("resource-constraint".into(), Some("wait"))
        );
        assert_eq!(rx.try_recv().ok(), Some(Routed::Presence(presence)));
        out.clear();

        // A call layer that is gone: the same.
        drop(rx);
        link.to_calls(Routed::Jmi(jmi), &mut out);
        assert!(out.is_empty());
        link.to_calls(Routed::Jingle(jingle), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            error_of(&out[0]),
            ("resource-constraint".into(), Some("wait"))
        );
    }
}
