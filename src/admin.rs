//! Admin HTTP with Jigasi's paths, so Jitsi tooling can point at us: `/about/health`,
//! `/about/version`, `/about/stats`, and Prometheus `/metrics`. Reads shared state; changes
//! nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::PRODUCT_NAME;
use crate::call::manager::{CallStats, Outcome};
use crate::metrics::{Metrics, TxOutcome};
use crate::sip::registration::RegState;
use crate::sip::service::{SipAction, SipCommand, SipStatus};
use crate::xmpp::link::{LinkHandle, LinkState};
use crate::xmpp::stanza::Kind;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub link: watch::Receiver<LinkState>,
    pub queue: LinkHandle,
    pub component: String,
    pub started: Instant,
    pub shutting_down: Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled by `POST /about/shutdown` (Jigasi's graceful shutdown): main then stops the
    /// process exactly as on SIGTERM.
    pub shutdown_request: tokio_util::sync::CancellationToken,
    pub sip: watch::Receiver<SipStatus>,
    pub sip_commands: mpsc::Sender<SipCommand>,
    pub diagnostics: bool,
    /// The call manager's counters.
    pub calls: watch::Receiver<CallStats>,
}

impl AdminState {
    /// Why we are not healthy; empty when healthy.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match &*self.link.borrow() {
            LinkState::Up => {}
            LinkState::Down { reason, .. } => {
                p.push(format!("XMPP component link is down: {reason}"))
            }
            LinkState::Connecting { attempt } => p.push(format!(
                "XMPP component link is connecting (attempt {attempt})"
            )),
            LinkState::Closed => p.push("XMPP component link is closed".into()),
        }
        if let Some(problem) = self.sip.borrow().problem() {
            p.push(problem);
        }
        if self.shutting_down.load(Relaxed) {
            p.push("shutting down".into());
        }
        p
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/about/health", get(health))
        .route("/about/version", get(version))
        .route("/about/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/about/shutdown", axum::routing::post(shutdown))
        .route("/debug/sip/options", get(sip_options))
        .route("/debug/sip/message", axum::routing::post(sip_message))
        .route("/debug/sip/call", axum::routing::post(sip_call))
        .with_state(state)
}

async fn health(State(s): State<AdminState>) -> Response {
    let problems = s.problems();
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"status": "unhealthy", "reasons": problems})),
        )
            .into_response()
    }
}

/// `POST /about/shutdown`: Jigasi's graceful shutdown. New calls are refused from now on
/// (health turns 503, so a load balancer moves on); the gateway un-registers, closes the XMPP
/// stream and exits 0 when the last call ends (SIGTERM meanwhile ends the calls at once).
async fn shutdown(State(s): State<AdminState>) -> Response {
    s.shutting_down.store(true, Relaxed);
    s.shutdown_request.cancel();
    (StatusCode::OK, Json(json!({"graceful_shutdown": true}))).into_response()
}

async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "name": PRODUCT_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "os": std::env::consts::OS,
    }))
}

async fn stats(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let m = &s.metrics;
    let state = s.link.borrow().clone();
    let sip = s.sip.borrow().clone();
    let per_kind = |f: fn(&Metrics, Kind) -> u64| {
        serde_json::Value::Object(
            Kind::ALL
                .iter()
                .map(|k| (k.label().to_string(), json!(f(m, *k))))
                .collect(),
        )
    };
    Json(json!({
        "uptime_seconds": s.started.elapsed().as_secs(),
        "graceful_shutdown": s.shutting_down.load(Relaxed),
        "component_link": {
            "domain": s.component,
            "state": state.label(),
            "reason": match &state { LinkState::Down { reason, .. } => Some(reason.clone()), _ => None },
            "connect_attempts": m.connect_attempts.load(Relaxed),
            "reconnects": m.reconnects.load(Relaxed),
            "handshake_refusals": m.handshake_refusals.load(Relaxed),
            "queue_depth": s.queue.queue_depth(),
            "queue_capacity": s.queue.queue_capacity(),
            "queue_overflows": m.queue_overflows.load(Relaxed),
        },
        "sip": {
            "listen": sip.listen.to_string(),
            "aor": sip.aor,
            "registration": match &sip.registration {
                None => json!("not configured"),
                Some(RegState::Registered { expires }) => json!({"state": "registered", "expires": expires}),
                Some(RegState::Failed { reason, .. }) => json!({"state": "failed", "reason": reason}),
                Some(other) => json!({"state": format!("{other:?}").to_lowercase()}),
            },
            "registrations": m.sip_registrations.load(Relaxed),
            "registration_failures": m.sip_registration_failures.load(Relaxed),
            "transactions": serde_json::Value::Object(TxOutcome::ALL.iter().map(|o| (o.label().to_string(), json!(m.sip_transactions(*o)))).collect()),
        },
        "calls": calls_json(&s.calls.borrow()),
        "stanzas_in": per_kind(Metrics::stanzas_in),
        "stanzas_out": per_kind(Metrics::stanzas_out),
    }))
}

