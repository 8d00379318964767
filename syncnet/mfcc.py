"""syncnet_python's audio front end: MFCCs of the raw int16 samples.

``SyncNetInstance.evaluate`` (joonson/syncnet_python @ 6efbb1c) reads the wav with ``scipy.io.wavfile.read``
and calls ``python_speech_features.mfcc(audio, 16000)`` with its defaults (25 ms rectangular window, 10 ms
step, nfft 512, 26 filters, 13 coefficients, pre-emphasis 0.97, ceplifter 22, c0 replaced by the log frame
energy). The samples are NOT scaled to [-1, 1]: scaling shifts c0 by 2 ln 32768 (about 20.8) and the released
weights expect the unscaled values.

Axis legend: k MFCC coefficients, s MFCC steps (100 per second).
"""
from __future__ import annotations

import numpy as np

__all__ = ["MFCC_SAMPLE_RATE", "MFCC_STEPS_PER_FRAME", "MFCC_WINDOW", "mfcc"]

MFCC_SAMPLE_RATE = 16000  # the only rate syncnet_python supports (its ffmpeg call resamples to it)
MFCC_STEPS_PER_FRAME = 4  # 10 ms MFCC steps per 40 ms video frame at 25 fps
MFCC_WINDOW = 20          # MFCC steps per 5-frame lip window (0.2 s)


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
    import python_speech_features   # imported on use: it pulls in scipy, which lip-syncing never needs

    # Computed in float64 by python_speech_features, cast once as the reference's .float() does.
    features = python_speech_features.mfcc(audio, sample_rate)     # s k
    return np.ascontiguousarray(features.T, dtype=np.float32)        # k s
