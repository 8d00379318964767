"""Streaming video decode and encode, in-process with PyAV.

Frames are BGR uint8 (h, w, 3) because the Wav2Lip and SyncNet weights were trained on cv2-decoded BGR
images; MARLIN's RGB is produced where its encoder is called. No function here holds a whole video.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from lipsync.audio.decode import _describe, open_media
from lipsync.errors import LipSyncError

logger = logging.getLogger(__name__)

# File suffixes taken for videos when a folder is searched (preprocess, evaluate, the demo's examples);
# single files are probed by content whatever their name.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")

# Demuxers that hold one picture: a face photo rather than a video.
_STILL_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "jpegxl_pipe")


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about a face video before decoding it.

    Attributes:
        width, height: decoded frame size in pixels.
        frame_rate: average frame rate (a photo gets the requested still rate).
        time_base: the stream's time base; the output reuses it so timestamps survive exactly.
        num_frames_hint: frame count in the container header (0 when unknown; may differ from decoding).
        duration_hint: container duration in seconds, or None.
        is_still: a photo (or a one-picture file): its single frame is repeated.
    """

    path: Path
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    num_frames_hint: int
    duration_hint: float | None
    is_still: bool


@dataclass(frozen=True)
class Frame:
    """One decoded picture.

    Attributes:
        index: position in presentation order, from 0.
        time: presentation time in seconds relative to the first frame.
        image: (h, w, 3) uint8 BGR.
    """

    index: int
    time: float
    image: NDArray[np.uint8]


class VideoReader:
    """Decode a face video (or photo) frame by frame in presentation order.

    Iterating decodes from the start each time, so a video can be played again (loop) without keeping it.
    `read_range` seeks, which is how frames are played backwards in bounded memory.

    Args:
        path: any container PyAV can open, or a still image.
        still_fps: the frame rate given to a photo.
    """

    def __init__(self, path: str | Path, still_fps: float = 25.0) -> None:
        self.path = Path(path)
        with open_media(self.path, "face video") as container:
            if not container.streams.video:
                raise LipSyncError(f"no video stream in {self.path}")
            stream = container.streams.video[0]
            is_still = container.format.name in _STILL_FORMATS or container.format.name.split(",")[0] in _STILL_FORMATS
            if is_still:
                frame_rate = Fraction(still_fps).limit_denominator(1001)
                time_base = 1 / frame_rate
            else:
                frame_rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                if not frame_rate:
                    raise LipSyncError(f"cannot tell the frame rate of {self.path}; re-encode it or pass a photo")
                frame_rate = Fraction(frame_rate)
                time_base = Fraction(stream.time_base) if stream.time_base else 1 / frame_rate
            duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            self.info = VideoInfo(
                path=self.path,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                frame_rate=frame_rate,
                time_base=time_base,
                num_frames_hint=int(stream.frames or 0),
                duration_hint=duration,
                is_still=is_still,
            )
        if self.info.width <= 0 or self.info.height <= 0:
            raise LipSyncError(f"video stream of {self.path} has no picture size; the file may be corrupt")
        # Presentation timestamps seen so far, by index: what `read_range` seeks to.
        self._pts: list[int] = []
        self._index_by_pts: dict[int, int] = {}
        self._first_pts: int | None = None
        self.num_frames: int | None = None   # known after one full pass

    def __iter__(self) -> Iterator[Frame]:
        return self._decode(start_pts=None)

    def _decode(self, start_pts: int | None) -> Iterator[Frame]:
        with open_media(self.path, "face video") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if start_pts is not None:
                container.seek(start_pts, stream=stream, backward=True, any_frame=False)
            index = 0 if start_pts is None else None
            last_pts: int | None = None
            try:
                for decoded in container.decode(stream):
                    pts = decoded.pts if decoded.pts is not None else self._next_pts(last_pts)
                    last_pts = pts
                    if start_pts is not None:
                        if pts < start_pts:
                            continue
                        index = self._index_of(pts)
                    frame = self._to_frame(decoded, index, pts)
                    yield frame
                    index += 1
                    if self.info.is_still:
                        break
            except av.FFmpegError as error:
                raise LipSyncError(f"cannot decode frame {index} of {self.path}: {_describe(error)}") from None
            if start_pts is None:
                if index == 0:
                    raise LipSyncError(f"no decodable frame in {self.path}")
                self.num_frames = index

    def _next_pts(self, last_pts: int | None) -> int:
        # Streams without timestamps (raw formats): count frames at the nominal rate.
        step = round(1 / (self.info.frame_rate * self.info.time_base))
        return 0 if last_pts is None else last_pts + step

    def _index_of(self, pts: int) -> int:
        try:
            return self._index_by_pts[pts]
        except KeyError:
            raise LipSyncError(f"{self.path}: seeking found a frame at pts {pts} not seen in the forward pass") from None

    def _to_frame(self, decoded: av.VideoFrame, index: int, pts: int) -> Frame:
        if self._first_pts is None:
            self._first_pts = pts
        if index == len(self._pts):
            self._pts.append(pts)
            self._index_by_pts[pts] = index
        time = float((pts - self._first_pts) * self.info.time_base)
        return Frame(index=index, time=time, image=to_bgr(decoded))

    def read_range(self, start: int, stop: int) -> list[Frame]:
        """Decode frames [start, stop) of a video that has been iterated once already.

        Seeks to the keyframe before `start`, so the cost is one GOP at most plus the range.
        """
        if stop > len(self._pts):
            raise ValueError(f"read_range({start}, {stop}) beyond the {len(self._pts)} frames seen so far")
        frames: list[Frame] = []
        for frame in self._decode(start_pts=self._pts[start]):
            frames.append(frame)
            if frame.index >= stop - 1:
                break
        return frames


# libavutil's AVColorRange value for full ("JPEG") range.
_FULL_RANGE = 2


def to_bgr(frame: av.VideoFrame) -> NDArray[np.uint8]:
    """Convert a decoded frame to (h, w, 3) uint8 BGR.

    Limited-range 4:2:0 (almost every video) goes through OpenCV's BT.601 conversion, whose round trip with
    `from_bgr` is exact, so untouched pixels come back as they were; swscale's default path is biased by
    about one level. Anything else (full range, 4:4:4, 10-bit) goes through swscale.
    """
    if frame.format.name == "yuv420p" and frame.color_range != _FULL_RANGE and frame.width % 2 == 0 \
            and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def from_bgr(image: NDArray[np.uint8]) -> av.VideoFrame:
    """(h, w, 3) uint8 BGR with even sides -> a limited-range yuv420p frame (inverse of `to_bgr`)."""
    return av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")


def frame_size_for_encoder(width: int, height: int) -> tuple[int, int]:
    """H.264 in yuv420p needs even sides; odd ones are padded by one replicated pixel."""
    return width + width % 2, height + height % 2


def pad_to_even(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    height, width = image.shape[:2]
    if width % 2 == 0 and height % 2 == 0:
        return image
    return np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
