//! The adaptive jitter buffer of the transcoding path (issue 4, item 4): it turns packets that
//! arrive late, early, reordered or twice into one frame per playout slot, and says when a slot
//! has no packet so the decoder can conceal the loss.
//!
//! Owns: reordering, duplicate and late-packet dropping, the playout clock and its delay. Must
//! not decode, touch sockets or read the clock: `now` comes from the caller (a driver pops until
//! [`Pop::Empty`] and sleeps until [`JitterBuffer::poll_timeout`]). Memory is a fixed ring of
//! slots allocated in [`JitterBuffer::new`]; pushing and popping never allocate.
//!
//! Playout: a packet with (extended) timestamp `ts` plays at
//! `epoch + (ts + base_transit + delay) / clock`, where `base_transit` is the arrival-minus-
//! timestamp of the packet that anchored the stream. Timestamps, not sequence numbers, drive
//! playout, so silence (DTX, comfort noise gaps: consecutive sequence numbers, jumping
//! timestamps) keeps its length and the timestamps handed on stay continuous. `delay` follows
//! `JITTER_FACTOR` × the RFC 3550 §6.4.1 / A.8 interarrival jitter estimate, clamped to
//! `min_delay..=max_delay` (20–120 ms by default); it moves by at most `ADAPT_STEP` per played
//! frame, and jumps to its target at the start of a talkspurt, where the silence hides it.

use std::time::{Duration, Instant};

use thiserror::Error;

use super::rtp::ticks;

/// Multiplier from the RFC 3550 jitter estimate J to the playout delay. J is the mean absolute
/// difference of successive transit times, about 1.13 σ for independent normal delays, so 3 J
/// (≈ 3.4 σ) lets well over 99 % of packets arrive before their slot without buffering for the
/// rare outlier.
const JITTER_FACTOR: i64 = 3;
/// Largest change of the playout delay per frame played in mid-talkspurt: 1 ms per 20 ms frame
/// (5 %) shifts playout gently enough that the decoder's output never jumps by a whole frame.
const ADAPT_STEP: Duration = Duration::from_millis(1);
/// A packet this many sequence numbers behind the playout point is taken as a sender restart
/// rather than a late packet (RFC 3550 A.1 `MAX_MISORDER`).
const MAX_MISORDER: i64 = 100;

/// Why a jitter buffer cannot be built.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum JitterError {
    #[error("a clock rate of 0 Hz is not an RTP clock")]
    ZeroClockRate,
    #[error("capacity {capacity} is below the 2 slots a reordering buffer needs")]
    CapacityTooSmall { capacity: usize },
    #[error("min delay {min:?} is above max delay {max:?}")]
    DelayRange { min: Duration, max: Duration },
    #[error("frame duration must be above zero")]
    ZeroFrame,
}

/// Settings of one jitter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock of the incoming stream, Hz.
    pub clock_rate: u32,
    /// Expected packet duration (`a=ptime`), used to place a lost packet's slot until the
    /// stream's own spacing has been seen.
    pub frame: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Number of slots of the ring: the reordering window, in packets.
    pub capacity: usize,
    /// Largest payload kept, bytes; larger ones are refused.
    pub max_payload: usize,
}

impl JitterConfig {
    /// Defaults for one audio stream: 20 ms frames, 20–120 ms delay (issue 4), 32 slots (640 ms
    /// of 20 ms packets: five times the maximum delay, room for a burst after a stall) and
    /// 1500-byte payloads (an Ethernet MTU; the largest 20 ms Opus frame is 1275 bytes).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(120),
            capacity: 32,
            max_payload: 1500,
        }
    }
}

/// The RTP header fields the buffer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Buffered,
    /// Already buffered; dropped.
    Duplicate,
    /// Its slot was already played or reported missing; dropped.
    TooLate,
    /// Payload above `max_payload`; dropped.
    TooLarge,
    /// Far outside the window; held back as a possible restart (RFC 3550 A.1 probation): if the
    /// next packet follows it, the buffer resyncs, otherwise it was garbage and is forgotten.
    OutOfWindow,
    /// The stream restarted (a second packet confirmed the jump): the buffer was flushed and
    /// re-anchored on this packet.
    Resynced,
}

