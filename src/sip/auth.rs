//! SIP digest authentication, client side (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).
//!
//! Owns: parsing `WWW-Authenticate` / `Proxy-Authenticate` values (RFC 7235 §2.1 auth-param
//! syntax), choosing among several challenges, computing the `Authorization` /
//! `Proxy-Authorization` value, the per-realm nonce-count state, and telling a stale nonce from
//! rejected credentials.
//!
//! Must not touch: sockets, tasks, the clock, logging of secrets, or whole SIP messages. It takes
//! header *values* as `&str` and hands back header values, so `registration.rs` and the
//! transaction layer stay in charge of which request carries them (and of retry limits).
//! Randomness (the cnonce) is injected, so everything here is deterministic under test.
//!
//! We do not use rsip's digest helper: it cannot parse `qop="auth,auth-int"` and prints `nc` in
//! decimal.

use std::fmt;

use sha2::Digest;

use crate::config::Secret;

/// Authorization state is kept for at most this many realms at once. A request crosses a
/// handful of challenging hops at most (outbound proxy, registrar, a forking proxy's targets);
/// the bound stops a peer that invents realms from growing our memory. The oldest is dropped.
const MAX_REALMS: usize = 8;

/// Peer-supplied text quoted in an error is cut to this many characters: enough to diagnose,
/// small enough that a hostile header cannot flood the logs.
const MAX_EXCERPT_CHARS: usize = 64;

/// Bytes of randomness in [`random_cnonce`]. The cnonce stops a malicious server from
/// precomputing answers to a fixed nonce (RFC 7616 §5.10, §5.12); RFC 2831 recommends at least
/// 64 bits. 128 costs nothing more and makes a repeated (cnonce, nc) pair negligible.
const CNONCE_BYTES: usize = 16;

/// Errors of this module. Strings taken from the peer are cut to a short excerpt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The header value does not follow the RFC 7235 §2.1 challenge grammar.
    #[error("malformed authentication header at byte {offset}: {reason}")]
    Syntax { offset: usize, reason: &'static str },
    /// No challenge at all (empty header value, or no header).
    #[error("no authentication challenge")]
    Empty,
    /// A scheme other than Digest (e.g. `Basic`), which SIP does not allow (RFC 3261 §22).
    #[error("unsupported authentication scheme {0:?}")]
    UnsupportedScheme(String),
    /// An `algorithm` we do not implement (RFC 7616 §3.3 says to ignore such a challenge).
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// `qop` is present but offers neither `auth` nor `auth-int`.
    #[error("digest qop {0:?} offers neither auth nor auth-int")]
    UnsupportedQop(String),
    /// A parameter the challenge needs (`realm`, `nonce`) is absent or empty.
    #[error("digest challenge lacks {0}")]
    MissingParam(&'static str),
    /// A parameter appears twice; RFC 7235 §2.2 allows each name only once per challenge.
    #[error("digest challenge repeats {0}")]
    DuplicateParam(&'static str),
    /// A `-sess` algorithm without `qop`: HA1 needs a cnonce, which may only be sent with qop
    /// (RFC 7616 §3.4.2, RFC 2617 §3.2.2), so the server could not check our answer.
    #[error("{0} challenge without qop cannot be answered")]
    SessWithoutQop(Algorithm),
    /// Our own input would break the header (control character, space in a URI, empty cnonce).
    #[error("{field} is not usable in a digest header")]
    InvalidInput { field: &'static str },
    /// The nonce was used 2^32−1 times; `nc` has 8 hex digits (RFC 7616 §3.4). Wait for a
    /// fresh challenge.
    #[error("nonce count exhausted for this nonce")]
    NonceCountExhausted,
}

/// Digest hash algorithms (RFC 7616 §3.3 and §6.1 registry, adopted for SIP by RFC 8760 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    /// The token as written in headers (`SHA-512-256`, RFC 8760 §2.1).
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// `-sess` variants fold the nonce and cnonce into HA1 (RFC 7616 §3.4.2).
    pub const fn is_sess(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// Case-insensitive, as deployed servers vary the case (`MD5-SESS`, `sha-256`).
    fn from_token(s: &str) -> Option<Algorithm> {
        const ALL: [Algorithm; 6] = [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ];
        ALL.into_iter().find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    /// Our preference: SHA-256, then SHA-512-256, then MD5 (RFC 8760 §2.4 lets local policy
    /// override the server's order; RFC 7616 §3.7 ranks MD5 last). A `-sess` variant ranks
    /// with its base.
    const fn preference(self) -> u8 {
        match self {
            Algorithm::Sha256 | Algorithm::Sha256Sess => 3,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => 2,
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
        }
    }

    /// Lowercase hex of H(p1 ":" p2 ":" …), the only shape digest ever hashes.
    fn hash(self, parts: &[&[u8]]) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hash_hex::<md5::Md5>(parts),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hash_hex::<sha2::Sha256>(parts),
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => {
                hash_hex::<sha2::Sha512_256>(parts)
            }
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quality of protection (RFC 7616 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    /// Covers method and Request-URI.
    Auth,
    /// Also covers the body: HA2 = H(method:uri:H(body)).
    AuthInt,
}

impl Qop {
    pub const fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// Which kind of challenge a response carries; picks the header names (RFC 3261 §22.2, §22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthKind {
    /// 401 from a UAS or registrar: `WWW-Authenticate` → `Authorization`.
    Www,
    /// 407 from a proxy: `Proxy-Authenticate` → `Proxy-Authorization`.
    Proxy,
}

impl AuthKind {
    /// 401 → [`AuthKind::Www`], 407 → [`AuthKind::Proxy`], anything else → `None`.
    pub const fn from_status(code: u16) -> Option<AuthKind> {
        match code {
            401 => Some(AuthKind::Www),
            407 => Some(AuthKind::Proxy),
            _ => None,
        }
    }

    /// The header that carries the challenge in the response.
    pub const fn challenge_header(self) -> &'static str {
        match self {
            AuthKind::Www => "WWW-Authenticate",
            AuthKind::Proxy => "Proxy-Authenticate",
        }
    }

    /// The header that carries our answer in the resent request.
    pub const fn credentials_header(self) -> &'static str {
        match self {
            AuthKind::Www => "Authorization",
            AuthKind::Proxy => "Proxy-Authorization",
        }
    }
}

/// A usable Digest challenge: scheme checked, algorithm known, realm and nonce present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    realm: String,
    nonce: String,
    opaque: Option<String>,
    algorithm: Algorithm,
    /// `None`: no qop parameter, RFC 2069 compatibility mode (RFC 2617 §3.2.2.1).
    qop: Option<Qop>,
    stale: bool,
    userhash: bool,
}

impl Challenge {
    /// Parses one header value. If it holds several challenges (RFC 7235 §4.1 allows a
    /// comma-separated list), the preferred usable one is returned, as [`choose_challenge`].
    pub fn parse(header_value: &str) -> Result<Challenge, AuthError> {
        choose_challenge([header_value])
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    pub fn opaque(&self) -> Option<&str> {
        self.opaque.as_deref()
    }

    /// `MD5` when the challenge names none (RFC 7616 §3.3).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The qop we will answer with: `auth` whenever offered, else `auth-int`; `None` when the
    /// challenge has no qop (RFC 2069 mode).
    pub fn qop(&self) -> Option<Qop> {
        self.qop
    }

    /// `stale=true`: the nonce expired but the credentials were fine (RFC 7616 §3.3).
    pub fn stale(&self) -> bool {
        self.stale
    }

    /// The server supports hashed usernames (RFC 7616 §3.4.4). We parse it and keep sending
    /// the plain username, which the RFC allows.
    pub fn userhash(&self) -> bool {
        self.userhash
    }

    fn from_raw(raw: &RawChallenge<'_>) -> Result<Challenge, AuthError> {
        if !raw.scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::UnsupportedScheme(excerpt(raw.scheme)));
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = None;
        let mut qop = None;
        let mut stale = None;
        let mut userhash = None;
        for (name, value) in &raw.params {
            // Parameter names are case-insensitive (RFC 7235 §2.1); unknown ones are ignored
            // (RFC 7616 §3.3), e.g. `domain`, `charset`.
            let (slot, label) = match name.to_ascii_lowercase().as_str() {
                "realm" => (&mut realm, "realm"),
                "nonce" => (&mut nonce, "nonce"),
                "opaque" => (&mut opaque, "opaque"),
                "algorithm" => (&mut algorithm, "algorithm"),
                "qop" => (&mut qop, "qop"),
                "stale" => (&mut stale, "stale"),
                "userhash" => (&mut userhash, "userhash"),
                _ => continue,
            };
            if slot.is_some() {
                return Err(AuthError::DuplicateParam(label));
            }
            *slot = Some(value.as_str());
        }

        let realm = realm.ok_or(AuthError::MissingParam("realm"))?;
        let nonce = nonce
            .filter(|n| !n.is_empty())
            .ok_or(AuthError::MissingParam("nonce"))?;
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_token(a.trim())
                .ok_or_else(|| AuthError::UnsupportedAlgorithm(excerpt(a)))?,
        };
        let qop = match qop {
            None => None,
            Some(list) => Some(parse_qop(list)?),
        };
        if algorithm.is_sess() && qop.is_none() {
            return Err(AuthError::SessWithoutQop(algorithm));
        }
        let is_true = |v: Option<&str>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Ok(Challenge {
            realm: realm.to_owned(),
            nonce: nonce.to_owned(),
            opaque: opaque.map(str::to_owned),
            algorithm,
            qop,
            stale: is_true(stale),
            userhash: is_true(userhash),
        })
    }
}

/// `qop` is a comma list inside one quoted string (RFC 7616 §3.3); tokens we do not know
/// (e.g. `auth-conf`) are skipped. `auth` wins over `auth-int`: it needs no body hash and every
/// SIP server supports it.
fn parse_qop(list: &str) -> Result<Qop, AuthError> {
    let mut auth_int = false;
    for item in list.split(',').map(|s| s.trim_matches(is_ws)) {
        if item.eq_ignore_ascii_case("auth") {
            return Ok(Qop::Auth);
        }
        auth_int |= item.eq_ignore_ascii_case("auth-int");
    }
    if auth_int {
        Ok(Qop::AuthInt)
    } else {
        Err(AuthError::UnsupportedQop(excerpt(list)))
    }
}

/// Picks the challenge to answer from all `WWW-Authenticate` (or all `Proxy-Authenticate`)
/// values of one response: SHA-256 over SHA-512-256 over MD5, the topmost among equals
/// (RFC 8760 §2.4). Unusable challenges (other schemes, unknown algorithms, malformed values)
/// are skipped; if none is usable, the most specific error is returned.
///
/// One realm is answered; a response from a forking proxy with challenges for several realms
/// (RFC 3261 §22.3) needs one call per realm's subset of values.
pub fn choose_challenge<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
) -> Result<Challenge, AuthError> {
    let mut best: Option<Challenge> = None;
    let mut error: Option<AuthError> = None;
    let mut note = |e: AuthError| {
        if error
            .as_ref()
            .is_none_or(|old| error_rank(&e) > error_rank(old))
        {
            error = Some(e);
        }
    };
    for value in header_values {
        match parse_raw(value) {
            Err(e) => note(e),
            Ok(raws) => {
                for raw in &raws {
                    match Challenge::from_raw(raw) {
                        Err(e) => note(e),
                        Ok(c) => {
                            let better = best.as_ref().is_none_or(|b| {
                                c.algorithm.preference() > b.algorithm.preference()
                            });
                            if better {
                                best = Some(c);
                            }
                        }
                    }
                }
            }
        }
    }
    best.ok_or_else(|| error.unwrap_or(AuthError::Empty))
}

