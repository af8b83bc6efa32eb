//! Non-INVITE client transaction (RFC 3261 §17.1.2, figure 6).
//!
//! Owns: sending and retransmitting one non-INVITE request (Timer E), giving up on it
//! (Timer F), and absorbing retransmitted final responses (Timer K). Must not be used for
//! ACK, which has no client transaction (§17.1: the ACK for a 2xx goes straight to the
//! transport; the ACK for a non-2xx belongs to the INVITE's own transaction).
//!
//! ```text
//!            new: send request, Timer E = T1 (unreliable), Timer F = 64·T1
//!  Trying ──1xx──> Proceeding ──1xx──> (pass up)
//!    │ Timer E: resend, E = min(2E, T2)   │ Timer E: resend, E = T2
//!    │ Timer F: Timeout ──> Terminated     │ Timer F: Timeout ──> Terminated
//!    └──200-699 (either)──> Completed: pass up, Timer K (T4 unreliable, 0 reliable)
//!                              └─ Timer K ──> Terminated
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rsip::{Request, Response, SipMessage};
use tracing::trace;

use super::{Action, Class, Timer, TimerSet, Timers, class, double_capped};

/// The states of figure 6.
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

/// One non-INVITE client transaction.
#[derive(Clone, Debug)]
pub struct Nict {
    request: Request,
    reliable: bool,
    timers: Timers,
    state: State,
    /// The current Timer E interval: T1 doubling up to T2, then T2.
    timer_e_interval: Duration,
    armed: TimerSet,
    actions: VecDeque<Action>,
}

impl Nict {
    /// Starts the transaction: queues the request for sending, arms Timer F, and Timer E
    /// on an unreliable transport (§17.1.2.2).
    pub fn new(request: Request, reliable: bool, timers: Timers, now: Instant) -> Self {
        let mut armed = TimerSet::default();
        if !reliable {
            armed.arm(Timer::E, now + timers.t1);
        }
        armed.arm(Timer::F, now + timers.sixty_four_t1());
        let actions = VecDeque::from([Action::Send(SipMessage::Request(request.clone()))]);
        Self {
            request,
            reliable,
            timers,
            state: State::Trying,
            timer_e_interval: timers.t1,
            armed,
            actions,
        }
    }

    /// The request this transaction sends.
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
            (State::Trying | State::Proceeding, Class::Provisional) => {
                // Timer E keeps running; from its next firing it uses T2 (§17.1.2.2).
                self.state = State::Proceeding;
                self.actions.push_back(Action::Deliver(response));
            }
            (State::Trying | State::Proceeding, Class::Success | Class::Failure) => {
                self.state = State::Completed;
                self.armed.clear();
                self.actions.push_back(Action::Deliver(response));
                if self.reliable {
                    self.terminate();
                } else {
                    self.armed.arm(Timer::K, now + self.timers.t4);
                }
            }
            (state, _) => {
                trace!(?state, status = %response.status_code, "non-INVITE client transaction absorbs response");
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.armed.pop_due(now) {
            match (self.state, timer) {
                (State::Trying | State::Proceeding, Timer::E) => {
                    self.actions
                        .push_back(Action::Send(SipMessage::Request(self.request.clone())));
                    self.timer_e_interval = if self.state == State::Trying {
                        double_capped(self.timer_e_interval, self.timers.t2)
                    } else {
                        self.timers.t2
                    };
                    self.armed.arm(Timer::E, now + self.timer_e_interval);
                }
                (State::Trying | State::Proceeding, Timer::F) => {
                    self.actions.push_back(Action::Timeout(Timer::F));
                    self.terminate();
                }
                (State::Completed, Timer::K) => self.terminate(),
                (state, timer) => trace!(?state, ?timer, "stale timer"),
            }
        }
    }

    /// The transport failed to send the request (§17.1.4): inform the TU, end.
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
    use super::*;
    use crate::sip::transaction::fixtures::{self, *};

    fn start(reliable: bool) -> (Nict, Instant) {
        let t0 = Instant::now();
        let mut nict = Nict::new(fixtures::request(MESSAGE), reliable, Timers::default(), t0);
        let first = nict.drain();
        assert!(matches!(first.as_slice(), [Action::Send(_)]));
        (nict, t0)
    }

    #[test]
    fn udp_retransmissions_cap_at_t2_then_timer_f() {
        let (mut nict, t0) = start(false);
        let out = run_timers(&mut nict, t0, Duration::from_secs(100));
        // Intervals 0.5, 1, 2, 4, then 4 s (T2) until Timer F at 64·T1 = 32 s.
        assert_eq!(
            send_times(&out),
            secs(&[0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
        );
        assert_eq!(
            out.iter().rev().take(2).cloned().collect::<Vec<_>>(),
            vec![
                (Duration::from_secs(32), Action::Terminated),
                (Duration::from_secs(32), Action::Timeout(Timer::F)),
            ]
        );
        assert!(nict.is_terminated());
    }

    #[test]
    fn after_a_provisional_retransmits_every_t2() {
        let (mut nict, t0) = start(false);
        run_timers(&mut nict, t0, ms(500)); // first retransmission at 0.5 s
        nict.on_response(fixtures::response(MESSAGE_100), t0 + ms(700));
        assert_eq!(nict.state(), State::Proceeding);
        assert!(
            matches!(nict.drain().as_slice(), [Action::Deliver(r)] if r.status_code.code() == 100)
        );
        let out = run_timers(&mut nict, t0, Duration::from_secs(100));
        // The pending Timer E (1.5 s) still fires, then every T2.
        assert_eq!(
            send_times(&out),
            secs(&[1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5])
        );
        assert!(out.contains(&(Duration::from_secs(32), Action::Timeout(Timer::F))));
    }

    #[test]
    fn final_response_then_timer_k_absorbing_retransmissions() {
        let (mut nict, t0) = start(false);
        nict.on_response(fixtures::response(MESSAGE_100), t0 + ms(100));
        nict.on_response(fixtures::response(MESSAGE_200), t0 + ms(200));
        assert_eq!(nict.state(), State::Completed);
        let delivered = nict.drain();
        assert_eq!(delivered.len(), 2);
        assert!(matches!(&delivered[1], Action::Deliver(r) if r.status_code.code() == 200));
        // Retransmitted final: absorbed, not delivered twice.
        nict.on_response(fixtures::response(MESSAGE_200), t0 + ms(1200));
        assert!(nict.drain().is_empty());
        // Timer K = T4 = 5 s; no more retransmissions of the request.
        let out = run_timers(&mut nict, t0, Duration::from_secs(100));
        assert_eq!(out, vec![(ms(5200), Action::Terminated)]);
    }

    #[test]
    fn tcp_never_retransmits_and_completes_at_once() {
        let (mut nict, t0) = start(true);
        assert_eq!(nict.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        nict.on_response(fixtures::response(MESSAGE_200), t0 + ms(50));
        assert!(matches!(
            nict.drain().as_slice(),
            [Action::Deliver(_), Action::Terminated]
        ));
        assert_eq!(nict.poll_timeout(), None);
    }

    #[test]
    fn transport_error_informs_the_tu() {
        let (mut nict, t0) = start(false);
        nict.on_transport_error(t0);
        assert_eq!(
            nict.drain(),
            vec![Action::TransportError, Action::Terminated]
        );
    }
}
