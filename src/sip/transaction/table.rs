//! The live transactions of one SIP endpoint, client and server, keyed by
//! [`TransactionKey`].
//!
//! Owns: creating transactions (client ones when the TU sends a request, server ones when
//! a new request arrives), routing each incoming message to its transaction so that the
//! TU sees every request once (§17.2.3) and every response as its transaction decides,
//! detecting merged requests (§8.2.2.2), the earliest timeout across all transactions,
//! and forgetting transactions the moment they terminate (§17.1.1.2: "destroyed the
//! instant it enters Terminated"). Like the machines it does no I/O and reads no clock.
//!
//! What it leaves to others: where messages go (the transport sends requests by their
//! Route / Request-URI and responses by their top Via, §18.2.2, so the driver should add
//! `received`/`rport` to the top Via of an incoming request before handing it in), 2xx
//! retransmission and the ACK for a 2xx (the dialog layer), and giving up on an INVITE
//! that rings forever (the TU CANCELs it, then may [`TransactionTable::remove`] it, §9.1).
//!
//! `poll_timeout` and `on_timeout` scan every transaction: a gateway holds hundreds, not
//! millions, and a scan keeps the table obviously correct. Swap in a timer heap if
//! profiles ever say otherwise.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use rsip::{Method, Request, Response};

use super::message::{self, Field};
use super::{
    Action, DEFAULT_TRYING_DELAY, Ict, Ist, KeyError, Nict, Nist, ResponseError, Role, Timers,
    TransactionKey,
};

/// How new transactions are set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    pub timers: Timers,
    /// The delay before an INVITE server transaction sends 100 Trying itself; `None` if
    /// the TU always answers within 200 ms (§17.2.1).
    pub trying_delay: Option<Duration>,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            timers: Timers::default(),
            trying_delay: Some(DEFAULT_TRYING_DELAY),
        }
    }
}

/// One live transaction of any of the four kinds.
#[derive(Clone, Debug)]
pub enum Transaction {
    Ict(Ict),
    Nict(Nict),
    Ist(Ist),
    Nist(Nist),
}

macro_rules! each {
    ($self:expr, $tx:ident => $body:expr) => {
        match $self {
            Transaction::Ict($tx) => $body,
            Transaction::Nict($tx) => $body,
            Transaction::Ist($tx) => $body,
            Transaction::Nist($tx) => $body,
        }
    };
}

impl Transaction {
    /// The request that created the transaction.
    pub fn request(&self) -> &Request {
        each!(self, tx => tx.request())
    }

    pub fn is_terminated(&self) -> bool {
        each!(self, tx => tx.is_terminated())
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        each!(self, tx => tx.poll_timeout())
    }

    pub fn on_timeout(&mut self, now: Instant) {
        each!(self, tx => tx.on_timeout(now))
    }

    pub fn on_transport_error(&mut self, now: Instant) {
        each!(self, tx => tx.on_transport_error(now))
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        each!(self, tx => tx.poll_action())
    }
}

/// What became of an incoming request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A new request: a server transaction now exists under `key`; the TU answers it with
    /// [`TransactionTable::send_response`].
    New {
        key: TransactionKey,
        request: Request,
    },
    /// A new CANCEL, with its own server transaction under `key` (answer it: 200, or 481
    /// if `invite` is `None`), and the INVITE server transaction it cancels if that is
    /// still live (§9.2; the TU then answers the INVITE with 487).
    Cancel {
        key: TransactionKey,
        request: Request,
        invite: Option<TransactionKey>,
    },
    /// A merged request (§8.2.2.2): no To tag, and the same From tag, Call-ID and CSeq as
    /// the live transaction `original`, but another branch (it reached us by two paths).
    /// A server transaction exists under `key` so that the TU can answer 482 Loop Detected.
    Merged {
        key: TransactionKey,
        original: TransactionKey,
        request: Request,
    },
    /// A retransmission, or the ACK for a non-2xx, taken by the live transaction `key`;
    /// whatever it resends or reports is in the actions. The TU has nothing to do.
    Absorbed(TransactionKey),
    /// An ACK that matches no transaction: the ACK for a 2xx, which has its own branch
    /// (§17.1.1.3). For the dialog layer; no transaction is created for it.
    Ack(Request),
}

