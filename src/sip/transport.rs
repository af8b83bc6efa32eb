//! The only SIP I/O: one UDP socket and one TCP listener on `[sip] listen`, plus TCP
//! connections we open or accept. Bytes in are framed (`message.rs`) and handed to the user
//! agent as [`Inbound`] values; bytes out go through [`Transport::send`]. No SIP logic here:
//! the transport knows addresses and connections, not transactions.
//!
//! TLS (`sips:`) would be a third [`Proto`] with its own connection type; the seam is
//! [`Proto`] and the per-connection writer task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

use super::message::{
    Frame, FrameError, MAX_MESSAGE, StreamFramer, frame_datagram, raw_error_response,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    /// The Via transport token (RFC 3261 §20.42).
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }
    /// Whether retransmissions are the transport's job (RFC 3261 §17: reliable = no timers A/E/G).
    pub fn reliable(self) -> bool {
        matches!(self, Proto::Tcp)
    }
}

/// Identifies one TCP connection for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

/// Where a message came from, or where one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// The TCP connection it arrived on; responses go back on it (RFC 3261 §18.2.2).
    pub conn: Option<ConnId>,
}

impl Peer {
    /// The port and transport a `sip:` URI names: its port (5060 when absent, RFC 3261 §19.1.2)
    /// and its `transport` parameter, else `default`.
    pub fn uri_port_proto(uri: &rsip::Uri, default: Proto) -> (u16, Proto) {
        let port = uri.port().map(|p| *p.value()).unwrap_or(5060);
        let proto = match uri.transport() {
            Some(rsip::Transport::Tcp) => Proto::Tcp,
            Some(rsip::Transport::Udp) => Proto::Udp,
            _ => default,
        };
        (port, proto)
    }

    /// The peer a URI with a literal IP host names; `None` for a host name (needs DNS).
    pub fn from_literal_uri(uri: &rsip::Uri, default: Proto) -> Option<Peer> {
        let ip: std::net::IpAddr = uri
            .host()
            .to_string()
            .trim_matches(['[', ']'])
            .parse()
            .ok()?;
        let (port, proto) = Self::uri_port_proto(uri, default);
        Some(Peer {
            proto,
            addr: SocketAddr::new(ip, port),
            conn: None,
        })
    }
}

/// What the transport hands the user agent.
#[derive(Debug)]
pub enum Inbound {
    /// A framed message, not yet parsed.
    Message { bytes: Vec<u8>, from: Peer },
    /// Sending to this peer failed (connect refused, connection reset), or a TCP connection we
    /// opened to it closed: transactions using it get a transport error (RFC 3261 §17.1.4).
    SendFailed { to: Peer },
}

/// Gives up on a TCP connect after this; Timer B/F (32 s) would be far too late for a user.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle TCP connections we accepted are closed after this (RFC 5626 peers send CRLF pings more
/// often; others reconnect). Connections we opened stay up while the registrar keeps them.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Writes queued per connection before sends fail instead of buffering without bound.
const TCP_WRITE_QUEUE: usize = 256;

/// A live TCP connection: the address it was opened to or accepted from, and its write queue.
type Conn = (SocketAddr, mpsc::Sender<Vec<u8>>);

struct Shared {
    metrics: Arc<Metrics>,
    udp: Arc<UdpSocket>,
    inbound: mpsc::Sender<Inbound>,
    /// Live TCP connections: id → writer, and the address each was opened to or accepted from.
    conns: Mutex<HashMap<ConnId, Conn>>,
    next_id: AtomicU64,
    shutdown: CancellationToken,
}

/// Handle to the transport; cheap to clone.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
    local: SocketAddr,
}

