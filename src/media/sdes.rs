//! SDES-SRTP keying for the SIP leg (RFC 4568 `a=crypto`, suites of RFC 4568, RFC 6188 and
//! RFC 7714).
//!
//! Many SIP trunks and desk phones will not do DTLS-SRTP but do offer SRTP keyed in the SDP
//! itself: each side puts its own sending key in an `a=crypto` line, so we protect with our key
//! and unprotect with the peer's. This module parses and writes those lines and wraps the two
//! `webrtc-srtp` contexts (the same crypto the DTLS-SRTP WebRTC leg uses). It is deliberately
//! strict: whatever we cannot honour exactly (MKI, session parameters that change the
//! transform) is a typed error, so the SDP layer skips that line rather than negotiating a
//! session whose packets would then fail to authenticate.

use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use tokio_util::bytes::Bytes;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

/// Replay window for what the peer sends: 64 is the minimum RFC 3711 §3.3.2 allows and what
/// the WebRTC leg uses; a SIP peer's `WSH` hint above that only costs us late reordered packets.
const REPLAY_WINDOW: usize = 64;

/// Largest tag RFC 4568 §9.1 allows (`tag = 1*9DIGIT`).
const MAX_TAG: u32 = 999_999_999;

/// Longest piece of peer input we echo back in an error, so a hostile SDP cannot make our logs
/// arbitrarily large.
const MAX_ECHO: usize = 64;

/// Base64 decoder for inline keys: some SIP stacks drop the `=` padding (the RFC 4568 examples
/// happen to need none), and rejecting them over that would only lose interop.
const INLINE_DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An SRTP crypto suite we can key from SDES; limited to what `webrtc-srtp` implements, so an
/// offer of anything else is [`SdesError::UnknownSuite`] and the caller tries the next line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdesSuite {
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568 §6.2.1): mandatory to implement, what nearly every
    /// SIP device offers first.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2.2): shorter RTP tag, offered by some phones.
    AesCm128HmacSha1_32,
    /// `AES_256_CM_HMAC_SHA1_80` (RFC 6188 §7.1).
    AesCm256HmacSha1_80,
    /// `AES_256_CM_HMAC_SHA1_32` (RFC 6188 §7.1).
    AesCm256HmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714 §14.2).
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714 §14.2).
    AeadAes256Gcm,
}

impl SdesSuite {
    /// Every suite, in the order we prefer to offer them: the mandatory one first so that the
    /// most peers accept our first line.
    pub const ALL: [SdesSuite; 6] = [
        SdesSuite::AesCm128HmacSha1_80,
        SdesSuite::AeadAes128Gcm,
        SdesSuite::AeadAes256Gcm,
        SdesSuite::AesCm256HmacSha1_80,
        SdesSuite::AesCm128HmacSha1_32,
        SdesSuite::AesCm256HmacSha1_32,
    ];

    /// The registered SDP name (RFC 4568 §6.2, RFC 6188 §7.1, RFC 7714 §14.2).
    pub fn name(self) -> &'static str {
        match self {
            SdesSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SdesSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SdesSuite::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            SdesSuite::AesCm256HmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            SdesSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SdesSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// The suite with exactly this name. Names are matched case-sensitively: they are
    /// registered tokens and every implementation we know sends them in upper case.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        self.profile().key_len()
    }

    /// Master salt length in bytes (14 for AES-CM, 12 for AEAD, RFC 7714 §12).
    pub fn salt_len(self) -> usize {
        self.profile().salt_len()
    }

    /// Length of the inline key material (master key || master salt).
    pub fn material_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            SdesSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            SdesSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            SdesSuite::AesCm256HmacSha1_80 => ProtectionProfile::Aes256CmHmacSha1_80,
            SdesSuite::AesCm256HmacSha1_32 => ProtectionProfile::Aes256CmHmacSha1_32,
            SdesSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            SdesSuite::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
        }
    }
}