/// Which error explains best why nothing was usable: a Digest challenge we could not use beats
/// a malformed value, which beats a foreign scheme.
fn error_rank(e: &AuthError) -> u8 {
    match e {
        AuthError::Empty => 0,
        AuthError::UnsupportedScheme(_) => 1,
        AuthError::Syntax { .. } => 2,
        _ => 3,
    }
}

/// What the digest covers of the request being sent (RFC 3261 §22.4: the method and the
/// Request-URI, and the body for `auth-int`). For ACK and CANCEL of a challenged INVITE, reuse
/// the INVITE's credentials instead (RFC 3261 §22.1).
#[derive(Debug, Clone, Copy)]
pub struct DigestRequest<'a> {
    pub method: &'a str,
    /// The Request-URI exactly as it will be printed on the request line.
    pub uri: &'a str,
    pub body: &'a [u8],
}

/// The value of one `Authorization` / `Proxy-Authorization` header, plus what
/// [`classify_rechallenge`] needs to judge the server's answer to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    value: String,
    realm: String,
    nonce: String,
    nc: Option<u32>,
    preemptive: bool,
}

impl Authorization {
    /// The header value, starting with `Digest `.
    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Built by [`DigestClient::reauthorize`] from a cached nonce, not in answer to a challenge.
    pub fn is_preemptive(&self) -> bool {
        self.preemptive
    }
}

/// The response hash is password-derived (open to offline guessing), so it stays out of logs.
impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .field("nc", &self.nc)
            .field("preemptive", &self.preemptive)
            .finish_non_exhaustive()
    }
}

/// What a 401/407 means for a request that carried credentials (or did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rechallenge {
    /// We have not answered this realm yet: answer it.
    Fresh,
    /// The nonce was refused, not the password: answer again with the new nonce.
    Stale,
    /// The server rejected our answer to its own fresh nonce: the credentials are wrong.
    /// Do not retry: RFC 3261 §22.2 says a UAC SHOULD NOT re-attempt with credentials just
    /// rejected (unless the nonce was stale), and retrying risks account lock-out.
    Failed,
}

/// Classifies `new`, chosen from a 401/407, against the credentials `sent` in the request it
/// answers (`None` if that request carried none). Call this before [`DigestClient::authorize`].
///
/// * No credentials, or credentials for another realm → [`Rechallenge::Fresh`].
/// * `stale=true` with a new nonce (RFC 7616 §3.3) → [`Rechallenge::Stale`].
/// * A new nonce without `stale` after a pre-emptive answer from a cached nonce →
///   [`Rechallenge::Stale`]: many servers forget nonces without saying so, and the password
///   has not yet been tried on a nonce they just issued.
/// * Anything else → [`Rechallenge::Failed`], including `stale=true` with the very nonce we
///   used, which would loop forever.
///
/// A caller should still cap the number of challenges per request.
pub fn classify_rechallenge(sent: Option<&Authorization>, new: &Challenge) -> Rechallenge {
    let Some(sent) = sent else {
        return Rechallenge::Fresh;
    };
    if sent.realm != new.realm {
        return Rechallenge::Fresh;
    }
    let new_nonce = sent.nonce != new.nonce;
    if new_nonce && (new.stale || sent.preemptive) {
        Rechallenge::Stale
    } else {
        Rechallenge::Failed
    }
}

/// The usable challenge of `kind` in a 401/407's headers, classified against the credentials
/// `sent` with the request it answers (see [`classify_rechallenge`]). `None` when the response
/// carries no challenge we can answer.
pub fn challenge_in(
    headers: &rsip::Headers,
    kind: AuthKind,
    sent: Option<&(AuthKind, Authorization)>,
) -> Option<(Challenge, Rechallenge)> {
    use rsip::headers::UntypedHeader;
    let values = headers.iter().filter_map(|h| match (kind, h) {
        (AuthKind::Www, rsip::Header::WwwAuthenticate(v)) => Some(v.value()),
        (AuthKind::Proxy, rsip::Header::ProxyAuthenticate(v)) => Some(v.value()),
        _ => None,
    });
    let challenge = choose_challenge(values).ok()?;
    let sent = sent.filter(|(k, _)| *k == kind).map(|(_, a)| a);
    let verdict = classify_rechallenge(sent, &challenge);
    Some((challenge, verdict))
}

