//! One direction of transcoding: an encoded 20 ms frame of codec A in, an encoded 20 ms frame of
//! codec B out (decode → resample → encode), plus concealment of a missing frame.
//!
//! The call bridge builds one [`Transcoder`] per direction when the legs share no codec (the
//! issue's item 3); all buffers are allocated in [`Transcoder::new`], so a frame costs no
//! allocation on our side (G.722 frames cost one inside `ezk-g722`, see `g722`).
//!
//! Where Opus is on one side, libopus itself runs at the other codec's PCM rate (it encodes from
//! and decodes to 8/16 kHz natively, RFC 6716 §2 and §4), so Opus⇄G.711 and Opus⇄G.722 need no
//! separate resampler: that saves a resampling pass and its delay, and libopus's internal
//! decimation is band-limited to what the narrower codec can carry anyway. The rubato resampler
//! is used between G.722 (16 kHz) and G.711 (8 kHz).
//!
//! Concealment (issue item 4): Opus uses libopus PLC, or the in-band FEC of the next packet when
//! the jitter buffer already holds it. G.711 and G.722 have no PLC of their own; we repeat the
//! last good frame with the fade of ITU-T G.711 Appendix I §I.2.4 (full level for the first
//! 10 ms of a loss, then −20 % per 10 ms, silent from 60 ms on).

use super::g711::Law;
use super::g722::{G722Decoder, G722Encoder};
use super::opus::{OpusConfig, OpusDecoder, OpusEncoder};
use super::resample::Resampler;
use super::{Codec, CodecError, FRAME_MS};

/// Settings for building a transcoder; the Opus part applies when Opus is the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscoderConfig {
    pub opus: OpusConfig,
}

/// Counters the call layer reports in its stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscoderStats {
    /// Frames decoded from a received payload.
    pub decoded: u64,
    /// Frames produced by concealment (PLC, FEC or repeat-and-fade).
    pub concealed: u64,
    /// Payloads rejected as malformed.
    pub rejected: u64,
}

/// Concealment by repeating the last frame with the G.711 Appendix I fade.
#[derive(Debug)]
struct FadeConcealer {
    /// The last good decoded frame (decoder rate); `None` until one arrived.
    last: Vec<i16>,
    have_last: bool,
    /// Consecutive frames concealed so far.
    lost_in_a_row: u32,
}

/// Full level for the first 10 ms of a loss (G.711 Appendix I §I.2.4).
const FADE_HOLD_MS: u32 = 10;
/// After the hold, attenuation of 20 % per 10 ms reaches silence at 60 ms.
const FADE_MUTE_MS: u32 = 60;

impl FadeConcealer {
    fn new(frame_len: usize) -> Self {
        Self {
            last: vec![0; frame_len],
            have_last: false,
            lost_in_a_row: 0,
        }
    }

    fn remember(&mut self, frame: &[i16]) {
        self.last.copy_from_slice(frame);
        self.have_last = true;
        self.lost_in_a_row = 0;
    }

    fn conceal(&mut self, out: &mut [i16]) {
        let n = self.last.len() as u32;
        let start_ms = self.lost_in_a_row.saturating_mul(FRAME_MS);
        self.lost_in_a_row = self.lost_in_a_row.saturating_add(1);
        if !self.have_last || start_ms >= FADE_MUTE_MS {
            out.fill(0);
            return;
        }
        // Gain in 1/1000 (per-mille) against elapsed time in µs within the loss.
        let span_us = (FADE_MUTE_MS - FADE_HOLD_MS) * 1000;
        for (i, (o, &s)) in out.iter_mut().zip(&self.last).enumerate() {
            let t_us = start_ms * 1000 + (i as u32) * FRAME_MS * 1000 / n;
            let gain = match t_us.checked_sub(FADE_HOLD_MS * 1000) {
                None => 1000,
                Some(after) if after >= span_us => 0,
                Some(after) => 1000 - after * 1000 / span_us,
            };
            *o = (i32::from(s) * gain as i32 / 1000) as i16;
        }
    }
}

#[derive(Debug)]
enum Decoder {
    G711(Law),
    // Boxed: its QMF and band state is ~470 bytes against 32 for the others (built once per call).
    G722(Box<G722Decoder>),
    Opus(OpusDecoder),
}

#[derive(Debug)]
enum Encoder {
    G711(Law),
    G722(Box<G722Encoder>),
    Opus(OpusEncoder),
}

/// One direction of transcoding with pre-allocated buffers.
#[derive(Debug)]
pub struct Transcoder {
    from: Codec,
    to: Codec,
    decoder: Decoder,
    encoder: Encoder,
    resampler: Option<Resampler>,
    /// One frame at the decoder's PCM rate.
    decoded: Vec<i16>,
    /// One frame at the encoder's PCM rate (used only with a resampler).
    resampled: Vec<i16>,
    fade: FadeConcealer,
    stats: TranscoderStats,
}

