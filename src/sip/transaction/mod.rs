//! RFC 3261 §17 transactions as pure state machines.
//!
//! Owns: the four transaction machines ([`ict`], [`nict`], [`ist`], [`nist`]), transaction
//! matching ([`key`]), the table that routes messages to them ([`table`]), and the timer
//! values they share ([`Timers`]). It must not touch sockets, spawn tasks or read the clock:
//! every input carries `now`, every output is an [`Action`] the driver drains with
//! `poll_action()` after each input, and the driver calls `on_timeout(now)` once
//! `now >= poll_timeout()` (the str0m / quinn-proto shape, see DESIGN.md "Seams").
//!
//! All four machines share one shape so that a driver can treat them alike:
//!
//! ```text
//! new(request, reliable, timers, now)          client: queues the first Send
//! on_response(resp, now) / on_request(req, now) input from the transport
//! send_response(resp, now)                      server only: input from the TU
//! on_timeout(now) / on_transport_error(now)
//! poll_timeout() -> Option<Instant>             earliest armed timer
//! poll_action() -> Option<Action>
//! state() / is_terminated()
//! ```
//!
//! RFC 6026 is implemented: both INVITE machines have its Accepted state (Timer L on the
//! server, Timer M on the client), so that retransmitted INVITEs after a 2xx are absorbed
//! instead of looking like new calls, and retransmitted or forked 2xx responses still reach
//! the TU, which must ACK each one.

pub mod ict;
pub mod ist;
pub mod key;
mod message;
pub mod nict;
pub mod nist;
pub mod table;

#[cfg(test)]
mod fixtures;

use std::time::{Duration, Instant};

use rsip::{Header, Headers, Request, Response, SipMessage, StatusCode};

pub use ict::Ict;
pub use ist::Ist;
pub use key::{KeyError, Role, SentBy, TransactionKey};
pub use nict::Nict;
pub use nist::Nist;
pub use table::{
    Incoming, RejectedRequest, ResponseOutcome, TableConfig, TableError, Transaction,
    TransactionTable,
};

/// The base timer values of RFC 3261 §17.1.1.1 and table 4 (appendix A).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate: the first retransmission interval (default 500 ms, §17.1.1.1).
    pub t1: Duration,
    /// The cap on the retransmission interval for non-INVITE requests and INVITE
    /// responses (default 4 s).
    pub t2: Duration,
    /// The longest time a message may stay in the network (default 5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H, J (unreliable), L and M. With the default T1 this is 32 s,
    /// the longest a request or final response can keep being retransmitted.
    pub fn sixty_four_t1(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D for unreliable transports: "at least 32 seconds" (§17.1.1.2). It must
    /// outlast the server's Timer H (64·T1), so it grows with a larger configured T1.
    pub fn timer_d(&self) -> Duration {
        self.sixty_four_t1().max(Duration::from_secs(32))
    }
}

/// The delay after which an INVITE server transaction sends 100 Trying itself if the TU
/// has not answered (§17.2.1: "within 200 ms").
pub const DEFAULT_TRYING_DELAY: Duration = Duration::from_millis(200);

/// Transaction timers, named as in RFC 3261 table 4 and RFC 6026 §8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// ICT: INVITE retransmission, T1 doubling (unreliable transports only).
    A,
    /// ICT: INVITE transaction timeout, 64·T1.
    B,
    /// ICT: wait for response retransmissions in Completed (≥32 s unreliable, 0 reliable).
    D,
    /// NICT: request retransmission, T1 doubling up to T2 (unreliable only).
    E,
    /// NICT: non-INVITE transaction timeout, 64·T1.
    F,
    /// IST: final response retransmission, T1 doubling up to T2 (unreliable only).
    G,
    /// IST: wait for ACK, 64·T1.
    H,
    /// IST: wait for ACK retransmissions in Confirmed (T4 unreliable, 0 reliable).
    I,
    /// NIST: wait for request retransmissions in Completed (64·T1 unreliable, 0 reliable).
    J,
    /// NICT: wait for response retransmissions in Completed (T4 unreliable, 0 reliable).
    K,
    /// IST (RFC 6026): wait for INVITE retransmissions in Accepted, 64·T1.
    L,
    /// ICT (RFC 6026): wait for 2xx retransmissions in Accepted, 64·T1.
    M,
    /// IST: not a lettered RFC timer; the 200 ms after which the transaction sends
    /// 100 Trying itself because the TU has not answered yet (§17.2.1).
    Trying,
}

/// What a transaction asks of its driver. Drain with `poll_action()` after every input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Give this message to the transport: the first request, a retransmission, the ACK
    /// for a non-2xx final response, or a response. Requests go where the original went;
    /// responses go by their top Via (§18.2.2).
    Send(SipMessage),
    /// Client transactions: a response for the TU. Each response is passed up once;
    /// retransmitted finals are absorbed, except 2xx to INVITE in Accepted (RFC 6026
    /// §8.4), which the TU must ACK again.
    Deliver(Response),
    /// INVITE server transaction: an ACK arrived. In Completed (ACK for our non-2xx) this
    /// is informational and sent once; in Accepted (a peer that reused the INVITE branch
    /// for the ACK of a 2xx, RFC 6026 §8.7) the dialog layer needs it to stop 2xx
    /// retransmissions.
    Ack(Request),
    /// Timer B, F or H fired. For client transactions the TU must act as if a 408 had
    /// arrived (§8.1.3.1; [`response_for`] builds one); for Timer H no ACK came.
    Timeout(Timer),
    /// The transport could not send for this transaction (§17.1.4, §17.2.4).
    TransportError,
    /// The transaction ended and can be forgotten. Always the last action.
    Terminated,
}

