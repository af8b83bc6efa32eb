//! Scripted call flows through the engine, with a fake clock and a scripted bridge: no
//! sockets, no tasks, no sleeps. Each test reads like its flow in PROTOCOLS.md §2 / the README;
//! stanzas go through the real router first, so the routing seam is part of every flow.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use minidom::Element;

use super::*;
use crate::media::bridge::{BridgeLocal, DEFAULT_SDES_SUITE, SipLocal};
use crate::media::sdes::CryptoAttribute;
use crate::media::webrtc::{Candidate, CandidateKind, LocalDescription, Setup};
use crate::sip::service::CallCommand;
use crate::sip::ua::{RequestId, UaEvent};
use crate::xmpp::router::{Routed, Router};

use super::super::session::{
    CallConfig, CallKey, CallerId, CreateError, Env, MediaCommand, MediaEvent, Outcome, Phase, Step,
};

const GW: &str = "gw.example.com";
const JULIET: &str = "juliet@example.com/phone";
const CONTACT: &str = "+15551234567@gw.example.com";

fn cfg() -> CallConfig {
    CallConfig {
        component: GW.into(),
        separator: '*',
        sip_domain: "sip.example.net".into(),
        caller_id: CallerId::Account,
        ring_timeout: Duration::from_secs(30),
    }
}

/// What the scripted bridge does with the commands it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BridgeScript {
    /// Answers every command with success at once.
    Ok,
    /// Leaves the answers to the test.
    Manual,
}

/// The engine, a fake clock, the real router in front of it, and a scripted bridge.
struct Flow {
    engine: Engine,
    router: Router,
    t0: Instant,
    now: Duration,
    draws: u64,
    bridge: BridgeScript,
    /// Everything the engine asked, oldest first; `take()` empties it.
    log: Vec<Action>,
}

impl Flow {
    fn new() -> Self {
        Self::with(cfg())
    }

    fn with(cfg: CallConfig) -> Self {
        Flow {
            engine: Engine::new(cfg),
            router: Router::new(GW, '*'),
            t0: Instant::now(),
            now: Duration::ZERO,
            draws: 0,
            bridge: BridgeScript::Ok,
            log: Vec::new(),
        }
    }

    fn env(&mut self) -> Env {
        self.draws += 1;
        Env {
            now: self.t0 + self.now,
            random: 0x5eed_0000_0000_0000 + self.draws,
        }
    }

    /// One stanza from the XMPP server: routed, the router's own answers logged, the rest fed
    /// to the engine.
    fn stanza(&mut self, xml: &str) {
        // Stanzas on the component stream are in its namespace.
        let name_end = xml.find([' ', '>']).expect("a tag");
        let xml = format!(
            "{} xmlns='jabber:component:accept'{}",
            &xml[..name_end],
            &xml[name_end..]
        );
        let el: Element = xml.parse().expect("test stanza parses");
        let mut routed = Vec::new();
        self.router.handle(&el, &mut routed);
        for r in routed {
            match r {
                Routed::Reply(el) => self.log.push(Action::Xmpp(el)),
                other => {
                    let env = self.env();
                    self.engine.on_routed(other, &env);
                }
            }
        }
        self.pump();
    }

    fn ua(&mut self, ev: UaEvent) {
        let env = self.env();
        self.engine.on_ua(ev, &env);
        self.pump();
    }

    fn media(&mut self, key: CallKey, ev: MediaEvent) {
        let env = self.env();
        self.engine.on_media(key, ev, &env);
        self.pump();
    }

    /// Moves the clock on and fires what is due.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        let env = self.env();
        self.engine.on_timeout(&env);
        self.pump();
    }

    fn link(&mut self, up: bool) {
        let env = self.env();
        self.engine.on_link(up, &env);
        self.pump();
    }

    /// Drains the engine; the scripted bridge answers media commands.
    fn pump(&mut self) {
        loop {
            let mut replies = Vec::new();
            while let Some(a) = self.engine.poll_action() {
                if self.bridge == BridgeScript::Ok
                    && let Action::Media(key, cmd) = &a
                {
                    match cmd {
                        MediaCommand::Create { .. } => {
                            replies.push((*key, MediaEvent::Created(Ok(bridge_local()))))
                        }
                        MediaCommand::SetWebRtcRemote { step, .. } => replies.push((
                            *key,
                            MediaEvent::WebRtcRemoteSet {
                                step: step.clone(),
                                result: Ok(()),
                            },
                        )),
                        MediaCommand::SetSipRemote { step, .. } => replies.push((
                            *key,
                            MediaEvent::SipRemoteSet {
                                step: step.clone(),
                                result: Ok(None),
                            },
                        )),
                        MediaCommand::AddCandidate(_) | MediaCommand::Close => {}
                    }
                }
                self.log.push(a);
            }
            if replies.is_empty() {
                return;
            }
            for (key, ev) in replies {
                let env = self.env();
                self.engine.on_media(key, ev, &env);
            }
        }
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.log)
    }

    /// The stanzas asked for since the last `take`, as XML, in order.
    fn stanzas(&mut self) -> Vec<Element> {
        self.take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Xmpp(el) => Some(el),
                _ => None,
            })
            .collect()
    }

    fn only_call(&self) -> CallKey {
        let keys: Vec<CallKey> = self.engine.keys().collect();
        assert_eq!(keys.len(), 1, "exactly one call expected");
        keys[0]
    }

    fn phase(&self, key: CallKey) -> Option<Phase> {
        self.engine.session(key).map(|s| s.phase())
    }
}

// ---------------------------------------------------------------------------------- fixtures

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