/// The nonce state of one realm.
#[derive(Debug, Clone)]
struct Session {
    realm: String,
    nonce: String,
    opaque: Option<String>,
    algorithm: Algorithm,
    qop: Option<Qop>,
    /// The last nonce count sent with `nonce`.
    nc: u32,
    /// For `-sess`: the cnonce HA1 was computed with, reused for the nonce's lifetime so the
    /// server's HA1 (computed once, RFC 7616 §3.4.2) and each request's cnonce agree.
    sess_cnonce: Option<String>,
}

/// One set of credentials and its per-realm nonce state. `Debug` prints the password as `***`.
#[derive(Debug, Clone)]
pub struct DigestClient {
    username: String,
    password: Secret,
    sessions: Vec<Session>,
}

impl DigestClient {
    /// Rejects a username with control characters: it would let configuration text inject
    /// header lines.
    pub fn new(username: impl Into<String>, password: Secret) -> Result<DigestClient, AuthError> {
        let username = username.into();
        if username.chars().any(char::is_control) {
            return Err(AuthError::InvalidInput { field: "username" });
        }
        Ok(DigestClient {
            username,
            password,
            sessions: Vec::new(),
        })
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// Answers `challenge` for `request`. `nc` is 1 for a nonce we have not used, else one
    /// more than last time (RFC 7616 §3.4). `cnonce` is called at most once, and only when
    /// the challenge has qop; production passes [`random_cnonce`].
    pub fn authorize(
        &mut self,
        challenge: &Challenge,
        request: &DigestRequest<'_>,
        cnonce: impl FnMut() -> String,
    ) -> Result<Authorization, AuthError> {
        let index = self
            .sessions
            .iter()
            .position(|s| s.realm == challenge.realm);
        let previous = index.and_then(|i| self.sessions.get(i));
        let (nc, sess_cnonce) = match previous {
            Some(s) if s.nonce == challenge.nonce => (
                s.nc.checked_add(1).ok_or(AuthError::NonceCountExhausted)?,
                s.sess_cnonce.clone(),
            ),
            _ => (1, None),
        };
        let mut session = Session {
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            opaque: challenge.opaque.clone(),
            algorithm: challenge.algorithm,
            qop: challenge.qop,
            nc,
            sess_cnonce,
        };
        let value = self.build(&mut session, request, cnonce)?;
        let auth = Authorization {
            value,
            realm: session.realm.clone(),
            nonce: session.nonce.clone(),
            nc: session.qop.map(|_| nc),
            preemptive: false,
        };
        match index.and_then(|i| self.sessions.get_mut(i)) {
            Some(slot) => *slot = session,
            None => {
                if self.sessions.len() >= MAX_REALMS {
                    self.sessions.remove(0);
                }
                self.sessions.push(session);
            }
        }
        Ok(auth)
    }

    /// Pre-emptive credentials for a new request to `realm`, reusing its last nonce with the
    /// next `nc` (RFC 7616 §3.4), e.g. for a registration refresh. `Ok(None)` when nothing is
    /// cached for the realm, or in RFC 2069 mode, where a reused nonce is indistinguishable
    /// from a replay and servers refuse it.
    pub fn reauthorize(
        &mut self,
        realm: &str,
        request: &DigestRequest<'_>,
        cnonce: impl FnMut() -> String,
    ) -> Result<Option<Authorization>, AuthError> {
        let Some(index) = self.sessions.iter().position(|s| s.realm == realm) else {
            return Ok(None);
        };
        let Some(mut session) = self.sessions.get(index).cloned() else {
            return Ok(None);
        };
        if session.qop.is_none() {
            return Ok(None);
        }
        session.nc = session
            .nc
            .checked_add(1)
            .ok_or(AuthError::NonceCountExhausted)?;
        let value = self.build(&mut session, request, cnonce)?;
        let auth = Authorization {
            value,
            realm: session.realm.clone(),
            nonce: session.nonce.clone(),
            nc: Some(session.nc),
            preemptive: true,
        };
        if let Some(slot) = self.sessions.get_mut(index) {
            *slot = session;
        }
        Ok(Some(auth))
    }

    /// Computes the response (RFC 7616 §3.4.1–§3.4.3, RFC 2617 §3.2.2.1 without qop) and
    /// prints the header value. Records the `-sess` cnonce in `session`.
    fn build(
        &self,
        session: &mut Session,
        request: &DigestRequest<'_>,
        mut next_cnonce: impl FnMut() -> String,
    ) -> Result<String, AuthError> {
        if !is_token(request.method) {
            return Err(AuthError::InvalidInput { field: "method" });
        }
        if request.uri.is_empty()
            || request
                .uri
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(AuthError::InvalidInput { field: "uri" });
        }
        let alg = session.algorithm;
        let cnonce = match (session.qop, &session.sess_cnonce) {
            (None, _) => None,
            (Some(_), Some(kept)) if alg.is_sess() => Some(kept.clone()),
            (Some(_), _) => {
                let c = next_cnonce();
                if c.is_empty() || c.chars().any(char::is_control) {
                    return Err(AuthError::InvalidInput { field: "cnonce" });
                }
                Some(c)
            }
        };

        let user = self.username.as_bytes();
        let realm = session.realm.as_bytes();
        let nonce = session.nonce.as_bytes();
        let mut ha1 = alg.hash(&[user, realm, self.password.expose().as_bytes()]);
        if alg.is_sess() {
            let Some(c) = cnonce.as_deref() else {
                return Err(AuthError::SessWithoutQop(alg));
            };
            ha1 = alg.hash(&[ha1.as_bytes(), nonce, c.as_bytes()]);
            session.sess_cnonce = Some(c.to_owned());
        }
        let method = request.method.as_bytes();
        let uri = request.uri.as_bytes();
        let ha2 = match session.qop {
            Some(Qop::AuthInt) => {
                let body_hash = alg.hash(&[request.body]);
                alg.hash(&[method, uri, body_hash.as_bytes()])
            }
            Some(Qop::Auth) | None => alg.hash(&[method, uri]),
        };
        // nc-value is exactly 8 lowercase hex digits (RFC 7616 §3.4, RFC 2617 §3.2.2).
        let nc = format!("{:08x}", session.nc);
        let response = match (session.qop, cnonce.as_deref()) {
            (Some(q), Some(c)) => alg.hash(&[
                ha1.as_bytes(),
                nonce,
                nc.as_bytes(),
                c.as_bytes(),
                q.as_str().as_bytes(),
                ha2.as_bytes(),
            ]),
            _ => alg.hash(&[ha1.as_bytes(), nonce, ha2.as_bytes()]),
        };

        let mut v = String::with_capacity(320);
        v.push_str("Digest username=");
        push_quoted(&mut v, &self.username);
        v.push_str(", realm=");
        push_quoted(&mut v, &session.realm);
        v.push_str(", nonce=");
        push_quoted(&mut v, &session.nonce);
        v.push_str(", uri=");
        push_quoted(&mut v, request.uri);
        v.push_str(", algorithm=");
        v.push_str(alg.as_str());
        if let (Some(q), Some(c)) = (session.qop, cnonce.as_deref()) {
            v.push_str(", qop=");
            v.push_str(q.as_str());
            v.push_str(", nc=");
            v.push_str(&nc);
            v.push_str(", cnonce=");
            push_quoted(&mut v, c);
        }
        v.push_str(", response=");
        push_quoted(&mut v, &response);
        if let Some(opaque) = &session.opaque {
            v.push_str(", opaque=");
            push_quoted(&mut v, opaque);
        }
        Ok(v)
    }
}

