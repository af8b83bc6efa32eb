//! One tracing span per call: every log line of a call, text or JSON, carries its Jingle sid
//! and SIP Call-ID, so that an operator greps one id and sees the whole call, XMPP side
//! included. Its own test binary: tracing's per-callsite interest cache is global, and tests
//! running in parallel threads with and without a subscriber make it miss lines.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use xmpp_sip_gateway::config::LogFormat;
use xmpp_sip_gateway::sip::ua::{RequestId, UaEvent};

#[path = "common/engine_harness.rs"]
mod harness;
use harness::{Harness, initiate, phone_sdp, terminate};

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
        let mut h = Harness::new();
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
        h.advance(Duration::from_secs(31));
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