fn transport(ufrag: &str, setup: &str) -> String {
    format!(
        "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='{ufrag}' pwd='asd88fgpdd777uzjYhagZg'>\
         <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='{setup}'>{FP}</fingerprint>\
         <candidate component='1' foundation='1' generation='0' id='c1' ip='127.0.0.1' network='0' \
          port='50000' priority='2130706431' protocol='udp' type='host'/></transport>"
    )
}

/// Juliet's session-initiate to the contact `to` (PROTOCOLS.md §2.2), Opus and PCMU.
fn initiate(sid: &str, to: &str) -> String {
    format!(
        "<iq from='{JULIET}' to='{to}/gw' id='si-{sid}' type='set'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' initiator='{JULIET}' sid='{sid}'>\
         <content creator='initiator' name='audio' senders='both'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>\
         <payload-type id='111' name='opus' clockrate='48000' channels='2'/>\
         <payload-type id='0' name='PCMU' clockrate='8000'/>\
         <payload-type id='126' name='telephone-event' clockrate='8000'/>\
         <rtcp-mux/></description>{}</content></jingle></iq>",
        transport("8hhy", "actpass")
    )
}

fn jingle_iq(from: &str, to: &str, id: &str, action: &str, sid: &str, body: &str) -> String {
    format!(
        "<iq from='{from}' to='{to}' id='{id}' type='set'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='{action}' sid='{sid}'>{body}</jingle></iq>"
    )
}

fn terminate(from: &str, to: &str, sid: &str, reason: &str) -> String {
    jingle_iq(
        from,
        to,
        "st1",
        "session-terminate",
        sid,
        &format!("<reason><{reason}/></reason>"),
    )
}

/// A phone's SDP (answer or offer): PCMU and telephone-event on 127.0.0.1:40000.
fn phone_sdp(direction: &str) -> Vec<u8> {
    format!(
        "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\na={direction}\r\n"
    )
    .into_bytes()
}

fn name_and_action(el: &Element) -> String {
    match el.get_child("jingle", "urn:xmpp:jingle:1") {
        Some(j) => format!("{} {}", el.name(), j.attr("action").unwrap_or("?")),
        None => match el.children().next() {
            Some(c) if el.name() == "message" => format!("message {}", c.name()),
            _ => format!("{} {}", el.name(), el.attr("type").unwrap_or("")),
        },
    }
}

fn summary(stanzas: &[Element]) -> Vec<String> {
    stanzas.iter().map(name_and_action).collect()
}

fn sip_cmds(actions: &[Action]) -> Vec<&CallCommand> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Sip(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn has_close(actions: &[Action], key: CallKey) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Media(k, MediaCommand::Close) if *k == key))
}

fn reason_of(el: &Element) -> Option<String> {
    let j = el.get_child("jingle", "urn:xmpp:jingle:1")?;
    let r = j.get_child("reason", "urn:xmpp:jingle:1")?;
    r.children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_string())
}

/// The SIP side ended an unanswered call of ours (or the caller gave up): the INVITE's final
/// `code`.
fn unanswered(id: RequestId, code: u16, reason: &str) -> UaEvent {
    UaEvent::CallEnded {
        id,
        code,
        reason: reason.into(),
        bye: None,
        bye_by_peer: false,
    }
}

/// An INVITE from romeo for `to`.
fn incoming_to(id: RequestId, to: &str, sdp: Vec<u8>) -> UaEvent {
    UaEvent::Incoming {
        id,
        from: "sip:romeo@sip.example.net".into(),
        from_display: None,
        to: to.into(),
        request_uri: to.into(),
        call_id: "x@y".into(),
        sdp,
        room: None,
    }
}

const SIP_ID: RequestId = RequestId(7);

/// Juliet calls +15551234567 and the INVITE is out (Calling): returns the call.
fn xmpp_call_placed(f: &mut Flow, sid: &str) -> CallKey {
    f.stanza(&initiate(sid, CONTACT));
    let key = f.only_call();
    let actions = f.take();
    let cmds = sip_cmds(&actions);
    let [CallCommand::Invite { tag, uri, .. }] = cmds[..] else {
        panic!("one INVITE expected, got {cmds:?}");
    };
    assert_eq!(*tag, key.0);
    assert_eq!(uri, "sip:+15551234567@sip.example.net;user=phone");
    f.ua(UaEvent::InviteSent {
        tag: key.0,
        result: Ok((SIP_ID, "call-1@gw".into())),
    });
    assert_eq!(f.phase(key), Some(Phase::Calling));
    key
}

// ---------------------------------------------------------------------------------- XMPP → SIP