/// One packet handed to the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub meta: PacketMeta,
    pub payload: &'a [u8],
}

/// What [`JitterBuffer::pop`] has for `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop<'a> {
    Frame(Frame<'a>),
    /// The packet with this sequence number never came and its playout time has passed:
    /// conceal it (Opus PLC, G.711 repetition). Reported once per lost packet.
    Missing {
        seq: u16,
        timestamp: u32,
    },
    /// Nothing due now (silence, or the next frame is not due yet). A gap is only reported as
    /// [`Pop::Missing`] once a later packet proves it: without one, lost packets at the end of a
    /// talkspurt look exactly like DTX silence, and the caller plays silence / comfort noise.
    Empty,
}

/// Counters for stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub pushed: u64,
    pub played: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub late: u64,
    pub too_large: u64,
    pub out_of_window: u64,
    pub resyncs: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    used: bool,
    ext_seq: i64,
    ext_ts: i64,
    payload_type: u8,
    marker: bool,
    len: usize,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    clock_rate: u32,
    default_frame_ticks: i64,
    min_delay: i64,
    max_delay: i64,
    step: i64,
    max_payload: usize,
    slots: Vec<Slot>,
    data: Vec<u8>,
    count: usize,
    /// Set by the first packet; all playout instants are offsets from it.
    epoch: Option<Instant>,
    next_seq: i64,
    highest_seq: i64,
    highest_ts: i64,
    /// Timestamp of the last slot played or reported missing.
    last_ts: Option<i64>,
    frame_ticks: i64,
    base_transit: i64,
    prev_transit: Option<i64>,
    /// RFC 3550 A.8 `jitter`: the estimate J, scaled by 16.
    jitter_q4: i64,
    delay: i64,
    /// RFC 3550 A.1 `bad_seq`: the sequence number that would confirm a restart.
    probation: Option<u16>,
    /// False until the first packet after creation or [`JitterBuffer::reset`].
    synced: bool,
    stats: JitterStats,
}

impl JitterBuffer {
    /// Allocates the ring (`capacity × max_payload` bytes); nothing is allocated afterwards.
    pub fn new(config: JitterConfig) -> Result<Self, JitterError> {
        if config.clock_rate == 0 {
            return Err(JitterError::ZeroClockRate);
        }
        if config.capacity < 2 {
            return Err(JitterError::CapacityTooSmall {
                capacity: config.capacity,
            });
        }
        if config.min_delay > config.max_delay {
            return Err(JitterError::DelayRange {
                min: config.min_delay,
                max: config.max_delay,
            });
        }
        let clock = config.clock_rate;
        let frame = ticks(config.frame, clock);
        if frame <= 0 {
            return Err(JitterError::ZeroFrame);
        }
        let min_delay = ticks(config.min_delay, clock);
        Ok(Self {
            clock_rate: clock,
            default_frame_ticks: frame,
            min_delay,
            max_delay: ticks(config.max_delay, clock),
            step: ticks(ADAPT_STEP, clock).max(1),
            max_payload: config.max_payload,
            slots: vec![Slot::default(); config.capacity],
            data: vec![0; config.capacity * config.max_payload],
            count: 0,
            epoch: None,
            next_seq: 0,
            highest_seq: 0,
            highest_ts: 0,
            last_ts: None,
            frame_ticks: frame,
            base_transit: 0,
            prev_transit: None,
            jitter_q4: 0,
            delay: min_delay,
            probation: None,
            synced: false,
            stats: JitterStats::default(),
        })
    }

