//! INVITE client transaction (RFC 3261 §17.1.1, figure 5, with the Accepted state of
//! RFC 6026 §7.2).
//!
//! Owns: sending and retransmitting one INVITE (Timer A), giving up on it (Timer B), the
//! ACK for a non-2xx final response (§17.1.1.3) and its retransmission, and absorbing
//! retransmitted final responses (Timer D, Timer M). Must not: send the ACK for a 2xx
//! (the TU does, as its own request, §13.2.2.4), CANCEL (the TU's own NICT), or stop
//! waiting in Proceeding (only the TU knows how long a phone may ring).
//!
//! ```text
//!            new: send INVITE, Timer A (unreliable), Timer B
//!  Calling ──1xx──> Proceeding ──1xx──> (pass up)
//!     │ Timer A: resend, double │
//!     │ Timer B: Timeout        │
//!     ├──300-699 (either)──> Completed: send ACK, pass up, Timer D
//!     │                        ├─ 300-699 again: resend ACK
//!     │                        └─ Timer D ──> Terminated
//!     └──2xx (either)──> Accepted: pass up, Timer M
//!                              ├─ 2xx again: pass up (TU ACKs each)
//!                              └─ Timer M ──> Terminated
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rsip::headers::{CSeq, MaxForwards};
use rsip::{Header, Headers, Method, Request, Response, SipMessage};
use tracing::trace;

use super::message::{self, Field};
use super::{Action, Class, Timer, TimerSet, Timers, class};

/// The states of figure 5, plus RFC 6026's Accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Calling,
    Proceeding,
    Completed,
    /// RFC 6026 §7.2: a 2xx arrived; further 2xx are passed up until Timer M.
    Accepted,
    Terminated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Calling => "Calling",
            State::Proceeding => "Proceeding",
            State::Completed => "Completed",
            State::Accepted => "Accepted",
            State::Terminated => "Terminated",
        }
    }
}

/// One INVITE client transaction.
#[derive(Clone, Debug)]
pub struct Ict {
    request: Request,
    reliable: bool,
    timers: Timers,
    state: State,
    /// The current Timer A interval: T1, doubling on each firing.
    timer_a_interval: Duration,
    armed: TimerSet,
    /// The ACK built for the first non-2xx final response, resent on retransmissions.
    ack: Option<Request>,
    actions: VecDeque<Action>,
}

impl Ict {
    /// Starts the transaction: queues the INVITE for sending and arms Timer B, and Timer A
    /// on an unreliable transport (§17.1.1.2).
    pub fn new(request: Request, reliable: bool, timers: Timers, now: Instant) -> Self {
        let mut armed = TimerSet::default();
        if !reliable {
            armed.arm(Timer::A, now + timers.t1);
        }
        armed.arm(Timer::B, now + timers.sixty_four_t1());
        let actions = VecDeque::from([Action::Send(SipMessage::Request(request.clone()))]);
        Self {
            request,
            reliable,
            timers,
            state: State::Calling,
            timer_a_interval: timers.t1,
            armed,
            ack: None,
            actions,
        }
    }