fn calls_json(c: &CallStats) -> serde_json::Value {
    json!({
        "active": c.active,
        "started": {"xmpp_to_sip": c.started_to_sip, "sip_to_xmpp": c.started_from_sip},
        "outcomes": serde_json::Value::Object(Outcome::ALL.iter().map(|o| (o.label().to_string(), json!(c.outcome(*o)))).collect()),
        "setup_ms_last": c.setup_ms_last,
        "setup_ms_average": (c.setup_count > 0).then(|| c.setup_ms_sum / c.setup_count),
        "media_ports_in_use": c.media_ports_in_use,
        "media_bridges": c.media_bridges,
    })
}

/// The call counters in Prometheus text format.
fn calls_prometheus(c: &CallStats) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP xsg_calls_active Calls in progress (ringing or answered)."
    );
    let _ = writeln!(
        out,
        "# TYPE xsg_calls_active gauge\nxsg_calls_active {}",
        c.active
    );
    let _ = writeln!(
        out,
        "# HELP xsg_calls_started_total Calls started, by direction."
    );
    let _ = writeln!(out, "# TYPE xsg_calls_started_total counter");
    let _ = writeln!(
        out,
        "xsg_calls_started_total{{direction=\"xmpp_to_sip\"}} {}",
        c.started_to_sip
    );
    let _ = writeln!(
        out,
        "xsg_calls_started_total{{direction=\"sip_to_xmpp\"}} {}",
        c.started_from_sip
    );
    let _ = writeln!(
        out,
        "# HELP xsg_calls_total Calls by outcome (answered counts when answered; the others when they end)."
    );
    let _ = writeln!(out, "# TYPE xsg_calls_total counter");
    for o in Outcome::ALL {
        let _ = writeln!(
            out,
            "xsg_calls_total{{outcome=\"{}\"}} {}",
            o.label(),
            c.outcome(o)
        );
    }
    let _ = writeln!(
        out,
        "# HELP xsg_call_setup_seconds Call setup time of answered calls (session-initiate to session-accept; INVITE to 200)."
    );
    let _ = writeln!(out, "# TYPE xsg_call_setup_seconds summary");
    let _ = writeln!(
        out,
        "xsg_call_setup_seconds_sum {:.3}",
        c.setup_ms_sum as f64 / 1000.0
    );
    let _ = writeln!(out, "xsg_call_setup_seconds_count {}", c.setup_count);
    let _ = writeln!(
        out,
        "# HELP xsg_media_ports_in_use UDP ports held by call media."
    );
    let _ = writeln!(
        out,
        "# TYPE xsg_media_ports_in_use gauge\nxsg_media_ports_in_use {}",
        c.media_ports_in_use
    );
    out
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut body = s
        .metrics
        .render_prometheus(s.queue.queue_depth(), s.queue.queue_capacity());
    body.push_str(&calls_prometheus(&s.calls.borrow()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct UriQuery {
    uri: String,
}

/// How long a diagnostic request may take: Timer B/F (64·T1 = 32 s by default), a call's
/// hold (at most 60 s) and the BYE's own Timer F, plus slack.
const DIAGNOSTIC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(130);

async fn sip_request(s: &AdminState, action: SipAction, uri: String) -> Response {
    if !s.diagnostics {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "diagnostics are off (admin.diagnostics = false)"})),
        )
            .into_response();
    }
    let (reply, rx) = oneshot::channel();
    let cmd = SipCommand { action, uri, reply };
    if s.sip_commands.send(cmd).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "SIP user agent stopped"})),
        )
            .into_response();
    }
    match tokio::time::timeout(DIAGNOSTIC_TIMEOUT, rx).await {
        Ok(Ok(Ok(o))) => {
            let mut v = json!({"code": o.code, "reason": o.reason});
            if let Some(bye) = o.bye {
                v["bye"] = json!(bye);
                v["bye_by_peer"] = json!(o.bye_by_peer);
            }
            Json(v).into_response()
        }
        Ok(Ok(Err(e))) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(json!({"error": "no final response"})),
        )
            .into_response(),
    }
}

/// `GET /debug/sip/options?uri=sip:bob@example.net`: OPTIONS from the gateway's account.
async fn sip_options(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<UriQuery>,
) -> Response {
    let action = SipAction::Request {
        method: rsip::Method::Options,
        body: None,
    };
    sip_request(&s, action, q.uri).await
}

/// `POST /debug/sip/message?uri=…` with a text body: a MESSAGE (RFC 3428) from the account.
async fn sip_message(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<UriQuery>,
    body: String,
) -> Response {
    let body = Some(("text/plain;charset=utf-8".to_string(), body.into_bytes()));
    let action = SipAction::Request {
        method: rsip::Method::Message,
        body,
    };
    sip_request(&s, action, q.uri).await
}

#[derive(serde::Deserialize)]
struct CallQuery {
    uri: String,
    /// How long to stay in the call before the BYE, milliseconds (at most 60 s).
    #[serde(default)]
    hold_ms: u64,
}

/// `POST /debug/sip/call?uri=…&hold_ms=…`: a probe call (INVITE, ACK, hold, BYE; no media).
async fn sip_call(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<CallQuery>,
) -> Response {
    let hold = std::time::Duration::from_millis(q.hold_ms.min(60_000));
    sip_request(&s, SipAction::Call { hold }, q.uri).await
}
