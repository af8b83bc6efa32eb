//! Plain RTP on the wire: a zero-copy, bounds-checked view of RTP packets (RFC 3550 §5.1), in-place
//! header writes, the per-leg [`Rewriter`] used for codec passthrough (issue 4, item 3), and the
//! per-leg RTCP [`RtcpSession`] (SR/RR + SDES CNAME, RFC 3550 §6).
//!
//! Owns: parsing and rewriting of RTP headers in caller-owned buffers, RTCP statistics and
//! reports. Must not touch sockets, SRTP, tasks or the clock: callers pass `now` (and the wall
//! time an SR needs). Nothing here allocates per packet, and no input byte sequence can make it
//! panic — a packet that does not parse is an [`RtpError`].

use std::time::{Duration, Instant};

use thiserror::Error;

/// The only RTP version on the wire (RFC 3550 §5.1, `V`).
pub const RTP_VERSION: u8 = 2;
/// Fixed header length without CSRCs or extension (RFC 3550 §5.1).
pub const FIXED_HEADER_LEN: usize = 12;

/// A synchronisation source identifier (RFC 3550 §3, §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl Ssrc {
    /// A fresh random SSRC, as RFC 3550 §8 requires for each stream we originate.
    pub fn random() -> Self {
        Ssrc(rand::random())
    }
}

/// Why a byte buffer is not an RTP packet we accept.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    #[error("{len} bytes is shorter than the 12-byte RTP fixed header")]
    TooShort { len: usize },
    #[error("RTP version {version}, expected 2")]
    BadVersion { version: u8 },
    #[error("header needs {needed} bytes (CSRCs/extension) but the packet has {len}")]
    HeaderOverrun { needed: usize, len: usize },
    #[error("padding count {padding} does not fit the {available} bytes after the header")]
    BadPadding { padding: usize, available: usize },
    #[error("a clock rate of 0 Hz is not an RTP clock")]
    ZeroClockRate,
}

/// Byte offsets of the parsed layout; shared by the shared and mutable views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Offset of the payload (after CSRCs and the header extension).
    header_len: usize,
    /// End of the payload (before padding).
    payload_end: usize,
}

fn layout(buf: &[u8]) -> Result<Layout, RtpError> {
    let len = buf.len();
    if len < FIXED_HEADER_LEN {
        return Err(RtpError::TooShort { len });
    }
    let version = buf[0] >> 6;
    if version != RTP_VERSION {
        return Err(RtpError::BadVersion { version });
    }
    let cc = usize::from(buf[0] & 0x0f);
    let mut header_len = FIXED_HEADER_LEN + 4 * cc;
    if header_len > len {
        return Err(RtpError::HeaderOverrun {
            needed: header_len,
            len,
        });
    }
    if buf[0] & 0x10 != 0 {
        // RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words, then the data.
        if header_len + 4 > len {
            return Err(RtpError::HeaderOverrun {
                needed: header_len + 4,
                len,
            });
        }
        let words = usize::from(u16::from_be_bytes([
            buf[header_len + 2],
            buf[header_len + 3],
        ]));
        header_len += 4 + 4 * words;
        if header_len > len {
            return Err(RtpError::HeaderOverrun {
                needed: header_len,
                len,
            });
        }
    }
    let mut payload_end = len;
    if buf[0] & 0x20 != 0 {
        // RFC 3550 §5.1 (P): the last octet counts the padding octets, itself included.
        let padding = usize::from(buf[len - 1]);
        let available = len - header_len;
        if padding == 0 || padding > available {
            return Err(RtpError::BadPadding { padding, available });
        }
        payload_end = len - padding;
    }
    Ok(Layout {
        header_len,
        payload_end,
    })
}

/// A validated, read-only view of one RTP packet. All accessors are infallible: bounds were
/// checked once in [`RtpPacket::parse`].
#[derive(Debug, Clone, Copy)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    layout: Layout,
}

impl<'a> RtpPacket<'a> {
    /// Validates the header layout (RFC 3550 §5.1, §5.3.1) without copying.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let layout = layout(buf)?;
        Ok(Self { buf, layout })
    }
    pub fn version(&self) -> u8 {
        self.buf[0] >> 6
    }
    pub fn has_padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }
    pub fn has_extension(&self) -> bool {
        self.buf[0] & 0x10 != 0
    }
    pub fn csrc_count(&self) -> usize {
        usize::from(self.buf[0] & 0x0f)
    }
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(u32::from_be_bytes([
            self.buf[8],
            self.buf[9],
            self.buf[10],
            self.buf[11],
        ]))
    }
    /// The `index`-th contributing source, if present.
    pub fn csrc(&self, index: usize) -> Option<Ssrc> {
        if index >= self.csrc_count() {
            return None;
        }
        let at = FIXED_HEADER_LEN + 4 * index;
        Some(Ssrc(u32::from_be_bytes([
            self.buf[at],
            self.buf[at + 1],
            self.buf[at + 2],
            self.buf[at + 3],
        ])))
    }
    /// The header extension (RFC 3550 §5.3.1) as `(profile, data)`, if the X bit is set.
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        if !self.has_extension() {
            return None;
        }
        let at = FIXED_HEADER_LEN + 4 * self.csrc_count();
        let profile = u16::from_be_bytes([self.buf[at], self.buf[at + 1]]);
        Some((profile, &self.buf[at + 4..self.layout.header_len]))
    }
    /// Header length including CSRCs and extension: where the payload starts.
    pub fn header_len(&self) -> usize {
        self.layout.header_len
    }
    /// The payload, without header and padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.layout.header_len..self.layout.payload_end]
    }
    /// The whole packet as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// A validated, writable view of one RTP packet: header fields are rewritten in place, so a
/// relayed packet never leaves the receive buffer.
#[derive(Debug)]
pub struct RtpPacketMut<'a> {
    buf: &'a mut [u8],
    layout: Layout,
}

impl<'a> RtpPacketMut<'a> {
    pub fn parse(buf: &'a mut [u8]) -> Result<Self, RtpError> {
        let layout = layout(buf)?;
        Ok(Self { buf, layout })
    }
    /// A read-only view of the same bytes.
    pub fn view(&self) -> RtpPacket<'_> {
        RtpPacket {
            buf: self.buf,
            layout: self.layout,
        }
    }
    pub fn set_marker(&mut self, marker: bool) {
        self.buf[1] = (self.buf[1] & 0x7f) | if marker { 0x80 } else { 0 };
    }
    /// Sets the 7-bit payload type; the high bit of `pt` is ignored (it is the marker's).
    pub fn set_payload_type(&mut self, pt: u8) {
        self.buf[1] = (self.buf[1] & 0x80) | (pt & 0x7f);
    }
    pub fn set_sequence_number(&mut self, seq: u16) {
        self.buf[2..4].copy_from_slice(&seq.to_be_bytes());
    }
    pub fn set_timestamp(&mut self, ts: u32) {
        self.buf[4..8].copy_from_slice(&ts.to_be_bytes());
    }
    pub fn set_ssrc(&mut self, ssrc: Ssrc) {
        self.buf[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
    }
    /// The payload, writable (e.g. to rewrite a telephone-event duration).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.layout.header_len..self.layout.payload_end]
    }
}

