//! INVITE server transaction (RFC 3261 §17.2.1, figure 7, with the Accepted state of
//! RFC 6026 §7.1).
//!
//! Owns: the responses to one received INVITE, sending 100 Trying when the TU is slow
//! (optional, 200 ms by default), absorbing retransmitted INVITEs, retransmitting a non-2xx
//! final until the ACK (Timers G, H), absorbing retransmitted ACKs (Timer I) and, after a
//! 2xx, absorbing retransmitted INVITEs (Timer L). Must not retransmit a 2xx: the TU (the
//! dialog layer) does that until the ACK (§13.3.1.4), sending each copy through
//! `send_response` while the transaction is Accepted.
//!
//! ```text
//!  new (INVITE received): Trying timer (optional)
//!  Proceeding ── INVITE: resend last provisional; Trying timer: send 100
//!     │── 1xx from TU: send
//!     ├── 2xx from TU: send ──> Accepted: Timer L = 64·T1
//!     │                           ├─ INVITE: absorbed; ACK: to TU; 2xx from TU: send
//!     │                           └─ Timer L ──> Terminated
//!     └── 300-699 from TU: send ──> Completed: Timer G (unreliable), Timer H = 64·T1
//!                                    ├─ INVITE: resend final; Timer G: resend, double up to T2
//!                                    ├─ Timer H: Timeout ──> Terminated
//!                                    └─ ACK ──> Confirmed: Timer I (T4 unreliable, 0 reliable)
//!                                                └─ Timer I ──> Terminated
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rsip::{Method, Request, Response, SipMessage, StatusCode};
use tracing::trace;

use super::{
    Action, Class, DEFAULT_TRYING_DELAY, ResponseError, Timer, TimerSet, Timers, class,
    double_capped, response_for,
};

/// The states of figure 7, plus RFC 6026's Accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Proceeding,
    Completed,
    Confirmed,
    /// RFC 6026 §7.1: a 2xx was sent; INVITE retransmissions are absorbed until Timer L.
    Accepted,
    Terminated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Proceeding => "Proceeding",
            State::Completed => "Completed",
            State::Confirmed => "Confirmed",
            State::Accepted => "Accepted",
            State::Terminated => "Terminated",
        }
    }
}

/// One INVITE server transaction.
#[derive(Clone, Debug)]
pub struct Ist {
    request: Request,
    reliable: bool,
    timers: Timers,
    state: State,
    /// The most recent provisional response, resent on INVITE retransmissions.
    last_provisional: Option<Response>,
    /// The non-2xx final response, retransmitted by Timer G and on INVITE retransmissions.
    final_response: Option<Response>,
    /// The current Timer G interval: T1 doubling up to T2.
    timer_g_interval: Duration,
    armed: TimerSet,
    actions: VecDeque<Action>,
}

impl Ist {
    /// Creates the transaction for a received INVITE, sending 100 Trying after
    /// [`DEFAULT_TRYING_DELAY`] if the TU has not answered by then (§17.2.1).
    pub fn new(request: Request, reliable: bool, timers: Timers, now: Instant) -> Self {
        Self::with_trying_delay(request, reliable, timers, Some(DEFAULT_TRYING_DELAY), now)
    }

    /// As [`Ist::new`], with the delay before the automatic 100 Trying; `None` leaves
    /// every provisional response to the TU (allowed when the TU answers within 200 ms).
    pub fn with_trying_delay(
        request: Request,
        reliable: bool,
        timers: Timers,
        trying_delay: Option<Duration>,
        now: Instant,
    ) -> Self {
        let mut armed = TimerSet::default();
        if let Some(delay) = trying_delay {
            armed.arm(Timer::Trying, now + delay);
        }
        Self {
            request,
            reliable,
            timers,
            state: State::Proceeding,
            last_provisional: None,
            final_response: None,
            timer_g_interval: timers.t1,
            armed,
            actions: VecDeque::new(),
        }
    }

    /// The INVITE this transaction answers.
    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// An INVITE retransmission or an ACK matched to this transaction (§17.2.3).
    pub fn on_request(&mut self, request: Request, now: Instant) {
        match (self.state, request.method) {
            (State::Proceeding, Method::Invite) => {
                if let Some(provisional) = &self.last_provisional {
                    self.send(provisional.clone());
                }
            }
            (State::Completed, Method::Invite) => {
                if let Some(response) = &self.final_response {
                    self.send(response.clone());
                }
            }
            (State::Completed, Method::Ack) => {
                self.state = State::Confirmed;
                self.armed.clear();
                self.actions.push_back(Action::Ack(request));
                if self.reliable {
                    self.terminate();
                } else {
                    self.armed.arm(Timer::I, now + self.timers.t4);
                }
            }
            (State::Accepted, Method::Ack) => {
                // RFC 6026 §7.1: a peer reused the INVITE's branch for the ACK of our 2xx.
                self.actions.push_back(Action::Ack(request));
            }
            (state, method) => {
                trace!(?state, %method, "INVITE server transaction absorbs request");
            }
        }
    }

