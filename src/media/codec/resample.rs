//! Sample-rate conversion between the rates the codecs run at (8, 16 and 48 kHz), 20 ms at a time.
//!
//! Built on rubato's synchronous FFT resampler (`rubato::Fft`), because our ratios are fixed
//! small integers (2, 3, 6 and their inverses): an FFT overlap-add with a Blackman-Harris
//! anti-aliasing window gives a steep low-pass at the lower rate's Nyquist for little CPU, and
//! `process_into_buffer` with slice adapters writes into our pre-allocated buffers without
//! allocating. Fixing both input and output size (`FixedSync::Both`) makes every call consume
//! exactly one 20 ms frame and produce exactly one 20 ms frame, which is what a frame-based
//! transcoder wants; rubato keeps the overlap between calls.
//!
//! PCM is i16 at the edges (what the codecs speak) and f32 inside (what rubato computes in); the
//! two f32 scratch buffers are allocated once in [`Resampler::new`].

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use super::{CodecError, FRAME_MS};

/// Full scale of i16 PCM as f32.
const FULL_SCALE: f32 = 32_768.0;

/// One direction of rate conversion for one mono stream.
pub struct Resampler {
    inner: Fft<f32>,
    from: u32,
    to: u32,
    input: Vec<f32>,
    output: Vec<f32>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// Samples in 20 ms at `rate`.
const fn frame_len(rate: u32) -> usize {
    (rate / 1000 * FRAME_MS) as usize
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz taking one 20 ms frame per call. Any pair of the
    /// rates whose 20 ms frames are whole samples works; the gateway uses 8/16/48 kHz.
    pub fn new(from: u32, to: u32) -> Result<Self, CodecError> {
        let (n_in, n_out) = (frame_len(from), frame_len(to));
        let inner = Fft::<f32>::new(from as usize, to as usize, n_in, 1, FixedSync::Both)
            .map_err(|source| CodecError::ResamplerBuild { from, to, source })?;
        // FixedSync::Both rounds the chunk to a multiple of the rates' minimum block; for the
        // pairs we use it is exact, but refuse anything that would not be one 20 ms frame.
        if inner.input_frames_next() != n_in || inner.output_frames_next() != n_out {
            return Err(CodecError::InvalidSetting {
                name: "resampler rate pair",
                value: i64::from(from) * 1_000_000 + i64::from(to),
                reason: "20 ms at these rates is not a whole FFT chunk",
            });
        }
        Ok(Self {
            inner,
            from,
            to,
            input: vec![0.0; n_in],
            output: vec![0.0; n_out],
        })
    }

    pub fn input_rate(&self) -> u32 {
        self.from
    }

    pub fn output_rate(&self) -> u32 {
        self.to
    }

    /// Samples per call in and out.
    pub fn frame_lens(&self) -> (usize, usize) {
        (self.input.len(), self.output.len())
    }

    /// Delay this resampler adds, in output samples.
    pub fn delay(&self) -> usize {
        self.inner.output_delay()
    }

    /// Converts one 20 ms frame `input` (at the input rate) into `out[..n_out]`.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<usize, CodecError> {
        let (n_in, n_out) = self.frame_lens();
        if input.len() != n_in {
            return Err(CodecError::ResamplerInput {
                expected: n_in,
                got: input.len(),
            });
        }
        let out = super::prefix_mut(out, n_out)?;
        for (f, &s) in self.input.iter_mut().zip(input) {
            *f = f32::from(s) / FULL_SCALE;
        }
        {
            // Both adapters only check the slice lengths we sized in `new`.
            let adapter_in = InterleavedSlice::new(&self.input[..], 1, n_in).map_err(|_| {
                CodecError::OutputTooSmall {
                    needed: n_in,
                    got: self.input.len(),
                }
            })?;
            let mut adapter_out = InterleavedSlice::new_mut(&mut self.output[..], 1, n_out)
                .map_err(|_| CodecError::OutputTooSmall {
                    needed: n_out,
                    got: n_out,
                })?;
            self.inner
                .process_into_buffer(&adapter_in, &mut adapter_out, None)?;
        }
        for (o, &f) in out.iter_mut().zip(&self.output) {
            *o = (f * FULL_SCALE)
                .round()
                .clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
        }
        Ok(n_out)
    }

    /// Forgets the history (e.g. after a long gap), so old audio does not leak into new.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::test_signal;

    const RATES: [u32; 3] = [8_000, 16_000, 48_000];

    #[test]
    fn every_rate_pair_keeps_a_440_hz_tone() {
        for from in RATES {
            for to in RATES {
                if from == to {
                    continue;
                }
                let mut r = Resampler::new(from, to).unwrap();
                let (n_in, n_out) = r.frame_lens();
                assert_eq!((n_in, n_out), (frame_len(from), frame_len(to)));
                let input = test_signal::sine(440.0, from, 10_000.0, 0, from as usize);
                let mut out = Vec::new();
                let mut frame = vec![0i16; n_out];
                for chunk in input.chunks_exact(n_in) {
                    assert_eq!(r.process(chunk, &mut frame).unwrap(), n_out);
                    out.extend_from_slice(&frame);
                }
                let skip = r.delay() + frame_len(to);
                test_signal::assert_tone(
                    &format!("{from}->{to}"),
                    &out[skip..],
                    to,
                    test_signal::rms(&input),
                );
            }
        }
    }

    #[test]
    fn downsampling_removes_content_above_the_new_nyquist() {
        // A 6 kHz tone exists at 16 kHz but cannot at 8 kHz: it must be filtered, not aliased
        // to 2 kHz.
        let mut r = Resampler::new(16_000, 8_000).unwrap();
        let input = test_signal::sine(6_000.0, 16_000, 10_000.0, 0, 16_000);
        let mut out = Vec::new();
        let mut frame = [0i16; 160];
        for chunk in input.chunks_exact(320) {
            r.process(chunk, &mut frame).unwrap();
            out.extend_from_slice(&frame);
        }
        let level = test_signal::rms(&out[800..]);
        assert!(level < 100.0, "alias level {level}");
    }

    #[test]
    fn wrong_frame_sizes_are_errors() {
        let mut r = Resampler::new(8_000, 48_000).unwrap();
        let mut out = [0i16; 960];
        assert!(r.process(&[0; 159], &mut out).is_err());
        assert!(r.process(&[0; 161], &mut out).is_err());
        assert!(matches!(
            r.process(&[0; 160], &mut out[..959]),
            Err(CodecError::OutputTooSmall { .. })
        ));
        assert_eq!(r.process(&[0; 160], &mut out).unwrap(), 960);
    }

    #[test]
    fn delay_is_at_most_10_ms() {
        // FixedSync::Both with one 20 ms FFT chunk: the overlap-add delay is half a chunk.
        for (from, to) in [
            (8_000, 16_000),
            (16_000, 8_000),
            (8_000, 48_000),
            (48_000, 8_000),
        ] {
            let r = Resampler::new(from, to).unwrap();
            assert!(
                r.delay() <= to as usize / 100,
                "{from}->{to}: {}",
                r.delay()
            );
        }
    }
}
