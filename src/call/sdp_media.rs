//! SDP of the SIP leg ⇄ the media bridge's types ([`SipLocal`], [`SipRemote`], [`LegCodecs`]).
//!
//! Pure functions: no sockets, no clock, no randomness of our own (session ids and our SDES key
//! are handed in). The offer/answer rules themselves (RFC 3264) live in [`crate::sip::sdp`];
//! this module only decides *what* the gateway offers and accepts on the SIP leg and translates
//! the negotiated result for the bridge:
//!
//! * [`sip_offer`]: our INVITE's offer. The WebRTC side's codecs come first so that the bridge
//!   can pass packets through undecoded when the SIP side shares one ([`crate::media::bridge::plan`]
//!   walks the WebRTC list first), then every other codec we can transcode, then
//!   telephone-event.
//! * [`sip_remote_from_offer`] + [`build_answer`] (or [`sip_answer`] in one go): answering a
//!   SIP INVITE. The first step is what [`crate::media::bridge::Bridge::set_sip_remote`] needs;
//!   the key it returns goes into the second.
//! * [`sip_remote_from_answer`]: the SIP side's answer to our offer.
//! * [`reoffer_with_direction`]: hold and resume re-INVITEs.
//!
//! Directions: an SDP's direction is its author's (RFC 3264 §5.1), while
//! [`SipRemote::local_direction`] is *ours*, i.e. what we write in our own SDP; the functions
//! here do that inversion. An RFC 2543 hold (`c=IN IP4 0.0.0.0`) keeps the unspecified address
//! in [`SipRemote::rtp`]; the bridge sends nothing there.

use crate::config::Secret;
use crate::media::bridge::{
    AudioFormat, Direction as LegDirection, LegCodecs, SipLocal, SipRemote, TelephoneEventFormat,
};
use crate::media::codec::Codec;
use crate::media::sdes::{CryptoAttribute, SdesError, SdesSuite};
use crate::sip::sdp::{
    self, Attribute, Crypto, Incompatibility, LocalMedia, MediaDescription, OfferError,
    PayloadCodec, PayloadType, Rtcp, SessionDescription,
};

/// The dynamic payload type we offer Opus on (the number browsers and Jitsi use).
pub const OPUS_PAYLOAD_TYPE: PayloadType = match PayloadType::new(111) {
    Some(pt) => pt,
    None => panic!("111 is a valid payload type"),
};

/// The dynamic payload type we offer telephone-event/8000 on (the usual choice of SIP phones).
pub const TELEPHONE_EVENT_PAYLOAD_TYPE: PayloadType = match PayloadType::new(101) {
    Some(pt) => pt,
    None => panic!("101 is a valid payload type"),
};

/// Our Opus `a=fmtp` (RFC 7587 §6.1): 10 ms minimum packetization, in-band FEC welcome.
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

/// The packetization we ask for (`a=ptime`); every frame the bridge transcodes is 20 ms.
pub const PTIME_MS: u32 = crate::media::codec::FRAME_MS;

/// Every codec we offer or accept on the SIP leg, in the order we offer the ones the WebRTC
/// side did not name.
pub const SUPPORTED: [Codec; 4] = [Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma];

/// Whether our SIP offers use SDES-SRTP. An operator's configuration choice: many trunks do
/// not speak `RTP/SAVP` and refuse such an offer with 488, so plain RTP is the default. SDES
/// offered *to* us is accepted either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    /// `RTP/AVP`, no `a=crypto`.
    #[default]
    Plain,
    /// `RTP/SAVP` with our `a=crypto` ([`SipLocal::crypto`]).
    Offer,
}

/// The `o=` session id and version of an SDP we build (RFC 4566 §5.2). The id is fixed for a
/// call; the version must grow with every changed SDP we send in it (RFC 3264 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionVersion {
    /// `<sess-id>`, e.g. an NTP timestamp taken when the call starts.
    pub id: u64,
    /// `<sess-version>`.
    pub version: u64,
}

/// Why a SIP leg's SDP cannot be used. [`SdpMediaError::status`] gives the response to send
/// when we were answering an offer; errors about an answer to our own offer have none (the
/// dialog exists: ACK the 2xx, then BYE, RFC 3261 §13.2.2.4).
#[derive(Debug, thiserror::Error)]
pub enum SdpMediaError {
    /// The offer has no audio codec we support (RFC 3264 §6).
    #[error("488 Not Acceptable Here: no audio codec in common with the SIP offer")]
    NoCommonCodec,
    /// An `RTP/SAVP` offer whose `a=crypto` lines all have suites, key methods, MKIs or
    /// session parameters we cannot honour (RFC 4568 §7.1.2).
    #[error("488 Not Acceptable Here: RTP/SAVP offer without a usable a=crypto line")]
    NoUsableCrypto,
    /// Any other reason the offer cannot be answered: no audio stream, a transport profile
    /// the SIP leg does not speak (e.g. DTLS `UDP/TLS/RTP/SAVPF`), no or non-IP `c=`, an
    /// address family other than ours.
    #[error("488 Not Acceptable Here: {0}")]
    UnacceptableOffer(OfferError),
    /// [`build_answer`] got an `RTP/SAVP` offer but no key of ours to answer with.
    #[error("500 Server Internal Error: no local SDES key to answer an RTP/SAVP offer")]
    MissingAnswerKey,
    /// [`build_answer`] got a key of ours for another suite than the offer line we accepted.
    #[error(
        "500 Server Internal Error: local SDES key is for {ours}, the accepted line for {theirs}"
    )]
    AnswerKeySuite {
        /// The suite of the key handed to [`build_answer`].
        ours: SdesSuite,
        /// The suite of the accepted offer line.
        theirs: SdesSuite,
    },
    /// The answer to our offer rejected the audio stream (port 0).
    #[error("ACK and BYE: the SIP answer rejected our audio stream")]
    Rejected,
    /// The answer to our offer breaks RFC 3264 (m-line count, formats not offered, ...) or
    /// cannot be used (no audio codec, no `c=`, no crypto on `RTP/SAVP`).
    #[error("ACK and BYE: unusable SIP answer: {0}")]
    BadAnswer(OfferError),
    /// The `a=crypto` line of the answer to our offer cannot key SRTP.
    #[error("ACK and BYE: unusable a=crypto in the SIP answer: {0}")]
    BadAnswerCrypto(#[source] SdesError),
}

