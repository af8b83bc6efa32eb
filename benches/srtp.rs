//! SRTP cost per packet, protect and unprotect, with `webrtc_srtp::context::Context` directly:
//! that is what both the DTLS-SRTP WebRTC leg and the SDES-SRTP SIP leg (`media::sdes`) call.
//! Two suites (AES_CM_128_HMAC_SHA1_80, the mandatory one for SDES and libsrtp/aiortc peers;
//! AEAD_AES_128_GCM, what Chrome picks over DTLS) and two sizes: 172 bytes (12-byte header +
//! 160-byte payload, a 20 ms PCMU frame) and 132 bytes (a typical Opus frame).
//! Reference point: libsrtp takes about 3.6 µs per 160-byte packet.
//!
//! Unprotect runs with replay protection on (window 64, as both legs use), so each iteration
//! needs a never-seen sequence number: `iter_batched` protects a fresh packet per iteration in
//! the untimed setup, with the same sender context throughout, so sequence numbers and the
//! rollover counter advance exactly as on the wire however many iterations criterion runs
//! (a fixed pre-generated set would wrap the 16-bit sequence and fail authentication).
//! Run with `make bench` (or `cargo bench --bench srtp`).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;
use xmpp_sip_gateway::media::rtp::{Ssrc, write_header};

/// PCMU at 20 ms: 12-byte header + 160 bytes of payload (RFC 3551 §4.5.14).
const PCMU_PACKET: usize = 172;
/// A 20 ms Opus voice frame of 120 bytes (~48 kbit/s) plus the header.
const OPUS_PACKET: usize = 132;

/// Replay window of both legs.
const REPLAY_WINDOW: usize = 64;

/// Sender and receiver contexts sharing one fixed master key and salt.
fn contexts(profile: ProtectionProfile) -> (Context, Context) {
    let key: Vec<u8> = (0..profile.key_len()).map(|i| i as u8).collect();
    let salt: Vec<u8> = (0..profile.salt_len()).map(|i| 0xa0 ^ i as u8).collect();
    let tx = Context::new(&key, &salt, profile, None, None).expect("valid key");
    let rx = Context::new(
        &key,
        &salt,
        profile,
        Some(srtp_replay_protection(REPLAY_WINDOW)),
        Some(srtcp_replay_protection(REPLAY_WINDOW)),
    )
    .expect("valid key");
    (tx, rx)
}

/// A plain RTP packet of `len` bytes whose header gets rewritten per iteration.
struct Source {
    buf: Vec<u8>,
    seq: u16,
}

impl Source {
    fn new(len: usize) -> Self {
        let mut buf = vec![0u8; len];
        for (i, b) in buf.iter_mut().enumerate().skip(12) {
            *b = (i * 37) as u8;
        }
        Source { buf, seq: 0 }
    }

    fn next(&mut self) -> &[u8] {
        self.seq = self.seq.wrapping_add(1);
        let ts = u32::from(self.seq).wrapping_mul(160);
        write_header(&mut self.buf, false, 0, self.seq, ts, Ssrc(0x1234_5678)).expect("12 bytes");
        &self.buf
    }
}

fn bench_case(c: &mut Criterion, suite: &str, profile: ProtectionProfile, name: &str, len: usize) {
    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Elements(1));

    let (mut tx, _) = contexts(profile);
    let mut src = Source::new(len);
    g.bench_function(format!("protect_{suite}_{name}_{len}B"), |b| {
        b.iter(|| {
            let out = tx.encrypt_rtp(black_box(src.next())).expect("protect");
            black_box(out);
        })
    });

    let (mut tx, mut rx) = contexts(profile);
    let mut src = Source::new(len);
    g.bench_function(format!("unprotect_{suite}_{name}_{len}B"), |b| {
        b.iter_batched(
            || tx.encrypt_rtp(src.next()).expect("protect"),
            |srtp| {
                let out = rx.decrypt_rtp(black_box(&srtp)).expect("unprotect");
                black_box(out);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn aes_cm(c: &mut Criterion) {
    let p = ProtectionProfile::Aes128CmHmacSha1_80;
    bench_case(c, "aes_cm_128_sha1_80", p, "pcmu", PCMU_PACKET);
    bench_case(c, "aes_cm_128_sha1_80", p, "opus", OPUS_PACKET);
}

fn aead_gcm(c: &mut Criterion) {
    let p = ProtectionProfile::AeadAes128Gcm;
    bench_case(c, "aead_aes_128_gcm", p, "pcmu", PCMU_PACKET);
    bench_case(c, "aead_aes_128_gcm", p, "opus", OPUS_PACKET);
}

criterion_group!(benches, aes_cm, aead_gcm);
criterion_main!(benches);