/// Writes a minimal RTP header (no CSRC, no extension, no padding) into `buf[..12]`; returns
/// [`RtpError::TooShort`] if `buf` cannot hold it. For packets we originate (tests, benches,
/// the transcoder's output).
pub fn write_header(
    buf: &mut [u8],
    marker: bool,
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: Ssrc,
) -> Result<(), RtpError> {
    if buf.len() < FIXED_HEADER_LEN {
        return Err(RtpError::TooShort { len: buf.len() });
    }
    buf[0] = RTP_VERSION << 6;
    buf[1] = (payload_type & 0x7f) | if marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
    Ok(())
}

/// Payload-type numbers of one leg mapped to the other's (`a=rtpmap` numbers differ per leg: a
/// SIP phone's telephone-event may be 101 while Jitsi uses 126). A fixed 128-entry table, so
/// the lookup per packet is an index.
#[derive(Debug, Clone)]
pub struct PtMap {
    table: [Option<u8>; 128],
}

impl Default for PtMap {
    fn default() -> Self {
        Self::new()
    }
}

impl PtMap {
    /// An empty map: every payload type is unmapped (and dropped by the rewriter).
    pub fn new() -> Self {
        Self { table: [None; 128] }
    }
    /// Maps `from` (source leg) to `to` (our outgoing leg). Both are 7-bit; higher bits are
    /// masked off.
    pub fn insert(&mut self, from: u8, to: u8) -> &mut Self {
        self.table[usize::from(from & 0x7f)] = Some(to & 0x7f);
        self
    }
    pub fn get(&self, from: u8) -> Option<u8> {
        self.table[usize::from(from & 0x7f)]
    }
}

/// Settings of one outgoing leg's [`Rewriter`].
#[derive(Debug, Clone)]
pub struct RewriterConfig {
    /// Our SSRC on the outgoing leg (random per leg, RFC 3550 §8).
    pub ssrc: Ssrc,
    /// First outgoing sequence number (random, RFC 3550 §5.1, to make known-plaintext attacks on
    /// SRTP harder).
    pub initial_seq: u16,
    /// First outgoing timestamp (random, RFC 3550 §5.1).
    pub initial_timestamp: u32,
    /// RTP clock of the source leg's stream, Hz.
    pub in_clock: u32,
    /// RTP clock of the outgoing leg's stream, Hz (equal to `in_clock` for PCMU 8000↔8000).
    pub out_clock: u32,
    pub pt_map: PtMap,
}

impl RewriterConfig {
    /// Random SSRC, sequence number and timestamp, as RFC 3550 asks.
    pub fn random(in_clock: u32, out_clock: u32, pt_map: PtMap) -> Self {
        Self {
            ssrc: Ssrc::random(),
            initial_seq: rand::random(),
            initial_timestamp: rand::random(),
            in_clock,
            out_clock,
            pt_map,
        }
    }
}

/// What the rewriter did with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// The header was rewritten in place; send the packet on the outgoing leg.
    Forward {
        seq: u16,
        timestamp: u32,
        payload_type: u8,
        marker: bool,
    },
    /// A copy of a packet already forwarded (same source SSRC and sequence number). Its header
    /// was rewritten exactly like the original's; audio drops it, the telephone-event relay
    /// forwards same-sequence retransmissions of an event's end packet (RFC 4733 §2.5.1.4).
    Duplicate,
    /// The source's payload type has no mapping to the outgoing leg; drop it.
    UnmappedPayloadType { payload_type: u8 },
    /// A late packet from the SSRC the source used before its last change; drop it.
    StaleSource,
    /// A sequence jump beyond `MAX_DROPOUT`/`MAX_MISORDER` within one SSRC: dropped, and the
    /// output re-anchors only if the next packet follows it (RFC 3550 A.1 probation), so one
    /// stray packet cannot put a false gap into the output.
    Probation,
}

/// Packet and byte counters of one rewriter (for stats and the "did not decode" check).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriterStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub duplicates: u64,
    pub unmapped: u64,
    pub malformed: u64,
    /// SSRC changes and sequence-number restarts that re-anchored the output.
    pub rebases: u64,
    /// Late packets of a replaced source SSRC, dropped.
    pub stale: u64,
    /// Packets held back as a possible restart (RFC 3550 A.1 probation), dropped.
    pub probation: u64,
}

/// A forward jump larger than this is taken as a restart of the source, not as loss
/// (RFC 3550 A.1 `MAX_DROPOUT`).
const MAX_DROPOUT: i64 = 3000;
/// A backward jump larger than this is taken as a restart, not as reordering (RFC 3550 A.1
/// `MAX_MISORDER`).
const MAX_MISORDER: i64 = 100;
/// How many recent sequence numbers are remembered to drop duplicates: one bit each in a `u64`.
/// 64 packets is 1.28 s of 20 ms audio, longer than any reordering we keep (MAX_MISORDER aside).
const DUP_WINDOW: i64 = 64;

/// State of the source stream we currently relay.
#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: Ssrc,
    /// Highest extended sequence number seen (RFC 3550 A.1 `cycles + max_seq`).
    highest_seq: i64,
    /// Bit `i` set: `highest_seq - i` was forwarded.
    seen: u64,
    /// Output extended sequence = input extended sequence + `seq_offset`.
    seq_offset: i64,
    /// Extended timestamp of the highest packet (unwrapped through i32 differences).
    highest_ts: i64,
    /// Timestamp anchor: `in_ts_base` maps to `out_ts_base` (both unwrapped).
    in_ts_base: i64,
    out_ts_base: i64,
}

