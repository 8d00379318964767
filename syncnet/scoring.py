"""LSE-D / LSE-C: syncnet_python's ``SyncNetInstance.evaluate`` on already-decoded frames.

Reproduces joonson/syncnet_python ``SyncNetInstance.py`` @ 6efbb1c step for step (see
``conformance/README.md``, "syncnet_eval"): the same window count (including its off-by-one), the same MFCC
slicing, the same zero-padded distance matrix with ``pairwise_distance``'s eps, and the same statistics. Only
the work is organised differently: all windows at once, the lip tower run once over the clip
(:mod:`syncnet.fast_encoders`), float32 throughout and no file round trips.

What stays with the caller: decoding, the 224x224 face crops, resampling to 16 kHz and, to match published
numbers exactly, the reference's JPEG round trip of every frame (ffmpeg mjpeg defaults).

Axis legend: t frames, v windows (one per evaluated frame), d embedding width, j offsets (2 * vshift + 1).
"""
from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from syncnet.fast_encoders import FRAME_SIZE, TEMPORAL_TILE, FastAudioEncoder, FastLipEncoder
from syncnet.median_filter import median_filter
from syncnet.mfcc import MFCC_SAMPLE_RATE, MFCC_STEPS_PER_FRAME, MFCC_WINDOW, mfcc
from syncnet.syncnet_v2 import LIP_WINDOW, SyncNetV2

__all__ = ["AUDIO_SAMPLES_PER_FRAME", "SyncNetScorer", "calc_pdist", "evaluate_clip"]

logger = logging.getLogger(__name__)

VIDEO_FPS = 25                                            # SyncNet's frame rate: 4 MFCC steps per frame
AUDIO_SAMPLES_PER_FRAME = MFCC_SAMPLE_RATE // VIDEO_FPS   # 640, the reference's len(audio) / 640
MEDIAN_FILTER_SIZE = 9                                     # framewise confidence smoothing (the reference's medfilt)
PAIRWISE_EPS = 1e-6                                        # torch.nn.functional.pairwise_distance default
# Batch sizes bound memory on long clips and keep activations cache-sized; they do not change the results
# beyond float32 rounding (the same clip is always batched the same way).
AUDIO_WINDOWS_PER_BATCH = 64
DISTANCE_WINDOWS_PER_BATCH = 512


def calc_pdist(lip_features: torch.Tensor, aud_features: torch.Tensor, vshift: int) -> torch.Tensor:
    """The reference's ``calc_pdist``: distance of every lip window to audio windows shifted by -vshift..vshift.

    Audio is zero-padded by ``vshift`` rows on each side, so shifts past either end compare against zero vectors
    (as the reference does).

    Args:
        lip_features: (v, d) lip embeddings.
        aud_features: (v, d) audio embeddings.
        vshift: largest shift in frames.

    Returns:
        (v, 2 * vshift + 1) tensor; ``[v, j] = ||lip[v] - audpad[v + j] + 1e-6||_2``, column ``vshift`` is no shift.
    """
    if lip_features.shape != aud_features.shape:
        raise ValueError(f"lip {tuple(lip_features.shape)} and audio {tuple(aud_features.shape)} features differ")
    num_offsets = 2 * vshift + 1
    padded = F.pad(aud_features, (0, 0, vshift, vshift))
    shifted = padded.unfold(0, num_offsets, 1).transpose(1, 2)                  # v j d (a view)
    rows = []
    for start in range(0, lip_features.shape[0], DISTANCE_WINDOWS_PER_BATCH):
        stop = start + DISTANCE_WINDOWS_PER_BATCH
        lip = lip_features[start:stop].unsqueeze(1).expand(-1, num_offsets, -1)  # v j d
        rows.append(F.pairwise_distance(lip, shifted[start:stop], p=2.0, eps=PAIRWISE_EPS))
    return torch.cat(rows)


def _describe(array: object) -> str:
    return f"{type(array).__name__} {getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}"


def _validate_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        expected = f"(t, {FRAME_SIZE}, {FRAME_SIZE}, 3) uint8 BGR array"
        raise ValueError(f"frames must be a {expected}, got {_describe(frames)}")
    if frames.shape[1:3] != (FRAME_SIZE, FRAME_SIZE):
        raise ValueError(
            f"frames are {frames.shape[1]}x{frames.shape[2]}; SyncNet needs {FRAME_SIZE}x{FRAME_SIZE} face crops "
            "(resize them before scoring)"
        )


