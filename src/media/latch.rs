//! Symmetric RTP latching for the SIP leg (RFC 4961 symmetric RTP; the "comedia" practice of
//! SBCs): a phone behind NAT advertises an address in its SDP that we cannot reach, but it sends
//! from the address where it also receives. We therefore send to the SDP address until a packet
//! that looks like the negotiated media arrives, then to where that packet came from.
//!
//! The danger is hijacking: anyone who can send us one UDP packet could steal the stream. So we
//! latch only on a packet that is well-formed RTP with a payload type negotiated for this leg
//! (or, with SRTP, one that authenticated — the caller says so), only during a short window
//! after the call starts or after the remote description changes, and afterwards only re-latch
//! when the latched source has been silent for a while and the newcomer is from the same IP.
//! Pure: the caller passes `now` and each packet's source.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long after (re)start a first matching packet may set the destination. Long enough for
/// a phone's first packets (early media, a slow answer), short enough to close the door soon.
pub const LATCH_WINDOW: Duration = Duration::from_secs(10);
/// Silence after which the latched source is presumed gone (a NAT rebinding after a Wi-Fi to
/// LTE switch, a phone restart); then a packet from the same IP may move the latch.
pub const RELATCH_AFTER_SILENCE: Duration = Duration::from_secs(2);

/// Whether an incoming packet proved it belongs to this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Well-formed RTP with a negotiated payload type (plain RTP legs).
    NegotiatedRtp,
    /// SRTP/SRTCP whose authentication tag verified with this call's keys: conclusive.
    Authenticated,
    /// Anything else: never latches.
    None,
}

/// What the latch did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The packet comes from where we send: accept it.
    FromPeer,
    /// The destination moved to this source (first latch or re-latch): accept it.
    Latched(SocketAddr),
    /// A packet from elsewhere that may not move the latch: drop it (and count it).
    Foreign,
}

#[derive(Debug, Clone)]
pub struct Latch {
    /// Where we send now: the SDP address until latched.
    dest: SocketAddr,
    latched: bool,
    window_end: Instant,
    last_from_peer: Option<Instant>,
    /// Where we sent before the last re-INVITE moved media: late packets from there must not
    /// latch us back (a PBX moving media to another box keeps sending for a moment).
    previous: Option<SocketAddr>,
    /// Packets dropped as foreign (for stats).
    pub foreign: u64,
}

impl Latch {
    /// `signalled`: the address from the remote SDP (`c=` and `m=` port).
    pub fn new(signalled: SocketAddr, now: Instant) -> Self {
        Latch {
            dest: signalled,
            latched: false,
            window_end: now + LATCH_WINDOW,
            last_from_peer: None,
            previous: None,
            foreign: 0,
        }
    }

    /// The remote description changed (re-INVITE): send to the new address and open the
    /// window again.
    pub fn reset(&mut self, signalled: SocketAddr, now: Instant) {
        let previous = if self.dest != signalled {
            Some(self.dest)
        } else {
            self.previous
        };
        *self = Latch {
            foreign: self.foreign,
            previous,
            ..Latch::new(signalled, now)
        };
    }

    /// Where to send RTP now.
    pub fn destination(&self) -> SocketAddr {
        self.dest
    }

    pub fn is_latched(&self) -> bool {
        self.latched
    }

