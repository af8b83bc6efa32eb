//! Transaction matching: which transaction a message belongs to.
//!
//! Owns [`TransactionKey`] and the rules that compute it: §17.1.3 for client transactions
//! (top Via branch + CSeq method), §17.2.3 for server transactions (branch + sent-by +
//! method, the ACK folded onto its INVITE, CANCEL keyed on its own), and the RFC 2543
//! fallback of §17.2.3 for requests whose branch lacks the magic cookie. Must not keep any
//! state: a key is a pure function of one message.
//!
//! The RFC 2543 fallback is simplified in one documented way: the To tag is left out of
//! the key. The RFC compares it, but the ACK for a non-2xx carries the tag of our response
//! while the INVITE carried none, so it cannot be part of a key computed from one message.
//! Two RFC 2543 requests that differ only in the To tag would therefore share a
//! transaction; no RFC 3261 peer is affected.

use std::fmt;
use std::hash::{Hash, Hasher};

use rsip::{Method, Request, Response};

use super::message;

/// RFC 3261 §8.1.1.7: a branch starting with this was built by an RFC 3261 element and is
/// unique per transaction; any other branch (or none) means RFC 2543 matching.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Why no transaction key can be computed. The transport answers a request with 400 (if it
/// has a usable Via to answer to) or drops it; a response is dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no Via header")]
    MissingVia,
    #[error("malformed top Via {value:?}: {reason}")]
    MalformedVia { value: String, reason: &'static str },
    /// Client matching needs the branch (§17.1.3); our own requests always carry one.
    #[error("top Via has no branch parameter")]
    MissingBranch,
    #[error("no CSeq header")]
    MissingCSeq,
    #[error("malformed CSeq {0:?}")]
    MalformedCSeq(String),
    /// §8.1.1.5: the CSeq method MUST match the request method.
    #[error("CSeq method {cseq} differs from request method {request}")]
    CSeqMethodMismatch { request: Method, cseq: Method },
    /// Only the RFC 2543 fallback needs the Call-ID.
    #[error("no Call-ID header")]
    MissingCallId,
}

/// Which side of a transaction we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
}

/// The `sent-by` of a Via (§18.2.1 / §20.42): host lower-cased (hostnames and IPv6
/// literals compare case-insensitively), port as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SentBy {
    host: String,
    port: Option<u16>,
}

impl SentBy {
    pub(super) fn new(host: &str, port: Option<u16>) -> Self {
        Self {
            host: host.to_ascii_lowercase(),
            port,
        }
    }

    /// The host, lower-cased; IPv6 literals keep their brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for SentBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// The identity of one transaction. Build it with [`TransactionKey::client_of_request`],
/// [`TransactionKey::client_of_response`] or [`TransactionKey::server_of_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionKey {
    role: Role,
    /// The method of the transaction: the CSeq method, except that an ACK is keyed as the
    /// INVITE it acknowledges (§17.2.3).
    method: Method,
    id: Id,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Id {
    /// RFC 3261 matching. `sent_by` is `None` for client keys: §17.1.3 compares only the
    /// branch, and the branch was made unique by us.
    Branch {
        branch: String,
        sent_by: Option<SentBy>,
    },
    /// RFC 2543 fallback (§17.2.3), server side only.
    Rfc2543(Box<Rfc2543Id>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Rfc2543Id {
    request_uri: String,
    from_tag: Option<String>,
    call_id: String,
    cseq: u32,
    sent_by: SentBy,
    branch: Option<String>,
}

impl Hash for TransactionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.role.hash(state);
        // rsip::Method has no Hash; its discriminant is the whole value (a fieldless enum).
        std::mem::discriminant(&self.method).hash(state);
        self.id.hash(state);
    }
}

impl TransactionKey {
    /// The key of the client transaction that sends `request` (§17.1.3): its top Via
    /// branch and its method. Fails if there is no branch to match responses on.
    pub fn client_of_request(request: &Request) -> Result<Self, KeyError> {
        let via = message::top_via(&request.headers)?;
        let branch = via.branch.ok_or(KeyError::MissingBranch)?;
        let (_, cseq_method) = message::cseq(&request.headers)?;
        if cseq_method != request.method {
            return Err(KeyError::CSeqMethodMismatch {
                request: request.method,
                cseq: cseq_method,
            });
        }
        Ok(Self::client(branch, request.method))
    }

    /// The key of the client transaction a response belongs to (§17.1.3): top Via branch
    /// and CSeq method. A CANCEL and the INVITE it cancels share a branch; the CSeq method
    /// tells their responses apart.
    pub fn client_of_response(response: &Response) -> Result<Self, KeyError> {
        let via = message::top_via(&response.headers)?;
        let branch = via.branch.ok_or(KeyError::MissingBranch)?;
        let (_, method) = message::cseq(&response.headers)?;
        Ok(Self::client(branch, method))
    }

    fn client(branch: &str, method: Method) -> Self {
        Self {
            role: Role::Client,
            method,
            id: Id::Branch {
                branch: branch.to_owned(),
                sent_by: None,
            },
        }
    }