/// Rewrites a source leg's RTP packets into our stream on the outgoing leg: our SSRC, one
/// continuous sequence space, mapped timestamps and payload types. Pure: `now` comes from the
/// caller and is only used to keep timestamps advancing across a source restart.
///
/// Sequence numbers: within one source the offset is constant, so the source's gaps and
/// reordering reach the far end unchanged (loss stays loss, RFC 3550 §6.4.1). When the source
/// SSRC changes, or its sequence jumps by more than `MAX_DROPOUT`/`MAX_MISORDER` and the next
/// packet confirms the jump (RFC 3550 A.1), the output continues at `highest + 1` and the
/// timestamp advances by the wall time elapsed, so the far end sees one continuous stream; that
/// first packet carries the marker bit so the far end's jitter buffer re-anchors (RFC 3551
/// §4.1). Late packets of the replaced SSRC are dropped ([`Rewrite::StaleSource`]).
///
/// One clock ratio per rewriter: every payload type relayed through it (audio and
/// telephone-event alike) must use the leg's one RTP clock, as RFC 4733 §2.1 expects of
/// telephone-event sharing a stream with audio; [`DtmfRelay`](super::dtmf::DtmfRelay) scales the
/// event durations with the same ratio.
#[derive(Debug, Clone)]
pub struct Rewriter {
    ssrc: Ssrc,
    /// Reduced clock ratio out/in.
    num: i64,
    den: i64,
    pt_map: PtMap,
    source: Option<Source>,
    /// The SSRC the source had before its last change.
    previous_ssrc: Option<Ssrc>,
    /// RFC 3550 A.1 `bad_seq`: the sequence number that would confirm a restart.
    probation: Option<u16>,
    /// Highest output extended sequence number and its timestamp, carried across sources.
    out_highest_seq: i64,
    out_highest_ts: i64,
    last_arrival: Option<Instant>,
    out_clock: u32,
    stats: RewriterStats,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rewriter {
    pub fn new(config: RewriterConfig) -> Result<Self, RtpError> {
        if config.in_clock == 0 || config.out_clock == 0 {
            return Err(RtpError::ZeroClockRate);
        }
        let g = gcd(u64::from(config.in_clock), u64::from(config.out_clock));
        Ok(Self {
            ssrc: config.ssrc,
            num: (u64::from(config.out_clock) / g) as i64,
            den: (u64::from(config.in_clock) / g) as i64,
            pt_map: config.pt_map,
            source: None,
            previous_ssrc: None,
            probation: None,
            // The first packet gets `out_highest_seq + 1`.
            out_highest_seq: i64::from(config.initial_seq) - 1,
            out_highest_ts: i64::from(config.initial_timestamp),
            last_arrival: None,
            out_clock: config.out_clock,
            stats: RewriterStats::default(),
        })
    }

    /// Our SSRC on the outgoing leg.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    pub fn stats(&self) -> RewriterStats {
        self.stats
    }

    /// Rewrites `buf` (one received RTP packet, SRTP already removed) in place for the outgoing
    /// leg. Errors only for bytes that are not RTP; the buffer is then untouched.
    pub fn rewrite(&mut self, buf: &mut [u8], now: Instant) -> Result<Rewrite, RtpError> {
        let mut pkt = match RtpPacketMut::parse(buf) {
            Ok(pkt) => pkt,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        let len = pkt.buf.len() as u64;
        self.stats.packets_in += 1;
        self.stats.bytes_in += len;
        let view = pkt.view();
        let (in_ssrc, in_seq, in_ts, in_pt, marker) = (
            view.ssrc(),
            view.sequence_number(),
            view.timestamp(),
            view.payload_type(),
            view.marker(),
        );
        let Some(out_pt) = self.pt_map.get(in_pt) else {
            self.stats.unmapped += 1;
            return Ok(Rewrite::UnmappedPayloadType {
                payload_type: in_pt,
            });
        };

        if self.previous_ssrc == Some(in_ssrc) {
            // A late packet of the source we already switched away from: forwarding it would
            // flip the output back and forth between two anchors.
            self.stats.stale += 1;
            return Ok(Rewrite::StaleSource);
        }

        let mut rebased = false;
        let (ext_seq, ext_ts) = match &self.source {
            Some(src) if src.ssrc == in_ssrc => {
                let delta = i64::from(in_seq.wrapping_sub(src.highest_seq as u16) as i16);
                if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
                    if self.probation != Some(in_seq) {
                        self.probation = Some(in_seq.wrapping_add(1));
                        self.stats.probation += 1;
                        return Ok(Rewrite::Probation);
                    }
                    rebased = true;
                    (i64::from(in_seq), i64::from(in_ts))
                } else {
                    let ts_delta = i64::from(in_ts.wrapping_sub(src.highest_ts as u32) as i32);
                    (src.highest_seq + delta, src.highest_ts + ts_delta)
                }
            }
            _ => {
                rebased = true;
                (i64::from(in_seq), i64::from(in_ts))
            }
        };

        self.probation = None;
        if rebased {
            let out_ts = match (self.source.is_some(), self.last_arrival) {
                (true, Some(last)) => {
                    // Keep the far end's clock running: advance by the wall time since the
                    // last packet, at least one tick so the timestamp never repeats.
                    let elapsed = now.saturating_duration_since(last);
                    self.out_highest_ts + ticks(elapsed, self.out_clock).max(1)
                }
                // The very first packet starts at the configured initial timestamp.
                _ => self.out_highest_ts,
            };
            if let Some(old) = &self.source {
                self.stats.rebases += 1;
                if old.ssrc != in_ssrc {
                    self.previous_ssrc = Some(old.ssrc);
                }
            }
            self.source = Some(Source {
                ssrc: in_ssrc,
                highest_seq: ext_seq - 1,
                seen: 0,
                seq_offset: self.out_highest_seq + 1 - ext_seq,
                highest_ts: ext_ts,
                in_ts_base: ext_ts,
                out_ts_base: out_ts,
            });
        }
        // Invariant: `source` was set above if it was missing or stale.
        let Some(src) = self.source.as_mut() else {
            return Ok(Rewrite::StaleSource);
        };

        // Duplicate detection over the last DUP_WINDOW sequence numbers.
        let behind = src.highest_seq - ext_seq;
        let mut duplicate = false;
        if behind >= 0 {
            if behind < DUP_WINDOW {
                let bit = 1u64 << behind;
                duplicate = src.seen & bit != 0;
                src.seen |= bit;
            }
        } else {
            let ahead = -behind;
            src.seen = if ahead >= DUP_WINDOW {
                0
            } else {
                src.seen << ahead
            } | 1;
            src.highest_seq = ext_seq;
            src.highest_ts = ext_ts;
        }

        let out_seq_ext = ext_seq + src.seq_offset;
        let out_ts_ext =
            src.out_ts_base + ((ext_ts - src.in_ts_base) * self.num).div_euclid(self.den);
        if !duplicate && out_seq_ext > self.out_highest_seq {
            self.out_highest_seq = out_seq_ext;
            self.out_highest_ts = out_ts_ext;
            self.last_arrival = Some(now);
        }

        let out_seq = out_seq_ext as u16;
        let out_ts = out_ts_ext as u32;
        let out_marker = marker || rebased;
        pkt.set_ssrc(self.ssrc);
        pkt.set_sequence_number(out_seq);
        pkt.set_timestamp(out_ts);
        pkt.set_payload_type(out_pt);
        pkt.set_marker(out_marker);
        if duplicate {
            self.stats.duplicates += 1;
            return Ok(Rewrite::Duplicate);
        }
        self.stats.packets_out += 1;
        self.stats.bytes_out += len;
        Ok(Rewrite::Forward {
            seq: out_seq,
            timestamp: out_ts,
            payload_type: out_pt,
            marker: out_marker,
        })
    }
}

