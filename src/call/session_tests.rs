//! Unit tests of one session alone; the call flows are scripted in `engine_tests.rs`.

use std::time::{Duration, Instant};

use super::*;

fn env(random: u64) -> Env {
    Env {
        now: Instant::now(),
        random,
    }
}

fn cfg() -> CallConfig {
    CallConfig {
        component: "gw.example.com".into(),
        separator: '*',
        sip_domain: "sip.example.net".into(),
        caller_id: CallerId::Account,
        ring_timeout: Duration::from_secs(30),
    }
}

#[test]
fn stanza_ids_name_their_call() {
    assert_eq!(
        CallKey::of_stanza_id(&format!("{CALL_ID_PREFIX}42-7")),
        Some(CallKey(42))
    );
    assert_eq!(CallKey::of_stanza_id(&format!("{CALL_ID_PREFIX}d3")), None);
    assert_eq!(CallKey::of_stanza_id("xsg-keepalive-1"), None);
    assert_eq!(CallKey::of_stanza_id(CALL_ID_PREFIX), None);
}

/// Romeo's INVITE for juliet, `refuse`d by the engine or not, drawn with `random`.
fn incoming(id: RequestId, refuse: Option<(u16, &str)>, random: u64) -> Session {
    Session::from_sip(
        CallKey(1),
        id,
        Some("juliet@example.com".into()),
        "romeo*sip.example.net@gw.example.com".into(),
        None,
        b"v=0\r\n",
        None,
        &cfg(),
        refuse,
        &env(random),
    )
}

#[test]
fn randomness_comes_from_the_input() {
    let s1 = incoming(RequestId(1), None, 0xabc);
    assert_eq!(s1.sid(), "xsg0000000000000abc");
    assert_ne!(env(1).random2(), env(2).random2());
}

#[test]
fn a_refused_incoming_call_is_over_at_once_and_asks_for_no_media() {
    let mut s = incoming(
        RequestId(9),
        Some((503, "Service Unavailable (the gateway is shutting down)")),
        1,
    );
    assert!(s.is_over());
    let outs: Vec<Output> = std::iter::from_fn(|| s.poll_output()).collect();
    assert_eq!(outs.len(), 1);
    assert!(matches!(
        &outs[0],
        Output::Sip(CallCommand::Reject {
            id: RequestId(9),
            code: 503,
            ..
        })
    ));
}

#[test]
fn unanswered_outcomes_follow_the_reason() {
    assert_eq!(
        Outcome::of_unanswered(&ReasonCondition::Busy),
        Outcome::Busy
    );
    assert_eq!(
        Outcome::of_unanswered(&ReasonCondition::Decline),
        Outcome::Declined
    );
    assert_eq!(
        Outcome::of_unanswered(&ReasonCondition::Timeout),
        Outcome::NoAnswer
    );
    assert_eq!(
        Outcome::of_unanswered(&ReasonCondition::Cancel),
        Outcome::Cancelled
    );
    assert_eq!(
        Outcome::of_unanswered(&ReasonCondition::Gone),
        Outcome::Failed
    );
}
