"""Datasets over preprocessed clips (`lipsync.train.clips`), keyed by `(index, epoch)` so that every
sample is a pure function of its key (see `ResumableSampler`).

Axis legend: t frames, h/w pixels, c channels (BGR), m mel bins, s mel steps.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from einops import rearrange
from numpy.typing import NDArray
from torch.utils.data import Dataset

from lipsync.audio.mel import MEL_STEPS_PER_SECOND, mel_window_starts, mel_windows
from lipsync.errors import LipSyncError
from lipsync.train.clips import Clip, find_clips
from marlin_encoder import landmarks_to_label_maps, masking
from marlin_encoder.masking import MaskConfig, MaskGenerator

logger = logging.getLogger(__name__)

VAL_BUCKETS = 20        # a clip is in the validation split when crc32(name) % 20 == 0: ~5 %


def split_clips(root: Path) -> tuple[list[Path], list[Path]]:
    """(train, val) clip directories: `root/train` and `root/val` when present (LRS2), else a stable
    ~5 % split by name hash with at least one validation clip when there are two or more clips."""
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return find_clips(root / "train"), find_clips(root / "val")
    clips = find_clips(root)
    if len(clips) == 1:
        return clips, []
    hashes = [zlib.crc32(str(clip.relative_to(root)).encode()) for clip in clips]
    val = [clip for clip, value in zip(clips, hashes) if value % VAL_BUCKETS == 0]
    if not val:
        val = [clips[int(np.argmin([value % VAL_BUCKETS for value in hashes]))]]
    return [clip for clip in clips if clip not in val], val


def mel_start(time: float) -> int:
    """First mel step of audio that starts at `time` seconds (Wav2Lip's `crop_audio_window`: int(80 t))."""
    return int(np.floor(time * MEL_STEPS_PER_SECOND + 1e-6))


def lower_half_stack(faces: NDArray[np.uint8]) -> torch.Tensor:
    """(t, h, w, 3) uint8 faces -> (3 t, h / 2, w) float in [0, 1]: the expert's input, frame-major channels."""
    lower = faces[:, faces.shape[1] // 2 :]
    return torch.from_numpy(rearrange(np.asarray(lower, dtype=np.float32), "t h w c -> (t c) h w") / 255.0)


class _FaceWindows(Dataset):
    """Items are windows of `num_frames` consecutive frames that all have a face (optionally filtered per
    clip by `keep(clip, starts)`), keyed by `(index, epoch)`."""

    def __init__(self, clip_dirs: list[Path], num_frames: int, seed: int) -> None:
        self.clips = [Clip(directory) for directory in clip_dirs]
        self.num_frames = num_frames
        self.seed = seed
        self.starts_by_clip = [self.keep(clip, clip.window_starts(num_frames)) for clip in self.clips]
        self.windows = [(clip_index, int(start)) for clip_index, starts in enumerate(self.starts_by_clip)
                        for start in starts]
        if not self.windows:
            raise LipSyncError(f"no {num_frames}-frame window with a face in every frame in {len(self.clips)} clip(s)")

    def keep(self, clip: Clip, starts: NDArray[np.int64]) -> NDArray[np.int64]:
        return starts

    def __len__(self) -> int:
        return len(self.windows)

    def draw(self, key: tuple[int, int]) -> tuple[np.random.Generator, Clip, int, NDArray[np.int64]]:
        """The key's rng, its clip and window start, and the other usable starts of that clip."""
        index, epoch = key
        clip_index, start = self.windows[index]
        starts = self.starts_by_clip[clip_index]
        return np.random.default_rng([self.seed, epoch, index]), self.clips[clip_index], start, starts[starts != start]


class SyncWindowDataset(_FaceWindows):
    """In-sync and off-sync (face window, audio window) pairs for training a SyncNet expert.

    As Wav2Lip's `color_syncnet_train.py`: half the samples pair a window's audio with its own frames
    (target 1), half with another window of the same clip (target 0). The audio window starts at the
    first frame's timestamp (no lead).

    Args:
        clip_dirs: preprocessed clips.
        num_frames: frames per face window.
        mel_steps: audio window length in mel steps.
        seed: the run's seed.
    """

    def __init__(self, clip_dirs: list[Path], num_frames: int, mel_steps: int, seed: int = 0) -> None:
        self.mel_steps = mel_steps
        super().__init__(clip_dirs, num_frames, seed)

    def keep(self, clip: Clip, starts: NDArray[np.int64]) -> NDArray[np.int64]:
        # The audio window must lie inside the clip's mel.
        fits = [mel_start(clip.times[start]) + self.mel_steps <= clip.mel.shape[1] for start in starts]
        return starts[np.array(fits, dtype=bool)] if len(starts) else starts

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        rng, clip, start, others = self.draw(key)
        in_sync = rng.random() < 0.5 or not len(others)
        face_start = start if in_sync else int(others[rng.integers(len(others))])
        audio_start = mel_start(clip.times[start])
        mel = clip.mel[:, audio_start : audio_start + self.mel_steps]
        return {
            "face": lower_half_stack(clip.faces96[face_start : face_start + self.num_frames]),
            "mel": torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None],
            "target": torch.tensor([1.0 if in_sync else 0.0]),
        }


class GeneratorWindowDataset(_FaceWindows):
    """T-frame training windows for a lip-sync generator (Wav2Lip's `wav2lip_train.py` data, any T).

    Each item: the target window, a reference window from elsewhere in the same clip, the generator input
    (masked target + reference), per-frame mel windows (Wav2Lip's training alignment: each starts 40 ms
    before its frame, padded with silence at the clip edges) and the expert's audio window for the whole
    window (starting at its first frame).

    Args:
        clip_dirs: preprocessed clips.
        num_frames: T.
        expert_mel_steps: audio window of the sync expert, in mel steps.
        seed: the run's seed.
    """

    def __init__(self, clip_dirs: list[Path], num_frames: int, expert_mel_steps: int = 16, seed: int = 0) -> None:
        self.expert_mel_steps = expert_mel_steps
        super().__init__(clip_dirs, num_frames, seed)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        rng, clip, start, others = self.draw(key)
        reference_start = int(others[rng.integers(len(others))]) if len(others) else start
        frames = slice(start, start + self.num_frames)
        target = _to_chw(clip.faces96[frames])                                   # (3, t, h, w)
        reference = _to_chw(clip.faces96[reference_start : reference_start + self.num_frames])
        masked = target.clone()
        masked[:, :, target.shape[2] // 2 :] = 0
        frame_mels = mel_windows(clip.mel, mel_window_starts(clip.times[frames]))          # (t, 80, 16)
        expert_mel = mel_windows(clip.mel, np.array([mel_start(clip.times[start])]), self.expert_mel_steps)[0]
        return {
            "input": torch.cat((masked, reference), dim=0),                      # (6, t, h, w)
            "target": target,
            "frame_mels": torch.from_numpy(frame_mels)[:, None],                  # (t, 1, 80, 16)
            "expert_mel": torch.from_numpy(expert_mel)[None],                     # (1, 80, steps)
        }


def _to_chw(faces: NDArray[np.uint8]) -> torch.Tensor:
    """(t, h, w, 3) uint8 -> (3, t, h, w) float in [0, 1] (BGR kept)."""
    return torch.from_numpy(rearrange(np.asarray(faces, dtype=np.float32), "t h w c -> c t h w") / 255.0)


class MarlinWindowDataset(Dataset):
    """MARLIN pretraining clips: `n_frames` face crops sampled every `temporal_sample_rate` frames, with the
    visible-token mask of the chosen strategy.

    Each clip is cut into consecutive slots of `n_frames · temporal_sample_rate` frames; an item is one slot
    and its window starts at a frame drawn by the key's rng among the slot's usable starts (every sampled
    frame has a face; for Fasking, also landmarks), so each epoch sees new windows while a key always gives
    the same one. The reference draws one random window per video per epoch (dataset/youtube_face.py);
    slots keep long clips from being sampled as rarely as short ones.

    Fasking rasterises LaPa-style label maps from the clip's landmarks68 (`marlin_encoder.regions`) for the
    first frame of every tubelet, as `marlin_encoder.masking` expects. Clips without landmarks (or slots
    where no window has landmarks in every tubelet frame) use tube masking instead; the count is logged
    once, here.

    Args:
        clip_dirs: preprocessed clips.
        mask: strategy, ratio and the model's geometry (img_size, patch_size, tubelet_size, n_frames).
        temporal_sample_rate: source frames between sampled frames (2 in marlin_vit_*.yaml).
        seed: the run's seed.

    Items:
        video: (3, n_frames, img_size, img_size) float32 RGB in [0, 1] (faces224 resized when img_size != 224).
        visible_mask: (n,) bool, True = visible, exactly `num_visible(n, mask_ratio)` of them.
        frame_indices: (n_frames,) int64 source frames of the window.
        clip_index: () int64 position of the clip in `clip_dirs`.
        fasking: () bool, whether the mask came from the landmarks (False: the tube fallback).
    """

    def __init__(self, clip_dirs: list[Path], mask: MaskConfig, temporal_sample_rate: int = 2, seed: int = 0) -> None:
        if temporal_sample_rate < 1:
            raise LipSyncError(f"temporal_sample_rate must be at least 1, got {temporal_sample_rate}")
        self.clips = [Clip(directory) for directory in clip_dirs]
        self.mask = mask
        self.tube = replace(mask, strategy="tube")
        self.rate = temporal_sample_rate
        self.seed = seed
        self.uses_landmarks = mask.strategy in ("fasking", "fasking_reverse")
        span = mask.n_frames * temporal_sample_rate
        offsets = temporal_sample_rate * np.arange(mask.n_frames)
        tubelet_offsets = offsets[:: mask.tubelet_size]
        # One item per slot: (clip index, usable starts, whether those starts have landmarks).
        self.slots: list[tuple[int, NDArray[np.int64], bool]] = []
        clips_without_landmarks = fallback_slots = 0
        for clip_index, clip in enumerate(self.clips):
            if clip.num_frames < offsets[-1] + 1:
                continue
            starts = np.arange(clip.num_frames - offsets[-1])
            starts = starts[clip.has_face[starts[:, None] + offsets].all(axis=1)]
            marked = np.zeros(len(starts), dtype=bool)
            if self.uses_landmarks and clip.landmarks68 is not None:
                finite = np.isfinite(np.asarray(clip.landmarks68)).all(axis=(1, 2))
                marked = finite[starts[:, None] + tubelet_offsets].all(axis=1)
            elif self.uses_landmarks:
                clips_without_landmarks += 1
            for slot in np.unique(starts // span):
                in_slot = starts // span == slot
                with_landmarks = marked[in_slot].any()
                fallback_slots += int(self.uses_landmarks and not with_landmarks)
                chosen = starts[in_slot & marked] if with_landmarks else starts[in_slot]
                self.slots.append((clip_index, chosen, bool(with_landmarks)))
        if not self.slots:
            raise LipSyncError(f"no {mask.n_frames}-frame window (every {temporal_sample_rate} frames) with a face "
                               f"in every frame in {len(self.clips)} clip(s)")
        if fallback_slots:
            logger.warning("%s: %d of %d windows use tube masking (%d clip(s) have no landmarks68.npy; others lack "
                           "landmarks in some frames); preprocess with a landmarker for Fasking",
                           mask.strategy, fallback_slots, len(self.slots), clips_without_landmarks)

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        clip_index, starts, with_landmarks = self.slots[index]
        clip = self.clips[clip_index]
        start = int(starts[rng.integers(len(starts))])
        frames = start + self.rate * np.arange(self.mask.n_frames)
        size = self.mask.img_size
        faces = np.asarray(clip.faces224[frames])[..., ::-1]                     # BGR -> RGB, (t, 224, 224, 3)
        if faces.shape[1:3] != (size, size):
            # INTER_AREA: the anti-aliased choice when shrinking (the tiny configs train at 32-64 px).
            faces = np.stack([cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA) for face in faces])
        video = torch.from_numpy(rearrange(faces.astype(np.float32) / 255.0, "t h w c -> c t h w"))
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        if self.uses_landmarks and with_landmarks:
            tubelet_frames = frames[:: self.mask.tubelet_size]
            # Landmarks are in faces224 pixels; the crop is resized uniformly, so they scale by size / 224.
            points = np.asarray(clip.landmarks68[tubelet_frames], dtype=np.float64) * (size / clip.faces224.shape[1])
            label_maps = landmarks_to_label_maps(points, size, size)[None]            # (1, tt, s, s)
            visible = masking.fasking(label_maps, self.mask.patch_size, self.mask.tubelet_size, self.mask.mask_ratio,
                                      generator, reverse=self.mask.strategy == "fasking_reverse",
                                      min_pixel_fraction=self.mask.min_pixel_fraction, per_tubelet=True)
        else:
            visible = MaskGenerator(self.tube if self.uses_landmarks else self.mask)(1, generator)
        return {
            "video": video,
            "visible_mask": visible[0],
            "frame_indices": torch.from_numpy(frames.astype(np.int64)),
            "clip_index": torch.tensor(clip_index, dtype=torch.int64),
            "fasking": torch.tensor(self.uses_landmarks and with_landmarks),
        }