    /// The key of the server transaction a request belongs to (§17.2.3). With a magic
    /// cookie branch: branch + sent-by + method, where an ACK is keyed as INVITE so that
    /// the ACK for a non-2xx finds its INVITE server transaction (the ACK for a 2xx has a
    /// new branch and finds none). Without one: the RFC 2543 rules (see the module doc).
    pub fn server_of_request(request: &Request) -> Result<Self, KeyError> {
        let via = message::top_via(&request.headers)?;
        let (cseq, cseq_method) = message::cseq(&request.headers)?;
        if cseq_method != request.method {
            return Err(KeyError::CSeqMethodMismatch {
                request: request.method,
                cseq: cseq_method,
            });
        }
        let method = match request.method {
            Method::Ack => Method::Invite,
            other => other,
        };
        let id = match via.branch {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => Id::Branch {
                branch: branch.to_owned(),
                sent_by: Some(via.sent_by),
            },
            branch => {
                let call_id = message::call_id(&request.headers).ok_or(KeyError::MissingCallId)?;
                Id::Rfc2543(Box::new(Rfc2543Id {
                    request_uri: request.uri.to_string(),
                    from_tag: message::tag(&request.headers, message::Field::From)
                        .map(str::to_owned),
                    call_id: call_id.to_owned(),
                    cseq,
                    sent_by: via.sent_by,
                    branch: branch.map(str::to_owned),
                }))
            }
        };
        Ok(Self {
            role: Role::Server,
            method,
            id,
        })
    }