/// `elapsed` in ticks of a `clock_hz` clock, saturating.
pub fn ticks(elapsed: Duration, clock_hz: u32) -> i64 {
    let t = elapsed.as_nanos() * u128::from(clock_hz) / 1_000_000_000;
    i64::try_from(t).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// RTCP per leg (RFC 3550 §6): receiver statistics, SR/RR + SDES CNAME generation, and reading
// the peer's SR/RR for round-trip time and the loss it sees. Reports are written into a caller
// buffer; statistics updates per packet are a few integer operations.
// ---------------------------------------------------------------------------------------------

/// RTCP packet types (RFC 3550 §12.1).
pub const RTCP_SR: u8 = 200;
pub const RTCP_RR: u8 = 201;
pub const RTCP_SDES: u8 = 202;
/// SDES item CNAME (RFC 3550 §6.5.1).
const SDES_CNAME: u8 = 1;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970), RFC 868 / RFC 3550 §4.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// RFC 3550 §6.2: the minimum report interval is 5 s (the bandwidth of one voice call never
/// lets the computed interval exceed it), randomised over [0.5, 1.5] × to avoid synchronisation.
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Longest CNAME we send: SDES items carry an 8-bit length (RFC 3550 §6.5).
pub const MAX_CNAME: usize = 255;
/// Report block length (RFC 3550 §6.4.1).
const REPORT_BLOCK_LEN: usize = 24;

/// Is this datagram RTCP rather than RTP? On an rtcp-mux port RTCP packet types 192–223 land on
/// RTP payload types 64–95, which RTP must not use (RFC 5761 §4).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf[0] >> 6 == RTP_VERSION && (192..=223).contains(&buf[1])
}

/// `t` as a 64-bit NTP timestamp (RFC 3550 §4).
pub fn ntp_time(t: std::time::SystemTime) -> u64 {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A duration in units of 1/65536 s (LSR/DLSR, RFC 3550 §6.4.1).
fn to_q16(d: Duration) -> u32 {
    u32::try_from(d.as_nanos() * 65_536 / 1_000_000_000).unwrap_or(u32::MAX)
}

fn from_q16(v: u32) -> Duration {
    Duration::from_nanos(u64::from(v) * 1_000_000_000 / 65_536)
}

/// One RFC 3550 §6.4.1 report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: Ssrc,
    pub fraction_lost: u8,
    /// 24-bit signed on the wire (duplicates can make it negative).
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0xff_ffff;
        out[4..8].copy_from_slice(&((u32::from(self.fraction_lost) << 24) | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.extended_highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }

    fn parse(b: &[u8]) -> Self {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let w1 = word(4);
        // Sign-extend the 24-bit cumulative loss.
        let lost = ((w1 << 8) as i32) >> 8;
        Self {
            ssrc: Ssrc(word(0)),
            fraction_lost: (w1 >> 24) as u8,
            cumulative_lost: lost,
            extended_highest_seq: word(8),
            jitter: word(12),
            last_sr: word(16),
            delay_since_last_sr: word(20),
        }
    }
}

/// Reception statistics of the source we receive on one leg (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone)]
struct Reception {
    ssrc: Ssrc,
    clock: u32,
    epoch: Instant,
    base_seq: i64,
    max_seq: i64,
    received: u64,
    expected_prior: i64,
    received_prior: u64,
    transit: Option<i64>,
    jitter_q4: i64,
    /// Middle 32 bits of the peer's last SR NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl Reception {
    fn new(ssrc: Ssrc, seq: u16, clock: u32, now: Instant) -> Self {
        Self {
            ssrc,
            clock,
            epoch: now,
            base_seq: i64::from(seq),
            max_seq: i64::from(seq) - 1,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
            last_sr: None,
        }
    }

    fn on_packet(&mut self, seq: u16, ts: u32, now: Instant) {
        let delta = i64::from(seq.wrapping_sub(self.max_seq as u16) as i16);
        if delta > 0 {
            self.max_seq += delta;
        }
        self.received += 1;
        // RFC 3550 A.8; the transit is kept modulo 2^32 like the timestamp itself.
        let arrival = ticks(now.saturating_duration_since(self.epoch), self.clock);
        let transit = arrival.wrapping_sub(i64::from(ts)) as u32;
        if let Some(prev) = self.transit {
            let d = i64::from((transit.wrapping_sub(prev as u32) as i32).unsigned_abs());
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(i64::from(transit));
    }

    fn block(&mut self, now: Instant) -> ReportBlock {
        // RFC 3550 A.3.
        let expected = self.max_seq - self.base_seq + 1;
        let lost = expected - self.received as i64;
        let expected_interval = expected - self.expected_prior;
        self.expected_prior = expected;
        let received_interval = self.received - self.received_prior;
        self.received_prior = self.received;
        let lost_interval = expected_interval - received_interval as i64;
        let fraction = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, to_q16(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost: fraction,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7f_ffff) as i32,
            extended_highest_seq: self.max_seq as u32,
            jitter: u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX),
            last_sr: lsr,
            delay_since_last_sr: dlsr,
        }
    }
}

/// What the peer told us in its last report about the stream we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteReport {
    pub block: ReportBlock,
    /// Round-trip time (RFC 3550 §6.4.1: A − LSR − DLSR), when the block refers to our SR.
    pub rtt: Option<Duration>,
}

/// RTCP of one leg: feed it every RTP packet sent and received and every RTCP packet received;
/// it writes SR (if we sent since the last report) or RR, followed by SDES CNAME
/// (a compound packet, RFC 3550 §6.1), when [`RtcpSession::poll_timeout`] says so.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    ssrc: Ssrc,
    clock: u32,
    cname: Vec<u8>,
    packets_sent: u32,
    octets_sent: u32,
    /// RTP timestamp and time of the last packet we sent.
    last_sent: Option<(u32, Instant)>,
    sent_since_report: bool,
    reception: Option<Reception>,
    /// Middle 32 bits of the NTP time of our last SR, and when we sent it.
    our_last_sr: Option<(u32, Instant)>,
    next_report: Option<Instant>,
    remote: Option<RemoteReport>,
}

