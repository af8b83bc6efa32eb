//! One tracing span per call: every log line of a call, text or JSON, carries its Jingle sid
//! and SIP Call-ID, so that an operator greps one id and sees the whole call, XMPP side
//! included. Its own test binary: tracing's per-callsite interest cache is global, and tests
//! running in parallel threads with and without a subscriber make it miss lines.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minidom::Element;

use xmpp_sip_gateway::call::engine::{Action, Engine};
use xmpp_sip_gateway::call::session::{
    CallConfig, CallKey, CallerId, Env, MediaCommand, MediaEvent,
};
use xmpp_sip_gateway::config::LogFormat;
use xmpp_sip_gateway::media::bridge::{BridgeLocal, DEFAULT_SDES_SUITE, SipLocal};
use xmpp_sip_gateway::media::sdes::CryptoAttribute;
use xmpp_sip_gateway::media::webrtc::{Candidate, CandidateKind, LocalDescription, Setup};
use xmpp_sip_gateway::sip::ua::{RequestId, UaEvent};
use xmpp_sip_gateway::xmpp::router::{Routed, Router};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn bridge_local() -> BridgeLocal {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    BridgeLocal {
        webrtc: LocalDescription {
            ufrag: "gwUf".into(),
            pwd: "gwPwd0123456789abcdefg".into(),
            fingerprint_sha256: ["AB"; 32].join(":"),
            setup: Setup::Active,
            candidates: vec![Candidate {
                foundation: "1".into(),
                component: 1,
                ip: lo,
                port: 30000,
                priority: 2130706431,
                kind: CandidateKind::Host,
                related: None,
            }],
        },
        sip: SipLocal {
            rtp: SocketAddr::new(lo, 20000),
            rtcp_port: 20001,
            crypto: CryptoAttribute::generate(1, DEFAULT_SDES_SUITE),
        },
        webrtc_ssrc: 287454020,
        webrtc_cname: "gw-cname".into(),
    }
}

const FP: &str = "3D:C0:FB:B6:C7:69:D0:EF:4C:4B:03:D9:76:AB:BC:42:8D:AD:AC:4A:B7:30:60:9A:43:95:B9:12:90:E8:CC:B9";

fn initiate() -> String {
    format!(
        "<iq xmlns='jabber:component:accept' from='juliet@example.com/phone' \
         to='+15551234567@gw.example.com/gw' id='si1' type='set'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' \
          initiator='juliet@example.com/phone' sid='jingle-sid-1'>\
         <content creator='initiator' name='audio' senders='both'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>\
         <payload-type id='0' name='PCMU' clockrate='8000'/><rtcp-mux/></description>\
         <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='8hhy' pwd='asd88fgpdd777uzjYhagZg'>\
         <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>{FP}</fingerprint>\
         <candidate component='1' foundation='1' generation='0' id='c1' ip='127.0.0.1' network='0' \
          port='50000' priority='2130706431' protocol='udp' type='host'/></transport>\
         </content></jingle></iq>"
    )
}

fn terminate() -> String {
    "<iq xmlns='jabber:component:accept' from='juliet@example.com/phone' \
     to='+15551234567@gw.example.com/gw' id='st1' type='set'>\
     <jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='jingle-sid-1'>\
     <reason><success/></reason></jingle></iq>"
        .to_string()
}

fn phone_sdp() -> Vec<u8> {
    b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
      m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        .to_vec()
}

/// The engine with a bridge that says yes to everything, and a clock that moves when told.
struct Harness {
    engine: Engine,
    router: Router,
    t0: Instant,
    now: Duration,
    n: u64,
}