impl fmt::Display for SdesSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of SDES parsing and of the SRTP session. Messages never contain key material, so
/// they are safe to log.
#[derive(Debug, thiserror::Error)]
pub enum SdesError {
    /// The attribute lacks a tag, suite or key parameter, or is otherwise not RFC 4568 syntax.
    #[error("malformed a=crypto attribute: {0}")]
    Malformed(&'static str),
    /// The tag is not a decimal number in 1..=999999999 (RFC 4568 §9.1).
    #[error("invalid a=crypto tag {0:?} (must be 1..=999999999)")]
    InvalidTag(String),
    /// A suite we do not implement; the caller skips this line and tries the next one.
    #[error("unknown or unsupported crypto suite {0:?}")]
    UnknownSuite(String),
    /// A key method other than `inline` (the only one RFC 4568 defines for SRTP).
    #[error("unsupported key method {0:?} (only inline is supported)")]
    UnsupportedKeyMethod(String),
    /// The inline key is not base64.
    #[error("inline key is not valid base64")]
    InvalidBase64(#[source] base64::DecodeError),
    /// The key material does not have the length the suite needs.
    #[error("{suite} needs {expected} bytes of master key and salt, got {got}")]
    KeyLength {
        /// The suite the key was meant for.
        suite: SdesSuite,
        /// Master key length + master salt length of that suite.
        expected: usize,
        /// What we were given.
        got: usize,
    },
    /// A key lifetime that is neither `2^n` (n < 64) nor a positive decimal fitting in 64 bits.
    #[error("invalid key lifetime {0:?}")]
    InvalidLifetime(String),
    /// The key carries an MKI: every packet would then carry MKI bytes `webrtc-srtp` cannot
    /// handle, so we must not accept this line.
    #[error("MKI in a=crypto is not supported")]
    MkiUnsupported,
    /// A session parameter (e.g. `UNENCRYPTED_SRTP`, `KDR`, or one we do not know) that changes
    /// the transform in a way we cannot honour; the line must be skipped.
    #[error("unsupported SRTP session parameter {0:?}")]
    UnsupportedSessionParam(String),
    /// The two directions of a session were keyed for different suites.
    #[error("local key is for {local} but remote key is for {remote}")]
    SuiteMismatch {
        /// Suite of our sending key.
        local: SdesSuite,
        /// Suite of the peer's sending key.
        remote: SdesSuite,
    },
    /// An SRTCP packet too short for its trailer, or with the E flag clear. Checked before
    /// `webrtc-srtp` sees the packet: see [`check_srtcp_framing`].
    #[error("malformed SRTCP packet: {0}")]
    MalformedSrtcp(&'static str),
    /// SRTP/SRTCP protection or unprotection failed (authentication, replay, short packet...).
    #[error("SRTP: {0}")]
    Srtp(#[from] webrtc_srtp::Error),
}

/// Master key || master salt for one direction, in the order RFC 4568 §6.1 puts them in the
/// inline key. Debug hides the material so keys never end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKey {
    /// The suite this key is for; it fixes the material length.
    pub suite: SdesSuite,
    material: Vec<u8>,
}

impl SdesKey {
    /// A fresh random key for our sending direction, from the thread-local CSPRNG (ChaCha,
    /// seeded from the OS), which is what RFC 4568 §8.2 requires of a master key.
    pub fn generate(suite: SdesSuite) -> Self {
        let mut material = vec![0u8; suite.material_len()];
        rand::fill(&mut material[..]);
        SdesKey { suite, material }
    }

    /// A key from raw master key || master salt bytes, checking the length for the suite so
    /// that building the SRTP context later cannot fail on it.
    pub fn from_material(suite: SdesSuite, bytes: &[u8]) -> Result<Self, SdesError> {
        if bytes.len() != suite.material_len() {
            return Err(SdesError::KeyLength {
                suite,
                expected: suite.material_len(),
                got: bytes.len(),
            });
        }
        Ok(SdesKey {
            suite,
            material: bytes.to_vec(),
        })
    }

    /// Master key || master salt.
    pub fn material(&self) -> &[u8] {
        &self.material
    }

    /// The master key part.
    pub fn master_key(&self) -> &[u8] {
        self.material
            .get(..self.suite.key_len())
            .unwrap_or(&self.material)
    }

    /// The master salt part.
    pub fn master_salt(&self) -> &[u8] {
        self.material
            .get(self.suite.key_len()..)
            .unwrap_or_default()
    }

    /// The `inline:` key-salt value: standard base64 with padding, which every parser accepts.
    pub fn inline(&self) -> String {
        STANDARD.encode(&self.material)
    }

    /// An SRTP context for this key. Only the receiving side needs replay protection, and
    /// `webrtc-srtp` has none unless asked.
    /// The sending context for this key (no replay state: we only protect with it).
    fn context(&self) -> Result<Context, SdesError> {
        Ok(Context::new(
            self.master_key(),
            self.master_salt(),
            self.suite.profile(),
            None,
            None,
        )?)
    }
}

impl fmt::Debug for SdesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdesKey")
            .field("suite", &self.suite)
            .field("material", &format_args!("***"))
            .finish()
    }
}

/// One `a=crypto:` attribute value (RFC 4568 §9.1), e.g.
/// `1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag; the answer must echo the tag of the offer line it accepts (RFC 4568 §7.1.2).
    pub tag: u32,
    /// The sender's key (ours in what we write, the peer's in what we parse).
    pub key: SdesKey,
    /// Key lifetime in packets, if given (`2^20` → 1048576). `webrtc-srtp` enforces only the
    /// RFC 3711 maximum, so the caller that cares must rekey itself.
    pub lifetime: Option<u64>,
}

impl CryptoAttribute {
    /// An attribute carrying `key` under `tag` (our answer to the SIP side's chosen line).
    pub fn new(tag: u32, key: SdesKey) -> Self {
        CryptoAttribute {
            tag,
            key,
            lifetime: None,
        }
    }

