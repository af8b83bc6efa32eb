//! Two WebRTC legs talk to each other over real UDP sockets on 127.0.0.1 only: ICE, DTLS with
//! fingerprint verification, SRTP both ways; plus the fingerprint-mismatch and port-range cases.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::time::timeout;
use xmpp_sip_gateway::media::webrtc::{
    DEFAULT_SRTP_PROFILES, FailReason, Fingerprint, LegConfig, LegEvent, LegReceivers,
    LocalDescription, MediaPacket, RemoteDescription, Setup, SrtpProfile, WebRtcError, WebRtcLeg,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Generous bound for ICE + DTLS on loopback (it takes well under a second); only here so a
/// broken build fails instead of hanging.
const STEP: Duration = Duration::from_secs(20);

/// What the other side would learn from our Jingle transport.
fn remote_of(local: &LocalDescription) -> RemoteDescription {
    RemoteDescription {
        ufrag: local.ufrag.clone(),
        pwd: local.pwd.clone(),
        fingerprints: vec![Fingerprint::parse("sha-256", &local.fingerprint_sha256).unwrap()],
        setup: local.setup,
        candidates: local.candidates.clone(),
    }
}

/// A PCMU-like RTP packet with a recognizable payload.
fn rtp_packet(ssrc: u32, seq: u16, tag: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"PLAINTEXT-PAYLOAD-");
    p.extend(std::iter::repeat_n(tag, 142));
    p
}

/// An empty RTCP receiver report (RFC 3550 §6.4.2).
fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

async fn next_event(rx: &mut LegReceivers) -> LegEvent {
    timeout(STEP, rx.events.recv())
        .await
        .expect("event in time")
        .expect("event channel open")
}

fn assert_in_range(local: &LocalDescription, min: u16, max: u16) {
    assert!(!local.candidates.is_empty());
    for c in &local.candidates {
        assert_eq!(c.ip, LOOPBACK, "only the configured address is gathered");
        assert!(
            (min..=max).contains(&c.port),
            "port {} outside {min}..={max}",
            c.port
        );
        assert_eq!(c.component, 1);
    }
}