impl Harness {
    fn env(&mut self) -> Env {
        self.n += 1;
        Env {
            now: self.t0 + self.now,
            random: 0xabcd_0000 + self.n,
        }
    }
    fn pump(&mut self) {
        loop {
            let mut replies: Vec<(CallKey, MediaEvent)> = Vec::new();
            while let Some(a) = self.engine.poll_action() {
                if let Action::Media(key, cmd) = a {
                    match cmd {
                        MediaCommand::Create { .. } => {
                            replies.push((key, MediaEvent::Created(Ok(bridge_local()))))
                        }
                        MediaCommand::SetSipRemote { step, .. } => replies.push((
                            key,
                            MediaEvent::SipRemoteSet {
                                step,
                                result: Ok(None),
                            },
                        )),
                        MediaCommand::SetWebRtcRemote { step, .. } => replies.push((
                            key,
                            MediaEvent::WebRtcRemoteSet {
                                step,
                                result: Ok(()),
                            },
                        )),
                        _ => {}
                    }
                }
            }
            if replies.is_empty() {
                return;
            }
            for (k, ev) in replies {
                let env = self.env();
                self.engine.on_media(k, ev, &env);
            }
        }
    }
    fn stanza(&mut self, xml: &str) {
        let el: Element = xml.parse().expect("stanza parses");
        let mut routed = Vec::new();
        self.router.handle(&el, &mut routed);
        for r in routed {
            if !matches!(r, Routed::Reply(_)) {
                let env = self.env();
                self.engine.on_routed(r, &env);
            }
        }
        self.pump();
    }
    fn ua(&mut self, ev: UaEvent) {
        let env = self.env();
        self.engine.on_ua(ev, &env);
        self.pump();
    }
}

/// One answered XMPP → SIP call and one SIP → XMPP call nobody answers, logged in `format`.
fn two_calls_logged(format: LogFormat) -> String {
    let buf = Captured::default();
    let sub = xmpp_sip_gateway::logging::subscriber(
        format,
        tracing_subscriber::EnvFilter::new("debug"),
        buf.clone(),
        false,
    );
    tracing::subscriber::with_default(sub, || {
        let mut h = Harness {
            engine: Engine::new(CallConfig {
                component: "gw.example.com".into(),
                separator: '*',
                sip_domain: "sip.example.net".into(),
                caller_id: CallerId::Account,
                ring_timeout: Duration::from_secs(30),
            }),
            router: Router::new("gw.example.com", '*'),
            t0: Instant::now(),
            now: Duration::ZERO,
            n: 0,
        };
        h.stanza(&initiate());
        let key = h.engine.keys().next().expect("the call");
        h.ua(UaEvent::InviteSent {
            tag: key.0,
            result: Ok((RequestId(7), "sip-call-id-out@gw".into())),
        });
        h.ua(UaEvent::Progress {
            id: RequestId(7),
            code: 180,
            sdp: None,
        });
        h.ua(UaEvent::Answered {
            id: RequestId(7),
            sdp: phone_sdp(),
        });
        h.stanza(&terminate());
        h.ua(UaEvent::Incoming {
            id: RequestId(40),
            from: "sip:romeo@sip.example.net".into(),
            from_display: None,
            to: "sip:juliet*example.com@sip.example.net".into(),
            request_uri: "sip:juliet*example.com@sip.example.net".into(),
            call_id: "sip-call-id-in@pbx".into(),
            sdp: phone_sdp(),
            room: None,
        });
        h.now = Duration::from_secs(31);
        let env = h.env();
        h.engine.on_timeout(&env);
        h.pump();
    });
    String::from_utf8(buf.0.lock().unwrap().clone()).expect("UTF-8 log")
}

#[test]
fn every_log_line_of_a_call_carries_its_sid_and_call_id_text_and_json() {
    for format in [LogFormat::Text, LogFormat::Json] {
        let log = two_calls_logged(format);
        let with =
            |needle: &str| -> Vec<&str> { log.lines().filter(|l| l.contains(needle)).collect() };
        // XMPP → SIP: from the INVITE on, every line of the call has both ids.
        let out = with("sip-call-id-out@gw");
        for must in [
            "call XMPP → SIP started",
            "session-accept sent",
            "call ended",
        ] {
            assert!(
                out.iter().any(|l| l.contains(must)),
                "{format:?}: no line `{must}` with the Call-ID:\n{log}"
            );
        }
        for l in &out {
            assert!(l.contains("jingle-sid-1"), "{format:?}: no sid in {l}");
        }
        // SIP → XMPP: the Call-ID comes with the INVITE; the sid is ours.
        let inbound = with("sip-call-id-in@pbx");
        for must in ["ringing the XMPP user", "calls.ring_timeout", "call ended"] {
            assert!(
                inbound
                    .iter()
                    .any(|l| l.contains(must) && l.contains("xsg")),
                "{format:?}: no line `{must}` with the Call-ID and sid:\n{log}"
            );
        }
        if matches!(format, LogFormat::Json) {
            for l in log.lines() {
                serde_json::from_str::<serde_json::Value>(l).expect("each line is JSON");
            }
        }
    }
}
