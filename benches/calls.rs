//! The call layer's own cost per call: signalling through the router, the engine and the
//! session, with a bridge that answers at once and no I/O (the media and SIP costs are
//! measured by their own benches; `make bench-calls` measures the whole gateway with real
//! peers). One XMPP → SIP call from session-initiate to hang-up, and one SIP → XMPP call
//! from the INVITE to the phone's BYE.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use xmpp_sip_gateway::call::engine::Action;
use xmpp_sip_gateway::sip::ua::{RequestId, UaEvent};

#[path = "../tests/common/engine_harness.rs"]
mod harness;
use harness::{Harness, initiate, phone_sdp, terminate};

fn xmpp_to_sip(h: &mut Harness, n: u64) {
    h.stanza(&initiate());
    let key = h.engine.keys().next().expect("the call");
    let id = RequestId(n);
    h.ua(UaEvent::InviteSent {
        tag: key.0,
        result: Ok((id, format!("c{n}@gw"))),
    });
    h.ua(UaEvent::Progress {
        id,
        code: 180,
        sdp: None,
    });
    h.ua(UaEvent::Answered {
        id,
        sdp: phone_sdp(),
    });
    h.stanza(&terminate());
    assert_eq!(h.engine.stats().active, 0);
}

fn sip_to_xmpp(h: &mut Harness, n: u64) {
    let id = RequestId(n);
    h.ua(UaEvent::Incoming {
        id,
        from: "sip:romeo@sip.example.net".into(),
        from_display: Some("Romeo".into()),
        to: "sip:juliet*example.com@sip.example.net".into(),
        request_uri: "sip:juliet*example.com@sip.example.net".into(),
        call_id: format!("in{n}@pbx"),
        sdp: phone_sdp(),
        room: None,
    });
    let key = h.engine.keys().next().expect("the call");
    let sid = h.engine.session(key).expect("ringing").sid().to_string();
    h.stanza(&format!(
        "<message xmlns='jabber:component:accept' from='juliet@example.com/phone' \
         to='romeo*sip.example.net@gw.example.com/gw' type='chat'>\
         <proceed xmlns='urn:xmpp:jingle-message:0' id='{sid}'/></message>"
    ));
    h.stanza(&harness::session_accept(&sid));
    h.ua(UaEvent::CallEnded {
        id,
        code: 200,
        reason: "OK".into(),
        bye: Some(200),
        bye_by_peer: true,
    });
    assert_eq!(h.engine.stats().active, 0);
}

fn calls(c: &mut Criterion) {
    let mut g = c.benchmark_group("call_layer");
    g.measurement_time(Duration::from_secs(4));
    let mut h = Harness::new();
    let mut n = 0;
    g.bench_function("xmpp_to_sip_call", |b| {
        b.iter(|| {
            n += 1;
            xmpp_to_sip(&mut h, n);
            while h.engine.poll_action().is_some() {}
        })
    });
    g.bench_function("sip_to_xmpp_call", |b| {
        b.iter(|| {
            n += 1;
            sip_to_xmpp(&mut h, n);
            while let Some(a) = h.engine.poll_action() {
                std::hint::black_box(matches!(a, Action::Xmpp(_)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, calls);
criterion_main!(benches);