#[test]
fn xmpp_to_sip_answered_then_caller_hangs_up() {
    let mut f = Flow::new();
    f.stanza(&initiate("s1", CONTACT));
    let key = f.only_call();
    let actions = f.take();
    // Ack first, then the work (§2.3): the bridge takes the caller's transport, then INVITE.
    assert!(
        matches!(&actions[0], Action::Xmpp(el) if el.attr("type") == Some("result") && el.attr("id") == Some("si-s1"))
    );
    assert!(matches!(
        &actions[1],
        Action::Media(k, MediaCommand::Create { webrtc_remote: Some(_), .. }) if *k == key
    ));
    let Some(CallCommand::Invite {
        from_display, sdp, ..
    }) = sip_cmds(&actions).first().copied()
    else {
        panic!("no INVITE: {actions:?}");
    };
    assert_eq!(from_display.as_deref(), Some("juliet@example.com"));
    let offer = String::from_utf8_lossy(sdp);
    // The WebRTC side's codecs first, so passthrough is possible.
    assert!(
        offer.contains("m=audio 20000 RTP/AVP 111 0"),
        "offer lists Opus first: {offer}"
    );
    assert_eq!(f.phase(key), Some(Phase::Inviting));
    f.ua(UaEvent::InviteSent {
        tag: key.0,
        result: Ok((SIP_ID, "call-1@gw".into())),
    });
    assert_eq!(f.engine.stats().started_to_sip, 1);

    // 180 → <ringing/>, once.
    f.ua(UaEvent::Progress {
        id: SIP_ID,
        code: 180,
        sdp: None,
    });
    f.ua(UaEvent::Progress {
        id: SIP_ID,
        code: 180,
        sdp: None,
    });
    let s = f.stanzas();
    assert_eq!(summary(&s), ["iq session-info"]);
    assert!(
        s[0].get_child("jingle", "urn:xmpp:jingle:1")
            .unwrap()
            .get_child("ringing", "urn:xmpp:jingle:apps:rtp:info:1")
            .is_some()
    );
    assert_eq!(f.phase(key), Some(Phase::Ringing));

    // 200 → the bridge takes the answer → session-accept with our transport and PCMU.
    f.now += Duration::from_millis(1500);
    f.ua(UaEvent::Answered {
        id: SIP_ID,
        sdp: phone_sdp("sendrecv"),
    });
    let s = f.stanzas();
    assert_eq!(summary(&s), ["iq session-accept"]);
    let accept = String::from(&s[0]);
    assert!(
        accept.contains("name='PCMU'") || accept.contains("name=\"PCMU\""),
        "{accept}"
    );
    assert!(accept.contains("gwUf"), "our ICE ufrag: {accept}");
    assert!(
        accept.contains("287454020"),
        "the SSRC the bridge sends: {accept}"
    );
    assert_eq!(f.phase(key), Some(Phase::Answered));
    let st = f.engine.stats();
    assert_eq!(st.outcome(Outcome::Answered), 1);
    assert_eq!(st.setup_ms_last, Some(1500));

    // The caller hangs up: result, BYE for the answered dialog, media closed.
    f.stanza(&terminate(
        JULIET,
        "+15551234567@gw.example.com/gw",
        "s1",
        "success",
    ));
    let actions = f.take();
    assert!(matches!(&actions[0], Action::Xmpp(el) if el.attr("type") == Some("result")));
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Hangup { id: SIP_ID, .. }]
    ));
    assert!(has_close(&actions, key));
    assert_eq!(f.engine.stats().active, 0);
    // Answered calls count once, when answered.
    assert_eq!(f.engine.stats().outcome(Outcome::Cancelled), 0);
}

#[test]
fn xmpp_to_sip_busy_and_decline_end_with_their_reasons() {
    for (code, phrase, cond, outcome) in [
        (486, "Busy Here", "busy", Outcome::Busy),
        (603, "Decline", "decline", Outcome::Declined),
    ] {
        let mut f = Flow::new();
        let key = xmpp_call_placed(&mut f, "s1");
        f.ua(UaEvent::CallEnded {
            id: SIP_ID,
            code,
            reason: phrase.into(),
            bye: None,
            bye_by_peer: false,
        });
        let actions = f.take();
        let terminate = actions
            .iter()
            .find_map(|a| match a {
                Action::Xmpp(el) => Some(el.clone()),
                _ => None,
            })
            .expect("session-terminate");
        assert_eq!(name_and_action(&terminate), "iq session-terminate");
        assert_eq!(reason_of(&terminate).as_deref(), Some(cond));
        assert!(String::from(&terminate).contains(&format!("{code} {phrase}")));
        assert!(sip_cmds(&actions).is_empty(), "the SIP side ended it");
        assert!(has_close(&actions, key));
        assert_eq!(f.engine.stats().outcome(outcome), 1);
    }
}

#[test]
fn xmpp_to_sip_unknown_user_is_404_and_not_a_sip_address_is_item_not_found() {
    let mut f = Flow::new();
    let key = xmpp_call_placed(&mut f, "s1");
    f.ua(unanswered(SIP_ID, 404, "Not Found"));
    let s = f.stanzas();
    assert_eq!(reason_of(&s[0]).as_deref(), Some("gone"));
    assert!(f.engine.session(key).is_none());
    assert_eq!(f.engine.stats().outcome(Outcome::Failed), 1);

    // A contact that names no SIP address is refused before any work.
    f.stanza(&initiate("s2", "nonsense@gw.example.com"));
    let s = f.stanzas();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].attr("type"), Some("error"));
    assert!(String::from(&s[0]).contains("item-not-found"));
    assert_eq!(f.engine.stats().active, 0);
}

#[test]
fn xmpp_caller_gives_up_before_answer_cancels() {
    let mut f = Flow::new();
    let key = xmpp_call_placed(&mut f, "s1");
    f.ua(UaEvent::Progress {
        id: SIP_ID,
        code: 180,
        sdp: None,
    });
    f.take();
    // Terminate without a reason while ringing: the INVITE is CANCELled (487).
    f.stanza(&jingle_iq(
        JULIET,
        "+15551234567@gw.example.com/gw",
        "st",
        "session-terminate",
        "s1",
        "",
    ));
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Hangup {
            id: SIP_ID,
            code: 487,
            ..
        }]
    ));
    assert!(has_close(&actions, key));
    // Then the UA's 487 for the cancelled INVITE finds no call.
    f.ua(unanswered(SIP_ID, 487, "Request Terminated"));
    assert!(f.take().is_empty());
    assert_eq!(f.engine.stats().outcome(Outcome::Cancelled), 1);
}

#[test]
fn a_call_that_ends_while_its_invite_is_on_the_way_cancels_it() {
    let mut f = Flow::new();
    f.stanza(&initiate("s1", CONTACT));
    let key = f.only_call();
    f.take();
    f.stanza(&terminate(
        JULIET,
        "+15551234567@gw.example.com/gw",
        "s1",
        "cancel",
    ));
    f.take();
    assert!(f.engine.session(key).is_none());
    f.ua(UaEvent::InviteSent {
        tag: key.0,
        result: Ok((SIP_ID, "c@gw".into())),
    });
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Hangup {
            id: SIP_ID,
            code: 487,
            ..
        }]
    ));
}

