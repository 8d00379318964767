"""Datasets over preprocessed clips (`lipsync.train.clips`), keyed by `(index, epoch)` so that every
sample is a pure function of its key (see `ResumableSampler`).

Axis legend: t frames, h/w pixels, c channels (BGR), m mel bins, s mel steps.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from numpy.typing import NDArray
from torch.utils.data import Dataset

from lipsync.audio.mel import MEL_STEPS_PER_SECOND
from lipsync.errors import LipSyncError
from lipsync.train.clips import Clip, find_clips

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


class SyncWindowDataset(Dataset):
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
        self.clips = [Clip(directory) for directory in clip_dirs]
        self.num_frames = num_frames
        self.mel_steps = mel_steps
        self.seed = seed
        self.windows: list[tuple[int, int]] = []
        self.starts_by_clip: list[NDArray[np.int64]] = []
        for clip_index, clip in enumerate(self.clips):
            starts = clip.window_starts(num_frames)
            # The audio window must lie inside the clip's mel.
            fits = np.array([mel_start(clip.times[start]) + mel_steps <= clip.mel.shape[1] for start in starts],
                            dtype=bool)
            starts = starts[fits] if len(starts) else starts
            self.starts_by_clip.append(starts)
            self.windows += [(clip_index, int(start)) for start in starts]
        if not self.windows:
            raise LipSyncError(f"no {num_frames}-frame window with a face in every frame in {len(self.clips)} clip(s)")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        clip_index, start = self.windows[index]
        clip = self.clips[clip_index]
        starts = self.starts_by_clip[clip_index]
        in_sync = rng.random() < 0.5 or len(starts) < 2
        face_start = start
        if not in_sync:
            others = starts[starts != start]
            face_start = int(others[rng.integers(len(others))])
        audio_start = mel_start(clip.times[start])
        mel = clip.mel[:, audio_start : audio_start + self.mel_steps]
        return {
            "face": lower_half_stack(clip.faces96[face_start : face_start + self.num_frames]),
            "mel": torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None],
            "target": torch.tensor([1.0 if in_sync else 0.0]),
        }


class GeneratorWindowDataset(Dataset):
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
        from lipsync.audio.mel import MEL_WINDOW_STEPS

        self.clips = [Clip(directory) for directory in clip_dirs]
        self.num_frames = num_frames
        self.expert_mel_steps = expert_mel_steps
        self.frame_mel_steps = MEL_WINDOW_STEPS
        self.seed = seed
        self.starts_by_clip = [clip.window_starts(num_frames) for clip in self.clips]
        self.windows = [(clip_index, int(start)) for clip_index, starts in enumerate(self.starts_by_clip)
                        for start in starts]
        if not self.windows:
            raise LipSyncError(f"no {num_frames}-frame window with a face in every frame in {len(self.clips)} clip(s)")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        from lipsync.audio.mel import mel_window_starts, mel_windows

        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        clip_index, start = self.windows[index]
        clip = self.clips[clip_index]
        starts = self.starts_by_clip[clip_index]
        others = starts[starts != start]
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
