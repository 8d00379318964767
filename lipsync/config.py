"""Frozen configurations that flow from the CLI (or the API, or the demo) into the pipeline.

Defaults match how the released Wav2Lip weights were trained and evaluated, and are the single source of
defaults: the CLI reads them from here.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from lipsync.errors import LipSyncError

EXTEND_MODES = ("pingpong", "loop", "freeze")
MEL_TIMINGS = ("training", "official")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
SMOOTHING_LEVELS = ("off", "light", "strong")
MISSING_FACE_POLICIES = ("passthrough", "interpolate", "fail")


@dataclass(frozen=True)
class InferenceConfig:
    """How one video is lip-synced (per request; the models themselves are chosen when the pipeline is built).

    Attributes:
        batch_size: frames per generator call; None picks by device (8 on CPU, where larger batches fall out
            of cache and run slower; 128 on GPUs).
        pads: (top, bottom, left, right) pixels added to detected boxes (Wav2Lip `--pads`, default includes
            the chin).
        box: one fixed [x1, y1, x2, y2] face box for every frame; skips detection.
        boxes: one entry per decoded frame, None or [x1, y1, x2, y2]; skips detection.
        smooth: steadiness of detected boxes: "off", "light" or "strong" (a one-euro filter; True and False
            are read as "light" and "off").
        on_missing_face: frames where the face is not found: "passthrough" (left unchanged), "interpolate"
            (boxes drawn across gaps of at most `max_gap` frames inside a shot; longer gaps pass through) or
            "fail" (an error naming the frames). Applies to `boxes` entries that are None too.
        max_gap: the longest gap, in frames, that "interpolate" fills.
        face_index: lip-sync the N-th face from the left (0-based) on the first frame with faces, instead of
            the largest; that person is then followed through the video.
        select_box: lip-sync the face track overlapping this [x1, y1, x2, y2] box most.
        detect_every: run the detector on every k-th frame (and at scene cuts, and where tracking loses
            confidence); the frames between are tracked.
        detect_threshold: minimum S3FD detection score.
        cut_threshold: mean grey-level change between 64-pixel thumbnails of consecutive frames that counts as
            a scene cut (see `lipsync.face.cuts`).
        detection_cache: reuse the face tracks of an earlier run on the same file (content-addressed, under
            `$LIPSYNC_HOME/detections`).
        fps: frame rate given to a photo.
        extend: how a video shorter than the audio is continued: "pingpong" (forward, backward, ...),
            "loop" or "freeze" (repeat the last frame).
        mel_timing: "training" (Wav2Lip's training alignment, from each frame's timestamp) or "official"
            (`inference.py`'s int(80 i / fps), for side-by-side comparison).
        detect_max_side: the detector sees frames shrunk to this longer side. S3FD costs 12 GMAC on a 256-pixel
            frame, so with a keyframe every 5 frames detection costs less per frame than the generator
            (4 GMAC; benchmarks/detect_bench.py), and faces down to about 1/12 of the frame's longer side are
            still found; raise it for small faces in wide shots.
        crf: x264 quality (lower is better; 18 is visually lossless).
        preset: x264 speed preset.
    """

    batch_size: int | None = None
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)
    box: tuple[float, float, float, float] | None = None
    boxes: tuple[tuple[float, float, float, float] | None, ...] | None = None
    smooth: str = "light"
    on_missing_face: str = "passthrough"
    max_gap: int = 15
    face_index: int | None = None
    select_box: tuple[float, float, float, float] | None = None
    detect_every: int = 5
    detect_threshold: float = 0.5
    cut_threshold: float = 20.0
    detection_cache: bool = True
    fps: float = 25.0
    extend: str = "pingpong"
    mel_timing: str = "training"
    detect_max_side: int = 256
    crf: int = 18
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise LipSyncError(f"batch size must be at least 1, got {self.batch_size}")
        if self.extend not in EXTEND_MODES:
            raise LipSyncError(f"--extend must be one of {', '.join(EXTEND_MODES)}, got {self.extend!r}")
        if self.mel_timing not in MEL_TIMINGS:
            raise LipSyncError(f"--mel-timing must be one of {', '.join(MEL_TIMINGS)}, got {self.mel_timing!r}")
        if not 0 < self.fps <= 240:
            raise LipSyncError(f"--fps must be in (0, 240], got {self.fps}")
        if len(self.pads) != 4:
            raise LipSyncError(f"--pads needs 4 numbers (top bottom left right), got {len(self.pads)}")
        if not 0 <= self.crf <= 51:
            raise LipSyncError(f"--crf must be in [0, 51], got {self.crf}")
        if self.box is not None and self.boxes is not None:
            raise LipSyncError("give either --box or --boxes, not both")
        if self.detect_max_side < 64:
            raise LipSyncError(f"--detect-max-side must be at least 64, got {self.detect_max_side}")
        if isinstance(self.smooth, bool):     # the earlier on/off switch
            object.__setattr__(self, "smooth", "light" if self.smooth else "off")
        if self.smooth not in SMOOTHING_LEVELS:
            raise LipSyncError(f"--smooth must be one of {', '.join(SMOOTHING_LEVELS)}, got {self.smooth!r}")
        if self.on_missing_face not in MISSING_FACE_POLICIES:
            raise LipSyncError(f"--on-missing-face must be one of {', '.join(MISSING_FACE_POLICIES)}, "
                               f"got {self.on_missing_face!r}")
        if self.max_gap < 0:
            raise LipSyncError(f"--max-gap must be at least 0, got {self.max_gap}")
        if self.detect_every < 1:
            raise LipSyncError(f"--detect-every must be at least 1, got {self.detect_every}")
        if not 0 <= self.detect_threshold <= 1:
            raise LipSyncError(f"--detect-threshold must be in [0, 1], got {self.detect_threshold}")
        if self.cut_threshold <= 0:
            raise LipSyncError(f"cut threshold must be positive, got {self.cut_threshold}")
        if self.face_index is not None and self.face_index < 0:
            raise LipSyncError(f"--face-index must be at least 0, got {self.face_index}")
        if self.face_index is not None and self.select_box is not None:
            raise LipSyncError("give either --face-index or --select-box, not both")
        if (self.face_index is not None or self.select_box is not None) and (self.box is not None
                                                                             or self.boxes is not None):
            raise LipSyncError("--face-index and --select-box choose among detected faces; "
                               "they do not combine with --box or --boxes")
        if self.select_box is not None:
            if len(self.select_box) != 4:
                raise LipSyncError(f"--select-box needs 4 numbers x1 y1 x2 y2, got {len(self.select_box)}")
            x1, y1, x2, y2 = self.select_box
            if not (x2 > x1 and y2 > y1):
                raise LipSyncError(f"--select-box {list(self.select_box)} is empty: need x2 > x1 and y2 > y1")

    def with_overrides(self, **overrides: Any) -> "InferenceConfig":
        """A copy with some fields replaced; unknown names are an error."""
        known = {item.name for item in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise LipSyncError(f"unknown inference option(s): {', '.join(sorted(unknown))}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the models run (chosen once, when the pipeline is built).

    Attributes:
        device: "auto" picks cuda, then mps, then cpu.
        precision: "auto" uses bf16 where the hardware runs it faster than fp32 (CUDA with bf16, or a CPU
            with AMX tiles), fp32 otherwise.
        num_threads: torch CPU threads; 0 leaves torch's default.
    """

    device: str = "auto"
    precision: str = "auto"
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise LipSyncError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise LipSyncError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class OptimConfig:
    """One optimiser: AdamW with linear warm-up, then constant or cosine decay.

    Attributes:
        lr: peak learning rate.
        betas, weight_decay, eps: AdamW's.
        warmup_steps: linear ramp from 0 to `lr`.
        schedule: "constant" or "cosine" (to `min_lr_ratio * lr` at the last step).
        grad_clip: clip the global gradient norm to this (0: no clipping).
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise LipSyncError(f"optimiser schedule must be constant or cosine, got {self.schedule!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's own settings (recipes carry their model and loss settings).

    Attributes:
        run_dir: where checkpoints, metrics.jsonl, config.json and samples go.
        max_steps: optimiser steps to reach (a resumed run continues up to it).
        batch_size: samples per process per micro-step.
        grad_accum_steps: micro-steps per optimiser step.
        precision: "auto" (bf16 autocast on CUDA with bf16, fp32 elsewhere), "fp32" or "bf16".
        device: "auto", "cpu", "cuda".
        seed: drives weights init, data order and per-sample randomness.
        num_workers: DataLoader workers per process.
        log_every, val_every, checkpoint_every: in optimiser steps (0 disables validation/checkpoints
            except the final checkpoint).
        val_batches: validation batches per evaluation (0: the whole validation set).
        keep_checkpoints: how many step checkpoints to keep besides the latest.
    """

    run_dir: str
    max_steps: int = 1000
    batch_size: int = 16
    grad_accum_steps: int = 1
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    num_workers: int = 2
    log_every: int = 10
    val_every: int = 500
    val_batches: int = 20
    checkpoint_every: int = 500
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum_steps < 1:
            raise LipSyncError("max_steps, batch_size and grad_accum_steps must be at least 1")
        if self.precision not in PRECISIONS:
            raise LipSyncError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


def apply_overrides(config: Any, assignments: list[str]) -> Any:
    """`["optim.lr=3e-4", "num_frames=16"]` -> a copy of the frozen `config` with those fields replaced.

    Values are parsed as the field's current type (bool accepts true/false/1/0; tuples take commas; fields
    that are None accept JSON or a plain string). Unknown names or unparsable values are a LipSyncError naming them.
    """
    import json

    for assignment in assignments:
        if "=" not in assignment:
            raise LipSyncError(f"--set expects NAME=VALUE, got {assignment!r}")
        path, text = assignment.split("=", 1)
        config = _replace_path(config, path.strip().split("."), text.strip(), path, json)
    return config


def _replace_path(config: Any, names: list[str], text: str, full_name: str, json: Any) -> Any:
    known = {item.name for item in fields(config)}
    if names[0] not in known:
        raise LipSyncError(f"unknown setting {full_name!r}; known here: {', '.join(sorted(known))}")
    current = getattr(config, names[0])
    if len(names) > 1:
        return replace(config, **{names[0]: _replace_path(current, names[1:], text, full_name, json)})
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            value: Any = text.lower() in ("true", "1")
        elif isinstance(current, (int, float, str)):
            value = type(current)(text)
        elif isinstance(current, tuple):
            value = tuple(type(current[0])(part) for part in text.split(",")) if current else tuple(text.split(","))
        elif text in ("None", "null"):
            value = None
        else:
            try:
                value = json.loads(text)
            except ValueError:
                value = text          # an optional string (a path) that is unset by default
    except ValueError:
        raise LipSyncError(f"--set {full_name}: cannot read {text!r} as {type(current).__name__}") from None
    return replace(config, **{names[0]: value})