#[test]
fn mapped_caller_id_refused_is_placed_again_as_the_account() {
    let mut f = Flow::with(CallConfig {
        caller_id: CallerId::Mapped,
        ..cfg()
    });
    f.stanza(&initiate("s1", CONTACT));
    let key = f.only_call();
    let actions = f.take();
    let [CallCommand::Invite { from_user, .. }] = sip_cmds(&actions)[..] else {
        panic!("INVITE expected")
    };
    assert_eq!(from_user.as_deref(), Some("juliet*example.com"));
    f.ua(UaEvent::InviteSent {
        tag: key.0,
        result: Ok((SIP_ID, "c1@gw".into())),
    });
    f.ua(unanswered(SIP_ID, 403, "Forbidden"));
    let actions = f.take();
    let [
        CallCommand::Invite {
            from_user,
            from_display,
            ..
        },
    ] = sip_cmds(&actions)[..]
    else {
        panic!("a second INVITE expected: {actions:?}")
    };
    assert_eq!(*from_user, None);
    assert_eq!(from_display.as_deref(), Some("juliet@example.com"));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Xmpp(_))),
        "the caller hears nothing of it"
    );
    f.ua(UaEvent::InviteSent {
        tag: key.0,
        result: Ok((RequestId(8), "c2@gw".into())),
    });
    // A second refusal is final.
    f.ua(unanswered(RequestId(8), 403, "Forbidden"));
    assert_eq!(summary(&f.stanzas()), ["iq session-terminate"]);
    assert_eq!(f.engine.stats().started_to_sip, 1, "one call, placed twice");
}

#[test]
fn media_that_cannot_be_allocated_ends_the_call_before_any_invite() {
    let mut f = Flow::new();
    f.bridge = BridgeScript::Manual;
    f.stanza(&initiate("s1", CONTACT));
    let key = f.only_call();
    f.take();
    f.media(
        key,
        MediaEvent::Created(Err(CreateError::Allocate("no ports left".into()))),
    );
    let actions = f.take();
    assert!(sip_cmds(&actions).is_empty());
    let s: Vec<&Element> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(el) => Some(el),
            _ => None,
        })
        .collect();
    assert_eq!(reason_of(s[0]).as_deref(), Some("general-error"));
    assert!(!has_close(&actions, key), "no bridge to close");
    assert_eq!(f.engine.stats().active, 0);
}

#[test]
fn early_media_then_an_unusable_answer_fails_both_sides() {
    let mut f = Flow::new();
    let key = xmpp_call_placed(&mut f, "s1");
    f.ua(UaEvent::Progress {
        id: SIP_ID,
        code: 183,
        sdp: Some(phone_sdp("sendrecv")),
    });
    let actions = f.take();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Media(
            _,
            MediaCommand::SetSipRemote {
                step: Step::EarlyMedia(_),
                ..
            }
        )
    )));
    assert_eq!(f.phase(key), Some(Phase::Ringing));
    f.ua(UaEvent::Answered {
        id: SIP_ID,
        sdp: b"not sdp".to_vec(),
    });
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Hangup {
            id: SIP_ID,
            code: 488,
            ..
        }]
    ));
    assert_eq!(f.engine.stats().outcome(Outcome::Failed), 1);
}

#[test]
fn a_second_2xx_of_a_forked_invite_changes_nothing_at_the_call_layer() {
    let mut f = Flow::new();
    let key = xmpp_call_placed(&mut f, "s1");
    f.ua(UaEvent::Answered {
        id: SIP_ID,
        sdp: phone_sdp("sendrecv"),
    });
    assert_eq!(summary(&f.stanzas()), ["iq session-accept"]);
    // The UA ACKs and BYEs a second fork's 2xx itself; should one reach us, it is ignored.
    f.ua(UaEvent::Answered {
        id: SIP_ID,
        sdp: phone_sdp("sendrecv"),
    });
    assert!(f.take().is_empty());
    assert_eq!(f.phase(key), Some(Phase::Answered));
    assert_eq!(f.engine.stats().outcome(Outcome::Answered), 1);
}

// ---------------------------------------------------------------------------------- hold

fn answered_xmpp_call(f: &mut Flow) -> CallKey {
    let key = xmpp_call_placed(f, "s1");
    f.ua(UaEvent::Answered {
        id: SIP_ID,
        sdp: phone_sdp("sendrecv"),
    });
    f.take();
    key
}

fn session_info(what: &str) -> String {
    jingle_iq(
        JULIET,
        "+15551234567@gw.example.com/gw",
        "hold1",
        "session-info",
        "s1",
        &format!("<{what} xmlns='urn:xmpp:jingle:apps:rtp:info:1'/>"),
    )
}

#[test]
fn hold_from_the_xmpp_side_is_a_sendonly_reinvite_and_glare_is_retried_later() {
    let mut f = Flow::new();
    let key = answered_xmpp_call(&mut f);
    f.stanza(&session_info("hold"));
    let actions = f.take();
    let [CallCommand::Reinvite { id: SIP_ID, sdp }] = sip_cmds(&actions)[..] else {
        panic!("re-INVITE expected: {actions:?}")
    };
    assert!(String::from_utf8_lossy(sdp).contains("a=sendonly"));
    // Glare: 491 → tried again after 2.1–4 s, not before.
    f.ua(UaEvent::ReinviteAnswered {
        id: SIP_ID,
        code: 491,
        sdp: Vec::new(),
    });
    assert!(sip_cmds(&f.take()).is_empty());
    f.advance(Duration::from_millis(2000));
    assert!(sip_cmds(&f.take()).is_empty());
    f.advance(Duration::from_millis(2000));
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Reinvite { id: SIP_ID, .. }]
    ));
    f.ua(UaEvent::ReinviteAnswered {
        id: SIP_ID,
        code: 200,
        sdp: phone_sdp("recvonly"),
    });
    let hold = f.engine.session(key).unwrap().hold().clone();
    assert_eq!(hold.agreed, super::super::session::OurHold::HeldByUs);
    // Resume: sendrecv.
    f.take();
    f.stanza(&session_info("active"));
    let actions = f.take();
    let [CallCommand::Reinvite { sdp, .. }] = sip_cmds(&actions)[..] else {
        panic!("resume re-INVITE expected")
    };
    assert!(String::from_utf8_lossy(sdp).contains("a=sendrecv"));
}

