//! The SIP driver: binds the transport, resolves the registrar, builds the user agent from the
//! configuration and runs it — one task that feeds it transport input, timer ticks and
//! commands, and carries its output to the sockets. On shutdown it un-registers first.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rsip::Method;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::auth::{DigestClient, random_cnonce};
use super::policy::Trust;
use super::registration::{RegState, Registration, RegistrationParams};
use super::transaction::TableConfig;
use super::transaction::Timers;
use super::transport::{Inbound, Peer, Proto, Transport};
use super::ua::{RequestId, UaEvent, UaOutput, UaSettings, UserAgent};
use crate::PRODUCT_NAME;
use crate::config::{SipConfig, SipTransport};
use crate::metrics::Metrics;

/// How long shutdown waits for the un-REGISTER and the calls' last BYE/CANCEL to be answered.
const UNREGISTER_GRACE: Duration = Duration::from_secs(3);

/// What the rest of the program can see of the SIP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipStatus {
    /// `None` when no account is configured (no `sip.registrar`).
    pub registration: Option<RegState>,
    pub listen: SocketAddr,
    pub aor: String,
}

impl SipStatus {
    /// Why the SIP side is not healthy, if it is not.
    pub fn problem(&self) -> Option<String> {
        match &self.registration {
            None | Some(RegState::Registered { .. }) => None,
            Some(RegState::Failed { reason, .. }) => Some(reason.clone()),
            Some(RegState::Registering) | Some(RegState::Idle) => {
                Some(format!("SIP account {} is not registered yet", self.aor))
            }
            Some(RegState::Unregistering) | Some(RegState::Unregistered) => {
                Some(format!("SIP account {} is unregistered", self.aor))
            }
        }
    }
}

/// The final outcome of a [`SipCommand`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: u16,
    pub reason: String,
    /// For calls: the BYE's final code, when the call was answered.
    pub bye: Option<u16>,
    pub bye_by_peer: bool,
}

/// Where the outcome of a [`SipCommand`] goes, or an error text.
pub type Reply = oneshot::Sender<Result<Outcome, String>>;

/// What to send.
#[derive(Debug)]
pub enum SipAction {
    /// An out-of-dialog request (OPTIONS, MESSAGE) with an optional `(content type, body)`.
    Request {
        method: Method,
        body: Option<(String, Vec<u8>)>,
    },
    /// A probe call: INVITE, ACK, hold, BYE (no media yet).
    Call { hold: Duration },
}

/// A request to send from outside the SIP task (diagnostics now; messaging later).
#[derive(Debug)]
pub struct SipCommand {
    pub action: SipAction,
    pub uri: String,
    /// `(code, reason)` of the final response, or an error text.
    pub reply: Reply,
}

/// What the call layer asks of the SIP side for bridged calls (see [`UserAgent`]'s methods of
/// the same names). Outcomes and progress come back as [`UaEvent`]s on the call-event channel
/// given to [`start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallCommand {
    /// A new call to `uri`; answered by [`UaEvent::InviteSent`] with the same `tag` (the
    /// caller's own id of the call) before any other event of that call.
    Invite {
        tag: u64,
        uri: String,
        /// From's user part (None: the account's) and display name.
        from_user: Option<String>,
        from_display: Option<String>,
        sdp: Vec<u8>,
    },
    Ring {
        id: RequestId,
        code: u16,
        sdp: Option<Vec<u8>>,
    },
    Answer {
        id: RequestId,
        sdp: Vec<u8>,
    },
    Reject {
        id: RequestId,
        code: u16,
        /// A reason phrase saying more than the standard one.
        phrase: Option<String>,
    },
    /// CANCEL, BYE (with an RFC 3326 Reason) or the final `code` to an unanswered INVITE.
    Hangup {
        id: RequestId,
        code: u16,
        reason: Option<String>,
    },
    AnswerReinvite {
        id: RequestId,
        sdp: Vec<u8>,
    },
    /// Refuses the peer's pending re-INVITE with `code` (488: its offer is unusable).
    RejectReinvite {
        id: RequestId,
        code: u16,
    },
    /// Our own re-INVITE (hold, resume); answered by [`UaEvent::ReinviteAnswered`].
    Reinvite {
        id: RequestId,
        sdp: Vec<u8>,
    },
}

