//! The Jingle ⇄ media conversions of the call layer: what a Jingle `<description/>` and ICE-UDP
//! `<transport/>` (the wire model of [`crate::xmpp::jingle`]) mean to the WebRTC leg and the
//! bridge ([`crate::media::webrtc`], [`crate::media::bridge`]), and back.
//!
//! Owns: the peer's ICE/DTLS parameters ([`remote_description`], [`media_candidate`]), our
//! transport ([`transport_from_local`]), the codecs a description offers ([`leg_codecs`], with
//! the RFC 3551 static-id names and default clock rates), our offer and answer descriptions
//! ([`offer_description`], [`answer_description`], [`DEFAULT_OFFER_CODECS`],
//! [`DEFAULT_TELEPHONE_EVENT`]), `senders` ⇄ media direction by role (PROTOCOLS.md §3.2), and
//! the mapping of the Jingle `setup` and candidate `type` values onto the media types.
//!
//! It lives here, not in `xmpp/`, so that the XMPP side stays free of media types and `media/`
//! free of XMPP ones. Pure: no I/O, no clock, no session state.

use std::net::{IpAddr, SocketAddr};

use crate::media::bridge::{AudioFormat, Direction, LegCodecs, TelephoneEventFormat};
use crate::media::codec::Codec;
use crate::media::webrtc::{
    Candidate, CandidateKind, Fingerprint, HashFunction, LocalDescription, RemoteDescription, Setup,
};
use crate::xmpp::jingle::{
    self, CandidateType, DtlsFingerprint, IceUdpTransport, JingleCandidate, JingleError, Party,
    PayloadType, RtpDescription, Senders, Source,
};

// The XEP-0320 `setup` and XEP-0176 candidate `type` values map one to one onto the media
// types (RFC 4145 §4, RFC 8445 §5.1.1); the wire model keeps its own copies so that `xmpp/`
// needs nothing from `media/`.
impl From<jingle::Setup> for Setup {
    fn from(s: jingle::Setup) -> Setup {
        match s {
            jingle::Setup::Active => Setup::Active,
            jingle::Setup::Passive => Setup::Passive,
            jingle::Setup::Actpass => Setup::Actpass,
            jingle::Setup::Holdconn => Setup::Holdconn,
        }
    }
}

impl From<Setup> for jingle::Setup {
    fn from(s: Setup) -> jingle::Setup {
        match s {
            Setup::Active => jingle::Setup::Active,
            Setup::Passive => jingle::Setup::Passive,
            Setup::Actpass => jingle::Setup::Actpass,
            Setup::Holdconn => jingle::Setup::Holdconn,
        }
    }
}

impl From<CandidateType> for CandidateKind {
    fn from(t: CandidateType) -> CandidateKind {
        match t {
            CandidateType::Host => CandidateKind::Host,
            CandidateType::ServerReflexive => CandidateKind::ServerReflexive,
            CandidateType::PeerReflexive => CandidateKind::PeerReflexive,
            CandidateType::Relay => CandidateKind::Relay,
        }
    }
}

impl From<CandidateKind> for CandidateType {
    fn from(k: CandidateKind) -> CandidateType {
        match k {
            CandidateKind::Host => CandidateType::Host,
            CandidateKind::ServerReflexive => CandidateType::ServerReflexive,
            CandidateKind::PeerReflexive => CandidateType::PeerReflexive,
            CandidateKind::Relay => CandidateType::Relay,
        }
    }
}

/// Our local media direction (what *we* do on the Jingle leg) for a `senders` value, given our
/// role in the session. `senders` names parties, SDP directions are from the author's point of
/// view, so the mapping depends on who we are (PROTOCOLS.md §3.2, as Conversations does it).
pub fn senders_to_direction(senders: Senders, us: Party) -> Direction {
    match (senders, us) {
        (Senders::Both, _) => Direction::SendRecv,
        (Senders::None, _) => Direction::Inactive,
        (Senders::Initiator, Party::Initiator) | (Senders::Responder, Party::Responder) => {
            Direction::SendOnly
        }
        (Senders::Initiator, Party::Responder) | (Senders::Responder, Party::Initiator) => {
            Direction::RecvOnly
        }
    }
}

