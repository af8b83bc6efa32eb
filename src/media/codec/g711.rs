//! G.711 μ-law (PCMU) and A-law (PCMA), ITU-T G.711 (11/88), our own implementation.
//!
//! The classic segment approach (as in the CCITT/Sun reference `g711.c`): a sample is split into
//! a sign, a 3-bit segment (the position of its leading one, i.e. a piecewise-linear logarithm)
//! and a 4-bit position within the segment. Decoding uses 256-entry tables built at compile time
//! from the same formulas, so they match G.711 Tables 1a/1b/2a/2b by construction and are checked
//! against known code points in the tests.
//!
//! PCM is 16-bit linear. G.711 itself defines μ-law on 14-bit and A-law on 13-bit magnitudes; the
//! low bits of our 16-bit samples are dropped on encode and decoded values are on the 16-bit
//! scale (μ-law peak ±32124, A-law peak ±32256), as every RTP stack does.
//!
//! The `*_frame` functions write into caller-provided buffers and never allocate.

use super::{Codec, CodecError};

/// One 20 ms frame at 8 kHz is 160 samples, one byte each (RFC 3551 §4.5.14).
pub const BYTES_PER_FRAME: usize = 160;

/// μ-law bias: G.711 μ-law adds 33 to the 14-bit magnitude (132 on the 16-bit scale) so that
/// every segment boundary falls on a power of two.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude that still fits the top segment after adding the bias (32767 − 132).
const ULAW_CLIP: i32 = 32_635;

/// Encodes one linear sample as μ-law (G.711 §3, Table 2a).
#[inline]
pub fn encode_ulaw(sample: i16) -> u8 {
    let mut mag = i32::from(sample);
    let sign: u8 = if mag < 0 {
        mag = -mag;
        0x80
    } else {
        0
    };
    mag = mag.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment = position of the leading one above bit 7; biased magnitude is 132..=32767, so
    // `mag >> 7` is 1..=255 and the segment 0..=7.
    let segment = 31 - ((mag >> 7) as u32 | 1).leading_zeros();
    let mantissa = ((mag >> (segment + 3)) & 0x0F) as u8;
    // G.711 transmits μ-law codes with all bits inverted (so silence is 0xFF, not 0x00).
    !(sign | ((segment as u8) << 4) | mantissa)
}

/// Encodes one linear sample as A-law (G.711 §2, Table 1a).
#[inline]
pub fn encode_alaw(sample: i16) -> u8 {
    // A-law works on 13 bits.
    let v = i32::from(sample) >> 3;
    // Even bits are inverted on the line (the 0x55 mask); the sign bit is 1 for positive values.
    let (mask, mag) = if v >= 0 {
        (0xD5u8, v)
    } else {
        (0x55u8, -v - 1)
    };
    // `mag` is 0..=4095; segments 0 and 1 share the same step, segment s ≥ 1 starts at 16 << s.
    let segment = if mag < 32 {
        0
    } else {
        27 - (mag as u32).leading_zeros()
    };
    let shift = if segment < 2 { 1 } else { segment };
    let code = ((segment as u8) << 4) | ((mag >> shift) & 0x0F) as u8;
    code ^ mask
}

