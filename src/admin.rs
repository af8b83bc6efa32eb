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
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::xmpp::link::{LinkHandle, LinkState};
use crate::xmpp::router::PRODUCT_NAME;
use crate::xmpp::stanza::Kind;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub link: watch::Receiver<LinkState>,
    pub queue: LinkHandle,
    pub component: String,
    pub started: Instant,
    pub shutting_down: Arc<std::sync::atomic::AtomicBool>,
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
        "stanzas_in": per_kind(Metrics::stanzas_in),
        "stanzas_out": per_kind(Metrics::stanzas_out),
    }))
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let body = s
        .metrics
        .render_prometheus(s.queue.queue_depth(), s.queue.queue_capacity());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