/// What became of an incoming response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// Given to the client transaction `key`; what the TU must see is in the actions.
    Matched(TransactionKey),
    /// No client transaction: RFC 6026 §8.9 tells a UA to discard it. (A 2xx to INVITE
    /// after Timer M lands here too; the peer stops retransmitting at 64·T1 anyway.)
    Unmatched(Response),
}

/// An incoming request for which no transaction key could be computed. The transport
/// answers 400 if the request has a usable top Via, and drops it otherwise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unroutable request: {error}")]
pub struct RejectedRequest {
    pub error: KeyError,
    pub request: Box<Request>,
}

/// What the TU may not do with the table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// §17: the ACK for a 2xx is sent straight to the transport, the ACK for a non-2xx by
    /// the INVITE client transaction itself.
    #[error("ACK has no client transaction; send the ACK for a 2xx straight to the transport")]
    AckHasNoTransaction,
    /// The TU reused a branch; §8.1.1.7 wants a new one per transaction.
    #[error("transaction {0} already exists")]
    Duplicate(TransactionKey),
    #[error("no live transaction {0}")]
    Unknown(TransactionKey),
    #[error("transaction {0} is a client transaction")]
    NotServer(TransactionKey),
}

/// The identity §8.2.2.2 compares to detect merged requests.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MergeKey {
    from_tag: String,
    call_id: String,
    cseq: u32,
    method: Method,
}

impl Hash for MergeKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.from_tag.hash(state);
        self.call_id.hash(state);
        self.cseq.hash(state);
        // rsip::Method has no Hash; it is a fieldless enum, so the discriminant is the value.
        std::mem::discriminant(&self.method).hash(state);
    }
}

impl MergeKey {
    /// `None` when a field is missing: such a request (RFC 2543 has no From tag) simply
    /// gets no merge detection.
    fn of(request: &Request) -> Option<Self> {
        let (cseq, method) = message::cseq(&request.headers).ok()?;
        Some(Self {
            from_tag: message::tag(&request.headers, Field::From)?.to_owned(),
            call_id: message::call_id(&request.headers)?.to_owned(),
            cseq,
            method,
        })
    }
}

/// All live transactions, and the actions they produced, tagged with their key.
#[derive(Debug, Default)]
pub struct TransactionTable {
    config: TableConfig,
    transactions: HashMap<TransactionKey, Transaction>,
    /// Server transactions by the identity of their request, for §8.2.2.2.
    merge_index: HashMap<MergeKey, TransactionKey>,
    actions: VecDeque<(TransactionKey, Action)>,
}