/// The inverse of [`senders_to_direction`]: the `senders` that announces our local direction.
pub fn direction_to_senders(local: Direction, us: Party) -> Senders {
    let other = match us {
        Party::Initiator => Senders::Responder,
        Party::Responder => Senders::Initiator,
    };
    let me = match us {
        Party::Initiator => Senders::Initiator,
        Party::Responder => Senders::Responder,
    };
    match local {
        Direction::SendRecv => Senders::Both,
        Direction::Inactive => Senders::None,
        Direction::SendOnly => me,
        Direction::RecvOnly => other,
    }
}

/// One Jingle candidate as a media candidate: UDP only (the WebRTC leg gathers and checks UDP
/// only), with a literal IP (mDNS `.local` names cannot be resolved here). `None` otherwise, so
/// trickled transport-info candidates can be filtered the same way.
pub fn media_candidate(c: &JingleCandidate) -> Option<Candidate> {
    if !c.protocol.eq_ignore_ascii_case("udp") {
        return None;
    }
    let ip: IpAddr = c.ip.parse().ok()?;
    let related = match (&c.rel_addr, c.rel_port) {
        (Some(a), Some(p)) => a.parse::<IpAddr>().ok().map(|a| SocketAddr::new(a, p)),
        _ => None,
    };
    Some(Candidate {
        foundation: c.foundation.clone(),
        component: c.component,
        ip,
        port: c.port,
        priority: c.priority,
        kind: c.kind.into(),
        related,
    })
}

/// The peer's ICE and DTLS parameters for the WebRTC leg. Fingerprints with hash functions we
/// cannot check (sha-1, md5) are skipped; at least one usable one is required. `setup` comes
/// from the first fingerprint that has it; it is required, since guessing a DTLS role wrong
/// fails the call later and less legibly.
pub fn remote_description(transport: &IceUdpTransport) -> Result<RemoteDescription, JingleError> {
    let mut fingerprints = Vec::new();
    let mut first_error = None;
    for f in &transport.fingerprints {
        if HashFunction::parse(&f.hash).is_err() {
            continue;
        }
        match Fingerprint::parse(&f.hash, &f.value) {
            Ok(fp) => fingerprints.push(fp),
            Err(e) => {
                first_error.get_or_insert_with(|| JingleError::Fingerprint(e.to_string()));
            }
        }
    }
    if fingerprints.is_empty() {
        return Err(first_error.unwrap_or(JingleError::NoFingerprint));
    }
    let setup = transport
        .fingerprints
        .iter()
        .find_map(|f| f.setup.map(Setup::from))
        .ok_or(JingleError::MissingAttribute {
            element: "fingerprint",
            attribute: "setup",
        })?;
    Ok(RemoteDescription {
        ufrag: transport.ufrag.clone(),
        pwd: transport.pwd.clone(),
        fingerprints,
        setup,
        candidates: transport
            .candidates
            .iter()
            .filter_map(media_candidate)
            .collect(),
    })
}

/// The codecs of an RTP description the bridge can handle, in offer order, plus
/// telephone-event. Static ids without a name use RFC 3551 Table 4 (0 PCMU, 8 PCMA, 9 G722).
/// When several telephone-event formats are offered, the one on the first audio codec's clock
/// wins: the bridge relays events only on the audio clock (RFC 4733 §2.1).
pub fn leg_codecs(desc: &RtpDescription) -> LegCodecs {
    let audio: Vec<AudioFormat> = desc
        .payload_types
        .iter()
        .filter_map(|p| {
            let name = effective_name(p)?;
            let codec = Codec::from_rtpmap(name, effective_clockrate(p, name))?;
            Some(AudioFormat { pt: p.id, codec })
        })
        .collect();
    let events: Vec<TelephoneEventFormat> = desc
        .payload_types
        .iter()
        .filter(|p| p.is_telephone_event())
        .map(|p| TelephoneEventFormat {
            pt: p.id,
            clock: p.clockrate.unwrap_or(8_000),
        })
        .collect();
    let audio_clock = audio.first().map(|a| a.codec.clock_rate());
    let preferred = events
        .iter()
        .position(|e| Some(e.clock) == audio_clock)
        .unwrap_or(0);
    let telephone_event = events.get(preferred).copied();
    let other_telephone_events = (events.iter().enumerate())
        .filter(|(i, _)| *i != preferred)
        .map(|(_, e)| *e)
        .collect();
    LegCodecs {
        audio,
        telephone_event,
        other_telephone_events,
    }
}