#[derive(Clone)]
pub struct SipHandle {
    pub commands: mpsc::Sender<SipCommand>,
    pub calls: mpsc::Sender<CallCommand>,
    pub status: watch::Receiver<SipStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind sip.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot resolve {key} `{uri}`: {why}")]
    Resolve {
        key: &'static str,
        uri: String,
        why: String,
    },
}

/// Resolves a configured `sip:` URI to a transport address (A/AAAA only; RFC 3263 NAPTR/SRV
/// lookups are not done: give the registrar as host:port or an address).
async fn resolve(key: &'static str, uri: &str, default: SipTransport) -> Result<Peer, StartError> {
    let err = |why: String| StartError::Resolve {
        key,
        uri: uri.to_string(),
        why,
    };
    let parsed = rsip::Uri::try_from(uri).map_err(|e| err(e.to_string()))?;
    let host = parsed.host().to_string();
    let default = match default {
        SipTransport::Tcp => Proto::Tcp,
        SipTransport::Udp => Proto::Udp,
    };
    let (port, proto) = Peer::uri_port_proto(&parsed, default);
    let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))?;
    Ok(Peer {
        proto,
        addr,
        conn: None,
    })
}

/// The address to advertise: `public_address`, else the listen address, else the local
/// address the kernel would use toward the registrar (a connected UDP socket sends nothing).
async fn sent_by(cfg: &SipConfig, listen: SocketAddr, toward: Option<SocketAddr>) -> String {
    if let Some(p) = &cfg.public_address {
        return with_port(p, listen.port());
    }
    let ip = if !listen.ip().is_unspecified() {
        listen.ip()
    } else {
        let mut ip: IpAddr = "127.0.0.1".parse().expect("literal address");
        if let Some(t) = toward
            && let Ok(sock) =
                tokio::net::UdpSocket::bind(if t.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await
            && sock.connect(t).await.is_ok()
            && let Ok(local) = sock.local_addr()
        {
            ip = local.ip();
        }
        ip
    };
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{}", listen.port()),
        v4 => format!("{v4}:{}", listen.port()),
    }
}

/// `host`, `host:port`, `v4:port`, `v6`, `[v6]` or `[v6]:port` → a sent-by with a port.
fn with_port(p: &str, port: u16) -> String {
    if let Ok(v6) = p.parse::<std::net::Ipv6Addr>() {
        return format!("[{v6}]:{port}");
    }
    if p.starts_with('[') {
        return if p.contains("]:") {
            p.to_string()
        } else {
            format!("{p}:{port}")
        };
    }
    if p.contains(':') {
        p.to_string()
    } else {
        format!("{p}:{port}")
    }
}

