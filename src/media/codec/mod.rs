//! Audio codecs for the transcoding path of the media engine: G.711 (PCMU/PCMA, our own code),
//! G.722 (via `ezk-g722`), Opus (via `opus`/libopus), sample-rate conversion (via `rubato`) and a
//! per-direction [`Transcoder`] that turns one encoded 20 ms frame of codec A into one of codec B.
//!
//! This module owns only sample and payload bytes: it knows nothing of RTP headers, SSRCs,
//! sequence numbers, jitter buffers, SIP or Jingle. The caller (the RTP legs and the call bridge)
//! hands it payloads and asks for payloads back. Everything here is pure: no I/O, no clock, no
//! logging on the per-frame path, and no allocation per frame (buffers are allocated when a
//! transcoder is built; see `g722` for the one exception, inside the G.722 crate).
//!
//! Passthrough (both legs share a codec) never comes through here — the issue demands that shared
//! codecs are relayed without decoding.

pub mod g711;
pub mod g722;
pub mod opus;
pub mod resample;
pub mod transcode;

pub use transcode::{Transcoder, TranscoderConfig, TranscoderStats};

/// Every frame on the transcoding path is 20 ms: the `ptime` default of RFC 3551 §4.5 for the
/// G.711/G.722 payload formats and the frame size WebRTC stacks use for Opus (RFC 7587 §4.2).
pub const FRAME_MS: u32 = 20;

/// The audio codecs the gateway can transcode between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opus, RFC 6716; RTP payload format RFC 7587.
    Opus,
    /// G.722 at 64 kbit/s (mode 1), ITU-T G.722; RTP payload format RFC 3551 §4.5.2.
    G722,
    /// G.711 μ-law, RFC 3551 §4.5.14.
    Pcmu,
    /// G.711 A-law, RFC 3551 §4.5.14.
    Pcma,
}

impl Codec {
    /// All codecs, for tests and for the call layer to iterate over.
    pub const ALL: [Codec; 4] = [Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma];

