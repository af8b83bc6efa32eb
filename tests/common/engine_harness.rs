//! A small driver of the call engine for tests and benches outside the crate: the real
//! router in front, a bridge that says yes to everything, a clock that moves when told.
//! Included with `#[path]` by `tests/call_log.rs` and `benches/calls.rs`.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use minidom::Element;

use xmpp_sip_gateway::call::engine::{Action, Engine};
use xmpp_sip_gateway::call::session::{
    CallConfig, CallKey, CallerId, Env, MediaCommand, MediaEvent,
};
use xmpp_sip_gateway::media::bridge::{BridgeLocal, DEFAULT_SDES_SUITE, SipLocal};
use xmpp_sip_gateway::media::sdes::CryptoAttribute;
use xmpp_sip_gateway::media::webrtc::{Candidate, CandidateKind, LocalDescription, Setup};
use xmpp_sip_gateway::sip::ua::UaEvent;
use xmpp_sip_gateway::xmpp::router::{Routed, Router};

pub fn bridge_local() -> BridgeLocal {
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

/// An ICE-UDP transport with a DTLS fingerprint and one host candidate on 127.0.0.1.
fn transport(ufrag: &str, setup: &str) -> String {
    format!(
        "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='{ufrag}' pwd='asd88fgpdd777uzjYhagZg'>\
         <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='{setup}'>{FP}</fingerprint>\
         <candidate component='1' foundation='1' generation='0' id='c1' ip='127.0.0.1' network='0' \
          port='50000' priority='2130706431' protocol='udp' type='host'/></transport>"
    )
}

pub fn initiate() -> String {
    format!(
        "<iq xmlns='jabber:component:accept' from='juliet@example.com/phone' \
         to='+15551234567@gw.example.com/gw' id='si1' type='set'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' \
          initiator='juliet@example.com/phone' sid='jingle-sid-1'>\
         <content creator='initiator' name='audio' senders='both'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>\
         <payload-type id='0' name='PCMU' clockrate='8000'/><rtcp-mux/></description>\
         {}</content></jingle></iq>",
        transport("8hhy", "actpass")
    )
}

pub fn terminate() -> String {
    "<iq xmlns='jabber:component:accept' from='juliet@example.com/phone' \
     to='+15551234567@gw.example.com/gw' id='st1' type='set'>\
     <jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='jingle-sid-1'>\
     <reason><success/></reason></jingle></iq>"
        .to_string()
}

pub fn phone_sdp() -> Vec<u8> {
    b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
      m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        .to_vec()
}

/// The engine with a bridge that says yes to everything, and a clock that moves when told.
pub struct Harness {
    pub engine: Engine,
    router: Router,
    t0: Instant,
    pub now: Duration,
    n: u64,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
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
        }
    }

    /// Moves the clock on and fires what is due.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        let env = self.env();
        self.engine.on_timeout(&env);
        self.pump();
    }

    pub fn env(&mut self) -> Env {
        self.n += 1;
        Env {
            now: self.t0 + self.now,
            random: 0xabcd_0000 + self.n,
        }
    }
    pub fn pump(&mut self) {
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
    pub fn stanza(&mut self, xml: &str) {
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
    pub fn ua(&mut self, ev: UaEvent) {
        let env = self.env();
        self.engine.on_ua(ev, &env);
        self.pump();
    }
}

/// The callee's session-accept of a SIP → XMPP call (PCMU).
pub fn session_accept(sid: &str) -> String {
    format!(
        "<iq xmlns='jabber:component:accept' from='juliet@example.com/phone' \
         to='romeo*sip.example.net@gw.example.com/gw' id='sa1' type='set'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='session-accept' \
          responder='juliet@example.com/phone' sid='{sid}'>\
         <content creator='initiator' name='audio' senders='both'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>\
         <payload-type id='0' name='PCMU' clockrate='8000'/><rtcp-mux/></description>\
         {}</content></jingle></iq>",
        transport("aB12", "active")
    )
}