impl Transport {
    /// Binds UDP and TCP on `listen` and starts the receive tasks.
    pub async fn bind(
        listen: SocketAddr,
        inbound: mpsc::Sender<Inbound>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Transport> {
        let udp = Arc::new(UdpSocket::bind(listen).await?);
        let local = udp.local_addr()?;
        // TCP on the same port as UDP, as RFC 3261 §18 expects of one sent-by.
        let tcp = TcpListener::bind(local).await?;
        let shared = Arc::new(Shared {
            metrics,
            udp,
            inbound,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown,
        });
        tokio::spawn(udp_loop(shared.clone()));
        tokio::spawn(accept_loop(shared.clone(), tcp));
        info!(%local, "SIP transport listening on UDP and TCP");
        Ok(Transport { shared, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `bytes` to `to`. UDP goes out at once; TCP uses `to.conn` if that connection is
    /// alive, else a live connection to the same address, else opens one. Failures are reported
    /// as [`Inbound::SendFailed`], never as a panic.
    pub fn send(&self, to: Peer, bytes: Vec<u8>) {
        match to.proto {
            Proto::Udp => {
                let udp = self.shared.udp.clone();
                // try_send_to: a full socket buffer on loopback/LAN is rare; a dropped datagram
                // is what UDP promises anyway and the transaction retransmits.
                if let Err(e) = udp.try_send_to(&bytes, to.addr) {
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        tokio::spawn(async move {
                            let _ = udp.send_to(&bytes, to.addr).await;
                        });
                    } else {
                        debug!(error = %e, to = %to.addr, "UDP send failed");
                        self.report_failure(to);
                    }
                }
            }
            Proto::Tcp => {
                let writer = {
                    let conns = self
                        .shared
                        .conns
                        .lock()
                        .expect("conns lock is never poisoned: no panics while held");
                    to.conn
                        .and_then(|id| conns.get(&id).map(|(_, w)| (id, w.clone())))
                        .or_else(|| {
                            conns
                                .iter()
                                .find(|(_, (addr, _))| *addr == to.addr)
                                .map(|(id, (_, w))| (*id, w.clone()))
                        })
                };
                match writer {
                    Some((_, w)) => {
                        if w.try_send(bytes).is_err() {
                            self.report_failure(to);
                        }
                    }
                    None => {
                        let shared = self.shared.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(
                                TCP_CONNECT_TIMEOUT,
                                TcpStream::connect(to.addr),
                            )
                            .await
                            {
                                Ok(Ok(stream)) => {
                                    let (id, tx, rx) = register(&shared, to.addr);
                                    let _ = tx.try_send(bytes);
                                    drop(tx);
                                    run_conn(shared, stream, id, to.addr, rx, false).await;
                                }
                                Ok(Err(e)) => {
                                    debug!(error = %e, to = %to.addr, "TCP connect failed");
                                    let _ = shared.inbound.send(Inbound::SendFailed { to }).await;
                                }
                                Err(_) => {
                                    debug!(to = %to.addr, "TCP connect timed out");
                                    let _ = shared.inbound.send(Inbound::SendFailed { to }).await;
                                }
                            }
                        });
                    }
                }
            }
        }
    }

    fn report_failure(&self, to: Peer) {
        let _ = self.shared.inbound.try_send(Inbound::SendFailed { to });
    }

    /// Number of open TCP connections (for stats).
    pub fn tcp_connections(&self) -> usize {
        self.shared.conns.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// Records a new TCP connection; returns its id and both ends of its write queue.
fn register(
    shared: &Arc<Shared>,
    addr: SocketAddr,
) -> (ConnId, mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
    let id = ConnId(shared.next_id.fetch_add(1, Relaxed));
    let (tx, rx) = mpsc::channel(TCP_WRITE_QUEUE);
    shared
        .conns
        .lock()
        .expect("conns lock is never poisoned: no panics while held")
        .insert(id, (addr, tx.clone()));
    (id, tx, rx)
}

async fn udp_loop(shared: Arc<Shared>) {
    // One buffer for the life of the socket: no allocation per datagram until it is framed.
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        let (n, from) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = shared.udp.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port unreachable surfaces here on Linux; not fatal for the socket.
                    debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        let peer = Peer {
            proto: Proto::Udp,
            addr: from,
            conn: None,
        };
        match frame_datagram(&buf[..n]) {
            Ok(Frame::Message(bytes)) => {
                if shared
                    .inbound
                    .send(Inbound::Message { bytes, from: peer })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(Frame::Ping) => {
                let _ = shared.udp.send_to(b"\r\n", from).await;
            }
            Ok(Frame::Pong) => {}
            Err(e) => {
                shared.metrics.sip_rejected.fetch_add(1, Relaxed);
                let (code, reason) = match e {
                    FrameError::TooLarge => (413, "Request Entity Too Large".to_string()),
                    other => (400, format!("Bad Request ({other})")),
                };
                debug!(error = %e, %from, "unusable UDP datagram");
                if let Some(r) = raw_error_response(&buf[..n], code, &reason) {
                    let _ = shared.udp.send_to(&r, from).await;
                }
            }
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (id, _tx, rx) = register(&shared, addr);
        tokio::spawn(run_conn(shared.clone(), stream, id, addr, rx, true));
    }
}

/// Reads and writes one TCP connection until either side closes it.
async fn run_conn(
    shared: Arc<Shared>,
    stream: TcpStream,
    id: ConnId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    accepted: bool,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let peer = Peer {
        proto: Proto::Tcp,
        addr,
        conn: Some(id),
    };
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    let idle = if accepted {
        TCP_IDLE_TIMEOUT
    } else {
        Duration::MAX
    };
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            out = rx.recv() => match out {
                Some(bytes) => {
                    if let Err(e) = wr.write_all(&bytes).await {
                        debug!(error = %e, %addr, "TCP write failed");
                        let _ = shared.inbound.send(Inbound::SendFailed { to: peer }).await;
                        break;
                    }
                }
                None => break,
            },
            r = tokio::time::timeout(idle, rd.read(&mut buf)) => {
                let n = match r {
                    Ok(Ok(0)) | Err(_) => break,
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        debug!(error = %e, %addr, "TCP read failed");
                        break;
                    }
                };
                framer.push(&buf[..n]);
                let mut fatal = false;
                while let Some(frame) = framer.next_frame() {
                    match frame {
                        Ok(Frame::Message(bytes)) => {
                            if shared.inbound.send(Inbound::Message { bytes, from: peer }).await.is_err() {
                                fatal = true;
                                break;
                            }
                        }
                        Ok(Frame::Ping) => {
                            let _ = wr.write_all(b"\r\n").await;
                        }
                        Ok(Frame::Pong) => {}
                        Err(e) => {
                            // The stream cannot be re-synchronised: answer if we can, then close.
                            let (code, reason) = match e {
                                FrameError::TooLarge => (413, "Request Entity Too Large".to_string()),
                                other => (400, format!("Bad Request ({other})")),
                            };
                            warn!(error = %e, %addr, "closing TCP connection after a framing error");
                            shared.metrics.sip_rejected.fetch_add(1, Relaxed);
                            if let Some(r) = framer.raw_head().and_then(|h| raw_error_response(h, code, &reason)) {
                                let _ = wr.write_all(&r).await;
                            }
                            fatal = true;
                            break;
                        }
                    }
                }
                if fatal {
                    break;
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    shared
        .conns
        .lock()
        .expect("conns lock is never poisoned: no panics while held")
        .remove(&id);
    debug!(%addr, "TCP connection closed");
    // A connection we opened (to the registrar or a proxy) is a flow the user agent relies on:
    // its loss must be noticed (RFC 5626 §4.4.1), not discovered at the next refresh.
    if !accepted && !shared.shutdown.is_cancelled() {
        let to = Peer {
            proto: Proto::Tcp,
            addr,
            conn: None,
        };
        let _ = shared.inbound.send(Inbound::SendFailed { to }).await;
    }
}
