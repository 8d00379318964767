"""Wav2Lip's mel-spectrogram front end and the per-frame mel windows that feed the generator.

Constants follow Wav2Lip's `hparams.py` (Rudrabha/Wav2Lip @ 5c90fa9b); the pipeline is that of its `audio.py`:
pre-emphasis -> STFT -> |.| -> Slaney mel -> dB -> symmetric scaling to [-4, 4].
Axis legend: m mel bins (80), s mel steps (80 per second of audio), f video frames.
"""
from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

SAMPLE_RATE = 16000          # hparams.sample_rate
NUM_MELS = 80                # hparams.num_mels
N_FFT = 800                  # hparams.n_fft (50 ms at 16 kHz)
HOP_SIZE = 200               # hparams.hop_size: 12.5 ms at 16 kHz, so 80 mel steps per second
WIN_SIZE = 800               # hparams.win_size
PREEMPHASIS = 0.97           # hparams.preemphasis
FMIN = 55                    # hparams.fmin: drops low-frequency hum (hparams comment)
FMAX = 7600                  # hparams.fmax
MIN_LEVEL_DB = -100          # hparams.min_level_db
REF_LEVEL_DB = 20            # hparams.ref_level_db
MAX_ABS_VALUE = 4.0          # hparams.max_abs_value, with symmetric_mels=True
MEL_STEPS_PER_SECOND = SAMPLE_RATE / HOP_SIZE   # 80
MEL_WINDOW_STEPS = 16        # syncnet_mel_step_size: 0.2 s of audio per video frame
SILENCE = -MAX_ABS_VALUE     # the scaled value of anything at or below MIN_LEVEL_DB


def _hz_to_mel_slaney(frequencies: NDArray[np.float64]) -> NDArray[np.float64]:
    # Slaney's Auditory Toolbox scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    linear_step = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / linear_step
    log_step = np.log(6.4) / 27.0
    frequencies = np.asarray(frequencies, dtype=np.float64)
    mels = frequencies / linear_step
    above = frequencies >= min_log_hz
    mels[above] = min_log_mel + np.log(frequencies[above] / min_log_hz) / log_step
    return mels


def _mel_to_hz_slaney(mels: NDArray[np.float64]) -> NDArray[np.float64]:
    linear_step = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / linear_step
    log_step = np.log(6.4) / 27.0
    mels = np.asarray(mels, dtype=np.float64)
    frequencies = linear_step * mels
    above = mels >= min_log_mel
    frequencies[above] = min_log_hz * np.exp(log_step * (mels[above] - min_log_mel))
    return frequencies


@functools.lru_cache(maxsize=1)
def mel_basis() -> NDArray[np.float64]:
    """The (80, 401) Slaney-normalised triangular filterbank of Wav2Lip (librosa's `htk=False, norm="slaney"`)."""
    fft_frequencies = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz_slaney(
        np.linspace(_hz_to_mel_slaney(np.array([FMIN]))[0], _hz_to_mel_slaney(np.array([FMAX]))[0], NUM_MELS + 2)
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_frequencies[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Area normalisation: each filter integrates to the same energy whatever its width.
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=1)
def _hann_window() -> NDArray[np.float64]:
    # Periodic Hann (scipy.signal.get_window("hann", 800, fftbins=True)), as librosa.stft uses.
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN_SIZE) / WIN_SIZE)


def _stft_magnitude(signal: NDArray[np.float64]) -> NDArray[np.float64]:
    # center=True with reflect padding, as librosa 0.7 did when the released weights were trained.
    padded = np.pad(signal, N_FFT // 2, mode="reflect")
    num_frames = 1 + (len(padded) - N_FFT) // HOP_SIZE
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_SIZE][:num_frames]
    return np.abs(np.fft.rfft(frames * _hann_window(), axis=1)).T   # (401, s)


