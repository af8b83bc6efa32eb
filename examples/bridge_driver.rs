//! A JSON-lines driver of the media bridge, for the integration tests (not shipped): the tests
//! put aiortc on the WebRTC leg and a plain RTP peer on the SIP leg and drive the gateway's
//! media engine through its public API, as the call layer does, without SIP or Jingle.
//!
//! Usage: `bridge_driver --bind 127.0.0.1 --min-port A --max-port B`. One JSON object per line
//! on stdin (commands), one per line on stdout (events); logs on stderr (`RUST_LOG`).
//!
//! Commands (`id` names a bridge; several may exist):
//! - `{"cmd":"create","id":"c1","webrtc_role":"answerer"|"offerer"}` → `created` with both
//!   legs' local descriptions, or `error`;
//! - `{"cmd":"webrtc_remote","id":..,"ufrag","pwd","fingerprints":[{"hash","value"}],
//!   "setup","candidates":[..],"codecs":[{"pt","name","clock","channels"}],
//!   "telephone_event":{"pt","clock"}|null}` → `ok`;
//! - `{"cmd":"sip_remote","id":..,"ip","rtp_port","rtcp_port","rtcp_mux","crypto",
//!   "codecs","telephone_event","direction"}` → `ok` (with `crypto` when answering SDES);
//! - `{"cmd":"stats","id":..}` → `stats`; `{"cmd":"close","id":..}` → `closed`;
//!   `{"cmd":"ports"}` → `ports`.
//!
//! Asynchronous events: `plan`, `connected`, `failed`, `latched`, `dtmf`. EOF on stdin closes
//! every bridge and exits 0.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use xmpp_sip_gateway::media::bridge::{
    AudioFormat, Bridge, BridgeEvent, BridgeStats, DirectionStats, LegCodecs, MediaConfig,
    MediaEngine, SipRemote, TelephoneEventFormat, WebRtcRole,
};
use xmpp_sip_gateway::media::codec::Codec;
use xmpp_sip_gateway::media::sdes::CryptoAttribute;
use xmpp_sip_gateway::media::webrtc::{
    Candidate, CandidateKind, Fingerprint, LocalDescription, RemoteDescription, Setup,
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let bind: IpAddr = match arg(&args, "--bind").unwrap_or("127.0.0.1".into()).parse() {
        Ok(ip) => ip,
        Err(e) => {
            eprintln!("--bind: {e}");
            return ExitCode::from(64);
        }
    };
    let port = |name: &str, default: u16| -> Result<u16, String> {
        arg(&args, name)
            .map(|v| v.parse::<u16>().map_err(|e| format!("{name}: {e}")))
            .unwrap_or(Ok(default))
    };
    let (min, max) = match (port("--min-port", 40000), port("--max-port", 40099)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let engine = match MediaEngine::new(MediaConfig::new(bind, min, max)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("media engine: {e}");
            return ExitCode::from(64);
        }
    };

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(v) = out_rx.recv().await {
            let mut line = v.to_string();
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    let _ = out_tx.send(json!({"event": "ready"}));

    let mut bridges: HashMap<String, Bridge> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(cmd) => handle(&engine, &mut bridges, &out_tx, &cmd).await,
            Err(e) => json!({"event": "error", "error": format!("bad JSON: {e}")}),
        };
        let _ = out_tx.send(reply);
    }
    for (_, bridge) in bridges.drain() {
        bridge.close().await;
    }
    drop(out_tx);
    let _ = writer.await;
    ExitCode::SUCCESS
}

fn err(id: &str, e: impl std::fmt::Display) -> Value {
    json!({"event": "error", "id": id, "error": e.to_string()})
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string field {key:?}"))
}

fn u64_field(v: &Value, key: &str) -> Result<u64, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("missing number field {key:?}"))
}

