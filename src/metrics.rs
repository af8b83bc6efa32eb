//! Process-wide counters, shared by the drivers (which bump them) and the admin HTTP server
//! (which reads them). Plain atomics: nothing here allocates or locks on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    pub link_up: AtomicBool,
    /// TCP connects tried, successful or not.
    pub connect_attempts: AtomicU64,
    /// Links established after the first one.
    pub reconnects: AtomicU64,
    /// Handshakes the server refused (wrong secret, unknown component, conflict).
    pub handshake_refusals: AtomicU64,
    stanzas_in: [AtomicU64; 4],
    stanzas_out: [AtomicU64; 4],
    /// Stanzas refused because the outgoing queue was full.
    pub queue_overflows: AtomicU64,
    /// Stanzas nested deeper than `xmpp.max_stanza_depth` (cut before parsing, then refused).
    pub stanzas_too_deep: AtomicU64,
    /// 1 while the SIP account is registered upstream.
    pub sip_registered: AtomicBool,
    /// Successful REGISTERs (first registrations and refreshes).
    pub sip_registrations: AtomicU64,
    /// Registration attempts that failed (refused, timed out, unreachable).
    pub sip_registration_failures: AtomicU64,
    /// Client and server transactions by how they ended.
    sip_transactions: [AtomicU64; 5],
    /// Incoming SIP requests answered 4xx by the transport or policy (malformed, forbidden…).
    pub sip_rejected: AtomicU64,
}

/// The kind of a top-level stream element, for `xsg_stanzas_{in,out}_total{kind}`. Which
/// element is which kind is XMPP knowledge: `xmpp::stanza` re-exports this type as `Kind` and
/// classifies elements there (`Kind::of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    Iq,
    Message,
    Presence,
    Other,
}

impl StanzaKind {
    pub const ALL: [StanzaKind; 4] = [
        StanzaKind::Iq,
        StanzaKind::Message,
        StanzaKind::Presence,
        StanzaKind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StanzaKind::Iq => "iq",
            StanzaKind::Message => "message",
            StanzaKind::Presence => "presence",
            StanzaKind::Other => "other",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// How a SIP transaction ended, for `xsg_sip_transactions_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// Final response 2xx.
    Success,
    /// Final response 3xx–6xx.
    Failure,
    /// Timer B, F or H fired.
    Timeout,
    /// The transport could not deliver.
    TransportError,
    /// A server transaction we answered.
    Answered,
}

impl TxOutcome {
    pub const ALL: [TxOutcome; 5] = [
        TxOutcome::Success,
        TxOutcome::Failure,
        TxOutcome::Timeout,
        TxOutcome::TransportError,
        TxOutcome::Answered,
    ];
    pub fn label(self) -> &'static str {
        match self {
            TxOutcome::Success => "success",
            TxOutcome::Failure => "failure",
            TxOutcome::Timeout => "timeout",
            TxOutcome::TransportError => "transport_error",
            TxOutcome::Answered => "answered",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

impl Metrics {
    pub fn stanza_in(&self, kind: StanzaKind) {
        self.stanzas_in[kind.idx()].fetch_add(1, Relaxed);
    }
    pub fn stanza_out(&self, kind: StanzaKind) {
        self.stanzas_out[kind.idx()].fetch_add(1, Relaxed);
    }
    pub fn sip_transaction(&self, outcome: TxOutcome) {
        self.sip_transactions[outcome.idx()].fetch_add(1, Relaxed);
    }
    pub fn sip_transactions(&self, outcome: TxOutcome) -> u64 {
        self.sip_transactions[outcome.idx()].load(Relaxed)
    }
    pub fn stanzas_in(&self, kind: StanzaKind) -> u64 {
        self.stanzas_in[kind.idx()].load(Relaxed)
    }
    pub fn stanzas_out(&self, kind: StanzaKind) -> u64 {
        self.stanzas_out[kind.idx()].load(Relaxed)
    }

    /// Prometheus text exposition format 0.0.4. `queue_depth` is read from the queue itself.
    pub fn render_prometheus(&self, queue_depth: usize, queue_capacity: usize) -> String {
        let mut s = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "xsg_component_link_up",
            "1 while the XEP-0114 link is up",
            u64::from(self.link_up.load(Relaxed)),
        );
        gauge(
            "xsg_outgoing_queue_depth",
            "stanzas waiting to be sent",
            queue_depth as u64,
        );
        gauge(
            "xsg_outgoing_queue_capacity",
            "size of the outgoing stanza queue (xmpp.queue_size)",
            queue_capacity as u64,
        );
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "xsg_component_connect_attempts_total",
            "TCP connects to the XMPP server tried",
            self.connect_attempts.load(Relaxed),
        );
        counter(
            "xsg_component_reconnects_total",
            "links established after the first",
            self.reconnects.load(Relaxed),
        );
        counter(
            "xsg_component_handshake_refusals_total",
            "handshakes the server refused",
            self.handshake_refusals.load(Relaxed),
        );
        counter(
            "xsg_outgoing_queue_overflows_total",
            "stanzas refused because the queue was full",
            self.queue_overflows.load(Relaxed),
        );
        counter(
            "xsg_stanzas_too_deep_total",
            "stanzas nested deeper than xmpp.max_stanza_depth, refused",
            self.stanzas_too_deep.load(Relaxed),
        );
        counter(
            "xsg_sip_registrations_total",
            "successful SIP REGISTERs (including refreshes)",
            self.sip_registrations.load(Relaxed),
        );
        counter(
            "xsg_sip_registration_failures_total",
            "failed SIP registration attempts",
            self.sip_registration_failures.load(Relaxed),
        );
        counter(
            "xsg_sip_rejected_requests_total",
            "incoming SIP requests refused (malformed, forbidden, unknown method)",
            self.sip_rejected.load(Relaxed),
        );
        let _ = writeln!(
            s,
            "# HELP xsg_sip_registered 1 while the SIP account is registered\n# TYPE xsg_sip_registered gauge\nxsg_sip_registered {}",
            u64::from(self.sip_registered.load(Relaxed))
        );
        let _ = writeln!(
            s,
            "# HELP xsg_sip_transactions_total SIP transactions by outcome\n# TYPE xsg_sip_transactions_total counter"
        );
        for o in TxOutcome::ALL {
            let _ = writeln!(
                s,
                "xsg_sip_transactions_total{{outcome=\"{}\"}} {}",
                o.label(),
                self.sip_transactions(o)
            );
        }
        for (name, help, f) in [
            (
                "xsg_stanzas_in_total",
                "stanzas received by kind",
                Self::stanzas_in as fn(&Self, StanzaKind) -> u64,
            ),
            (
                "xsg_stanzas_out_total",
                "stanzas sent by kind",
                Self::stanzas_out,
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for k in StanzaKind::ALL {
                let _ = writeln!(s, "{name}{{kind=\"{}\"}} {}", k.label(), f(self, k));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let m = Metrics::default();
        m.stanza_in(StanzaKind::Iq);
        m.stanza_in(StanzaKind::Iq);
        m.stanza_out(StanzaKind::Presence);
        m.connect_attempts.fetch_add(3, Relaxed);
        let t = m.render_prometheus(2, 10);
        assert!(t.contains("xsg_stanzas_in_total{kind=\"iq\"} 2\n"), "{t}");
        assert!(t.contains("xsg_stanzas_out_total{kind=\"presence\"} 1\n"));
        assert!(t.contains("xsg_component_connect_attempts_total 3\n"));
        assert!(t.contains("xsg_component_link_up 0\n"));
        assert!(t.contains("xsg_outgoing_queue_depth 2\n"));
    }
}