/// The encoding name, falling back to the RFC 3551 Table 4 name for static ids we know.
fn effective_name(p: &PayloadType) -> Option<&str> {
    p.name.as_deref().or(match p.id {
        0 => Some("PCMU"),
        8 => Some("PCMA"),
        9 => Some("G722"),
        _ => None,
    })
}

/// The clock rate, falling back to the codec's own (8000 for the static ids and for
/// telephone-event, 48000 for Opus, RFC 7587 §4.1) when the peer left it out.
fn effective_clockrate(p: &PayloadType, name: &str) -> u32 {
    p.clockrate.unwrap_or(if name.eq_ignore_ascii_case("opus") {
        48_000
    } else {
        8_000
    })
}

/// Our transport for the WebRTC leg: ufrag/pwd, the sha-256 fingerprint with our `setup`, and
/// our candidates with generated NCName ids `c1`, `c2`, ….
pub fn transport_from_local(local: &LocalDescription) -> IceUdpTransport {
    IceUdpTransport {
        ufrag: local.ufrag.clone(),
        pwd: local.pwd.clone(),
        fingerprints: vec![DtlsFingerprint {
            hash: HashFunction::Sha256.as_str().to_owned(),
            setup: Some(local.setup.into()),
            value: local.fingerprint_sha256.clone(),
        }],
        candidates: local
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| JingleCandidate {
                component: c.component,
                foundation: c.foundation.clone(),
                generation: 0,
                id: format!("c{}", i + 1),
                ip: c.ip.to_string(),
                port: c.port,
                priority: c.priority,
                protocol: "udp".to_owned(),
                kind: c.kind.into(),
                network: Some(0),
                rel_addr: c.related.map(|r| r.ip().to_string()),
                rel_port: c.related.map(|r| r.port()),
                tcptype: None,
            })
            .collect(),
        rtcp_mux: false,
        other: Vec::new(),
    }
}

fn our_source(ssrc: u32, cname: &str) -> Source {
    Source {
        ssrc,
        parameters: vec![("cname".to_owned(), cname.to_owned())],
    }
}

/// Our answer's description: the offered payload types whose ids are in `chosen` (audio and
/// telephone-event), in the offer's order and with the offer's ids and parameters (so Opus
/// keeps its fmtp), rtcp-mux echoed, and one source of ours. No rtcp-fb or rtp-hdrext is
/// echoed: we implement none, and XEP-0293/0294 only let an answer echo accepted ones.
pub fn answer_description(
    offer: &RtpDescription,
    chosen: &LegCodecs,
    ssrc: u32,
    cname: &str,
) -> RtpDescription {
    let wanted = |id: u8| {
        chosen.audio.iter().any(|a| a.pt == id)
            || chosen.telephone_event.is_some_and(|t| t.pt == id)
    };
    let mut d = RtpDescription::new(offer.media.clone());
    d.payload_types = offer
        .payload_types
        .iter()
        .filter(|p| wanted(p.id))
        .map(|p| PayloadType {
            rtcp_fb: Vec::new(),
            ..p.clone()
        })
        .collect();
    d.rtcp_mux = offer.rtcp_mux;
    d.sources = vec![our_source(ssrc, cname)];
    d
}

/// The codecs we offer on the WebRTC leg when a SIP caller reaches an XMPP user, preferred
/// first: Opus (what every WebRTC client has), then the SIP side's usual codecs so a shared one
/// spares transcoding.
pub const DEFAULT_OFFER_CODECS: [(u8, Codec); 4] = [
    (111, Codec::Opus),
    (9, Codec::G722),
    (0, Codec::Pcmu),
    (8, Codec::Pcma),
];

/// telephone-event 126/8000 (RFC 4733), as browsers number it.
pub const DEFAULT_TELEPHONE_EVENT: (u8, u32) = (126, 8_000);