impl TransactionTable {
    pub fn new(config: TableConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Starts a client transaction for a request from the TU (an ICT for INVITE, an NICT
    /// otherwise); its first `Send` is in the actions. The request must carry a top Via
    /// with a fresh branch and a CSeq matching its method.
    pub fn send_request(
        &mut self,
        request: Request,
        reliable: bool,
        now: Instant,
    ) -> Result<TransactionKey, TableError> {
        if request.method == Method::Ack {
            return Err(TableError::AckHasNoTransaction);
        }
        let key = TransactionKey::client_of_request(&request)?;
        if self.transactions.contains_key(&key) {
            return Err(TableError::Duplicate(key));
        }
        let timers = self.config.timers;
        let transaction = if request.method == Method::Invite {
            Transaction::Ict(Ict::new(request, reliable, timers, now))
        } else {
            Transaction::Nict(Nict::new(request, reliable, timers, now))
        };
        self.transactions.insert(key.clone(), transaction);
        self.collect(&key);
        Ok(key)
    }

    /// A request from the transport. `reliable` is the transport it came on, which a new
    /// server transaction keeps for its timers.
    pub fn on_request(
        &mut self,
        request: Request,
        reliable: bool,
        now: Instant,
    ) -> Result<Incoming, RejectedRequest> {
        let key = match TransactionKey::server_of_request(&request) {
            Ok(key) => key,
            Err(error) => {
                return Err(RejectedRequest {
                    error,
                    request: Box::new(request),
                });
            }
        };
        if let Some(transaction) = self.transactions.get_mut(&key) {
            match transaction {
                Transaction::Ist(ist) => ist.on_request(request, now),
                Transaction::Nist(nist) => nist.on_request(request, now),
                // A server key never names a client transaction (the role is in the key).
                Transaction::Ict(_) | Transaction::Nict(_) => {}
            }
            self.collect(&key);
            return Ok(Incoming::Absorbed(key));
        }
        if request.method == Method::Ack {
            return Ok(Incoming::Ack(request));
        }

        let merge_key = MergeKey::of(&request);
        let has_to_tag = message::tag(&request.headers, Field::To).is_some();
        let original = match &merge_key {
            Some(merge_key) if !has_to_tag => self.merge_index.get(merge_key).cloned(),
            _ => None,
        };
        let timers = self.config.timers;
        let transaction = if request.method == Method::Invite {
            Transaction::Ist(Ist::with_trying_delay(
                request.clone(),
                reliable,
                timers,
                self.config.trying_delay,
                now,
            ))
        } else {
            Transaction::Nist(Nist::new(request.clone(), reliable, timers, now))
        };
        self.transactions.insert(key.clone(), transaction);
        if let (None, Some(merge_key)) = (&original, merge_key) {
            self.merge_index
                .entry(merge_key)
                .or_insert_with(|| key.clone());
        }
        self.collect(&key);

        Ok(match original {
            Some(original) => Incoming::Merged {
                key,
                original,
                request,
            },
            None if request.method == Method::Cancel => {
                let invite = key
                    .cancel_target()
                    .filter(|invite| self.transactions.contains_key(invite));
                Incoming::Cancel {
                    key,
                    request,
                    invite,
                }
            }
            None => Incoming::New { key, request },
        })
    }

    /// A response from the transport, for the client transaction it matches (§17.1.3).
    /// An error means the response cannot be matched at all and is dropped.
    pub fn on_response(
        &mut self,
        response: Response,
        now: Instant,
    ) -> Result<ResponseOutcome, KeyError> {
        let key = TransactionKey::client_of_response(&response)?;
        match self.transactions.get_mut(&key) {
            Some(Transaction::Ict(ict)) => ict.on_response(response, now),
            Some(Transaction::Nict(nict)) => nict.on_response(response, now),
            Some(Transaction::Ist(_) | Transaction::Nist(_)) | None => {
                return Ok(ResponseOutcome::Unmatched(response));
            }
        }
        self.collect(&key);
        Ok(ResponseOutcome::Matched(key))
    }

    /// A response from the TU for the server transaction `key`.
    pub fn send_response(
        &mut self,
        key: &TransactionKey,
        response: Response,
        now: Instant,
    ) -> Result<(), TableError> {
        let transaction = self
            .transactions
            .get_mut(key)
            .ok_or_else(|| TableError::Unknown(key.clone()))?;
        let result = match transaction {
            Transaction::Ist(ist) => ist.send_response(response, now),
            Transaction::Nist(nist) => nist.send_response(response, now),
            Transaction::Ict(_) | Transaction::Nict(_) => {
                return Err(TableError::NotServer(key.clone()));
            }
        };
        self.collect(key);
        result.map_err(TableError::from)
    }

    /// The transport failed to send for transaction `key` (§17.1.4, §17.2.4).
    pub fn on_transport_error(
        &mut self,
        key: &TransactionKey,
        now: Instant,
    ) -> Result<(), TableError> {
        let transaction = self
            .transactions
            .get_mut(key)
            .ok_or_else(|| TableError::Unknown(key.clone()))?;
        transaction.on_transport_error(now);
        self.collect(key);
        Ok(())
    }

    /// The earliest timer across all transactions.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transactions
            .values()
            .filter_map(Transaction::poll_timeout)
            .min()
    }

    /// Fires every timer due at `now`, transactions in deadline order.
    pub fn on_timeout(&mut self, now: Instant) {
        let mut due: Vec<(Instant, TransactionKey)> = self
            .transactions
            .iter()
            .filter_map(|(key, tx)| {
                tx.poll_timeout()
                    .filter(|at| *at <= now)
                    .map(|at| (at, key.clone()))
            })
            .collect();
        due.sort_by_key(|(at, _)| *at);
        for (_, key) in due {
            if let Some(transaction) = self.transactions.get_mut(&key) {
                transaction.on_timeout(now);
            }
            self.collect(&key);
        }
    }

    /// The next action of any transaction, with the key of the transaction it came from.
    pub fn poll_action(&mut self) -> Option<(TransactionKey, Action)> {
        self.actions.pop_front()
    }

    /// Every live transaction, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TransactionKey, &Transaction)> {
        self.transactions.iter()
    }