    /// An attribute with our fresh key for the given tag and suite.
    pub fn generate(tag: u32, suite: SdesSuite) -> Self {
        CryptoAttribute {
            tag,
            key: SdesKey::generate(suite),
            lifetime: None,
        }
    }

    /// Parses the text after `a=crypto:`. Only the first key parameter is used (more than one
    /// needs MKIs, which we refuse anyway); any error means "skip this line".
    pub fn parse(value: &str) -> Result<Self, SdesError> {
        let mut fields = value.split_ascii_whitespace();
        let tag_text = fields
            .next()
            .ok_or(SdesError::Malformed("empty attribute"))?;
        let tag = parse_tag(tag_text)?;
        let suite_name = fields
            .next()
            .ok_or(SdesError::Malformed("missing crypto suite"))?;
        let suite = SdesSuite::from_name(suite_name)
            .ok_or_else(|| SdesError::UnknownSuite(clip(suite_name)))?;
        let key_params = fields
            .next()
            .ok_or(SdesError::Malformed("missing key parameters"))?;
        let first = key_params.split(';').next().unwrap_or_default();
        let (method, info) = first
            .split_once(':')
            .ok_or(SdesError::Malformed("key parameter without key method"))?;
        if !method.eq_ignore_ascii_case("inline") {
            return Err(SdesError::UnsupportedKeyMethod(clip(method)));
        }
        let (key_salt, lifetime) = parse_key_info(info)?;
        for param in fields {
            check_session_param(param)?;
        }
        let material = INLINE_DECODER
            .decode(key_salt)
            .map_err(SdesError::InvalidBase64)?;
        let key = SdesKey::from_material(suite, &material)?;
        Ok(CryptoAttribute { tag, key, lifetime })
    }

    /// The attribute value to put after `a=crypto:`. We write no lifetime (the RFC 3711
    /// maximum applies) and no MKI (we rekey by a new offer, never in-band).
    pub fn to_value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.key.suite.name(),
            self.key.inline()
        )
    }
}

fn parse_tag(text: &str) -> Result<u32, SdesError> {
    let valid = !text.is_empty() && text.len() <= 9 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u32>() {
        Ok(tag) if valid && (1..=MAX_TAG).contains(&tag) => Ok(tag),
        _ => Err(SdesError::InvalidTag(clip(text))),
    }
}

/// Splits `key-salt ["|" lifetime] ["|" mki]` (RFC 4568 §6.1); an MKI is told from a lifetime
/// by its `:`.
fn parse_key_info(info: &str) -> Result<(&str, Option<u64>), SdesError> {
    let mut parts = info.split('|');
    let key_salt = parts.next().unwrap_or_default();
    if key_salt.is_empty() {
        return Err(SdesError::Malformed("empty inline key"));
    }
    let mut lifetime = None;
    for (i, part) in parts.enumerate() {
        if part.contains(':') {
            return Err(SdesError::MkiUnsupported);
        }
        if i > 0 || lifetime.is_some() {
            return Err(SdesError::Malformed("too many '|' fields in inline key"));
        }
        lifetime = Some(parse_lifetime(part)?);
    }
    Ok((key_salt, lifetime))
}

fn parse_lifetime(text: &str) -> Result<u64, SdesError> {
    let invalid = || SdesError::InvalidLifetime(clip(text));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(exp) = text.strip_prefix("2^") {
        if !digits(exp) {
            return Err(invalid());
        }
        let exp: u32 = exp.parse().map_err(|_| invalid())?;
        return 1u64
            .checked_shl(exp)
            .filter(|_| exp < 64)
            .ok_or_else(invalid);
    }
    if !digits(text) {
        return Err(invalid());
    }
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(invalid()),
    }
}

/// Session parameters (RFC 4568 §6.3) all alter the transform or its keying, except the
/// window-size hint, which only asks us to tolerate more reordering. An unknown one might
/// alter it too, so it is refused as well.
fn check_session_param(param: &str) -> Result<(), SdesError> {
    let name = param.split_once('=').map_or(param, |(n, _)| n);
    if name == "WSH" {
        return Ok(());
    }
    Err(SdesError::UnsupportedSessionParam(clip(name)))
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_ECHO).collect()
}

/// How many SSRCs that failed (or have not yet passed) authentication a receiving context may
/// accumulate before it is rebuilt. webrtc-srtp 0.17.2 creates per-SSRC state *before*
/// authenticating a packet, so forged packets with random SSRCs would otherwise grow memory
/// without bound for the whole call.
const MAX_UNVERIFIED_SSRCS: usize = 32;