    /// The RTP clock rate (the rate of the RTP timestamp, and the rate in `a=rtpmap`).
    ///
    /// Opus is always 48000 (RFC 7587 §4.1). G.722 is 8000 although it samples at 16 kHz: an
    /// error in RFC 1890 kept for compatibility (RFC 3551 §4.5.2).
    pub const fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::G722 | Codec::Pcmu | Codec::Pcma => 8_000,
        }
    }

    /// The PCM sample rate this codec's encoder consumes and decoder produces here.
    ///
    /// Opus can run at 8/12/16/24/48 kHz; 48 kHz is its native ("fullband") rate and the one we
    /// use whenever we hand PCM to someone else. The [`Transcoder`] may run libopus at another
    /// rate internally (see `transcode`).
    pub const fn sample_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::G722 => 16_000,
            Codec::Pcmu | Codec::Pcma => 8_000,
        }
    }

    /// PCM samples (mono) in one 20 ms frame at [`Codec::sample_rate`].
    pub const fn samples_per_frame(self) -> usize {
        (self.sample_rate() / 1000 * FRAME_MS) as usize
    }

    /// How far the RTP timestamp advances per 20 ms frame ([`Codec::clock_rate`] × 20 ms).
    pub const fn timestamp_increment(self) -> u32 {
        self.clock_rate() / 1000 * FRAME_MS
    }

    /// The static RTP payload type of RFC 3551 Table 4, if the codec has one (Opus is dynamic).
    pub const fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus => None,
        }
    }

    /// The encoding name as written in `a=rtpmap` (RFC 3551 Table 4, RFC 7587 §7).
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::G722 => "G722",
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec named by an `a=rtpmap` encoding name and clock rate (RFC 4566 §6; names are
    /// case-insensitive, RFC 4855 §3). `None` for anything we cannot transcode.
    pub fn from_rtpmap(name: &str, clock_rate: u32) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name) && c.clock_rate() == clock_rate)
    }

    /// The largest payload one 20 ms frame of this codec can take, to size output buffers.
    ///
    /// G.711 is one byte per 8 kHz sample; G.722 at 64 kbit/s is one byte per pair of 16 kHz
    /// samples; Opus is at most 1275 bytes per frame (RFC 6716 §3.2.1).
    pub const fn max_payload_len(self) -> usize {
        match self {
            Codec::Opus => opus::MAX_PACKET_LEN,
            Codec::G722 => g722::BYTES_PER_FRAME,
            Codec::Pcmu | Codec::Pcma => g711::BYTES_PER_FRAME,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// Errors of the codec module. A bad payload from the network ends up here, never in a panic;
/// the caller usually answers it by calling [`Transcoder::conceal`] for that frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A payload or PCM buffer does not hold exactly one 20 ms frame.
    #[error("{codec}: expected {expected} {unit} for a 20 ms frame, got {got}")]
    FrameSize {
        codec: Codec,
        expected: usize,
        got: usize,
        unit: &'static str,
    },
    /// An Opus packet whose duration is not 20 ms (RFC 6716 §3.1 allows 2.5–120 ms).
    #[error("opus packet lasts {samples} samples at 48 kHz, expected 960 (20 ms)")]
    OpusDuration { samples: usize },
    /// The caller's output buffer is too small for the result.
    #[error("output buffer holds {got} elements, need {needed}")]
    OutputTooSmall { needed: usize, got: usize },
    /// libopus refused a packet or a setting.
    #[error("libopus {op}: {source}")]
    Opus {
        op: &'static str,
        #[source]
        source: ::opus::Error,
    },
    /// A setting out of its allowed range (e.g. Opus complexity outside 0..=10).
    #[error("invalid setting {name} = {value}: {reason}")]
    InvalidSetting {
        name: &'static str,
        value: i64,
        reason: &'static str,
    },
    /// The resampler could not be built for this pair of rates.
    #[error("cannot build resampler {from} Hz -> {to} Hz: {source}")]
    ResamplerBuild {
        from: u32,
        to: u32,
        #[source]
        source: rubato::ResamplerConstructionError,
    },
    /// The resampler was handed something other than one 20 ms frame at its input rate.
    #[error("resampler expects {expected} samples (20 ms), got {got}")]
    ResamplerInput { expected: usize, got: usize },
    /// The resampler failed on a frame (buffer sizes disagree with its chunk size).
    #[error("resampling failed: {0}")]
    Resample(#[from] rubato::ResampleError),
}

/// The first `needed` elements of a caller's output buffer, or [`CodecError::OutputTooSmall`].
fn prefix_mut<T>(buf: &mut [T], needed: usize) -> Result<&mut [T], CodecError> {
    let got = buf.len();
    buf.get_mut(..needed)
        .ok_or(CodecError::OutputTooSmall { needed, got })
}

#[cfg(test)]
pub(crate) mod test_signal {
    //! Audio checks shared by the codec tests: a sine generator, RMS, and a dominant-frequency
    //! finder built on the Goertzel algorithm (one DFT bin at a time, no FFT crate needed).

    /// `n` samples of a sine at `freq` Hz, sampled at `rate`, with peak `amplitude`, starting at
    /// sample index `start` (so consecutive frames join without a phase jump).
    pub fn sine(freq: f64, rate: u32, amplitude: f64, start: usize, n: usize) -> Vec<i16> {
        (start..start + n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
            })
            .collect()
    }

    pub fn rms(x: &[i16]) -> f64 {
        let sum: f64 = x.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (sum / x.len().max(1) as f64).sqrt()
    }

    /// Power of `freq` in Hann-windowed `x` (Goertzel).
    fn goertzel(x: &[f64], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s0 = v + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    }

    /// The frequency (Hz, 1 Hz resolution) with the most power between 50 Hz and 4 kHz — the
    /// band every codec here carries. Coarse 10 Hz scan, then 1 Hz around the best bin.
    pub fn dominant_frequency(x: &[i16], rate: u32) -> f64 {
        let n = x.len();
        let windowed: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let hann = 0.5
                    - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1).max(1) as f64).cos();
                f64::from(s) * hann
            })
            .collect();
        let best = |lo: u32, hi: u32, step: u32| {
            (lo..=hi)
                .step_by(step as usize)
                .map(|f| (f, goertzel(&windowed, rate, f64::from(f))))
                .fold((lo, f64::MIN), |a, b| if b.1 > a.1 { b } else { a })
                .0
        };
        let coarse = best(50, 4000, 10);
        f64::from(best(coarse.saturating_sub(10).max(50), coarse + 10, 1))
    }

    /// Asserts that `out` carries the 440 Hz tone: dominant frequency 440 ± 5 Hz and RMS within
    /// 50–150 % of the input's RMS.
    pub fn assert_tone(what: &str, out: &[i16], rate: u32, input_rms: f64) {
        let f = dominant_frequency(out, rate);
        let r = rms(out);
        assert!(
            (f - 440.0).abs() <= 5.0,
            "{what}: dominant frequency {f} Hz, expected 440 ± 5"
        );
        let ratio = r / input_rms;
        assert!(
            (0.5..=1.5).contains(&ratio),
            "{what}: output RMS {r:.0} is {:.0} % of input RMS {input_rms:.0}",
            ratio * 100.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_constants_match_the_rtp_profiles() {
        assert_eq!(Codec::Opus.clock_rate(), 48_000);
        assert_eq!(Codec::Opus.samples_per_frame(), 960);
        assert_eq!(Codec::Opus.timestamp_increment(), 960);
        assert_eq!(Codec::G722.clock_rate(), 8_000);
        assert_eq!(Codec::G722.sample_rate(), 16_000);
        assert_eq!(Codec::G722.samples_per_frame(), 320);
        assert_eq!(Codec::G722.timestamp_increment(), 160);
        assert_eq!(Codec::G722.max_payload_len(), 160);
        for c in [Codec::Pcmu, Codec::Pcma] {
            assert_eq!(c.samples_per_frame(), 160);
            assert_eq!(c.timestamp_increment(), 160);
            assert_eq!(c.max_payload_len(), 160);
        }
        assert_eq!(Codec::Pcmu.static_payload_type(), Some(0));
        assert_eq!(Codec::Pcma.static_payload_type(), Some(8));
        assert_eq!(Codec::G722.static_payload_type(), Some(9));
        assert_eq!(Codec::Opus.static_payload_type(), None);
    }

    #[test]
    fn rtpmap_names_map_to_codecs() {
        assert_eq!(Codec::from_rtpmap("opus", 48_000), Some(Codec::Opus));
        assert_eq!(Codec::from_rtpmap("OPUS", 48_000), Some(Codec::Opus));
        assert_eq!(Codec::from_rtpmap("g722", 8_000), Some(Codec::G722));
        assert_eq!(Codec::from_rtpmap("pcmu", 8_000), Some(Codec::Pcmu));
        assert_eq!(Codec::from_rtpmap("PCMA", 8_000), Some(Codec::Pcma));
        // G.722 at its sampling rate is a common mistake, not the RFC 3551 rtpmap.
        assert_eq!(Codec::from_rtpmap("G722", 16_000), None);
        assert_eq!(Codec::from_rtpmap("telephone-event", 8_000), None);
        for c in Codec::ALL {
            assert_eq!(
                Codec::from_rtpmap(c.encoding_name(), c.clock_rate()),
                Some(c)
            );
            assert_eq!(c.to_string(), c.encoding_name());
        }
    }

    #[test]
    fn goertzel_helper_finds_a_known_tone() {
        let x = test_signal::sine(440.0, 8000, 8000.0, 0, 8000);
        assert_eq!(test_signal::dominant_frequency(&x, 8000), 440.0);
        let y = test_signal::sine(1234.0, 48_000, 8000.0, 0, 24_000);
        assert_eq!(test_signal::dominant_frequency(&y, 48_000), 1234.0);
    }
}