/// A fresh cnonce from the thread-local CSPRNG: 128 random bits as 32 lowercase hex digits.
pub fn random_cnonce() -> String {
    let bytes: [u8; CNONCE_BYTES] = rand::random();
    hex(&bytes)
}

fn hash_hex<D: Digest>(parts: &[&[u8]]) -> String {
    let mut d = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            d.update(b":");
        }
        d.update(part);
    }
    hex(&d.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Both indexes are a nibble, < 16: in bounds.
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// quoted-string with `"` and `\` escaped (RFC 7230 §3.2.6). Values never hold control
/// characters: the parser and [`DigestClient`] reject them.
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn excerpt(s: &str) -> String {
    s.chars().take(MAX_EXCERPT_CHARS).collect()
}

// ---------------------------------------------------------------------------------------------
// RFC 7235 §2.1 / §4.1 challenge syntax:
//   challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//   auth-param = token BWS "=" BWS ( token / quoted-string )
// with list elements separated by commas and optional whitespace. SIP's LWS may fold lines
// (RFC 3261 §7.3.1), so CR and LF count as whitespace outside quoted strings.

/// One challenge as written: the scheme and its parameters, values unquoted.
#[derive(Debug)]
struct RawChallenge<'a> {
    scheme: &'a str,
    params: Vec<(&'a str, String)>,
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// tchar (RFC 7230 §3.2.6); a superset of SIP's token characters (RFC 3261 §25.1).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_tchar)
}

fn is_token68_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/".contains(c)
}

/// Servers quote in odd places, so an unquoted value is read leniently: anything up to
/// whitespace, a comma or a quote (this takes `nonce=abc/def==` whole).
fn is_bare_value_char(c: char) -> bool {
    !is_ws(c) && c != ',' && c != '"' && !c.is_control()
}

/// qdtext and quoted-pair exclude control characters other than HTAB (RFC 7230 §3.2.6); letting
/// CR or LF through would let a challenge inject header lines into our answer.
fn is_forbidden_control(c: char) -> bool {
    c.is_control() && c != '\t'
}