/// Binds, builds and spawns the SIP side.
pub async fn start(
    cfg: &SipConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    call_events: Option<mpsc::UnboundedSender<UaEvent>>,
) -> Result<(SipHandle, JoinHandle<()>), StartError> {
    let registrar = match &cfg.registrar {
        Some(uri) => Some(resolve("sip.registrar", uri, cfg.transport).await?),
        None => None,
    };
    let proxy = match &cfg.outbound_proxy {
        Some(uri) => Some(resolve("sip.outbound_proxy", uri, cfg.transport).await?),
        None => None,
    };
    let (in_tx, mut in_rx) = mpsc::channel(1024);
    let transport_stop = CancellationToken::new();
    let transport = Transport::bind(cfg.listen, in_tx, metrics.clone(), transport_stop.clone())
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let listen = transport.local_addr();
    let toward = proxy.or(registrar).map(|p| p.addr);
    let sent_by = sent_by(cfg, listen, toward).await;
    let user = if cfg.username.is_empty() {
        "gateway".to_string()
    } else {
        cfg.username.clone()
    };
    let contact_proto = registrar.map(|r| r.proto).unwrap_or(Proto::Udp);
    let contact = format!(
        "sip:{user}@{sent_by};transport={}",
        contact_proto.via_token().to_ascii_lowercase()
    );
    let domain = cfg.domain.clone().unwrap_or_else(|| {
        cfg.registrar
            .as_deref()
            .and_then(|u| rsip::Uri::try_from(u).ok())
            .map(|u| u.host().to_string())
            .unwrap_or_else(|| sent_by.split(':').next().unwrap_or("localhost").to_string())
    });
    let aor = format!("sip:{user}@{domain}");
    let id_prefix = format!("{:08x}", rand::random::<u32>());
    let auth_user = cfg.auth_username.clone().unwrap_or_else(|| user.clone());
    let digest = if cfg.password.expose().is_empty() {
        None
    } else {
        Some(
            DigestClient::new(auth_user, cfg.password.clone()).map_err(|e| {
                StartError::Resolve {
                    key: "sip.auth_username",
                    uri: String::new(),
                    why: e.to_string(),
                }
            })?,
        )
    };
    let registration = match (&cfg.registrar, registrar, &digest) {
        (Some(uri), Some(_), Some(digest)) => Some(Registration::new(
            RegistrationParams {
                registrar: uri.clone(),
                aor: aor.clone(),
                contact: contact.clone(),
                expires: cfg.register_expires,
                call_id: format!(
                    "{id_prefix}reg@{}",
                    sent_by.split(':').next().unwrap_or("gw")
                ),
                from_tag: format!("{id_prefix}r"),
                user_agent: format!("{PRODUCT_NAME}/{}", env!("CARGO_PKG_VERSION")),
            },
            digest.clone(),
            random_cnonce,
        )),
        _ => None,
    };
    let mut trust = Trust {
        servers: Vec::new(),
        networks: cfg.trusted.clone(),
    };
    trust.servers.extend(registrar.map(|p| p.addr.ip()));
    trust.servers.extend(proxy.map(|p| p.addr.ip()));
    let settings = UaSettings {
        sent_by: sent_by.clone(),
        contact: contact.clone(),
        aor: aor.clone(),
        next_hop: proxy.or(registrar),
        route: cfg.outbound_proxy.as_ref().map(|u| format!("<{u};lr>")),
        registrar,
        registrar_uri: cfg.registrar.clone(),
        trust,
        table: TableConfig {
            timers: Timers {
                t1: cfg.t1,
                t2: cfg.t2,
                t4: cfg.t4,
            },
            ..TableConfig::default()
        },
        keepalive: cfg.keepalive_interval,
        max_dialogs: cfg.max_dialogs,
        user_agent: format!("{PRODUCT_NAME}/{}", env!("CARGO_PKG_VERSION")),
        id_prefix,
        accept_calls: call_events.is_some(),
    };
    info!(%listen, %sent_by, %aor, %contact, registrar = ?registrar.map(|p| p.addr), "SIP user agent ready");
    let has_account = registration.is_some();
    let mut ua = UserAgent::new(settings, registration, digest, metrics);
    let (status_tx, status_rx) = watch::channel(SipStatus {
        registration: has_account.then_some(RegState::Idle),
        listen,
        aor,
    });
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<SipCommand>(64);
    let (call_tx, mut call_rx) = mpsc::channel::<CallCommand>(256);

    let task = tokio::spawn(async move {
        let mut pending: HashMap<RequestId, Reply> = HashMap::new();
        let mut stopping: Option<Instant> = None;
        ua.start(Instant::now().into_std());
        loop {
            drain(
                &mut ua,
                &transport,
                &status_tx,
                &mut pending,
                call_events.as_ref(),
            );
            if let Some(deadline) = stopping
                && ((ua.is_idle() && ua.active_calls() == 0) || Instant::now() >= deadline)
            {
                break;
            }
            let wake = ua.poll_timeout().map(Instant::from_std);
            tokio::select! {
                _ = shutdown.cancelled(), if stopping.is_none() => {
                    stopping = Some(Instant::now() + UNREGISTER_GRACE);
                    ua.shutdown(Instant::now().into_std());
                }
                _ = tokio::time::sleep_until(stopping.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if stopping.is_some() => {}
                Some(input) = in_rx.recv() => {
                    let now = Instant::now().into_std();
                    match input {
                        Inbound::Message { bytes, from } => ua.on_inbound(&bytes, from, now),
                        Inbound::SendFailed { to } => ua.on_send_failed(to, now),
                    }
                }
                Some(cmd) = cmd_rx.recv(), if stopping.is_none() => {
                    let now = Instant::now().into_std();
                    let started = match cmd.action {
                        SipAction::Request { method, body } => {
                            let body = body.as_ref().map(|(t, b)| (t.as_str(), b.clone()));
                            ua.request(method, &cmd.uri, body, now)
                        }
                        SipAction::Call { hold } => ua.call(&cmd.uri, hold, now),
                    };
                    match started {
                        Ok(id) => { pending.insert(id, cmd.reply); }
                        Err(e) => { let _ = cmd.reply.send(Err(e.to_string())); }
                    }
                }
                Some(cmd) = call_rx.recv() => {
                    let now = Instant::now().into_std();
                    let result = match cmd {
                        CallCommand::Invite { tag, uri, from_user, from_display, sdp } => {
                            let r = ua.invite(&uri, from_user.as_deref(), from_display.as_deref(), sdp, now);
                            let result = r
                                .map(|id| (id, ua.call_id_of(id).unwrap_or_default()))
                                .map_err(|e| e.to_string());
                            if let Some(tx) = call_events.as_ref() {
                                let _ = tx.send(UaEvent::InviteSent { tag, result });
                            }
                            Ok(())
                        }
                        CallCommand::Ring { id, code, sdp } => ua.ring(id, code, sdp, now),
                        CallCommand::Answer { id, sdp } => ua.answer(id, sdp, now),
                        CallCommand::Reject { id, code, phrase } => ua.reject(id, code, phrase.as_deref(), now),
                        CallCommand::Hangup { id, code, reason } => ua.hangup(id, code, reason.as_deref(), now),
                        CallCommand::AnswerReinvite { id, sdp } => ua.answer_reinvite(id, sdp, now),
                        CallCommand::Reinvite { id, sdp } => {
                            let r = ua.reinvite(id, sdp, now);
                            if r.is_err()
                                && let Some(tx) = call_events.as_ref()
                            {
                                // Not sent: the call layer must not wait for an answer.
                                let _ = tx.send(UaEvent::ReinviteAnswered { id, code: 500, sdp: Vec::new() });
                            }
                            r
                        }
                        CallCommand::RejectReinvite { id, code } => ua.reject_reinvite(id, code, now),
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "call command not carried out");
                    }
                }
                _ = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {
                    ua.on_timeout(Instant::now().into_std());
                }
            }
        }
        drain(
            &mut ua,
            &transport,
            &status_tx,
            &mut pending,
            call_events.as_ref(),
        );
        // Let the last datagrams leave before the sockets close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        transport_stop.cancel();
        info!("SIP user agent stopped");
    });
    Ok((
        SipHandle {
            commands: cmd_tx,
            calls: call_tx,
            status: status_rx,
        },
        task,
    ))
}