/// The receiving (unprotect) side of an SRTP session with bounded per-SSRC state: after
/// [`MAX_UNVERIFIED_SSRCS`] packets from SSRCs never authenticated, the context is rebuilt from
/// the same master key, which drops the junk state (and resets the replay windows of the real
/// SSRCs, whose duplicates the RTP rewriter still drops). Used by the SDES leg and the DTLS-SRTP
/// WebRTC leg alike.
pub struct SrtpReceiver {
    key: Vec<u8>,
    salt: Vec<u8>,
    profile: ProtectionProfile,
    ctx: Context,
    /// SSRCs that authenticated since the context was (re)built.
    verified: Vec<u32>,
    /// Packets from other SSRCs since then.
    unverified: usize,
}

impl fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpReceiver")
            .field("profile", &self.profile)
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

impl SrtpReceiver {
    /// A replay-protected receiving context for the peer's `master_key`/`master_salt`.
    pub fn new(
        master_key: &[u8],
        master_salt: &[u8],
        profile: ProtectionProfile,
    ) -> Result<Self, SdesError> {
        Ok(SrtpReceiver {
            key: master_key.to_vec(),
            salt: master_salt.to_vec(),
            profile,
            ctx: Self::build(master_key, master_salt, profile)?,
            verified: Vec::new(),
            unverified: 0,
        })
    }

    fn build(key: &[u8], salt: &[u8], profile: ProtectionProfile) -> Result<Context, SdesError> {
        Ok(Context::new(
            key,
            salt,
            profile,
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
        )?)
    }

    /// Accounts for a packet of `ssrc` before the crate sees it; rebuilds the context when too
    /// many unverified SSRCs have been tried.
    fn admit(&mut self, ssrc: Option<u32>) -> Result<(), SdesError> {
        let known = ssrc.is_some_and(|s| self.verified.contains(&s));
        if !known {
            self.unverified += 1;
            if self.unverified > MAX_UNVERIFIED_SSRCS {
                self.ctx = Self::build(&self.key, &self.salt, self.profile)?;
                self.unverified = 1;
                self.verified.clear();
            }
        }
        Ok(())
    }

    fn verified(&mut self, ssrc: Option<u32>) {
        if let Some(s) = ssrc
            && !self.verified.contains(&s)
        {
            // A handful of real sources per call at most; keep the list short regardless.
            if self.verified.len() >= 8 {
                self.verified.remove(0);
            }
            self.verified.push(s);
        }
    }

    /// Authenticates (with replay check) and decrypts one SRTP packet.
    pub fn decrypt_rtp(&mut self, srtp: &[u8]) -> Result<Bytes, SdesError> {
        let ssrc = srtp
            .get(8..12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        self.admit(ssrc)?;
        let plain = self.ctx.decrypt_rtp(srtp)?;
        self.verified(ssrc);
        Ok(plain)
    }

    /// Frame-checks ([`check_srtcp_framing`]), authenticates and decrypts one SRTCP packet.
    pub fn decrypt_rtcp(&mut self, srtcp: &[u8]) -> Result<Bytes, SdesError> {
        check_srtcp_framing(self.profile, srtcp)?;
        let ssrc = srtcp
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        self.admit(ssrc)?;
        let plain = self.ctx.decrypt_rtcp(srtcp)?;
        self.verified(ssrc);
        Ok(plain)
    }
}

/// Both directions of one SDES-SRTP session: we protect with our key and unprotect with the
/// peer's (RFC 4568 §6.1: each `a=crypto` key is the key its sender uses).
pub struct SdesSession {
    suite: SdesSuite,
    tx: Context,
    rx: SrtpReceiver,
}

impl fmt::Debug for SdesSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdesSession")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SdesSession {
    /// Builds the session from our key and the peer's. Both must be for the same suite: the
    /// answer picks one offer line, and mixing suites means the SDP layer paired the wrong keys.
    pub fn new(local: &SdesKey, remote: &SdesKey) -> Result<Self, SdesError> {
        if local.suite != remote.suite {
            return Err(SdesError::SuiteMismatch {
                local: local.suite,
                remote: remote.suite,
            });
        }
        Ok(SdesSession {
            suite: local.suite,
            tx: local.context()?,
            rx: SrtpReceiver::new(
                remote.master_key(),
                remote.master_salt(),
                remote.suite.profile(),
            )?,
        })
    }

    /// The negotiated suite.
    pub fn suite(&self) -> SdesSuite {
        self.suite
    }

    /// Encrypts and authenticates one RTP packet toward the peer.
    pub fn protect_rtp(&mut self, plain: &[u8]) -> Result<Bytes, SdesError> {
        Ok(self.tx.encrypt_rtp(plain)?)
    }

    /// Authenticates (with replay check) and decrypts one SRTP packet from the peer.
    pub fn unprotect_rtp(&mut self, srtp: &[u8]) -> Result<Bytes, SdesError> {
        self.rx.decrypt_rtp(srtp)
    }

    /// Encrypts and authenticates one RTCP compound packet toward the peer.
    pub fn protect_rtcp(&mut self, plain: &[u8]) -> Result<Bytes, SdesError> {
        Ok(self.tx.encrypt_rtcp(plain)?)
    }

