//! The call layer's driver: the only part of it that touches tasks, channels and the clock.
//! It feeds the [`Engine`] what comes in (stanzas the router gave the call layer, the SIP user
//! agent's events, the bridges' answers and events, the component link's state, the time)
//! and carries out what the engine asks: stanzas onto the link, commands to the SIP side, and
//! commands to each call's bridge. It never waits for a bridge: each call's bridge lives in a
//! task of its own that carries out the call's media commands in order and sends the answers
//! back as events (commands out, events back).
//!
//! What the calls do (PROTOCOLS.md §2) is the sessions' business: see `session.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use super::engine::{Action, Engine};
use super::session::{CallKey, CreateError, Env, MediaCommand, MediaEvent};
use crate::media::bridge::{BridgeEvent, LegKind, MediaEngine};
use crate::sip::service::CallCommand;
use crate::sip::ua::UaEvent;
use crate::xmpp::link::{LinkHandle, LinkState};
use crate::xmpp::router::Routed;

pub use super::engine::CallStats;
pub use super::session::{CallConfig, CallerId, Outcome};

pub struct CallManager {
    engine: Engine,
    media: MediaEngine,
    sip: mpsc::Sender<CallCommand>,
    xmpp: LinkHandle,
    /// Each call's bridge task, by the commands it takes.
    /// (Boxed: a channel allocates room for 32 values at once, for as long as the call lasts;
    /// commands are few and large.)
    bridges: HashMap<CallKey, mpsc::UnboundedSender<Box<MediaCommand>>>,
    media_tx: mpsc::UnboundedSender<(CallKey, MediaEvent)>,
    media_rx: Option<mpsc::UnboundedReceiver<(CallKey, MediaEvent)>>,
    tasks: JoinSet<()>,
    /// Which call each bridge task serves.
    task_calls: HashMap<tokio::task::Id, CallKey>,
    /// Set by a graceful shutdown (`POST /about/shutdown`): calls in progress go on, new ones
    /// are refused.
    draining: Arc<AtomicBool>,
    /// The component link's state (calls end when it is lost).
    link: Option<watch::Receiver<LinkState>>,
}

/// How long shutdown waits for the request ids of INVITEs whose calls ended meanwhile (the SIP
/// user agent answers each at once; this only bounds a stuck one).
const ORPHAN_INVITE_GRACE: Duration = Duration::from_secs(2);

/// The time and a fresh random draw for one input.
fn env() -> Env {
    Env {
        now: Instant::now(),
        random: rand::random(),
    }
}

impl CallManager {
    pub fn new(
        cfg: CallConfig,
        media: MediaEngine,
        sip: mpsc::Sender<CallCommand>,
        xmpp: LinkHandle,
    ) -> Self {
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        CallManager {
            engine: Engine::new(cfg),
            media,
            sip,
            xmpp,
            bridges: HashMap::new(),
            media_tx,
            media_rx: Some(media_rx),
            tasks: JoinSet::new(),
            task_calls: HashMap::new(),
            draining: Arc::new(AtomicBool::new(false)),
            link: None,
        }
    }

    /// Shares the flag a graceful shutdown sets: from then on new calls are refused.
    pub fn with_draining(mut self, draining: Arc<AtomicBool>) -> Self {
        self.draining = draining;
        self
    }

    /// Follows the component link: calls end when it is lost.
    pub fn with_link_state(mut self, link: watch::Receiver<LinkState>) -> Self {
        let up = matches!(*link.borrow(), LinkState::Up);
        self.engine.on_link(up, &env());
        self.link = Some(link);
        self
    }