    /// The INVITE this transaction sends.
    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// A response matched to this transaction by the transport (§17.1.3).
    pub fn on_response(&mut self, response: Response, now: Instant) {
        match (self.state, class(&response.status_code)) {
            (State::Calling | State::Proceeding, Class::Provisional) => {
                // §17.1.1.2: no more retransmissions; Timer B only guards Calling.
                self.state = State::Proceeding;
                self.armed.clear();
                self.actions.push_back(Action::Deliver(response));
            }
            (State::Calling | State::Proceeding, Class::Success) => {
                self.state = State::Accepted;
                self.armed.clear();
                self.armed.arm(Timer::M, now + self.timers.sixty_four_t1());
                self.actions.push_back(Action::Deliver(response));
            }
            (State::Calling | State::Proceeding, Class::Failure) => {
                self.state = State::Completed;
                self.armed.clear();
                let ack = build_ack(&self.request, &response);
                self.actions
                    .push_back(Action::Send(SipMessage::Request(ack.clone())));
                self.ack = Some(ack);
                self.actions.push_back(Action::Deliver(response));
                if self.reliable {
                    self.terminate();
                } else {
                    self.armed.arm(Timer::D, now + self.timers.timer_d());
                }
            }
            (State::Completed, Class::Failure) => {
                // A retransmitted final: our ACK was lost. Not passed up again.
                if let Some(ack) = &self.ack {
                    self.actions
                        .push_back(Action::Send(SipMessage::Request(ack.clone())));
                }
            }
            (State::Accepted, Class::Success) => {
                // RFC 6026 §8.4: a retransmitted or forked 2xx; the TU ACKs it.
                self.actions.push_back(Action::Deliver(response));
            }
            (state, _) => {
                trace!(?state, status = %response.status_code, "INVITE client transaction absorbs response");
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.armed.pop_due(now) {
            match (self.state, timer) {
                (State::Calling, Timer::A) => {
                    self.actions
                        .push_back(Action::Send(SipMessage::Request(self.request.clone())));
                    self.timer_a_interval = self.timer_a_interval.saturating_mul(2);
                    self.armed.arm(Timer::A, now + self.timer_a_interval);
                }
                (State::Calling, Timer::B) => {
                    self.actions.push_back(Action::Timeout(Timer::B));
                    self.terminate();
                }
                (State::Completed, Timer::D) | (State::Accepted, Timer::M) => self.terminate(),
                (state, timer) => trace!(?state, ?timer, "stale timer"),
            }
        }
    }

    /// The transport failed to send the INVITE or the ACK (§17.1.4): inform the TU, end.
    pub fn on_transport_error(&mut self, _now: Instant) {
        if !self.is_terminated() {
            self.actions.push_back(Action::TransportError);
            self.terminate();
        }
    }

    /// The earliest armed timer; `None` once terminated.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.armed.next()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.armed.clear();
        self.actions.push_back(Action::Terminated);
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3): Request-URI, Call-ID, From, CSeq
/// number and top Via of the INVITE, To of the response, CSeq method ACK, the INVITE's
/// Route headers, no body. Missing fields are left out rather than invented.
pub fn build_ack(invite: &Request, response: &Response) -> Request {
    let mut headers = Headers::default();
    if let Ok(via) = message::top_via(&invite.headers) {
        headers.push(Header::Via(rsip::headers::Via::from(via.raw)));
    }
    for route in invite
        .headers
        .iter()
        .filter(|h| message::value_of(h, Field::Route).is_some())
    {
        headers.push(route.clone());
    }
    // §8.1.1.6: every request carries Max-Forwards; 70 is the recommended start.
    headers.push(Header::MaxForwards(MaxForwards::from(70)));
    let copy = |headers: &mut Headers, from: &Headers, field: Field| {
        if let Some(header) = from.iter().find(|h| message::value_of(h, field).is_some()) {
            headers.push(header.clone());
        }
    };
    copy(&mut headers, &response.headers, Field::To);
    if message::first(&response.headers, Field::To).is_none() {
        copy(&mut headers, &invite.headers, Field::To);
    }
    copy(&mut headers, &invite.headers, Field::From);
    copy(&mut headers, &invite.headers, Field::CallId);
    if let Ok((number, _)) = message::cseq(&invite.headers) {
        headers.push(Header::CSeq(CSeq::from(format!("{number} ACK"))));
    }
    headers.push(Header::ContentLength(rsip::headers::ContentLength::from(0)));
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::fixtures::{self, *};
    use rsip::prelude::*;

    fn start(reliable: bool) -> (Ict, Instant) {
        let t0 = Instant::now();
        let mut ict = Ict::new(fixtures::request(INVITE), reliable, Timers::default(), t0);
        let first = ict.drain();
        assert_eq!(first.len(), 1);
        assert_eq!(
            sent_request(&first[0]).map(|r| r.method),
            Some(Method::Invite)
        );
        (ict, t0)
    }

    #[test]
    fn unanswered_invite_over_udp_retransmits_then_timer_b() {
        let (mut ict, t0) = start(false);
        let out = run_timers(&mut ict, t0, Duration::from_secs(100));
        // Intervals 0.5, 1, 2, 4, 8, 16 s: Timer A doubling from T1.
        assert_eq!(send_times(&out), secs(&[0.5, 1.5, 3.5, 7.5, 15.5, 31.5]));
        for (_, action) in out.iter().filter(|(_, a)| matches!(a, Action::Send(_))) {
            assert_eq!(sent_request(action), Some(ict.request()));
        }
        let tail: Vec<_> = out.iter().skip(6).cloned().collect();
        assert_eq!(
            tail,
            vec![
                (Duration::from_secs(32), Action::Timeout(Timer::B)),
                (Duration::from_secs(32), Action::Terminated),
            ]
        );
        assert!(ict.is_terminated());
        assert_eq!(ict.poll_timeout(), None);
    }

    #[test]
    fn unanswered_invite_over_tcp_never_retransmits_but_times_out() {
        let (mut ict, t0) = start(true);
        assert_eq!(ict.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        let out = run_timers(&mut ict, t0, Duration::from_secs(100));
        assert_eq!(
            out,
            vec![
                (Duration::from_secs(32), Action::Timeout(Timer::B)),
                (Duration::from_secs(32), Action::Terminated),
            ]
        );
    }

    #[test]
    fn provisional_stops_retransmission_and_timer_b() {
        let (mut ict, t0) = start(false);
        run_timers(&mut ict, t0, ms(600)); // one retransmission
        ict.on_response(fixtures::response(TRYING_100), t0 + ms(700));
        assert_eq!(ict.state(), State::Proceeding);
        assert!(
            matches!(ict.drain().as_slice(), [Action::Deliver(r)] if r.status_code.code() == 100)
        );
        assert_eq!(ict.poll_timeout(), None);
        assert!(run_timers(&mut ict, t0, Duration::from_secs(300)).is_empty());
    }

    #[test]
    fn ringing_then_busy_acks_inside_the_transaction() {
        let (mut ict, t0) = start(false);
        ict.on_response(fixtures::response(RINGING_180), t0 + ms(100));
        ict.on_response(fixtures::response(BUSY_486), t0 + Duration::from_secs(3));
        assert_eq!(ict.state(), State::Completed);
        let actions = ict.drain();
        assert_eq!(actions.len(), 3, "{actions:?}");
        assert!(matches!(&actions[0], Action::Deliver(r) if r.status_code.code() == 180));
        let ack = sent_request(&actions[1]).expect("ACK sent").clone();
        assert!(matches!(&actions[2], Action::Deliver(r) if r.status_code.code() == 486));

        let invite = fixtures::request(INVITE);
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri, invite.uri);
        assert_eq!(ack.via_header(), invite.via_header());
        assert_eq!(
            ack.via_header()
                .ok()
                .and_then(|v| v.typed().ok())
                .and_then(|v| v.branch().cloned()),
            Some(rsip::param::Branch::new("z9hG4bK776asdhds"))
        );
        assert_eq!(ack.call_id_header(), invite.call_id_header());
        assert_eq!(ack.from_header(), invite.from_header());
        assert_eq!(
            ack.to_header().ok().and_then(|t| t.tag().ok().flatten()),
            Some(rsip::param::Tag::new("a6c85cf"))
        );
        assert_eq!(
            ack.cseq_header().map(|c| c.to_string()),
            Ok("CSeq: 314159 ACK".into())
        );
        let routes: Vec<_> = ack
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Route(_)))
            .map(|h| h.to_string())
            .collect();
        assert_eq!(
            routes,
            [
                "Route: <sip:p1.example.com;lr>",
                "Route: <sip:p2.example.com;lr>"
            ]
        );
        assert!(ack.body.is_empty());
        // The ACK is what an RFC 3261 UAC would have sent, header for header.
        assert_eq!(ack, fixtures::request(ACK_486));

        // A retransmitted 486: the ACK again, nothing for the TU.
        ict.on_response(fixtures::response(BUSY_486), t0 + Duration::from_secs(4));
        assert_eq!(
            ict.drain(),
            vec![Action::Send(SipMessage::Request(ack.clone()))]
        );
        // Timer D: 32 s after Completed.
        assert_eq!(ict.poll_timeout(), Some(t0 + Duration::from_secs(35)));
        let out = run_timers(&mut ict, t0, Duration::from_secs(100));
        assert_eq!(out, vec![(Duration::from_secs(35), Action::Terminated)]);
    }