def melspectrogram(wav: NDArray[np.floating]) -> NDArray[np.float32]:
    """Wav2Lip's normalised log-mel spectrogram.

    Args:
        wav: (num_samples,) mono audio at 16 kHz, float in [-1, 1].

    Returns:
        (80, 1 + num_samples // 200) float32 in [-4, 4]; -4 is silence. 80 columns per second.
    """
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise ValueError(f"melspectrogram expects mono audio of shape (num_samples,), got {wav.shape}")
    num_steps = 1 + len(wav) // HOP_SIZE
    if len(wav) <= N_FFT // 2:
        # Reflect padding needs more samples than the pad; such a clip is shorter than 25 ms anyway.
        wav = np.pad(wav, (0, N_FFT // 2 + 1 - len(wav)))
    emphasised = np.empty_like(wav)
    emphasised[0] = wav[0]
    emphasised[1:] = wav[1:] - PREEMPHASIS * wav[:-1]
    mel = mel_basis() @ _stft_magnitude(emphasised)[:, :num_steps]
    decibels = 20 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    scaled = 2 * MAX_ABS_VALUE * (decibels - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def mel_window_starts(
    frame_times: NDArray[np.floating],
    frame_indices: NDArray[np.integer] | None = None,
    *,
    timing: str = "training",
    fps: float | None = None,
    num_mel_steps: int | None = None,
) -> NDArray[np.int64]:
    """First mel step of each video frame's 16-step (0.2 s) audio window.

    Args:
        frame_times: (f,) presentation time of each output frame in seconds, relative to the audio start.
        frame_indices: (f,) output frame numbers, used by "official" timing; default 0..f-1.
        timing: "training" gives frame f the window that starts one 25-fps frame (40 ms) before it, as
            Wav2Lip's training data loader does (`crop_audio_window(spec, frame - 1)` with 1-based frames,
            i.e. step int(3.2 * (f - 1)) at 25 fps), computed from the frame's own time so any frame rate
            works. "official" reproduces `inference.py`: int(i * 80 / fps) from the frame index, with
            windows past the end clamped to the last full window.
        fps: frame rate for "official" timing (the nominal rate `inference.py` would be given).
        num_mel_steps: mel length; required for "official" clamping.

    Returns:
        (f,) int64 start steps; "training" starts may fall outside the mel (see `mel_windows`).
    """
    frame_times = np.asarray(frame_times, dtype=np.float64)
    if timing == "training":
        # The 1e-6-step slack absorbs float error in times such as 6/25 - 0.04 (exactly 16 steps).
        lead = 1.0 / 25.0
        return np.floor((frame_times - lead) * MEL_STEPS_PER_SECOND + 1e-6).astype(np.int64)
    if timing == "official":
        if fps is None or num_mel_steps is None:
            raise ValueError("official mel timing needs fps and num_mel_steps")
        multiplier = 80.0 / fps   # inference.py: mel_idx_multiplier = 80. / fps
        if frame_indices is None:
            frame_indices = np.arange(len(frame_times))
        starts = np.array([int(int(index) * multiplier) for index in frame_indices], dtype=np.int64)
        return np.minimum(starts, max(num_mel_steps - MEL_WINDOW_STEPS, 0))
    raise ValueError(f"unknown mel timing {timing!r}; expected 'training' or 'official'")


def mel_windows(mel: NDArray[np.float32], starts: NDArray[np.int64], length: int = MEL_WINDOW_STEPS
                ) -> NDArray[np.float32]:
    """Cut one (80, length) window per frame, padding with silence where a window leaves the audio.

    Args:
        mel: (80, s) output of `melspectrogram`.
        starts: (f,) first step of each window (`mel_window_starts`).
        length: window length in steps (16 = 0.2 s, what the generator takes).

    Returns:
        (f, 80, length) float32.
    """
    num_steps = mel.shape[1]
    padded = np.full((mel.shape[0], num_steps + 2 * length), SILENCE, dtype=np.float32)
    padded[:, length : length + num_steps] = mel
    # Starts before -length or after the end see only silence; clamping keeps them inside the padding.
    offsets = np.clip(np.asarray(starts, dtype=np.int64) + length, 0, num_steps + length)
    columns = offsets[:, None] + np.arange(length)[None, :]
    return np.ascontiguousarray(padded[:, columns].transpose(1, 0, 2))