    /// Authenticates (with replay check) and decrypts one SRTCP packet from the peer.
    pub fn unprotect_rtcp(&mut self, srtcp: &[u8]) -> Result<Bytes, SdesError> {
        self.rx.decrypt_rtcp(srtcp)
    }
}

/// RTCP header (4 bytes) + sender SSRC (4 bytes), left in clear by SRTCP.
const SRTCP_CLEAR_PREFIX: usize = 8;
/// E flag + 31-bit SRTCP index (RFC 3711 §3.4).
const SRTCP_INDEX_LEN: usize = 4;

/// Checks what `webrtc-srtp` 0.17.2 `Context::decrypt_rtcp` fails to check, before handing it
/// a packet from the network:
///
/// * it reads the SRTCP index at `len - (tag + 4)` before checking the length, so a packet
///   shorter than that panics (subtract overflow in debug, out-of-bounds slice in release);
/// * for the AES-CM suites, a packet with the E flag clear is returned as plaintext without
///   verifying its authentication tag, so anyone could inject RTCP. RFC 3711 §3.4 makes
///   SRTCP authentication mandatory whatever the E flag, and we never negotiate
///   `UNENCRYPTED_SRTCP`, so a clear E flag is refused for every suite.
///
/// Public so that the DTLS-SRTP WebRTC leg, which calls the same function, can use it too.
pub fn check_srtcp_framing(profile: ProtectionProfile, srtcp: &[u8]) -> Result<(), SdesError> {
    let trailer = SRTCP_INDEX_LEN + profile.rtcp_auth_tag_len();
    let min = SRTCP_CLEAR_PREFIX + profile.aead_auth_tag_len() + trailer;
    if srtcp.len() < min {
        return Err(SdesError::MalformedSrtcp(
            "shorter than header, tag and index",
        ));
    }
    let e_flag = srtcp
        .len()
        .checked_sub(trailer)
        .and_then(|at| srtcp.get(at))
        .map(|b| b & 0x80 != 0);
    match e_flag {
        Some(true) => Ok(()),
        _ => Err(SdesError::MalformedSrtcp(
            "E flag clear (unencrypted SRTCP)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4568 §9.1 example key (30 bytes: 16 key + 14 salt).
    const RFC_KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

    fn rtp_packet(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend((0..160u8).map(|i| i.wrapping_mul(7)));
        p
    }

    /// An RTCP sender report with no report blocks (28 bytes).
    fn rtcp_packet() -> Vec<u8> {
        let mut p = vec![0x80, 200, 0x00, 0x06];
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend((0..20u8).map(|i| i.wrapping_mul(13)));
        p
    }

    fn pair(suite: SdesSuite) -> (SdesSession, SdesSession) {
        let a = SdesKey::generate(suite);
        let b = SdesKey::generate(suite);
        let alice = SdesSession::new(&a, &b).expect("same suite");
        let bob = SdesSession::new(&b, &a).expect("same suite");
        (alice, bob)
    }

    #[test]
    fn forged_packets_with_random_ssrcs_keep_receiver_state_bounded() {
        let (mut alice, mut bob) = pair(SdesSuite::AesCm128HmacSha1_80);
        let first = alice.protect_rtp(&rtp_packet(1)).expect("protect");
        assert!(bob.unprotect_rtp(&first).is_ok());
        for i in 0..1000u32 {
            let mut forged = first.to_vec();
            forged[8..12].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
            assert!(bob.unprotect_rtp(&forged).is_err(), "forgery {i} refused");
            assert!(bob.rx.unverified <= MAX_UNVERIFIED_SSRCS, "state bounded");
        }
        // The real stream still authenticates after the rebuilds.
        let later = alice.protect_rtp(&rtp_packet(2)).expect("protect");
        assert_eq!(
            &bob.unprotect_rtp(&later).expect("still keyed")[..],
            &rtp_packet(2)[..]
        );
    }

    #[test]
    fn parses_rfc4568_example_without_mki() {
        let value = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20");
        let a = CryptoAttribute::parse(&value).expect("valid");
        assert_eq!(a.tag, 1);
        assert_eq!(a.key.suite, SdesSuite::AesCm128HmacSha1_80);
        assert_eq!(a.key.material().len(), 30);
        assert_eq!(a.key.inline(), RFC_KEY);
        assert_eq!(a.lifetime, Some(1 << 20));
        let bare = CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}"))
            .expect("valid");
        assert_eq!(bare.lifetime, None);
        assert_eq!(bare.key, a.key);
    }

    #[test]
    fn rfc4568_example_with_mki_is_refused() {
        let value = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:32");
        assert!(matches!(
            CryptoAttribute::parse(&value),
            Err(SdesError::MkiUnsupported)
        ));
        // MKI without a lifetime, and the §9.1 line with two keys (both with MKI).
        let value = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:4");
        assert!(matches!(
            CryptoAttribute::parse(&value),
            Err(SdesError::MkiUnsupported)
        ));
        let value = format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP"
        );
        assert!(matches!(
            CryptoAttribute::parse(&value),
            Err(SdesError::MkiUnsupported)
        ));
    }

    #[test]
    fn first_of_several_key_params_is_used() {
        let other = STANDARD.encode([9u8; 30]);
        let value = format!("7 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY};inline:{other}");
        let a = CryptoAttribute::parse(&value).expect("valid");
        assert_eq!(a.tag, 7);
        assert_eq!(a.key.inline(), RFC_KEY);
    }

    #[test]
    fn decimal_lifetime_and_bad_lifetimes() {
        let ok =
            CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1000"))
                .expect("valid");
        assert_eq!(ok.lifetime, Some(1000));
        for bad in [
            "2^64",
            "2^",
            "0",
            "x",
            "2^-1",
            "",
            "99999999999999999999999",
        ] {
            let value = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|{bad}");
            assert!(
                matches!(
                    CryptoAttribute::parse(&value),
                    Err(SdesError::InvalidLifetime(_))
                ),
                "{bad}"
            );
        }
        let value = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|2^10");
        assert!(matches!(
            CryptoAttribute::parse(&value),
            Err(SdesError::Malformed(_))
        ));
    }

    #[test]
    fn round_trips_every_suite() {
        for (i, suite) in SdesSuite::ALL.into_iter().enumerate() {
            assert_eq!(SdesSuite::from_name(suite.name()), Some(suite));
            let tag = u32::try_from(i).expect("small") + 1;
            let a = CryptoAttribute::generate(tag, suite);
            let value = a.to_value();
            assert!(value.starts_with(&format!("{tag} {} inline:", suite.name())));
            let back = CryptoAttribute::parse(&value).expect("own output parses");
            assert_eq!(back, a);
        }
    }

    #[test]
    fn suite_lengths() {
        assert_eq!(SdesSuite::AesCm128HmacSha1_80.material_len(), 30);
        assert_eq!(SdesSuite::AesCm128HmacSha1_32.material_len(), 30);
        assert_eq!(SdesSuite::AesCm256HmacSha1_80.material_len(), 46);
        assert_eq!(SdesSuite::AeadAes128Gcm.key_len(), 16);
        assert_eq!(SdesSuite::AeadAes128Gcm.salt_len(), 12);
        assert_eq!(SdesSuite::AeadAes256Gcm.material_len(), 44);
        assert_eq!(SdesSuite::from_name("aes_cm_128_hmac_sha1_80"), None);
    }

    #[test]
    fn unpadded_base64_is_accepted() {
        // 28 bytes need "==" padding; some stacks leave it out.
        let key = SdesKey::generate(SdesSuite::AeadAes128Gcm);
        let padded = key.inline();
        assert!(padded.ends_with("=="));
        let value = format!("1 AEAD_AES_128_GCM inline:{}", padded.trim_end_matches('='));
        assert_eq!(CryptoAttribute::parse(&value).expect("valid").key, key);
    }

    #[test]
    fn bad_base64_and_wrong_length() {
        let value = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkp!ywjNWhcYD0mXXtxaVBR";
        assert!(matches!(
            CryptoAttribute::parse(value),
            Err(SdesError::InvalidBase64(_))
        ));
        // A valid 30-byte key offered for a suite needing 28.
        let value = format!("1 AEAD_AES_128_GCM inline:{RFC_KEY}");
        assert!(matches!(
            CryptoAttribute::parse(&value),
            Err(SdesError::KeyLength {
                expected: 28,
                got: 30,
                ..
            })
        ));
        assert!(matches!(
            SdesKey::from_material(SdesSuite::AesCm128HmacSha1_80, &[0; 29]),
            Err(SdesError::KeyLength { .. })
        ));
    }

    #[test]
    fn unknown_suite_and_key_method() {
        let value = format!("1 F8_128_HMAC_SHA1_80 inline:{RFC_KEY}");
        match CryptoAttribute::parse(&value) {
            Err(SdesError::UnknownSuite(name)) => assert_eq!(name, "F8_128_HMAC_SHA1_80"),
            other => panic!("unexpected {other:?}"),
        }
        let value = format!("1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}");
        assert!(matches!(
            CryptoAttribute::parse(&value),
            Err(SdesError::UnsupportedKeyMethod(_))
        ));
    }

    #[test]
    fn tags() {
        let key = format!("AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}");
        for bad in ["0", "1000000000", "4294967296", "-1", "+1", "a", "1a"] {
            assert!(
                matches!(
                    CryptoAttribute::parse(&format!("{bad} {key}")),
                    Err(SdesError::InvalidTag(_))
                ),
                "{bad}"
            );
        }
        let max = CryptoAttribute::parse(&format!("999999999 {key}")).expect("max tag");
        assert_eq!(max.tag, 999_999_999);
    }

    #[test]
    fn session_params() {
        for p in [
            "UNENCRYPTED_SRTP",
            "UNENCRYPTED_SRTCP",
            "KDR=1",
            "FEC_ORDER=SRTP_FEC",
            "FOO=1",
        ] {
            let value = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} {p}");
            assert!(
                matches!(
                    CryptoAttribute::parse(&value),
                    Err(SdesError::UnsupportedSessionParam(_))
                ),
                "{p}"
            );
        }
        let value = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} WSH=128\r\n");
        assert!(CryptoAttribute::parse(&value).is_ok());
    }

    #[test]
    fn garbage_never_panics() {
        let long = "9".repeat(10_000);
        let inputs = [
            "",
            " ",
            "\t\r\n",
            "1",
            "1 ",
            "1 AES_CM_128_HMAC_SHA1_80",
            "1 AES_CM_128_HMAC_SHA1_80 inline",
            "1 AES_CM_128_HMAC_SHA1_80 inline:",
            "1 AES_CM_128_HMAC_SHA1_80 inline:|",
            "1 AES_CM_128_HMAC_SHA1_80 inline:||||",
            "1 AES_CM_128_HMAC_SHA1_80 ;;;",
            "1 AES_CM_128_HMAC_SHA1_80 :",
            "1 AES_CM_128_HMAC_SHA1_80 inline:é|ü:ß",
            "💥 💥 💥",
            long.as_str(),
        ];
        for input in inputs {
            assert!(CryptoAttribute::parse(input).is_err(), "{input:?}");
        }
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>() % 128).collect();
            let s = String::from_utf8_lossy(&bytes);
            let _ = CryptoAttribute::parse(&s);
        }
        // Echoed input is clipped.
        let value = format!("1 {} inline:{RFC_KEY}", "X".repeat(1000));
        match CryptoAttribute::parse(&value) {
            Err(SdesError::UnknownSuite(name)) => assert_eq!(name.len(), MAX_ECHO),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn debug_hides_key() {
        let a = CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}"))
            .expect("valid");
        for text in [
            format!("{:?}", a.key),
            format!("{a:?}"),
            format!("{:#?}", a),
        ] {
            assert!(!text.contains(RFC_KEY), "{text}");
            assert!(!text.contains("61, 45"), "{text}"); // first bytes as a list
            assert!(text.contains("***"), "{text}");
        }
    }

    #[test]
    fn rtp_end_to_end_every_suite() {
        for suite in SdesSuite::ALL {
            let (mut alice, mut bob) = pair(suite);
            for seq in [1u16, 2, 3, 65535, 0] {
                let plain = rtp_packet(seq);
                let srtp = alice.protect_rtp(&plain).expect("protect");
                assert_ne!(&srtp[12..172], &plain[12..], "{suite}: payload encrypted");
                assert!(srtp.len() > plain.len());
                let back = bob.unprotect_rtp(&srtp).expect("unprotect");
                assert_eq!(&back[..], &plain[..], "{suite}");
                // Replay of the same packet is refused.
                assert!(bob.unprotect_rtp(&srtp).is_err(), "{suite}: replay");
            }
            // And the other direction.
            let plain = rtp_packet(10);
            let srtp = bob.protect_rtp(&plain).expect("protect");
            assert_eq!(
                &alice.unprotect_rtp(&srtp).expect("unprotect")[..],
                &plain[..]
            );
        }
    }

    #[test]
    fn tampered_rtp_fails() {
        for suite in SdesSuite::ALL {
            let (mut alice, mut bob) = pair(suite);
            let srtp = alice.protect_rtp(&rtp_packet(1)).expect("protect");
            let mut bad = srtp.to_vec();
            bad[50] ^= 0x01;
            assert!(
                matches!(bob.unprotect_rtp(&bad), Err(SdesError::Srtp(_))),
                "{suite}"
            );
            // Short or garbage input is an error, not a panic.
            for junk in [&[][..], &[0x80][..], &bad[..12], &bad[..20]] {
                assert!(bob.unprotect_rtp(junk).is_err());
                assert!(bob.unprotect_rtcp(junk).is_err());
            }
            // The genuine packet still passes (the failure did not poison the replay window).
            assert!(bob.unprotect_rtp(&srtp).is_ok(), "{suite}");
            // Unprotecting with the wrong key fails.
            let (_, mut eve) = pair(suite);
            assert!(eve.unprotect_rtp(&srtp).is_err());
        }
    }

    #[test]
    fn rtcp_end_to_end_and_tamper() {
        for suite in SdesSuite::ALL {
            let (mut alice, mut bob) = pair(suite);
            let plain = rtcp_packet();
            let srtcp = alice.protect_rtcp(&plain).expect("protect");
            assert_ne!(&srtcp[8..28], &plain[8..], "{suite}: encrypted");
            let mut bad = srtcp.to_vec();
            bad[10] ^= 0x80;
            assert!(bob.unprotect_rtcp(&bad).is_err(), "{suite}");
            assert_eq!(
                &bob.unprotect_rtcp(&srtcp).expect("unprotect")[..],
                &plain[..]
            );
            assert!(bob.unprotect_rtcp(&srtcp).is_err(), "{suite}: replay");
        }
    }

    #[test]
    fn srtcp_with_e_flag_cleared_is_refused() {
        for suite in SdesSuite::ALL {
            let (mut alice, mut bob) = pair(suite);
            let srtcp = alice.protect_rtcp(&rtcp_packet()).expect("protect");
            let trailer = SRTCP_INDEX_LEN + suite.profile().rtcp_auth_tag_len();
            let mut forged = srtcp.to_vec();
            let at = forged.len() - trailer;
            forged[at] &= 0x7f;
            // Even with the plaintext in place and the tag garbage: webrtc-srtp alone would
            // hand this back unauthenticated for AES-CM.
            forged[8..28].copy_from_slice(&rtcp_packet()[8..]);
            assert!(
                matches!(
                    bob.unprotect_rtcp(&forged),
                    Err(SdesError::MalformedSrtcp(_))
                ),
                "{suite}"
            );
            assert!(bob.unprotect_rtcp(&srtcp).is_ok(), "{suite}");
        }
    }

    #[test]
    fn network_junk_never_panics() {
        for suite in SdesSuite::ALL {
            let (mut alice, mut bob) = pair(suite);
            let srtp = alice.protect_rtp(&rtp_packet(1)).expect("protect");
            let srtcp = alice.protect_rtcp(&rtcp_packet()).expect("protect");
            // Every truncation of valid packets, as RTP and as RTCP.
            for valid in [&srtp[..], &srtcp[..]] {
                for len in 0..valid.len() {
                    let _ = bob.unprotect_rtp(&valid[..len]);
                    let _ = bob.unprotect_rtcp(&valid[..len]);
                }
            }
            // Random bytes of every small length, with plausible first bytes.
            for len in 0..120usize {
                for first in [0x80u8, 0x90, 0xbf, 0xa0, 0x00, 0xff] {
                    let mut junk: Vec<u8> = (0..len).map(|_| rand::random()).collect();
                    if let Some(b) = junk.first_mut() {
                        *b = first;
                    }
                    if let Some(b) = junk.get_mut(1) {
                        *b = if len % 2 == 0 { 200 } else { 0 };
                    }
                    let _ = bob.unprotect_rtp(&junk);
                    let _ = bob.unprotect_rtcp(&junk);
                    let _ = bob.protect_rtp(&junk);
                    let _ = bob.protect_rtcp(&junk);
                }
            }
        }
    }

    #[test]
    fn mismatched_suites_are_refused() {
        let a = SdesKey::generate(SdesSuite::AesCm128HmacSha1_80);
        let b = SdesKey::generate(SdesSuite::AeadAes128Gcm);
        assert!(matches!(
            SdesSession::new(&a, &b),
            Err(SdesError::SuiteMismatch { .. })
        ));
    }

    #[test]
    fn independent_context_decrypts_with_key_then_salt() {
        // RFC 4568 §6.1: inline = master key || master salt. A context built directly from the
        // two halves must read what our session wrote.
        for suite in [SdesSuite::AesCm128HmacSha1_80, SdesSuite::AeadAes128Gcm] {
            let ours = SdesKey::generate(suite);
            let theirs = SdesKey::generate(suite);
            let mut session = SdesSession::new(&ours, &theirs).expect("same suite");
            let plain = rtp_packet(42);
            let srtp = session.protect_rtp(&plain).expect("protect");
            let m = ours.material();
            let (key, salt) = m.split_at(suite.key_len());
            let mut ctx =
                Context::new(key, salt, suite.profile(), None, None).expect("valid lengths");
            assert_eq!(&ctx.decrypt_rtp(&srtp).expect("decrypts")[..], &plain[..]);
            // The swapped order must not work (guards against a split mistake on both sides).
            let (salt_first, key_last) = m.split_at(suite.salt_len());
            let mut wrong = Context::new(key_last, salt_first, suite.profile(), None, None)
                .expect("valid lengths");
            assert!(wrong.decrypt_rtp(&srtp).is_err());
        }
    }

    #[test]
    fn rfc_key_splits_as_documented() {
        let a = CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}"))
            .expect("valid");
        assert_eq!(a.key.master_key(), &a.key.material()[..16]);
        assert_eq!(a.key.master_salt(), &a.key.material()[16..]);
        let mut session = SdesSession::new(&a.key, &a.key).expect("same suite");
        let plain = rtp_packet(5);
        let srtp = session.protect_rtp(&plain).expect("protect");
        assert_eq!(
            &session.unprotect_rtp(&srtp).expect("unprotect")[..],
            &plain[..]
        );
    }
}