    /// For the key of a server CANCEL transaction, the key of the INVITE server
    /// transaction it cancels (§9.2: same matching, method INVITE). `None` for any other key.
    pub fn cancel_target(&self) -> Option<Self> {
        (self.role == Role::Server && self.method == Method::Cancel).then(|| Self {
            role: Role::Server,
            method: Method::Invite,
            id: self.id.clone(),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The transaction's method (INVITE for the key of an ACK).
    pub fn method(&self) -> Method {
        self.method
    }

    /// The Via branch, if the key has one.
    pub fn branch(&self) -> Option<&str> {
        match &self.id {
            Id::Branch { branch, .. } => Some(branch),
            Id::Rfc2543(id) => id.branch.as_deref(),
        }
    }

    /// Whether RFC 3261 (magic cookie) matching applies, rather than the RFC 2543 fallback.
    pub fn is_rfc3261(&self) -> bool {
        matches!(self.id, Id::Branch { .. })
    }
}

impl fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Client => "client",
            Role::Server => "server",
        };
        match &self.id {
            Id::Branch {
                branch,
                sent_by: None,
            } => write!(f, "{role} {} {branch}", self.method),
            Id::Branch {
                branch,
                sent_by: Some(sent_by),
            } => write!(f, "{role} {} {branch}@{sent_by}", self.method),
            Id::Rfc2543(id) => write!(
                f,
                "{role} {} rfc2543 {} {}@{}",
                self.method, id.call_id, id.cseq, id.sent_by
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::fixtures::{self, *};

    #[test]
    fn response_matches_its_client_transaction() {
        let invite = fixtures::request(INVITE);
        let key = TransactionKey::client_of_request(&invite).expect("key");
        for text in [RINGING_180, BUSY_486, OK_200] {
            let response = fixtures::response(text);
            assert_eq!(
                TransactionKey::client_of_response(&response),
                Ok(key.clone())
            );
        }
        assert_eq!(key.role(), Role::Client);
        assert_eq!(key.method(), Method::Invite);
        assert_eq!(key.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(key.to_string(), "client INVITE z9hG4bK776asdhds");
    }

    #[test]
    fn cancel_response_does_not_match_the_invite() {
        let invite = TransactionKey::client_of_request(&fixtures::request(INVITE)).expect("key");
        let cancel_ok = fixtures::response(&OK_200.replace("314159 INVITE", "314159 CANCEL"));
        let key = TransactionKey::client_of_response(&cancel_ok).expect("key");
        assert_ne!(key, invite);
        assert_eq!(key.method(), Method::Cancel);
    }

    #[test]
    fn ack_for_non_2xx_matches_the_invite_server_transaction() {
        let invite = TransactionKey::server_of_request(&fixtures::request(INVITE)).expect("key");
        let ack = TransactionKey::server_of_request(&fixtures::request(ACK_486)).expect("key");
        assert_eq!(ack, invite);
        assert!(invite.is_rfc3261());
        assert_eq!(
            invite.to_string(),
            "server INVITE z9hG4bK776asdhds@pc33.atlanta.example.com:5060"
        );
    }

    #[test]
    fn ack_for_2xx_has_its_own_branch_and_matches_nothing() {
        let invite = TransactionKey::server_of_request(&fixtures::request(INVITE)).expect("key");
        let ack = TransactionKey::server_of_request(&fixtures::request(ACK_200)).expect("key");
        assert_ne!(ack, invite);
    }

    #[test]
    fn cancel_gets_its_own_key_and_points_at_its_invite() {
        let invite = TransactionKey::server_of_request(&fixtures::request(INVITE)).expect("key");
        let cancel = TransactionKey::server_of_request(&fixtures::request(CANCEL)).expect("key");
        assert_ne!(cancel, invite);
        assert_eq!(cancel.method(), Method::Cancel);
        assert_eq!(cancel.cancel_target(), Some(invite.clone()));
        assert_eq!(invite.cancel_target(), None);
    }

    #[test]
    fn same_branch_from_another_sent_by_is_another_server_transaction() {
        let invite = TransactionKey::server_of_request(&fixtures::request(INVITE)).expect("key");
        let other = fixtures::request(&INVITE.replace(
            "pc33.atlanta.example.com:5060;branch",
            "pc34.atlanta.example.com:5060;branch",
        ));
        assert_ne!(
            TransactionKey::server_of_request(&other),
            Ok(invite.clone())
        );
        let upper = fixtures::request(&INVITE.replace(
            "pc33.atlanta.example.com:5060;branch",
            "PC33.Atlanta.Example.COM:5060;branch",
        ));
        assert_eq!(TransactionKey::server_of_request(&upper), Ok(invite));
    }

    #[test]
    fn client_and_server_keys_never_collide() {
        let invite = fixtures::request(INVITE);
        assert_ne!(
            TransactionKey::client_of_request(&invite),
            TransactionKey::server_of_request(&invite)
        );
    }

    #[test]
    fn rfc2543_fallback_without_magic_cookie() {
        let old_invite = INVITE.replace("branch=z9hG4bK776asdhds", "branch=1234");
        let old_ack = ACK_486.replace("branch=z9hG4bK776asdhds", "branch=1234");
        let invite =
            TransactionKey::server_of_request(&fixtures::request(&old_invite)).expect("2543 key");
        let ack =
            TransactionKey::server_of_request(&fixtures::request(&old_ack)).expect("2543 key");
        assert!(!invite.is_rfc3261());
        assert_eq!(ack, invite);
        let bye = fixtures::request(&old_invite.replace("INVITE", "BYE"));
        assert_ne!(TransactionKey::server_of_request(&bye), Ok(invite.clone()));
        // No branch at all is RFC 2543 too.
        let no_branch = INVITE.replace(";branch=z9hG4bK776asdhds", "");
        let key =
            TransactionKey::server_of_request(&fixtures::request(&no_branch)).expect("2543 key");
        assert_eq!(key.branch(), None);
        assert_ne!(key, invite);
    }

    #[test]
    fn missing_or_malformed_headers_are_typed_errors() {
        let no_via = fixtures::without_header(INVITE, "Via");
        assert_eq!(
            TransactionKey::server_of_request(&fixtures::request(&no_via)),
            Err(KeyError::MissingVia)
        );
        assert_eq!(
            TransactionKey::client_of_request(&fixtures::request(&no_via)),
            Err(KeyError::MissingVia)
        );
        let bad_via = INVITE.replace("SIP/2.0/UDP pc33", "SIP/2.0/UDP");
        assert!(matches!(
            TransactionKey::server_of_request(&fixtures::request(&bad_via)),
            Err(KeyError::MalformedVia { .. })
        ));
        let no_cseq = fixtures::without_header(INVITE, "CSeq");
        assert_eq!(
            TransactionKey::server_of_request(&fixtures::request(&no_cseq)),
            Err(KeyError::MissingCSeq)
        );
        let bad_cseq = INVITE.replace("CSeq: 314159 INVITE", "CSeq: INVITE");
        assert!(matches!(
            TransactionKey::server_of_request(&fixtures::request(&bad_cseq)),
            Err(KeyError::MalformedCSeq(_))
        ));
        let mismatch = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
        assert_eq!(
            TransactionKey::server_of_request(&fixtures::request(&mismatch)),
            Err(KeyError::CSeqMethodMismatch {
                request: Method::Invite,
                cseq: Method::Bye
            })
        );
        let no_branch = fixtures::response(&BUSY_486.replace(";branch=z9hG4bK776asdhds", ""));
        assert_eq!(
            TransactionKey::client_of_response(&no_branch),
            Err(KeyError::MissingBranch)
        );
        let old_without_call_id = fixtures::without_header(
            &INVITE.replace("branch=z9hG4bK776asdhds", "branch=1"),
            "Call-ID",
        );
        assert_eq!(
            TransactionKey::server_of_request(&fixtures::request(&old_without_call_id)),
            Err(KeyError::MissingCallId)
        );
    }

    #[test]
    fn compact_via_is_understood() {
        let compact = INVITE.replace("Via: ", "v: ");
        assert_eq!(
            TransactionKey::server_of_request(&fixtures::request(&compact)),
            TransactionKey::server_of_request(&fixtures::request(INVITE))
        );
    }

    #[test]
    fn keys_work_in_a_hash_map() {
        let mut map = std::collections::HashMap::new();
        let key = TransactionKey::server_of_request(&fixtures::request(INVITE)).expect("key");
        map.insert(key.clone(), 1);
        let ack = TransactionKey::server_of_request(&fixtures::request(ACK_486)).expect("key");
        assert_eq!(map.get(&ack), Some(&1));
    }
}