    #[test]
    fn busy_over_tcp_terminates_at_once() {
        let (mut ict, t0) = start(true);
        ict.on_response(fixtures::response(BUSY_486), t0 + ms(100));
        let actions = ict.drain();
        assert!(matches!(
            actions.as_slice(),
            [Action::Send(_), Action::Deliver(_), Action::Terminated]
        ));
        assert!(ict.is_terminated());
    }

    #[test]
    fn ok_goes_to_accepted_and_passes_every_2xx_up_until_timer_m() {
        let (mut ict, t0) = start(false);
        ict.on_response(fixtures::response(RINGING_180), t0 + ms(100));
        ict.on_response(fixtures::response(OK_200), t0 + Duration::from_secs(5));
        assert_eq!(ict.state(), State::Accepted);
        let actions = ict.drain();
        assert!(
            matches!(actions.as_slice(), [Action::Deliver(_), Action::Deliver(r)] if r.status_code.code() == 200)
        );
        // The transaction sends no ACK for a 2xx; a retransmitted 200 goes up again.
        ict.on_response(fixtures::response(OK_200), t0 + ms(5500));
        assert!(
            matches!(ict.drain().as_slice(), [Action::Deliver(r)] if r.status_code.code() == 200)
        );
        // Late provisional or failure responses are absorbed.
        ict.on_response(fixtures::response(BUSY_486), t0 + ms(5600));
        ict.on_response(fixtures::response(RINGING_180), t0 + ms(5700));
        assert!(ict.drain().is_empty());
        let out = run_timers(&mut ict, t0, Duration::from_secs(100));
        assert_eq!(out, vec![(Duration::from_secs(37), Action::Terminated)]);
    }