    /// Forgets the stream (e.g. when the source SSRC changes): the next push anchors a new one.
    /// The jitter estimate is kept; the network path is likely the same.
    pub fn reset(&mut self) {
        for slot in &mut self.slots {
            slot.used = false;
        }
        self.count = 0;
        self.synced = false;
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The playout delay in use now.
    pub fn delay(&self) -> Duration {
        self.to_duration(self.delay)
    }

    /// The delay the buffer is moving toward.
    pub fn target_delay(&self) -> Duration {
        self.to_duration(self.target())
    }

    /// The RFC 3550 interarrival jitter estimate J.
    pub fn jitter(&self) -> Duration {
        self.to_duration(self.jitter_q4 >> 4)
    }

    /// The same estimate in timestamp units, as RTCP receiver reports carry it (RFC 3550 §6.4.1).
    pub fn jitter_ticks(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Packets buffered.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn to_duration(&self, t: i64) -> Duration {
        let nanos =
            u128::from(t.max(0).unsigned_abs()) * 1_000_000_000 / u128::from(self.clock_rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn target(&self) -> i64 {
        (JITTER_FACTOR * (self.jitter_q4 >> 4)).clamp(self.min_delay, self.max_delay)
    }

    fn index(&self, ext_seq: i64) -> usize {
        // Invariant: `slots` is non-empty (capacity >= 2 checked in `new`).
        ext_seq.rem_euclid(self.slots.len() as i64) as usize
    }

    fn playout(&self, ext_ts: i64) -> Option<Instant> {
        let epoch = self.epoch?;
        let t = ext_ts
            .saturating_add(self.base_transit)
            .saturating_add(self.delay);
        // A timestamp so far ahead that the instant overflows can only be garbage: make it due
        // at once so it leaves the buffer instead of blocking it.
        Some(epoch.checked_add(self.to_duration(t)).unwrap_or(epoch))
    }

    /// Flushes everything and anchors the stream on this packet.
    fn sync(&mut self, meta: &PacketMeta, arrival: i64) {
        for slot in &mut self.slots {
            slot.used = false;
        }
        self.count = 0;
        let seq = i64::from(meta.seq);
        let ts = i64::from(meta.timestamp);
        self.next_seq = seq;
        self.highest_seq = seq;
        self.highest_ts = ts;
        self.last_ts = None;
        self.frame_ticks = self.default_frame_ticks;
        self.base_transit = arrival - ts;
        self.prev_transit = None;
        self.probation = None;
        self.delay = self.target();
    }

    /// Buffers one received packet (header fields in `meta`, payload copied into the ring).
    pub fn push(&mut self, meta: PacketMeta, payload: &[u8], now: Instant) -> Push {
        if payload.len() > self.max_payload {
            self.stats.too_large += 1;
            return Push::TooLarge;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = ticks(now.saturating_duration_since(epoch), self.clock_rate);
        let mut outcome = Push::Buffered;
        if !self.synced {
            self.synced = true;
            self.sync(&meta, arrival);
        }
        self.stats.pushed += 1;

        let delta = i64::from(meta.seq.wrapping_sub(self.highest_seq as u16) as i16);
        let mut ext_seq = self.highest_seq + delta;
        let mut ext_ts =
            self.highest_ts + i64::from(meta.timestamp.wrapping_sub(self.highest_ts as u32) as i32);
        let capacity = self.slots.len() as i64;
        let played = self.last_ts.is_some();

        let out_of_window =
            ext_seq >= self.next_seq + capacity || self.next_seq - ext_seq > MAX_MISORDER;
        if out_of_window {
            if self.probation == Some(meta.seq) {
                self.stats.resyncs += 1;
                self.sync(&meta, arrival);
                (ext_seq, ext_ts) = (self.next_seq, self.highest_ts);
                outcome = Push::Resynced;
            } else {
                self.probation = Some(meta.seq.wrapping_add(1));
                self.stats.out_of_window += 1;
                return Push::OutOfWindow;
            }
        } else if ext_seq < self.next_seq {
            // Before the first frame plays, an earlier packet may still take the lead (the
            // first arrival need not be the first sent), as long as the window holds both.
            if played || self.highest_seq - ext_seq >= capacity {
                self.stats.late += 1;
                return Push::TooLate;
            }
            self.next_seq = ext_seq;
        }
        self.probation = None;

        let idx = self.index(ext_seq);
        if self.slots[idx].used {
            self.stats.duplicates += 1;
            return Push::Duplicate;
        }
        let talkspurt_start = self.count == 0 && meta.marker && played;
        let start = idx * self.max_payload;
        self.data[start..start + payload.len()].copy_from_slice(payload);
        self.slots[idx] = Slot {
            used: true,
            ext_seq,
            ext_ts,
            payload_type: meta.payload_type,
            marker: meta.marker,
            len: payload.len(),
        };
        self.count += 1;
        if ext_seq > self.highest_seq {
            self.highest_seq = ext_seq;
            self.highest_ts = ext_ts;
        }

        // RFC 3550 A.8 interarrival jitter.
        let transit = arrival - ext_ts;
        if let Some(prev) = self.prev_transit {
            let d = (transit - prev).abs();
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.prev_transit = Some(transit);
        if talkspurt_start {
            // New talkspurt after silence: re-anchor (absorbs clock drift accumulated over the
            // call) and take the target delay at once; the silence hides the shift.
            self.base_transit = transit;
            self.delay = self.target();
        }
        outcome
    }

    /// The next frame, loss or nothing, for `now`. Call until it returns [`Pop::Empty`].
    pub fn pop(&mut self, now: Instant) -> Pop<'_> {
        if self.count == 0 {
            return Pop::Empty;
        }
        let idx = self.index(self.next_seq);
        let slot = self.slots[idx];
        if slot.used && slot.ext_seq == self.next_seq {
            if self.playout(slot.ext_ts).is_none_or(|at| now < at) {
                return Pop::Empty;
            }
            if let Some(last) = self.last_ts {
                // Learn the packet spacing from consecutive talk packets (not across silence,
                // which starts with a marker, and not beyond 120 ms, Opus's longest packet).
                let d = slot.ext_ts - last;
                if !slot.marker && d > 0 && d <= ticks(Duration::from_millis(120), self.clock_rate)
                {
                    self.frame_ticks = d;
                }
            }
            self.slots[idx].used = false;
            self.count -= 1;
            self.next_seq += 1;
            self.last_ts = Some(slot.ext_ts);
            self.stats.played += 1;
            let target = self.target();
            self.delay += (target - self.delay).clamp(-self.step, self.step);
            let start = idx * self.max_payload;
            return Pop::Frame(Frame {
                meta: PacketMeta {
                    seq: slot.ext_seq as u16,
                    timestamp: slot.ext_ts as u32,
                    payload_type: slot.payload_type,
                    marker: slot.marker,
                },
                payload: &self.data[start..start + slot.len],
            });
        }
        let expected = self.expected_ts();
        if self.playout(expected).is_none_or(|at| now < at) {
            return Pop::Empty;
        }
        let seq = self.next_seq as u16;
        self.next_seq += 1;
        self.last_ts = Some(expected);
        self.stats.missing += 1;
        Pop::Missing {
            seq,
            timestamp: expected as u32,
        }
    }

    /// Timestamp of the slot at `next_seq` when its packet is absent.
    fn expected_ts(&self) -> i64 {
        match self.last_ts {
            Some(last) => last + self.frame_ticks,
            // Not reachable in practice (`next_seq` always holds a packet until one plays);
            // the highest packet's slot is a safe, never-early choice.
            None => self.highest_ts,
        }
    }

    /// When the next [`JitterBuffer::pop`] can return something other than `Empty`; `None`
    /// while nothing is buffered (the next push changes that).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.count == 0 {
            return None;
        }
        let slot = self.slots[self.index(self.next_seq)];
        if slot.used && slot.ext_seq == self.next_seq {
            self.playout(slot.ext_ts)
        } else {
            self.playout(self.expected_ts())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn meta(seq: u16, timestamp: u32) -> PacketMeta {
        PacketMeta {
            seq,
            timestamp,
            payload_type: 0,
            marker: false,
        }
    }

    fn jb() -> JitterBuffer {
        JitterBuffer::new(JitterConfig::new(8000)).unwrap()
    }

    /// What a driver does: pop everything due at `now`, as (seq or missing marker) values.
    #[derive(Debug, PartialEq, Eq)]
    enum Out {
        F(u16),
        M(u16),
    }

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        loop {
            match jb.pop(now) {
                Pop::Frame(f) => {
                    assert_eq!(f.payload, &[f.meta.seq as u8; 3]);
                    out.push(Out::F(f.meta.seq));
                }
                Pop::Missing { seq, .. } => out.push(Out::M(seq)),
                Pop::Empty => return out,
            }
        }
    }

    fn push(jb: &mut JitterBuffer, seq: u16, ts: u32, now: Instant) -> Push {
        jb.push(meta(seq, ts), &[seq as u8; 3], now)
    }

    #[test]
    fn in_order_stream_plays_after_the_target_delay() {
        let mut jb = jb();
        let t0 = Instant::now();
        assert_eq!(push(&mut jb, 100, 8000, t0), Push::Buffered);
        assert_eq!(jb.poll_timeout(), Some(t0 + 20 * MS));
        assert_eq!(drain(&mut jb, t0 + 19 * MS), vec![]);
        assert_eq!(drain(&mut jb, t0 + 20 * MS), vec![Out::F(100)]);
        for i in 1..50u16 {
            let now = t0 + u32::from(i) * 20 * MS;
            push(&mut jb, 100 + i, 8000 + 160 * u32::from(i), now);
            assert_eq!(drain(&mut jb, now), vec![]);
            assert_eq!(jb.poll_timeout(), Some(now + 20 * MS));
            assert_eq!(drain(&mut jb, now + 20 * MS), vec![Out::F(100 + i)]);
        }
        assert_eq!(jb.poll_timeout(), None);
        assert_eq!(jb.stats().played, 50);
    }

    #[test]
    fn reordered_packets_come_out_in_order_and_duplicates_drop() {
        let mut jb = jb();
        let t0 = Instant::now();
        // 0, 2, 1 (reordered), 1 again (duplicate), 3; all within the delay.
        assert_eq!(push(&mut jb, 0, 0, t0), Push::Buffered);
        assert_eq!(push(&mut jb, 2, 320, t0 + 5 * MS), Push::Buffered);
        assert_eq!(push(&mut jb, 1, 160, t0 + 6 * MS), Push::Buffered);
        assert_eq!(push(&mut jb, 1, 160, t0 + 7 * MS), Push::Duplicate);
        assert_eq!(push(&mut jb, 3, 480, t0 + 8 * MS), Push::Buffered);
        assert_eq!(
            drain(&mut jb, t0 + 100 * MS),
            vec![Out::F(0), Out::F(1), Out::F(2), Out::F(3)]
        );
        assert_eq!(push(&mut jb, 2, 320, t0 + 101 * MS), Push::TooLate);
        assert_eq!(jb.stats().duplicates, 1);
        // A packet that overtook the very first one still leads.
        let mut jb = JitterBuffer::new(JitterConfig::new(8000)).unwrap();
        push(&mut jb, 11, 160, t0);
        push(&mut jb, 10, 0, t0 + MS);
        assert_eq!(drain(&mut jb, t0 + 100 * MS), vec![Out::F(10), Out::F(11)]);
    }

    #[test]
    fn a_lost_packet_is_missing_exactly_once() {
        let mut jb = jb();
        let t0 = Instant::now();
        push(&mut jb, 65534, 0, t0);
        // 65535 is lost; the sequence wraps.
        push(&mut jb, 0, 320, t0 + 40 * MS);
        push(&mut jb, 1, 480, t0 + 60 * MS);
        assert_eq!(drain(&mut jb, t0 + 20 * MS), vec![Out::F(65534)]);
        assert_eq!(jb.poll_timeout(), Some(t0 + 40 * MS));
        assert_eq!(drain(&mut jb, t0 + 40 * MS), vec![Out::M(65535)]);
        assert_eq!(drain(&mut jb, t0 + 60 * MS), vec![Out::F(0)]);
        assert_eq!(push(&mut jb, 65535, 160, t0 + 61 * MS), Push::TooLate);
        assert_eq!(drain(&mut jb, t0 + 80 * MS), vec![Out::F(1)]);
        assert_eq!(drain(&mut jb, t0 + 500 * MS), vec![]);
        assert_eq!(jb.stats().missing, 1);
    }

    #[test]
    fn silence_keeps_timestamps_and_reports_no_loss() {
        let mut jb = jb();
        let t0 = Instant::now();
        push(&mut jb, 1, 0, t0);
        assert_eq!(drain(&mut jb, t0 + 20 * MS), vec![Out::F(1)]);
        // DTX: one second of silence, then the next sequence number with a marker.
        let t1 = t0 + 1000 * MS;
        let m = PacketMeta {
            marker: true,
            ..meta(2, 8000)
        };
        assert_eq!(jb.push(m, &[2; 3], t1), Push::Buffered);
        assert_eq!(drain(&mut jb, t1 + 19 * MS), vec![]);
        match jb.pop(t1 + 20 * MS) {
            Pop::Frame(f) => assert_eq!(
                (f.meta.seq, f.meta.timestamp, f.meta.marker),
                (2, 8000, true)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(jb.stats().missing, 0);
    }

    #[test]
    fn depth_grows_with_jitter_up_to_120_ms_and_shrinks_back() {
        let mut jb = jb();
        let t0 = Instant::now();
        let mut seq = 0u16;
        let mut feed = |jb: &mut JitterBuffer, n: u32, jitter_ms: u32| {
            for _ in 0..n {
                let send = u32::from(seq) * 20;
                // Alternating extra delay: every other packet is late by `jitter_ms`.
                let extra = if seq.is_multiple_of(2) { 0 } else { jitter_ms };
                let now = t0 + (send + extra) * MS;
                push(jb, seq, u32::from(seq) * 160, now);
                let _ = drain(jb, now);
                seq = seq.wrapping_add(1);
            }
        };
        feed(&mut jb, 50, 0);
        assert_eq!(jb.delay(), 20 * MS);
        feed(&mut jb, 400, 100);
        assert_eq!(jb.target_delay(), 120 * MS);
        assert_eq!(jb.delay(), 120 * MS);
        feed(&mut jb, 400, 0);
        assert_eq!(jb.target_delay(), 20 * MS);
        assert_eq!(jb.delay(), 20 * MS);
        assert!(jb.stats().played > 800);
    }

    #[test]
    fn garbage_and_huge_jumps_resync_without_panicking() {
        let mut jb = jb();
        let t0 = Instant::now();
        for i in 0..5u16 {
            push(&mut jb, i, u32::from(i) * 160, t0 + u32::from(i) * 20 * MS);
        }
        // One stray packet far away: held on probation, the stream goes on undisturbed.
        assert_eq!(push(&mut jb, 30_000, 7, t0 + 90 * MS), Push::OutOfWindow);
        assert_eq!(push(&mut jb, 5, 800, t0 + 100 * MS), Push::Buffered);
        // A real restart: two consecutive packets far away.
        assert_eq!(
            push(&mut jb, 40_000, 1_000_000, t0 + 120 * MS),
            Push::OutOfWindow
        );
        assert_eq!(
            push(&mut jb, 40_001, 1_000_160, t0 + 140 * MS),
            Push::Resynced
        );
        assert_eq!(
            push(&mut jb, 40_002, 1_000_320, t0 + 160 * MS),
            Push::Buffered
        );
        assert_eq!(
            drain(&mut jb, t0 + 200 * MS),
            vec![Out::F(40_001), Out::F(40_002)]
        );
        // Random garbage: any sequence, any timestamp, oversized payloads; never a panic.
        let mut x = 0x1234_5678u32;
        for i in 0..10_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let m = meta(x as u16, x.rotate_left(7));
            let len = (x % 1600) as usize;
            let _ = jb.push(m, &vec![0u8; len], t0 + (200 + i) * MS);
            let _ = jb.pop(t0 + (200 + i) * MS);
            let _ = jb.poll_timeout();
        }
        assert!(jb.len() <= 32);
        jb.reset();
        assert!(jb.is_empty());
        let t9 = t0 + 20_000 * MS;
        assert_eq!(push(&mut jb, 7, 70, t9), Push::Buffered);
        // The garbage left a high jitter estimate: the new stream starts at the delay it implies.
        let due = t9 + jb.delay();
        assert_eq!(jb.poll_timeout(), Some(due));
        assert_eq!(drain(&mut jb, due), vec![Out::F(7)]);
        assert!(jb.stats().too_large > 0);
        assert!(
            JitterBuffer::new(JitterConfig {
                capacity: 1,
                ..JitterConfig::new(8000)
            })
            .is_err()
        );
        assert!(JitterBuffer::new(JitterConfig::new(0)).is_err());
    }
}