#[test]
fn hold_from_the_phone_is_told_to_the_xmpp_party() {
    let mut f = Flow::new();
    let key = answered_xmpp_call(&mut f);
    f.ua(UaEvent::Reoffer {
        id: SIP_ID,
        sdp: phone_sdp("sendonly"),
    });
    let actions = f.take();
    let cmds = sip_cmds(&actions);
    let [CallCommand::AnswerReinvite { id: SIP_ID, sdp }] = cmds[..] else {
        panic!("answer expected: {actions:?}")
    };
    assert!(String::from_utf8_lossy(sdp).contains("a=recvonly"));
    let infos: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(el) => Some(String::from(el)),
            _ => None,
        })
        .collect();
    assert_eq!(infos.len(), 1);
    assert!(infos[0].contains("<hold"), "{}", infos[0]);
    assert_eq!(
        f.engine.session(key).unwrap().hold().phone,
        super::super::session::PhoneHold::HeldByPhone
    );
    // Off hold.
    f.ua(UaEvent::Reoffer {
        id: SIP_ID,
        sdp: phone_sdp("sendrecv"),
    });
    let s = f.stanzas();
    assert!(String::from(&s[0]).contains("<active"));
    // An unusable re-offer is refused with 488 and changes nothing.
    f.ua(UaEvent::Reoffer {
        id: SIP_ID,
        sdp: b"garbage".to_vec(),
    });
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::RejectReinvite {
            id: SIP_ID,
            code: 488
        }]
    ));
    assert_eq!(f.phase(key), Some(Phase::Answered));
}

// ---------------------------------------------------------------------------------- SIP → XMPP

const ROMEO_CALL: RequestId = RequestId(40);

fn incoming(f: &mut Flow) -> CallKey {
    f.ua(UaEvent::Incoming {
        id: ROMEO_CALL,
        from: "sip:romeo@sip.example.net".into(),
        from_display: Some("Romeo".into()),
        to: "sip:juliet*example.com@sip.example.net".into(),
        request_uri: "sip:juliet*example.com@sip.example.net".into(),
        call_id: "romeo-call@sip.example.net".into(),
        sdp: phone_sdp("sendrecv"),
        room: None,
    });
    f.engine.keys().max().expect("the call")
}

/// The propose's sid (its JMI id).
fn proposed_sid(stanzas: &[Element]) -> String {
    let m = stanzas
        .iter()
        .find(|s| s.name() == "message")
        .expect("a propose");
    m.get_child("propose", "urn:xmpp:jingle-message:0")
        .expect("propose")
        .attr("id")
        .unwrap()
        .to_string()
}

fn jmi(from: &str, kind: &str, sid: &str) -> String {
    format!(
        "<message from='{from}' to='romeo*sip.example.net@gw.example.com/gw' type='chat'>\
         <{kind} xmlns='urn:xmpp:jingle-message:0' id='{sid}'/></message>"
    )
}

fn session_accept(sid: &str) -> String {
    format!(
        "<iq from='{JULIET}' to='romeo*sip.example.net@gw.example.com/gw' id='sa1' type='set'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='session-accept' responder='{JULIET}' sid='{sid}'>\
         <content creator='initiator' name='audio' senders='both'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>\
         <payload-type id='0' name='PCMU' clockrate='8000'/><rtcp-mux/></description>{}\
         </content></jingle></iq>",
        transport("aB12", "active")
    )
}

#[test]
fn sip_to_xmpp_with_jmi_rings_proceeds_and_is_answered() {
    let mut f = Flow::new();
    let key = incoming(&mut f);
    let s = f.stanzas();
    // Directed presence with caps and nick, then the propose to the bare JID.
    assert_eq!(summary(&s), ["presence ", "message propose"]);
    assert_eq!(s[1].attr("to"), Some("juliet@example.com"));
    assert_eq!(
        s[1].attr("from"),
        Some("romeo*sip.example.net@gw.example.com/gw")
    );
    assert!(String::from(&s[0]).contains("Romeo"));
    let sid = proposed_sid(&s);
    assert_eq!(
        f.phase(key),
        Some(Phase::Proposing(super::super::session::Alert::Silent))
    );
    assert_eq!(f.engine.stats().started_from_sip, 1);

    // A device rings → 180, once.
    f.stanza(&jmi(JULIET, "ringing", &sid));
    f.stanza(&jmi(JULIET, "ringing", &sid));
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Ring {
            id: ROMEO_CALL,
            code: 180,
            ..
        }]
    ));
    // It proceeds → session-initiate to that device, the SIP side's codec (PCMU) first.
    f.stanza(&jmi(JULIET, "proceed", &sid));
    let s = f.stanzas();
    assert_eq!(summary(&s), ["iq session-initiate"]);
    assert_eq!(s[0].attr("to"), Some(JULIET));
    let init = String::from(&s[0]);
    let pcmu = init.find("PCMU").unwrap();
    let opus = init.find("opus").unwrap();
    assert!(pcmu < opus, "PCMU first: {init}");
    // Another device proceeding late changes nothing.
    f.stanza(&jmi("juliet@example.com/laptop", "proceed", &sid));
    assert!(f.stanzas().is_empty());

    // session-accept → result, the bridge takes both legs → 200 with our SDP answer.
    f.now += Duration::from_millis(800);
    f.stanza(&session_accept(&sid));
    let actions = f.take();
    assert!(matches!(&actions[0], Action::Xmpp(el) if el.attr("type") == Some("result")));
    let [
        CallCommand::Answer {
            id: ROMEO_CALL,
            sdp,
        },
    ] = sip_cmds(&actions)[..]
    else {
        panic!("200 expected: {actions:?}")
    };
    let answer = String::from_utf8_lossy(sdp);
    assert!(answer.contains("m=audio 20000 RTP/AVP 0"), "{answer}");
    assert_eq!(f.phase(key), Some(Phase::Answered));
    assert_eq!(f.engine.stats().setup_ms_last, Some(800));

    // The phone hangs up: session-terminate <success/>.
    f.ua(UaEvent::CallEnded {
        id: ROMEO_CALL,
        code: 200,
        reason: "OK".into(),
        bye: Some(200),
        bye_by_peer: true,
    });
    let s = f.stanzas();
    assert_eq!(reason_of(&s[0]).as_deref(), Some("success"));
    assert_eq!(f.engine.stats().active, 0);
}