async fn pair(
    offer_range: (u16, u16),
    answer_range: (u16, u16),
) -> (WebRtcLeg, LocalDescription, WebRtcLeg, LocalDescription) {
    let (offerer, offer) =
        WebRtcLeg::new(LegConfig::offerer(LOOPBACK, offer_range.0, offer_range.1))
            .await
            .unwrap();
    let (answerer, answer) = WebRtcLeg::new(LegConfig::answerer(
        LOOPBACK,
        answer_range.0,
        answer_range.1,
    ))
    .await
    .unwrap();
    (offerer, offer, answerer, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_flows_both_ways_over_loopback() {
    exchange(
        ((41000, 41049), (41050, 41099)),
        DEFAULT_SRTP_PROFILES.to_vec(),
        SrtpProfile::AeadAes128Gcm,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_aes_cm_hmac_sha1_80_when_peer_lacks_gcm() {
    exchange(
        ((41100, 41149), (41150, 41199)),
        vec![SrtpProfile::AesCm128HmacSha1_80],
        SrtpProfile::AesCm128HmacSha1_80,
    )
    .await;
}

async fn exchange(
    ranges: ((u16, u16), (u16, u16)),
    answerer_profiles: Vec<SrtpProfile>,
    expected: SrtpProfile,
) {
    let ((omin, omax), (amin, amax)) = ranges;
    let (mut offerer, offer) = WebRtcLeg::new(LegConfig::offerer(LOOPBACK, omin, omax))
        .await
        .unwrap();
    let mut aconfig = LegConfig::answerer(LOOPBACK, amin, amax);
    aconfig.srtp_profiles = answerer_profiles;
    let (mut answerer, answer) = WebRtcLeg::new(aconfig).await.unwrap();
    assert_eq!(offer.setup, Setup::Actpass);
    assert_eq!(answer.setup, Setup::Active);
    assert_in_range(&offer, omin, omax);
    assert_in_range(&answer, amin, amax);
    assert_eq!(offer.fingerprint_sha256.len(), 32 * 3 - 1);

    offerer.set_remote(remote_of(&answer)).unwrap();
    answerer.set_remote(remote_of(&offer)).unwrap();
    let mut orx = offerer.connect().unwrap();
    let mut arx = answerer.connect().unwrap();

    for (name, rx) in [("offerer", &mut orx), ("answerer", &mut arx)] {
        match next_event(rx).await {
            LegEvent::Connected {
                local,
                remote,
                profile,
                elapsed,
            } => {
                assert_eq!(local.ip(), LOOPBACK);
                assert_eq!(remote.ip(), LOOPBACK);
                assert_eq!(profile, expected);
                eprintln!(
                    "{name}: connected {local} -> {remote}, {profile:?}, ICE+DTLS {elapsed:?}"
                );
            }
            other => panic!("{name}: expected Connected, got {other:?}"),
        }
    }

    const N: u16 = 50;
    for seq in 0..N {
        offerer
            .send_rtp(&rtp_packet(0x0FFE_0001, seq, 0xA1))
            .await
            .unwrap();
        answerer
            .send_rtp(&rtp_packet(0x0A45_0002, seq, 0xB2))
            .await
            .unwrap();
    }
    offerer.send_rtcp(&rtcp_rr(0x0FFE_0001)).await.unwrap();
    answerer.send_rtcp(&rtcp_rr(0x0A45_0002)).await.unwrap();

    for (rx, ssrc, tag) in [(&mut arx, 0x0FFE_0001, 0xA1), (&mut orx, 0x0A45_0002, 0xB2)] {
        let mut rtp = Vec::new();
        let mut rtcp = Vec::new();
        while rtp.len() < usize::from(N) || rtcp.is_empty() {
            match timeout(STEP, rx.media.recv()).await.expect("media in time") {
                Some(MediaPacket::Rtp(p)) => rtp.push(p),
                Some(MediaPacket::Rtcp(p)) => rtcp.push(p),
                None => panic!("media channel closed"),
            }
        }
        // Loopback does not reorder; every packet arrives intact after unprotect.
        for (seq, p) in rtp.iter().enumerate() {
            let seq = u16::try_from(seq).unwrap();
            assert_eq!(p, &rtp_packet(ssrc, seq, tag));
        }
        assert_eq!(rtcp, vec![rtcp_rr(ssrc)]);
    }

    // Every packet that reached the call layer went through SRTP authentication + decryption,
    // none failed (a plaintext packet on the wire would have failed authentication).
    for leg in [&offerer, &answerer] {
        let s = leg.stats();
        assert_eq!(
            s.rtp_received.load(std::sync::atomic::Ordering::Relaxed),
            u64::from(N)
        );
        assert_eq!(
            s.rtcp_received.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            s.unprotect_failures
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert_eq!(
            s.rtp_sent.load(std::sync::atomic::Ordering::Relaxed),
            u64::from(N)
        );
    }

    offerer.close().await;
    assert_eq!(next_event(&mut orx).await, LegEvent::Closed);
    // The answerer learns through close_notify, or from its own close.
    answerer.close().await;
    assert_eq!(next_event(&mut arx).await, LegEvent::Closed);
    assert!(matches!(
        offerer.send_rtp(&rtp_packet(1, 1, 1)).await,
        Err(WebRtcError::NotConnected)
    ));
}

/// `wrong_for_offerer`: the offerer (DTLS server) is given a wrong fingerprint for the answerer;
/// otherwise the answerer (DTLS client) is given a wrong one for the offerer.
async fn mismatch_case(wrong_for_offerer: bool, ranges: ((u16, u16), (u16, u16))) {
    let (mut offerer, offer, mut answerer, answer) = pair(ranges.0, ranges.1).await;
    let mut to_offerer = remote_of(&answer);
    let mut to_answerer = remote_of(&offer);
    let victim = if wrong_for_offerer {
        &mut to_offerer
    } else {
        &mut to_answerer
    };
    victim.fingerprints[0].value[0] ^= 0xFF;
    offerer.set_remote(to_offerer).unwrap();
    answerer.set_remote(to_answerer).unwrap();
    let mut orx = offerer.connect().unwrap();
    let mut arx = answerer.connect().unwrap();

    let (checker, other) = if wrong_for_offerer {
        (&mut orx, &mut arx)
    } else {
        (&mut arx, &mut orx)
    };
    let ev = next_event(checker).await;
    assert_eq!(ev, LegEvent::Failed(FailReason::FingerprintMismatch));
    assert!(format!("{}", FailReason::FingerprintMismatch).contains("fingerprint"));
    // The other side sees the fatal alert (or at worst its own timeout); never Connected.
    match next_event(other).await {
        LegEvent::Failed(reason) => eprintln!("other side failed: {reason}"),
        ev => panic!("other side must fail, got {ev:?}"),
    }

    // No keys, so nothing can be sent, and nothing was delivered.
    for leg in [&offerer, &answerer] {
        assert!(matches!(
            leg.send_rtp(&rtp_packet(7, 1, 7)).await,
            Err(WebRtcError::NotConnected)
        ));
        assert_eq!(
            leg.stats()
                .rtp_received
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
    assert!(orx.media.try_recv().is_err());
    assert!(arx.media.try_recv().is_err());
    offerer.close().await;
    answerer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_mismatch_detected_by_dtls_server() {
    mismatch_case(true, ((41200, 41249), (41250, 41299))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_mismatch_detected_by_dtls_client() {
    mismatch_case(false, ((41300, 41349), (41350, 41399))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_stay_inside_a_narrow_port_range() {
    let (mut a, la) = WebRtcLeg::new(LegConfig::offerer(LOOPBACK, 41400, 41401))
        .await
        .unwrap();
    let (mut b, lb) = WebRtcLeg::new(LegConfig::answerer(LOOPBACK, 41400, 41401))
        .await
        .unwrap();
    assert_in_range(&la, 41400, 41401);
    assert_in_range(&lb, 41400, 41401);
    assert_ne!(la.candidates[0].port, lb.candidates[0].port);
    assert!(matches!(
        WebRtcLeg::new(LegConfig::offerer(LOOPBACK, 41500, 41499)).await,
        Err(WebRtcError::InvalidPortRange { .. })
    ));
    a.close().await;
    b.close().await;
    // The ports are free again. webrtc-ice releases a socket when its candidate's read task
    // notices the close, a moment after `Agent::close` returns, so allow a short grace period.
    let mut attempts = 0;
    let (mut c, lc) = loop {
        match WebRtcLeg::new(LegConfig::offerer(LOOPBACK, 41400, 41400)).await {
            Ok(leg) => break leg,
            Err(WebRtcError::NoCandidates(_)) if attempts < 40 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("port 41400 not released: {e}"),
        }
    };
    assert_eq!(lc.candidates[0].port, 41400);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_fails_in_bounded_time() {
    let mut config = LegConfig::offerer(LOOPBACK, 41600, 41649);
    config.connect_timeout = Duration::from_secs(3);
    let (mut leg, _local) = WebRtcLeg::new(config).await.unwrap();
    // A peer that never answers: a loopback port nobody listens on.
    let (mut peer, peer_local) = WebRtcLeg::new(LegConfig::answerer(LOOPBACK, 41650, 41699))
        .await
        .unwrap();
    let mut remote = remote_of(&peer_local);
    remote.candidates[0].port = 41700;
    leg.set_remote(remote).unwrap();
    let mut rx = leg.connect().unwrap();
    match next_event(&mut rx).await {
        LegEvent::Failed(FailReason::Timeout(_) | FailReason::IceFailed) => {}
        ev => panic!("expected ICE failure, got {ev:?}"),
    }
    leg.close().await;
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_replaces_the_host_address_in_candidates() {
    // Gathering only binds; nothing is sent, so a documentation address is safe here.
    let public: IpAddr = "203.0.113.7".parse().unwrap();
    let mut config = LegConfig::offerer(LOOPBACK, 41800, 41849);
    config.public_ip = Some(public);
    let (mut leg, local) = WebRtcLeg::new(config).await.unwrap();
    assert_eq!(local.candidates.len(), 1);
    assert_eq!(local.candidates[0].ip, public);
    assert!((41800..=41849).contains(&local.candidates[0].port));
    leg.close().await;
}

/// A UDP forwarder between the two legs that records every datagram, to check what the wire
/// actually carries. Leg B is told that A lives at `toward_b`, leg A that B lives at `toward_a`.
struct WireTap {
    toward_a: std::net::SocketAddr,
    toward_b: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn wire_tap(a: std::net::SocketAddr, b: std::net::SocketAddr) -> WireTap {
    let pa = tokio::net::UdpSocket::bind((LOOPBACK, 0)).await.unwrap(); // faces A
    let pb = tokio::net::UdpSocket::bind((LOOPBACK, 0)).await.unwrap(); // faces B
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    WireTap {
        toward_a: pa.local_addr().unwrap(),
        toward_b: pb.local_addr().unwrap(),
        seen: seen.clone(),
        task: tokio::spawn(async move {
            let (mut ba, mut bb) = (vec![0u8; 2048], vec![0u8; 2048]);
            loop {
                tokio::select! {
                    Ok((n, _)) = pa.recv_from(&mut ba) => {
                        seen.lock().unwrap().push(ba[..n].to_vec());
                        let _ = pb.send_to(&ba[..n], b).await;
                    }
                    Ok((n, _)) = pb.recv_from(&mut bb) => {
                        seen.lock().unwrap().push(bb[..n].to_vec());
                        let _ = pa.send_to(&bb[..n], a).await;
                    }
                }
            }
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_carries_only_srtp_never_the_plaintext() {
    let (mut a, la) = WebRtcLeg::new(LegConfig::offerer(LOOPBACK, 41900, 41949))
        .await
        .unwrap();
    let (mut b, lb) = WebRtcLeg::new(LegConfig::answerer(LOOPBACK, 41950, 41999))
        .await
        .unwrap();
    let addr =
        |l: &LocalDescription| std::net::SocketAddr::new(l.candidates[0].ip, l.candidates[0].port);
    let tap = wire_tap(addr(&la), addr(&lb)).await;
    let mut to_a = remote_of(&lb);
    to_a.candidates[0].port = tap.toward_a.port();
    let mut to_b = remote_of(&la);
    to_b.candidates[0].port = tap.toward_b.port();
    a.set_remote(to_a).unwrap();
    b.set_remote(to_b).unwrap();
    let mut arx = a.connect().unwrap();
    let mut brx = b.connect().unwrap();
    for rx in [&mut arx, &mut brx] {
        assert!(matches!(next_event(rx).await, LegEvent::Connected { .. }));
    }
    for seq in 0..50 {
        a.send_rtp(&rtp_packet(11, seq, 0xA1)).await.unwrap();
        b.send_rtp(&rtp_packet(22, seq, 0xB2)).await.unwrap();
    }
    for (rx, ssrc, tag) in [(&mut brx, 11, 0xA1), (&mut arx, 22, 0xB2)] {
        for seq in 0..50 {
            match timeout(STEP, rx.media.recv()).await.expect("media in time") {
                Some(MediaPacket::Rtp(p)) => assert_eq!(p, rtp_packet(ssrc, seq, tag)),
                other => panic!("expected RTP, got {other:?}"),
            }
        }
    }
    a.close().await;
    b.close().await;
    tap.task.abort();

    let seen = tap.seen.lock().unwrap();
    let media: Vec<&Vec<u8>> = seen
        .iter()
        .filter(|d| (128..=191).contains(&d[0]))
        .collect();
    assert!(media.len() >= 100, "saw {} RTP datagrams", media.len());
    let marker = b"PLAINTEXT-PAYLOAD-";
    for d in seen.iter() {
        assert!(
            !d.windows(marker.len()).any(|w| w == marker),
            "plaintext payload on the wire"
        );
    }
    // SRTP adds the authentication tag (16 bytes for AEAD-GCM, 10 for HMAC-SHA1-80).
    let plain_len = rtp_packet(11, 0, 0xA1).len();
    assert!(media.iter().all(|d| d.len() > plain_len));
}