    /// A response from the TU.
    pub fn send_response(&mut self, response: Response, now: Instant) -> Result<(), ResponseError> {
        let status = response.status_code.code();
        match (self.state, class(&response.status_code)) {
            (_, Class::Invalid) => return Err(ResponseError::InvalidStatus(status)),
            (State::Proceeding, Class::Provisional) => {
                self.armed.cancel(Timer::Trying);
                self.last_provisional = Some(response.clone());
                self.send(response);
            }
            (State::Proceeding, Class::Success) => {
                self.state = State::Accepted;
                self.armed.clear();
                self.armed.arm(Timer::L, now + self.timers.sixty_four_t1());
                self.send(response);
            }
            (State::Accepted, Class::Success) => {
                // The TU's own 2xx retransmission (§13.3.1.4), or a second 2xx.
                self.send(response);
            }
            (State::Proceeding, Class::Failure) => {
                self.state = State::Completed;
                self.armed.clear();
                if !self.reliable {
                    self.armed.arm(Timer::G, now + self.timers.t1);
                }
                self.armed.arm(Timer::H, now + self.timers.sixty_four_t1());
                self.final_response = Some(response.clone());
                self.send(response);
            }
            (state, _) => {
                return Err(ResponseError::NotAllowed {
                    status,
                    state: state.as_str(),
                });
            }
        }
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.armed.pop_due(now) {
            match (self.state, timer) {
                (State::Proceeding, Timer::Trying) => {
                    let trying = response_for(&self.request, StatusCode::Trying);
                    self.last_provisional = Some(trying.clone());
                    self.send(trying);
                }
                (State::Completed, Timer::G) => {
                    if let Some(response) = &self.final_response {
                        self.send(response.clone());
                    }
                    self.timer_g_interval = double_capped(self.timer_g_interval, self.timers.t2);
                    self.armed.arm(Timer::G, now + self.timer_g_interval);
                }
                (State::Completed, Timer::H) => {
                    self.actions.push_back(Action::Timeout(Timer::H));
                    self.terminate();
                }
                (State::Confirmed, Timer::I) | (State::Accepted, Timer::L) => self.terminate(),
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

    fn send(&mut self, response: Response) {
        self.actions
            .push_back(Action::Send(SipMessage::Response(response)));
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

    fn start(reliable: bool, trying: Option<Duration>) -> (Ist, Instant) {
        let t0 = Instant::now();
        let ist = Ist::with_trying_delay(
            fixtures::request(INVITE),
            reliable,
            Timers::default(),
            trying,
            t0,
        );
        (ist, t0)
    }

    fn busy() -> Response {
        fixtures::response(BUSY_486)
    }

    #[test]
    fn busy_is_retransmitted_until_ack_then_timer_i() {
        let (mut ist, t0) = start(false, None);
        ist.send_response(busy(), t0).expect("486 allowed");
        assert_eq!(ist.state(), State::Completed);
        assert_eq!(
            ist.drain(),
            vec![Action::Send(SipMessage::Response(busy()))]
        );
        let out = run_timers(&mut ist, t0, ms(12_000));
        // Timer G: intervals 0.5, 1, 2, 4, 4 s (T1 doubling, capped at T2).
        assert_eq!(send_times(&out), secs(&[0.5, 1.5, 3.5, 7.5, 11.5]));
        assert!(out.iter().all(|(_, a)| sent_response(a) == Some(&busy())));
        ist.on_request(fixtures::request(ACK_486), t0 + ms(12_000));
        assert_eq!(ist.state(), State::Confirmed);
        assert!(matches!(ist.drain().as_slice(), [Action::Ack(a)] if a.method == Method::Ack));
        // Retransmitted ACKs and INVITEs are absorbed in Confirmed.
        ist.on_request(fixtures::request(ACK_486), t0 + ms(12_100));
        ist.on_request(fixtures::request(INVITE), t0 + ms(12_200));
        assert!(ist.drain().is_empty());
        // Timer I = T4 = 5 s, and no Timer G any more.
        let out = run_timers(&mut ist, t0, Duration::from_secs(100));
        assert_eq!(out, vec![(ms(17_000), Action::Terminated)]);
    }

    #[test]
    fn no_ack_means_timer_h() {
        let (mut ist, t0) = start(false, None);
        ist.send_response(busy(), t0).expect("486 allowed");
        ist.drain();
        let out = run_timers(&mut ist, t0, Duration::from_secs(100));
        assert_eq!(
            send_times(&out),
            secs(&[0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
        );
        assert_eq!(
            out.iter().rev().take(2).cloned().collect::<Vec<_>>(),
            vec![
                (Duration::from_secs(32), Action::Terminated),
                (Duration::from_secs(32), Action::Timeout(Timer::H)),
            ]
        );
    }

    #[test]
    fn reliable_busy_has_no_timer_g_and_ack_ends_at_once() {
        let (mut ist, t0) = start(true, None);
        ist.send_response(busy(), t0).expect("486 allowed");
        ist.drain();
        assert_eq!(ist.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        ist.on_request(fixtures::request(ACK_486), t0 + ms(50));
        assert!(matches!(
            ist.drain().as_slice(),
            [Action::Ack(_), Action::Terminated]
        ));
    }

    #[test]
    fn retransmitted_invite_in_proceeding_gets_last_provisional() {
        let (mut ist, t0) = start(false, None);
        // Nothing sent yet: nothing to resend.
        ist.on_request(fixtures::request(INVITE), t0 + ms(100));
        assert!(ist.drain().is_empty());
        let ringing = fixtures::response(RINGING_180);
        ist.send_response(ringing.clone(), t0 + ms(150))
            .expect("180 allowed");
        ist.drain();
        ist.on_request(fixtures::request(INVITE), t0 + ms(500));
        assert_eq!(
            ist.drain(),
            vec![Action::Send(SipMessage::Response(ringing))]
        );
    }

    #[test]
    fn automatic_100_trying_after_200_ms() {
        let (mut ist, t0) = start(false, Some(ms(200)));
        assert_eq!(ist.poll_timeout(), Some(t0 + ms(200)));
        let out = run_timers(&mut ist, t0, Duration::from_secs(10));
        assert_eq!(out.len(), 1);
        let (at, action) = &out[0];
        assert_eq!(*at, ms(200));
        let trying = sent_response(action).expect("100 sent");
        assert_eq!(trying.status_code, StatusCode::Trying);
        assert_eq!(trying, &response_for(ist.request(), StatusCode::Trying));
        // A retransmitted INVITE gets the 100 again.
        ist.on_request(fixtures::request(INVITE), t0 + ms(500));
        assert_eq!(ist.drain(), vec![action.clone()]);
    }

    #[test]
    fn no_automatic_100_when_the_tu_answers_in_time() {
        let (mut ist, t0) = start(false, Some(ms(200)));
        ist.send_response(fixtures::response(RINGING_180), t0 + ms(20))
            .expect("180 allowed");
        ist.drain();
        assert_eq!(ist.poll_timeout(), None);
        let (mut quiet, t0) = start(false, None);
        assert_eq!(quiet.poll_timeout(), None);
        assert!(run_timers(&mut quiet, t0, Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn ok_goes_to_accepted_absorbing_invites_until_timer_l() {
        let (mut ist, t0) = start(false, Some(ms(200)));
        let ok = fixtures::response(OK_200);
        ist.send_response(ok.clone(), t0 + ms(100))
            .expect("200 allowed");
        assert_eq!(ist.state(), State::Accepted);
        assert_eq!(
            ist.drain(),
            vec![Action::Send(SipMessage::Response(ok.clone()))]
        );
        // The transaction never retransmits the 2xx itself, and absorbs the INVITE.
        ist.on_request(fixtures::request(INVITE), t0 + ms(600));
        assert!(ist.drain().is_empty());
        // The TU's retransmission of the 2xx passes through.
        ist.send_response(ok.clone(), t0 + ms(600))
            .expect("2xx again");
        assert_eq!(ist.drain(), vec![Action::Send(SipMessage::Response(ok))]);
        // An ACK that reuses the INVITE's branch goes to the TU.
        ist.on_request(fixtures::request(ACK_486), t0 + ms(700));
        assert!(matches!(ist.drain().as_slice(), [Action::Ack(_)]));
        // A failure after the 2xx is a TU bug.
        assert_eq!(
            ist.send_response(busy(), t0 + ms(800)),
            Err(ResponseError::NotAllowed {
                status: 486,
                state: "Accepted"
            })
        );
        let out = run_timers(&mut ist, t0, Duration::from_secs(100));
        assert_eq!(out, vec![(ms(32_100), Action::Terminated)]);
    }

    #[test]
    fn retransmitted_invite_in_completed_gets_the_final_again() {
        let (mut ist, t0) = start(false, None);
        ist.send_response(busy(), t0).expect("486 allowed");
        ist.drain();
        ist.on_request(fixtures::request(INVITE), t0 + ms(300));
        assert_eq!(
            ist.drain(),
            vec![Action::Send(SipMessage::Response(busy()))]
        );
    }

    #[test]
    fn tu_mistakes_are_errors_not_panics() {
        let (mut ist, t0) = start(false, None);
        let mut weird = busy();
        weird.status_code = StatusCode::from(99);
        assert_eq!(
            ist.send_response(weird, t0),
            Err(ResponseError::InvalidStatus(99))
        );
        ist.send_response(busy(), t0).expect("486 allowed");
        assert!(
            ist.send_response(fixtures::response(RINGING_180), t0)
                .is_err()
        );
        assert!(ist.send_response(busy(), t0).is_err());
    }

    #[test]
    fn transport_error_informs_the_tu() {
        let (mut ist, t0) = start(false, None);
        ist.send_response(busy(), t0).expect("486 allowed");
        ist.drain();
        ist.on_transport_error(t0 + ms(1));
        assert_eq!(
            ist.drain(),
            vec![Action::TransportError, Action::Terminated]
        );
    }
}