#[test]
fn the_callee_rejects_busy_or_declines() {
    for (kind_body, code, outcome) in [
        (
            "<reason xmlns='urn:xmpp:jingle:1'><busy/></reason>",
            486,
            Outcome::Busy,
        ),
        ("", 603, Outcome::Declined),
    ] {
        let mut f = Flow::new();
        incoming(&mut f);
        let sid = proposed_sid(&f.stanzas());
        f.stanza(&format!(
            "<message from='{JULIET}' to='romeo*sip.example.net@gw.example.com/gw' type='chat'>\
             <reject xmlns='urn:xmpp:jingle-message:0' id='{sid}'>{kind_body}</reject></message>"
        ));
        let actions = f.take();
        let [
            CallCommand::Reject {
                id: ROMEO_CALL,
                code: c,
                ..
            },
        ] = sip_cmds(&actions)[..]
        else {
            panic!("reject expected: {actions:?}")
        };
        assert_eq!(*c, code);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Xmpp(_))),
            "no retract after a reject"
        );
        assert_eq!(f.engine.stats().outcome(outcome), 1);
    }
}

#[test]
fn someone_else_cannot_answer_for_the_callee() {
    let mut f = Flow::new();
    let key = incoming(&mut f);
    let sid = proposed_sid(&f.stanzas());
    f.stanza(&jmi("mallory@example.org/x", "proceed", &sid));
    f.stanza(&jmi("mallory@example.org/x", "reject", &sid));
    assert!(f.take().is_empty());
    assert!(matches!(f.phase(key), Some(Phase::Proposing(_))));
}

#[test]
fn nobody_answers_within_ring_timeout() {
    let mut f = Flow::new();
    let key = incoming(&mut f);
    f.take();
    assert_eq!(
        f.engine.poll_timeout(),
        Some(f.t0 + Duration::from_secs(30))
    );
    f.advance(Duration::from_secs(29));
    assert!(f.take().is_empty());
    f.advance(Duration::from_secs(1));
    let actions = f.take();
    // A retract to the callee, 480 to the caller.
    let s: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(el) => Some(name_and_action(el)),
            _ => None,
        })
        .collect();
    assert_eq!(s, ["message retract"]);
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Reject {
            id: ROMEO_CALL,
            code: 480,
            ..
        }]
    ));
    assert!(has_close(&actions, key));
    assert_eq!(f.engine.stats().outcome(Outcome::NoAnswer), 1);
    assert_eq!(f.engine.poll_timeout(), None, "no timer left behind");
}

#[test]
fn an_answered_call_is_not_ended_by_its_ring_timer() {
    let mut f = Flow::new();
    incoming(&mut f);
    let sid = proposed_sid(&f.stanzas());
    f.stanza(&jmi(JULIET, "proceed", &sid));
    f.stanza(&session_accept(&sid));
    f.take();
    f.advance(Duration::from_secs(31));
    assert!(f.take().is_empty());
    assert_eq!(f.engine.stats().active, 1);
}

#[test]
fn the_caller_cancels_while_ringing_and_after_initiate() {
    // While the propose rings: retract.
    let mut f = Flow::new();
    incoming(&mut f);
    f.take();
    f.ua(unanswered(ROMEO_CALL, 487, "Request Terminated"));
    let s = f.stanzas();
    assert_eq!(summary(&s), ["message retract"]);
    assert_eq!(f.engine.stats().outcome(Outcome::Cancelled), 1);

    // After session-initiate: session-terminate <cancel/>.
    let mut f = Flow::new();
    incoming(&mut f);
    let sid = proposed_sid(&f.stanzas());
    f.stanza(&jmi(JULIET, "proceed", &sid));
    f.take();
    f.ua(unanswered(ROMEO_CALL, 487, "Request Terminated"));
    let s = f.stanzas();
    assert_eq!(summary(&s), ["iq session-terminate"]);
    assert_eq!(reason_of(&s[0]).as_deref(), Some("cancel"));
}