    /// Runs until `shutdown`: every call is then ended on both sides, and the bridges closed.
    pub async fn run(
        mut self,
        mut stanzas: mpsc::Receiver<Routed>,
        mut sip_events: mpsc::UnboundedReceiver<UaEvent>,
        stats: watch::Sender<CallStats>,
        shutdown: CancellationToken,
    ) {
        let mut media_rx = self.media_rx.take().expect("run is called once");
        let mut link = self.link.take();
        loop {
            let wake = self.engine.poll_timeout();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Ok(()) = async { match link.as_mut() {
                    Some(l) => l.changed().await,
                    None => std::future::pending().await,
                } } => {
                    let up = matches!(*link.as_mut().expect("polled above").borrow_and_update(), LinkState::Up);
                    self.engine.on_link(up, &env());
                }
                Some(routed) = stanzas.recv() => {
                    self.engine.set_draining(self.draining.load(Relaxed));
                    self.engine.on_routed(routed, &env());
                }
                Some(ev) = sip_events.recv() => {
                    self.engine.set_draining(self.draining.load(Relaxed));
                    self.engine.on_ua(ev, &env());
                }
                Some((key, ev)) = media_rx.recv() => self.engine.on_media(key, ev, &env()),
                // A bridge task ended (ports freed): the counters below must say so.
                Some(r) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.reaped(r),
                _ = async { match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                } } => self.engine.on_timeout(&env()),
            }
            self.execute().await;
            self.publish(&stats);
        }
        self.engine.shutdown(&env());
        self.execute().await;
        // INVITEs that were on their way when their call ended: wait (briefly) for their
        // request ids, so that they are cancelled rather than left ringing.
        let deadline = tokio::time::Instant::now() + ORPHAN_INVITE_GRACE;
        while self.engine.has_orphan_invites() {
            match tokio::time::timeout_at(deadline, sip_events.recv()).await {
                Ok(Some(ev)) => {
                    self.engine.on_ua(ev, &env());
                    self.execute().await;
                }
                _ => break,
            }
        }
        // Every bridge got its Close: wait for them to be gone (close_notify sent, ports free).
        self.bridges.clear();
        while self.tasks.join_next().await.is_some() {}
        self.publish(&stats);
    }

    fn publish(&self, stats: &watch::Sender<CallStats>) {
        let mut s = self.engine.stats();
        s.media_ports_in_use = self.media.ports_in_use();
        s.media_bridges = self.media.active_bridges();
        let _ = stats.send(s);
    }

    /// Carries out what the engine asks.
    async fn execute(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            match action {
                Action::Xmpp(el) => {
                    if let Err(e) = self.xmpp.send(el) {
                        warn!("cannot queue call signalling: {e}");
                    }
                }
                Action::Sip(cmd) => {
                    if let Err(mpsc::error::SendError(cmd)) = self.sip.send(cmd).await {
                        warn!("the SIP side has stopped; call command dropped");
                        if let CallCommand::Invite { tag, .. } = cmd {
                            // No answer will come: the call must not wait for one.
                            let failed = UaEvent::InviteSent {
                                tag,
                                result: Err("the SIP side has stopped".into()),
                            };
                            self.engine.on_ua(failed, &env());
                        }
                    }
                }
                Action::Media(
                    key,
                    MediaCommand::Create {
                        role,
                        webrtc_remote,
                    },
                ) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.bridges.insert(key, tx);
                    let span = self.engine.span(key).unwrap_or_else(tracing::Span::none);
                    let task = bridge_task(
                        key,
                        self.media.clone(),
                        role,
                        webrtc_remote,
                        rx,
                        self.media_tx.clone(),
                    );
                    let task = self.tasks.spawn(task.instrument(span));
                    self.task_calls.insert(task.id(), key);
                }
                Action::Media(key, cmd) => {
                    let close = matches!(cmd, MediaCommand::Close);
                    match self.bridges.get(&key) {
                        Some(tx) => {
                            let _ = tx.send(Box::new(cmd));
                        }
                        None => debug!(%key, "media command for a call without a bridge"),
                    }
                    if close {
                        self.bridges.remove(&key);
                    }
                }
            }
        }
        // Reap the bridges that have ended.
        while let Some(r) = self.tasks.try_join_next_with_id() {
            self.reaped(r);
        }
    }

    /// A bridge task ended: forget it; if it died (a panic), its call hears the bridge failed.
    fn reaped(&mut self, r: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let (id, failed) = match r {
            Ok((id, ())) => (id, false),
            Err(e) => (e.id(), true),
        };
        let Some(key) = self.task_calls.remove(&id) else {
            return;
        };
        self.bridges.remove(&key);
        if failed {
            warn!(%key, "the media task of a call died");
            let ev = MediaEvent::Bridge(BridgeEvent::Failed {
                leg: LegKind::WebRtc,
                reason: "the gateway's media task for this call failed".into(),
            });
            self.engine.on_media(key, ev, &env());
        }
    }
}