async fn handle(
    engine: &MediaEngine,
    bridges: &mut HashMap<String, Bridge>,
    out: &mpsc::UnboundedSender<Value>,
    cmd: &Value,
) -> Value {
    let name = cmd.get("cmd").and_then(Value::as_str).unwrap_or_default();
    let id = cmd
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match name {
        "ports" => json!({
            "event": "ports",
            "in_use": engine.ports_in_use(),
            "active": engine.active_bridges(),
        }),
        "create" => {
            let role = match cmd.get("webrtc_role").and_then(Value::as_str) {
                Some("offerer") => WebRtcRole::Offerer,
                _ => WebRtcRole::Answerer,
            };
            match engine.create_bridge(role).await {
                Ok((mut bridge, local)) => {
                    if let Some(mut events) = bridge.take_events() {
                        let out = out.clone();
                        let id = id.clone();
                        tokio::spawn(async move {
                            while let Some(ev) = events.recv().await {
                                let _ = out.send(event_json(&id, &ev));
                            }
                        });
                    }
                    bridges.insert(id.clone(), bridge);
                    json!({
                        "event": "created",
                        "id": id,
                        "webrtc": local_json(&local.webrtc),
                        "sip": {
                            "ip": local.sip.rtp.ip().to_string(),
                            "rtp_port": local.sip.rtp.port(),
                            "rtcp_port": local.sip.rtcp_port,
                            "crypto": local.sip.crypto.to_value(),
                        },
                    })
                }
                Err(e) => err(&id, e),
            }
        }
        "webrtc_remote" => {
            let Some(bridge) = bridges.get(&id) else {
                return err(&id, "no such bridge");
            };
            let parsed = remote_description(cmd).and_then(|r| Ok((r, codecs(cmd)?)));
            match parsed {
                Ok((remote, codecs)) => match bridge.set_webrtc_remote(remote, codecs).await {
                    Ok(()) => json!({"event": "ok", "id": id, "cmd": name}),
                    Err(e) => err(&id, e),
                },
                Err(e) => err(&id, e),
            }
        }
        "sip_remote" => {
            let Some(bridge) = bridges.get(&id) else {
                return err(&id, "no such bridge");
            };
            match sip_remote(cmd) {
                Ok(remote) => match bridge.set_sip_remote(remote).await {
                    Ok(answer) => json!({
                        "event": "ok", "id": id, "cmd": name,
                        "crypto": answer.map(|c| c.to_value()),
                    }),
                    Err(e) => err(&id, e),
                },
                Err(e) => err(&id, e),
            }
        }
        "stats" => match bridges.get(&id) {
            Some(bridge) => match bridge.stats().await {
                Ok(s) => json!({"event": "stats", "id": id, "stats": stats_json(&s)}),
                Err(e) => err(&id, e),
            },
            None => err(&id, "no such bridge"),
        },
        "close" => match bridges.remove(&id) {
            Some(bridge) => {
                bridge.close().await;
                json!({"event": "closed", "id": id})
            }
            None => err(&id, "no such bridge"),
        },
        other => err(&id, format!("unknown command {other:?}")),
    }
}

fn local_json(l: &LocalDescription) -> Value {
    json!({
        "ufrag": l.ufrag,
        "pwd": l.pwd,
        "fingerprint": {"hash": "sha-256", "value": l.fingerprint_sha256},
        "setup": l.setup.to_string(),
        "candidates": l.candidates.iter().map(|c| json!({
            "foundation": c.foundation,
            "component": c.component,
            "ip": c.ip.to_string(),
            "port": c.port,
            "priority": c.priority,
            "type": c.kind.as_str(),
        })).collect::<Vec<_>>(),
    })
}