/// What a TU may not do to a server transaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Responses outside 100-699 do not exist (§21).
    #[error("status code {0} is outside 100-699")]
    InvalidStatus(u16),
    /// A response the state machine has no transition for, e.g. a 180 after the 486.
    #[error("cannot send a {status} response in state {state}")]
    NotAllowed { status: u16, state: &'static str },
}

/// The class of a status code, as the state machines see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// 100-199.
    Provisional,
    /// 200-299.
    Success,
    /// 300-699: "final non-2xx" in the RFC's diagrams.
    Failure,
    /// Anything else: no such response exists, it is dropped.
    Invalid,
}

fn class(status: &StatusCode) -> Class {
    match status.code() {
        100..=199 => Class::Provisional,
        200..=299 => Class::Success,
        300..=699 => Class::Failure,
        _ => Class::Invalid,
    }
}

/// A response to `request` with the headers §8.2.6.2 copies: every Via, From, To, Call-ID,
/// CSeq (and Timestamp on 100 Trying, §8.2.6.1), with no body. No To tag is added: the
/// INVITE server transaction uses this for its own 100 Trying, the TU adds a tag for
/// anything else, and a client TU can use it to synthesize the 408 of a Timer B/F timeout.
pub fn response_for(request: &Request, status: StatusCode) -> Response {
    use message::Field;
    let copy_timestamp = status.code() == 100;
    let mut headers = Headers::default();
    for header in request.headers.iter() {
        let copied = [
            Field::Via,
            Field::From,
            Field::To,
            Field::CallId,
            Field::CSeq,
        ]
        .into_iter()
        .any(|field| message::value_of(header, field).is_some())
            || (copy_timestamp && message::value_of(header, Field::Timestamp).is_some());
        if copied {
            headers.push(header.clone());
        }
    }
    headers.push(Header::ContentLength(rsip::headers::ContentLength::from(0)));
    Response {
        status_code: status,
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The armed timers of one transaction: at most a handful, so a small vector.
#[derive(Clone, Debug, Default)]
struct TimerSet {
    armed: Vec<(Timer, Instant)>,
}

impl TimerSet {
    /// Arms `timer` to fire at `at`, replacing an earlier arming of the same timer.
    fn arm(&mut self, timer: Timer, at: Instant) {
        self.cancel(timer);
        self.armed.push((timer, at));
    }

    fn cancel(&mut self, timer: Timer) {
        self.armed.retain(|(t, _)| *t != timer);
    }

    fn clear(&mut self) {
        self.armed.clear();
    }

    fn next(&self) -> Option<Instant> {
        self.armed.iter().map(|(_, at)| *at).min()
    }

    /// Removes and returns the earliest timer due at `now`, so that a driver that wakes
    /// late still sees timers fire in their order (Timer A before Timer B).
    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let index = self
            .armed
            .iter()
            .enumerate()
            .filter(|(_, (_, at))| *at <= now)
            .min_by_key(|(_, (_, at))| *at)
            .map(|(index, _)| index)?;
        Some(self.armed.remove(index).0)
    }
}

/// Doubles a retransmission interval, capped at `cap` (Timers E and G).
fn double_capped(interval: Duration, cap: Duration) -> Duration {
    interval.saturating_mul(2).min(cap)
}

#[cfg(test)]
mod tests {
    use super::fixtures::{self, *};
    use super::*;

    #[test]
    fn rsip_prints_parsed_fixtures_back_byte_for_byte() {
        // What we retransmit is what we parsed: rsip keeps header text and order as is.
        for text in [INVITE, ACK_486, ACK_200, CANCEL, MESSAGE] {
            assert_eq!(fixtures::message(text).to_string(), fixtures::crlf(text));
        }
        // Except the reason phrase: rsip prints a known status code with its own phrase,
        // the name of its enum variant ("486 BusyHere"), whatever the peer wrote.
        let busy = fixtures::message(BUSY_486).to_string();
        assert!(busy.starts_with("SIP/2.0 486 BusyHere\r\n"));
        assert_eq!(
            busy.replace("BusyHere", "Busy Here"),
            fixtures::crlf(BUSY_486)
        );
    }

    #[test]
    fn response_for_copies_the_transaction_headers() {
        let invite = fixtures::request(INVITE);
        let trying = response_for(&invite, StatusCode::Trying);
        assert_eq!(
            trying.to_string(),
            fixtures::crlf(TRYING_100).replace(";received=192.0.2.101", "")
        );
    }

    #[test]
    fn default_timers_are_rfc_3261_table_4() {
        let timers = Timers::default();
        assert_eq!(timers.t1, Duration::from_millis(500));
        assert_eq!(timers.t2, Duration::from_secs(4));
        assert_eq!(timers.t4, Duration::from_secs(5));
        assert_eq!(timers.sixty_four_t1(), Duration::from_secs(32));
        assert_eq!(timers.timer_d(), Duration::from_secs(32));
        let slow = Timers {
            t1: Duration::from_secs(1),
            ..timers
        };
        assert_eq!(slow.timer_d(), Duration::from_secs(64));
    }
}
