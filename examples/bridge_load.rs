//! Load tool: per-call memory and CPU of the media bridge. It starts `bridge_driver` as a child
//! process (so the figures are the bridges' alone), plays N browsers (a `WebRtcLeg` each: ICE,
//! DTLS, SRTP) and N phones (plain RTP over UDP) itself, and streams 20 ms audio both ways on
//! every call for a measuring window. It reads the child's RSS (`/proc/<pid>/status`) and CPU
//! time (`/proc/<pid>/stat`) and prints the figures.
//!
//! `cargo build --release --example bridge_driver --example bridge_load &&
//!  target/release/examples/bridge_load --calls 20 --mode passthrough --seconds 10`
//! (`--mode transcode`: Opus on the WebRTC leg, PCMU on the SIP leg).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::UdpSocket;
use xmpp_sip_gateway::media::codec::g711;
use xmpp_sip_gateway::media::codec::opus::{OpusConfig, OpusEncoder};
use xmpp_sip_gateway::media::webrtc::{
    Candidate, CandidateKind, Fingerprint, LegConfig, MediaPacket, RemoteDescription, Setup,
    WebRtcLeg,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

struct Driver {
    /// `connected` events seen so far (they arrive interleaved with other replies).
    connected: usize,
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Driver {
    fn send(&mut self, v: Value) {
        writeln!(self.stdin, "{v}").expect("driver stdin");
    }
    /// Next event matching `event` (others, e.g. `plan`, are skipped; `connected` counted).
    fn expect(&mut self, event: &str) -> Value {
        for line in self.lines.by_ref() {
            let v: Value = serde_json::from_str(&line.expect("driver stdout")).expect("JSON");
            if v["event"] == "connected" {
                self.connected += 1;
            }
            if v["event"] == event {
                return v;
            }
            if v["event"] == "error" || v["event"] == "failed" {
                panic!("driver: {v}");
            }
        }
        panic!("driver exited while waiting for {event}");
    }
    /// (RSS kB, CPU ticks) of the driver process.
    fn usage(&self) -> (u64, u64) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the ")" of the command name: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        (rss, ticks)
    }
}

fn remote_from(created: &Value) -> RemoteDescription {
    let w = &created["webrtc"];
    RemoteDescription {
        ufrag: w["ufrag"].as_str().unwrap().into(),
        pwd: w["pwd"].as_str().unwrap().into(),
        fingerprints: vec![
            Fingerprint::parse("sha-256", w["fingerprint"]["value"].as_str().unwrap()).unwrap(),
        ],
        setup: w["setup"].as_str().unwrap().parse::<Setup>().unwrap(),
        candidates: w["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Candidate {
                foundation: c["foundation"].as_str().unwrap().into(),
                component: 1,
                ip: c["ip"].as_str().unwrap().parse().unwrap(),
                port: c["port"].as_u64().unwrap() as u16,
                priority: c["priority"].as_u64().unwrap() as u32,
                kind: CandidateKind::Host,
                related: None,
            })
            .collect(),
    }
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[tokio::main]
async fn main() {
    let calls: usize = arg("--calls", "20").parse().expect("--calls N");
    let seconds: u64 = arg("--seconds", "10").parse().expect("--seconds S");
    let transcode = arg("--mode", "passthrough") == "transcode";
    let driver_bin = arg("--driver", "target/release/examples/bridge_driver");
    let child = Command::new(&driver_bin)
        .args([
            "--bind",
            "127.0.0.1",
            "--min-port",
            "46000",
            "--max-port",
            "46999",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create("/tmp/bridge_load_driver.log")
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {driver_bin}: {e}"));
    let mut child = child;
    let stdin = child.stdin.take().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut drv = Driver {
        connected: 0,
        child,
        stdin,
        lines,
    };
    drv.expect("ready");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle_rss, _) = drv.usage();

    let (wpt, wname, wclock) = if transcode {
        (111, "opus", 48000)
    } else {
        (0, "PCMU", 8000)
    };
    let received = Arc::new(AtomicU64::new(0));
    let mut browsers = Vec::new();
    let mut phones = Vec::new();
    for i in 0..calls {
        let id = format!("c{i}");
        drv.send(json!({"cmd": "create", "id": id, "webrtc_role": "answerer"}));
        let created = drv.expect("created");
        let base = 47000 + (i as u16) * 2;
        let (mut leg, local) = WebRtcLeg::new(LegConfig::offerer(LOOPBACK, base, base))
            .await
            .expect("browser leg");
        leg.set_remote(remote_from(&created)).unwrap();
        let phone = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
        let cands: Vec<Value> = local
            .candidates
            .iter()
            .map(|c| {
                json!({"foundation": c.foundation, "component": 1, "ip": c.ip.to_string(),
                            "port": c.port, "priority": c.priority, "type": "host"})
            })
            .collect();
        drv.send(
            json!({"cmd": "webrtc_remote", "id": id, "ufrag": local.ufrag, "pwd": local.pwd,
            "fingerprints": [{"hash": "sha-256", "value": local.fingerprint_sha256}],
            "setup": "actpass", "candidates": cands,
            "codecs": [{"pt": wpt, "name": wname, "clock": wclock, "channels": 1}]}),
        );
        drv.expect("ok");
        drv.send(json!({"cmd": "sip_remote", "id": id, "ip": "127.0.0.1",
            "rtp_port": phone.local_addr().unwrap().port(),
            "codecs": [{"pt": 0, "name": "PCMU", "clock": 8000, "channels": 1}]}));
        drv.expect("ok");
        let mut rx = leg.connect().unwrap();
        let r = Arc::clone(&received);
        tokio::spawn(async move {
            while let Some(p) = rx.media.recv().await {
                if matches!(p, MediaPacket::Rtp(_)) {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let sip_addr: SocketAddr = SocketAddr::new(
            LOOPBACK,
            created["sip"]["rtp_port"].as_u64().unwrap() as u16,
        );
        browsers.push(leg);
        phones.push((phone, sip_addr));
    }
    while drv.connected < calls {
        drv.expect("connected");
    }
    let (setup_rss, _) = drv.usage();

    // Payloads: one 20 ms frame of a tone, encoded once.
    let tone: Vec<i16> = (0..960)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 48000.0).sin()) as i16)
        .collect();
    let browser_payload = if transcode {
        let mut enc = OpusEncoder::new(48000, OpusConfig::default()).unwrap();
        let mut out = vec![0u8; 1500];
        let n = enc.encode(&tone, &mut out).unwrap();
        out.truncate(n);
        out
    } else {
        tone.iter()
            .step_by(6)
            .map(|&s| g711::encode_ulaw(s))
            .collect()
    };
    let phone_payload: Vec<u8> = tone
        .iter()
        .step_by(6)
        .map(|&s| g711::encode_ulaw(s))
        .collect();
    let browsers = Arc::new(browsers);
    let phones = Arc::new(phones);
    let phone_received = Arc::new(AtomicU64::new(0));
    for i in 0..calls {
        let phones = Arc::clone(&phones);
        let pr = Arc::clone(&phone_received);
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while phones[i].0.recv_from(&mut buf).await.is_ok() {
                pr.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let start_ticks = drv.usage().1;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let frames = seconds * 50;
    for n in 0..frames {
        tick.tick().await;
        let seq = n as u16;
        for i in 0..calls {
            let w = rtp(
                wpt,
                seq,
                (n as u32) * if transcode { 960 } else { 160 },
                1,
                &browser_payload,
            );
            let _ = browsers[i].send_rtp(&w).await;
            let s = rtp(0, seq, (n as u32) * 160, 2, &phone_payload);
            let _ = phones[i].0.send_to(&s, phones[i].1).await;
        }
    }
    let elapsed = started.elapsed();
    let (run_rss, end_ticks) = drv.usage();
    let hz = 100.0; // USER_HZ on Linux
    let cpu_s = (end_ticks - start_ticks) as f64 / hz;
    let cpu_pct = 100.0 * cpu_s / elapsed.as_secs_f64();
    println!(
        "mode={} calls={calls} window={:.1}s",
        if transcode {
            "transcode (Opus<->PCMU)"
        } else {
            "passthrough (PCMU)"
        },
        elapsed.as_secs_f64()
    );
    println!(
        "driver RSS: idle {idle_rss} kB, {calls} calls connected {setup_rss} kB, streaming {run_rss} kB"
    );
    println!(
        "per call: {:.0} kB RSS (streaming), CPU {:.2} % of one core ({:.2} % total for {calls} calls)",
        (run_rss.saturating_sub(idle_rss)) as f64 / calls as f64,
        cpu_pct / calls as f64,
        cpu_pct
    );
    let expected = frames * calls as u64;
    println!(
        "packets: browsers received {} / phones received {} (sent {expected} each way)",
        received.load(Ordering::Relaxed),
        phone_received.load(Ordering::Relaxed)
    );
    drop(drv.stdin);
    let _ = drv.child.wait();
}