impl RtcpSession {
    /// `ssrc`: ours on this leg (the rewriter's or encoder's); `clock`: the leg's RTP clock;
    /// `cname`: RFC 7022 random CNAME, at most [`MAX_CNAME`] bytes (truncated beyond).
    pub fn new(ssrc: Ssrc, clock: u32, cname: &str) -> Result<Self, RtpError> {
        if clock == 0 {
            return Err(RtpError::ZeroClockRate);
        }
        let cname = cname.as_bytes();
        Ok(Self {
            ssrc,
            clock,
            cname: cname[..cname.len().min(MAX_CNAME)].to_vec(),
            packets_sent: 0,
            octets_sent: 0,
            last_sent: None,
            sent_since_report: false,
            reception: None,
            our_last_sr: None,
            next_report: None,
            remote: None,
        })
    }

    /// An RTP packet we sent: its timestamp and payload length (RFC 3550 §6.4.1 octet count
    /// excludes header and padding).
    pub fn on_rtp_sent(&mut self, timestamp: u32, payload_len: usize, now: Instant) {
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
        self.last_sent = Some((timestamp, now));
        self.sent_since_report = true;
        self.next_report.get_or_insert(now + RTCP_INTERVAL / 2);
    }

    /// An RTP packet we received from the peer. A new SSRC restarts the statistics
    /// (RFC 3550 §8.2: a new source).
    pub fn on_rtp_received(&mut self, ssrc: Ssrc, seq: u16, timestamp: u32, now: Instant) {
        match &mut self.reception {
            Some(r) if r.ssrc == ssrc => r.on_packet(seq, timestamp, now),
            _ => {
                let mut r = Reception::new(ssrc, seq, self.clock, now);
                r.on_packet(seq, timestamp, now);
                self.reception = Some(r);
            }
        }
        self.next_report.get_or_insert(now + RTCP_INTERVAL / 2);
    }