#[test]
fn the_callee_device_goes_offline() {
    let mut f = Flow::new();
    // Juliet's phone is online (its presence reached the gateway through a subscription).
    f.stanza(&format!(
        "<presence from='{JULIET}' to='romeo*sip.example.net@gw.example.com'/>"
    ));
    f.take();
    incoming(&mut f);
    let sid = proposed_sid(&f.stanzas());
    f.stanza(&jmi(JULIET, "proceed", &sid));
    f.take();
    f.stanza(&format!(
        "<presence from='{JULIET}' to='romeo*sip.example.net@gw.example.com' type='unavailable'/>"
    ));
    let actions = f.take();
    let [
        CallCommand::Reject {
            id: ROMEO_CALL,
            code: 480,
            phrase,
        },
    ] = sip_cmds(&actions)[..]
    else {
        panic!("480 expected: {actions:?}")
    };
    assert!(phrase.as_deref().unwrap().contains("offline"));
    assert_eq!(f.engine.stats().outcome(Outcome::Failed), 1);
}

#[test]
fn an_error_to_our_session_initiate_ends_the_call() {
    let mut f = Flow::new();
    incoming(&mut f);
    let sid = proposed_sid(&f.stanzas());
    f.stanza(&jmi(JULIET, "proceed", &sid));
    let s = f.stanzas();
    let id = s[0].attr("id").unwrap().to_string();
    f.stanza(&format!(
        "<iq from='{JULIET}' to='romeo*sip.example.net@gw.example.com/gw' id='{id}' type='error'>\
         <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ));
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Reject {
            id: ROMEO_CALL,
            code: 480,
            ..
        }]
    ));
}

#[test]
fn a_bounced_propose_is_404_for_an_unknown_user() {
    let mut f = Flow::new();
    incoming(&mut f);
    let s = f.stanzas();
    let id = s[1].attr("id").unwrap().to_string();
    f.stanza(&format!(
        "<message from='juliet@example.com' to='romeo*sip.example.net@gw.example.com/gw' id='{id}' type='error'>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    ));
    let actions = f.take();
    let [CallCommand::Reject { code: 404, .. }] = sip_cmds(&actions)[..] else {
        panic!("404 expected: {actions:?}")
    };
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Xmpp(_))),
        "nothing to retract"
    );
}

#[test]
fn incoming_calls_that_cannot_ring_are_refused_before_media() {
    let mut f = Flow::new();
    for (to, sdp, code) in [
        ("sip:nobody@sip.example.net", phone_sdp("sendrecv"), 404),
        (
            "sip:alice*gw.example.com@sip.example.net",
            phone_sdp("sendrecv"),
            482,
        ),
        ("sip:juliet*example.com@sip.example.net", Vec::new(), 488),
        (
            "sip:juliet*example.com@sip.example.net",
            b"junk".to_vec(),
            400,
        ),
    ] {
        f.ua(incoming_to(RequestId(99), to, sdp));
        let actions = f.take();
        let [CallCommand::Reject { code: c, .. }] = sip_cmds(&actions)[..] else {
            panic!("reject expected for {to}: {actions:?}")
        };
        assert_eq!(*c, code, "{to}");
        assert!(!actions.iter().any(|a| matches!(a, Action::Media(..))));
    }
    assert_eq!(f.engine.stats().active, 0);
    assert_eq!(f.engine.stats().started_from_sip, 0);
}

// ---------------------------------------------------------------------------------- link, shutdown

#[test]
fn losing_the_component_link_ends_every_call_and_refuses_new_ones() {
    let mut f = Flow::new();
    let out = xmpp_call_placed(&mut f, "s1");
    f.ua(UaEvent::Answered {
        id: SIP_ID,
        sdp: phone_sdp("sendrecv"),
    });
    let inc = incoming(&mut f);
    f.take();
    f.link(false);
    let actions = f.take();
    let cmds = sip_cmds(&actions);
    assert!(cmds.iter().any(|c| matches!(
        c,
        CallCommand::Hangup {
            id: SIP_ID,
            code: 503,
            ..
        }
    )));
    assert!(cmds.iter().any(|c| matches!(
        c,
        CallCommand::Reject {
            id: ROMEO_CALL,
            code: 503,
            ..
        }
    )));
    assert!(has_close(&actions, out) && has_close(&actions, inc));
    // The XMPP side hears of it once the link is back (queued by the link).
    let s: Vec<&Element> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(el) => Some(el),
            _ => None,
        })
        .collect();
    assert!(
        s.iter()
            .any(|el| reason_of(el).as_deref() == Some("connectivity-error"))
    );
    assert_eq!(f.engine.stats().active, 0);
    // New SIP calls get 480 while it is down.
    f.ua(incoming_to(
        RequestId(41),
        "sip:juliet*example.com@sip.example.net",
        phone_sdp("sendrecv"),
    ));
    assert!(matches!(
        sip_cmds(&f.take())[..],
        [CallCommand::Reject { code: 480, .. }]
    ));
}

#[test]
fn shutdown_ends_calls_on_both_sides() {
    let mut f = Flow::new();
    let key = answered_xmpp_call(&mut f);
    let env = f.env();
    f.engine.shutdown(&env);
    f.pump();
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Hangup {
            id: SIP_ID,
            code: 503,
            ..
        }]
    ));
    let s: Vec<&Element> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(el) => Some(el),
            _ => None,
        })
        .collect();
    assert_eq!(reason_of(s[0]).as_deref(), Some("gone"));
    assert!(has_close(&actions, key));
}

#[test]
fn stanzas_for_no_session_get_unknown_session() {
    let mut f = Flow::new();
    f.stanza(&terminate(
        JULIET,
        "+15551234567@gw.example.com/gw",
        "nope",
        "success",
    ));
    let s = f.stanzas();
    assert_eq!(s[0].attr("type"), Some("error"));
    assert!(String::from(&s[0]).contains("unknown-session"));
}