fn remote_description(cmd: &Value) -> Result<RemoteDescription, String> {
    let fingerprints = cmd
        .get("fingerprints")
        .and_then(Value::as_array)
        .ok_or("missing fingerprints")?
        .iter()
        .map(|f| {
            Fingerprint::parse(str_field(f, "hash")?, str_field(f, "value")?)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = cmd
        .get("candidates")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().map(candidate).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    Ok(RemoteDescription {
        ufrag: str_field(cmd, "ufrag")?.to_owned(),
        pwd: str_field(cmd, "pwd")?.to_owned(),
        fingerprints,
        setup: str_field(cmd, "setup")?
            .parse::<Setup>()
            .map_err(|e| e.to_string())?,
        candidates,
    })
}

fn candidate(c: &Value) -> Result<Candidate, String> {
    let kind = match c.get("type").and_then(Value::as_str).unwrap_or("host") {
        "host" => CandidateKind::Host,
        "srflx" => CandidateKind::ServerReflexive,
        "prflx" => CandidateKind::PeerReflexive,
        "relay" => CandidateKind::Relay,
        other => return Err(format!("unknown candidate type {other:?}")),
    };
    Ok(Candidate {
        foundation: str_field(c, "foundation")?.to_owned(),
        component: u16::try_from(u64_field(c, "component")?).map_err(|e| e.to_string())?,
        ip: str_field(c, "ip")?
            .parse()
            .map_err(|e| format!("candidate ip: {e}"))?,
        port: u16::try_from(u64_field(c, "port")?).map_err(|e| e.to_string())?,
        priority: u32::try_from(u64_field(c, "priority")?).map_err(|e| e.to_string())?,
        kind,
        related: None,
    })
}

fn codecs(cmd: &Value) -> Result<LegCodecs, String> {
    let mut audio = Vec::new();
    for c in cmd
        .get("codecs")
        .and_then(Value::as_array)
        .ok_or("missing codecs")?
    {
        let name = str_field(c, "name")?;
        let clock = u32::try_from(u64_field(c, "clock")?).map_err(|e| e.to_string())?;
        let codec = Codec::from_rtpmap(name, clock)
            .ok_or_else(|| format!("unsupported codec {name}/{clock}"))?;
        let pt = u8::try_from(u64_field(c, "pt")?).map_err(|e| e.to_string())?;
        audio.push(AudioFormat { pt, codec });
    }
    let telephone_event = match cmd.get("telephone_event") {
        Some(t) if t.is_object() => Some(TelephoneEventFormat {
            pt: u8::try_from(u64_field(t, "pt")?).map_err(|e| e.to_string())?,
            clock: u32::try_from(u64_field(t, "clock")?).map_err(|e| e.to_string())?,
        }),
        _ => None,
    };
    Ok(LegCodecs {
        audio,
        telephone_event,
        ..Default::default()
    })
}

fn sip_remote(cmd: &Value) -> Result<SipRemote, String> {
    let ip: IpAddr = str_field(cmd, "ip")?
        .parse()
        .map_err(|e| format!("ip: {e}"))?;
    let rtp_port = u16::try_from(u64_field(cmd, "rtp_port")?).map_err(|e| e.to_string())?;
    let rtcp = cmd
        .get("rtcp_port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .map(|p| SocketAddr::new(ip, p));
    let crypto = match cmd.get("crypto").and_then(Value::as_str) {
        Some(line) => Some(CryptoAttribute::parse(line).map_err(|e| e.to_string())?),
        None => None,
    };
    use xmpp_sip_gateway::media::bridge::Direction;
    let direction = match cmd.get("direction").and_then(Value::as_str) {
        None | Some("sendrecv") => Direction::SendRecv,
        Some("sendonly") => Direction::SendOnly,
        Some("recvonly") => Direction::RecvOnly,
        Some("inactive") => Direction::Inactive,
        Some(other) => return Err(format!("unknown direction {other:?}")),
    };
    Ok(SipRemote {
        rtp: SocketAddr::new(ip, rtp_port),
        rtcp,
        rtcp_mux: cmd
            .get("rtcp_mux")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        crypto,
        codecs: codecs(cmd)?,
        local_direction: direction,
    })
}

fn format_json(f: &AudioFormat) -> Value {
    json!({"pt": f.pt, "name": f.codec.encoding_name()})
}

fn event_json(id: &str, ev: &BridgeEvent) -> Value {
    match ev {
        BridgeEvent::Plan(p) => json!({
            "event": "plan", "id": id,
            "mode": if p.transcode { "transcode" } else { "passthrough" },
            "webrtc": format_json(&p.webrtc),
            "sip": format_json(&p.sip),
            "dtmf": if p.dtmf_relay() { "relay" } else { "none" },
        }),
        BridgeEvent::Connected {
            leg,
            remote,
            elapsed,
        } => json!({
            "event": "connected", "id": id, "leg": leg.as_str(),
            "remote": remote.to_string(), "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
        }),
        BridgeEvent::Failed { leg, reason } => {
            json!({"event": "failed", "id": id, "leg": leg.as_str(), "reason": reason})
        }
        BridgeEvent::Latched(addr) => {
            json!({"event": "latched", "id": id, "addr": addr.to_string()})
        }
        BridgeEvent::Dtmf {
            from,
            digit,
            duration_ms,
        } => json!({
            "event": "dtmf", "id": id, "from": from.as_str(),
            "digit": digit.to_string(), "duration_ms": duration_ms,
        }),
    }
}

fn direction_json(d: &DirectionStats) -> Value {
    json!({
        "received": d.received, "sent": d.sent, "decoded": d.decoded,
        "concealed": d.concealed, "dropped": d.dropped, "dtmf": d.dtmf,
    })
}

fn stats_json(s: &BridgeStats) -> Value {
    json!({
        "mode": s.plan.map(|p| if p.transcode { "transcode" } else { "passthrough" }),
        "webrtc_connected": s.webrtc_connected,
        "webrtc_to_sip": direction_json(&s.webrtc_to_sip),
        "sip_to_webrtc": direction_json(&s.sip_to_webrtc),
        "sip_destination": s.sip_destination.map(|a| a.to_string()),
        "sip_latched": s.sip_latched,
        "sip_foreign": s.sip_foreign,
        "sip_unprotect_failures": s.sip_unprotect_failures,
        "webrtc_unprotect_failures": s.webrtc_unprotect_failures,
        "webrtc_rtt_ms": s.webrtc_rtt.map(|d| d.as_secs_f64() * 1000.0),
        "sip_rtt_ms": s.sip_rtt.map(|d| d.as_secs_f64() * 1000.0),
    })
}