impl SdpMediaError {
    /// The SIP final response to an offer we could not answer: 488 for a refused offer
    /// (RFC 3264 §6), 500 for a mistake of ours. `None` for problems with an answer to our
    /// offer, which is no request to respond to.
    pub fn status(&self) -> Option<u16> {
        match self {
            SdpMediaError::NoCommonCodec
            | SdpMediaError::NoUsableCrypto
            | SdpMediaError::UnacceptableOffer(_) => Some(488),
            SdpMediaError::MissingAnswerKey | SdpMediaError::AnswerKeySuite { .. } => Some(500),
            SdpMediaError::Rejected
            | SdpMediaError::BadAnswer(_)
            | SdpMediaError::BadAnswerCrypto(_) => None,
        }
    }

    /// `warn-code` and `warn-text` for a `Warning` header on the 488 (RFC 3261 §20.43).
    pub fn warning(&self) -> Option<(u16, &'static str)> {
        match self {
            SdpMediaError::NoCommonCodec => Some(OfferError::NoCommonCodec.warning()),
            SdpMediaError::NoUsableCrypto => {
                Some(OfferError::Incompatible(Incompatibility::NoCryptoSuite).warning())
            }
            SdpMediaError::UnacceptableOffer(e) => Some(e.warning()),
            _ => None,
        }
    }

    fn refused(e: OfferError) -> Self {
        match e {
            OfferError::NoCommonCodec => SdpMediaError::NoCommonCodec,
            OfferError::Incompatible(Incompatibility::NoCryptoSuite) => {
                SdpMediaError::NoUsableCrypto
            }
            other => SdpMediaError::UnacceptableOffer(other),
        }
    }

    fn bad_answer(e: OfferError) -> Self {
        match e {
            OfferError::Rejected => SdpMediaError::Rejected,
            other => SdpMediaError::BadAnswer(other),
        }
    }
}

/// Our initial offer for the SIP leg: one audio m-line on [`SipLocal::rtp`] with the `prefer`
/// codecs first (the WebRTC side's, in its order), then the rest of [`SUPPORTED`], then
/// telephone-event/8000 on 101 (`a=fmtp:101 0-16`). Static payload types for PCMU (0), PCMA
/// (8) and G722 (9), 111 for Opus with [`OPUS_FMTP`]. `a=ptime:20`, `a=rtcp:<rtcp port>`
/// (RFC 3605), `a=sendrecv`. With [`SrtpPolicy::Offer`] the profile is `RTP/SAVP` with
/// [`SipLocal::crypto`] as the one `a=crypto` line, else `RTP/AVP` without keys.
pub fn sip_offer(
    local: &SipLocal,
    prefer: &[Codec],
    srtp: SrtpPolicy,
    session: SessionVersion,
) -> SessionDescription {
    let mut media = local_media(local, &ordered(prefer), session);
    if srtp == SrtpPolicy::Offer {
        media.crypto = vec![sdp_crypto(&local.crypto)];
    }
    let mut offer = sdp::create_offer(&media);
    for m in &mut offer.media {
        insert_rtcp(m, local.rtcp_port);
    }
    offer
}

/// Reads a SIP INVITE's (or re-INVITE's) offer into what the bridge needs, without building
/// the answer yet. Picks the first usable audio m-line (RFC 3264 §6); its codecs we support,
/// `prefer` ones first (in `prefer`'s order, so a codec shared with the WebRTC side wins),
/// the others in the offerer's order, each with the offerer's payload type; telephone-event/8000
/// if offered; `a=rtcp-mux` if offered. On `RTP/SAVP` the first `a=crypto` line that
/// [`CryptoAttribute::parse`] accepts (lines with unknown suites, MKIs or session parameters
/// are skipped). `local` is needed for the address family check.
///
/// Feed the result to [`crate::media::bridge::Bridge::set_sip_remote`], then answer with
/// [`build_answer`] and the key it returned.
pub fn sip_remote_from_offer(
    offer: &SessionDescription,
    local: &SipLocal,
    prefer: &[Codec],
) -> Result<SipRemote, SdpMediaError> {
    let offer = usable_crypto_only(offer);
    let mut media = local_media(local, &SUPPORTED, SessionVersion::default());
    media.rtcp_mux = true;
    // Placeholders for "any suite we implement": `usable_crypto_only` already dropped every
    // line we cannot key, so this picks the first remaining one. The key is never used.
    media.crypto = SdesSuite::ALL
        .iter()
        .map(|suite| Crypto {
            tag: 1,
            suite: suite.name().to_owned(),
            key_params: Secret::new(""),
            session_params: None,
        })
        .collect();
    let negotiated = sdp::create_answer(&offer, &media)
        .map_err(SdpMediaError::refused)?
        .negotiated;
    let mut audio = audio_formats(&negotiated.codecs);
    let prefer = dedup(prefer);
    // Stable: codecs not in `prefer` keep the offerer's order behind the preferred ones.
    audio.sort_by_key(|f| {
        prefer
            .iter()
            .position(|&c| c == f.codec)
            .unwrap_or(prefer.len())
    });
    if audio.is_empty() {
        return Err(SdpMediaError::NoCommonCodec);
    }
    let crypto = negotiated
        .remote_crypto
        .as_ref()
        .map(crypto_attribute)
        .transpose()
        .map_err(|_| SdpMediaError::NoUsableCrypto)?;
    let m = offer.media.get(negotiated.media_index);
    let ours = offer
        .direction_of(negotiated.media_index)
        .answer(sdp::Direction::SendRecv);
    Ok(SipRemote {
        rtp: negotiated.remote_rtp,
        rtcp: explicit_rtcp(m, negotiated.rtcp_mux, negotiated.remote_rtcp),
        rtcp_mux: negotiated.rtcp_mux,
        crypto,
        codecs: LegCodecs {
            audio,
            telephone_event: negotiated.telephone_event.as_ref().map(event_format),
            ..Default::default()
        },
        local_direction: leg_direction(ours),
    })
}