struct Cursor<'a> {
    s: &'a str,
    /// Byte offset, always on a char boundary: it only moves by whole chars.
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos..).and_then(|rest| rest.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek().filter(|&c| f(c)) {
            self.pos += c.len_utf8();
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    fn skip_ws(&mut self) {
        self.eat_while(is_ws);
    }

    fn error(&self, reason: &'static str) -> AuthError {
        AuthError::Syntax {
            offset: self.pos,
            reason,
        }
    }

    /// A token68 credential blob (`Basic QWxh==`) if one stands alone up to a comma or the
    /// end; otherwise rewinds and returns `None`.
    fn try_token68(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if self.eat_while(is_token68_char).is_empty() {
            return None;
        }
        self.eat_while(|c| c == '=');
        let end = self.pos;
        self.skip_ws();
        match self.peek() {
            None | Some(',') => self.s.get(start..end),
            Some(_) => {
                self.pos = start;
                None
            }
        }
    }

    /// Precondition: the next char is `"`. Errors point at the offending character.
    fn quoted_string(&mut self) -> Result<String, AuthError> {
        self.bump();
        let mut out = String::new();
        loop {
            let mut at = self.pos;
            let mut c = self.bump();
            if c == Some('\\') {
                at = self.pos;
                c = self.bump();
            } else if c == Some('"') {
                return Ok(out);
            }
            match c {
                None => return Err(self.error("unterminated quoted-string")),
                Some(c) if is_forbidden_control(c) => {
                    return Err(AuthError::Syntax {
                        offset: at,
                        reason: "control character in quoted-string",
                    });
                }
                Some(c) => out.push(c),
            }
        }
    }
}

/// Splits one header value into its challenges. Linear in the input; never panics.
fn parse_raw(value: &str) -> Result<Vec<RawChallenge<'_>>, AuthError> {
    let mut cur = Cursor { s: value, pos: 0 };
    let mut out = Vec::new();
    'challenges: loop {
        cur.eat_while(|c| is_ws(c) || c == ',');
        if cur.peek().is_none() {
            break;
        }
        let scheme = cur.eat_while(is_tchar);
        if scheme.is_empty() {
            return Err(cur.error("expected an auth-scheme"));
        }
        let mut challenge = RawChallenge {
            scheme,
            params: Vec::new(),
        };
        match cur.peek() {
            None | Some(',') => {
                out.push(challenge);
                continue;
            }
            Some(c) if is_ws(c) => cur.skip_ws(),
            Some(_) => return Err(cur.error("expected whitespace after the auth-scheme")),
        }
        if cur.try_token68().is_some() {
            out.push(challenge);
            continue;
        }
        // After a comma, a token not followed by "=" starts the next challenge.
        let mut after_comma = false;
        loop {
            cur.skip_ws();
            match cur.peek() {
                None => {
                    out.push(challenge);
                    break 'challenges;
                }
                Some(',') => {
                    cur.bump();
                    after_comma = true;
                    continue;
                }
                Some(_) => {}
            }
            let start = cur.pos;
            let name = cur.eat_while(is_tchar);
            if name.is_empty() {
                return Err(cur.error("expected an auth-param"));
            }
            cur.skip_ws();
            if cur.peek() != Some('=') {
                if !after_comma {
                    return Err(cur.error("expected '=' after the parameter name"));
                }
                cur.pos = start;
                out.push(challenge);
                continue 'challenges;
            }
            cur.bump();
            cur.skip_ws();
            let value = if cur.peek() == Some('"') {
                cur.quoted_string()?
            } else {
                let bare = cur.eat_while(is_bare_value_char);
                if bare.is_empty() {
                    return Err(cur.error("expected a token or quoted-string"));
                }
                bare.to_owned()
            };
            challenge.params.push((name, value));
            after_comma = false;
            cur.skip_ws();
            match cur.peek() {
                None | Some(',') => {}
                Some(_) => return Err(cur.error("expected ',' between parameters")),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC7616_OPAQUE: &str = "FQhe/qaQiNXB3I0hQ+YqPd3xo4N5XQ0BRSuJEsR4q/RwcDSJB3c5I8YTYv4ETYtm";

    fn client(user: &str, pass: &str) -> DigestClient {
        DigestClient::new(user, Secret::new(pass)).expect("test usernames are valid")
    }

    fn req<'a>(method: &'a str, uri: &'a str) -> DigestRequest<'a> {
        DigestRequest {
            method,
            uri,
            body: b"",
        }
    }

    fn fixed(c: &'static str) -> impl FnMut() -> String {
        move || c.to_owned()
    }

    /// Reads our own output back with the challenge parser (credentials share the auth-param
    /// grammar), so tests check fields, not formatting luck.
    fn param(auth: &Authorization, name: &str) -> Option<String> {
        let raws = parse_raw(auth.value()).expect("our output parses");
        assert_eq!(raws.len(), 1);
        assert_eq!(raws[0].scheme, "Digest");
        raws[0]
            .params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn response(auth: &Authorization) -> String {
        param(auth, "response").expect("response is always present")
    }

    // RFC 7616 §3.9.1, as printed there (folded over several lines).
    const RFC7616_CHALLENGES: [&str; 2] = [
        "Digest\r\n    realm=\"http-auth@example.org\",\r\n    qop=\"auth, auth-int\",\r\n    \
         algorithm=SHA-256,\r\n    nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n    \
         opaque=\"FQhe/qaQiNXB3I0hQ+YqPd3xo4N5XQ0BRSuJEsR4q/RwcDSJB3c5I8YTYv4ETYtm\"",
        "Digest\r\n    realm=\"http-auth@example.org\",\r\n    qop=\"auth, auth-int\",\r\n    \
         algorithm=MD5,\r\n    nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n    \
         opaque=\"FQhe/qaQiNXB3I0hQ+YqPd3xo4N5XQ0BRSuJEsR4q/RwcDSJB3c5I8YTYv4ETYtm\"",
    ];

    #[test]
    fn rfc7616_sha256_example() {
        let ch = choose_challenge(RFC7616_CHALLENGES).unwrap();
        assert_eq!(ch.algorithm(), Algorithm::Sha256);
        assert_eq!(ch.qop(), Some(Qop::Auth));
        assert_eq!(ch.opaque(), Some(RFC7616_OPAQUE));
        let mut c = client("Mufasa", "Circle of Life");
        let auth = c
            .authorize(&ch, &req("GET", "/dir/index.html"), fixed(RFC7616_CNONCE))
            .unwrap();
        assert_eq!(
            response(&auth),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert_eq!(param(&auth, "nc").as_deref(), Some("00000001"));
        assert_eq!(param(&auth, "qop").as_deref(), Some("auth"));
        assert_eq!(param(&auth, "algorithm").as_deref(), Some("SHA-256"));
        assert_eq!(param(&auth, "cnonce").as_deref(), Some(RFC7616_CNONCE));
        assert_eq!(param(&auth, "opaque").as_deref(), Some(RFC7616_OPAQUE));
        assert_eq!(param(&auth, "nonce").as_deref(), Some(RFC7616_NONCE));
    }

    #[test]
    fn rfc7616_md5_example() {
        let ch = Challenge::parse(RFC7616_CHALLENGES[1]).unwrap();
        assert_eq!(ch.algorithm(), Algorithm::Md5);
        let mut c = client("Mufasa", "Circle of Life");
        let auth = c
            .authorize(&ch, &req("GET", "/dir/index.html"), fixed(RFC7616_CNONCE))
            .unwrap();
        assert_eq!(response(&auth), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc7616_example_with_sha512_256() {
        // python3: see sha512_256 in hashlib; same inputs as §3.9.1 with algorithm=SHA-512-256.
        let ch =
            Challenge::parse(&RFC7616_CHALLENGES[0].replace("SHA-256", "SHA-512-256")).unwrap();
        assert_eq!(ch.algorithm(), Algorithm::Sha512_256);
        let mut c = client("Mufasa", "Circle of Life");
        let auth = c
            .authorize(&ch, &req("GET", "/dir/index.html"), fixed(RFC7616_CNONCE))
            .unwrap();
        assert_eq!(
            response(&auth),
            "430d05014cecc49cab6fbe03176d41a1da86cbfe24a16580e22aaad928d960d0"
        );
    }

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5, whose challenge offers qop="auth,auth-int" (rsip fails on it).
        let ch = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(ch.algorithm(), Algorithm::Md5);
        assert_eq!(ch.qop(), Some(Qop::Auth));
        let mut c = client("Mufasa", "Circle Of Life");
        let auth = c
            .authorize(&ch, &req("GET", "/dir/index.html"), fixed("0a4f113b"))
            .unwrap();
        assert_eq!(response(&auth), "6629fae49393a05397450978507c4ef1");
        assert_eq!(
            param(&auth, "opaque").as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
    }

    // PROTOCOLS.md §5.1. Its values were checked independently with python3 hashlib:
    //   ha1 = H("1001:pbx.example.net:hunter2"); ha2 = H("REGISTER:sip:pbx.example.net")
    //   H(f"{ha1}:5d3f1c9a7e2b4a60:00000001:0a4f113b:auth:{ha2}")
    const PBX_CHALLENGES: [&str; 2] = [
        "Digest realm=\"pbx.example.net\", nonce=\"5d3f1c9a7e2b4a60\", qop=\"auth\", algorithm=SHA-256",
        "Digest realm=\"pbx.example.net\", nonce=\"5d3f1c9a7e2b4a60\", qop=\"auth\", algorithm=MD5",
    ];

    #[test]
    fn protocols_md_register_example_sha256() {
        let ch = choose_challenge(PBX_CHALLENGES).unwrap();
        assert_eq!(ch.algorithm(), Algorithm::Sha256);
        let mut c = client("1001", "hunter2");
        let auth = c
            .authorize(
                &ch,
                &req("REGISTER", "sip:pbx.example.net"),
                fixed("0a4f113b"),
            )
            .unwrap();
        assert_eq!(
            auth.value(),
            "Digest username=\"1001\", realm=\"pbx.example.net\", nonce=\"5d3f1c9a7e2b4a60\", \
             uri=\"sip:pbx.example.net\", algorithm=SHA-256, qop=auth, nc=00000001, \
             cnonce=\"0a4f113b\", \
             response=\"7ab6d3a1db87d2437136a282aa784aec8a502700921d1e00c55b10464f795f77\""
        );
    }

    #[test]
    fn protocols_md_register_example_md5() {
        let ch = Challenge::parse(PBX_CHALLENGES[1]).unwrap();
        let mut c = client("1001", "hunter2");
        let auth = c
            .authorize(
                &ch,
                &req("REGISTER", "sip:pbx.example.net"),
                fixed("0a4f113b"),
            )
            .unwrap();
        assert_eq!(response(&auth), "afd4c15c094b3148f05f5e4104f42c8f");
    }

    #[test]
    fn sess_variants() {
        // Expected values, python3 hashlib (H = md5 or sha256):
        //   ha1 = H(H("1001:pbx.example.net:hunter2") + ":5d3f1c9a7e2b4a60:0a4f113b")
        //   ha2 = H("REGISTER:sip:pbx.example.net")
        //   H(f"{ha1}:5d3f1c9a7e2b4a60:{nc}:0a4f113b:auth:{ha2}")  for nc 00000001, 00000002
        for (token, alg, nc1, nc2) in [
            (
                "MD5-sess",
                Algorithm::Md5Sess,
                "77fb623677ecc078f541a709c93addf2",
                "682106910c4fb63968b93d925fd26fac",
            ),
            (
                "sha-256-SESS",
                Algorithm::Sha256Sess,
                "c9db2c94bdf4be008944e7b7ddba34531827af9704ce3c420fc2c8936054a929",
                "acdb93005ec5e82711c1c4107ec4ea726ed9a4b851d47ef51fb07a0214c0eb13",
            ),
        ] {
            let ch = Challenge::parse(&format!(
                "Digest realm=\"pbx.example.net\", nonce=\"5d3f1c9a7e2b4a60\", qop=\"auth\", \
                 algorithm={token}"
            ))
            .unwrap();
            assert_eq!(ch.algorithm(), alg);
            let mut c = client("1001", "hunter2");
            let r = req("REGISTER", "sip:pbx.example.net");
            let first = c.authorize(&ch, &r, fixed("0a4f113b")).unwrap();
            assert_eq!(response(&first), nc1, "{token} nc=1");
            assert_eq!(param(&first, "algorithm").as_deref(), Some(alg.as_str()));
            // The same nonce again keeps the session's cnonce: the cnonce source is not asked.
            let again = c
                .reauthorize("pbx.example.net", &r, || panic!("-sess keeps its cnonce"))
                .unwrap()
                .unwrap();
            assert!(again.is_preemptive());
            assert_eq!(param(&again, "cnonce").as_deref(), Some("0a4f113b"));
            assert_eq!(param(&again, "nc").as_deref(), Some("00000002"));
            assert_eq!(response(&again), nc2, "{token} nc=2");
        }
    }

    #[test]
    fn sess_without_qop_is_unusable() {
        let e =
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess").unwrap_err();
        assert_eq!(e, AuthError::SessWithoutQop(Algorithm::Md5Sess));
    }

    #[test]
    fn auth_int_only_when_auth_is_not_offered() {
        // python3: ha1 = sha256("1001:pbx.example.net:hunter2");
        //   ha2 = sha256("MESSAGE:sip:bob@pbx.example.net:" + sha256(b"hello"))
        //   sha256(f"{ha1}:5d3f1c9a7e2b4a60:00000001:0a4f113b:auth-int:{ha2}")
        let ch = Challenge::parse(
            "Digest realm=\"pbx.example.net\", nonce=\"5d3f1c9a7e2b4a60\", qop=\"auth-int\", \
             algorithm=SHA-256",
        )
        .unwrap();
        assert_eq!(ch.qop(), Some(Qop::AuthInt));
        let mut c = client("1001", "hunter2");
        let r = DigestRequest {
            method: "MESSAGE",
            uri: "sip:bob@pbx.example.net",
            body: b"hello",
        };
        let auth = c.authorize(&ch, &r, fixed("0a4f113b")).unwrap();
        assert_eq!(param(&auth, "qop").as_deref(), Some("auth-int"));
        assert_eq!(
            response(&auth),
            "417e82ac98a589039a09db62b9c6ac6cf0bb96ac566c4e0c06fceef8da6c9082"
        );
    }

    #[test]
    fn rfc2069_mode_without_qop() {
        // python3: ha1 = md5("1001:pbx.example.net:hunter2"); ha2 = md5("REGISTER:sip:pbx.example.net")
        //   md5(f"{ha1}:5d3f1c9a7e2b4a60:{ha2}")
        let ch = Challenge::parse("Digest realm=\"pbx.example.net\", nonce=\"5d3f1c9a7e2b4a60\"")
            .unwrap();
        assert_eq!(ch.qop(), None);
        assert_eq!(ch.algorithm(), Algorithm::Md5);
        let mut c = client("1001", "hunter2");
        let r = req("REGISTER", "sip:pbx.example.net");
        let auth = c
            .authorize(&ch, &r, || panic!("no cnonce without qop"))
            .unwrap();
        assert_eq!(
            auth.value(),
            "Digest username=\"1001\", realm=\"pbx.example.net\", nonce=\"5d3f1c9a7e2b4a60\", \
             uri=\"sip:pbx.example.net\", algorithm=MD5, \
             response=\"424a02d519b8267c6d20809b884bef70\""
        );
        // No nonce count exists in this mode, so nothing is reused pre-emptively.
        assert_eq!(
            c.reauthorize("pbx.example.net", &r, fixed("x")).unwrap(),
            None
        );
    }

    #[test]
    fn nc_counts_in_hex_and_resets_on_a_new_nonce() {
        let ch = Challenge::parse(PBX_CHALLENGES[0]).unwrap();
        let mut c = client("1001", "hunter2");
        let r = req("REGISTER", "sip:pbx.example.net");
        let first = c.authorize(&ch, &r, fixed("a")).unwrap();
        assert_eq!(param(&first, "nc").as_deref(), Some("00000001"));
        // The server challenging again with the same nonce: the count goes on.
        let second = c.authorize(&ch, &r, fixed("b")).unwrap();
        assert_eq!(param(&second, "nc").as_deref(), Some("00000002"));
        let mut last = second;
        for _ in 3..=10 {
            last = c
                .reauthorize("pbx.example.net", &r, fixed("c"))
                .unwrap()
                .unwrap();
        }
        assert_eq!(param(&last, "nc").as_deref(), Some("0000000a"));
        for _ in 11..=16 {
            last = c
                .reauthorize("pbx.example.net", &r, fixed("c"))
                .unwrap()
                .unwrap();
        }
        assert_eq!(param(&last, "nc").as_deref(), Some("00000010"));

        let fresh = Challenge::parse(
            "Digest realm=\"pbx.example.net\", nonce=\"0ther\", qop=\"auth\", algorithm=SHA-256, \
             stale=true",
        )
        .unwrap();
        let reset = c.authorize(&fresh, &r, fixed("d")).unwrap();
        assert_eq!(param(&reset, "nc").as_deref(), Some("00000001"));
        assert_eq!(param(&reset, "nonce").as_deref(), Some("0ther"));
        let next = c
            .reauthorize("pbx.example.net", &r, fixed("e"))
            .unwrap()
            .unwrap();
        assert_eq!(param(&next, "nc").as_deref(), Some("00000002"));
    }

    #[test]
    fn non_sess_draws_a_cnonce_per_request() {
        let ch = Challenge::parse(PBX_CHALLENGES[0]).unwrap();
        let mut c = client("1001", "hunter2");
        let r = req("REGISTER", "sip:pbx.example.net");
        let mut n = 0;
        let mut source = || {
            n += 1;
            format!("c{n}")
        };
        let a = c.authorize(&ch, &r, &mut source).unwrap();
        let b = c
            .reauthorize("pbx.example.net", &r, &mut source)
            .unwrap()
            .unwrap();
        assert_eq!(param(&a, "cnonce").as_deref(), Some("c1"));
        assert_eq!(param(&b, "cnonce").as_deref(), Some("c2"));
    }

    #[test]
    fn reauthorize_needs_a_cached_realm() {
        let mut c = client("1001", "hunter2");
        let r = req("REGISTER", "sip:pbx.example.net");
        assert_eq!(
            c.reauthorize("pbx.example.net", &r, fixed("x")).unwrap(),
            None
        );
        c.authorize(
            &Challenge::parse(PBX_CHALLENGES[0]).unwrap(),
            &r,
            fixed("x"),
        )
        .unwrap();
        assert_eq!(c.reauthorize("elsewhere", &r, fixed("x")).unwrap(), None);
    }

    #[test]
    fn realms_are_bounded() {
        let mut c = client("u", "p");
        let r = req("INVITE", "sip:bob@example.net");
        for i in 0..=MAX_REALMS {
            let ch =
                Challenge::parse(&format!("Digest realm=\"r{i}\", nonce=\"n\", qop=auth")).unwrap();
            c.authorize(&ch, &r, fixed("x")).unwrap();
        }
        assert_eq!(c.sessions.len(), MAX_REALMS);
        assert_eq!(c.reauthorize("r0", &r, fixed("x")).unwrap(), None);
        assert!(c.reauthorize("r1", &r, fixed("x")).unwrap().is_some());
    }

    #[test]
    fn nonce_count_exhaustion_is_an_error() {
        let ch = Challenge::parse(PBX_CHALLENGES[0]).unwrap();
        let mut c = client("1001", "hunter2");
        let r = req("REGISTER", "sip:pbx.example.net");
        c.authorize(&ch, &r, fixed("x")).unwrap();
        c.sessions[0].nc = u32::MAX;
        assert_eq!(
            c.authorize(&ch, &r, fixed("x")).unwrap_err(),
            AuthError::NonceCountExhausted
        );
        assert_eq!(
            c.reauthorize("pbx.example.net", &r, fixed("x"))
                .unwrap_err(),
            AuthError::NonceCountExhausted
        );
    }

    #[test]
    fn parse_qop_lists() {
        let base = "Digest realm=\"r\", nonce=\"n\", qop=";
        for (qop, want) in [
            ("\"auth,auth-int\"", Qop::Auth),
            ("\"auth-int, auth\"", Qop::Auth),
            ("\" auth-int ,\tauth \"", Qop::Auth),
            ("\"auth-int\"", Qop::AuthInt),
            ("\"auth-conf,auth-int\"", Qop::AuthInt),
            ("auth", Qop::Auth),
            ("\"AUTH\"", Qop::Auth),
        ] {
            let ch = Challenge::parse(&format!("{base}{qop}")).unwrap();
            assert_eq!(ch.qop(), Some(want), "{qop}");
        }
        assert_eq!(
            Challenge::parse(&format!("{base}\"auth-conf\"")).unwrap_err(),
            AuthError::UnsupportedQop("auth-conf".into())
        );
    }

    #[test]
    fn parse_algorithms() {
        let parse =
            |a: &str| Challenge::parse(&format!("Digest realm=\"r\", nonce=\"n\", qop=auth{a}"));
        assert_eq!(parse("").unwrap().algorithm(), Algorithm::Md5);
        assert_eq!(
            parse(", algorithm=SHA-256").unwrap().algorithm(),
            Algorithm::Sha256
        );
        assert_eq!(
            parse(", algorithm=\"SHA-256\"").unwrap().algorithm(),
            Algorithm::Sha256
        );
        assert_eq!(
            parse(", ALGORITHM=md5").unwrap().algorithm(),
            Algorithm::Md5
        );
        assert_eq!(
            parse(", algorithm=SHA-512-256-sess").unwrap().algorithm(),
            Algorithm::Sha512_256Sess
        );
        assert_eq!(
            parse(", algorithm=SHA-1").unwrap_err(),
            AuthError::UnsupportedAlgorithm("SHA-1".into())
        );
    }

    #[test]
    fn parse_params_robustly() {
        let ch = Challenge::parse(
            "  digest   REALM = \"a, \\\"quoted\\\" realm\\\\\" ,, nonce=abc/def==,\t\
             Opaque=\"\",stale=TRUE , domain=\"sip:x sip:y\", charset=UTF-8, userhash=true,\
             x-unknown=\"whatever, really\", qop=\"auth\"  ",
        )
        .unwrap();
        assert_eq!(ch.realm(), "a, \"quoted\" realm\\");
        assert_eq!(ch.nonce(), "abc/def==");
        assert_eq!(ch.opaque(), Some(""));
        assert!(ch.stale());
        assert!(ch.userhash());
        assert_eq!(ch.qop(), Some(Qop::Auth));

        for (stale, want) in [
            ("stale=\"true\"", true),
            ("stale=False", false),
            ("stale=1", false),
        ] {
            let ch =
                Challenge::parse(&format!("Digest realm=\"r\", nonce=\"n\", {stale}")).unwrap();
            assert_eq!(ch.stale(), want, "{stale}");
        }
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert!(!ch.stale());
        assert!(!ch.userhash());
        assert_eq!(ch.opaque(), None);
    }

    #[test]
    fn escapes_survive_the_round_trip() {
        let ch =
            Challenge::parse("Digest realm=\"a\\\"b\\\\c\", nonce=\"n\\x\", qop=auth").unwrap();
        assert_eq!(ch.realm(), "a\"b\\c");
        assert_eq!(ch.nonce(), "nx");
        let mut c = client("we\"ird", "p");
        let auth = c
            .authorize(&ch, &req("OPTIONS", "sip:x"), fixed("c"))
            .unwrap();
        assert!(
            auth.value()
                .starts_with("Digest username=\"we\\\"ird\", realm=\"a\\\"b\\\\c\", nonce=\"nx\",")
        );
        assert_eq!(param(&auth, "realm").as_deref(), Some("a\"b\\c"));
        assert_eq!(param(&auth, "username").as_deref(), Some("we\"ird"));
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, AuthError)] = &[
            ("", AuthError::Empty),
            (" , ,", AuthError::Empty),
            (
                "Basic realm=\"x\"",
                AuthError::UnsupportedScheme("Basic".into()),
            ),
            (
                "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
                AuthError::UnsupportedScheme("Basic".into()),
            ),
            ("Digest nonce=\"n\"", AuthError::MissingParam("realm")),
            ("Digest realm=\"r\"", AuthError::MissingParam("nonce")),
            (
                "Digest realm=\"r\", nonce=\"\"",
                AuthError::MissingParam("nonce"),
            ),
            (
                "Digest realm=\"r\", nonce=\"n\", REALM=\"s\"",
                AuthError::DuplicateParam("realm"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&Challenge::parse(input).unwrap_err(), want, "{input:?}");
        }
        for input in [
            "Digest realm=\"unterminated",
            "Digest realm=\"r\" nonce=\"n\"",
            "Digest realm=\"line\r\nInjected: yes\", nonce=\"n\"",
            "Digest realm=\"r\", nonce=\"n\\",
            "Digest realm=",
            "Digest realm=\"r\", =\"n\"",
            "Digest\"x\"",
            "=Digest",
        ] {
            let e = Challenge::parse(input).unwrap_err();
            assert!(
                matches!(
                    e,
                    AuthError::Syntax { .. }
                        | AuthError::MissingParam(_)
                        | AuthError::UnsupportedScheme(_)
                ),
                "{input:?} -> {e:?}"
            );
        }
        // After a comma, a bare token starts another challenge (RFC 7235 §4.1): the Digest one
        // before it stays usable.
        assert!(Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop").is_ok());
        // A CR/LF inside a quoted string is refused outright (header injection).
        assert!(matches!(
            Challenge::parse("Digest realm=\"a\nb\", nonce=\"n\"").unwrap_err(),
            AuthError::Syntax { offset: 15, .. }
        ));
    }

    #[test]
    fn long_peer_strings_are_cut_in_errors() {
        let scheme = "X".repeat(10_000);
        let AuthError::UnsupportedScheme(s) = Challenge::parse(&scheme).unwrap_err() else {
            panic!("expected UnsupportedScheme");
        };
        assert_eq!(s.len(), MAX_EXCERPT_CHARS);
    }

    #[test]
    fn several_challenges_and_the_choice() {
        let md5 = "Digest realm=\"r\", nonce=\"n1\", qop=auth, algorithm=MD5";
        let sha = "Digest realm=\"r\", nonce=\"n2\", qop=auth, algorithm=SHA-256";
        let sha512 = "Digest realm=\"r\", nonce=\"n3\", qop=auth, algorithm=SHA-512-256";
        let md5sess = "Digest realm=\"r\", nonce=\"n4\", qop=auth, algorithm=MD5-sess";
        let unknown = "Digest realm=\"r\", nonce=\"n5\", qop=auth, algorithm=SHA3-256";
        let basic = "Basic realm=\"r\"";
        let pick = |v: &[&str]| {
            choose_challenge(v.iter().copied())
                .unwrap()
                .nonce()
                .to_owned()
        };
        assert_eq!(pick(&[md5, sha]), "n2");
        assert_eq!(pick(&[sha, md5]), "n2");
        assert_eq!(pick(&[md5, sha512]), "n3");
        assert_eq!(pick(&[sha512, sha, md5]), "n2");
        assert_eq!(pick(&[unknown, basic, md5]), "n1");
        // -sess ranks with its base; the topmost wins among equals (RFC 8760 §2.4).
        assert_eq!(pick(&[md5sess, md5]), "n4");
        assert_eq!(pick(&[md5, md5sess]), "n1");
        // A malformed value does not hide a good one.
        assert_eq!(pick(&["Digest realm=\"broken", md5]), "n1");
        // Several challenges in one value (RFC 7235 §4.1).
        assert_eq!(pick(&[&format!("{basic}, {md5}, {sha}, Newauth")]), "n2");
        assert_eq!(
            pick(&["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==, Digest realm=\"r\", nonce=\"n9\""]),
            "n9"
        );
        // Nothing usable: the most specific reason.
        assert_eq!(
            choose_challenge([basic, unknown]).unwrap_err(),
            AuthError::UnsupportedAlgorithm("SHA3-256".into())
        );
        assert_eq!(
            choose_challenge([basic]).unwrap_err(),
            AuthError::UnsupportedScheme("Basic".into())
        );
        assert_eq!(choose_challenge([]).unwrap_err(), AuthError::Empty);
    }

    #[test]
    fn header_names_by_status() {
        assert_eq!(AuthKind::from_status(401), Some(AuthKind::Www));
        assert_eq!(AuthKind::from_status(407), Some(AuthKind::Proxy));
        assert_eq!(AuthKind::from_status(403), None);
        assert_eq!(AuthKind::Www.challenge_header(), "WWW-Authenticate");
        assert_eq!(AuthKind::Www.credentials_header(), "Authorization");
        assert_eq!(AuthKind::Proxy.challenge_header(), "Proxy-Authenticate");
        assert_eq!(AuthKind::Proxy.credentials_header(), "Proxy-Authorization");
    }

    #[test]
    fn rechallenge_classification() {
        let first = Challenge::parse(PBX_CHALLENGES[0]).unwrap();
        let mut c = client("1001", "hunter2");
        let r = req("REGISTER", "sip:pbx.example.net");
        assert_eq!(classify_rechallenge(None, &first), Rechallenge::Fresh);
        let sent = c.authorize(&first, &r, fixed("x")).unwrap();
        assert!(!sent.is_preemptive());

        let again_same = Challenge::parse(PBX_CHALLENGES[0]).unwrap();
        assert_eq!(
            classify_rechallenge(Some(&sent), &again_same),
            Rechallenge::Failed
        );
        let new_nonce = Challenge::parse(
            "Digest realm=\"pbx.example.net\", nonce=\"n2\", qop=\"auth\", algorithm=SHA-256",
        )
        .unwrap();
        assert_eq!(
            classify_rechallenge(Some(&sent), &new_nonce),
            Rechallenge::Failed
        );
        let stale = Challenge::parse(
            "Digest realm=\"pbx.example.net\", nonce=\"n2\", qop=\"auth\", stale=TRUE",
        )
        .unwrap();
        assert_eq!(
            classify_rechallenge(Some(&sent), &stale),
            Rechallenge::Stale
        );
        let stale_same_nonce = Challenge::parse(
            "Digest realm=\"pbx.example.net\", nonce=\"5d3f1c9a7e2b4a60\", qop=auth, stale=true",
        )
        .unwrap();
        assert_eq!(
            classify_rechallenge(Some(&sent), &stale_same_nonce),
            Rechallenge::Failed
        );
        let other_realm =
            Challenge::parse("Digest realm=\"proxy.example.net\", nonce=\"p\", qop=auth").unwrap();
        assert_eq!(
            classify_rechallenge(Some(&sent), &other_realm),
            Rechallenge::Fresh
        );

        // A refresh from the cached nonce, answered by a new nonce without stale: not yet a
        // password failure.
        let refresh = c
            .reauthorize("pbx.example.net", &r, fixed("y"))
            .unwrap()
            .unwrap();
        assert!(refresh.is_preemptive());
        assert_eq!(
            classify_rechallenge(Some(&refresh), &new_nonce),
            Rechallenge::Stale
        );
        assert_eq!(
            classify_rechallenge(Some(&refresh), &again_same),
            Rechallenge::Failed
        );
    }

    #[test]
    fn register_flow_with_stale_nonce() {
        // 401 → answer → 200; refresh pre-emptively → 401 stale → answer with nc reset.
        let mut c = client("1001", "hunter2");
        let r = req("REGISTER", "sip:pbx.example.net");
        let ch = choose_challenge(PBX_CHALLENGES).unwrap();
        let sent = c.authorize(&ch, &r, fixed("a")).unwrap();
        let refresh = c
            .reauthorize(sent.realm(), &r, fixed("b"))
            .unwrap()
            .unwrap();
        assert_eq!(param(&refresh, "nc").as_deref(), Some("00000002"));
        let stale = choose_challenge([
            "Digest realm=\"pbx.example.net\", nonce=\"fresh\", qop=\"auth\", algorithm=SHA-256, stale=true",
        ])
        .unwrap();
        assert_eq!(
            classify_rechallenge(Some(&refresh), &stale),
            Rechallenge::Stale
        );
        let retry = c.authorize(&stale, &r, fixed("c")).unwrap();
        assert_eq!(param(&retry, "nc").as_deref(), Some("00000001"));
        assert_eq!(retry.nonce(), "fresh");
    }

    #[test]
    fn debug_never_shows_the_password_or_response() {
        let mut c = client("1001", "hunter2");
        let auth = c
            .authorize(
                &Challenge::parse(PBX_CHALLENGES[0]).unwrap(),
                &req("REGISTER", "sip:pbx.example.net"),
                fixed("0a4f113b"),
            )
            .unwrap();
        let client_dbg = format!("{c:?}");
        assert!(!client_dbg.contains("hunter2"), "{client_dbg}");
        assert!(client_dbg.contains("***"));
        let auth_dbg = format!("{auth:?}");
        assert!(!auth_dbg.contains("7ab6d3a1"), "{auth_dbg}");
        assert!(!format!("{c:#?}").contains("hunter2"));
    }

    #[test]
    fn our_own_bad_input_is_refused() {
        assert_eq!(
            DigestClient::new("1001\r\nX: y", Secret::new("p")).unwrap_err(),
            AuthError::InvalidInput { field: "username" }
        );
        let ch = Challenge::parse(PBX_CHALLENGES[0]).unwrap();
        let mut c = client("1001", "hunter2");
        let bad = [
            (req("REGISTER", "sip:a b"), "x", "uri"),
            (req("REGISTER", ""), "x", "uri"),
            (req("REG ISTER", "sip:a"), "x", "method"),
            (req("", "sip:a"), "x", "method"),
            (req("REGISTER", "sip:a"), "", "cnonce"),
            (req("REGISTER", "sip:a"), "a\r\nb", "cnonce"),
        ];
        for (r, cnonce, field) in bad {
            assert_eq!(
                c.authorize(&ch, &r, || cnonce.to_owned()).unwrap_err(),
                AuthError::InvalidInput { field },
                "{r:?} {cnonce:?}"
            );
        }
        // Refused requests leave no nonce state behind.
        assert!(c.sessions.is_empty());
    }

    #[test]
    fn random_cnonce_is_128_bits_of_hex() {
        let a = random_cnonce();
        let b = random_cnonce();
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    /// Property-style: every prefix, every one-char deletion, and many random splices of
    /// challenge fragments must parse to Ok or Err, never panic; whatever parses must also be
    /// answerable without panicking.
    #[test]
    fn no_panic_on_garbage() {
        let mut inputs: Vec<String> = Vec::new();
        let seeds = [
            RFC7616_CHALLENGES[0],
            "Digest realm=\"a\\\"b\", nonce=abc==, qop=\"auth,auth-int\", algorithm=SHA-256-sess, \
             stale=TRUE, userhash=true, Basic QWxh==, Newauth",
            "Digest realm=\"é€😀\", nonce=\"ü\", opaque=\"\\\\\"",
        ];
        for seed in seeds {
            for (i, _) in seed.char_indices() {
                inputs.push(seed[..i].to_owned());
                let mut deleted = seed.to_owned();
                deleted.remove(i);
                inputs.push(deleted);
            }
        }
        const FRAGMENTS: &[&str] = &[
            "Digest",
            "digest ",
            "Basic",
            " ",
            "\t",
            "\r\n",
            ",",
            ", ",
            "=",
            " = ",
            "\"",
            "\\",
            "\\\"",
            "realm",
            "nonce",
            "qop",
            "algorithm",
            "stale",
            "opaque",
            "userhash",
            "auth",
            "auth-int",
            "MD5",
            "SHA-256",
            "SHA-512-256-sess",
            "TRUE",
            "abc",
            "==",
            "/",
            "é",
            "😀",
            "\u{0}",
            "\u{7f}",
            "\u{85}",
            ";",
            ":",
            "\"auth,auth-int\"",
        ];
        // xorshift64: a fixed seed keeps the test deterministic.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5_000 {
            let len = next() % 24;
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize]);
            }
            inputs.push(s);
        }
        let mut c = client("u", "p");
        let r = req("INVITE", "sip:bob@example.net");
        let mut parsed = 0;
        for input in &inputs {
            let _ = parse_raw(input);
            if let Ok(ch) = Challenge::parse(input) {
                parsed += 1;
                let _ = c.authorize(&ch, &r, fixed("c"));
                let _ = c.reauthorize(ch.realm(), &r, fixed("c"));
            }
        }
        assert!(
            parsed > 0,
            "the corpus should contain some valid challenges"
        );
    }
}
