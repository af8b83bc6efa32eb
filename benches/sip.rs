//! SIP hot path: one INVITE from the wire to its answer.
//! Run with `make bench` (or `cargo bench --bench sip`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use xmpp_sip_gateway::metrics::Metrics;
use xmpp_sip_gateway::sip::message;
use xmpp_sip_gateway::sip::policy::Trust;
use xmpp_sip_gateway::sip::transaction::TableConfig;
use xmpp_sip_gateway::sip::transport::{Peer, Proto};
use xmpp_sip_gateway::sip::ua::{UaOutput, UaSettings, UserAgent};

/// A realistic INVITE as a PBX sends it: two Vias, Record-Route, SDP with four codecs.
fn invite(n: u64) -> Vec<u8> {
    let sdp = "v=0\r\no=- 4005 4005 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";
    format!(
        "INVITE sip:gateway@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy{n}\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;received=198.51.100.7;branch=z9hG4bKphone{n};rport=5060\r\n\
Record-Route: <sip:127.0.0.1:5060;lr>\r\n\
Max-Forwards: 69\r\n\
From: \"Bob\" <sip:bob@sip.test>;tag=bob{n}\r\n\
To: <sip:gateway@sip.test>\r\n\
Call-ID: call{n}@198.51.100.7\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:bob@198.51.100.7:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE\r\n\
User-Agent: bench-phone/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn ua() -> UserAgent {
    let proxy = Peer {
        proto: Proto::Udp,
        addr: "127.0.0.1:5060".parse().expect("literal"),
        conn: None,
    };
    let s = UaSettings {
        sent_by: "127.0.0.1:5070".into(),
        contact: "sip:gateway@127.0.0.1:5070".into(),
        aor: "sip:gateway@sip.test".into(),
        next_hop: Some(proxy),
        route: None,
        registrar: None,
        registrar_uri: None,
        trust: Trust {
            servers: vec!["127.0.0.1".parse().expect("literal")],
            networks: vec![],
        },
        table: TableConfig::default(),
        keepalive: Duration::ZERO,
        max_dialogs: 100,
        user_agent: "bench".into(),
        id_prefix: "b".into(),
        accept_calls: false,
    };
    UserAgent::new(s, None, None, Arc::new(Metrics::default()))
}

fn bench(c: &mut Criterion) {
    let bytes = invite(1);
    c.bench_function("sip/parse_invite", |b| {
        b.iter(|| message::parse(black_box(&bytes)).expect("fixture parses"))
    });
    let from = Peer {
        proto: Proto::Udp,
        addr: "127.0.0.1:5060".parse().expect("literal"),
        conn: None,
    };
    let mut n = 0u64;
    c.bench_function("sip/parse_route_answer_invite", |b| {
        b.iter_batched(
            || {
                n += 1;
                (ua(), invite(n))
            },
            |(mut ua, bytes)| {
                ua.on_inbound(&bytes, from, Instant::now());
                let mut out = 0;
                while let Some(o) = ua.poll_output() {
                    if let UaOutput::Send { bytes, .. } = o {
                        out += bytes.len();
                    }
                }
                black_box(out)
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