    pub fn get(&self, key: &TransactionKey) -> Option<&Transaction> {
        self.transactions.get(key)
    }

    /// Forgets a transaction without an action, e.g. an INVITE that stays in Proceeding
    /// 64·T1 after its CANCEL was answered (§9.1).
    pub fn remove(&mut self, key: &TransactionKey) -> Option<Transaction> {
        let transaction = self.transactions.remove(key)?;
        if key.role() == Role::Server
            && let Some(merge_key) = MergeKey::of(transaction.request())
            && self.merge_index.get(&merge_key) == Some(key)
        {
            self.merge_index.remove(&merge_key);
        }
        Some(transaction)
    }

    /// The number of live transactions.
    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    /// Moves the actions of transaction `key` to the table's queue, and forgets the
    /// transaction if it has terminated.
    fn collect(&mut self, key: &TransactionKey) {
        let Some(transaction) = self.transactions.get_mut(key) else {
            return;
        };
        while let Some(action) = transaction.poll_action() {
            self.actions.push_back((key.clone(), action));
        }
        if transaction.is_terminated() {
            self.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use rsip::{SipMessage, StatusCode};

    use super::*;
    use crate::sip::transaction::fixtures::{self, *};
    use crate::sip::transaction::{Timer, response_for};

    fn table() -> (TransactionTable, Instant) {
        (
            TransactionTable::new(TableConfig::default()),
            Instant::now(),
        )
    }

    fn drain(table: &mut TransactionTable) -> Vec<(TransactionKey, Action)> {
        std::iter::from_fn(|| table.poll_action()).collect()
    }

    fn new_key(incoming: Incoming) -> TransactionKey {
        match incoming {
            Incoming::New { key, .. } => key,
            other => panic!("expected a new request, got {other:?}"),
        }
    }

    /// The same INVITE as it arrives through a second proxy: another top Via.
    fn invite_via_other_proxy() -> Request {
        fixtures::request(&fixtures::with_header(
            INVITE,
            "Via",
            "SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2other, SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds",
        ))
    }

    #[test]
    fn a_retransmitted_request_is_seen_once() {
        let (mut table, t0) = table();
        let mut seen = 0;
        let mut resent = Vec::new();
        for i in 0..4 {
            // The driver runs due timers before each datagram, as it would in real time.
            let at = ms(500 * i);
            resent.extend(send_times(&run_timers(&mut table, t0, at)));
            match table.on_request(fixtures::request(INVITE), false, t0 + at) {
                Ok(Incoming::New { .. }) => seen += 1,
                Ok(Incoming::Absorbed(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
            resent.extend(drain(&mut table).iter().filter_map(|(_, a)| {
                sent_response(a).map(|r| {
                    assert_eq!(r.status_code, StatusCode::Trying);
                    at
                })
            }));
        }
        assert_eq!(seen, 1);
        assert_eq!(table.len(), 1);
        // The automatic 100 Trying at 200 ms, then once more for each retransmission.
        assert_eq!(resent, vec![ms(200), ms(500), ms(1000), ms(1500)]);
    }

    #[test]
    fn a_merged_request_is_reported_for_482() {
        let (mut table, t0) = table();
        let original = new_key(
            table
                .on_request(fixtures::request(INVITE), false, t0)
                .expect("routable"),
        );
        let merged = table
            .on_request(invite_via_other_proxy(), false, t0 + ms(10))
            .expect("routable");
        let Incoming::Merged {
            key,
            original: reported,
            request,
        } = merged
        else {
            panic!("expected a merged request, got {merged:?}");
        };
        assert_eq!(reported, original);
        assert_ne!(key, original);
        let mut loop_detected = response_for(&request, StatusCode::LoopDetected);
        loop_detected
            .headers
            .retain(|h| !matches!(h, rsip::Header::To(_)));
        loop_detected
            .headers
            .push(rsip::Header::To(rsip::headers::To::from(
                "Bob <sip:bob@biloxi.example.com>;tag=merged1",
            )));
        table
            .send_response(&key, loop_detected, t0 + ms(20))
            .expect("482 allowed");
        let actions = drain(&mut table);
        assert!(actions.iter().any(
            |(k, a)| *k == key && sent_response(a).is_some_and(|r| r.status_code.code() == 482)
        ));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_request_with_to_tag_is_not_merged() {
        let (mut table, t0) = table();
        let in_dialog = INVITE.replace(
            "To: Bob <sip:bob@biloxi.example.com>",
            "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
        );
        table
            .on_request(fixtures::request(&in_dialog), false, t0)
            .expect("routable");
        let again = fixtures::request(&fixtures::with_header(
            &in_dialog,
            "Via",
            "SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2other",
        ));
        assert!(matches!(
            table.on_request(again, false, t0),
            Ok(Incoming::New { .. })
        ));
    }

    #[test]
    fn server_invite_busy_ack_and_removal() {
        let (mut table, t0) = table();
        let key = new_key(
            table
                .on_request(fixtures::request(INVITE), false, t0)
                .expect("routable"),
        );
        table
            .send_response(&key, fixtures::response(BUSY_486), t0 + ms(100))
            .expect("486 allowed");
        assert_eq!(
            table.on_request(fixtures::request(ACK_486), false, t0 + ms(300)),
            Ok(Incoming::Absorbed(key.clone()))
        );
        let actions = drain(&mut table);
        assert!(matches!(
            actions.as_slice(),
            [(_, Action::Send(_)), (_, Action::Ack(_))]
        ));
        // Timer I (T4) ends it and the table forgets it.
        assert_eq!(table.poll_timeout(), Some(t0 + ms(5300)));
        let out = run_timers(&mut table, t0, Duration::from_secs(60));
        assert_eq!(out, vec![(ms(5300), Action::Terminated)]);
        assert!(table.is_empty());
        assert_eq!(table.poll_timeout(), None);
    }

    #[test]
    fn the_ack_for_a_2xx_goes_to_the_tu() {
        let (mut table, t0) = table();
        let key = new_key(
            table
                .on_request(fixtures::request(INVITE), false, t0)
                .expect("routable"),
        );
        table
            .send_response(&key, fixtures::response(OK_200), t0 + ms(100))
            .expect("200 allowed");
        // The INVITE retransmitted after the 200 is absorbed (RFC 6026), not a new call.
        assert_eq!(
            table.on_request(fixtures::request(INVITE), false, t0 + ms(500)),
            Ok(Incoming::Absorbed(key.clone()))
        );
        assert_eq!(
            table.on_request(fixtures::request(ACK_200), false, t0 + ms(600)),
            Ok(Incoming::Ack(fixtures::request(ACK_200)))
        );
        assert_eq!(table.len(), 1, "no transaction for the ACK");
    }

    #[test]
    fn cancel_has_its_own_transaction_and_names_its_invite() {
        let (mut table, t0) = table();
        let invite = new_key(
            table
                .on_request(fixtures::request(INVITE), false, t0)
                .expect("routable"),
        );
        let cancel = table
            .on_request(fixtures::request(CANCEL), false, t0 + ms(100))
            .expect("routable");
        let Incoming::Cancel {
            key,
            invite: target,
            ..
        } = cancel
        else {
            panic!("expected a CANCEL, got {cancel:?}");
        };
        assert_eq!(target, Some(invite.clone()));
        assert_ne!(key, invite);
        table
            .send_response(
                &key,
                response_for(&fixtures::request(CANCEL), StatusCode::OK),
                t0 + ms(110),
            )
            .expect("200 to CANCEL");
        table
            .send_response(
                &invite,
                response_for(&fixtures::request(INVITE), StatusCode::RequestTerminated),
                t0 + ms(110),
            )
            .expect("487 to INVITE");
        assert_eq!(table.len(), 2);

        // A CANCEL for an INVITE we never saw: no target (the TU answers 481).
        let (mut other, t0) = self::table();
        assert!(matches!(
            other.on_request(fixtures::request(CANCEL), false, t0),
            Ok(Incoming::Cancel { invite: None, .. })
        ));
    }

    #[test]
    fn client_invite_through_the_table() {
        let (mut table, t0) = table();
        let key = table
            .send_request(fixtures::request(INVITE), false, t0)
            .expect("client transaction");
        assert!(matches!(
            drain(&mut table).as_slice(),
            [(k, Action::Send(SipMessage::Request(_)))] if *k == key
        ));
        assert_eq!(
            table.on_response(fixtures::response(RINGING_180), t0 + ms(100)),
            Ok(ResponseOutcome::Matched(key.clone()))
        );
        table
            .on_response(fixtures::response(BUSY_486), t0 + ms(200))
            .expect("matchable");
        table
            .on_response(fixtures::response(BUSY_486), t0 + ms(700))
            .expect("matchable");
        let codes: Vec<_> = drain(&mut table)
            .into_iter()
            .map(|(k, a)| {
                assert_eq!(k, key);
                match a {
                    Action::Deliver(r) => format!("deliver {}", r.status_code.code()),
                    Action::Send(SipMessage::Request(r)) => format!("send {}", r.method),
                    other => format!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(
            codes,
            ["deliver 180", "send ACK", "deliver 486", "send ACK"]
        );
        let out = run_timers(&mut table, t0, Duration::from_secs(60));
        assert_eq!(out, vec![(ms(32_200), Action::Terminated)]);
        assert!(table.is_empty());
        // Once forgotten, a late response is unmatched (RFC 6026 §8.9: discard).
        assert!(matches!(
            table.on_response(fixtures::response(BUSY_486), t0 + ms(40_000)),
            Ok(ResponseOutcome::Unmatched(_))
        ));
    }

    #[test]
    fn timeouts_come_tagged_with_their_transaction() {
        let (mut table, t0) = table();
        let invite = table
            .send_request(fixtures::request(INVITE), true, t0)
            .expect("client transaction");
        let message = table
            .send_request(fixtures::request(MESSAGE), true, t0 + ms(1000))
            .expect("client transaction");
        drain(&mut table);
        assert_eq!(table.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        table.on_timeout(t0 + Duration::from_secs(40));
        assert_eq!(
            drain(&mut table),
            vec![
                (invite.clone(), Action::Timeout(Timer::B)),
                (invite, Action::Terminated),
                (message.clone(), Action::Timeout(Timer::F)),
                (message, Action::Terminated),
            ]
        );
        assert!(table.is_empty());
    }

    #[test]
    fn tu_mistakes_are_typed_errors() {
        let (mut table, t0) = table();
        assert_eq!(
            table.send_request(fixtures::request(ACK_200), false, t0),
            Err(TableError::AckHasNoTransaction)
        );
        let key = table
            .send_request(fixtures::request(MESSAGE), false, t0)
            .expect("client transaction");
        assert_eq!(
            table.send_request(fixtures::request(MESSAGE), false, t0),
            Err(TableError::Duplicate(key.clone()))
        );
        assert_eq!(
            table.send_response(&key, fixtures::response(MESSAGE_200), t0),
            Err(TableError::NotServer(key.clone()))
        );
        let no_branch = MESSAGE.replace(";branch=z9hG4bK776sgdkse", "");
        assert_eq!(
            table.send_request(fixtures::request(&no_branch), false, t0),
            Err(TableError::Key(KeyError::MissingBranch))
        );
        let server = TransactionKey::server_of_request(&fixtures::request(MESSAGE)).expect("key");
        assert_eq!(
            table.send_response(&server, fixtures::response(MESSAGE_200), t0),
            Err(TableError::Unknown(server.clone()))
        );
        assert_eq!(
            table.on_transport_error(&server, t0),
            Err(TableError::Unknown(server))
        );
        table.on_transport_error(&key, t0).expect("live");
        assert!(table.is_empty());
    }

    #[test]
    fn unroutable_requests_come_back_with_a_typed_error() {
        let (mut table, t0) = table();
        let no_via = fixtures::request(&fixtures::without_header(INVITE, "Via"));
        assert_eq!(
            table.on_request(no_via.clone(), false, t0),
            Err(RejectedRequest {
                error: KeyError::MissingVia,
                request: Box::new(no_via),
            })
        );
        let no_cseq = fixtures::response(&fixtures::without_header(BUSY_486, "CSeq"));
        assert_eq!(table.on_response(no_cseq, t0), Err(KeyError::MissingCSeq));
        assert!(table.is_empty());
    }

    #[test]
    fn removing_a_server_transaction_clears_merge_detection() {
        let (mut table, t0) = table();
        let key = new_key(
            table
                .on_request(fixtures::request(INVITE), false, t0)
                .expect("routable"),
        );
        assert!(table.remove(&key).is_some());
        assert!(matches!(
            table.on_request(invite_via_other_proxy(), false, t0),
            Ok(Incoming::New { .. })
        ));
    }

    /// Messages rsip accepts but that lack what transactions need.
    const GARBAGE: &[&str] = &[
        "INVITE sip:x SIP/2.0\n\n",
        "ACK sip:x SIP/2.0\n\n",
        "CANCEL sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n\n",
        "BYE sip:x SIP/2.0\nVia: \nCSeq: \n\n",
        "INVITE sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nCSeq: 1\n\n",
        "INVITE sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nCSeq: 1 INVITE\n\n",
        "ACK sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nCSeq: 1 ACK\n\n",
        "INVITE sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=\nCSeq: 1 INVITE\n\n",
        "INVITE sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=old\nCSeq: 1 INVITE\n\n",
        "INVITE sip:x SIP/2.0\nVia: ,,,\nCSeq: 1 INVITE\nFrom: ;tag=\nTo: <\nCall-ID: \n\n",
        "OPTIONS sip:x SIP/2.0\nv: SIP/2.0/TCP [::1]:0;branch=z9hG4bK\nCSeq: 4294967295 OPTIONS\nf: <sip:a>;tag=1\ni: c\n\n",
        "SIP/2.0 200 OK\n\n",
        "SIP/2.0 180 Ringing\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n\n",
        "SIP/2.0 486 Busy Here\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nCSeq: 1 INVITE\n\n",
        "SIP/2.0 999 What\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nCSeq: 1 INVITE\n\n",
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nCSeq: x y z\n\n",
    ];

    /// Feeds `text` through the table every way it can go, and runs the timers.
    fn feed(table: &mut TransactionTable, text: &str, t0: Instant, step: u64) {
        let Ok(message) = SipMessage::try_from(fixtures::crlf(text).as_str()) else {
            return;
        };
        let now = t0 + ms(step);
        match message {
            SipMessage::Request(request) => {
                let _ = table.send_request(request.clone(), step.is_multiple_of(2), now);
                if let Ok(
                    Incoming::New { key, request }
                    | Incoming::Merged { key, request, .. }
                    | Incoming::Cancel { key, request, .. },
                ) = table.on_request(request, step.is_multiple_of(3), now)
                {
                    for status in [100, 180, 200, 486, 200] {
                        let _ = table.send_response(
                            &key,
                            response_for(&request, StatusCode::from(status)),
                            now,
                        );
                    }
                }
            }
            SipMessage::Response(response) => {
                let _ = table.on_response(response, now);
            }
        }
        table.on_timeout(now + Duration::from_secs(step % 40));
        drain(table);
    }

    #[test]
    fn garbage_never_panics() {
        let (mut table, t0) = table();
        for (step, text) in GARBAGE.iter().enumerate() {
            feed(&mut table, text, t0, step as u64);
        }
        run_timers(&mut table, t0, Duration::from_secs(3600));
        assert!(table.is_empty());
    }

    #[test]
    fn mutated_fixtures_never_panic() {
        // A fixed xorshift stream: the same mutations every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b";,:<>\"/ =\nz9hG4bK0[]\\";
        let (mut table, t0) = table();
        let fixtures = [
            INVITE,
            TRYING_100,
            RINGING_180,
            BUSY_486,
            OK_200,
            ACK_486,
            ACK_200,
            CANCEL,
            MESSAGE,
            MESSAGE_100,
            MESSAGE_200,
        ];
        for step in 0..3000u64 {
            let mut bytes = fixtures[(next() % fixtures.len() as u64) as usize]
                .as_bytes()
                .to_vec();
            for _ in 0..(next() % 4 + 1) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            feed(&mut table, &text, t0, step);
        }
        run_timers(&mut table, t0, Duration::from_secs(3600 * 24));
        // Only an INVITE that got a provisional may still wait: that is the TU's to end.
        assert!(table.iter().all(|(_, tx)| matches!(
            tx,
            Transaction::Ict(ict) if ict.state() == crate::sip::transaction::ict::State::Proceeding
        )));
    }
}