/// Our offer's description for calls we initiate (SIP → XMPP): `codecs` in the given order
/// (Opus as 48000/2 with minptime=10 and useinbandfec=1, RFC 7587 §7), telephone-event if
/// given, rtcp-mux (WebRTC requires it) and one source of ours.
pub fn offer_description(
    codecs: &[(u8, Codec)],
    telephone_event: Option<(u8, u32)>,
    ssrc: u32,
    cname: &str,
) -> RtpDescription {
    let mut d = RtpDescription::new("audio");
    for (pt, codec) in codecs {
        let mut p = PayloadType::new(*pt, codec.encoding_name(), codec.clock_rate());
        if *codec == Codec::Opus {
            p.channels = 2;
            p.parameters = vec![
                ("minptime".to_owned(), "10".to_owned()),
                ("useinbandfec".to_owned(), "1".to_owned()),
            ];
        }
        d.payload_types.push(p);
    }
    if let Some((pt, clock)) = telephone_event {
        d.payload_types
            .push(PayloadType::new(pt, "telephone-event", clock));
    }
    d.rtcp_mux = true;
    d.sources = vec![our_source(ssrc, cname)];
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::jingle::Jingle;
    use crate::xmpp::jingle::fixtures::{
        ACCEPT, INITIATE, TRANSPORT_INFO, jingle, mutated_initiates,
    };

    #[test]
    fn transport_info_candidate_converts() {
        let j = jingle(TRANSPORT_INFO);
        let t = j.contents[0].transport.as_ref().expect("transport");
        let c = media_candidate(&t.candidates[0]).expect("udp relay candidate");
        assert_eq!(c.kind, CandidateKind::Relay);
        assert_eq!(c.port, 3478);
        assert_eq!(c.related, Some("192.0.2.10:50000".parse().expect("addr")));
    }

    /// Every attribute of the §2.2 example replaced by garbage or removed, one at a time: the
    /// conversions of whatever still parses must return, never panic.
    #[test]
    fn mutated_offers_convert_without_panic() {
        let mut converted = 0;
        for root in mutated_initiates() {
            for iq in root.children() {
                let Some(Ok(j)) = Jingle::from_iq(iq) else {
                    continue;
                };
                converted += 1;
                for c in &j.contents {
                    if let Some(t) = &c.transport {
                        let _ = remote_description(t);
                    }
                    if let Some(d) = &c.description {
                        let codecs = leg_codecs(d);
                        let _ = answer_description(d, &codecs, 1, "x");
                    }
                }
            }
        }
        assert!(converted > 0);
    }

    #[test]
    fn offer_to_leg_codecs_and_remote_description() {
        let j = jingle(INITIATE);
        let c = &j.contents[0];
        let codecs = leg_codecs(c.description.as_ref().expect("description"));
        assert_eq!(
            codecs.audio,
            [
                AudioFormat {
                    pt: 111,
                    codec: Codec::Opus
                },
                AudioFormat {
                    pt: 9,
                    codec: Codec::G722
                },
                AudioFormat {
                    pt: 0,
                    codec: Codec::Pcmu
                },
            ]
        );
        assert_eq!(
            codecs.telephone_event,
            Some(TelephoneEventFormat {
                pt: 126,
                clock: 8000
            })
        );

        let r = remote_description(c.transport.as_ref().expect("transport")).expect("valid");
        assert_eq!(r.ufrag, "8hhy");
        assert_eq!(r.pwd, "asd88fgpdd777uzjYhagZg");
        assert_eq!(r.setup, Setup::Actpass);
        assert_eq!(r.fingerprints.len(), 1);
        assert_eq!(r.fingerprints[0].hash, HashFunction::Sha256);
        assert_eq!(r.fingerprints[0].value.first(), Some(&0x3D));
        assert_eq!(r.candidates.len(), 2);
        assert_eq!(r.candidates[0].kind, CandidateKind::Host);
        assert_eq!(
            (r.candidates[0].ip, r.candidates[0].port),
            ("10.0.0.5".parse().expect("ip"), 50000)
        );
        assert_eq!(r.candidates[0].related, None);
        assert_eq!(r.candidates[1].kind, CandidateKind::ServerReflexive);
        assert_eq!(
            r.candidates[1].related,
            Some("10.0.0.5:50000".parse().expect("addr"))
        );
    }

    #[test]
    fn remote_description_filters_and_requires() {
        let mut t = jingle(INITIATE).contents[0]
            .transport
            .clone()
            .expect("transport");
        let mut tcp = t.candidates[0].clone();
        tcp.protocol = "tcp".into();
        tcp.tcptype = Some("passive".into());
        let mut mdns = t.candidates[0].clone();
        mdns.ip = "3f1c8e2a.local".into();
        t.candidates.push(tcp);
        t.candidates.push(mdns);
        t.fingerprints.insert(
            0,
            DtlsFingerprint {
                hash: "sha-1".into(),
                setup: None,
                value: "AA:BB".into(),
            },
        );
        let r = remote_description(&t).expect("valid");
        assert_eq!(r.candidates.len(), 2);
        assert_eq!(r.fingerprints.len(), 1);
        assert_eq!(r.setup, Setup::Actpass);

        let mut no_setup = t.clone();
        for f in &mut no_setup.fingerprints {
            f.setup = None;
        }
        assert!(matches!(
            remote_description(&no_setup),
            Err(JingleError::MissingAttribute {
                attribute: "setup",
                ..
            })
        ));
        let mut none = t.clone();
        none.fingerprints.truncate(1);
        assert!(matches!(
            remote_description(&none),
            Err(JingleError::NoFingerprint)
        ));
        let mut bad = t;
        bad.fingerprints = vec![DtlsFingerprint {
            hash: "sha-256".into(),
            setup: Some(jingle::Setup::Active),
            value: "AA:BB".into(),
        }];
        assert!(matches!(
            remote_description(&bad),
            Err(JingleError::Fingerprint(_))
        ));
    }

    #[test]
    fn leg_codecs_static_defaults_and_event_clock() {
        let mut d = RtpDescription::new("audio");
        d.payload_types = vec![
            PayloadType {
                name: None,
                clockrate: None,
                ..PayloadType::new(8, "", 0)
            },
            PayloadType::new(96, "speex", 16000),
            PayloadType::new(101, "telephone-event", 8000),
            PayloadType {
                name: None,
                clockrate: None,
                ..PayloadType::new(0, "", 0)
            },
            PayloadType::new(110, "telephone-event", 48000),
            PayloadType::new(111, "OPUS", 48000),
        ];
        let c = leg_codecs(&d);
        let got: Vec<(u8, Codec)> = c.audio.iter().map(|a| (a.pt, a.codec)).collect();
        assert_eq!(
            got,
            [(8, Codec::Pcma), (0, Codec::Pcmu), (111, Codec::Opus)]
        );
        assert_eq!(
            c.telephone_event,
            Some(TelephoneEventFormat {
                pt: 101,
                clock: 8000
            })
        );
        d.payload_types.rotate_left(5); // opus first now
        assert_eq!(
            leg_codecs(&d).telephone_event,
            Some(TelephoneEventFormat {
                pt: 110,
                clock: 48000
            })
        );
    }

    #[test]
    fn answer_keeps_opus_fmtp_and_offer_order() {
        let j = jingle(INITIATE);
        let offer = j.contents[0].description.clone().expect("description");
        let chosen = LegCodecs {
            audio: vec![AudioFormat {
                pt: 111,
                codec: Codec::Opus,
            }],
            telephone_event: Some(TelephoneEventFormat {
                pt: 126,
                clock: 8000,
            }),
            ..Default::default()
        };
        let a = answer_description(&offer, &chosen, 287_454_020, "gw-7f3a");
        assert_eq!(a.media, "audio");
        let ids: Vec<u8> = a.payload_types.iter().map(|p| p.id).collect();
        assert_eq!(ids, [111, 126]);
        assert_eq!(a.payload_types[0].parameter("minptime"), Some("10"));
        assert_eq!(a.payload_types[0].parameter("useinbandfec"), Some("1"));
        assert_eq!(a.payload_types[0].channels, 2);
        assert!(a.payload_types[0].rtcp_fb.is_empty());
        assert!(a.rtp_hdrext.is_empty());
        assert!(a.rtcp_mux);
        assert_eq!(a.sources.len(), 1);
        assert_eq!(a.sources[0].ssrc, 287_454_020);
        assert_eq!(a.sources[0].cname(), Some("gw-7f3a"));

        // It matches the §2.5 description except for the msid we do not send.
        let expected = jingle(ACCEPT).contents[0]
            .description
            .clone()
            .expect("description");
        assert_eq!(a.payload_types, expected.payload_types);

        let all = answer_description(&offer, &leg_codecs(&offer), 1, "c");
        let ids: Vec<u8> = all.payload_types.iter().map(|p| p.id).collect();
        assert_eq!(ids, [111, 9, 0, 126]);
    }

    #[test]
    fn offer_description_defaults() {
        let d = offer_description(
            &DEFAULT_OFFER_CODECS,
            Some(DEFAULT_TELEPHONE_EVENT),
            7,
            "gw",
        );
        let got: Vec<(u8, Option<&str>, Option<u32>, u8)> = d
            .payload_types
            .iter()
            .map(|p| (p.id, p.name.as_deref(), p.clockrate, p.channels))
            .collect();
        assert_eq!(
            got,
            [
                (111, Some("opus"), Some(48000), 2),
                (9, Some("G722"), Some(8000), 1),
                (0, Some("PCMU"), Some(8000), 1),
                (8, Some("PCMA"), Some(8000), 1),
                (126, Some("telephone-event"), Some(8000), 1),
            ]
        );
        assert_eq!(d.payload_types[0].parameter("minptime"), Some("10"));
        assert_eq!(d.payload_types[0].parameter("useinbandfec"), Some("1"));
        assert!(d.rtcp_mux);
        assert_eq!(d.sources[0].cname(), Some("gw"));
        // What we offer, we can take back.
        let c = leg_codecs(&d);
        assert_eq!(c.audio.len(), 4);
        assert_eq!(c.telephone_event.map(|t| t.pt), Some(126));
        let el = d.to_element();
        assert_eq!(RtpDescription::from_element(&el), Ok(d));
    }

    #[test]
    fn transport_from_local_description() {
        let local = LocalDescription {
            ufrag: "9uB6".into(),
            pwd: "YH75Fviy6338Vbrhrlp8Yh".into(),
            fingerprint_sha256: "D4:C3".into(),
            setup: Setup::Active,
            candidates: vec![
                Candidate {
                    foundation: "1".into(),
                    component: 1,
                    ip: "198.51.100.7".parse().expect("ip"),
                    port: 40000,
                    priority: 2_130_706_431,
                    kind: CandidateKind::Host,
                    related: None,
                },
                Candidate {
                    foundation: "2".into(),
                    component: 1,
                    ip: "203.0.113.1".parse().expect("ip"),
                    port: 40001,
                    priority: 1_694_498_815,
                    kind: CandidateKind::ServerReflexive,
                    related: Some("198.51.100.7:40000".parse().expect("addr")),
                },
            ],
        };
        let t = transport_from_local(&local);
        assert_eq!(t.ufrag, "9uB6");
        assert_eq!(t.fingerprints[0].hash, "sha-256");
        assert_eq!(t.fingerprints[0].setup, Some(jingle::Setup::Active));
        let ids: Vec<&str> = t.candidates.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert_eq!(t.candidates[1].rel_addr.as_deref(), Some("198.51.100.7"));
        assert_eq!(t.candidates[1].rel_port, Some(40000));
        let back: Vec<Candidate> = t.candidates.iter().filter_map(media_candidate).collect();
        assert_eq!(back, local.candidates);

        // A non-NCName id is replaced on output.
        let mut odd = t.clone();
        odd.candidates[1].id = "2 bad".into();
        let el = odd.to_element();
        let ids: Vec<&str> = el
            .children()
            .filter(|c| c.name() == "candidate")
            .filter_map(|c| c.attr("id"))
            .collect();
        assert_eq!(ids, ["c1", "c2"]);
    }

    #[test]
    fn senders_direction_by_role() {
        use Direction::*;
        let table = [
            (Senders::Both, SendRecv, SendRecv),
            (Senders::Initiator, SendOnly, RecvOnly),
            (Senders::Responder, RecvOnly, SendOnly),
            (Senders::None, Inactive, Inactive),
        ];
        for (senders, as_initiator, as_responder) in table {
            assert_eq!(
                senders_to_direction(senders, Party::Initiator),
                as_initiator
            );
            assert_eq!(
                senders_to_direction(senders, Party::Responder),
                as_responder
            );
            assert_eq!(
                direction_to_senders(as_initiator, Party::Initiator),
                senders
            );
            assert_eq!(
                direction_to_senders(as_responder, Party::Responder),
                senders
            );
        }
    }
}
