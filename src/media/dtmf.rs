//! DTMF as RFC 4733 `telephone-event`: the 4-byte payload, the relay of an event stream from one
//! leg to the other, and the detector that tells the call layer which digit was pressed.
//!
//! Owns: the telephone-event payload and per-event state. Must not touch sockets or the clock;
//! the RTP header (SSRC, sequence number, timestamp) of relayed packets is the
//! [`Rewriter`]'s job — it maps timestamps linearly, so every packet of one
//! event keeps one shared timestamp (RFC 4733 §2.5.1.2), the marker bit of the first packet
//! passes through and each of the three end packets (§2.5.1.4) keeps its own sequence number.

use std::time::Instant;

use thiserror::Error;

use super::rtp::{Rewrite, Rewriter, RtpError, RtpPacketMut};

/// Length of one event block (RFC 4733 §2.3).
pub const EVENT_LEN: usize = 4;
/// The largest `volume` (RFC 4733 §2.3.4: 0 to −63 dBm0, six bits).
pub const MAX_VOLUME: u8 = 63;

/// Why a telephone-event payload or relay setting is refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DtmfError {
    #[error(
        "telephone-event payload of {len} bytes; RFC 4733 §2.3 needs a multiple of 4, at least 4"
    )]
    BadLength { len: usize },
    #[error("volume {volume} is above 63 (−63 dBm0 is the lowest, RFC 4733 §2.3.4)")]
    BadVolume { volume: u8 },
    #[error("output buffer of {len} bytes cannot hold a 4-byte event")]
    BufferTooSmall { len: usize },
    #[error("'{digit}' is not a DTMF digit (0-9, *, #, A-D)")]
    NotADigit { digit: char },
    #[error("a clock rate of 0 Hz is not an RTP clock")]
    ZeroClockRate,
    #[error("not an RTP packet: {0}")]
    Rtp(#[from] RtpError),
}

/// One RFC 4733 §2.3 event block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (RFC 4733 §3.2: 0–9, `*`=10, `#`=11, A–D=12–15, 16 = flash).
    pub event: u8,
    /// E bit: the event has ended.
    pub end: bool,
    /// R bit: reserved, sent as 0 and ignored on receipt (§2.3); kept so a relay can copy it.
    pub reserved: bool,
    /// Power level, 0..=63 meaning 0 to −63 dBm0.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units of the telephone-event clock (§2.3.5).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event block. Further blocks (RFC 2198 redundancy folded in by some
    /// senders) are tolerated but ignored; a length that is not a multiple of 4 is refused.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        if payload.len() < EVENT_LEN || !payload.len().is_multiple_of(EVENT_LEN) {
            return Err(DtmfError::BadLength { len: payload.len() });
        }
        Ok(Self {
            event: payload[0],
            end: payload[1] & 0x80 != 0,
            reserved: payload[1] & 0x40 != 0,
            volume: payload[1] & 0x3f,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    /// Writes the block into `out[..4]`.
    pub fn write(&self, out: &mut [u8]) -> Result<(), DtmfError> {
        if self.volume > MAX_VOLUME {
            return Err(DtmfError::BadVolume {
                volume: self.volume,
            });
        }
        let Some(out) = out.get_mut(..EVENT_LEN) else {
            return Err(DtmfError::BufferTooSmall { len: out.len() });
        };
        out[0] = self.event;
        out[1] = (if self.end { 0x80 } else { 0 })
            | (if self.reserved { 0x40 } else { 0 })
            | self.volume;
        out[2..4].copy_from_slice(&self.duration.to_be_bytes());
        Ok(())
    }

    /// The DTMF digit this event stands for, if it is one (RFC 4733 §3.2, table 7).
    pub fn digit(&self) -> Option<char> {
        event_to_digit(self.event)
    }
}

/// RFC 4733 §3.2: event code to digit.
pub fn event_to_digit(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        _ => return None,
    })
}

/// RFC 4733 §3.2: digit to event code (lower-case a–d accepted).
pub fn digit_to_event(digit: char) -> Result<u8, DtmfError> {
    Ok(match digit {
        '0'..='9' => digit as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => digit as u8 - b'A' + 12,
        'a'..='d' => digit as u8 - b'a' + 12,
        _ => return Err(DtmfError::NotADigit { digit }),
    })
}

/// Rewrites telephone-event payloads for the other leg's telephone-event clock (e.g. 8000 Hz
/// on SIP, 48000 Hz on a WebRTC leg): durations are scaled; event, E, R and volume are copied.
/// The header (PT, SSRC, sequence, timestamp) is rewritten by the leg's `Rewriter`.
#[derive(Debug, Clone, Copy)]
pub struct DtmfRelay {
    num: u32,
    den: u32,
}