/// Our answer to `offer`, agreeing to what `remote` (from [`sip_remote_from_offer`] on the
/// same offer) says: its codecs in its order with the offer's payload type numbers,
/// telephone-event if it has one, rtcp-mux if it agreed it, direction
/// [`SipRemote::local_direction`] (so answering on hold works too), `a=rtcp` with our RTCP
/// port otherwise, and on `RTP/SAVP` one `a=crypto` line with the accepted line's tag and
/// `our_crypto`'s key (what `Bridge::set_sip_remote` returned). Every m-line but the accepted
/// audio one is rejected with port 0 (RFC 3264 §6).
pub fn build_answer(
    offer: &SessionDescription,
    local: &SipLocal,
    remote: &SipRemote,
    our_crypto: Option<&CryptoAttribute>,
    session: SessionVersion,
) -> Result<SessionDescription, SdpMediaError> {
    let offer = usable_crypto_only(offer);
    let codecs: Vec<Codec> = remote.codecs.audio.iter().map(|f| f.codec).collect();
    let mut media = local_media(local, &codecs, session);
    media.prefer_local_order = true;
    media.rtcp_mux = remote.rtcp_mux;
    media.direction = sdp_direction(remote.local_direction);
    if remote.codecs.telephone_event.is_none() {
        media.telephone_event = None;
    }
    if let Some(theirs) = &remote.crypto {
        let ours = our_crypto.ok_or(SdpMediaError::MissingAnswerKey)?;
        if ours.key.suite != theirs.key.suite {
            return Err(SdpMediaError::AnswerKeySuite {
                ours: ours.key.suite,
                theirs: theirs.key.suite,
            });
        }
        media.crypto = vec![sdp_crypto(ours)];
    }
    let answer = sdp::create_answer(&offer, &media).map_err(SdpMediaError::refused)?;
    let mut sdp = answer.sdp;
    if !answer.negotiated.rtcp_mux
        && let Some(m) = sdp.media.get_mut(answer.negotiated.media_index)
    {
        insert_rtcp(m, local.rtcp_port);
    }
    Ok(sdp)
}

/// Answers a SIP offer in one step: [`sip_remote_from_offer`], then [`build_answer`] with the
/// key `answer_crypto` makes for the accepted `a=crypto` line (called only for `RTP/SAVP`;
/// it gets the SIP side's line and returns ours for the same suite, e.g.
/// `|theirs| CryptoAttribute::generate(theirs.tag, theirs.key.suite)`). When the bridge
/// makes the key ([`crate::media::bridge::Bridge::set_sip_remote`]), use the two steps.
pub fn sip_answer(
    offer: &SessionDescription,
    local: &SipLocal,
    prefer: &[Codec],
    answer_crypto: impl FnOnce(&CryptoAttribute) -> CryptoAttribute,
    session: SessionVersion,
) -> Result<(SessionDescription, SipRemote), SdpMediaError> {
    let remote = sip_remote_from_offer(offer, local, prefer)?;
    let ours = remote.crypto.as_ref().map(answer_crypto);
    let answer = build_answer(offer, local, &remote, ours.as_ref(), session)?;
    Ok((answer, remote))
}

/// Reads the SIP side's answer to our offer `offered` (RFC 3264 §6, checked by
/// [`sdp::apply_answer`]): address and port (media-level `c=` over session-level), `a=rtcp`
/// (port and optional address; `None` means RTP port + 1), rtcp-mux when both SDPs have it
/// (RFC 5761 §5.1.1: an answer may not add it), the answer's `a=crypto` (which must echo the
/// tag and suite of one of ours), its codecs we support in its order and telephone-event.
/// [`SipRemote::local_direction`] is what is left of our offered direction given theirs: their
/// `sendonly` makes us `RecvOnly`, `recvonly` `SendOnly`, `inactive` `Inactive`. A rejected
/// audio stream (port 0) is [`SdpMediaError::Rejected`].
pub fn sip_remote_from_answer(
    answer: &SessionDescription,
    offered: &SessionDescription,
) -> Result<SipRemote, SdpMediaError> {
    let negotiated = sdp::apply_answer(offered, answer).map_err(SdpMediaError::bad_answer)?;
    let audio = audio_formats(&negotiated.codecs);
    if audio.is_empty() {
        return Err(SdpMediaError::BadAnswer(OfferError::NoCommonCodec));
    }
    let crypto = negotiated
        .remote_crypto
        .as_ref()
        .map(crypto_attribute)
        .transpose()
        .map_err(SdpMediaError::BadAnswerCrypto)?;
    let index = negotiated.media_index;
    let (ours, theirs) = (offered.direction_of(index), answer.direction_of(index));
    let direction = sdp::Direction::from_flags(
        ours.sends() && theirs.receives(),
        ours.receives() && theirs.sends(),
    );
    Ok(SipRemote {
        rtp: negotiated.remote_rtp,
        rtcp: explicit_rtcp(
            answer.media.get(index),
            negotiated.rtcp_mux,
            negotiated.remote_rtcp,
        ),
        rtcp_mux: negotiated.rtcp_mux,
        crypto,
        codecs: LegCodecs {
            audio,
            telephone_event: negotiated.telephone_event.as_ref().map(event_format),
            ..Default::default()
        },
        local_direction: leg_direction(direction),
    })
}

/// A re-INVITE offer from the last SDP we sent in the dialog (offer or answer): the same
/// m-lines, `o=` version + 1, `dir` on every stream in use (RFC 3264 §8). Hold is
/// `previous.direction_of(i).held()` (usually `SendOnly`), resume `SendRecv`.
pub fn reoffer_with_direction(
    previous_local: &SessionDescription,
    dir: sdp::Direction,
) -> SessionDescription {
    previous_local.reoffer(dir)
}

/// The SDP direction as the bridge's type.
pub fn leg_direction(d: sdp::Direction) -> LegDirection {
    match d {
        sdp::Direction::SendRecv => LegDirection::SendRecv,
        sdp::Direction::SendOnly => LegDirection::SendOnly,
        sdp::Direction::RecvOnly => LegDirection::RecvOnly,
        sdp::Direction::Inactive => LegDirection::Inactive,
    }
}

/// The bridge's direction as the SDP type.
pub fn sdp_direction(d: LegDirection) -> sdp::Direction {
    match d {
        LegDirection::SendRecv => sdp::Direction::SendRecv,
        LegDirection::SendOnly => sdp::Direction::SendOnly,
        LegDirection::RecvOnly => sdp::Direction::RecvOnly,
        LegDirection::Inactive => sdp::Direction::Inactive,
    }
}

/// The SDP form of one of our codecs, with the payload type we offer it on.
pub fn payload_codec(codec: Codec) -> PayloadCodec {
    let (pt, c) = match codec {
        Codec::Opus => (OPUS_PAYLOAD_TYPE, sdp::Codec::opus().with_fmtp(OPUS_FMTP)),
        Codec::G722 => (PayloadType::G722, sdp::Codec::g722()),
        Codec::Pcmu => (PayloadType::PCMU, sdp::Codec::pcmu()),
        Codec::Pcma => (PayloadType::PCMA, sdp::Codec::pcma()),
    };
    PayloadCodec::new(pt, c)
}

/// The codec an SDP format stands for, if we support it: name and clock as
/// [`Codec::from_rtpmap`] has them, and the channel count too (`opus/48000/2`, mono otherwise).
pub fn media_codec(codec: &sdp::Codec) -> Option<Codec> {
    Codec::from_rtpmap(&codec.name, codec.clock_rate).filter(|c| {
        let channels = if *c == Codec::Opus { 2 } else { 1 };
        codec.channels == channels
    })
}