#[test]
fn a_jmi_propose_to_a_contact_is_answered_with_proceed() {
    let mut f = Flow::new();
    f.stanza(&format!(
        "<message from='{JULIET}' to='{CONTACT}' type='chat'>\
         <propose xmlns='urn:xmpp:jingle-message:0' id='p1'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>"
    ));
    let s = f.stanzas();
    assert_eq!(summary(&s), ["message proceed"]);
    assert_eq!(s[0].attr("from"), Some("+15551234567@gw.example.com/gw"));
    assert_eq!(s[0].attr("to"), Some(JULIET));
}

// ---------------------------------------------------------------------------------- races of the async bridge and SIP answers

#[test]
fn ended_and_refused_calls_leave_nothing_in_the_indexes() {
    let mut f = Flow::new();
    // Refused before ringing (no XMPP user behind the address).
    f.ua(incoming_to(
        RequestId(99),
        "sip:nobody@sip.example.net",
        phone_sdp("sendrecv"),
    ));
    assert_eq!(f.engine.index_sizes(), (0, 0, 0));
    f.take();
    // An answered call, hung up.
    answered_xmpp_call(&mut f);
    assert_eq!(f.engine.index_sizes(), (1, 1, 0));
    f.stanza(&terminate(
        JULIET,
        "+15551234567@gw.example.com/gw",
        "s1",
        "success",
    ));
    assert_eq!(f.engine.index_sizes(), (0, 0, 0));
    // A rung call that times out.
    incoming(&mut f);
    f.advance(Duration::from_secs(30));
    assert_eq!(f.engine.index_sizes(), (0, 0, 0));
    assert_eq!(f.engine.stats().active, 0);
}

#[test]
fn the_ring_timer_does_not_end_a_call_whose_answer_the_bridge_is_taking() {
    let mut f = Flow::new();
    let key = incoming(&mut f);
    let sid = proposed_sid(&f.stanzas());
    f.stanza(&jmi(JULIET, "proceed", &sid));
    f.bridge = BridgeScript::Manual;
    f.now += Duration::from_millis(29_900);
    f.stanza(&session_accept(&sid));
    assert_eq!(f.phase(key), Some(Phase::Accepting));
    let actions = f.take();
    let steps: Vec<Step> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Media(_, MediaCommand::SetSipRemote { step, .. }) => Some(step.clone()),
            _ => None,
        })
        .collect();
    f.advance(Duration::from_millis(200));
    assert!(
        f.take().is_empty(),
        "the ring timer fired on an accepted call"
    );
    f.media(
        key,
        MediaEvent::SipRemoteSet {
            step: steps[0].clone(),
            result: Ok(None),
        },
    );
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::Answer { id: ROMEO_CALL, .. }]
    ));
}

#[test]
fn a_phone_reinvite_waiting_for_the_bridge_is_answered_when_the_call_ends() {
    let mut f = Flow::new();
    answered_xmpp_call(&mut f);
    f.bridge = BridgeScript::Manual;
    f.ua(UaEvent::Reoffer {
        id: SIP_ID,
        sdp: phone_sdp("sendonly"),
    });
    // A second one meanwhile: 500 (RFC 3261 §14.2).
    f.ua(UaEvent::Reoffer {
        id: SIP_ID,
        sdp: phone_sdp("sendrecv"),
    });
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [CallCommand::RejectReinvite {
            id: SIP_ID,
            code: 500
        }]
    ));
    f.stanza(&terminate(
        JULIET,
        "+15551234567@gw.example.com/gw",
        "s1",
        "success",
    ));
    let actions = f.take();
    assert!(matches!(
        sip_cmds(&actions)[..],
        [
            CallCommand::RejectReinvite {
                id: SIP_ID,
                code: 487
            },
            CallCommand::Hangup { id: SIP_ID, .. }
        ]
    ));
}

#[test]
fn shutdown_while_an_invite_is_on_its_way_cancels_it_when_its_id_comes() {
    let mut f = Flow::new();
    f.stanza(&initiate("s1", CONTACT));
    let key = f.only_call();
    f.take();
    let env = f.env();
    f.engine.shutdown(&env);
    f.pump();
    assert_eq!(summary(&f.stanzas()), ["iq session-terminate"]);
    assert!(f.engine.has_orphan_invites());
    f.ua(UaEvent::InviteSent {
        tag: key.0,
        result: Ok((SIP_ID, "c@gw".into())),
    });
    assert!(matches!(
        sip_cmds(&f.take())[..],
        [CallCommand::Hangup {
            id: SIP_ID,
            code: 487,
            ..
        }]
    ));
    assert!(!f.engine.has_orphan_invites());
}

#[test]
fn the_caller_hears_ringing_once_across_the_caller_id_retry() {
    let mut f = Flow::with(CallConfig {
        caller_id: CallerId::Mapped,
        ..cfg()
    });
    let key = xmpp_call_placed(&mut f, "s1");
    f.ua(UaEvent::Progress {
        id: SIP_ID,
        code: 180,
        sdp: None,
    });
    f.ua(unanswered(SIP_ID, 407, "Proxy Authentication Required"));
    f.ua(UaEvent::InviteSent {
        tag: key.0,
        result: Ok((RequestId(8), "c2@gw".into())),
    });
    f.ua(UaEvent::Progress {
        id: RequestId(8),
        code: 180,
        sdp: None,
    });
    assert_eq!(summary(&f.stanzas()), ["iq session-info"]);
    assert_eq!(f.phase(key), Some(Phase::Ringing));
}

#[test]
fn only_the_bounce_of_our_propose_ends_the_call() {
    let mut f = Flow::new();
    let key = incoming(&mut f);
    f.take();
    f.stanza(&format!(
        "<message from='juliet@example.com' to='romeo*sip.example.net@gw.example.com/gw' id='xsg-call-{}-99' type='error'>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
        key.0
    ));
    assert!(f.take().is_empty());
    assert!(matches!(f.phase(key), Some(Phase::Proposing(_))));
}