const fn frame_len(rate: u32) -> usize {
    (rate / 1000 * FRAME_MS) as usize
}

impl Transcoder {
    /// A transcoder from `from` payloads to `to` payloads.
    pub fn new(from: Codec, to: Codec, config: TranscoderConfig) -> Result<Self, CodecError> {
        // PCM rates: with Opus on one side, libopus runs at the other side's rate.
        let (dec_rate, enc_rate) = match (from, to) {
            (Codec::Opus, other) => (other.sample_rate(), other.sample_rate()),
            (other, Codec::Opus) => (other.sample_rate(), other.sample_rate()),
            (a, b) => (a.sample_rate(), b.sample_rate()),
        };
        let decoder = match from {
            Codec::Pcmu => Decoder::G711(Law::Ulaw),
            Codec::Pcma => Decoder::G711(Law::Alaw),
            Codec::G722 => Decoder::G722(Box::default()),
            Codec::Opus => Decoder::Opus(OpusDecoder::new(dec_rate)?),
        };
        let encoder = match to {
            Codec::Pcmu => Encoder::G711(Law::Ulaw),
            Codec::Pcma => Encoder::G711(Law::Alaw),
            Codec::G722 => Encoder::G722(Box::default()),
            Codec::Opus => Encoder::Opus(OpusEncoder::new(enc_rate, config.opus)?),
        };
        let resampler = if dec_rate == enc_rate {
            None
        } else {
            Some(Resampler::new(dec_rate, enc_rate)?)
        };
        Ok(Self {
            from,
            to,
            decoder,
            encoder,
            resampler,
            decoded: vec![0; frame_len(dec_rate)],
            resampled: vec![0; frame_len(enc_rate)],
            fade: FadeConcealer::new(frame_len(dec_rate)),
            stats: TranscoderStats::default(),
        })
    }

    pub fn from_codec(&self) -> Codec {
        self.from
    }

    pub fn to_codec(&self) -> Codec {
        self.to
    }

    pub fn stats(&self) -> TranscoderStats {
        self.stats
    }

    /// Size `out` of [`Transcoder::transcode`] needs to be safe for any frame.
    pub fn max_output_len(&self) -> usize {
        self.to.max_payload_len()
    }

