//! Test fixtures: real SIP messages (after RFC 3261 §24.2, RFC 3665 and RFC 3428) written
//! with `\n` line ends and parsed with rsip after turning them into `\r\n`, plus a fake-clock
//! driver that runs a machine's timers.

use std::time::{Duration, Instant};

use rsip::{Request, Response, SipMessage};

use super::{Action, Ict, Ist, Nict, Nist, TransactionTable};

/// Alice's INVITE to Bob through two proxies (Route set), over UDP.
pub const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds
Max-Forwards: 70
Route: <sip:p1.example.com;lr>
Route: <sip:p2.example.com;lr>
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.example.com>
Content-Type: application/sdp
Content-Length: 149

v=0
o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com
s=-
c=IN IP4 192.0.2.101
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000
";

pub const TRYING_100: &str = "SIP/2.0 100 Trying
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.101
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Content-Length: 0

";

pub const RINGING_180: &str = "SIP/2.0 180 Ringing
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.101
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4>
Content-Length: 0

";

pub const BUSY_486: &str = "SIP/2.0 486 Busy Here
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.101
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Content-Length: 0

";

pub const OK_200: &str = "SIP/2.0 200 OK
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.101
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4>
Content-Length: 0

";

/// The ACK Alice's INVITE transaction sends for the 486 (§17.1.1.3).
pub const ACK_486: &str = "ACK sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds
Route: <sip:p1.example.com;lr>
Route: <sip:p2.example.com;lr>
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 ACK
Content-Length: 0

";

/// The ACK for the 200: a new transaction with its own branch, sent to the Contact (§13.2.2.4).
pub const ACK_200: &str = "ACK sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bKnashds9
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 ACK
Content-Length: 0

";

/// CANCEL of the INVITE: same branch, own method (§9.1).
pub const CANCEL: &str = "CANCEL sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds
Max-Forwards: 70
Route: <sip:p1.example.com;lr>
Route: <sip:p2.example.com;lr>
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 CANCEL
Content-Length: 0

";

/// RFC 3428 §4's MESSAGE, over UDP.
pub const MESSAGE: &str = "MESSAGE sip:user2@domain.com SIP/2.0
Via: SIP/2.0/UDP user1pc.domain.com;branch=z9hG4bK776sgdkse
Max-Forwards: 70
From: sip:user1@domain.com;tag=49583
To: sip:user2@domain.com
Call-ID: asd88asd77a@1.2.3.4
CSeq: 1 MESSAGE
Content-Type: text/plain
Content-Length: 18

Watson, come here.";

pub const MESSAGE_100: &str = "SIP/2.0 100 Trying
Via: SIP/2.0/UDP user1pc.domain.com;branch=z9hG4bK776sgdkse;received=1.2.3.4
From: sip:user1@domain.com;tag=49583
To: sip:user2@domain.com
Call-ID: asd88asd77a@1.2.3.4
CSeq: 1 MESSAGE
Content-Length: 0

";

pub const MESSAGE_200: &str = "SIP/2.0 200 OK
Via: SIP/2.0/UDP user1pc.domain.com;branch=z9hG4bK776sgdkse;received=1.2.3.4
From: sip:user1@domain.com;tag=49583
To: sip:user2@domain.com;tag=ab8asdasd9
Call-ID: asd88asd77a@1.2.3.4
CSeq: 1 MESSAGE
Content-Length: 0

";

/// The fixtures' `\n` line ends as SIP's `\r\n`.
pub fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

pub fn message(text: &str) -> SipMessage {
    SipMessage::try_from(crlf(text).as_str()).expect("fixture parses")
}

pub fn request(text: &str) -> Request {
    match message(text) {
        SipMessage::Request(request) => request,
        SipMessage::Response(_) => panic!("fixture is a response"),
    }
}

pub fn response(text: &str) -> Response {
    match message(text) {
        SipMessage::Response(response) => response,
        SipMessage::Request(_) => panic!("fixture is a request"),
    }
}

/// `text` without its `name:` header lines.
pub fn without_header(text: &str, name: &str) -> String {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.split('\n')
        .filter(|line| !line.to_ascii_lowercase().starts_with(&prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` with every line starting with `name:` replaced by `name: value`.
pub fn with_header(text: &str, name: &str, value: &str) -> String {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.split('\n')
        .map(|line| {
            if line.to_ascii_lowercase().starts_with(&prefix) {
                format!("{name}: {value}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// The timer side shared by the four machines and the table, for the fake-clock driver.
pub trait Timed {
    fn next_timeout(&self) -> Option<Instant>;
    fn fire(&mut self, now: Instant);
    fn drain(&mut self) -> Vec<Action>;
}

macro_rules! timed {
    ($($machine:ty),*) => {$(
        impl Timed for $machine {
            fn next_timeout(&self) -> Option<Instant> {
                self.poll_timeout()
            }
            fn fire(&mut self, now: Instant) {
                self.on_timeout(now)
            }
            fn drain(&mut self) -> Vec<Action> {
                std::iter::from_fn(|| self.poll_action()).collect()
            }
        }
    )*};
}
timed!(Ict, Nict, Ist, Nist);

impl Timed for TransactionTable {
    fn next_timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn fire(&mut self, now: Instant) {
        self.on_timeout(now)
    }
    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.poll_action())
            .map(|(_, action)| action)
            .collect()
    }
}

/// Fires every timer due up to `t0 + until`, like a driver sleeping until `poll_timeout()`,
/// and returns the actions with the time (since `t0`) at which they came out.
pub fn run_timers(
    machine: &mut impl Timed,
    t0: Instant,
    until: Duration,
) -> Vec<(Duration, Action)> {
    let mut out = Vec::new();
    while let Some(at) = machine.next_timeout() {
        if at > t0 + until {
            break;
        }
        machine.fire(at);
        out.extend(machine.drain().into_iter().map(|a| (at - t0, a)));
    }
    out
}

/// The times (since `t0`) of the `Send` actions among `actions`.
pub fn send_times(actions: &[(Duration, Action)]) -> Vec<Duration> {
    actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::Send(_)))
        .map(|(at, _)| *at)
        .collect()
}

/// Durations from fractional seconds, for readable schedules.
pub fn secs(list: &[f64]) -> Vec<Duration> {
    list.iter().map(|s| Duration::from_secs_f64(*s)).collect()
}

pub fn sent_request(action: &Action) -> Option<&Request> {
    match action {
        Action::Send(SipMessage::Request(request)) => Some(request),
        _ => None,
    }
}

pub fn sent_response(action: &Action) -> Option<&Response> {
    match action {
        Action::Send(SipMessage::Response(response)) => Some(response),
        _ => None,
    }
}
