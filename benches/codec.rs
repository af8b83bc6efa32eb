//! Codec hot path: one 20 ms frame through G.711, Opus and the transcoders.
//! Run with `make bench` (or `cargo bench --bench codec`).
//!
//! Reference point (issue 4): libopus encode at complexity 5 ≈ 200 µs per 20 ms frame on this
//! class of CPU. Before measuring, the bench also counts heap allocations per frame on each path
//! (a counting global allocator; the bench is single-threaded) and prints them, since "no
//! allocation per frame" is a design rule (DESIGN.md habit 6) that a timing alone cannot show.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use xmpp_sip_gateway::media::codec::g711::Law;
use xmpp_sip_gateway::media::codec::opus::{
    DEFAULT_COMPLEXITY, MAX_PACKET_LEN, OpusConfig, OpusDecoder, OpusEncoder,
};
use xmpp_sip_gateway::media::codec::{Codec, Transcoder, TranscoderConfig};

/// Counts allocations so the bench can report allocations per frame.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// Delegates every call to `System`; the only addition is the counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's; forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the allocator that produced `ptr`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Speech-like test signal: a 140 Hz voiced "pitch" with harmonics, noise, and a 4 Hz syllable
/// envelope, so the encoders see something closer to voice than a pure tone.
fn voice_like(rate: u32, samples: usize) -> Vec<i16> {
    let mut seed: u32 = 0x2545_F491;
    (0..samples)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let env = 0.55 + 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
            let voiced: f64 = (1..=8)
                .map(|h| (2.0 * std::f64::consts::PI * 140.0 * h as f64 * t).sin() / h as f64)
                .sum();
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from((seed >> 16) as i16) / 32768.0;
            (6000.0 * env * (voiced + 0.1 * noise)) as i16
        })
        .collect()
}

/// One second of `codec` payloads of the voice-like signal.
fn payloads(codec: Codec) -> Vec<Vec<u8>> {
    let rate = codec.sample_rate();
    let pcm = voice_like(rate, rate as usize);
    let n = codec.samples_per_frame();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut opus = OpusEncoder::new(rate, OpusConfig::default()).expect("48 kHz is valid");
    let mut g722 = xmpp_sip_gateway::media::codec::g722::G722Encoder::new();
    pcm.chunks_exact(n)
        .map(|f| {
            let len = match codec {
                Codec::Pcmu => Law::Ulaw.encode(f, &mut buf),
                Codec::Pcma => Law::Alaw.encode(f, &mut buf),
                Codec::G722 => g722.encode(f, &mut buf),
                Codec::Opus => opus.encode(f, &mut buf),
            }
            .expect("whole frames");
            buf[..len].to_vec()
        })
        .collect()
}

fn transcoder(from: Codec, to: Codec, complexity: u8) -> Transcoder {
    let config = TranscoderConfig {
        opus: OpusConfig {
            complexity,
            ..OpusConfig::default()
        },
    };
    Transcoder::new(from, to, config).expect("all pairs are supported")
}

/// Prints heap allocations per frame for each transcoding direction (after a warm-up frame).
fn report_allocations() {
    let pairs = [
        (Codec::Opus, Codec::Pcmu),
        (Codec::Pcmu, Codec::Opus),
        (Codec::Opus, Codec::G722),
        (Codec::G722, Codec::Opus),
        (Codec::G722, Codec::Pcma),
        (Codec::Pcma, Codec::G722),
        (Codec::Pcmu, Codec::Pcma),
    ];
    for (from, to) in pairs {
        let input = payloads(from);
        let mut t = transcoder(from, to, DEFAULT_COMPLEXITY);
        let mut out = [0u8; MAX_PACKET_LEN];
        t.transcode(&input[0], &mut out).expect("valid frame");
        let before = ALLOCS.load(Ordering::Relaxed);
        for p in &input[1..] {
            black_box(t.transcode(p, &mut out).expect("valid frame"));
        }
        t.conceal(&mut out).expect("conceal");
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        eprintln!(
            "allocations per frame {from}->{to}: {:.2}",
            allocs as f64 / input.len() as f64
        );
    }
}