    /// Transcodes one received 20 ms payload into `out`; returns the output payload length.
    ///
    /// A malformed payload (wrong length for G.711/G.722, an invalid or non-20 ms Opus packet)
    /// is a typed error that leaves the decoder state untouched; the caller then usually calls
    /// [`Transcoder::conceal`] for that slot so the outgoing stream keeps its cadence.
    pub fn transcode(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, CodecError> {
        let decoded = match &mut self.decoder {
            Decoder::G711(law) => {
                if payload.len() != self.decoded.len() {
                    Err(CodecError::FrameSize {
                        codec: self.from,
                        expected: self.decoded.len(),
                        got: payload.len(),
                        unit: "bytes",
                    })
                } else {
                    law.decode(payload, &mut self.decoded)
                }
            }
            Decoder::G722(d) => d.decode(payload, &mut self.decoded),
            Decoder::Opus(d) => d.decode(payload, &mut self.decoded),
        };
        if let Err(e) = decoded {
            self.stats.rejected += 1;
            return Err(e);
        }
        self.stats.decoded += 1;
        if !matches!(self.decoder, Decoder::Opus(_)) {
            self.fade.remember(&self.decoded);
        }
        self.encode_decoded(out)
    }

    /// Produces an output frame for a missing input frame: Opus PLC, or repeat-and-fade of the
    /// last G.711/G.722 frame.
    pub fn conceal(&mut self, out: &mut [u8]) -> Result<usize, CodecError> {
        match &mut self.decoder {
            Decoder::Opus(d) => {
                d.conceal(&mut self.decoded)?;
            }
            Decoder::G711(_) | Decoder::G722(_) => self.fade.conceal(&mut self.decoded),
        }
        self.stats.concealed += 1;
        self.encode_decoded(out)
    }

    /// Like [`Transcoder::conceal`], but when the packet after the missing one is already at
    /// hand, Opus rebuilds the missing frame from that packet's in-band FEC (RFC 6716 §2.1.7).
    /// `next` itself must still be passed to [`Transcoder::transcode`] afterwards. For the other
    /// codecs, and if `next` is malformed, this is plain concealment.
    pub fn conceal_with_next(&mut self, next: &[u8], out: &mut [u8]) -> Result<usize, CodecError> {
        if let Decoder::Opus(d) = &mut self.decoder
            && d.decode_fec(next, &mut self.decoded).is_ok()
        {
            self.stats.concealed += 1;
            return self.encode_decoded(out);
        }
        self.conceal(out)
    }

    /// Resample (if the rates differ) and encode `self.decoded`.
    fn encode_decoded(&mut self, out: &mut [u8]) -> Result<usize, CodecError> {
        let pcm: &[i16] = match &mut self.resampler {
            Some(r) => {
                r.process(&self.decoded, &mut self.resampled)?;
                &self.resampled
            }
            None => &self.decoded,
        };
        match &mut self.encoder {
            Encoder::G711(law) => law.encode(pcm, out),
            Encoder::G722(e) => e.encode(pcm, out),
            Encoder::Opus(e) => e.encode(pcm, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::g722;
    use crate::media::codec::opus::MAX_PACKET_LEN;
    use crate::media::codec::test_signal;

    /// Encodes one second of a 440 Hz sine as `codec` payloads.
    fn source_payloads(codec: Codec, seconds: usize) -> (Vec<Vec<u8>>, f64) {
        let rate = codec.sample_rate();
        let n = codec.samples_per_frame();
        let input = test_signal::sine(440.0, rate, 10_000.0, 0, rate as usize * seconds);
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut payloads = Vec::new();
        match codec {
            Codec::Pcmu | Codec::Pcma => {
                let law = if codec == Codec::Pcmu {
                    Law::Ulaw
                } else {
                    Law::Alaw
                };
                for f in input.chunks_exact(n) {
                    let len = law.encode(f, &mut buf).unwrap();
                    payloads.push(buf[..len].to_vec());
                }
            }
            Codec::G722 => {
                let mut e = g722::G722Encoder::new();
                for f in input.chunks_exact(n) {
                    let len = e.encode(f, &mut buf).unwrap();
                    payloads.push(buf[..len].to_vec());
                }
            }
            Codec::Opus => {
                let mut e = OpusEncoder::new(rate, OpusConfig::default()).unwrap();
                for f in input.chunks_exact(n) {
                    let len = e.encode(f, &mut buf).unwrap();
                    payloads.push(buf[..len].to_vec());
                }
            }
        }
        (payloads, test_signal::rms(&input))
    }

    /// Decodes `codec` payloads back to PCM at the codec's sample rate, with fresh decoders.
    fn decode_all(codec: Codec, payloads: &[Vec<u8>]) -> Vec<i16> {
        let mut out = Vec::new();
        let mut pcm = vec![0i16; codec.samples_per_frame()];
        let mut g722 = g722::G722Decoder::new();
        let mut opus = OpusDecoder::new(48_000).unwrap();
        for p in payloads {
            let n = match codec {
                Codec::Pcmu => Law::Ulaw.decode(p, &mut pcm).unwrap(),
                Codec::Pcma => Law::Alaw.decode(p, &mut pcm).unwrap(),
                Codec::G722 => g722.decode(p, &mut pcm).unwrap(),
                Codec::Opus => opus.decode(p, &mut pcm).unwrap(),
            };
            assert_eq!(n, pcm.len());
            out.extend_from_slice(&pcm);
        }
        out
    }

    fn run(t: &mut Transcoder, payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; t.max_output_len()];
        payloads
            .iter()
            .map(|p| {
                let n = t.transcode(p, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect()
    }

    /// 200 ms covers every delay in the chain (Opus lookahead ~6.5 ms, resampler ≤ 20 ms, G.722
    /// QMF, encoder start-up).
    const SKIP_MS: usize = 200;

    fn check_chain(chain: &[Codec]) {
        let (mut payloads, input_rms) = source_payloads(chain[0], 1);
        for pair in chain.windows(2) {
            let mut t = Transcoder::new(pair[0], pair[1], TranscoderConfig::default()).unwrap();
            payloads = run(&mut t, &payloads);
            assert_eq!(t.stats().decoded, 50);
        }
        let last = chain[chain.len() - 1];
        let pcm = decode_all(last, &payloads);
        let rate = last.sample_rate();
        let skip = rate as usize * SKIP_MS / 1000;
        test_signal::assert_tone(&format!("{chain:?}"), &pcm[skip..], rate, input_rms);
    }

    #[test]
    fn every_codec_pair_carries_a_440_hz_tone() {
        for from in Codec::ALL {
            for to in Codec::ALL {
                check_chain(&[from, to]);
            }
        }
    }

    #[test]
    fn multi_hop_chains_carry_the_tone() {
        check_chain(&[Codec::Pcmu, Codec::Opus, Codec::Pcmu]);
        check_chain(&[Codec::G722, Codec::Pcma]);
        check_chain(&[Codec::Opus, Codec::G722, Codec::Opus]);
        check_chain(&[Codec::Pcma, Codec::G722, Codec::Pcmu, Codec::Opus]);
    }

    #[test]
    fn opus_to_pcmu_with_losses_keeps_the_tone() {
        let (payloads, input_rms) = source_payloads(Codec::Opus, 1);
        let mut t = Transcoder::new(Codec::Opus, Codec::Pcmu, TranscoderConfig::default()).unwrap();
        let mut buf = [0u8; 160];
        let mut out = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let n = match i % 7 {
                3 => t.conceal(&mut buf).unwrap(),
                5 => t.conceal_with_next(&payloads[i + 1], &mut buf).unwrap(),
                _ => t.transcode(p, &mut buf).unwrap(),
            };
            assert_eq!(n, 160);
            out.extend_from_slice(&buf);
        }
        assert_eq!(t.stats().concealed, 14);
        let frames: Vec<Vec<u8>> = out.chunks(160).map(<[u8]>::to_vec).collect();
        let pcm = decode_all(Codec::Pcmu, &frames);
        test_signal::assert_tone("opus->pcmu lossy", &pcm[1600..], 8000, input_rms);
    }

    #[test]
    fn g711_concealment_repeats_then_fades_to_silence() {
        let (payloads, _) = source_payloads(Codec::Pcmu, 1);
        let mut t = Transcoder::new(Codec::Pcmu, Codec::Pcma, TranscoderConfig::default()).unwrap();
        let mut buf = [0u8; 160];
        let mut pcm = [0i16; 160];
        // Before any frame: silence.
        t.conceal(&mut buf).unwrap();
        Law::Alaw.decode(&buf, &mut pcm).unwrap();
        assert!(test_signal::rms(&pcm) < 10.0);
        t.transcode(&payloads[10], &mut buf).unwrap();
        Law::Alaw.decode(&buf, &mut pcm).unwrap();
        let good = test_signal::rms(&pcm);
        let mut levels = Vec::new();
        for _ in 0..4 {
            t.conceal(&mut buf).unwrap();
            Law::Alaw.decode(&buf, &mut pcm).unwrap();
            levels.push(test_signal::rms(&pcm));
        }
        // 0–20 ms: mostly full level; 20–40 ms: lower; 40–60 ms: lower still; ≥ 60 ms: silent.
        assert!(levels[0] > 0.6 * good, "{levels:?} vs {good}");
        assert!(levels[1] < levels[0] && levels[2] < levels[1], "{levels:?}");
        assert!(levels[3] < 10.0, "{levels:?}");
        // A good frame ends the loss.
        t.transcode(&payloads[20], &mut buf).unwrap();
        t.conceal(&mut buf).unwrap();
        Law::Alaw.decode(&buf, &mut pcm).unwrap();
        assert!(test_signal::rms(&pcm) > 0.6 * good);
    }

    #[test]
    fn bad_payloads_are_typed_errors_never_panics() {
        let mut buf = [0u8; MAX_PACKET_LEN];
        for from in Codec::ALL {
            for to in Codec::ALL {
                let mut t = Transcoder::new(from, to, TranscoderConfig::default()).unwrap();
                // Wrong sizes.
                for len in [0usize, 1, 80, 159, 161, 320, 1500] {
                    let junk = vec![0x5Au8; len];
                    let r = t.transcode(&junk, &mut buf);
                    if from != Codec::Opus {
                        assert!(
                            matches!(r, Err(CodecError::FrameSize { got, .. }) if got == len)
                                || len == from.max_payload_len(),
                            "{from}->{to} len {len}: {r:?}"
                        );
                    }
                }
                // Garbage of the right size for G.711/G.722 decodes (every byte is a code);
                // for Opus it is an error or a frame.
                let mut x: u32 = 7;
                for _ in 0..20 {
                    let junk: Vec<u8> = (0..from.max_payload_len().min(200))
                        .map(|_| {
                            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                            (x >> 16) as u8
                        })
                        .collect();
                    let _ = t.transcode(&junk, &mut buf);
                }
                // Output buffer too small is an error (libopus may legally squeeze a frame into a
                // 1-byte TOC-only packet, so only the fixed-size codecs are checked).
                let r = t.conceal(&mut buf[..1]);
                assert!(to == Codec::Opus || r.is_err(), "{from}->{to}: {r:?}");
                // And the transcoder still works afterwards.
                let n = t.conceal(&mut buf).unwrap();
                assert!(n > 0 && n <= to.max_payload_len());
            }
        }
    }
}
