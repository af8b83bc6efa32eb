//! Non-INVITE server transaction (RFC 3261 §17.2.2, figure 8).
//!
//! Owns: the responses to one received non-INVITE request (never ACK), absorbing
//! retransmissions of that request by resending the last response, and lingering for
//! them after the final (Timer J). Must not send responses on its own: unlike the
//! INVITE server transaction it never sends 100 Trying (RFC 4320 §4.1 discourages it).
//!
//! ```text
//!  new (request received)
//!  Trying ── request: absorbed
//!    ├─ 1xx from TU: send ──> Proceeding ── request: resend last 1xx; 1xx from TU: send
//!    └─ 200-699 from TU (either): send ──> Completed: Timer J (64·T1 unreliable, 0 reliable)
//!                                           ├─ request: resend final
//!                                           └─ Timer J ──> Terminated
//! ```

use std::collections::VecDeque;
use std::time::Instant;

use rsip::{Request, Response, SipMessage};
use tracing::trace;

use super::{Action, Class, ResponseError, Timer, TimerSet, Timers, class};

/// The states of figure 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Trying => "Trying",
            State::Proceeding => "Proceeding",
            State::Completed => "Completed",
            State::Terminated => "Terminated",
        }
    }
}

/// One non-INVITE server transaction.
#[derive(Clone, Debug)]
pub struct Nist {
    request: Request,
    reliable: bool,
    timers: Timers,
    state: State,
    /// The last response sent: a provisional in Proceeding, the final in Completed.
    last_response: Option<Response>,
    armed: TimerSet,
    actions: VecDeque<Action>,
}

impl Nist {
    /// Creates the transaction for a received request; the TU answers it.
    pub fn new(request: Request, reliable: bool, timers: Timers, _now: Instant) -> Self {
        Self {
            request,
            reliable,
            timers,
            state: State::Trying,
            last_response: None,
            armed: TimerSet::default(),
            actions: VecDeque::new(),
        }
    }

    /// The request this transaction answers.
    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// A retransmission of the request, matched by the transport (§17.2.3).
    pub fn on_request(&mut self, request: Request, _now: Instant) {
        match (self.state, &self.last_response) {
            (State::Proceeding | State::Completed, Some(response)) => {
                self.actions
                    .push_back(Action::Send(SipMessage::Response(response.clone())));
            }
            (state, _) => {
                trace!(?state, method = %request.method, "non-INVITE server transaction absorbs request");
            }
        }
    }

    /// A response from the TU.
    pub fn send_response(&mut self, response: Response, now: Instant) -> Result<(), ResponseError> {
        let status = response.status_code.code();
        match (self.state, class(&response.status_code)) {
            (_, Class::Invalid) => return Err(ResponseError::InvalidStatus(status)),
            (State::Trying | State::Proceeding, Class::Provisional) => {
                self.state = State::Proceeding;
            }
            (State::Trying | State::Proceeding, Class::Success | Class::Failure) => {
                self.state = State::Completed;
                if !self.reliable {
                    self.armed.arm(Timer::J, now + self.timers.sixty_four_t1());
                }
            }
            (state, _) => {
                return Err(ResponseError::NotAllowed {
                    status,
                    state: state.as_str(),
                });
            }
        }
        self.last_response = Some(response.clone());
        self.actions
            .push_back(Action::Send(SipMessage::Response(response)));
        if self.state == State::Completed && self.reliable {
            // Timer J is zero on a reliable transport.
            self.terminate();
        }
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.armed.pop_due(now) {
            match (self.state, timer) {
                (State::Completed, Timer::J) => self.terminate(),
                (state, timer) => trace!(?state, ?timer, "stale timer"),
            }
        }
    }

    /// The transport failed to send a response (§17.2.4): inform the TU, end.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sip::transaction::fixtures::{self, *};

    fn start(reliable: bool) -> (Nist, Instant) {
        let t0 = Instant::now();
        (
            Nist::new(fixtures::request(MESSAGE), reliable, Timers::default(), t0),
            t0,
        )
    }

    fn ok() -> Response {
        // The UAS's 200 for the MESSAGE, as the client side would receive it.
        fixtures::response(MESSAGE_200)
    }

    #[test]
    fn retransmission_in_completed_gets_the_final_then_timer_j() {
        let (mut nist, t0) = start(false);
        nist.on_request(fixtures::request(MESSAGE), t0 + ms(400)); // Trying: absorbed
        assert!(nist.drain().is_empty());
        nist.send_response(ok(), t0 + Duration::from_secs(1))
            .expect("200 allowed");
        assert_eq!(nist.state(), State::Completed);
        assert_eq!(nist.drain(), vec![Action::Send(SipMessage::Response(ok()))]);
        nist.on_request(fixtures::request(MESSAGE), t0 + ms(1500));
        assert_eq!(nist.drain(), vec![Action::Send(SipMessage::Response(ok()))]);
        // Timer J = 64·T1 after the final.
        let out = run_timers(&mut nist, t0, Duration::from_secs(100));
        assert_eq!(out, vec![(Duration::from_secs(33), Action::Terminated)]);
    }

    #[test]
    fn retransmission_in_proceeding_gets_the_provisional() {
        let (mut nist, t0) = start(false);
        let trying = fixtures::response(MESSAGE_100);
        nist.send_response(trying.clone(), t0).expect("100 allowed");
        assert_eq!(nist.state(), State::Proceeding);
        nist.drain();
        nist.on_request(fixtures::request(MESSAGE), t0 + ms(500));
        assert_eq!(
            nist.drain(),
            vec![Action::Send(SipMessage::Response(trying))]
        );
        assert_eq!(nist.poll_timeout(), None);
    }

    #[test]
    fn reliable_final_terminates_at_once() {
        let (mut nist, t0) = start(true);
        nist.send_response(ok(), t0).expect("200 allowed");
        assert_eq!(
            nist.drain(),
            vec![Action::Send(SipMessage::Response(ok())), Action::Terminated]
        );
    }

    #[test]
    fn responses_after_the_final_are_refused() {
        let (mut nist, t0) = start(false);
        nist.send_response(ok(), t0).expect("200 allowed");
        assert_eq!(
            nist.send_response(ok(), t0),
            Err(ResponseError::NotAllowed {
                status: 200,
                state: "Completed"
            })
        );
    }
}