fn dedup(codecs: &[Codec]) -> Vec<Codec> {
    let mut out: Vec<Codec> = Vec::with_capacity(codecs.len());
    for &c in codecs {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// `prefer` without repeats, then the rest of [`SUPPORTED`].
fn ordered(prefer: &[Codec]) -> Vec<Codec> {
    let mut out = dedup(prefer);
    for c in SUPPORTED {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

fn local_media(local: &SipLocal, codecs: &[Codec], session: SessionVersion) -> LocalMedia {
    let mut media = LocalMedia::new(
        local.rtp.ip(),
        local.rtp.port(),
        codecs.iter().copied().map(payload_codec).collect(),
    );
    media.telephone_event = Some(PayloadCodec::new(
        TELEPHONE_EVENT_PAYLOAD_TYPE,
        sdp::Codec::telephone_event(),
    ));
    media.ptime = Some(PTIME_MS);
    media.direction = sdp::Direction::SendRecv;
    media.session_id = session.id;
    media.session_version = session.version;
    media
}

/// `a=rtcp:<port>` (RFC 3605) before the direction attribute, or last.
fn insert_rtcp(m: &mut MediaDescription, port: u16) {
    let rtcp = Attribute::Rtcp(Rtcp {
        port,
        connection: None,
    });
    match m
        .attributes
        .iter()
        .position(|a| matches!(a, Attribute::Direction(_)))
    {
        Some(at) => m.attributes.insert(at, rtcp),
        None => m.attributes.push(rtcp),
    }
}

/// The RTCP destination to hand the bridge: only what `a=rtcp` said; `None` means RTP + 1.
fn explicit_rtcp(
    m: Option<&MediaDescription>,
    rtcp_mux: bool,
    resolved: std::net::SocketAddr,
) -> Option<std::net::SocketAddr> {
    (!rtcp_mux && m.and_then(MediaDescription::rtcp).is_some()).then_some(resolved)
}

fn audio_formats(codecs: &[PayloadCodec]) -> Vec<AudioFormat> {
    codecs
        .iter()
        .filter_map(|pc| {
            media_codec(&pc.codec).map(|codec| AudioFormat {
                pt: pc.pt.get(),
                codec,
            })
        })
        .collect()
}

fn event_format(pc: &PayloadCodec) -> TelephoneEventFormat {
    TelephoneEventFormat {
        pt: pc.pt.get(),
        clock: pc.codec.clock_rate,
    }
}

/// Our key as an SDP attribute: `<tag> <suite> inline:<key||salt>`, no lifetime, no MKI.
fn sdp_crypto(c: &CryptoAttribute) -> Crypto {
    Crypto {
        tag: c.tag,
        suite: c.key.suite.name().to_owned(),
        key_params: Secret::new(format!("inline:{}", c.key.inline())),
        session_params: None,
    }
}

/// A parsed `a=crypto` line checked by the SDES layer (suite, key length, no MKI, no session
/// parameter that alters the transform).
fn crypto_attribute(c: &Crypto) -> Result<CryptoAttribute, SdesError> {
    let mut value = format!("{} {} {}", c.tag, c.suite, c.key_params.expose());
    if let Some(params) = &c.session_params {
        value.push(' ');
        value.push_str(params);
    }
    CryptoAttribute::parse(&value)
}

/// `offer` without the `a=crypto` lines we could not key, so that [`sdp::create_answer`]
/// accepts the first usable one.
fn usable_crypto_only(offer: &SessionDescription) -> SessionDescription {
    let mut offer = offer.clone();
    for m in &mut offer.media {
        m.attributes.retain(|a| match a {
            Attribute::Crypto(c) => crypto_attribute(c).is_ok(),
            _ => true,
        });
    }
    offer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::bridge::DEFAULT_SDES_SUITE;
    use crate::media::sdes::SdesKey;
    use crate::sip::sdp::{MediaType, Proto};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    const SESSION: SessionVersion = SessionVersion { id: 77, version: 1 };

    /// 30 bytes of AES_CM_128 key || salt (the RFC 4568 §9.1 example key).
    const KEY_128: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    /// An INVITE body shaped like baresip's.
    const BARESIP_OFFER: &str = "v=0\r\n\
o=- 1956733432 3183226219 IN IP4 203.0.113.5\r\n\
s=-\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 10000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=rtcp-rsize\r\n\
a=ptime:20\r\n";

    /// An Asterisk-shaped SDES offer: the first a=crypto line has a suite we do not do, the
    /// second is usable.
    fn asterisk_offer() -> String {
        format!(
            "v=0\r\n\
o=- 1432 1432 IN IP4 198.51.100.20\r\n\
s=Asterisk\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 17000 RTP/SAVP 8 0 9 101\r\n\
a=crypto:1 AES_192_CM_HMAC_SHA1_80 inline:{KEY_128}{KEY_128}\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n"
        )
    }

    fn parse(s: &str) -> SessionDescription {
        match s.parse() {
            Ok(sdp) => sdp,
            Err(e) => panic!("SDP does not parse: {e}\n{s}"),
        }
    }

    fn pt(n: u8) -> PayloadType {
        PayloadType::new(n).expect("test payload types are below 128")
    }

    fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn our_key(tag: u32, suite: SdesSuite, byte: u8) -> CryptoAttribute {
        let key = SdesKey::from_material(suite, &vec![byte; suite.material_len()])
            .expect("material of the right length");
        CryptoAttribute::new(tag, key)
    }

    fn local() -> SipLocal {
        SipLocal {
            rtp: SocketAddr::new(ip4(192, 0, 2, 10), 30000),
            rtcp_port: 30001,
            crypto: our_key(1, DEFAULT_SDES_SUITE, 7),
        }
    }

    /// Printing and parsing again gives the same description.
    fn round_trip(sdp: &SessionDescription) -> String {
        let text = sdp.to_string();
        assert_eq!(&parse(&text), sdp, "round trip changed\n{text}");
        text
    }

    fn answer_to(offer: &str, prefer: &[Codec]) -> (SessionDescription, SipRemote) {
        let key = |theirs: &CryptoAttribute| our_key(theirs.tag, theirs.key.suite, 9);
        match sip_answer(&parse(offer), &local(), prefer, key, SESSION) {
            Ok(a) => a,
            Err(e) => panic!("offer refused: {e}"),
        }
    }

    fn answer_error(offer: &str) -> SdpMediaError {
        let key = |theirs: &CryptoAttribute| our_key(theirs.tag, theirs.key.suite, 9);
        match sip_answer(&parse(offer), &local(), &[], key, SESSION) {
            Ok((sdp, _)) => panic!("offer accepted:\n{sdp}"),
            Err(e) => e,
        }
    }

    fn only_media(sdp: &SessionDescription) -> &MediaDescription {
        let [m] = &sdp.media[..] else {
            panic!("one m-line expected, got {}", sdp.media.len())
        };
        m
    }

    fn codecs(remote: &SipRemote) -> Vec<(u8, Codec)> {
        remote
            .codecs
            .audio
            .iter()
            .map(|f| (f.pt, f.codec))
            .collect()
    }

    fn fmt_list(m: &MediaDescription) -> Vec<u8> {
        m.payload_types().iter().map(|p| p.get()).collect()
    }

    fn audio_offer(m_line: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=- 5 5 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             {m_line}\r\n{extra}"
        )
    }

    // --- offers ----------------------------------------------------------------------------

    #[test]
    fn plain_offer_contents() {
        let offer = sip_offer(&local(), &[], SrtpPolicy::Plain, SESSION);
        let text = round_trip(&offer);
        let sdp = parse(&text);
        assert_eq!(sdp.origin.session_id, "77");
        assert_eq!(sdp.origin.session_version, 1);
        assert_eq!(
            sdp.connection_of(0).and_then(|c| c.address.ip()),
            Some(ip4(192, 0, 2, 10))
        );
        let m = only_media(&sdp);
        assert_eq!(m.media_type, MediaType::Audio);
        assert_eq!(m.port, 30000);
        assert_eq!(m.proto, Proto::RtpAvp);
        assert_eq!(fmt_list(m), [111, 9, 0, 8, 101]);
        assert_eq!(
            m.codec(pt(111)),
            Some(sdp::Codec::opus().with_fmtp("minptime=10;useinbandfec=1"))
        );
        assert_eq!(m.codec(pt(9)), Some(sdp::Codec::g722()));
        assert_eq!(m.codec(pt(0)), Some(sdp::Codec::pcmu()));
        assert_eq!(m.codec(pt(8)), Some(sdp::Codec::pcma()));
        assert_eq!(m.codec(pt(101)), Some(sdp::Codec::telephone_event()));
        assert_eq!(m.fmtp(pt(101)), Some("0-16"));
        assert!(
            m.rtpmap(pt(0)).is_some(),
            "rtpmap written for static types too"
        );
        assert_eq!(
            m.rtcp(),
            Some(&Rtcp {
                port: 30001,
                connection: None
            })
        );
        assert!(!m.rtcp_mux());
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(m.direction(), Some(sdp::Direction::SendRecv));
        assert_eq!(m.crypto().count(), 0);
        assert!(!text.contains("a=crypto"));
        for line in [
            "m=audio 30000 RTP/AVP 111 9 0 8 101\r\n",
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=fmtp:111 minptime=10;useinbandfec=1\r\n",
            "a=rtpmap:9 G722/8000\r\n",
            "a=rtpmap:101 telephone-event/8000\r\n",
            "a=fmtp:101 0-16\r\n",
            "a=rtcp:30001\r\n",
            "a=ptime:20\r\n",
            "a=sendrecv\r\n",
            "c=IN IP4 192.0.2.10\r\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn offer_puts_the_webrtc_codecs_first() {
        let offer = sip_offer(
            &local(),
            &[Codec::Pcma, Codec::Opus, Codec::Pcma],
            SrtpPolicy::Plain,
            SESSION,
        );
        assert_eq!(fmt_list(only_media(&offer)), [8, 111, 9, 0, 101]);
        let offer = sip_offer(&local(), &[Codec::Opus], SrtpPolicy::Plain, SESSION);
        assert_eq!(fmt_list(only_media(&offer)), [111, 9, 0, 8, 101]);
    }

    #[test]
    fn srtp_offer_carries_our_key() {
        let local = local();
        let offer = sip_offer(&local, &[Codec::Pcmu], SrtpPolicy::Offer, SESSION);
        let text = round_trip(&offer);
        let sdp = parse(&text);
        let m = only_media(&sdp);
        assert_eq!(m.proto, Proto::RtpSavp);
        let lines: Vec<&Crypto> = m.crypto().collect();
        let [line] = lines[..] else {
            panic!("one a=crypto expected")
        };
        let parsed = crypto_attribute(line).expect("our own line parses");
        assert_eq!(parsed, local.crypto);
        assert!(text.contains(&format!("a=crypto:{}\r\n", local.crypto.to_value())));
        assert!(text.contains("m=audio 30000 RTP/SAVP 0 111 9 8 101\r\n"));
    }

    // --- answering offers ------------------------------------------------------------------

    #[test]
    fn answers_a_baresip_offer() {
        let (answer, remote) = answer_to(BARESIP_OFFER, &[]);
        assert_eq!(remote.rtp, SocketAddr::new(ip4(203, 0, 113, 5), 10000));
        assert_eq!(remote.rtcp, None, "no a=rtcp: RTP port + 1");
        assert!(!remote.rtcp_mux);
        assert!(remote.crypto.is_none());
        assert_eq!(codecs(&remote), [(0, Codec::Pcmu), (8, Codec::Pcma)]);
        assert_eq!(
            remote.codecs.telephone_event,
            Some(TelephoneEventFormat {
                pt: 101,
                clock: 8000
            })
        );
        assert_eq!(remote.local_direction, LegDirection::SendRecv);

        let text = round_trip(&answer);
        assert_eq!(answer.origin.session_id, "77");
        let m = only_media(&answer);
        assert_eq!(m.port, 30000);
        assert_eq!(m.proto, Proto::RtpAvp);
        assert_eq!(fmt_list(m), [0, 8, 101]);
        assert_eq!(m.direction(), Some(sdp::Direction::SendRecv));
        assert_eq!(m.rtcp().map(|r| r.port), Some(30001));
        assert_eq!(m.crypto().count(), 0);
        assert!(text.contains("c=IN IP4 192.0.2.10\r\n"));
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
    }

    #[test]
    fn answer_prefers_the_webrtc_codec() {
        let offer = audio_offer("m=audio 4000 RTP/AVP 8 0", "a=sendrecv\r\n");
        let (answer, remote) = answer_to(&offer, &[Codec::Pcmu]);
        assert_eq!(codecs(&remote), [(0, Codec::Pcmu), (8, Codec::Pcma)]);
        assert_eq!(fmt_list(only_media(&answer)), [0, 8]);
        assert_eq!(remote.codecs.telephone_event, None);
        assert!(!answer.to_string().contains("telephone-event"));

        // Without a preference the offerer's order stands.
        let (answer, remote) = answer_to(&offer, &[]);
        assert_eq!(codecs(&remote), [(8, Codec::Pcma), (0, Codec::Pcmu)]);
        assert_eq!(fmt_list(only_media(&answer)), [8, 0]);
    }

    #[test]
    fn answer_keeps_the_offers_payload_type_numbers() {
        let offer = audio_offer(
            "m=audio 4000 RTP/AVP 9 96 97 100",
            "a=rtpmap:96 opus/48000/2\r\n\
             a=fmtp:96 useinbandfec=0\r\n\
             a=rtpmap:97 iLBC/8000\r\n\
             a=rtpmap:100 telephone-event/8000\r\n\
             a=fmtp:100 0-15\r\n",
        );
        let (answer, remote) = answer_to(&offer, &[Codec::Opus]);
        assert_eq!(codecs(&remote), [(96, Codec::Opus), (9, Codec::G722)]);
        assert_eq!(
            remote.codecs.telephone_event,
            Some(TelephoneEventFormat {
                pt: 100,
                clock: 8000
            })
        );
        let m = only_media(&answer);
        assert_eq!(fmt_list(m), [96, 9, 100]);
        // The fmtp we write is ours: it says what we receive.
        assert_eq!(m.fmtp(pt(96)), Some(OPUS_FMTP));
        round_trip(&answer);
    }

    #[test]
    fn answers_an_asterisk_sdes_offer_with_the_first_usable_line() {
        let offer = asterisk_offer();
        let (answer, remote) = answer_to(&offer, &[]);
        let theirs = remote.crypto.as_ref().expect("a crypto line was chosen");
        assert_eq!(theirs.tag, 2);
        assert_eq!(theirs.key.suite, SdesSuite::AesCm128HmacSha1_80);
        assert_eq!(
            codecs(&remote),
            [(8, Codec::Pcma), (0, Codec::Pcmu), (9, Codec::G722)]
        );

        let text = round_trip(&answer);
        let m = only_media(&answer);
        assert_eq!(m.proto, Proto::RtpSavp);
        let lines: Vec<&Crypto> = m.crypto().collect();
        let [line] = lines[..] else {
            panic!("one a=crypto expected in\n{text}")
        };
        let ours = crypto_attribute(line).expect("our line parses");
        assert_eq!(ours, our_key(2, SdesSuite::AesCm128HmacSha1_80, 9));
        assert!(!text.contains("AES_192"));
        assert!(!text.contains(KEY_128), "their key must not be echoed");
    }

    #[test]
    fn two_step_answer_with_the_bridges_key() {
        let offer = parse(&asterisk_offer());
        let local = local();
        let remote = sip_remote_from_offer(&offer, &local, &[Codec::G722]).expect("usable");
        assert_eq!(
            remote.codecs.audio.first().map(|f| f.codec),
            Some(Codec::G722)
        );
        // What Bridge::set_sip_remote returns: the tag and suite of their line, our key.
        let bridge_key = our_key(2, SdesSuite::AesCm128HmacSha1_80, 3);
        let answer =
            build_answer(&offer, &local, &remote, Some(&bridge_key), SESSION).expect("answer");
        let m = only_media(&answer);
        assert_eq!(fmt_list(m), [9, 8, 0, 101]);
        let line = m.crypto().next().expect("a=crypto");
        assert_eq!(crypto_attribute(line).ok(), Some(bridge_key));

        // A missing or mismatched key is our bug: 500.
        let e = build_answer(&offer, &local, &remote, None, SESSION).expect_err("no key");
        assert!(matches!(e, SdpMediaError::MissingAnswerKey));
        assert_eq!(e.status(), Some(500));
        let wrong = our_key(2, SdesSuite::AeadAes128Gcm, 3);
        let e = build_answer(&offer, &local, &remote, Some(&wrong), SESSION).expect_err("suite");
        assert!(matches!(e, SdpMediaError::AnswerKeySuite { .. }));
    }

    #[test]
    fn sdes_offer_without_a_usable_line_is_488() {
        let offer = audio_offer(
            "m=audio 4000 RTP/SAVP 0",
            &format!(
                "a=crypto:1 F8_128_HMAC_SHA1_80 inline:{KEY_128}\r\n\
                 a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}|2^20|1:4\r\n\
                 a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128} UNENCRYPTED_SRTP\r\n\
                 a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\r\n"
            ),
        );
        let e = answer_error(&offer);
        assert!(matches!(e, SdpMediaError::NoUsableCrypto), "{e:?}");
        assert_eq!(e.status(), Some(488));
        assert_eq!(e.warning().map(|w| w.0), Some(306));
        assert!(e.to_string().starts_with("488"));

        let e = answer_error(&audio_offer("m=audio 4000 RTP/SAVP 0", ""));
        assert!(matches!(e, SdpMediaError::NoUsableCrypto), "{e:?}");
    }

    #[test]
    fn g729_only_offer_is_488() {
        let e = answer_error(&audio_offer(
            "m=audio 4000 RTP/AVP 18 101",
            "a=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\n",
        ));
        assert!(matches!(e, SdpMediaError::NoCommonCodec), "{e:?}");
        assert_eq!(e.status(), Some(488));
        assert_eq!(e.warning(), Some((305, "Incompatible media format")));
        assert!(e.to_string().contains("488"));
    }

    #[test]
    fn video_is_rejected_with_port_zero() {
        let offer = audio_offer(
            "m=audio 4000 RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/8000\r\n\
             m=video 4002 RTP/AVP 96 97\r\n\
             a=rtpmap:96 H264/90000\r\n\
             a=rtpmap:97 VP8/90000\r\n",
        );
        let (answer, remote) = answer_to(&offer, &[]);
        assert_eq!(remote.rtp.port(), 4000);
        let text = round_trip(&answer);
        let [audio, video] = &answer.media[..] else {
            panic!("two m-lines expected in\n{text}")
        };
        assert_eq!(audio.port, 30000);
        assert_eq!(video.media_type, MediaType::Video);
        assert_eq!(video.port, 0);
        assert!(video.is_rejected());
        assert!(text.contains("m=video 0 RTP/AVP 96\r\n"));

        // Video first, audio second: the audio one is still found and the order kept.
        let offer = audio_offer(
            "m=video 4002 RTP/AVP 96",
            "a=rtpmap:96 H264/90000\r\nm=audio 4000 RTP/AVP 8\r\n",
        );
        let (answer, remote) = answer_to(&offer, &[]);
        assert_eq!(codecs(&remote), [(8, Codec::Pcma)]);
        assert_eq!(
            answer.media.iter().map(|m| m.port).collect::<Vec<_>>(),
            [0, 30000]
        );
    }

    #[test]
    fn offer_on_hold_is_answered_recvonly() {
        let offer = audio_offer("m=audio 4000 RTP/AVP 0", "a=sendonly\r\n");
        let (answer, remote) = answer_to(&offer, &[]);
        assert_eq!(remote.local_direction, LegDirection::RecvOnly);
        assert_eq!(
            only_media(&answer).direction(),
            Some(sdp::Direction::RecvOnly)
        );

        let offer = audio_offer("m=audio 4000 RTP/AVP 0", "a=inactive\r\n");
        let (answer, remote) = answer_to(&offer, &[]);
        assert_eq!(remote.local_direction, LegDirection::Inactive);
        assert_eq!(
            only_media(&answer).direction(),
            Some(sdp::Direction::Inactive)
        );

        // RFC 2543 hold: the unspecified address goes to the bridge as is.
        let offer = "v=0\r\no=- 5 6 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 0\r\n";
        let (_, remote) = answer_to(offer, &[]);
        assert!(remote.rtp.ip().is_unspecified());
        assert_eq!(remote.rtp.port(), 4000);
    }

    #[test]
    fn offer_with_rtcp_mux_and_rtcp_address() {
        let offer = audio_offer("m=audio 4000 RTP/AVP 0", "a=rtcp-mux\r\na=rtcp:4000\r\n");
        let (answer, remote) = answer_to(&offer, &[]);
        assert!(remote.rtcp_mux);
        assert_eq!(remote.rtcp, None);
        let m = only_media(&answer);
        assert!(m.rtcp_mux());
        assert!(m.rtcp().is_none(), "no a=rtcp with rtcp-mux");

        let offer = audio_offer(
            "m=audio 4000 RTP/AVP 0",
            "c=IN IP4 198.51.100.44\r\na=rtcp:5001 IN IP4 198.51.100.45\r\n",
        );
        let (_, remote) = answer_to(&offer, &[]);
        assert!(!remote.rtcp_mux);
        assert_eq!(remote.rtp, SocketAddr::new(ip4(198, 51, 100, 44), 4000));
        assert_eq!(
            remote.rtcp,
            Some(SocketAddr::new(ip4(198, 51, 100, 45), 5001))
        );
    }

    #[test]
    fn unusable_offers_are_errors_not_panics() {
        let cases = [
            // No c= anywhere.
            "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
            // IPv6 toward our IPv4 address.
            "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\n",
            // DTLS-SRTP (WebRTC) profile.
            "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
            // Audio disabled, only video.
            "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             m=audio 0 RTP/AVP 0\r\nm=video 5000 RTP/AVP 96\r\n",
            // No media at all.
            "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nt=0 0\r\n",
            // A dynamic type nobody mapped; a mono "opus".
            "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 96 97\r\na=rtpmap:97 opus/48000\r\n",
            // Not host:port (a hostname in c=).
            "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\n",
            // Port 65535 without a=rtcp: no RTCP port.
            "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             m=audio 65535 RTP/AVP 0\r\n",
        ];
        for offer in cases {
            let e = answer_error(offer);
            assert_eq!(e.status(), Some(488), "{e} for\n{offer}");
            assert!(e.warning().is_some());
        }
    }

    // --- answers to our offer --------------------------------------------------------------

    fn our_offer() -> SessionDescription {
        sip_offer(&local(), &[Codec::Opus], SrtpPolicy::Plain, SESSION)
    }

    fn their_answer(media: &str) -> SessionDescription {
        parse(&format!(
            "v=0\r\no=- 900 900 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n\
             t=0 0\r\n{media}"
        ))
    }

    fn remote_from(answer: &SessionDescription, offered: &SessionDescription) -> SipRemote {
        match sip_remote_from_answer(answer, offered) {
            Ok(r) => r,
            Err(e) => panic!("answer refused: {e}"),
        }
    }

    #[test]
    fn reads_a_plain_answer() {
        let offered = our_offer();
        let answer = their_answer(
            "m=audio 40000 RTP/AVP 8 0 101\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-15\r\n\
             a=sendrecv\r\n",
        );
        let remote = remote_from(&answer, &offered);
        assert_eq!(remote.rtp, SocketAddr::new(ip4(198, 51, 100, 7), 40000));
        assert_eq!(remote.rtcp, None);
        assert!(!remote.rtcp_mux);
        assert!(remote.crypto.is_none());
        assert_eq!(codecs(&remote), [(8, Codec::Pcma), (0, Codec::Pcmu)]);
        assert_eq!(
            remote.codecs.telephone_event,
            Some(TelephoneEventFormat {
                pt: 101,
                clock: 8000
            })
        );
        assert_eq!(remote.local_direction, LegDirection::SendRecv);
    }

    #[test]
    fn answer_directions_become_ours() {
        let offered = our_offer();
        for (theirs, ours) in [
            ("sendonly", LegDirection::RecvOnly),
            ("recvonly", LegDirection::SendOnly),
            ("inactive", LegDirection::Inactive),
            ("sendrecv", LegDirection::SendRecv),
        ] {
            let answer = their_answer(&format!("m=audio 40000 RTP/AVP 0\r\na={theirs}\r\n"));
            assert_eq!(
                remote_from(&answer, &offered).local_direction,
                ours,
                "{theirs}"
            );
        }
        // Our own hold offer answered recvonly: we only send.
        let held = reoffer_with_direction(&offered, sdp::Direction::SendOnly);
        let answer = their_answer("m=audio 40000 RTP/AVP 0\r\na=recvonly\r\n");
        assert_eq!(
            remote_from(&answer, &held).local_direction,
            LegDirection::SendOnly
        );
    }

    #[test]
    fn answer_with_unspecified_address_and_media_level_c() {
        let offered = our_offer();
        let answer = parse(
            "v=0\r\no=- 900 901 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
             m=audio 40000 RTP/AVP 0\r\n",
        );
        let remote = remote_from(&answer, &offered);
        assert!(remote.rtp.ip().is_unspecified());
        assert_eq!(remote.rtp.port(), 40000);

        let answer = their_answer("m=audio 40000 RTP/AVP 0\r\nc=IN IP4 198.51.100.99\r\n");
        assert_eq!(
            remote_from(&answer, &offered).rtp,
            SocketAddr::new(ip4(198, 51, 100, 99), 40000)
        );
    }

    #[test]
    fn answer_rtcp_attributes() {
        let offered = our_offer();
        let answer =
            their_answer("m=audio 40000 RTP/AVP 0\r\na=rtcp:40005 IN IP4 198.51.100.8\r\n");
        let remote = remote_from(&answer, &offered);
        assert_eq!(
            remote.rtcp,
            Some(SocketAddr::new(ip4(198, 51, 100, 8), 40005))
        );
        let answer = their_answer("m=audio 40000 RTP/AVP 0\r\na=rtcp:40009\r\n");
        assert_eq!(
            remote_from(&answer, &offered).rtcp,
            Some(SocketAddr::new(ip4(198, 51, 100, 7), 40009))
        );

        // rtcp-mux counts only when we offered it (RFC 5761 §5.1.1).
        let answer = their_answer("m=audio 40000 RTP/AVP 0\r\na=rtcp-mux\r\n");
        let remote = remote_from(&answer, &offered);
        assert!(!remote.rtcp_mux);
        let mut muxed = offered.clone();
        if let Some(m) = muxed.media.first_mut() {
            m.attributes.push(Attribute::RtcpMux);
        }
        let remote = remote_from(&answer, &muxed);
        assert!(remote.rtcp_mux);
        assert_eq!(remote.rtcp, None);
    }

    #[test]
    fn sdes_answer_to_our_sdes_offer() {
        let local = local();
        let offered = sip_offer(&local, &[], SrtpPolicy::Offer, SESSION);
        let theirs = our_key(1, DEFAULT_SDES_SUITE, 5);
        let answer = their_answer(&format!(
            "m=audio 40000 RTP/SAVP 0\r\na=crypto:{}\r\n",
            theirs.to_value()
        ));
        let remote = remote_from(&answer, &offered);
        assert_eq!(remote.crypto, Some(theirs));

        // No crypto, or a tag we did not offer: unusable.
        let answer = their_answer("m=audio 40000 RTP/SAVP 0\r\n");
        let e = sip_remote_from_answer(&answer, &offered).expect_err("no crypto");
        assert!(matches!(e, SdpMediaError::BadAnswer(_)), "{e:?}");
        assert_eq!(e.status(), None);
        let answer = their_answer(&format!(
            "m=audio 40000 RTP/SAVP 0\r\na=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128}\r\n"
        ));
        assert!(sip_remote_from_answer(&answer, &offered).is_err());
        // Right tag and suite but a key we cannot use.
        let answer = their_answer(
            "m=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\r\n",
        );
        let e = sip_remote_from_answer(&answer, &offered).expect_err("short key");
        assert!(matches!(e, SdpMediaError::BadAnswerCrypto(_)), "{e:?}");
    }

    #[test]
    fn bad_answers_are_errors() {
        let offered = our_offer();
        let e = sip_remote_from_answer(&their_answer("m=audio 0 RTP/AVP 0\r\n"), &offered)
            .expect_err("port 0");
        assert!(matches!(e, SdpMediaError::Rejected), "{e:?}");
        assert_eq!(e.status(), None);
        // A codec we did not offer.
        let e = sip_remote_from_answer(
            &their_answer("m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"),
            &offered,
        )
        .expect_err("G729");
        assert!(matches!(e, SdpMediaError::BadAnswer(_)), "{e:?}");
        // Only telephone-event.
        assert!(
            sip_remote_from_answer(
                &their_answer("m=audio 40000 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n"),
                &offered,
            )
            .is_err()
        );
        // Two m-lines for our one.
        assert!(
            sip_remote_from_answer(
                &their_answer("m=audio 40000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n"),
                &offered,
            )
            .is_err()
        );
        // No m-line.
        assert!(sip_remote_from_answer(&their_answer(""), &offered).is_err());
    }

    #[test]
    fn offer_answer_round_trip_through_text() {
        // Our offer, as text, answered by our own answerer (as a SIP peer would), read back.
        let local = local();
        let offer =
            parse(&sip_offer(&local, &[Codec::Pcmu], SrtpPolicy::Offer, SESSION).to_string());
        let peer = SipLocal {
            rtp: SocketAddr::new(ip4(198, 51, 100, 7), 40000),
            rtcp_port: 40001,
            crypto: our_key(1, DEFAULT_SDES_SUITE, 4),
        };
        let key = |theirs: &CryptoAttribute| our_key(theirs.tag, theirs.key.suite, 4);
        let (answer, peer_view) = sip_answer(
            &offer,
            &peer,
            &[Codec::G722],
            key,
            SessionVersion { id: 9, version: 9 },
        )
        .expect("peer accepts");
        assert_eq!(peer_view.crypto.as_ref(), Some(&local.crypto));
        assert_eq!(peer_view.rtp, local.rtp);
        assert_eq!(peer_view.rtcp, Some(SocketAddr::new(local.rtp.ip(), 30001)));
        let answer = parse(&answer.to_string());
        let remote = remote_from(&answer, &offer);
        assert_eq!(remote.rtp, peer.rtp);
        assert_eq!(remote.rtcp, Some(SocketAddr::new(peer.rtp.ip(), 40001)));
        assert_eq!(remote.crypto, Some(peer.crypto));
        assert_eq!(
            codecs(&remote),
            [
                (9, Codec::G722),
                (0, Codec::Pcmu),
                (111, Codec::Opus),
                (8, Codec::Pcma)
            ]
        );
        assert_eq!(remote.codecs.telephone_event.map(|t| t.pt), Some(101));
    }

    #[test]
    fn reoffer_bumps_the_version_and_sets_the_direction() {
        let offer = our_offer();
        let held = reoffer_with_direction(&offer, sdp::Direction::SendOnly);
        assert_eq!(held.origin.session_version, 2);
        assert_eq!(held.origin.session_id, offer.origin.session_id);
        let text = round_trip(&held);
        let m = only_media(&held);
        assert_eq!(m.direction(), Some(sdp::Direction::SendOnly));
        assert_eq!(m.formats, only_media(&offer).formats);
        assert_eq!(m.rtcp(), only_media(&offer).rtcp());
        assert!(text.contains("a=sendonly\r\n") && !text.contains("a=sendrecv"));
        let resumed = reoffer_with_direction(&held, sdp::Direction::SendRecv);
        assert_eq!(resumed.origin.session_version, 3);
        assert_eq!(
            only_media(&resumed).direction(),
            Some(sdp::Direction::SendRecv)
        );
    }

    #[test]
    fn codec_mapping() {
        for c in SUPPORTED {
            let pc = payload_codec(c);
            assert_eq!(media_codec(&pc.codec), Some(c));
        }
        assert_eq!(media_codec(&sdp::Codec::new("opus", 48000, 1)), None);
        assert_eq!(media_codec(&sdp::Codec::new("PCMU", 8000, 2)), None);
        assert_eq!(
            media_codec(&sdp::Codec::new("pcma", 8000, 1)),
            Some(Codec::Pcma)
        );
        assert_eq!(media_codec(&sdp::Codec::new("G729", 8000, 1)), None);
        for d in [
            LegDirection::SendRecv,
            LegDirection::SendOnly,
            LegDirection::RecvOnly,
            LegDirection::Inactive,
        ] {
            assert_eq!(leg_direction(sdp_direction(d)), d);
        }
    }
}
