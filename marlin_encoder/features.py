"""Sliding-window MARLIN features for a face clip already in memory (no files, no face detector).

Axis legend: t frames, c channels (RGB), h/w height/width, b windows in a batch, n tokens, d feature width.

Windows: window `i` starts at frame `i·stride` and reads `window` frames spaced `sample_rate` apart, so it
spans `window·sample_rate` source frames. Windows continue until one reaches the last frame; positions past
the end repeat the last frame (the reference's "same" padding for short videos, `padding_video`), and such
windows are reported as padded. With `stride > window·sample_rate` some frames fall between windows by design.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .model import Marlin

__all__ = ["FeatureExtractor", "WindowFeatures"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowFeatures:
    """Features of every window of a clip.

    Attributes:
        features: (num_windows, d) pooled, or (num_windows, n, d) per token; float32 on the model's device.
        starts: (num_windows,) int64 first source frame of each window.
        frame_indices: (num_windows, window) int64 source frame read at each window position (clamped to the
            last frame where the clip ran out).
        padded: (num_windows,) bool, True where the window repeats the last frame to fill up.
    """

    features: Tensor
    starts: Tensor
    frame_indices: Tensor
    padded: Tensor


class FeatureExtractor:
    """Run a MARLIN encoder over a whole clip in fixed-size windows.

    Puts the model in eval mode. Inputs are resized to the model's `img_size` when needed (bilinear with
    antialiasing); give square face crops, or the aspect ratio is changed.

    Args:
        model: a `Marlin` (encoder only is enough).
        window: frames per window; must equal the model's `n_frames` (its positional table is fixed).
        stride: source frames between consecutive window starts.
        sample_rate: take every k-th source frame inside a window (the reference's temporal sample rate).
        per_token: return every token's feature (n, d) per window instead of the pooled (d,) one.
        batch_size: windows per forward pass (bounds memory: batch_size·window frames at img_size).
        autocast_dtype: e.g. torch.bfloat16 to run under autocast; None runs in the model's dtype.
    """

    def __init__(
        self,
        model: Marlin,
        window: int = 16,
        stride: int = 16,
        sample_rate: int = 1,
        per_token: bool = False,
        batch_size: int = 4,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if window != model.config.n_frames:
            raise ValueError(f"window {window} must equal the model's n_frames {model.config.n_frames}")
        if stride < 1 or sample_rate < 1 or batch_size < 1:
            raise ValueError(
                f"stride, sample_rate and batch_size must be >= 1, got {stride}, {sample_rate}, {batch_size}"
            )
        self.model = model.eval()
        self.window = window
        self.stride = stride
        self.sample_rate = sample_rate
        self.per_token = per_token
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self._warned_aspect = False

    def plan(self, num_frames: int) -> tuple[Tensor, Tensor, Tensor]:
        """Window starts, source frame indices and padded flags for a clip of `num_frames` frames.

        Args:
            num_frames: frames in the clip (>= 1).

        Returns:
            starts (w,), frame_indices (w, window), padded (w,) — as in `WindowFeatures`.
        """
        if num_frames < 1:
            raise ValueError("the clip has no frames")
        span = self.window * self.sample_rate
        starts = [0]
        while starts[-1] + span < num_frames:
            starts.append(starts[-1] + self.stride)
        start_tensor = torch.tensor(starts, dtype=torch.int64)
        wanted = start_tensor[:, None] + self.sample_rate * torch.arange(self.window)[None, :]
        padded = (wanted >= num_frames).any(dim=1)
        return start_tensor, wanted.clamp(max=num_frames - 1), padded

    @torch.no_grad()
    def __call__(self, clip: Tensor, channels_last: bool | None = None) -> WindowFeatures:
        """Features of every window.

        Args:
            clip: (3, t, h, w) or (t, h, w, 3); uint8 in 0..255 or float in [0, 1]; RGB.
            channels_last: layout override when the shape is ambiguous (e.g. t == 3); None guesses.

        Returns:
            `WindowFeatures` with float32 features.
        """
        clip = self._channels_last(clip, channels_last)
        num_frames = clip.shape[0]
        starts, frame_indices, padded = self.plan(num_frames)
        device = self.model.device
        outputs = []
        for first in range(0, len(starts), self.batch_size):
            indices = frame_indices[first:first + self.batch_size]
            frames = self._prepare(clip[indices.flatten().to(clip.device)].to(device))
            video = rearrange(frames, "(b t) c h w -> b c t h w", b=indices.shape[0])
            with torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                features = self.model.extract_features(video, keep_seq=self.per_token)
            outputs.append(features.float())
        return WindowFeatures(torch.cat(outputs), starts, frame_indices, padded)

    @staticmethod
    def _channels_last(clip: Tensor, channels_last: bool | None) -> Tensor:
        """Return (t, h, w, 3) without copying the whole clip."""
        if clip.ndim != 4:
            raise ValueError(f"expected a 4-D clip (3, t, h, w) or (t, h, w, 3), got shape {tuple(clip.shape)}")
        if channels_last is None:
            first, last = clip.shape[0] == 3, clip.shape[-1] == 3
            if first == last:
                raise ValueError(f"cannot tell the channel axis of shape {tuple(clip.shape)}; pass channels_last=")
            channels_last = last
        clip = clip if channels_last else rearrange(clip, "c t h w -> t h w c")
        if clip.shape[-1] != 3:
            raise ValueError(f"expected 3 RGB channels, got shape {tuple(clip.shape)}")
        return clip

    def _prepare(self, frames: Tensor) -> Tensor:
        """(k, h, w, 3) uint8/float -> (k, 3, img, img) float32 in [0, 1] (no mean/std normalisation)."""
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255
        elif frames.is_floating_point():
            frames = frames.float()
            if frames.numel() and (frames.min() < -1e-3 or frames.max() > 1 + 1e-3):
                raise ValueError("float clips must be in [0, 1]; divide 0..255 frames by 255 or pass uint8")
        else:
            raise ValueError(f"clip dtype must be uint8 or floating point, got {frames.dtype}")
        frames = rearrange(frames, "k h w c -> k c h w")
        size = self.model.config.img_size
        if frames.shape[-2:] != (size, size):
            if frames.shape[-2] != frames.shape[-1] and not self._warned_aspect:
                self._warned_aspect = True
                logger.warning("resizing non-square %s frames to %dx%d changes the aspect ratio",
                               tuple(frames.shape[-2:]), size, size)
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            frames = frames.clamp(0, 1)
        return frames.contiguous()