impl DtmfRelay {
    pub fn new(in_clock: u32, out_clock: u32) -> Result<Self, DtmfError> {
        if in_clock == 0 || out_clock == 0 {
            return Err(DtmfError::ZeroClockRate);
        }
        let (mut a, mut b) = (in_clock, out_clock);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        Ok(Self {
            num: out_clock / a,
            den: in_clock / a,
        })
    }

    /// Rewrites every event block of `payload` in place and returns the first one as relayed.
    /// A duration that no longer fits 16 bits after scaling saturates at 0xFFFF (RFC 4733
    /// §2.5.1.3 would split such a long event into segments; at 48 kHz that takes a key held
    /// for over 1.36 s, which the far end still sees as one long press).
    pub fn relay(&self, payload: &mut [u8]) -> Result<TelephoneEvent, DtmfError> {
        let first = TelephoneEvent::parse(payload)?;
        for block in payload.chunks_exact_mut(EVENT_LEN) {
            let d = u32::from(u16::from_be_bytes([block[2], block[3]]));
            let scaled = u64::from(d) * u64::from(self.num) / u64::from(self.den);
            let scaled = u16::try_from(scaled).unwrap_or(u16::MAX);
            block[2..4].copy_from_slice(&scaled.to_be_bytes());
        }
        Ok(TelephoneEvent {
            duration: u16::from_be_bytes([payload[2], payload[3]]),
            ..first
        })
    }
}

impl DtmfRelay {
    /// Relays one whole telephone-event RTP packet in place: the header through the outgoing
    /// leg's `rewriter` (shared with that leg's audio, so SSRC and sequence space stay one
    /// stream), the payload through [`DtmfRelay::relay`]. `Ok(None)`: the rewriter dropped the
    /// packet (duplicate other than a repeated end packet, unmapped payload type, stale
    /// source); do not send it. The payload is checked
    /// before the header is touched, so a refused packet leaves the rewriter's state unchanged.
    pub fn relay_packet(
        &self,
        rewriter: &mut Rewriter,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<Option<TelephoneEvent>, DtmfError> {
        let event = TelephoneEvent::parse(RtpPacketMut::parse(buf)?.payload_mut())?;
        match rewriter.rewrite(buf, now)? {
            // Some senders repeat the end packet with one sequence number; forward all three.
            Rewrite::Forward { .. } => {}
            Rewrite::Duplicate if event.end => {}
            Rewrite::Duplicate
            | Rewrite::UnmappedPayloadType { .. }
            | Rewrite::StaleSource
            | Rewrite::Probation => return Ok(None),
        }
        let mut pkt = RtpPacketMut::parse(buf)?;
        self.relay(pkt.payload_mut()).map(Some)
    }
}

/// One finished key press, for the call layer (e.g. to answer SIP INFO or drive an IVR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    pub digit: char,
    pub duration_ms: u32,
}

/// Turns a telephone-event stream into one [`DtmfEvent`] per key press: reported on the first
/// end packet (the two retransmissions are ignored, RFC 4733 §2.5.1.4), or — when all end
/// packets were lost — as soon as a packet with a new event timestamp arrives (§2.5.2.2 treats
/// a new timestamp as the start of a new event).
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    clock_rate: u32,
    /// RTP timestamp, event and longest duration of the event in progress.
    current: Option<(u32, u8, u16)>,
    /// Timestamp of the last event already reported (so its end retransmissions are ignored).
    reported: Option<u32>,
    pending: [Option<DtmfEvent>; 2],
}

impl DtmfDetector {
    /// `clock_rate`: the telephone-event clock of the leg the packets come from.
    pub fn new(clock_rate: u32) -> Result<Self, DtmfError> {
        if clock_rate == 0 {
            return Err(DtmfError::ZeroClockRate);
        }
        Ok(Self {
            clock_rate,
            current: None,
            reported: None,
            pending: [None; 2],
        })
    }

    fn finish(&self, event: u8, duration: u16) -> Option<DtmfEvent> {
        let digit = event_to_digit(event)?;
        let duration_ms =
            (u64::from(duration) * 1000 / u64::from(self.clock_rate)).min(u64::from(u32::MAX));
        Some(DtmfEvent {
            digit,
            duration_ms: duration_ms as u32,
        })
    }

    /// Feeds one received telephone-event packet (`timestamp` from its RTP header). Finished key
    /// presses are then drained with [`DtmfDetector::poll_event`] (at most two per packet: a
    /// previous event whose end was lost, and this one). Non-digit events (flash, tones) are
    /// never reported.
    pub fn push(&mut self, timestamp: u32, event: &TelephoneEvent) {
        if self.reported == Some(timestamp) {
            return;
        }
        match self.current {
            Some((ts, ev, dur)) if ts == timestamp => {
                self.current = Some((ts, ev, dur.max(event.duration)));
            }
            Some((_, ev, dur)) => {
                // A new event began before we saw the previous one end: its end was lost.
                self.queue(ev, dur);
                self.current = Some((timestamp, event.event, event.duration));
            }
            None => self.current = Some((timestamp, event.event, event.duration)),
        }
        if event.end
            && let Some((ts, ev, dur)) = self.current.take()
        {
            self.reported = Some(ts);
            self.queue(ev, dur);
        }
    }

