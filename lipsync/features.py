"""`lipsync features`: MARLIN features of the face in a video, written to FEATURES.npy plus FEATURES.json.

    decode (PyAV) -> the face box of every frame (one --box, --boxes, or the pipeline's pass 1: S3FD with
    tracking) -> a square crop around the box, 224 px RGB -> `marlin_encoder.FeatureExtractor`, window by
    window -> FEATURES.npy (float32)

Windows are those of `FeatureExtractor.plan`: window i reads `n_frames` frames spaced `sample_rate` apart from
frame i·stride; windows continue until one reaches the last frame, which is repeated where a window runs past
the end (the window is then marked padded). The defaults (sample rate 2, stride 16) are the reference's
`Marlin.extract_video` (src/marlin_pytorch/model/marlin.py).

Memory stays bounded for any length: frames are decoded one at a time, only the crops that pending windows
still need are kept, the encoder runs as soon as one batch of windows is complete, and features are appended
to a temporary file that becomes the .npy (atomically) once the frame count is known.

Sidecar FEATURES.json: video, checkpoint, model config, fps, num_frames, window/stride/sample_rate, per_token,
shape, and per window its start frame, start time (s), source frame indices and padded flag.
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from lipsync.config import InferenceConfig, RuntimeConfig
from lipsync.errors import LipSyncError
from lipsync.face.boxes import clip_to_frame
from lipsync.face.detect import FaceDetector
from lipsync.face.gaps import find_gaps, format_ranges
from lipsync.face.locate import IdentifiedDetector, build_face_track
from lipsync.io.atomic import atomic_path, atomic_write_bytes
from lipsync.io.video import Frame, VideoReader
from lipsync.utils.device import resolve_device, resolve_precision
from lipsync.weights import resolve_checkpoint
from marlin_encoder import FeatureExtractor, Marlin

logger = logging.getLogger(__name__)

CROP_SIZE = 224            # MARLIN's input side (every released model)
_ROWS_PER_COPY = 64        # feature rows copied at a time when the .npy is assembled


@dataclass(frozen=True)
class FeatureConfig:
    """How features are computed.

    Attributes:
        checkpoint: MARLIN weights: a file (`*.encoder.pt`, `*.full.pt`, our `.safetensors`) or a manifest name.
        stride: source frames between window starts.
        sample_rate: take every k-th source frame inside a window.
        per_token: one (n, d) feature per window instead of the pooled (d,).
        batch_size: windows per encoder call (with the window's frames, what bounds memory).
    """

    checkpoint: str = "marlin_vit_base_ytf"
    stride: int = 16
    sample_rate: int = 2
    per_token: bool = False
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.stride < 1 or self.sample_rate < 1 or self.batch_size < 1:
            raise LipSyncError(f"--stride, --sample-rate and --batch-size must be at least 1, got {self.stride}, "
                               f"{self.sample_rate}, {self.batch_size}")


@dataclass
class FeatureResult:
    """What one call wrote: the .npy, its sidecar, the feature array's shape and the frame count."""

    output: Path
    sidecar: Path
    shape: tuple[int, ...]
    num_frames: int
    num_windows: int


def load_feature_model(checkpoint: str, device: torch.device) -> tuple[Marlin, Path]:
    """The MARLIN encoder of `checkpoint` (a file or manifest name) on `device`, in eval mode, and its file."""
    path = resolve_checkpoint(checkpoint)
    try:
        model = Marlin.from_file(path, as_feature_extractor=True)
    except (OSError, ValueError) as error:     # CheckpointMismatchError is a ValueError
        raise LipSyncError(f"cannot load MARLIN checkpoint {path}: {error}") from None
    return model.to(device).eval(), path


def sidecar_path(output: Path) -> Path:
    """FEATURES.npy -> FEATURES.json."""
    return Path(output).with_suffix(".json")


def extract_video_features(video: str | Path, output: str | Path, config: FeatureConfig | None = None,
                           face: InferenceConfig | None = None, runtime: RuntimeConfig | None = None,
                           detector: FaceDetector | None = None, model: Marlin | None = None,
                           progress: Any = None) -> FeatureResult:
    """Write the MARLIN features of the face in `video` to `output` (.npy) and its JSON sidecar.

    Args:
        video: any video PyAV decodes (a photo gives one padded window).
        output: the .npy path; written atomically, with FEATURES.json beside it.
        config: checkpoint, windows and batch size.
        face: where the face is: `box`, `boxes`, or detection settings (detect_every, detect_threshold,
            detect_max_side, pads, smooth, face_index/select_box); frames still without a face after
            `on_missing_face` are an error (every window needs a crop).
        runtime: device and precision.
        detector: used instead of S3FD when neither box nor boxes is given.
        model: an already loaded MARLIN encoder (skips loading `config.checkpoint`).
        progress: a tqdm class, or None.

    Returns:
        `FeatureResult`; the array is (windows, d) pooled or (windows, n, d) per token, float32.

    Raises:
        LipSyncError: bad input (unreadable video, box outside the frame, missing faces, bad checkpoint); no
            output file is left behind.
    """
    config = config or FeatureConfig()
    face = face or InferenceConfig()
    runtime = runtime or RuntimeConfig()
    output = Path(output)
    if output.suffix.lower() != ".npy":
        raise LipSyncError(f"--out must end in .npy, got {output}")
    if output.is_dir():
        raise LipSyncError(f"--out is a directory: {output}")
    device = resolve_device(runtime.device)
    dtype = resolve_precision(runtime.precision, device)
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    reader = VideoReader(video, still_fps=face.fps)
    checkpoint_file: Path | None = None
    if model is None:
        model, checkpoint_file = load_feature_model(config.checkpoint, device)
    boxes, face_source = _face_boxes(reader, face, detector, device, progress)
    fixed_box = face_source == "box"
    extractor = FeatureExtractor(model, window=model.config.n_frames, stride=model.config.n_frames, sample_rate=1,
                                 per_token=config.per_token, batch_size=config.batch_size,
                                 autocast_dtype=None if dtype == torch.float32 else dtype)
    windows = _WindowStream(model.config.n_frames, config.stride, config.sample_rate)
    rows = _RowFile(output.parent)
    try:
        num_frames = _run(reader, boxes, fixed_box, windows, extractor, config.batch_size, rows, progress)
        plan = FeatureExtractor(model, window=model.config.n_frames, stride=config.stride,
                                sample_rate=config.sample_rate).plan(num_frames)
        starts, frame_indices, padded = (tensor.tolist() for tensor in plan)
        if starts != windows.starts:       # the stream must reproduce FeatureExtractor.plan exactly
            raise RuntimeError(f"streamed windows {windows.starts} differ from the plan {starts}")
        shape = rows.write_npy(output)
    finally:
        rows.discard()
    sidecar = sidecar_path(output)
    atomic_write_bytes(sidecar, (json.dumps({
        "video": str(video), "checkpoint": config.checkpoint if checkpoint_file else None,
        "checkpoint_file": str(checkpoint_file) if checkpoint_file else None,
        "model_config": model.config.to_dict(), "fps": float(reader.info.frame_rate), "num_frames": num_frames,
        "window": model.config.n_frames, "stride": config.stride, "sample_rate": config.sample_rate,
        "per_token": config.per_token, "face_source": face_source, "shape": list(shape),
        "window_starts": starts,
        # Seconds; None for a start past the last frame (possible when stride > window·sample_rate).
        "window_start_times": [windows.start_times[start] if start < num_frames else None for start in starts],
        "frame_indices": frame_indices, "padded": padded,
    }) + "\n").encode())
    logger.info("wrote %s: %s features of %d windows over %d frames", output, list(shape), len(starts), num_frames)
    return FeatureResult(output=output, sidecar=sidecar, shape=shape, num_frames=num_frames, num_windows=len(starts))


# -- pass 1: the face box of every frame -----------------------------------------------------------


def _face_boxes(reader: VideoReader, face: InferenceConfig, detector: FaceDetector | None, device: torch.device,
                progress: Any) -> tuple[NDArray[np.float64], str]:
    """(n, 4) float boxes per frame ((1, 4) for one fixed box, source "box"), and where they came from."""
    width, height = reader.info.width, reader.info.height
    if face.box is not None:
        box = clip_to_frame(np.array([face.box], dtype=np.float64), width, height)
        if np.isnan(box[0, 0]):
            raise LipSyncError(f"--box {list(face.box)} lies outside the {width}x{height} frame")
        return box, "box"
    if face.boxes is None and detector is None:
        detector = IdentifiedDetector(device, face.detect_threshold)
    # No audio bounds the video here: every frame is looked at.
    track = build_face_track(reader, math.inf, face, detector if face.boxes is None else None, None, progress)
    gaps = find_gaps(~np.isnan(track.boxes[:, 0]))
    if gaps:
        count = sum(last - first + 1 for first, last in gaps)
        raise LipSyncError(f"no face in {count} of {len(track.boxes)} frames of {reader.path} (frames "
                           f"{format_ranges(gaps)}); every window needs a face: give --box or --boxes")
    return track.boxes, "boxes" if face.boxes is not None else track.coverage.source


def square_face_crop(image: NDArray[np.uint8], box: NDArray[np.float64] | tuple[float, ...], size: int = CROP_SIZE
                     ) -> NDArray[np.uint8]:
    """A square around the box's centre (side = the box's longer side), resized to (size, size), BGR -> RGB.

    Parts of the square outside the frame are black, so the face keeps its place and scale at the edges.

    Args:
        image: (h, w, 3) uint8 BGR frame.
        box: [x1, y1, x2, y2] pixels.
        size: output side.

    Returns:
        (size, size, 3) uint8 RGB.
    """
    x1, y1, x2, y2 = (float(value) for value in box)
    side = max(1, int(round(max(x2 - x1, y2 - y1))))
    left, top = int(round((x1 + x2 - side) / 2)), int(round((y1 + y2 - side) / 2))
    height, width = image.shape[:2]
    square = np.zeros((side, side, 3), dtype=np.uint8)
    source_x, source_y = slice(max(0, left), min(width, left + side)), slice(max(0, top), min(height, top + side))
    square[source_y.start - top:source_y.stop - top, source_x.start - left:source_x.stop - left] = \
        image[source_y, source_x]
    # INTER_AREA when shrinking (no aliasing), bilinear when enlarging small faces.
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.cvtColor(cv2.resize(square, (size, size), interpolation=interpolation), cv2.COLOR_BGR2RGB)


# -- pass 2: streaming windows ---------------------------------------------------------------------


class _WindowStream:
    """The windows of `FeatureExtractor.plan`, found while frames arrive, and the crops they still need.

    Window k starts at k·stride. It exists once frame (k−1)·stride + window·sample_rate exists (plan's
    `starts[-1] + span < num_frames`) and is complete once its last frame has been seen. Crops are kept for
    every frame that a window not yet handed out may read, including windows whose existence is still open
    (with stride < span they start before they are confirmed); windows are handed out in order.
    """

    def __init__(self, window: int, stride: int, sample_rate: int) -> None:
        self.window, self.stride, self.sample_rate = window, stride, sample_rate
        self.reach = (window - 1) * sample_rate          # offset of a window's last frame from its start
        self.span = window * sample_rate
        self.confirmed = 0                               # windows 0..confirmed exist
        self.handed_out = 0                              # windows 0..handed_out-1 were encoded
        self.crops: dict[int, NDArray[np.uint8]] = {}
        self.start_times: dict[int, float] = {}
        self.starts: list[int] = []

    def _is_read(self, index: int) -> bool:
        first = max(self.handed_out, -(-(index - self.reach) // self.stride))
        return any((index - k * self.stride) % self.sample_rate == 0 for k in range(first, index // self.stride + 1))

    def push(self, frame: Frame, crop_of: Callable[[], NDArray[np.uint8]]) -> None:
        """Take in the next frame; `crop_of()` is called only when a window reads it."""
        index = frame.index
        while self.confirmed * self.stride + self.span <= index:
            self.confirmed += 1
        if index % self.stride == 0:
            self.start_times[index] = frame.time
        if self._is_read(index):
            self.crops[index] = crop_of()

    def ready(self, index: int) -> int:
        """Windows, from the first not handed out, that exist and are complete once frame `index` is in."""
        last_complete = (index - self.reach) // self.stride
        return max(0, min(self.confirmed, last_complete) - self.handed_out + 1)

    def remaining(self) -> int:
        """Windows that exist and were not handed out (all of them are complete at the end of the video)."""
        return self.confirmed - self.handed_out + 1

    def take(self, count: int, num_frames: int | None = None) -> torch.Tensor:
        """The next `count` windows' frames, (count·window, 224, 224, 3) uint8 RGB; past the end of the video
        (`num_frames` given) positions repeat the last frame."""
        last = math.inf if num_frames is None else num_frames - 1
        starts = [k * self.stride for k in range(self.handed_out, self.handed_out + count)]
        clip = torch.from_numpy(np.stack([self.crops[min(start + offset * self.sample_rate, last)]
                                          for start in starts for offset in range(self.window)]))
        self.starts += starts
        self.handed_out += count
        if num_frames is None:
            # Later windows read only frames from their own start on.
            for index in [index for index in self.crops if index < self.handed_out * self.stride]:
                del self.crops[index]
        return clip


def _run(reader: VideoReader, boxes: NDArray[np.float64], fixed_box: bool, windows: _WindowStream,
         extractor: FeatureExtractor, batch_size: int, rows: "_RowFile", progress: Any) -> int:
    """Decode, crop and encode; returns the number of frames."""
    bar = progress(total=reader.info.num_frames_hint or None, unit="frame", desc="features") if progress else None

    def box_of(index: int) -> NDArray[np.float64]:
        if fixed_box:
            return boxes[0]
        if index >= len(boxes):
            raise LipSyncError(f"--boxes has {len(boxes)} entries but {reader.path} has more frames (frame {index} "
                               f"is shown); give one entry per decoded frame")
        return boxes[index]

    def encode(clip: torch.Tensor) -> None:
        rows.append(extractor(clip, channels_last=True).features.cpu().numpy())

    last: Frame | None = None
    try:
        for frame in reader:
            windows.push(frame, lambda: square_face_crop(frame.image, box_of(frame.index)))  # noqa: B023
            last = frame
            while windows.ready(frame.index) >= batch_size:
                encode(windows.take(batch_size))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if last is None:
        raise LipSyncError(f"no decodable frame in {reader.path}")
    num_frames = last.index + 1
    if last.index not in windows.crops:        # windows running past the end repeat the last frame
        windows.crops[last.index] = square_face_crop(last.image, box_of(last.index))
    while windows.remaining():
        encode(windows.take(min(batch_size, windows.remaining()), num_frames))
    return num_frames


class _RowFile:
    """Feature rows appended to a temporary file beside the output, assembled into a .npy at the end (the
    number of windows is only known once the video has been decoded)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".features-", suffix=".partial", delete=False)
        self.path = Path(handle.name)
        self.handle = handle
        self.count = 0
        self.row_shape: tuple[int, ...] | None = None

    def append(self, features: NDArray[np.float32]) -> None:
        if self.row_shape is None:
            self.row_shape = tuple(features.shape[1:])
        self.handle.write(np.ascontiguousarray(features, dtype="<f4").tobytes())
        self.count += len(features)

    def write_npy(self, output: Path) -> tuple[int, ...]:
        """Write the rows to `output` atomically; returns the array's shape."""
        self.handle.close()
        assert self.row_shape is not None, "no window was encoded"
        shape = (self.count, *self.row_shape)
        row_values = int(np.prod(self.row_shape))
        with atomic_path(output) as temporary:
            array = np.lib.format.open_memmap(temporary, mode="w+", dtype="<f4", shape=shape)
            source = np.memmap(self.path, dtype="<f4", mode="r", shape=(self.count, row_values))
            for first in range(0, self.count, _ROWS_PER_COPY):
                chunk = source[first:first + _ROWS_PER_COPY]
                array[first:first + len(chunk)] = chunk.reshape((len(chunk), *self.row_shape))
            array.flush()
            del array, source
        return shape

    def discard(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)
