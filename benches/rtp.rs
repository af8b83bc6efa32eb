//! Media hot path without crypto: passthrough relay (parse + rewrite in place) of a 172-byte
//! PCMU packet, jitter buffer push + pop, and telephone-event relay, each per packet.
//! Run with `make bench` (or `cargo bench --bench rtp`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xmpp_sip_gateway::media::dtmf::{DtmfDetector, DtmfRelay, TelephoneEvent};
use xmpp_sip_gateway::media::jitter::{JitterBuffer, JitterConfig, PacketMeta, Pop};
use xmpp_sip_gateway::media::rtp::{
    PtMap, Rewriter, RewriterConfig, RtpPacket, Ssrc, write_header,
};

/// PCMU at 20 ms: 12-byte header + 160 bytes of payload (RFC 3551 §4.5.14).
const PCMU_PACKET: usize = 172;

fn rewriter(in_pt: u8, out_pt: u8, in_clock: u32, out_clock: u32) -> Rewriter {
    let mut map = PtMap::new();
    map.insert(in_pt, out_pt);
    Rewriter::new(RewriterConfig::random(in_clock, out_clock, map)).expect("valid clocks")
}

fn passthrough(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(1));
    let mut rw = rewriter(0, 0, 8000, 8000);
    let mut buf = [0xffu8; PCMU_PACKET];
    let ssrc = Ssrc(0x1234_5678);
    let now = Instant::now();
    let mut seq = 0u16;
    g.bench_function("passthrough_relay_pcmu_172B", |b| {
        b.iter(|| {
            // What the receive loop does: a fresh header arrives in the buffer, is parsed and
            // rewritten in place for the other leg.
            seq = seq.wrapping_add(1);
            write_header(&mut buf, false, 0, seq, u32::from(seq) * 160, ssrc).expect("12 bytes");
            let out = rw.rewrite(black_box(&mut buf), now).expect("valid packet");
            black_box(out);
        })
    });
    g.bench_function("parse_only_172B", |b| {
        b.iter(|| {
            let p = RtpPacket::parse(black_box(&buf)).expect("valid packet");
            black_box((p.sequence_number(), p.timestamp(), p.payload().len()));
        })
    });
    g.finish();
}

fn jitter(c: &mut Criterion) {
    let mut g = c.benchmark_group("jitter");
    g.throughput(Throughput::Elements(1));
    let mut jb = JitterBuffer::new(JitterConfig::new(8000)).expect("valid config");
    let payload = [0x55u8; 160];
    let t0 = Instant::now();
    let mut n = 0u32;
    g.bench_function("push_pop_pcmu", |b| {
        b.iter(|| {
            // One packet every 20 ms of fake time, popped 20 ms later: steady state.
            let now = t0 + Duration::from_millis(20) * n;
            let meta = PacketMeta {
                seq: n as u16,
                timestamp: n.wrapping_mul(160),
                payload_type: 0,
                marker: false,
            };
            black_box(jb.push(meta, black_box(&payload), now));
            loop {
                match jb.pop(now) {
                    Pop::Empty => break,
                    other => {
                        black_box(other);
                    }
                }
            }
            n += 1;
        })
    });
    g.finish();
}

fn dtmf(c: &mut Criterion) {
    let mut g = c.benchmark_group("dtmf");
    g.throughput(Throughput::Elements(1));
    // SIP leg (PT 101, 8 kHz) to a WebRTC leg (PT 126, 48 kHz).
    let mut rw = rewriter(101, 126, 8000, 48_000);
    let relay = DtmfRelay::new(8000, 48_000).expect("valid clocks");
    let mut detector = DtmfDetector::new(8000).expect("valid clock");
    let mut buf = [0u8; 16];
    let now = Instant::now();
    let mut n = 0u32;
    g.bench_function("relay_and_detect_telephone_event", |b| {
        b.iter(|| {
            // Events of 10 packets (the last three are the end packets), 50 ms apart.
            let event = n / 10;
            let step = n % 10;
            let ev = TelephoneEvent {
                event: (event % 16) as u8,
                end: step >= 7,
                reserved: false,
                volume: 10,
                duration: (400 * (step.min(7) + 1)) as u16,
            };
            let ts = event.wrapping_mul(8000);
            write_header(&mut buf, step == 0, 101, n as u16, ts, Ssrc(7)).expect("12 bytes");
            ev.write(&mut buf[12..]).expect("4 bytes");
            let out = relay
                .relay_packet(&mut rw, black_box(&mut buf), now)
                .expect("valid packet");
            detector.push(ts, &ev);
            black_box((out, detector.poll_event()));
            n += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, passthrough, jitter, dtmf);
criterion_main!(benches);
