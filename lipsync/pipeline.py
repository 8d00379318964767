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

from lipsync.audio import load_audio, melspectrogram
from lipsync.audio.mel import SAMPLE_RATE
from lipsync.config import InferenceConfig, RuntimeConfig
from lipsync.errors import LipSyncError
from lipsync.face.boxes import clip_to_frame, integer_box
from lipsync.face.coverage import CoverageReport
from lipsync.face.detect import FaceDetector
from lipsync.face.locate import IdentifiedDetector, build_face_track
from lipsync.io.atomic import atomic_path
from lipsync.io.video import VideoReader
from lipsync.io.writer import VideoWriter
from lipsync.playback import TimedFrame, playback
from lipsync.render import FrameRenderer, SynthesisStream
from lipsync.synthesis import FaceSynthesizer, FrameSynthesisStream, WindowedSynthesizer
from lipsync.utils.device import default_batch_size, resolve_device, resolve_precision
from lipsync.utils.iterables import chunked
from lipsync.utils.threads import BackgroundConsumer, BackgroundIterator

logger = logging.getLogger(__name__)


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
        coverage: where the face was found (None with one fixed `box`).
    """

    output: Path
    num_frames: int
    frames_with_face: int
    duration: float
    frame_rate: Fraction
    stage_seconds: dict[str, float] = field(default_factory=dict)
    coverage: CoverageReport | None = None


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
        self._s3fd: IdentifiedDetector | None = None
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path | None = None, *, model: str | None = None,
                        runtime: RuntimeConfig | None = None, detector: FaceDetector | None = None
                        ) -> "LipSyncPipeline":
        """Load a generator checkpoint (a file path or a manifest name) and build the pipeline.

        Args:
            checkpoint: file or manifest name; None uses the default cached checkpoint for `model`.
            model: "wav2lip" (the classic generator) or "marlin"; None reads it from the checkpoint's metadata.
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
        """The injected detector, or face-alignment's S3FD at the default threshold."""
        return self._detector_for(InferenceConfig())

    def _detector_for(self, config: InferenceConfig) -> FaceDetector:
        if self._detector is not None:
            return self._detector
        # S3FD is loaded once per pipeline, and again only for another threshold.
        if self._s3fd is None or self._s3fd.threshold != config.detect_threshold:
            self._s3fd = IdentifiedDetector(self.device, config.detect_threshold)
        return self._s3fd

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
        track, coverage = self._face_track(reader, duration, config, clock, progress)
        with atomic_path(output) as temporary:
            result = self._render(reader, track, mel, duration, Path(audio), temporary, config, clock, progress)
        result.output = output
        result.stage_seconds = dict(clock.seconds)
        result.coverage = coverage
        logger.info("wrote %s: %d frames, %d with a face", output, result.num_frames, result.frames_with_face)
        return result

    # -- pass 1: where the face is ------------------------------------------------------------------

    def _face_track(self, reader: VideoReader, duration: float, config: InferenceConfig, clock: _StageClock,
                    progress: Any) -> tuple[Callable[[int], tuple[int, int, int, int] | None], CoverageReport | None]:
        """A function from source frame index to the integer crop box (or None: pass the frame through), and
        the coverage report (None for one fixed box)."""
        width, height = reader.info.width, reader.info.height
        if config.box is not None:
            box = clip_to_frame(np.array([config.box], dtype=np.float64), width, height)[0]
            if np.isnan(box[0]):
                raise LipSyncError(f"--box {list(config.box)} lies outside the {width}x{height} frame")
            fixed = integer_box(box)
            return (lambda index: fixed), None
        detector = self._detector_for(config) if config.boxes is None else None
        face_track = build_face_track(reader, duration, config, detector, clock, progress)
        boxes = [None if np.isnan(row[0]) else integer_box(row) for row in face_track.boxes]

        def lookup(index: int) -> tuple[int, int, int, int] | None:
            if index >= len(boxes):
                raise LipSyncError(f"--boxes has {len(boxes)} entries but {reader.path} has more frames "
                                   f"(frame {index} is shown); give one entry per decoded frame")
            return boxes[index]

        return lookup, face_track.coverage

    # -- pass 2: render ---------------------------------------------------------------------------

    def _render(self, reader: VideoReader, box_of: Callable[[int], tuple[int, int, int, int] | None],
                mel: NDArray[np.float32], duration: float, audio: Path, temporary: Path, config: InferenceConfig,
                clock: _StageClock, progress: Any) -> InferenceResult:
        info = reader.info
        # Sized for where the generator runs (a caller may pair a GPU synthesizer with a CPU detector).
        batch_size = config.batch_size or default_batch_size(getattr(self.synthesizer, "device", self.device))
        bar = progress(total=_estimate_frames(reader, duration), unit="frame", desc="lip-sync") if progress else None
        writer = VideoWriter(temporary, width=info.width, height=info.height, frame_rate=info.frame_rate,
                             time_base=info.time_base, crf=config.crf, preset=config.preset, audio=audio)
        # Frames held at once: one batch being generated, up to one decoded ahead and one waiting to be
        # encoded, whatever the video's length.
        encoder = BackgroundConsumer(lambda item: clock.timed("encode", writer.write, *item), batch_size)
        frames = BackgroundIterator(_timed_iteration(playback(reader, duration, config.extend), clock, "decode"),
                                    batch_size)
        renderer = FrameRenderer(self._stream(), box_of, mel, info.frame_rate, config,
                                 emit=lambda image, at: encoder.put((image, at)), seconds=clock.seconds)
        try:
            for batch in chunked(frames, batch_size):
                renderer.add(batch)
                if bar is not None:
                    bar.update(len(batch))
            renderer.finish()
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
        if renderer.num_frames == 0:
            raise LipSyncError(f"no frames to write: {reader.path} starts after the {duration:.2f} s audio ends")
        return InferenceResult(output=temporary, num_frames=renderer.num_frames,
                               frames_with_face=renderer.frames_with_face, duration=duration,
                               frame_rate=info.frame_rate)

    def _stream(self) -> SynthesisStream:
        """A fresh streaming view of the generator (windowed generators keep per-video state)."""
        if isinstance(self.synthesizer, WindowedSynthesizer):
            return self.synthesizer.fresh()
        return FrameSynthesisStream(self.synthesizer)


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