fn g711(c: &mut Criterion) {
    let pcm = voice_like(8000, 160);
    let mut bytes = [0u8; 160];
    let mut back = [0i16; 160];
    for law in [Law::Ulaw, Law::Alaw] {
        c.bench_function(&format!("g711 {law:?} encode+decode 20 ms"), |b| {
            b.iter(|| {
                law.encode(black_box(&pcm), &mut bytes).expect("sized");
                law.decode(black_box(&bytes), &mut back).expect("sized");
                black_box(back[17])
            })
        });
    }
}

fn opus_encode(c: &mut Criterion) {
    let mut buf = [0u8; MAX_PACKET_LEN];
    for rate in [48_000u32, 16_000, 8_000] {
        let pcm = voice_like(rate, rate as usize);
        let n = (rate / 50) as usize;
        for complexity in [0u8, 3, 5, 8, 10] {
            let mut enc = OpusEncoder::new(
                rate,
                OpusConfig {
                    complexity,
                    ..OpusConfig::default()
                },
            )
            .expect("valid settings");
            let mut frames = pcm.chunks_exact(n).cycle();
            c.bench_function(
                &format!("opus encode 20 ms mono {rate} Hz complexity {complexity}"),
                |b| {
                    b.iter(|| {
                        let f = frames.next().expect("cycle never ends");
                        black_box(enc.encode(black_box(f), &mut buf).expect("encodes"))
                    })
                },
            );
        }
    }
    let packets = payloads(Codec::Opus);
    let mut dec = OpusDecoder::new(48_000).expect("valid rate");
    let mut pcm = [0i16; 960];
    let mut it = packets.iter().cycle();
    c.bench_function("opus decode 20 ms mono 48000 Hz", |b| {
        b.iter(|| {
            let p = it.next().expect("cycle never ends");
            black_box(dec.decode(black_box(p), &mut pcm).expect("decodes"))
        })
    });
}

fn transcode(c: &mut Criterion) {
    let mut out = [0u8; MAX_PACKET_LEN];
    let bench_pair = |c: &mut Criterion, from: Codec, to: Codec, complexity: u8, out: &mut [u8]| {
        let input = payloads(from);
        let mut t = transcoder(from, to, complexity);
        let mut it = input.iter().cycle();
        let label = if to == Codec::Opus {
            format!("transcode {from}->{to} 20 ms complexity {complexity}")
        } else {
            format!("transcode {from}->{to} 20 ms")
        };
        c.bench_function(&label, |b| {
            b.iter(|| {
                let p = it.next().expect("cycle never ends");
                black_box(t.transcode(black_box(p), out).expect("valid frame"))
            })
        });
    };
    bench_pair(c, Codec::Opus, Codec::Pcmu, DEFAULT_COMPLEXITY, &mut out);
    let mut complexities = vec![DEFAULT_COMPLEXITY, 5, 10];
    complexities.dedup();
    for &complexity in &complexities {
        bench_pair(c, Codec::Pcmu, Codec::Opus, complexity, &mut out);
    }
    bench_pair(c, Codec::G722, Codec::Pcmu, DEFAULT_COMPLEXITY, &mut out);
    bench_pair(c, Codec::Pcmu, Codec::G722, DEFAULT_COMPLEXITY, &mut out);
    for &complexity in &complexities {
        bench_pair(c, Codec::G722, Codec::Opus, complexity, &mut out);
    }

    let input = payloads(Codec::Opus);
    let mut t = transcoder(Codec::Opus, Codec::Pcmu, DEFAULT_COMPLEXITY);
    t.transcode(&input[0], &mut out).expect("valid frame");
    c.bench_function("conceal opus->PCMU 20 ms (PLC)", |b| {
        b.iter(|| black_box(t.conceal(&mut out).expect("conceals")))
    });
}

fn all(c: &mut Criterion) {
    report_allocations();
    g711(c);
    opus_encode(c);
    transcode(c);
}

criterion_group! {
    name = benches;
    // Frames are tens of µs: a short measurement gives tight intervals and keeps `make bench`
    // quick on a 2-core box.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = all
}
criterion_main!(benches);
