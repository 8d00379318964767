"""syncnet_python's audio front end: MFCCs of the raw int16 samples.

``SyncNetInstance.evaluate`` (joonson/syncnet_python @ 6efbb1c) reads the wav with ``scipy.io.wavfile.read``
and calls ``python_speech_features.mfcc(audio, 16000)`` (v0.6) with its defaults. The samples are NOT scaled to
[-1, 1]: scaling shifts c0 by 2 ln 32768 (about 20.8) and the released weights expect the unscaled values.

This module computes the same features in float64 numpy, step for step, without that package (which imports
``scipy.fftpack`` for its DCT: ~0.2 s at the first MFCC of every process). The steps, from the package's
documented defaults:

1. pre-emphasis ``y[0] = x[0]``, ``y[n] = x[n] - 0.97 x[n - 1]``;
2. frames of 400 samples (25 ms) every 160 (10 ms), ``1 + ceil((n - 400) / 160)`` of them (one if n <= 400),
   the last zero-padded; no window (rectangular);
3. power spectrum ``|rfft(frame, 512)|^2 / 512``; frame energy = its sum (machine eps where 0);
4. 26 triangular mel filters between 0 Hz and 8 kHz, on FFT bins ``floor(513 mel2hz(m) / 16000)`` of mel points
   evenly spaced from hz2mel(0) to hz2mel(8000), ``hz2mel(f) = 2595 log10(1 + f / 700)``; filter energies
   (machine eps where 0), natural log;
5. orthonormal DCT-II, first 13 coefficients; lifter ``1 + 11 sin(pi k / 22)``;
6. c0 replaced by the log frame energy.

tests/test_syncnet_eval.py checks the result against the package itself to 1e-12 relative.

Axis legend: k MFCC coefficients, s MFCC steps (100 per second), f filters, b FFT bins, t samples in a frame.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["MFCC_SAMPLE_RATE", "MFCC_STEPS_PER_FRAME", "MFCC_WINDOW", "mfcc", "mfcc_float64"]

MFCC_SAMPLE_RATE = 16000  # the only rate syncnet_python supports (its ffmpeg call resamples to it)
MFCC_STEPS_PER_FRAME = 4  # 10 ms MFCC steps per 40 ms video frame at 25 fps
MFCC_WINDOW = 20          # MFCC steps per 5-frame lip window (0.2 s)
# python_speech_features.mfcc defaults (v0.6) at 16 kHz.
FRAME_LENGTH = 400        # 25 ms
FRAME_STEP = 160          # 10 ms
FFT_SIZE = 512
PRE_EMPHASIS = 0.97
NUM_FILTERS = 26
NUM_COEFFICIENTS = 13
CEPSTRAL_LIFTER = 22


def mfcc(audio_int16: np.ndarray, sample_rate: int) -> np.ndarray:
    """MFCCs as syncnet_python feeds them to the network.

    Args:
        audio_int16: (num_samples,) mono int16 samples, unscaled. Other integer or float dtypes are used as
            given, but only raw int16 values match the released weights.
        sample_rate: samples per second; must be 16000 (resample before calling).

    Returns:
        (13, 1 + ceil((num_samples - 400) / 160)) float32 array; column s covers samples 160 s .. 160 s + 400.
    """
    if sample_rate != MFCC_SAMPLE_RATE:
        raise ValueError(f"syncnet MFCCs need {MFCC_SAMPLE_RATE} Hz audio, got {sample_rate} Hz; resample first")
    audio = np.asarray(audio_int16)
    if audio.ndim != 1:
        raise ValueError(f"expected mono (num_samples,) audio, got shape {audio.shape}")
    # Computed in float64, cast once as the reference's .float() does.
    return np.ascontiguousarray(mfcc_float64(audio).T, dtype=np.float32)          # k s


def mfcc_float64(audio: np.ndarray) -> np.ndarray:
    """``python_speech_features.mfcc(audio, 16000)``: (s, 13) float64 features of 16 kHz samples, unscaled."""
    emphasised = np.empty(len(audio), dtype=np.float64)
    if len(audio):
        emphasised[0] = audio[0]
        emphasised[1:] = audio[1:] - PRE_EMPHASIS * audio[:-1]
    frames = _frames(emphasised)                                                       # s t
    power = np.square(np.absolute(np.fft.rfft(frames, FFT_SIZE))) * (1.0 / FFT_SIZE)   # s b
    energy = _floor_zeros(power.sum(axis=1))
    filtered = _floor_zeros(np.dot(power, _mel_filterbank().T))                       # s f
    cepstra = np.dot(np.log(filtered), _dct_basis().T)                                 # s k
    cepstra *= 1 + (CEPSTRAL_LIFTER / 2) * np.sin(np.pi * np.arange(NUM_COEFFICIENTS) / CEPSTRAL_LIFTER)
    cepstra[:, 0] = np.log(energy)
    return cepstra


def _frames(signal: np.ndarray) -> np.ndarray:
    """(s, 400) frames every 160 samples, the last zero-padded to full length."""
    count = 1 if len(signal) <= FRAME_LENGTH else 1 + math.ceil((len(signal) - FRAME_LENGTH) / FRAME_STEP)
    padded = np.zeros((count - 1) * FRAME_STEP + FRAME_LENGTH)
    padded[: len(signal)] = signal
    return np.lib.stride_tricks.sliding_window_view(padded, FRAME_LENGTH)[::FRAME_STEP]


def _floor_zeros(values: np.ndarray) -> np.ndarray:
    """Exact zeros become machine epsilon, so that their logarithm is finite (as the package does)."""
    return np.where(values == 0, np.finfo(float).eps, values)


@lru_cache(maxsize=1)
def _mel_filterbank() -> np.ndarray:
    """(26, 257) triangular filters on the FFT bins: rising from bin[f] to bin[f + 1], falling to bin[f + 2]."""
    hz_to_mel = lambda hz: 2595 * np.log10(1 + hz / 700.0)          # noqa: E731 - the formulas, named
    mel_to_hz = lambda mel: 700 * (10 ** (mel / 2595.0) - 1)        # noqa: E731
    mel_points = np.linspace(hz_to_mel(0), hz_to_mel(MFCC_SAMPLE_RATE / 2), NUM_FILTERS + 2)
    edges = np.floor((FFT_SIZE + 1) * mel_to_hz(mel_points) / MFCC_SAMPLE_RATE)
    bins = np.arange(FFT_SIZE // 2 + 1)
    bank = np.zeros((NUM_FILTERS, len(bins)))
    for index, (low, centre, high) in enumerate(zip(edges, edges[1:], edges[2:])):
        rising = (bins >= low) & (bins < centre)
        falling = (bins >= centre) & (bins < high)
        bank[index, rising] = (bins[rising] - low) / (centre - low)
        bank[index, falling] = (high - bins[falling]) / (high - centre)
    bank.flags.writeable = False
    return bank


@lru_cache(maxsize=1)
def _dct_basis() -> np.ndarray:
    """(13, 26) rows of the orthonormal DCT-II: ``sqrt(2 / N) cos(pi k (2 n + 1) / 2N)``, row 0 ``sqrt(1 / N)``."""
    n = np.arange(NUM_FILTERS)
    k = np.arange(NUM_COEFFICIENTS)[:, None]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * NUM_FILTERS)) * np.sqrt(2.0 / NUM_FILTERS)
    basis[0] = np.sqrt(1.0 / NUM_FILTERS)
    basis.flags.writeable = False
    return basis