def _validate_audio(audio_int16: np.ndarray, sample_rate: int) -> None:
    if sample_rate != MFCC_SAMPLE_RATE:
        raise ValueError(f"audio is {sample_rate} Hz; SyncNet needs {MFCC_SAMPLE_RATE} Hz (resample it first)")
    if not isinstance(audio_int16, np.ndarray) or audio_int16.dtype != np.int16 or audio_int16.ndim != 1:
        raise ValueError(
            f"audio must be mono int16 samples (num_samples,), got {_describe(audio_int16)}; "
            "float audio in [-1, 1] would shift the MFCC energy term"
        )


class _CheckedBlocks:
    """Validates blocks of frames as they pass, counts every frame, and passes on at most `limit` of them."""

    def __init__(self, blocks: Iterable[np.ndarray], limit: int) -> None:
        self.blocks = blocks
        self.limit = limit
        self.count = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for block in self.blocks:
            _validate_frames(block)
            room = max(0, self.limit - self.count)
            self.count += block.shape[0]
            if room > 0:
                yield torch.from_numpy(np.ascontiguousarray(block[:room]))


class SyncNetScorer:
    """LSE-D / LSE-C scorer: a :class:`SyncNetV2` prepared for fast evaluation, built once for many clips.

    Building folds and transforms the weights (a snapshot: build a new scorer after changing them). Scores use
    eval semantics whatever the model's mode, and the model is never modified.

    Args:
        model: a loaded SyncNetV2 (any device; frames and audio are moved to it in chunks).
    """

    def __init__(self, model: SyncNetV2) -> None:
        self.device = next(model.parameters()).device
        self.lip_encoder = FastLipEncoder(model)
        self.audio_encoder = FastAudioEncoder(model)

    def __call__(
        self,
        frames: np.ndarray,
        audio_int16: np.ndarray,
        *,
        sample_rate: int = MFCC_SAMPLE_RATE,
        vshift: int = 15,
        batch_size: int = 20,
    ) -> dict[str, Any]:
        """Score one clip; see :func:`evaluate_clip` for the arguments and the returned dict."""
        _validate_frames(frames)
        return self.score_stream([frames], audio_int16, sample_rate=sample_rate, vshift=vshift,
                                 batch_size=batch_size)

    def score_stream(
        self,
        blocks: Iterable[np.ndarray],
        audio_int16: np.ndarray,
        *,
        sample_rate: int = MFCC_SAMPLE_RATE,
        vshift: int = 15,
        batch_size: int = 20,
    ) -> dict[str, Any]:
        """Score a clip whose frames arrive in consecutive blocks (a long video in bounded memory).

        The same numbers as scoring the stacked frames: the lip embeddings are computed span by span exactly
        as on the whole clip.

        Args:
            blocks: (n, 224, 224, 3) uint8 BGR face crops at 25 fps, in order.
            audio_int16, sample_rate, vshift, batch_size: as :func:`evaluate_clip`.
        """
        _validate_audio(audio_int16, sample_rate)
        audio_frames = len(audio_int16) // AUDIO_SAMPLES_PER_FRAME
        # Frames past the audio are never scored; the last scored window's group reads at most TEMPORAL_TILE - 2
        # frames past min_length, so a margin of two groups computes every scored window from real frames.
        counted = _CheckedBlocks(blocks, limit=audio_frames + 2 * TEMPORAL_TILE)
        with torch.inference_mode():
            lip_all, _ = self.lip_encoder.stream(counted, batch_size)
        num_frames = counted.count
        if num_frames / VIDEO_FPS != len(audio_int16) / sample_rate:
            # Informational, as in the reference; the shorter stream bounds the evaluation.
            logger.info(
                "audio (%.4fs) and video (%.4fs) lengths differ",
                len(audio_int16) / sample_rate, num_frames / VIDEO_FPS,
            )
        min_length = min(num_frames, audio_frames)
        # The reference evaluates min_length - 5 windows, one fewer than fit; kept for identical scores.
        num_windows = min_length - LIP_WINDOW
        if num_windows < 1:
            raise ValueError(
                f"clip too short: {min_length} usable frames, SyncNet scoring needs at least {LIP_WINDOW + 1}"
            )

        features = mfcc(audio_int16, sample_rate)                                   # 13 s
        with torch.inference_mode():
            audio_windows = torch.from_numpy(features).unfold(1, MFCC_WINDOW, MFCC_STEPS_PER_FRAME)  # 13 v 20
            audio_windows = audio_windows.permute(1, 0, 2).unsqueeze(1)[:num_windows]              # v 1 13 20
            aud = torch.cat([
                self.audio_encoder(audio_windows[start : start + AUDIO_WINDOWS_PER_BATCH].to(self.device))
                for start in range(0, num_windows, AUDIO_WINDOWS_PER_BATCH)
            ]).cpu()
            lip = self.lip_encoder.head(lip_all[:num_windows]).cpu()
            dists = calc_pdist(lip, aud, vshift)                                     # v j
            mdist = dists.mean(0)
            minval, minidx = torch.min(mdist, 0)
            median = torch.median(mdist)   # lower middle value for even counts, as the reference's torch.median
            confidence = median - minval
            fconf = (median - dists[:, minidx]).numpy()
        # Clips shorter than the filter are zero-padded, as in the reference.
        fconfm = median_filter(fconf, MEDIAN_FILTER_SIZE).astype(np.float32)
        offset = vshift - int(minidx)
        logger.info("AV offset %d, min dist %.3f, confidence %.3f", offset, float(minval), float(confidence))
        return {
            "offset": offset,
            "min_dist": float(minval),
            "confidence": float(confidence),
            "dists": dists.numpy(),
            "mdist": mdist.numpy(),
            "minidx": int(minidx),
            "fconfm": fconfm,
            "lip_features": lip.numpy(),
            "aud_features": aud.numpy(),
            "mfcc": features,
            "num_frames": int(num_frames),
            "min_length": int(min_length),
        }