const fn decode_ulaw_const(code: u8) -> i16 {
    let u = !code;
    let segment = (u >> 4) & 0x07;
    let mantissa = (u & 0x0F) as i32;
    // Reconstruct at the middle of the quantisation interval.
    let mag = (((mantissa << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -mag as i16
    } else {
        mag as i16
    }
}

const fn decode_alaw_const(code: u8) -> i16 {
    let a = code ^ 0x55;
    let segment = (a >> 4) & 0x07;
    let mut t = ((a & 0x0F) as i32) << 4;
    // +8 (segment 0) and +0x108 (the implicit leading one, plus half a step) put the value at the
    // middle of the interval.
    t = match segment {
        0 => t + 8,
        1 => t + 0x108,
        s => (t + 0x108) << (s - 1),
    };
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            decode_alaw_const(i as u8)
        } else {
            decode_ulaw_const(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_TO_LINEAR: [i16; 256] = build_table(false);
static ALAW_TO_LINEAR: [i16; 256] = build_table(true);

/// Decodes one μ-law code (G.711 Table 2b). Every byte is a valid code.
#[inline]
pub fn decode_ulaw(code: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(code)]
}

/// Decodes one A-law code (G.711 Table 1b). Every byte is a valid code.
#[inline]
pub fn decode_alaw(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// μ-law, North America and Japan; RTP PCMU.
    Ulaw,
    /// A-law, the rest of the world; RTP PCMA.
    Alaw,
}

impl Law {
    pub fn codec(self) -> Codec {
        match self {
            Law::Ulaw => Codec::Pcmu,
            Law::Alaw => Codec::Pcma,
        }
    }

    /// Encodes `pcm` into `out[..pcm.len()]`; returns the number of bytes written.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let out = super::prefix_mut(out, pcm.len())?;
        match self {
            Law::Ulaw => out
                .iter_mut()
                .zip(pcm)
                .for_each(|(o, &s)| *o = encode_ulaw(s)),
            Law::Alaw => out
                .iter_mut()
                .zip(pcm)
                .for_each(|(o, &s)| *o = encode_alaw(s)),
        }
        Ok(pcm.len())
    }

    /// Decodes `payload` into `out[..payload.len()]`; returns the number of samples written.
    pub fn decode(self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let out = super::prefix_mut(out, payload.len())?;
        let table = match self {
            Law::Ulaw => &ULAW_TO_LINEAR,
            Law::Alaw => &ALAW_TO_LINEAR,
        };
        out.iter_mut()
            .zip(payload)
            .for_each(|(o, &c)| *o = table[usize::from(c)]);
        Ok(payload.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::test_signal;

    /// The error bound of a piecewise-linear 8-bit log quantiser: half a step, and a step is at
    /// most 1/16 of the segment's lower edge, so |error| · 32 ≤ |x| + a small floor (the first
    /// segments' fixed step; 132 for μ-law's bias, 256 for A-law's two linear segments).
    fn assert_roundtrip_bounded(law: Law) {
        let mut max_err = 0;
        for x in i16::MIN..=i16::MAX {
            type Pair = (fn(i16) -> u8, fn(u8) -> i16);
            let (enc, dec): Pair = match law {
                Law::Ulaw => (encode_ulaw, decode_ulaw),
                Law::Alaw => (encode_alaw, decode_alaw),
            };
            let y = dec(enc(x));
            let err = (i32::from(x) - i32::from(y)).abs();
            max_err = max_err.max(err);
            assert!(
                err * 32 <= i32::from(x).abs() + 256,
                "{law:?}: {x} -> {y}, error {err}"
            );
            // Monotonic and sign-preserving: a quantiser never flips a sign.
            assert!(
                i32::from(x).signum() * i32::from(y).signum() >= 0,
                "{x} -> {y}"
            );
        }
        // Top segment: half of a 1024-step (plus μ-law's clip region).
        assert!(max_err <= 644, "{law:?} max error {max_err}");
    }

    #[test]
    fn ulaw_roundtrip_error_is_bounded_over_full_range() {
        assert_roundtrip_bounded(Law::Ulaw);
    }

    #[test]
    fn alaw_roundtrip_error_is_bounded_over_full_range() {
        assert_roundtrip_bounded(Law::Alaw);
    }

    #[test]
    fn every_code_reencodes_to_itself() {
        for c in 0..=255u8 {
            // μ-law has two zeros (0xFF = +0 and 0x7F = −0); −0 decodes to 0, which is +0.
            let expect_u = if c == 0x7F { 0xFF } else { c };
            assert_eq!(encode_ulaw(decode_ulaw(c)), expect_u, "ulaw {c:#04x}");
            assert_eq!(encode_alaw(decode_alaw(c)), c, "alaw {c:#04x}");
        }
    }

    #[test]
    fn known_code_points_from_g711_tables() {
        // μ-law (G.711 Table 2): 0xFF is +0, 0x7F −0, 0xFE the first positive step (1 on the
        // 14-bit scale, 8 here), 0x80 / 0x00 the extremes ±8031 (14-bit) = ±32124.
        assert_eq!(decode_ulaw(0xFF), 0);
        assert_eq!(decode_ulaw(0x7F), 0);
        assert_eq!(decode_ulaw(0xFE), 8);
        assert_eq!(decode_ulaw(0x7E), -8);
        assert_eq!(decode_ulaw(0x80), 32_124);
        assert_eq!(decode_ulaw(0x00), -32_124);
        assert_eq!(encode_ulaw(0), 0xFF);
        // A-law (G.711 Table 1): 0xD5 / 0x55 are the smallest positive / negative values (±1 on
        // the 12-bit-plus-sign scale, ±8 here), 0xAA / 0x2A the extremes ±4032 (13-bit) = ±32256.
        assert_eq!(decode_alaw(0xD5), 8);
        assert_eq!(decode_alaw(0x55), -8);
        assert_eq!(decode_alaw(0xAA), 32_256);
        assert_eq!(decode_alaw(0x2A), -32_256);
        assert_eq!(encode_alaw(0), 0xD5);
        assert_eq!(encode_alaw(-1), 0x55);
        // Segment edges: A-law segment 1 starts at 256 (0xC5 = 0xD5 ^ 0x10 … with mantissa 0).
        assert_eq!(decode_alaw(0x10 ^ 0xD5), 256 + 8);
    }

    #[test]
    fn clipping_extremes() {
        assert_eq!(encode_ulaw(i16::MAX), 0x80);
        assert_eq!(encode_ulaw(i16::MIN), 0x00);
        assert_eq!(encode_alaw(i16::MAX), 0xAA);
        assert_eq!(encode_alaw(i16::MIN), 0x2A);
        // Everything above μ-law's clip level lands on the top code, not wrapping.
        for x in ULAW_CLIP..=i32::from(i16::MAX) {
            assert_eq!(encode_ulaw(x as i16), 0x80);
        }
    }

    #[test]
    fn silence_encodes_to_the_idle_codes_and_back() {
        let pcm = [0i16; BYTES_PER_FRAME];
        let mut bytes = [0u8; BYTES_PER_FRAME];
        let mut back = [1i16; BYTES_PER_FRAME];
        assert_eq!(Law::Ulaw.encode(&pcm, &mut bytes).unwrap(), 160);
        assert!(bytes.iter().all(|&b| b == 0xFF));
        Law::Ulaw.decode(&bytes, &mut back).unwrap();
        assert!(back.iter().all(|&s| s == 0));
        Law::Alaw.encode(&pcm, &mut bytes).unwrap();
        assert!(bytes.iter().all(|&b| b == 0xD5));
        Law::Alaw.decode(&bytes, &mut back).unwrap();
        assert!(back.iter().all(|&s| s == 8));
    }

    #[test]
    fn short_output_buffer_is_an_error_not_a_panic() {
        let mut small = [0u8; 10];
        assert!(matches!(
            Law::Ulaw.encode(&[0; 160], &mut small),
            Err(CodecError::OutputTooSmall {
                needed: 160,
                got: 10
            })
        ));
        let mut small = [0i16; 10];
        assert!(matches!(
            Law::Alaw.decode(&[0; 160], &mut small),
            Err(CodecError::OutputTooSmall { .. })
        ));
    }

    #[test]
    fn sine_survives_both_laws_with_g711_snr() {
        let input = test_signal::sine(440.0, 8000, 10_000.0, 0, 8000);
        for law in [Law::Ulaw, Law::Alaw] {
            let mut bytes = vec![0u8; input.len()];
            let mut out = vec![0i16; input.len()];
            law.encode(&input, &mut bytes).unwrap();
            law.decode(&bytes, &mut out).unwrap();
            test_signal::assert_tone(&format!("{law:?}"), &out, 8000, test_signal::rms(&input));
            // G.711 gives ~38 dB SQNR on a loud sine; demand at least 30 dB.
            let noise: Vec<i16> = input.iter().zip(&out).map(|(a, b)| a - b).collect();
            let snr = 20.0 * (test_signal::rms(&input) / test_signal::rms(&noise)).log10();
            assert!(snr > 30.0, "{law:?} SNR {snr:.1} dB");
        }
    }
}
