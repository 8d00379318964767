"""Pass 2 of the pipeline: crop each frame's face, synthesise, paste back, hand frames on in output order.

Generators that see one frame (Wav2Lip) answer at once; those that see T-frame windows (MARLIN) answer
once a window's frames have arrived, so frames wait in a queue until their face is ready. A run of
consecutive frames with a face is one segment for a windowed generator; a frame without a face, or a jump
in the source (a loop restarting), ends the segment.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from lipsync.audio import mel_window_starts, mel_windows
from lipsync.config import InferenceConfig
from lipsync.face.paste import crop_face, paste_face
from lipsync.playback import TimedFrame

Box = tuple[int, int, int, int]


class SynthesisStream(Protocol):
    face_size: int

    def push(self, faces: NDArray[np.uint8], mels: NDArray[np.float32]) -> list[NDArray[np.uint8]]: ...

    def end_segment(self) -> list[NDArray[np.uint8]]: ...


@dataclass
class _Entry:
    timed: TimedFrame
    box: Box | None
    face: NDArray[np.uint8] | None = None

    @property
    def ready(self) -> bool:
        return self.box is None or self.face is not None


class FrameRenderer:
    """Turns timed source frames into output frames.

    Args:
        stream: the generator behind the streaming interface.
        box_of: source frame index -> integer crop box, or None to pass the frame through.
        mel: (80, s) mel of the driving audio.
        frame_rate: nominal frame rate ("official" mel timing counts frames at this rate).
        config: per-call options (mel timing).
        emit: receives (image, time) of every output frame, in order.
        seconds: per-stage wall-time accumulator.
    """

    def __init__(self, stream: SynthesisStream, box_of: Callable[[int], Box | None], mel: NDArray[np.float32],
                 frame_rate: Fraction, config: InferenceConfig, emit: Callable[[NDArray[np.uint8], float], None],
                 seconds: dict[str, float]) -> None:
        self.stream = stream
        self.box_of = box_of
        self.mel = mel
        self.frame_rate = frame_rate
        self.config = config
        self.emit = emit
        self.seconds = seconds
        self._pending: deque[_Entry] = deque()       # every frame not yet emitted, in output order
        self._awaiting: deque[_Entry] = deque()      # frames whose generated face has not come back
        self._last_source: int | None = None
        self.num_frames = 0
        self.frames_with_face = 0

    def add(self, batch: list[TimedFrame]) -> None:
        """Queue a batch of consecutive output frames; emit those that are complete."""
        run: list[_Entry] = []
        for timed in batch:
            box = self.box_of(timed.source.index)
            entry = _Entry(timed, box)
            jumped = self._last_source is not None and abs(timed.source.index - self._last_source) > 1
            self._last_source = timed.source.index
            if box is None or jumped:
                self._synthesise(run)
                run = []
                self._collect(self._timed("generator", self.stream.end_segment))
            self._pending.append(entry)
            if box is not None:
                run.append(entry)
        self._synthesise(run)
        self._drain()

    def finish(self) -> None:
        """Flush the generator and emit everything still queued."""
        self._collect(self._timed("generator", self.stream.end_segment))
        self._drain()
        assert not self._pending, "frames left without a generated face"

    def _synthesise(self, run: list[_Entry]) -> None:
        if not run:
            return
        start = time.perf_counter()
        crops = np.stack([crop_face(entry.timed.source.image, entry.box, self.stream.face_size) for entry in run])
        times = np.array([entry.timed.time for entry in run])
        indices = np.array([entry.timed.index for entry in run])
        starts = mel_window_starts(times, indices, timing=self.config.mel_timing, fps=float(self.frame_rate),
                                   num_mel_steps=self.mel.shape[1])
        windows = mel_windows(self.mel, starts)
        self.seconds["crop"] = self.seconds.get("crop", 0.0) + time.perf_counter() - start
        self._awaiting.extend(run)
        self._collect(self._timed("generator", self.stream.push, crops, windows))

    def _collect(self, faces: list[NDArray[np.uint8]]) -> None:
        for face in faces:
            self._awaiting.popleft().face = face

    def _drain(self) -> None:
        start = time.perf_counter()
        while self._pending and self._pending[0].ready:
            entry = self._pending.popleft()
            image = entry.timed.source.image
            if entry.box is not None:
                # A source frame may be shown twice (pingpong, freeze): paste into a copy, never the source.
                image = image.copy()
                paste_face(image, entry.face, entry.box)
                self.frames_with_face += 1
            self.num_frames += 1
            self.emit(image, entry.timed.time)
        self.seconds["paste"] = self.seconds.get("paste", 0.0) + time.perf_counter() - start

    def _timed(self, stage: str, function: Callable, *args) -> list[NDArray[np.uint8]]:
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