    #[test]
    fn transport_error_informs_the_tu_and_ends() {
        let (mut ict, t0) = start(false);
        ict.on_transport_error(t0 + ms(1));
        assert_eq!(
            ict.drain(),
            vec![Action::TransportError, Action::Terminated]
        );
        ict.on_transport_error(t0 + ms(2));
        ict.on_response(fixtures::response(OK_200), t0 + ms(3));
        assert!(ict.drain().is_empty());
    }

    #[test]
    fn late_wakeup_fires_timers_in_order() {
        let (mut ict, t0) = start(false);
        ict.on_timeout(t0 + Duration::from_secs(40));
        let actions = ict.drain();
        assert!(matches!(
            actions.as_slice(),
            [
                Action::Send(_),
                Action::Timeout(Timer::B),
                Action::Terminated
            ]
        ));
    }

    #[test]
    fn invalid_status_codes_are_ignored() {
        let (mut ict, t0) = start(false);
        let mut weird = fixtures::response(BUSY_486);
        weird.status_code = rsip::StatusCode::from(700);
        ict.on_response(weird, t0 + ms(10));
        assert!(ict.drain().is_empty());
        assert_eq!(ict.state(), State::Calling);
    }

    #[test]
    fn ack_from_a_bare_invite_does_not_panic() {
        let bare = fixtures::request("INVITE sip:x@y SIP/2.0\n\n");
        let ack = build_ack(&bare, &fixtures::response("SIP/2.0 500 Oops\n\n"));
        assert_eq!(ack.method, Method::Ack);
    }
}