/// One call's bridge: made, then given the call's media commands in order; its answers and
/// events go back to the driver tagged with the call.
async fn bridge_task(
    key: CallKey,
    media: MediaEngine,
    role: crate::media::bridge::WebRtcRole,
    webrtc_remote: Option<(
        crate::media::webrtc::RemoteDescription,
        crate::media::bridge::LegCodecs,
    )>,
    mut commands: mpsc::UnboundedReceiver<Box<MediaCommand>>,
    events: mpsc::UnboundedSender<(CallKey, MediaEvent)>,
) {
    let send = |ev: MediaEvent| {
        let _ = events.send((key, ev));
    };
    // Boxed: the making of a bridge is a large future, and this task lives as long as the
    // call; unboxed, every call would keep room for it until it ends.
    let (mut bridge, local) = match Box::pin(media.create_bridge(role)).await {
        Ok(b) => b,
        Err(e) => {
            send(MediaEvent::Created(Err(CreateError::Allocate(
                e.to_string(),
            ))));
            return;
        }
    };
    if let Some((remote, codecs)) = webrtc_remote
        && let Err(e) = Box::pin(bridge.set_webrtc_remote(remote, codecs)).await
    {
        send(MediaEvent::Created(Err(CreateError::WebRtcRemote(
            e.to_string(),
        ))));
        bridge.close().await;
        return;
    }
    send(MediaEvent::Created(Ok(local)));
    let mut bridge_events = bridge.take_events();
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd.map(|c| *c) {
                None | Some(MediaCommand::Close) | Some(MediaCommand::Create { .. }) => break,
                Some(MediaCommand::SetWebRtcRemote { remote, codecs, step }) => {
                    let result = bridge.set_webrtc_remote(remote, codecs).await.map_err(|e| e.to_string());
                    send(MediaEvent::WebRtcRemoteSet { step, result });
                }
                Some(MediaCommand::AddCandidate(c)) => {
                    if let Err(e) = bridge.add_webrtc_candidate(c).await {
                        debug!("remote candidate refused: {e}");
                    }
                }
                Some(MediaCommand::SetSipRemote { remote, step }) => {
                    let result = bridge.set_sip_remote(*remote).await.map_err(|e| e.to_string());
                    send(MediaEvent::SipRemoteSet { step, result });
                }
            },
            Some(ev) = async { match bridge_events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            } } => send(MediaEvent::Bridge(ev)),
        }
    }
    bridge.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bridge task lives as long as its call: its future's size is memory per call.
    #[test]
    fn a_bridge_task_is_small() {
        let (_tx, rx) = mpsc::unbounded_channel();
        let (etx, _erx) = mpsc::unbounded_channel();
        let media = MediaEngine::new(crate::media::bridge::MediaConfig::new(
            std::net::Ipv4Addr::LOCALHOST.into(),
            40000,
            40010,
        ))
        .expect("media engine");
        let task = bridge_task(
            CallKey(1),
            media,
            crate::media::bridge::WebRtcRole::Answerer,
            None,
            rx,
            etx,
        );
        let size = std::mem::size_of_val(&task);
        println!(
            "bridge task future: {size} bytes; a command {} bytes, an event {} bytes",
            std::mem::size_of::<MediaCommand>(),
            std::mem::size_of::<MediaEvent>()
        );
        println!(
            "a session {} bytes, an output {} bytes",
            std::mem::size_of::<super::super::session::Session>(),
            std::mem::size_of::<super::super::session::Output>()
        );
        assert!(size < 4096, "bridge task future is {size} bytes");
    }
}