    fn queue(&mut self, event: u8, duration: u16) {
        if let Some(done) = self.finish(event, duration) {
            // Two slots suffice: `push` queues at most two and callers drain after each push;
            // if they do not, the oldest report is overwritten rather than growing memory.
            if self.pending[0].is_none() {
                self.pending[0] = Some(done);
            } else {
                self.pending[1] = Some(done);
            }
        }
    }

    /// The next finished key press, oldest first.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        let out = self.pending[0].take();
        self.pending[0] = self.pending[1].take();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{PtMap, RewriterConfig, RtpPacket, Ssrc, write_header};

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            reserved: false,
            volume: 10,
            duration,
        }
    }

    #[test]
    fn digits_map_both_ways() {
        let digits = "0123456789*#ABCD";
        for (code, d) in digits.chars().enumerate() {
            assert_eq!(event_to_digit(code as u8), Some(d));
            assert_eq!(digit_to_event(d), Ok(code as u8));
        }
        assert_eq!(digit_to_event('b'), Ok(13));
        assert_eq!(event_to_digit(16), None); // flash
        assert_eq!(
            digit_to_event('x'),
            Err(DtmfError::NotADigit { digit: 'x' })
        );
    }

    #[test]
    fn payload_round_trip_and_validation() {
        // RFC 4733 §2.3 layout: event 5, E=1, R=0, volume 10, duration 1600.
        let wire = [5u8, 0x80 | 10, 0x06, 0x40];
        let e = TelephoneEvent::parse(&wire).unwrap();
        assert_eq!(e, ev(5, true, 1600));
        let mut out = [0u8; 4];
        e.write(&mut out).unwrap();
        assert_eq!(out, wire);
        assert!(TelephoneEvent::parse(&[1, 2, 3, 4, 5, 6, 7, 8]).is_ok());
        for bad in [&[][..], &[1, 2, 3], &[1, 2, 3, 4, 5]] {
            assert_eq!(
                TelephoneEvent::parse(bad),
                Err(DtmfError::BadLength { len: bad.len() })
            );
        }
        let loud = TelephoneEvent { volume: 64, ..e };
        assert_eq!(
            loud.write(&mut out),
            Err(DtmfError::BadVolume { volume: 64 })
        );
        assert_eq!(
            e.write(&mut [0u8; 3]),
            Err(DtmfError::BufferTooSmall { len: 3 })
        );
        assert!(TelephoneEvent::parse(&[0, 0x40, 0, 0]).unwrap().reserved);
    }

    #[test]
    fn relay_scales_durations_between_clocks() {
        let up = DtmfRelay::new(8000, 48_000).unwrap();
        let mut p = [1u8, 0x80 | 10, 0, 0];
        p[2..4].copy_from_slice(&800u16.to_be_bytes());
        let out = up.relay(&mut p).unwrap();
        assert_eq!(out, ev(1, true, 4800));
        assert_eq!(TelephoneEvent::parse(&p).unwrap().duration, 4800);
        let down = DtmfRelay::new(48_000, 8000).unwrap();
        assert_eq!(down.relay(&mut p).unwrap().duration, 800);
        // 2 s at 8 kHz is 96000 ticks at 48 kHz: saturates, never wraps.
        p[2..4].copy_from_slice(&16_000u16.to_be_bytes());
        assert_eq!(up.relay(&mut p).unwrap().duration, u16::MAX);
        let same = DtmfRelay::new(8000, 8000).unwrap();
        assert_eq!(same.relay(&mut p).unwrap().duration, u16::MAX);
        assert_eq!(
            same.relay(&mut [0u8; 3]),
            Err(DtmfError::BadLength { len: 3 })
        );
        assert_eq!(
            DtmfRelay::new(0, 8000).unwrap_err(),
            DtmfError::ZeroClockRate
        );
    }

    /// Pushes one packet and drains what it completed.
    fn feed(d: &mut DtmfDetector, ts: u32, e: TelephoneEvent) -> Vec<DtmfEvent> {
        d.push(ts, &e);
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    fn press(digit: char, duration_ms: u32) -> Vec<DtmfEvent> {
        vec![DtmfEvent { digit, duration_ms }]
    }

    #[test]
    fn detector_reports_once_per_event_with_three_end_packets() {
        let mut d = DtmfDetector::new(8000).unwrap();
        let ts = 12_345;
        // Start (marker), updates every 50 ms (400 ticks), then the end packet three times.
        assert!(feed(&mut d, ts, ev(7, false, 400)).is_empty());
        assert!(feed(&mut d, ts, ev(7, false, 800)).is_empty());
        assert!(feed(&mut d, ts, ev(7, false, 1200)).is_empty());
        assert_eq!(feed(&mut d, ts, ev(7, true, 1600)), press('7', 200));
        assert!(feed(&mut d, ts, ev(7, true, 1600)).is_empty());
        assert!(feed(&mut d, ts, ev(7, true, 1600)).is_empty());
        // Next key, new timestamp.
        assert!(feed(&mut d, ts + 4000, ev(11, false, 400)).is_empty());
        assert_eq!(feed(&mut d, ts + 4000, ev(11, true, 800)), press('#', 100));
    }

    #[test]
    fn detector_reports_event_whose_end_was_lost() {
        let mut d = DtmfDetector::new(48_000).unwrap();
        assert!(feed(&mut d, 100, ev(12, false, 4800)).is_empty());
        assert!(feed(&mut d, 100, ev(12, false, 9600)).is_empty());
        // All end packets of 'A' lost; the next event reveals its end (9600 ticks at 48 kHz).
        assert_eq!(feed(&mut d, 50_000, ev(0, false, 4800)), press('A', 200));
        assert_eq!(feed(&mut d, 50_000, ev(0, true, 9600)), press('0', 200));
        // Only an end packet of a new event arrives while one is pending: both are reported.
        assert!(feed(&mut d, 60_000, ev(3, false, 400)).is_empty());
        assert_eq!(
            feed(&mut d, 70_000, ev(4, true, 800)),
            vec![
                DtmfEvent {
                    digit: '3',
                    duration_ms: 8
                },
                DtmfEvent {
                    digit: '4',
                    duration_ms: 16
                }
            ]
        );
        // Flash (16) is not a digit: never reported.
        assert!(feed(&mut d, 90_000, ev(16, true, 800)).is_empty());
        assert!(DtmfDetector::new(0).is_err());
    }

    #[test]
    fn relays_a_whole_packet_between_legs() {
        let mut map = PtMap::new();
        map.insert(101, 126);
        let mut rw = Rewriter::new(RewriterConfig {
            ssrc: Ssrc(9),
            initial_seq: 500,
            initial_timestamp: 0,
            in_clock: 8000,
            out_clock: 48_000,
            pt_map: map,
        })
        .unwrap();
        let relay = DtmfRelay::new(8000, 48_000).unwrap();
        let now = std::time::Instant::now();
        let mut seen = Vec::new();
        // One event: marker on the first, updates, three end packets; one timestamp.
        let packets = [
            (false, 400, true),
            (false, 800, false),
            (true, 1200, false),
            (true, 1200, false),
            (true, 1200, false),
        ];
        for (i, (end, dur, marker)) in packets.into_iter().enumerate() {
            let mut buf = [0u8; 16];
            write_header(&mut buf, marker, 101, 70 + i as u16, 8000, Ssrc(1)).unwrap();
            ev(9, end, dur).write(&mut buf[12..]).unwrap();
            let out = relay.relay_packet(&mut rw, &mut buf, now).unwrap().unwrap();
            let p = RtpPacket::parse(&buf).unwrap();
            assert_eq!(out.duration, dur * 6);
            seen.push((
                p.marker(),
                p.payload_type(),
                p.sequence_number(),
                p.timestamp(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (true, 126, 500, 0),
                (false, 126, 501, 0),
                (false, 126, 502, 0),
                (false, 126, 503, 0),
                (false, 126, 504, 0)
            ]
        );
        // A sender that repeats the end packet with one sequence number: all copies go out.
        for _ in 0..3 {
            let mut buf = [0u8; 16];
            write_header(&mut buf, false, 101, 90, 16_000, Ssrc(1)).unwrap();
            ev(2, true, 800).write(&mut buf[12..]).unwrap();
            let out = relay.relay_packet(&mut rw, &mut buf, now).unwrap();
            assert_eq!(out.map(|e| e.duration), Some(4800));
            assert_eq!(RtpPacket::parse(&buf).unwrap().sequence_number(), 520);
        }
        // A repeated non-end packet is dropped.
        let mut buf = [0u8; 16];
        write_header(&mut buf, false, 101, 71, 8000, Ssrc(1)).unwrap();
        ev(9, false, 800).write(&mut buf[12..]).unwrap();
        assert_eq!(relay.relay_packet(&mut rw, &mut buf, now), Ok(None));
        // Garbage is an error, not a panic.
        assert!(
            relay
                .relay_packet(&mut rw, &mut [0x80, 101, 0, 0], now)
                .is_err()
        );
    }
}
