"""`LipSyncPipeline`: the one core behind the API, the CLI, the demo and the evaluator.

Build it once (models are loaded then), call it per video:

    pipe = LipSyncPipeline.from_pretrained("wav2lip_gan")
    pipe(face="in.mp4", audio="speech.wav", output="out.mp4", config=InferenceConfig(pads=(0, 10, 0, 0)))

A call streams: a first pass finds the face boxes (skipped when boxes are given), a second pass decodes,
generates, pastes and encodes in bounded chunks, with decoding and encoding in background threads. The
output appears only when complete (temporary file, then rename).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from lipsync.audio import load_audio, mel_window_starts, mel_windows, melspectrogram
from lipsync.audio.mel import SAMPLE_RATE
from lipsync.config import InferenceConfig, RuntimeConfig
from lipsync.errors import LipSyncError
from lipsync.face.boxes import clip_to_frame, integer_box, pad_and_clip, smooth_track
from lipsync.face.detect import FaceDetector, S3FDDetector, largest_face
from lipsync.face.paste import crop_face, paste_face
from lipsync.io.atomic import atomic_path
from lipsync.io.video import VideoReader
from lipsync.io.writer import VideoWriter
from lipsync.playback import TimedFrame, playback, source_frames
from lipsync.synthesis import FaceSynthesizer
from lipsync.utils.device import resolve_device, resolve_precision
from lipsync.utils.iterables import chunked
from lipsync.utils.threads import BackgroundConsumer, BackgroundIterator

logger = logging.getLogger(__name__)

_DETECTION_BATCH = 8


@dataclass
class InferenceResult:
    """What one call produced.

    Attributes:
        output: the written video.
        num_frames: output frames.
        frames_with_face: output frames whose face was re-rendered (the rest passed through).
        duration: audio (and output) duration in seconds.
        frame_rate: nominal output frame rate.
        stage_seconds: wall time per stage (decode and encode run in parallel with the rest).
    """

    output: Path
    num_frames: int
    frames_with_face: int
    duration: float
    frame_rate: Fraction
    stage_seconds: dict[str, float] = field(default_factory=dict)


class _StageClock:
    """Accumulates wall time per named stage (thread-safe enough: each stage is timed by one thread)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def timed(self, stage: str, function: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.seconds[stage] += time.perf_counter() - start


class LipSyncPipeline:
    """Lip-sync a face video or photo to speech.

    Args:
        synthesizer: the generator adapter (e.g. `Wav2LipSynthesizer`).
        detector: face detector used when no boxes are given; built lazily from face-alignment's S3FD if None.
        device: the torch device the detector should use.
    """

    def __init__(self, synthesizer: FaceSynthesizer, detector: FaceDetector | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.synthesizer = synthesizer
        self._detector = detector
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path | None = None, *, model: str = "wav2lip",
                        runtime: RuntimeConfig | None = None, detector: FaceDetector | None = None
                        ) -> "LipSyncPipeline":
        """Load a generator checkpoint (a file path or a manifest name) and build the pipeline.

        Args:
            checkpoint: file or manifest name; None uses the default cached checkpoint for `model`.
            model: "wav2lip" (the classic generator).
            runtime: device, precision and threads.
            detector: a face detector to use instead of S3FD.
        """
        from lipsync.generators import load_synthesizer

        runtime = runtime or RuntimeConfig()
        if runtime.num_threads:
            torch.set_num_threads(runtime.num_threads)
        device = resolve_device(runtime.device)
        dtype = resolve_precision(runtime.precision, device)
        synthesizer = load_synthesizer(model, checkpoint, device, dtype)
        return cls(synthesizer, detector=detector, device=device)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = S3FDDetector(device=self.device)
        return self._detector

    def __call__(self, face: str | Path, audio: str | Path, output: str | Path,
                 config: InferenceConfig | None = None, progress: Any = None) -> InferenceResult:
        """Write `output`: `face` with its mouth re-rendered to follow `audio`, with `audio` as its sound.

        Args:
            face: video file or photo.
            audio: speech: any audio file or a video with an audio track.
            output: .mp4 path; written atomically.
            config: per-call options.
            progress: a tqdm class for a progress bar, or None.

        Raises:
            LipSyncError: bad input (the message says which and why); no output is left behind.
        """
        config = config or InferenceConfig()
        output = Path(output)
        if output.exists() and output.is_dir():
            raise LipSyncError(f"output path is a directory: {output}")
        clock = _StageClock()
        wav = clock.timed("audio", load_audio, audio, SAMPLE_RATE)
        duration = len(wav) / SAMPLE_RATE
        mel = clock.timed("mel", melspectrogram, wav)
        reader = VideoReader(face, still_fps=config.fps)
        track = self._face_track(reader, duration, config, clock, progress)
        with atomic_path(output) as temporary:
            result = self._render(reader, track, mel, duration, Path(audio), temporary, config, clock, progress)
        result.output = output
        result.stage_seconds = dict(clock.seconds)
        logger.info("wrote %s: %d frames, %d with a face", output, result.num_frames, result.frames_with_face)
        return result

    # -- pass 1: where the face is ------------------------------------------------------------------

    def _face_track(self, reader: VideoReader, duration: float, config: InferenceConfig, clock: _StageClock,
                    progress: Any) -> Callable[[int], tuple[int, int, int, int] | None]:
        """A function from source frame index to the integer crop box (or None: pass the frame through)."""
        width, height = reader.info.width, reader.info.height
        if config.box is not None:
            box = clip_to_frame(np.array([config.box], dtype=np.float64), width, height)[0]
            if np.isnan(box[0]):
                raise LipSyncError(f"--box {list(config.box)} lies outside the {width}x{height} frame")
            fixed = integer_box(box)
            return lambda index: fixed
        if config.boxes is not None:
            track = np.array([row if row is not None else (np.nan,) * 4 for row in config.boxes], dtype=np.float64)
            track = clip_to_frame(track, width, height)
        else:
            track = self._detect(reader, duration, config, clock, progress)
            track = pad_and_clip(track, config.pads, width, height)
            if config.smooth:
                track = smooth_track(track)
        boxes = [None if np.isnan(row[0]) else integer_box(row) for row in track]

        def lookup(index: int) -> tuple[int, int, int, int] | None:
            if index >= len(boxes):
                raise LipSyncError(f"--boxes has {len(boxes)} entries but {reader.path} has more frames "
                                   f"(frame {index} is shown); give one entry per decoded frame")
            return boxes[index]

        return lookup

    def _detect(self, reader: VideoReader, duration: float, config: InferenceConfig, clock: _StageClock,
                progress: Any) -> NDArray[np.float64]:
        detector = self.detector
        if isinstance(detector, S3FDDetector):
            detector.max_side = config.detect_max_side
        rows: list[NDArray[np.float64]] = []
        bar = progress(total=_estimate_frames(reader, duration), unit="frame", desc="detect") if progress else None
        for batch in chunked(source_frames(reader, duration), _DETECTION_BATCH):
            for detections in clock.timed("detect", detector.detect, [frame.image for frame in batch]):
                face = largest_face(detections)
                rows.append(face if face is not None else np.full(4, np.nan))
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        track = np.array(rows, dtype=np.float64).reshape(-1, 4)
        found = int((~np.isnan(track[:, 0])).sum())
        if found < len(track):
            logger.warning("no face found in %d of %d frames; those frames pass through unchanged",
                           len(track) - found, len(track))
        return track

    # -- pass 2: render ---------------------------------------------------------------------------

    def _render(self, reader: VideoReader, box_of: Callable[[int], tuple[int, int, int, int] | None],
                mel: NDArray[np.float32], duration: float, audio: Path, temporary: Path, config: InferenceConfig,
                clock: _StageClock, progress: Any) -> InferenceResult:
        info = reader.info
        face_size = self.synthesizer.face_size
        total = _estimate_frames(reader, duration)
        bar = progress(total=total, unit="frame", desc="lip-sync") if progress else None
        writer = VideoWriter(temporary, width=info.width, height=info.height, frame_rate=info.frame_rate,
                             time_base=info.time_base, crf=config.crf, preset=config.preset, audio=audio)
        encoder = BackgroundConsumer(lambda item: clock.timed("encode", writer.write, *item), 2 * config.batch_size)
        frames = BackgroundIterator(_timed_iteration(playback(reader, duration, config.extend), clock, "decode"),
                                    2 * config.batch_size)
        num_frames = frames_with_face = 0
        try:
            for batch in chunked(frames, config.batch_size):
                frames_with_face += self._render_batch(batch, box_of, mel, face_size, info.frame_rate, config,
                                                       encoder, clock)
                num_frames += len(batch)
                if bar is not None:
                    bar.update(len(batch))
            encoder.finish()
            clock.timed("encode", writer.close)
        except BaseException:
            frames.close()
            encoder.abandon()
            writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        if num_frames == 0:
            raise LipSyncError(f"no frames to write: {reader.path} starts after the {duration:.2f} s audio ends")
        return InferenceResult(output=temporary, num_frames=num_frames, frames_with_face=frames_with_face,
                               duration=duration, frame_rate=info.frame_rate)

    def _render_batch(self, batch: list[TimedFrame], box_of: Callable[[int], tuple[int, int, int, int] | None],
                      mel: NDArray[np.float32], face_size: int, frame_rate: Fraction, config: InferenceConfig,
                      encoder: BackgroundConsumer, clock: _StageClock) -> int:
        boxes = [box_of(timed.source.index) for timed in batch]
        with_face = [position for position, box in enumerate(boxes) if box is not None]
        images = [timed.source.image for timed in batch]
        if with_face:
            times = np.array([batch[position].time for position in with_face])
            indices = np.array([batch[position].index for position in with_face])
            starts = mel_window_starts(times, indices, timing=config.mel_timing,
                                       fps=float(frame_rate), num_mel_steps=mel.shape[1])
            windows = mel_windows(mel, starts)
            crops = clock.timed("crop", lambda: np.stack(
                [crop_face(images[position], boxes[position], face_size) for position in with_face]))
            generated = clock.timed("generator", self.synthesizer, crops, windows)
            start = time.perf_counter()
            for face, position in zip(generated, with_face):
                # A frame may be shown twice (pingpong, freeze): paste into a copy, never the source.
                images[position] = images[position].copy()
                paste_face(images[position], face, boxes[position])
            clock.seconds["paste"] += time.perf_counter() - start
        for timed, image in zip(batch, images):
            encoder.put((image, timed.time))
        return len(with_face)


def _estimate_frames(reader: VideoReader, duration: float) -> int:
    return max(1, int(np.ceil(duration * float(reader.info.frame_rate))))


def _timed_iteration(iterator: Iterator[TimedFrame], clock: _StageClock, stage: str) -> Iterator[TimedFrame]:
    try:
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                clock.seconds[stage] += time.perf_counter() - start
            yield item
    finally:
        iterator.close()