    /// Classifies one received packet from `source`.
    pub fn on_packet(&mut self, source: SocketAddr, evidence: Evidence, now: Instant) -> Verdict {
        if source == self.dest {
            if evidence != Evidence::None {
                self.last_from_peer = Some(now);
                self.latched = true;
            }
            return Verdict::FromPeer;
        }
        let may_latch = match evidence {
            _ if Some(source) == self.previous => false,
            Evidence::None => false,
            // Authenticated SRTP proves the sender holds the call's keys.
            Evidence::Authenticated => true,
            Evidence::NegotiatedRtp => {
                let in_window = !self.latched && now <= self.window_end;
                let peer_silent = self
                    .last_from_peer
                    .is_none_or(|t| now.saturating_duration_since(t) >= RELATCH_AFTER_SILENCE);
                in_window || (self.latched && peer_silent && source.ip() == self.dest.ip())
            }
        };
        if may_latch {
            self.dest = source;
            self.latched = true;
            self.last_from_peer = Some(now);
            Verdict::Latched(source)
        } else {
            self.foreign += 1;
            Verdict::Foreign
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse::<SocketAddr>().expect("test address")
    }

    #[test]
    fn a_reinvite_move_is_not_undone_by_late_packets_from_the_old_endpoint() {
        let t0 = Instant::now();
        let mut l = Latch::new(a("10.0.0.5:4000"), t0);
        assert_eq!(
            l.on_packet(a("10.0.0.5:4000"), Evidence::NegotiatedRtp, t0),
            Verdict::FromPeer
        );
        // re-INVITE: media moves to a media server
        l.reset(a("10.0.0.9:6000"), t0);
        assert_eq!(
            l.on_packet(a("10.0.0.5:4000"), Evidence::NegotiatedRtp, t0),
            Verdict::Foreign,
            "late packet from the old endpoint"
        );
        assert_eq!(l.destination(), a("10.0.0.9:6000"));
        // the new endpoint, seen through a NAT, still latches
        assert_eq!(
            l.on_packet(a("203.0.113.7:7000"), Evidence::NegotiatedRtp, t0),
            Verdict::Latched(a("203.0.113.7:7000"))
        );
    }

    #[test]
    fn latches_to_the_real_source_within_the_window() {
        let t0 = Instant::now();
        let mut l = Latch::new(a("10.0.0.5:4000"), t0);
        assert_eq!(l.destination(), a("10.0.0.5:4000"));
        // garbage from the NAT's public side does not latch
        assert_eq!(
            l.on_packet(a("203.0.113.9:31000"), Evidence::None, t0),
            Verdict::Foreign
        );
        // the phone's first real RTP does
        let v = l.on_packet(
            a("203.0.113.9:31000"),
            Evidence::NegotiatedRtp,
            t0 + Duration::from_millis(300),
        );
        assert_eq!(v, Verdict::Latched(a("203.0.113.9:31000")));
        assert_eq!(l.destination(), a("203.0.113.9:31000"));
        assert_eq!(
            l.on_packet(
                a("203.0.113.9:31000"),
                Evidence::NegotiatedRtp,
                t0 + Duration::from_millis(320)
            ),
            Verdict::FromPeer
        );
    }

    #[test]
    fn no_hijack_after_latching_or_after_the_window() {
        let t0 = Instant::now();
        let mut l = Latch::new(a("198.51.100.7:4000"), t0);
        assert_eq!(
            l.on_packet(a("198.51.100.7:4000"), Evidence::NegotiatedRtp, t0),
            Verdict::FromPeer
        );
        // an attacker elsewhere sending valid-looking RTP while the phone talks: dropped
        let t = t0 + Duration::from_millis(500);
        assert_eq!(
            l.on_packet(a("192.0.2.66:5000"), Evidence::NegotiatedRtp, t),
            Verdict::Foreign
        );
        // even when the phone goes silent, another IP cannot take over with plain RTP
        let t = t0 + Duration::from_secs(5);
        assert_eq!(
            l.on_packet(a("192.0.2.66:5000"), Evidence::NegotiatedRtp, t),
            Verdict::Foreign
        );
        assert_eq!(l.destination(), a("198.51.100.7:4000"));
        assert_eq!(l.foreign, 2);
        // never latched and the window passed: a late stranger does not latch either
        let mut l = Latch::new(a("198.51.100.7:4000"), t0);
        assert_eq!(
            l.on_packet(
                a("192.0.2.66:5000"),
                Evidence::NegotiatedRtp,
                t0 + LATCH_WINDOW + Duration::from_millis(1)
            ),
            Verdict::Foreign
        );
    }

    #[test]
    fn relatches_after_a_nat_rebinding_from_the_same_ip() {
        let t0 = Instant::now();
        let mut l = Latch::new(a("198.51.100.7:4000"), t0);
        l.on_packet(a("198.51.100.7:4000"), Evidence::NegotiatedRtp, t0);
        // same IP, new port, but the old port is still talking: not yet
        let t = t0 + Duration::from_millis(100);
        assert_eq!(
            l.on_packet(a("198.51.100.7:4100"), Evidence::NegotiatedRtp, t),
            Verdict::Foreign
        );
        // the old port went silent for RELATCH_AFTER_SILENCE: move
        let t = t0 + RELATCH_AFTER_SILENCE + Duration::from_millis(1);
        assert_eq!(
            l.on_packet(a("198.51.100.7:4100"), Evidence::NegotiatedRtp, t),
            Verdict::Latched(a("198.51.100.7:4100"))
        );
    }

    #[test]
    fn authenticated_srtp_always_latches_and_reset_reopens() {
        let t0 = Instant::now();
        let mut l = Latch::new(a("198.51.100.7:4000"), t0);
        l.on_packet(a("198.51.100.7:4000"), Evidence::NegotiatedRtp, t0);
        let t = t0 + Duration::from_secs(60);
        assert_eq!(
            l.on_packet(a("192.0.2.1:7000"), Evidence::Authenticated, t),
            Verdict::Latched(a("192.0.2.1:7000"))
        );
        l.reset(a("198.51.100.8:4000"), t);
        assert!(!l.is_latched());
        assert_eq!(l.destination(), a("198.51.100.8:4000"));
        assert_eq!(
            l.on_packet(
                a("203.0.113.1:9"),
                Evidence::NegotiatedRtp,
                t + Duration::from_secs(1)
            ),
            Verdict::Latched(a("203.0.113.1:9"))
        );
    }
}
