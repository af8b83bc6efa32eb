//! G.722 at 64 kbit/s (ITU-T G.722 mode 1): 16 kHz PCM, one byte per two samples, 160 bytes
//! per 20 ms frame. A thin wrapper over `ezk-g722` (a Rust port of the public-domain
//! Steve Underwood / sippy `libg722`) that checks sizes so the crate's assertions can never fire
//! on network input, and copies results into caller buffers.
//!
//! RTP: payload type 9, clock rate 8000 even though the codec samples at 16 kHz (RFC 3551
//! §4.5.2). Bytes are sent unpacked, one 8-bit code per sample pair, as RFC 3551 requires.
//!
//! Allocation: `ezk-g722` 0.1.2 returns a fresh `Vec` from every `encode`/`decode` call (its
//! `libg722` API has no slice-out variant) and grows it by pushing, so a G.722 frame costs about
//! 6 allocations to encode and 8 to decode inside the crate (counted by `benches/codec.rs`).
//! Everything on our side is pre-allocated. Removing them needs an upstream `encode_into` /
//! `decode_into` or our own G.722 (the public-domain libg722 is ~600 lines).

use ezk_g722::libg722::{Bitrate, decoder::Decoder, encoder::Encoder};

use super::{Codec, CodecError};

/// Bytes in one 20 ms frame at 64 kbit/s: 64000 / 8 × 0.020.
pub const BYTES_PER_FRAME: usize = 160;
/// 16 kHz PCM samples in one 20 ms frame.
pub const SAMPLES_PER_FRAME: usize = 320;

/// G.722 encoder state (the QMF and both ADPCM sub-bands carry history between frames).
pub struct G722Encoder {
    inner: Encoder,
}

impl std::fmt::Debug for G722Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("G722Encoder")
    }
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    pub fn new() -> Self {
        // Mode 1 (64 kbit/s), 16 kHz input (not the 8 kHz variant), unpacked bytes.
        Self {
            inner: Encoder::new(Bitrate::Mode1_64000, false, false),
        }
    }

    /// Encodes one 20 ms frame (320 samples at 16 kHz) into `out` (≥ 160 bytes).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        // The crate asserts an even sample count; a whole frame is required anyway.
        if pcm.len() != SAMPLES_PER_FRAME {
            return Err(CodecError::FrameSize {
                codec: Codec::G722,
                expected: SAMPLES_PER_FRAME,
                got: pcm.len(),
                unit: "samples",
            });
        }
        let out = super::prefix_mut(out, BYTES_PER_FRAME)?;
        let coded = self.inner.encode(pcm);
        // Mode 1 unpacked emits exactly one byte per sample pair.
        let n = coded.len().min(BYTES_PER_FRAME);
        out[..n].copy_from_slice(&coded[..n]);
        Ok(n)
    }
}

/// G.722 decoder state.
pub struct G722Decoder {
    inner: Decoder,
}

impl std::fmt::Debug for G722Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("G722Decoder")
    }
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    pub fn new() -> Self {
        // Mode 1, unpacked, 16 kHz output.
        Self {
            inner: Decoder::new(Bitrate::Mode1_64000, false, false),
        }
    }

    /// Decodes one 20 ms payload (160 bytes) into `out` (≥ 320 samples). Every byte value is a
    /// valid G.722 code, so only the size can be wrong.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.len() != BYTES_PER_FRAME {
            return Err(CodecError::FrameSize {
                codec: Codec::G722,
                expected: BYTES_PER_FRAME,
                got: payload.len(),
                unit: "bytes",
            });
        }
        let out = super::prefix_mut(out, SAMPLES_PER_FRAME)?;
        let pcm = self.inner.decode(payload);
        let n = pcm.len().min(SAMPLES_PER_FRAME);
        out[..n].copy_from_slice(&pcm[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::test_signal;

    #[test]
    fn sine_roundtrip_keeps_frequency_and_level() {
        let mut enc = G722Encoder::new();
        let mut dec = G722Decoder::new();
        let input = test_signal::sine(440.0, 16_000, 10_000.0, 0, 16_000);
        let mut out = Vec::with_capacity(input.len());
        let mut bytes = [0u8; BYTES_PER_FRAME];
        let mut pcm = [0i16; SAMPLES_PER_FRAME];
        for frame in input.chunks_exact(SAMPLES_PER_FRAME) {
            assert_eq!(enc.encode(frame, &mut bytes).unwrap(), BYTES_PER_FRAME);
            assert_eq!(dec.decode(&bytes, &mut pcm).unwrap(), SAMPLES_PER_FRAME);
            out.extend_from_slice(&pcm);
        }
        // Skip the QMF + ADPCM settling time (first 100 ms).
        test_signal::assert_tone("G.722", &out[1600..], 16_000, test_signal::rms(&input));
    }

    #[test]
    fn wrong_sizes_are_errors_not_panics() {
        let mut enc = G722Encoder::new();
        let mut dec = G722Decoder::new();
        let mut bytes = [0u8; BYTES_PER_FRAME];
        let mut pcm = [0i16; SAMPLES_PER_FRAME];
        // Odd sample count would trip the crate's assert.
        assert!(matches!(
            enc.encode(&[0; 319], &mut bytes),
            Err(CodecError::FrameSize { got: 319, .. })
        ));
        assert!(matches!(
            dec.decode(&[0; 7], &mut pcm),
            Err(CodecError::FrameSize { got: 7, .. })
        ));
        assert!(matches!(
            dec.decode(&[0; 160], &mut pcm[..100]),
            Err(CodecError::OutputTooSmall { .. })
        ));
        // Every byte value is a code: all 256 of them, in a few orders, decode without panicking
        // (the ADPCM state saturates rather than overflows).
        let all: Vec<u8> = (0..=255u8).cycle().take(160 * 8).collect();
        for frame in all.chunks_exact(BYTES_PER_FRAME) {
            assert_eq!(dec.decode(frame, &mut pcm).unwrap(), SAMPLES_PER_FRAME);
        }
        for v in [0x00u8, 0xFF, 0x80, 0x7F] {
            for _ in 0..50 {
                dec.decode(&[v; BYTES_PER_FRAME], &mut pcm).unwrap();
            }
        }
    }
}