    /// Reads a received RTCP compound packet: the peer's SR (for our LSR/DLSR) and report
    /// blocks about our SSRC (loss, jitter, RTT). Other packet types are skipped.
    pub fn on_rtcp(&mut self, buf: &[u8], now: Instant) -> Result<(), RtpError> {
        let mut rest = buf;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(RtpError::TooShort { len: rest.len() });
            }
            let version = rest[0] >> 6;
            if version != RTP_VERSION {
                return Err(RtpError::BadVersion { version });
            }
            let count = usize::from(rest[0] & 0x1f);
            let pt = rest[1];
            let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
            if len > rest.len() {
                return Err(RtpError::HeaderOverrun {
                    needed: len,
                    len: rest.len(),
                });
            }
            let (pkt, tail) = rest.split_at(len);
            rest = tail;
            let blocks_at = match pt {
                RTCP_SR => 28,
                RTCP_RR => 8,
                _ => continue,
            };
            let needed = blocks_at + count * REPORT_BLOCK_LEN;
            if needed > pkt.len() {
                return Err(RtpError::HeaderOverrun {
                    needed,
                    len: pkt.len(),
                });
            }
            let sender = Ssrc(u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]));
            if pt == RTCP_SR
                && let Some(r) = self.reception.as_mut().filter(|r| r.ssrc == sender)
            {
                let middle = u32::from_be_bytes([pkt[10], pkt[11], pkt[12], pkt[13]]);
                r.last_sr = Some((middle, now));
            }
            for b in pkt[blocks_at..needed].chunks_exact(REPORT_BLOCK_LEN) {
                let block = ReportBlock::parse(b);
                if block.ssrc != self.ssrc {
                    continue;
                }
                let rtt = match self.our_last_sr {
                    Some((lsr, sent)) if block.last_sr == lsr && lsr != 0 => now
                        .saturating_duration_since(sent)
                        .checked_sub(from_q16(block.delay_since_last_sr)),
                    _ => None,
                };
                self.remote = Some(RemoteReport { block, rtt });
            }
        }
        Ok(())
    }

    /// The peer's last report about our stream.
    pub fn remote_report(&self) -> Option<RemoteReport> {
        self.remote
    }

    /// When the next report is due; `None` before any RTP was sent or received.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_report
    }

    /// Writes the compound report (SR or RR, then SDES CNAME) into `out` and returns its length.
    /// `wall` is the wall-clock time for the SR's NTP timestamp (RFC 3550 §6.4.1); `now` the
    /// monotonic time of the same instant. Schedules the next report at
    /// [`RTCP_INTERVAL`] × a random factor in [0.5, 1.5] (RFC 3550 §6.3.1).
    pub fn write_report(
        &mut self,
        now: Instant,
        wall: std::time::SystemTime,
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let blocks = usize::from(self.reception.is_some());
        let sr = self.sent_since_report;
        let report_len = if sr { 28 } else { 8 } + blocks * REPORT_BLOCK_LEN;
        // SDES: header, SSRC, CNAME item (type, length, text), end item, padded to 32 bits.
        let sdes_len = (8 + 2 + self.cname.len() + 1).div_ceil(4) * 4;
        let needed = report_len + sdes_len;
        if out.len() < needed {
            return Err(RtpError::HeaderOverrun {
                needed,
                len: out.len(),
            });
        }
        let out = &mut out[..needed];
        out.fill(0);
        out[0] = (RTP_VERSION << 6) | blocks as u8;
        out[1] = if sr { RTCP_SR } else { RTCP_RR };
        out[2..4].copy_from_slice(&((report_len / 4 - 1) as u16).to_be_bytes());
        out[4..8].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let mut at = 8;
        if sr {
            let ntp = ntp_time(wall);
            out[8..16].copy_from_slice(&ntp.to_be_bytes());
            // The RTP timestamp of this same instant: the last one sent, advanced by the time
            // since it was sent (RFC 3550 §6.4.1).
            let rtp_ts = match self.last_sent {
                Some((ts, at)) => {
                    ts.wrapping_add(ticks(now.saturating_duration_since(at), self.clock) as u32)
                }
                None => 0,
            };
            out[16..20].copy_from_slice(&rtp_ts.to_be_bytes());
            out[20..24].copy_from_slice(&self.packets_sent.to_be_bytes());
            out[24..28].copy_from_slice(&self.octets_sent.to_be_bytes());
            self.our_last_sr = Some(((ntp >> 16) as u32, now));
            at = 28;
        }
        if let Some(r) = self.reception.as_mut() {
            r.block(now).write(&mut out[at..at + REPORT_BLOCK_LEN]);
        }
        let sdes = &mut out[report_len..];
        sdes[0] = (RTP_VERSION << 6) | 1;
        sdes[1] = RTCP_SDES;
        sdes[2..4].copy_from_slice(&((sdes_len / 4 - 1) as u16).to_be_bytes());
        sdes[4..8].copy_from_slice(&self.ssrc.0.to_be_bytes());
        sdes[8] = SDES_CNAME;
        sdes[9] = self.cname.len() as u8;
        sdes[10..10 + self.cname.len()].copy_from_slice(&self.cname);
        // The rest is already zero: the end item and padding.
        self.sent_since_report = false;
        let factor = 0.5 + rand::random::<f64>();
        self.next_report = Some(now + RTCP_INTERVAL.mul_f64(factor));
        Ok(needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCMU: u8 = 0;
    const SSRC_A: Ssrc = Ssrc(0x1111_1111);
    const SSRC_B: Ssrc = Ssrc(0x2222_2222);
    const OUR: Ssrc = Ssrc(0xabcd_ef01);

    fn packet(ssrc: Ssrc, seq: u16, ts: u32, pt: u8, marker: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 12 + 160];
        write_header(&mut buf, marker, pt, seq, ts, ssrc).unwrap();
        buf
    }

    fn rewriter(in_clock: u32, out_clock: u32) -> Rewriter {
        let mut map = PtMap::new();
        map.insert(PCMU, PCMU).insert(101, 126);
        Rewriter::new(RewriterConfig {
            ssrc: OUR,
            initial_seq: 1000,
            initial_timestamp: 50_000,
            in_clock,
            out_clock,
            pt_map: map,
        })
        .unwrap()
    }

    fn fwd(r: Rewrite) -> (u16, u32) {
        match r {
            Rewrite::Forward { seq, timestamp, .. } => (seq, timestamp),
            other => panic!("expected Forward, got {other:?}"),
        }
    }

    #[test]
    fn parses_fixed_header_csrc_extension_padding() {
        let mut buf = vec![0u8; 12 + 8 + 8 + 5 + 3];
        buf[0] = 0x80 | 0x20 | 0x10 | 2; // V=2, P, X, CC=2
        buf[1] = 0x80 | 8; // M, PCMA
        buf[2..4].copy_from_slice(&7u16.to_be_bytes());
        buf[4..8].copy_from_slice(&1234u32.to_be_bytes());
        buf[8..12].copy_from_slice(&0xdeadbeefu32.to_be_bytes());
        buf[12..16].copy_from_slice(&1u32.to_be_bytes());
        buf[16..20].copy_from_slice(&2u32.to_be_bytes());
        buf[20..22].copy_from_slice(&0xbedeu16.to_be_bytes());
        buf[22..24].copy_from_slice(&1u16.to_be_bytes());
        buf[28..33].copy_from_slice(b"hello");
        let n = buf.len();
        buf[n - 1] = 3;
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(p.version(), 2);
        assert!(p.marker() && p.has_padding() && p.has_extension());
        assert_eq!(p.payload_type(), 8);
        assert_eq!(p.sequence_number(), 7);
        assert_eq!(p.timestamp(), 1234);
        assert_eq!(p.ssrc(), Ssrc(0xdeadbeef));
        assert_eq!(p.csrc_count(), 2);
        assert_eq!(p.csrc(1), Some(Ssrc(2)));
        assert_eq!(p.csrc(2), None);
        assert_eq!(
            p.extension().map(|(prof, d)| (prof, d.len())),
            Some((0xbede, 4))
        );
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.payload(), b"hello");
    }

    #[test]
    fn rejects_malformed_without_panicking() {
        assert_eq!(
            RtpPacket::parse(&[0x80; 11]).unwrap_err(),
            RtpError::TooShort { len: 11 }
        );
        let mut b = packet(SSRC_A, 1, 1, 0, false);
        b[0] = 0x40;
        assert_eq!(
            RtpPacket::parse(&b).unwrap_err(),
            RtpError::BadVersion { version: 1 }
        );
        let mut b = vec![0u8; 12];
        b[0] = 0x8f; // CC=15 needs 72 bytes
        assert!(matches!(
            RtpPacket::parse(&b),
            Err(RtpError::HeaderOverrun { .. })
        ));
        let mut b = vec![0u8; 16];
        b[0] = 0x90;
        b[14..16].copy_from_slice(&100u16.to_be_bytes());
        assert!(matches!(
            RtpPacket::parse(&b),
            Err(RtpError::HeaderOverrun { .. })
        ));
        let mut b = vec![0u8; 14];
        b[0] = 0xa0;
        b[13] = 5;
        assert!(matches!(
            RtpPacket::parse(&b),
            Err(RtpError::BadPadding { .. })
        ));
        b[13] = 0;
        assert!(matches!(
            RtpPacket::parse(&b),
            Err(RtpError::BadPadding { .. })
        ));
        // Every short prefix of every first byte: never a panic.
        for first in 0..=255u8 {
            for len in 0..40 {
                let mut b = vec![0xffu8; len];
                if let Some(x) = b.first_mut() {
                    *x = first;
                }
                let _ = RtpPacket::parse(&b);
                let mut r = rewriter(8000, 8000);
                let _ = r.rewrite(&mut b, Instant::now());
            }
        }
    }

    #[test]
    fn in_place_writes_round_trip() {
        let mut b = packet(SSRC_A, 1, 2, 0, false);
        let mut p = RtpPacketMut::parse(&mut b).unwrap();
        p.set_marker(true);
        p.set_payload_type(0xff);
        p.set_sequence_number(0xfffe);
        p.set_timestamp(0xdead_beef);
        p.set_ssrc(SSRC_B);
        p.payload_mut()[0] = 9;
        let v = p.view();
        assert!(v.marker());
        assert_eq!(v.payload_type(), 0x7f);
        assert_eq!(v.sequence_number(), 0xfffe);
        assert_eq!(v.timestamp(), 0xdead_beef);
        assert_eq!(v.ssrc(), SSRC_B);
        assert_eq!(v.payload()[0], 9);
    }

    #[test]
    fn rewrites_ssrc_pt_marker_and_counts() {
        let mut r = rewriter(8000, 8000);
        let now = Instant::now();
        let mut b = packet(SSRC_A, 5, 100, 101, true);
        let out = r.rewrite(&mut b, now).unwrap();
        assert_eq!(
            out,
            Rewrite::Forward {
                seq: 1000,
                timestamp: 50_000,
                payload_type: 126,
                marker: true
            }
        );
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!((p.ssrc(), p.payload_type(), p.marker()), (OUR, 126, true));
        let mut b = packet(SSRC_A, 6, 260, PCMU, false);
        assert_eq!(fwd(r.rewrite(&mut b, now).unwrap()), (1001, 50_160));
        assert!(!RtpPacket::parse(&b).unwrap().marker());
        let mut b = packet(SSRC_A, 7, 420, 96, false);
        assert_eq!(
            r.rewrite(&mut b, now).unwrap(),
            Rewrite::UnmappedPayloadType { payload_type: 96 }
        );
        let s = r.stats();
        assert_eq!((s.packets_in, s.packets_out, s.unmapped), (3, 2, 1));
        assert_eq!((s.bytes_in, s.bytes_out), (3 * 172, 2 * 172));
    }

    #[test]
    fn wraparound_at_65535_is_continuous() {
        let mut r = rewriter(8000, 8000);
        let now = Instant::now();
        let mut outs = Vec::new();
        for i in 0..6u32 {
            let seq = 65533u16.wrapping_add(i as u16);
            let ts = (u32::MAX - 320).wrapping_add(160 * i); // timestamp wraps too
            outs.push(fwd(r
                .rewrite(&mut packet(SSRC_A, seq, ts, 0, false), now)
                .unwrap()));
        }
        for w in outs.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1));
            assert_eq!(w[1].1, w[0].1.wrapping_add(160));
        }
    }

    #[test]
    fn output_wraps_too() {
        let mut r = Rewriter::new(RewriterConfig {
            ssrc: OUR,
            initial_seq: 65535,
            initial_timestamp: u32::MAX,
            in_clock: 8000,
            out_clock: 8000,
            pt_map: {
                let mut m = PtMap::new();
                m.insert(0, 0);
                m
            },
        })
        .unwrap();
        let now = Instant::now();
        assert_eq!(
            fwd(r
                .rewrite(&mut packet(SSRC_A, 10, 0, 0, false), now)
                .unwrap()),
            (65535, u32::MAX)
        );
        assert_eq!(
            fwd(r
                .rewrite(&mut packet(SSRC_A, 11, 160, 0, false), now)
                .unwrap()),
            (0, 159)
        );
    }

    #[test]
    fn ssrc_change_keeps_output_continuous() {
        let mut r = rewriter(8000, 8000);
        let t0 = Instant::now();
        for i in 0..3u16 {
            r.rewrite(
                &mut packet(SSRC_A, 100 + i, 1000 + 160 * u32::from(i), 0, false),
                t0,
            )
            .unwrap();
        }
        // New source, unrelated numbers, 20 ms later.
        let t1 = t0 + Duration::from_millis(20);
        let out = r
            .rewrite(&mut packet(SSRC_B, 40_000, 7, 0, false), t1)
            .unwrap();
        assert_eq!(
            out,
            Rewrite::Forward {
                seq: 1003,
                timestamp: 50_320 + 160,
                payload_type: 0,
                marker: true
            }
        );
        let (s, ts) = fwd(r
            .rewrite(&mut packet(SSRC_B, 40_001, 167, 0, false), t1)
            .unwrap());
        assert_eq!((s, ts), (1004, 50_640));
        assert_eq!(r.stats().rebases, 1);
        // A late packet of the old source does not flip the output back.
        let late = r
            .rewrite(&mut packet(SSRC_A, 102, 1320, 0, false), t1)
            .unwrap();
        assert_eq!(late, Rewrite::StaleSource);
        assert_eq!(r.stats().stale, 1);
        // One stray packet far away from the stream: held back, and the stream is undisturbed.
        let stray = r.rewrite(&mut packet(SSRC_B, 5, 3, 0, false), t1).unwrap();
        assert_eq!(stray, Rewrite::Probation);
        let (s, _) = fwd(r
            .rewrite(&mut packet(SSRC_B, 40_002, 327, 0, false), t1)
            .unwrap());
        assert_eq!(s, 1005);
        assert_eq!(r.stats().rebases, 1);
        // Same-SSRC restart (a huge jump confirmed by the next packet) also continues.
        let first = r
            .rewrite(&mut packet(SSRC_B, 20_000, 9_999_999, 0, false), t1)
            .unwrap();
        assert_eq!(first, Rewrite::Probation);
        let (s, _) = fwd(r
            .rewrite(&mut packet(SSRC_B, 20_001, 10_000_159, 0, false), t1)
            .unwrap());
        assert_eq!(s, 1006);
        assert_eq!(r.stats().rebases, 2);
    }

    #[test]
    fn reordering_and_gaps_pass_through() {
        let mut r = rewriter(8000, 8000);
        let now = Instant::now();
        let order = [10u16, 12, 11, 13, 17, 15]; // 14 and 16 lost, 11 and 15 late
        let outs: Vec<_> = order
            .iter()
            .map(|&s| {
                let ts = 160 * u32::from(s);
                fwd(r
                    .rewrite(&mut packet(SSRC_A, s, ts, 0, false), now)
                    .unwrap())
            })
            .collect();
        let expected: Vec<_> = order
            .iter()
            .map(|&s| (1000 + (s - 10), 50_000 + 160 * u32::from(s - 10)))
            .collect();
        assert_eq!(outs, expected);
    }

    #[test]
    fn duplicates_are_dropped_once_forwarded() {
        let mut r = rewriter(8000, 8000);
        let now = Instant::now();
        fwd(r.rewrite(&mut packet(SSRC_A, 1, 0, 0, false), now).unwrap());
        fwd(r
            .rewrite(&mut packet(SSRC_A, 3, 320, 0, false), now)
            .unwrap());
        assert_eq!(
            r.rewrite(&mut packet(SSRC_A, 3, 320, 0, false), now)
                .unwrap(),
            Rewrite::Duplicate
        );
        assert_eq!(
            r.rewrite(&mut packet(SSRC_A, 1, 0, 0, false), now).unwrap(),
            Rewrite::Duplicate
        );
        // A late original (2) is not a duplicate; its copy is.
        assert_eq!(
            fwd(r
                .rewrite(&mut packet(SSRC_A, 2, 160, 0, false), now)
                .unwrap())
            .0,
            1001
        );
        assert_eq!(
            r.rewrite(&mut packet(SSRC_A, 2, 160, 0, false), now)
                .unwrap(),
            Rewrite::Duplicate
        );
        assert_eq!(r.stats().duplicates, 3);
        let mut b = packet(SSRC_A, 2, 160, 0, false);
        assert_eq!(r.rewrite(&mut b, now).unwrap(), Rewrite::Duplicate);
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(
            (p.ssrc(), p.sequence_number(), p.timestamp()),
            (OUR, 1001, 50_160)
        );
        assert_eq!(r.stats().packets_out, 3);
    }

    #[test]
    fn timestamps_stay_continuous_across_silence_and_clock_change() {
        // 8 kHz source to a 48 kHz leg: every timestamp difference is scaled by 6.
        let mut r = rewriter(8000, 48_000);
        let now = Instant::now();
        let (_, t0) = fwd(r
            .rewrite(&mut packet(SSRC_A, 1, 1000, 0, false), now)
            .unwrap());
        let (_, t1) = fwd(r
            .rewrite(&mut packet(SSRC_A, 2, 1160, 0, false), now)
            .unwrap());
        // DTX: 2 s of silence, next packet is the next seq but 16000 ticks later, marker set.
        let out = r
            .rewrite(&mut packet(SSRC_A, 3, 1160 + 16_000, 0, true), now)
            .unwrap();
        let Rewrite::Forward {
            timestamp: t2,
            marker,
            seq,
            ..
        } = out
        else {
            panic!()
        };
        assert_eq!(t1.wrapping_sub(t0), 960);
        assert_eq!(t2.wrapping_sub(t1), 96_000);
        assert!(marker);
        assert_eq!(seq, 1002);
        // And 48 kHz down to 8 kHz.
        let mut r = rewriter(48_000, 8000);
        let (_, a) = fwd(r.rewrite(&mut packet(SSRC_A, 1, 0, 0, false), now).unwrap());
        let (_, b) = fwd(r
            .rewrite(&mut packet(SSRC_A, 2, 960, 0, false), now)
            .unwrap());
        assert_eq!(b.wrapping_sub(a), 160);
        assert!(matches!(
            Rewriter::new(RewriterConfig::random(0, 8000, PtMap::new())),
            Err(RtpError::ZeroClockRate)
        ));
    }

    #[test]
    fn rtcp_sr_rr_round_trip_gives_loss_jitter_and_rtt() {
        use std::time::{SystemTime, UNIX_EPOCH};
        let t0 = Instant::now();
        let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut a = RtcpSession::new(SSRC_A, 8000, "a@gw").unwrap();
        let mut b = RtcpSession::new(SSRC_B, 8000, "b@gw").unwrap();
        assert_eq!(a.poll_timeout(), None);
        // A sends 100 packets (across a sequence wrap), B loses 5 of them.
        for i in 0..100u16 {
            let now = t0 + Duration::from_millis(20 * u64::from(i));
            let seq = 65_500u16.wrapping_add(i);
            a.on_rtp_sent(160 * u32::from(i), 160, now);
            if i % 20 != 7 {
                b.on_rtp_received(SSRC_A, seq, 160 * u32::from(i), now);
            }
        }
        assert_eq!(a.poll_timeout(), Some(t0 + RTCP_INTERVAL / 2));
        let t1 = t0 + Duration::from_secs(2);
        let mut buf = [0u8; 256];
        let n = a.write_report(t1, wall0, &mut buf).unwrap();
        let sr = &buf[..n];
        assert_eq!((sr[0], sr[1]), (0x80, RTCP_SR)); // no report block: A received nothing
        assert_eq!(u16::from_be_bytes([sr[2], sr[3]]), 6);
        assert_eq!(u32::from_be_bytes([sr[20], sr[21], sr[22], sr[23]]), 100);
        assert_eq!(u32::from_be_bytes([sr[24], sr[25], sr[26], sr[27]]), 16_000);
        // RTP timestamp of "now": last sent (99 × 160) plus the 20 ms since.
        assert_eq!(
            u32::from_be_bytes([sr[16], sr[17], sr[18], sr[19]]),
            99 * 160 + 160
        );
        assert_eq!((sr[28], sr[29], sr[36], sr[37]), (0x81, RTCP_SDES, 1, 4));
        assert_eq!(&sr[38..42], b"a@gw");
        let next = a.poll_timeout().unwrap();
        assert!(next >= t1 + RTCP_INTERVAL / 2 && next <= t1 + RTCP_INTERVAL * 3 / 2);
        assert!(is_rtcp(sr));

        b.on_rtcp(sr, t1 + Duration::from_millis(50)).unwrap();
        let t2 = t1 + Duration::from_millis(1050);
        let n = b.write_report(t2, wall0, &mut buf).unwrap();
        let rr = &buf[..n];
        assert_eq!((rr[0], rr[1]), (0x81, RTCP_RR));
        a.on_rtcp(rr, t2 + Duration::from_millis(50)).unwrap();
        let remote = a.remote_report().unwrap();
        assert_eq!(remote.block.ssrc, SSRC_A);
        assert_eq!(remote.block.cumulative_lost, 5);
        assert_eq!(remote.block.fraction_lost, (5 * 256 / 100) as u8);
        assert_eq!(remote.block.extended_highest_seq, 65_536 + 63);
        assert_eq!(remote.block.jitter, 0);
        assert_eq!(remote.block.delay_since_last_sr, 65_536);
        assert_eq!(remote.rtt, Some(Duration::from_millis(100)));
        // Nothing new since: the next interval reports no fresh loss.
        let n = b
            .write_report(t2 + RTCP_INTERVAL, SystemTime::now(), &mut buf)
            .unwrap();
        a.on_rtcp(&buf[..n], t2).unwrap();
        assert_eq!(a.remote_report().unwrap().block.fraction_lost, 0);
        assert_eq!(a.remote_report().unwrap().block.cumulative_lost, 5);
    }

    #[test]
    fn rtcp_garbage_is_an_error_not_a_panic() {
        let mut s = RtcpSession::new(OUR, 8000, &"x".repeat(400)).unwrap();
        assert!(
            s.on_rtcp(&[0x80, 200, 0, 10, 0, 0, 0, 0], Instant::now())
                .is_err()
        );
        assert!(
            s.on_rtcp(&[0x9f, 201, 0, 1, 0, 0, 0, 0], Instant::now())
                .is_err()
        );
        assert!(
            s.on_rtcp(&[0x40, 201, 0, 1, 0, 0, 0, 0], Instant::now())
                .is_err()
        );
        assert!(s.on_rtcp(&[0x80, 201], Instant::now()).is_err());
        let mut x = 0x9e37_79b9u32;
        for len in 0..2000usize {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut b = [0u8; 64];
            for (i, v) in b.iter_mut().enumerate() {
                *v = x.rotate_left(i as u32) as u8;
            }
            b[0] = 0x80 | (b[0] & 0x3f);
            let _ = s.on_rtcp(&b[..len % 64], Instant::now());
        }
        // The long CNAME is truncated to 255 bytes and still fits one SDES item.
        let mut buf = [0u8; 400];
        assert!(
            s.write_report(Instant::now(), std::time::SystemTime::now(), &mut buf)
                .is_ok()
        );
        assert!(
            s.write_report(Instant::now(), std::time::SystemTime::now(), &mut [0u8; 20])
                .is_err()
        );
        assert_eq!(ntp_time(std::time::UNIX_EPOCH), NTP_UNIX_OFFSET << 32);
        assert!(!is_rtcp(&packet(SSRC_A, 1, 1, 0, true)));
    }
}
