"""Decode any audio file, or the audio track of any video container, to float32 mono (PyAV + soxr)."""
from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import soxr
from numpy.typing import NDArray

from lipsync.errors import LipSyncError

logger = logging.getLogger(__name__)


def open_media(path: str | Path, what: str) -> av.container.InputContainer:
    """Open a media file with PyAV, turning every failure into a one-line `LipSyncError`.

    Args:
        path: the file.
        what: how the user knows this file ("audio", "face video"), used in messages.
    """
    path = Path(path)
    if not path.exists():
        raise LipSyncError(f"{what} file not found: {path}")
    if path.is_dir():
        raise LipSyncError(f"{what} path is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise LipSyncError(f"{what} file is empty: {path}")
    try:
        return av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise LipSyncError(f"cannot read {what} file {path}: {_describe(error)}") from None


def _describe(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error).splitlines()[0]


def load_audio(path: str | Path, sr: int = 16000) -> NDArray[np.float32]:
    """Decode the first audio stream of `path` and return it as mono float32 at `sr` Hz.

    Channels are averaged (as librosa's `to_mono`); other rates are resampled with soxr's high-quality
    filter (librosa's default `soxr_hq`). For a 16 kHz s16 file the result is exactly `int16 / 32768`.

    Args:
        path: wav, mp3, m4a/aac, flac, ogg, or a video container with an audio track. The container is
            probed by content, so a mislabelled extension is fine.
        sr: output sample rate in Hz.

    Returns:
        (num_samples,) float32, nominally in [-1, 1].

    Raises:
        LipSyncError: missing, empty or corrupt file, no audio stream, or no decodable samples.
    """
    samples, native_rate = decode_audio(path)
    mono = samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 else samples[0]
    if native_rate != sr:
        mono = soxr.resample(mono, native_rate, sr, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)


def decode_audio(path: str | Path) -> tuple[NDArray[np.float32], int]:
    """Decode the first audio stream at its native rate.

    Returns:
        ((channels, num_samples) float32, sample_rate).
    """
    with open_media(path, "audio") as container:
        if not container.streams.audio:
            raise LipSyncError(f"no audio stream in {path}")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        # Planar float keeps channels apart; s16 -> flt in swresample is an exact division by 32768.
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        chunks: list[NDArray[np.float32]] = []
        try:
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray())
            for converted in resampler.resample(None):
                chunks.append(converted.to_ndarray())
        except av.FFmpegError as error:
            raise LipSyncError(f"cannot decode audio in {path}: {_describe(error)}") from None
        rate = stream.rate
    if not chunks or sum(chunk.shape[1] for chunk in chunks) == 0:
        raise LipSyncError(f"audio stream in {path} holds no samples")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), int(rate)