def evaluate_clip(
    frames: np.ndarray,
    audio_int16: np.ndarray,
    model: SyncNetV2,
    *,
    sample_rate: int = MFCC_SAMPLE_RATE,
    vshift: int = 15,
    batch_size: int = 20,
) -> dict[str, Any]:
    """Score audio-visual sync of one clip exactly as ``SyncNetInstance.evaluate`` does.

    Uses a :class:`SyncNetScorer` for ``model``, built on the first call and reused while the model's weights
    stay unchanged (any in-place update or replaced tensor builds a new one).

    Args:
        frames: (t, 224, 224, 3) uint8 BGR face crops at 25 fps (cv2 channel order, no normalisation).
        audio_int16: (num_samples,) mono int16 samples at ``sample_rate``, unscaled.
        model: a loaded :class:`SyncNetV2`. Scores use eval semantics whatever its mode; it is not modified.
        sample_rate: must be 16000.
        vshift: largest audio shift tried, in frames (offsets -vshift..vshift).
        batch_size: windows per forward pass; affects memory and speed only.

    Returns:
        dict with
        ``offset`` (int, vshift - minidx: positive means the audio leads), ``min_dist`` (float, LSE-D),
        ``confidence`` (float, LSE-C = median(mdist) - min_dist), ``dists`` ((v, 2 vshift + 1) float32),
        ``mdist`` ((2 vshift + 1,) float32, mean over windows), ``minidx`` (int), ``fconfm`` ((v,) float32,
        median-filtered framewise confidence), ``lip_features`` / ``aud_features`` ((v, 1024) float32),
        ``mfcc`` ((13, s) float32), ``num_frames`` (int, t) and ``min_length`` (int). v = min_length - 5.

    Raises:
        ValueError: on frames that are not 224x224 uint8, audio that is not 16 kHz int16, or a clip shorter
            than 6 frames.
    """
    return _scorer_for(model)(frames, audio_int16, sample_rate=sample_rate, vshift=vshift, batch_size=batch_size)


# Scorers built by evaluate_clip, one per live model: folding and transforming the weights takes ~90 ms, a few
# percent of scoring a short clip, and callers typically score many clips with one model.
_SCORERS: "weakref.WeakKeyDictionary[SyncNetV2, tuple[tuple, SyncNetScorer]]" = weakref.WeakKeyDictionary()


def _weights_fingerprint(model: SyncNetV2) -> tuple | None:
    """Changes whenever the model's weights may have: a scorer snapshots them, so a stale one must not be reused.

    In-place updates (``load_state_dict``, optimiser steps, BatchNorm running statistics) bump a tensor's
    version counter; replaced or moved tensors change identity, storage or device. None where a tensor keeps
    no version counter (created under ``torch.inference_mode``): such a model is never cached.
    """
    try:
        return tuple((id(t), t.data_ptr(), t._version, t.device, t.dtype)
                     for t in itertools.chain(model.parameters(), model.buffers()))
    except RuntimeError:
        return None


def _scorer_for(model: SyncNetV2) -> SyncNetScorer:
    fingerprint = _weights_fingerprint(model)
    cached = _SCORERS.get(model)
    if fingerprint is not None and cached is not None and cached[0] == fingerprint:
        return cached[1]
    scorer = SyncNetScorer(model)
    if fingerprint is not None:
        _SCORERS[model] = (fingerprint, scorer)
    return scorer
