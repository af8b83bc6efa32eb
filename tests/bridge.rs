//! The media bridge driven through its API, over real sockets on 127.0.0.1: on the WebRTC side a
//! second `WebRtcLeg` plays the browser (real ICE, DTLS with fingerprint check, SRTP), on the SIP
//! side a plain UDP socket plays the phone. Checks passthrough (payload bytes untouched, nothing
//! decoded), transcoding (tones both ways), telephone-event relay both ways, symmetric RTP,
//! fingerprint mismatch, SDES-SRTP and port exhaustion. The same engine is exercised against
//! aiortc by integration/tests/test_media_bridge.py.

use std::f64::consts::PI;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, sleep, timeout};
use xmpp_sip_gateway::media::bridge::{
    AudioFormat, Bridge, BridgeEvent, BridgeLocal, Direction, LegCodecs, LegKind, MediaConfig,
    MediaEngine, MediaError, SipRemote, TelephoneEventFormat, WebRtcRole, plan,
};
use xmpp_sip_gateway::media::codec::Codec;
use xmpp_sip_gateway::media::codec::g711;
use xmpp_sip_gateway::media::codec::opus::{OpusConfig, OpusDecoder, OpusEncoder};
use xmpp_sip_gateway::media::sdes::{CryptoAttribute, SdesKey, SdesSession, SdesSuite};
use xmpp_sip_gateway::media::webrtc::{
    Fingerprint, LegConfig, LegEvent, LegReceivers, LocalDescription, MediaPacket,
    RemoteDescription, WebRtcLeg,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Bound on every wait, so a broken build fails instead of hanging (loopback takes far less).
const STEP: Duration = Duration::from_secs(20);

fn remote_of(local: &LocalDescription) -> RemoteDescription {
    RemoteDescription {
        ufrag: local.ufrag.clone(),
        pwd: local.pwd.clone(),
        fingerprints: vec![Fingerprint::parse("sha-256", &local.fingerprint_sha256).unwrap()],
        setup: local.setup,
        candidates: local.candidates.clone(),
    }
}

fn pcmu() -> AudioFormat {
    AudioFormat {
        pt: 0,
        codec: Codec::Pcmu,
    }
}

fn opus() -> AudioFormat {
    AudioFormat {
        pt: 111,
        codec: Codec::Opus,
    }
}

fn te(pt: u8, clock: u32) -> Option<TelephoneEventFormat> {
    Some(TelephoneEventFormat { pt, clock })
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

struct Header {
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

fn header(p: &[u8]) -> Header {
    Header {
        pt: p[1] & 0x7f,
        seq: u16::from_be_bytes([p[2], p[3]]),
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
    }
}

fn sine(freq: f64, rate: u32, start: usize, n: usize) -> Vec<i16> {
    (start..start + n)
        .map(|i| (8000.0 * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as i16)
        .collect()
}

/// Dominant frequency (1 Hz steps, 100–2000 Hz) by a direct DFT on the middle of `x`.
fn dominant_frequency(x: &[i16], rate: u32) -> f64 {
    let x: Vec<f64> = x.iter().map(|&s| f64::from(s)).collect();
    let mut best = (0.0, 0.0);
    for f in 100..2000 {
        let w = 2.0 * PI * f64::from(f) / f64::from(rate);
        let (mut re, mut im) = (0.0, 0.0);
        for (i, s) in x.iter().enumerate() {
            re += s * (w * i as f64).cos();
            im += s * (w * i as f64).sin();
        }
        let p = re * re + im * im;
        if p > best.1 {
            best = (f64::from(f), p);
        }
    }
    best.0
}

struct Call {
    engine: MediaEngine,
    bridge: Bridge,
    events: UnboundedReceiver<BridgeEvent>,
    local: BridgeLocal,
    browser: WebRtcLeg,
    browser_rx: LegReceivers,
    phone: UdpSocket,
}

struct Setup {
    range: (u16, u16),
    browser_range: (u16, u16),
    webrtc: LegCodecs,
    sip: LegCodecs,
    /// Corrupt the browser's fingerprint as the bridge learns it.
    bad_fingerprint: bool,
    /// The phone's SDES key (the bridge then speaks SRTP on the SIP leg).
    sdes: Option<SdesKey>,
}

async fn start(s: Setup) -> Call {
    let engine = MediaEngine::new(MediaConfig::new(LOOPBACK, s.range.0, s.range.1)).unwrap();
    let (mut bridge, local) = engine.create_bridge(WebRtcRole::Answerer).await.unwrap();
    let events = bridge.take_events().unwrap();
    let (mut browser, browser_local) = WebRtcLeg::new(LegConfig::offerer(
        LOOPBACK,
        s.browser_range.0,
        s.browser_range.1,
    ))
    .await
    .unwrap();
    browser.set_remote(remote_of(&local.webrtc)).unwrap();
    let mut theirs = remote_of(&browser_local);
    if s.bad_fingerprint {
        theirs.fingerprints[0].value[0] ^= 0xff;
    }
    bridge.set_webrtc_remote(theirs, s.webrtc).await.unwrap();
    let browser_rx = browser.connect().unwrap();
    let phone = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let wants_sdes = s.sdes.is_some();
    let answer = bridge
        .set_sip_remote(SipRemote {
            rtp: phone.local_addr().unwrap(),
            rtcp: None,
            rtcp_mux: false,
            crypto: s.sdes.map(|k| CryptoAttribute::new(1, k)),
            codecs: s.sip,
            local_direction: Direction::SendRecv,
        })
        .await
        .unwrap();
    assert_eq!(
        answer.is_some(),
        wants_sdes,
        "an a=crypto answer exactly when SDES is on"
    );
    Call {
        engine,
        bridge,
        events,
        local,
        browser,
        browser_rx,
        phone,
    }
}

impl Call {
    async fn event(&mut self, what: &str, pred: impl Fn(&BridgeEvent) -> bool) -> BridgeEvent {
        let deadline = Instant::now() + STEP;
        loop {
            let ev = timeout(deadline - Instant::now(), self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} event within {STEP:?}"))
                .expect("event stream open");
            if pred(&ev) {
                return ev;
            }
        }
    }

    async fn connected(&mut self) {
        self.event("Connected", |e| matches!(e, BridgeEvent::Connected { .. }))
            .await;
        match timeout(STEP, self.browser_rx.events.recv()).await.unwrap() {
            Some(LegEvent::Connected { .. }) => {}
            Some(other) => panic!("browser leg: {other:?}"),
            None => panic!("browser leg events closed"),
        }
    }

    /// The next RTP packet the browser receives.
    async fn browser_recv(&mut self) -> Vec<u8> {
        loop {
            match timeout(STEP, self.browser_rx.media.recv()).await {
                Ok(Some(MediaPacket::Rtp(p))) => return p,
                Ok(Some(MediaPacket::Rtcp(_))) => continue,
                Ok(None) => panic!("browser media closed"),
                Err(_) => panic!("browser received no RTP within {STEP:?}"),
            }
        }
    }

    /// The next RTP packet the phone receives (RTCP skipped), and where from.
    async fn phone_recv(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, from) = timeout(STEP, self.phone.recv_from(&mut buf))
                .await
                .expect("phone received nothing")
                .unwrap();
            let pt = buf[1] & 0x7f;
            if !(72..=76).contains(&pt) {
                return (buf[..n].to_vec(), from);
            }
        }
    }

    async fn close(self) {
        let engine = self.engine.clone();
        self.bridge.close().await;
        let mut browser = self.browser;
        browser.close().await;
        assert_eq!(engine.ports_in_use(), 0, "every media port returned");
        assert_eq!(engine.active_bridges(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_relays_payloads_untouched_and_never_decodes() {
    let mut call = start(Setup {
        range: (42000, 42019),
        browser_range: (42020, 42039),
        webrtc: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        sip: LegCodecs {
            audio: vec![
                AudioFormat {
                    pt: 8,
                    codec: Codec::Pcma,
                },
                pcmu(),
            ],
            telephone_event: None,
            ..Default::default()
        },
        bad_fingerprint: false,
        sdes: None,
    })
    .await;
    let plan = call
        .event("Plan", |e| matches!(e, BridgeEvent::Plan(_)))
        .await;
    let BridgeEvent::Plan(plan) = plan else {
        unreachable!()
    };
    assert!(!plan.transcode, "PCMU is shared: {plan:?}");
    assert_eq!(plan.sip, pcmu());
    call.connected().await;

    let sip_addr = call.local.sip.rtp;
    let mut phone_ssrc_seen = None;
    for i in 0..20u16 {
        // phone → browser
        let payload: Vec<u8> = (0..160).map(|b| (b as u8) ^ (i as u8)).collect();
        let p = rtp(
            0,
            1000 + i,
            5000 + u32::from(i) * 160,
            0xAAAA,
            i == 0,
            &payload,
        );
        call.phone.send_to(&p, sip_addr).await.unwrap();
        let got = call.browser_recv().await;
        let h = header(&got);
        assert_eq!(&got[12..], &payload[..], "payload untouched");
        assert_eq!(h.pt, 0);
        assert_eq!(
            h.ssrc, call.local.webrtc_ssrc,
            "the bridge's own SSRC on the WebRTC leg, the one it told signalling to announce"
        );
        // browser → phone
        let back = rtp(0, 7 + i, 99 + u32::from(i) * 160, 0xBBBB, false, &payload);
        call.browser.send_rtp(&back).await.unwrap();
        let (got, from) = call.phone_recv().await;
        assert_eq!(
            from, sip_addr,
            "sent from the port we signalled (symmetric RTP)"
        );
        assert_eq!(&got[12..], &payload[..]);
        let h = header(&got);
        assert_ne!(h.ssrc, 0xBBBB);
        if let Some((ssrc, seq)) = phone_ssrc_seen {
            assert_eq!(h.ssrc, ssrc, "one stream");
            assert_eq!(h.seq, u16::wrapping_add(seq, 1), "continuous sequence");
        }
        phone_ssrc_seen = Some((h.ssrc, h.seq));
        sleep(Duration::from_millis(5)).await;
    }
    let stats = call.bridge.stats().await.unwrap();
    assert_eq!(stats.webrtc_to_sip.decoded, 0, "{stats:?}");
    assert_eq!(stats.sip_to_webrtc.decoded, 0, "{stats:?}");
    assert_eq!(stats.webrtc_to_sip.sent, 20, "{stats:?}");
    assert_eq!(stats.sip_to_webrtc.sent, 20, "{stats:?}");
    assert!(stats.sip_latched);
    call.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoding_opus_to_pcmu_carries_tones_both_ways_and_dtmf_is_scaled() {
    let mut call = start(Setup {
        range: (42040, 42059),
        browser_range: (42060, 42079),
        webrtc: LegCodecs {
            audio: vec![opus()],
            telephone_event: te(126, 48000),
            ..Default::default()
        },
        sip: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: te(101, 8000),
            ..Default::default()
        },
        bad_fingerprint: false,
        sdes: None,
    })
    .await;
    let BridgeEvent::Plan(plan) = call
        .event("Plan", |e| matches!(e, BridgeEvent::Plan(_)))
        .await
    else {
        unreachable!()
    };
    assert!(plan.transcode && plan.dtmf_relay(), "{plan:?}");
    call.connected().await;

    let mut enc = OpusEncoder::new(48000, OpusConfig::default()).unwrap();
    let mut opus_dec = OpusDecoder::new(48000).unwrap();
    let sip_addr = call.local.sip.rtp;
    let mut heard_by_phone = Vec::new();
    let mut heard_by_browser = Vec::new();
    let mut opus_buf = vec![0u8; 1500];
    let mut pcm48 = vec![0i16; 960];
    let mut ulaw = vec![0u8; 160];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut phone_buf = vec![0u8; 1500];
    for i in 0..100u16 {
        tick.tick().await;
        // browser → phone: 440 Hz Opus
        let n = enc
            .encode(
                &sine(440.0, 48000, usize::from(i) * 960, 960),
                &mut opus_buf,
            )
            .unwrap();
        let p = rtp(111, i, u32::from(i) * 960, 0x1111, i == 0, &opus_buf[..n]);
        call.browser.send_rtp(&p).await.unwrap();
        // phone → browser: 880 Hz PCMU
        for (o, s) in ulaw
            .iter_mut()
            .zip(sine(880.0, 8000, usize::from(i) * 160, 160))
        {
            *o = g711::encode_ulaw(s);
        }
        let p = rtp(0, 500 + i, u32::from(i) * 160, 0x2222, i == 0, &ulaw);
        call.phone.send_to(&p, sip_addr).await.unwrap();
        // collect whatever arrived
        while let Ok(Some(MediaPacket::Rtp(p))) =
            timeout(Duration::from_millis(1), call.browser_rx.media.recv()).await
        {
            if header(&p).pt == 111
                && let Ok(n) = opus_dec.decode(&p[12..], &mut pcm48)
            {
                heard_by_browser.extend_from_slice(&pcm48[..n]);
            }
        }
        while let Ok(Ok((n, _))) = timeout(
            Duration::from_millis(1),
            call.phone.recv_from(&mut phone_buf),
        )
        .await
        {
            if n == 172 && header(&phone_buf[..n]).pt == 0 {
                heard_by_phone.extend(phone_buf[12..n].iter().map(|&c| g711::decode_ulaw(c)));
            }
        }
    }
    assert!(heard_by_phone.len() >= 160 * 60, "{}", heard_by_phone.len());
    assert!(
        heard_by_browser.len() >= 960 * 60,
        "{}",
        heard_by_browser.len()
    );
    let mid = |x: &[i16], rate: usize| x[x.len() / 2 - rate / 4..x.len() / 2 + rate / 4].to_vec();
    let f_phone = dominant_frequency(&mid(&heard_by_phone, 8000), 8000);
    let f_browser = dominant_frequency(&mid(&heard_by_browser, 48000), 48000);
    assert!((f_phone - 440.0).abs() <= 5.0, "phone heard {f_phone} Hz");
    assert!(
        (f_browser - 880.0).abs() <= 5.0,
        "browser heard {f_browser} Hz"
    );

    // DTMF '7' from the browser at 48 kHz reaches the phone at 8 kHz, duration scaled by 1/6.
    for (k, (dur, end)) in [(960u16, false), (1920, false), (4800, true), (4800, true)]
        .into_iter()
        .enumerate()
    {
        let payload = [
            7,
            if end { 0x80 } else { 0 } | 10,
            (dur >> 8) as u8,
            dur as u8,
        ];
        let p = rtp(126, 100 + k as u16, 100 * 960, 0x1111, k == 0, &payload);
        call.browser.send_rtp(&p).await.unwrap();
    }
    let deadline = Instant::now() + STEP;
    let mut durations = Vec::new();
    while durations.len() < 3 && Instant::now() < deadline {
        let (p, _) = call.phone_recv().await;
        if header(&p).pt == 101 {
            assert_eq!(p[12], 7, "event 7");
            durations.push(u16::from_be_bytes([p[14], p[15]]));
        }
    }
    assert_eq!(
        durations.len(),
        3,
        "three telephone-event packets: {durations:?}"
    );
    assert_eq!(&durations[..], &[160, 320, 800], "durations at 8 kHz");
    let ev = call
        .event("Dtmf", |e| matches!(e, BridgeEvent::Dtmf { .. }))
        .await;
    assert_eq!(
        ev,
        BridgeEvent::Dtmf {
            from: LegKind::WebRtc,
            digit: '7',
            duration_ms: 100
        }
    );
    let stats = call.bridge.stats().await.unwrap();
    assert!(stats.webrtc_to_sip.decoded >= 60, "{stats:?}");
    assert!(stats.sip_to_webrtc.decoded >= 60, "{stats:?}");
    call.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_from_the_phone_arrives_as_telephone_event_on_the_webrtc_leg() {
    // As a browser offers: Opus first with telephone-event/48000, and PCMU with /8000. The phone
    // has PCMU only, so PCMU passes through and the events go on its clock (pt 126).
    let webrtc = LegCodecs {
        audio: vec![opus(), pcmu()],
        telephone_event: te(110, 48000),
        other_telephone_events: te(126, 8000).into_iter().collect(),
    };
    let sip = LegCodecs {
        audio: vec![pcmu()],
        telephone_event: te(101, 8000),
        ..Default::default()
    };
    let p = plan(&webrtc, &sip).unwrap();
    assert!(!p.transcode && p.dtmf_relay(), "{p:?}");
    assert_eq!(
        (p.webrtc_event, p.sip_event),
        (te(126, 8000), te(101, 8000))
    );
    let mut call = start(Setup {
        range: (42080, 42099),
        browser_range: (42100, 42119),
        webrtc,
        sip,
        bad_fingerprint: false,
        sdes: None,
    })
    .await;
    call.connected().await;
    let sip_addr = call.local.sip.rtp;
    // A little audio first so the stream exists, then '5' with three end packets.
    for i in 0..3u16 {
        let p = rtp(0, i, u32::from(i) * 160, 0x3333, i == 0, &[0xff; 160]);
        call.phone.send_to(&p, sip_addr).await.unwrap();
    }
    let packets = [
        (400u16, false),
        (800, false),
        (1200, true),
        (1200, true),
        (1200, true),
    ];
    for (k, (dur, end)) in packets.into_iter().enumerate() {
        let payload = [
            5,
            if end { 0x80 } else { 0 } | 10,
            (dur >> 8) as u8,
            dur as u8,
        ];
        let p = rtp(101, 3 + k as u16, 480, 0x3333, k == 0, &payload);
        call.phone.send_to(&p, sip_addr).await.unwrap();
    }
    let mut events = Vec::new();
    while events.len() < 5 {
        let p = call.browser_recv().await;
        let h = header(&p);
        if h.pt == 126 {
            events.push((
                p[12],
                p[13] & 0x80 != 0,
                u16::from_be_bytes([p[14], p[15]]),
                h.ts,
            ));
        } else {
            assert_eq!(h.pt, 0);
        }
    }
    assert!(events.iter().all(|e| e.0 == 5), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| e.1).count(),
        3,
        "three end packets"
    );
    assert!(
        events.iter().all(|e| e.3 == events[0].3),
        "one event timestamp"
    );
    let ev = call
        .event("Dtmf", |e| matches!(e, BridgeEvent::Dtmf { .. }))
        .await;
    assert_eq!(
        ev,
        BridgeEvent::Dtmf {
            from: LegKind::Sip,
            digit: '5',
            duration_ms: 150
        }
    );
    let stats = call.bridge.stats().await.unwrap();
    assert_eq!(stats.sip_to_webrtc.dtmf, 5, "{stats:?}");
    call.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_mismatch_fails_the_webrtc_leg_and_no_media_flows() {
    let mut call = start(Setup {
        range: (42120, 42139),
        browser_range: (42140, 42159),
        webrtc: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        sip: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        bad_fingerprint: true,
        sdes: None,
    })
    .await;
    let sip_addr = call.local.sip.rtp;
    for i in 0..10u16 {
        let p = rtp(0, i, u32::from(i) * 160, 0x4444, i == 0, &[0x55; 160]);
        call.phone.send_to(&p, sip_addr).await.unwrap();
    }
    let ev = call
        .event("Failed", |e| matches!(e, BridgeEvent::Failed { .. }))
        .await;
    let BridgeEvent::Failed { leg, reason } = ev else {
        unreachable!()
    };
    assert_eq!(leg, LegKind::WebRtc);
    assert!(reason.contains("fingerprint"), "{reason}");
    for i in 10..20u16 {
        let p = rtp(0, i, u32::from(i) * 160, 0x4444, false, &[0x55; 160]);
        call.phone.send_to(&p, sip_addr).await.unwrap();
    }
    sleep(Duration::from_millis(200)).await;
    let stats = call.bridge.stats().await.unwrap();
    assert!(!stats.webrtc_connected);
    assert_eq!(stats.sip_to_webrtc.sent, 0, "{stats:?}");
    assert!(stats.sip_to_webrtc.received >= 10, "{stats:?}");
    assert!(
        !matches!(call.browser_rx.media.try_recv(), Ok(MediaPacket::Rtp(_))),
        "no media reached the browser"
    );
    call.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdes_srtp_on_the_sip_leg_both_ways() {
    let phone_key = SdesKey::generate(SdesSuite::AesCm128HmacSha1_80);
    let mut call = start(Setup {
        range: (42160, 42179),
        browser_range: (42180, 42199),
        webrtc: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        sip: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        bad_fingerprint: false,
        sdes: Some(phone_key.clone()),
    })
    .await;
    call.connected().await;
    let mut phone_srtp = SdesSession::new(&phone_key, &call.local.sip.crypto.key).unwrap();
    let sip_addr = call.local.sip.rtp;
    for i in 0..10u16 {
        let payload = [i as u8; 160];
        let p = rtp(0, i, u32::from(i) * 160, 0x5555, i == 0, &payload);
        let protected = phone_srtp.protect_rtp(&p).unwrap();
        call.phone.send_to(&protected, sip_addr).await.unwrap();
        let got = call.browser_recv().await;
        assert_eq!(&got[12..], &payload[..]);
        call.browser.send_rtp(&got).await.unwrap();
        let (back, _) = call.phone_recv().await;
        assert_eq!(back.len(), 12 + 160 + 10, "header, payload, 80-bit tag");
        assert_ne!(&back[12..172], &payload[..], "encrypted on the wire");
        let plain = phone_srtp.unprotect_rtp(&back).unwrap();
        assert_eq!(&plain[12..], &payload[..]);
    }
    // A packet with a bad tag is dropped and does not move anything.
    let mut forged = phone_srtp
        .protect_rtp(&rtp(0, 50, 8000, 0x5555, false, &[9; 160]))
        .unwrap()
        .to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    call.phone.send_to(&forged, sip_addr).await.unwrap();
    sleep(Duration::from_millis(100)).await;
    let stats = call.bridge.stats().await.unwrap();
    assert_eq!(stats.sip_unprotect_failures, 1, "{stats:?}");
    assert_eq!(stats.sip_to_webrtc.sent, 10, "{stats:?}");
    call.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_rtp_latches_to_where_the_phone_really_sends_from() {
    let mut call = start(Setup {
        range: (42200, 42219),
        browser_range: (42220, 42239),
        webrtc: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        sip: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        bad_fingerprint: false,
        sdes: None,
    })
    .await;
    call.connected().await;
    // The phone signalled `call.phone`, but sends from another socket (a NAT rewrote the port).
    let nat = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let sip_addr = call.local.sip.rtp;
    let p = rtp(0, 1, 160, 0x6666, true, &[1; 160]);
    nat.send_to(&p, sip_addr).await.unwrap();
    let ev = call
        .event("Latched", |e| matches!(e, BridgeEvent::Latched(_)))
        .await;
    assert_eq!(ev, BridgeEvent::Latched(nat.local_addr().unwrap()));
    let got = call.browser_recv().await;
    call.browser.send_rtp(&got).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = timeout(STEP, nat.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, sip_addr);
    assert_eq!(&buf[12..n], &[1; 160]);
    // A packet of a payload type nobody negotiated, from a third address, is ignored.
    let stranger = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    stranger
        .send_to(&rtp(99, 2, 320, 0x7777, false, &[2; 160]), sip_addr)
        .await
        .unwrap();
    sleep(Duration::from_millis(100)).await;
    let stats = call.bridge.stats().await.unwrap();
    assert_eq!(stats.sip_destination, Some(nat.local_addr().unwrap()));
    assert_eq!(stats.sip_foreign, 1, "{stats:?}");
    call.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_exhaustion_is_a_clean_error_and_every_port_comes_back() {
    // 6 ports: two bridges of 3 (SIP RTP/RTCP pair + the ICE socket).
    let engine = MediaEngine::new(MediaConfig::new(LOOPBACK, 42240, 42245)).unwrap();
    let (a, _) = engine.create_bridge(WebRtcRole::Answerer).await.unwrap();
    let (b, _) = engine.create_bridge(WebRtcRole::Offerer).await.unwrap();
    assert_eq!(engine.ports_in_use(), 6);
    let err = engine
        .create_bridge(WebRtcRole::Answerer)
        .await
        .expect_err("the range is used up");
    assert!(matches!(err, MediaError::Ports(_)), "{err:?}");
    assert!(err.to_string().contains("42240..=42245"), "{err}");
    assert_eq!(engine.ports_in_use(), 6, "a failed create holds nothing");
    a.close().await;
    // Dropping the handle also ends the bridge and frees its ports.
    drop(b);
    let deadline = Instant::now() + STEP;
    while engine.ports_in_use() != 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.ports_in_use(), 0);
    assert_eq!(engine.active_bridges(), 0);
    let (c, _) = engine.create_bridge(WebRtcRole::Answerer).await.unwrap();
    c.close().await;
    assert_eq!(engine.ports_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvite_rekeys_sdes_only_when_the_phone_changes_its_key_and_hold_stops_sending() {
    let phone_key = SdesKey::generate(SdesSuite::AesCm128HmacSha1_80);
    let mut call = start(Setup {
        range: (42260, 42279),
        browser_range: (42280, 42299),
        webrtc: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        sip: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        bad_fingerprint: false,
        sdes: Some(phone_key.clone()),
    })
    .await;
    call.connected().await;
    let sip_addr = call.local.sip.rtp;
    let remote = |key: &SdesKey, dir: Direction, phone: SocketAddr| SipRemote {
        rtp: phone,
        rtcp: None,
        rtcp_mux: false,
        crypto: Some(CryptoAttribute::new(1, key.clone())),
        codecs: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        local_direction: dir,
    };
    let phone_addr = call.phone.local_addr().unwrap();
    // The same offer again (a session refresh): our key stays, the session goes on.
    let again = call
        .bridge
        .set_sip_remote(remote(&phone_key, Direction::SendRecv, phone_addr))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.key, call.local.sip.crypto.key,
        "no rekey without a new key"
    );
    // The phone rekeys: we answer with a fresh key of ours too, and both directions work.
    let new_phone_key = SdesKey::generate(SdesSuite::AesCm128HmacSha1_80);
    let ours = call
        .bridge
        .set_sip_remote(remote(&new_phone_key, Direction::SendRecv, phone_addr))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(ours.key, call.local.sip.crypto.key, "a fresh key of ours");
    let mut phone_srtp = SdesSession::new(&new_phone_key, &ours.key).unwrap();
    for i in 0..5u16 {
        let payload = [0x40 + i as u8; 160];
        let p = rtp(
            0,
            100 + i,
            16000 + u32::from(i) * 160,
            0x5151,
            i == 0,
            &payload,
        );
        call.phone
            .send_to(&phone_srtp.protect_rtp(&p).unwrap(), sip_addr)
            .await
            .unwrap();
        let got = call.browser_recv().await;
        assert_eq!(&got[12..], &payload[..]);
        call.browser.send_rtp(&got).await.unwrap();
        let (back, _) = call.phone_recv().await;
        let plain = phone_srtp.unprotect_rtp(&back).expect("our new key");
        assert_eq!(&plain[12..], &payload[..]);
    }
    // The phone puts us on hold (its a=sendonly, our recvonly): its music still reaches the
    // browser, nothing goes to the phone.
    call.bridge
        .set_sip_remote(remote(&new_phone_key, Direction::RecvOnly, phone_addr))
        .await
        .unwrap();
    let before = call.bridge.stats().await.unwrap().webrtc_to_sip;
    for i in 5..10u16 {
        let p = rtp(
            0,
            100 + i,
            16000 + u32::from(i) * 160,
            0x5151,
            false,
            &[7; 160],
        );
        call.phone
            .send_to(&phone_srtp.protect_rtp(&p).unwrap(), sip_addr)
            .await
            .unwrap();
        let got = call.browser_recv().await;
        call.browser.send_rtp(&got).await.unwrap();
    }
    sleep(Duration::from_millis(200)).await;
    let after = call.bridge.stats().await.unwrap().webrtc_to_sip;
    assert_eq!(
        after.sent, before.sent,
        "nothing sent to a phone that holds us"
    );
    assert_eq!(after.received, before.received + 5);
    call.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_reports_flow_on_both_legs() {
    let mut call = start(Setup {
        range: (42300, 42319),
        browser_range: (42320, 42339),
        webrtc: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        sip: LegCodecs {
            audio: vec![pcmu()],
            telephone_event: None,
            ..Default::default()
        },
        bad_fingerprint: false,
        sdes: None,
    })
    .await;
    call.connected().await;
    let phone_rtcp = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    call.bridge
        .set_sip_remote(SipRemote {
            rtp: call.phone.local_addr().unwrap(),
            rtcp: Some(phone_rtcp.local_addr().unwrap()),
            rtcp_mux: false,
            crypto: None,
            codecs: LegCodecs {
                audio: vec![pcmu()],
                telephone_event: None,
                ..Default::default()
            },
            local_direction: Direction::SendRecv,
        })
        .await
        .unwrap();
    let sip_addr = call.local.sip.rtp;
    // Media both ways for a few seconds: the first report is due 2.5 s after the first packet.
    let mut sip_report = None;
    let mut webrtc_report = false;
    let mut buf = [0u8; 1500];
    for i in 0..250u16 {
        let p = rtp(0, i, u32::from(i) * 160, 0x8888, i == 0, &[0xff; 160]);
        call.phone.send_to(&p, sip_addr).await.unwrap();
        call.browser
            .send_rtp(&rtp(0, i, u32::from(i) * 160, 0x9999, i == 0, &[0x7f; 160]))
            .await
            .unwrap();
        while let Ok(p) = call.browser_rx.media.try_recv() {
            if let MediaPacket::Rtcp(r) = p {
                webrtc_report |= r.len() >= 8 && (r[1] == 200 || r[1] == 201);
            }
        }
        if let Ok(Ok((n, from))) =
            timeout(Duration::from_millis(20), phone_rtcp.recv_from(&mut buf)).await
        {
            sip_report = Some((buf[1], n, from));
        }
        if sip_report.is_some() && webrtc_report {
            break;
        }
    }
    let (pt, n, from) = sip_report.expect("an RTCP report on the phone's RTCP port");
    assert_eq!(pt, 200, "a sender report: we sent RTP to the phone");
    assert!(
        n >= 28 + 24,
        "SR with one report block, then SDES: {n} bytes"
    );
    assert_eq!(
        from.port(),
        call.local.sip.rtcp_port,
        "sent from our RTCP port"
    );
    assert!(webrtc_report, "an RTCP report reached the browser");
    call.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_fails_halfway_holds_no_port() {
    // 2 ports: the SIP pair fits, the ICE socket does not.
    let engine = MediaEngine::new(MediaConfig::new(LOOPBACK, 42340, 42341)).unwrap();
    let err = engine
        .create_bridge(WebRtcRole::Answerer)
        .await
        .expect_err("no room for the ICE socket");
    assert!(matches!(err, MediaError::Ports(_)), "{err:?}");
    assert_eq!(engine.ports_in_use(), 0);
    assert_eq!(engine.active_bridges(), 0);
}