fn drain(
    ua: &mut UserAgent,
    transport: &Transport,
    status: &watch::Sender<SipStatus>,
    pending: &mut HashMap<RequestId, Reply>,
    calls: Option<&mpsc::UnboundedSender<UaEvent>>,
) {
    while let Some(o) = ua.poll_output() {
        match o {
            UaOutput::Send { to, bytes } => transport.send(to, bytes),
            UaOutput::Event(UaEvent::Registration(state)) => {
                status.send_modify(|s| s.registration = Some(state));
            }
            UaOutput::Event(UaEvent::Completed { id, code, reason }) => {
                if let Some(reply) = pending.remove(&id) {
                    let _ = reply.send(Ok(Outcome {
                        code,
                        reason,
                        bye: None,
                        bye_by_peer: false,
                    }));
                } else {
                    warn!(?id, code, "completion for an unknown request");
                }
            }
            UaOutput::Event(UaEvent::CallEnded {
                id,
                code,
                reason,
                bye,
                bye_by_peer,
            }) => {
                if let Some(reply) = pending.remove(&id) {
                    let _ = reply.send(Ok(Outcome {
                        code,
                        reason,
                        bye,
                        bye_by_peer,
                    }));
                } else if let Some(calls) = calls {
                    // A bridged call (not a probe with a waiting reply).
                    let _ = calls.send(UaEvent::CallEnded {
                        id,
                        code,
                        reason,
                        bye,
                        bye_by_peer,
                    });
                }
            }
            UaOutput::Event(other) => match calls {
                Some(calls) => {
                    let _ = calls.send(other);
                }
                None => tracing::debug!(?other, "call event without a call layer"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_port;

    #[test]
    fn public_address_forms() {
        assert_eq!(with_port("203.0.113.5", 5060), "203.0.113.5:5060");
        assert_eq!(with_port("203.0.113.5:5070", 5060), "203.0.113.5:5070");
        assert_eq!(with_port("gw.example.com", 5060), "gw.example.com:5060");
        assert_eq!(with_port("2001:db8::1", 5060), "[2001:db8::1]:5060");
        assert_eq!(with_port("[2001:db8::1]", 5060), "[2001:db8::1]:5060");
        assert_eq!(with_port("[2001:db8::1]:5080", 5060), "[2001:db8::1]:5080");
    }
}
