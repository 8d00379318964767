"""The output timeline: which source frame is shown at which time, for as long as the audio lasts.

A video longer than the audio is cut; a shorter one is continued by playing it backwards and forwards
("pingpong"), from the start again ("loop"), or by holding its last frame ("freeze"). A photo is held.
Backward playback decodes short seek-based blocks, so memory stays bounded for any length.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from lipsync.io.video import Frame, VideoReader

_BACKWARD_BLOCK = 32   # frames decoded per seek when playing backwards


@dataclass(frozen=True)
class TimedFrame:
    """An output frame: its position and time in the output, and the source frame it shows."""

    index: int
    time: float
    source: Frame


def source_frames(reader: VideoReader, duration: float) -> Iterator[Frame]:
    """The source frames shown before the video ends or the audio does (the first pass)."""
    for frame in reader:
        if frame.time >= duration:
            return
        yield frame


def playback(reader: VideoReader, duration: float, extend: str) -> Iterator[TimedFrame]:
    """Yield output frames until `duration` seconds are covered.

    Args:
        reader: the face video (a fresh reader or one already iterated).
        duration: audio duration in seconds; output frames are those starting before it.
        extend: "pingpong", "loop" or "freeze".
    """
    interval = 1.0 / float(reader.info.frame_rate)
    index = 0
    last: Frame | None = None
    for frame in source_frames(reader, duration):
        yield TimedFrame(index, frame.time, frame)
        index += 1
        last = frame
    if last is None:
        return
    time = last.time + interval
    if time >= duration:
        return
    num_frames = reader.num_frames or (last.index + 1)
    for source in _continuation(reader, last, num_frames, extend):
        yield TimedFrame(index, time, source)
        index += 1
        time += interval
        if time >= duration:
            return


def _continuation(reader: VideoReader, last: Frame, num_frames: int, extend: str) -> Iterator[Frame]:
    if reader.info.is_still or num_frames == 1 or extend == "freeze":
        while True:
            yield last
    if extend == "loop":
        while True:
            yield from reader
    if extend == "pingpong":
        while True:
            yield from _backward(reader, num_frames - 2, 0)   # N-2 .. 1: the ends are not shown twice
            yield from reader
    raise ValueError(f"unknown extend mode {extend!r}")


def _backward(reader: VideoReader, highest: int, lowest_exclusive: int) -> Iterator[Frame]:
    stop = highest + 1
    while stop > lowest_exclusive + 1:
        start = max(lowest_exclusive + 1, stop - _BACKWARD_BLOCK)
        yield from reversed(reader.read_range(start, stop))
        stop = start
