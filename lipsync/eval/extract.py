"""Frames and audio exactly as syncnet_python's evaluation prepares them, in-process with PyAV.

``SyncNetInstance.evaluate`` (joonson/syncnet_python @ 6efbb1c; Wav2Lip's copy
``evaluation/scores_LSE/SyncNetInstance_calc_scores.py``) shells out to ffmpeg twice:

    ffmpeg -y -i VIDEO -threads 1 -f image2 TMP/%06d.jpg
    ffmpeg -y -i VIDEO -async 1 -ac 1 -vn -acodec pcm_s16le -ar 16000 TMP/audio.wav

and reads the JPEGs back with ``cv2.imread``. The JPEG round trip is lossy (2-5 grey levels per frame) and
part of the metric, so it is reproduced here frame by frame, without files:

* **Frames**: every decoded frame (the image2 muxer keeps them all) goes through the conversion ffmpeg 5.1's
  swscale applied to reach the mjpeg encoder's ``yuvj420p`` (limited to full range, emulated bit-exactly:
  FFmpeg >= 7.1 changed that conversion, so PyAV's own ``reformat`` would differ by a level here and there),
  then libavcodec's mjpeg encoder at the CLI's defaults (200 kb/s rate control, q 2-31, one thread, the
  stream's sample aspect ratio, time base 1/25), then ``cv2.imdecode`` (OpenCV's libjpeg, as ``cv2.imread``).
  On the conformance clip the decoded frames are identical to the reference's; the JPEG bytes differ only
  in their optimised Huffman tables (another libavcodec).
* **Audio**: libswresample through the same filter the CLI builds: ``aresample`` with the options ``-async 1``
  expands to (``async=1:min_hard_comp=0.1:first_pts=0``) converting to mono s16 at 16 kHz in one step.
* **25 fps**: SyncNet's windows assume 25 fps (4 MFCC steps per frame). The reference extracts frames at the
  native rate whatever it is; here a video at another rate is first resampled to 25 fps by timestamp, as
  ffmpeg's ``fps`` filter does (``libavfilter/vf_fps.c``: each timestamp rounded to the nearest output tick,
  the last frame at or before each tick kept, frames duplicated or dropped, the end at the last frame's
  end time).

Axis legend: h height, w width.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import cv2
import numpy as np
from numpy.typing import NDArray

from lipsync.audio.decode import _describe, open_media
from lipsync.errors import LipSyncError
from lipsync.io.video import from_bgr
from syncnet.mfcc import MFCC_SAMPLE_RATE
from syncnet.scoring import VIDEO_FPS

__all__ = ["JpegRoundTrip", "SyncNetFrame", "VideoStreamInfo", "extract_audio", "probe_video", "syncnet_frames",
           "to_full_range"]

logger = logging.getLogger(__name__)

SYNCNET_FPS = Fraction(VIDEO_FPS)
# The reference's audio command: `-async 1` is what ffmpeg 5.1 forwards as these aresample options.
AUDIO_FILTER = (f"osr={MFCC_SAMPLE_RATE}:osf=s16:ochl=mono:async=1:min_hard_comp=0.1:first_pts=0")
_FULL_RANGE = 2   # libavutil's AVCOL_RANGE_JPEG


def _range_tables() -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """ffmpeg 5.1 swscale's limited -> full range conversion of 8-bit planes, as lookup tables.

    A same-size yuv420p -> yuvj420p conversion runs swscale's scaler with 1-tap filters: values are widened to
    15 bits (``<< 7``), mapped by ``lumRangeToJpeg_c`` / ``chrRangeToJpeg_c`` (libswscale/swscale.c, 5.1:
    ``(min(v, 30189) * 19077 - 39057361) >> 14`` and ``(min(v, 30775) * 4663 - 9289992) >> 12``) and narrowed
    by ``yuv2plane1_8_c`` with its flat dither (``(v + 64) >> 7``, clipped to 0..255).
    """
    widened = np.arange(256, dtype=np.int64) << 7
    luma = (np.minimum(widened, 30189) * 19077 - 39057361) >> 14
    chroma = (np.minimum(widened, 30775) * 4663 - 9289992) >> 12
    narrow = lambda values: np.clip((values + 64) >> 7, 0, 255).astype(np.uint8)  # noqa: E731
    return narrow(luma), narrow(chroma)


_LUMA_TO_FULL, _CHROMA_TO_FULL = _range_tables()


def to_full_range(frame: av.VideoFrame) -> av.VideoFrame:
    """The ``yuvj420p`` frame ffmpeg 5.1 hands the mjpeg encoder for this decoded frame.

    Limited-range 8-bit 4:2:0 with even sides (nearly every video) is converted bit-exactly as ffmpeg 5.1 did;
    a full-range 4:2:0 frame is only relabelled; anything else (4:2:2, 4:4:4, 10-bit, odd sides) goes through
    this libswscale, which ffmpeg 5.1 would have converted to another yuvj format: close, not identical.
    """
    even = frame.width % 2 == 0 and frame.height % 2 == 0
    if frame.format.name in ("yuv420p", "yuvj420p") and even:
        planes = frame.to_ndarray()                                   # (h * 3 / 2, w) I420
        if frame.format.name == "yuv420p" and frame.color_range != _FULL_RANGE:
            planes = np.concatenate([_LUMA_TO_FULL[planes[:frame.height]], _CHROMA_TO_FULL[planes[frame.height:]]])
        return av.VideoFrame.from_ndarray(planes, format="yuvj420p")
    return frame.reformat(format="yuvj420p")


class JpegRoundTrip:
    """One video's frames through ffmpeg's default mjpeg encoding and cv2's JPEG decoding, in order.

    The encoder's rate control carries state from frame to frame (the reference's quantiser climbs from 4 to
    about 25 over the conformance clip), so use one instance per video and feed every frame in order.

    Args:
        sample_aspect_ratio: the stream's (written into the JFIF header; the header's bits count in the rate
            control). None or 0 writes no JFIF header, as ffmpeg does.
    """

    def __init__(self, sample_aspect_ratio: Fraction | None = Fraction(1)) -> None:
        self.sample_aspect_ratio = sample_aspect_ratio
        self._encoder: av.VideoCodecContext | None = None
        self._count = 0

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = width, height
        encoder.pix_fmt = "yuvj420p"
        # ffmpeg's encoder time base is the output rate; the rate control spends bit_rate / 25 bits per frame.
        encoder.time_base = 1 / SYNCNET_FPS
        encoder.framerate = SYNCNET_FPS
        encoder.bit_rate = 200_000        # AVCodecContext's default "b"; the reference passes no -b or -q:v
        encoder.thread_count = 1          # the reference's `-threads 1` (slice threads would change the stream)
        if self.sample_aspect_ratio:
            encoder.sample_aspect_ratio = self.sample_aspect_ratio
        encoder.open()
        return encoder

    def __call__(self, frame: av.VideoFrame | NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Encode one frame and decode it back.

        Args:
            frame: a decoded video frame, or an (h, w, 3) uint8 BGR image with even sides (a crop: it is first
                converted to limited-range yuv420p, as a crop video written to disk would be).

        Returns:
            (h, w, 3) uint8 BGR, as ``cv2.imread`` reads the reference's JPEG file.
        """
        if isinstance(frame, np.ndarray):
            frame = from_bgr(frame)
        if self._encoder is None:
            self._encoder = self._open(frame.width, frame.height)
        elif (frame.width, frame.height) != (self._encoder.width, self._encoder.height):
            raise ValueError(f"frame size changed to {frame.width}x{frame.height} within one video")
        full = to_full_range(frame)
        full.pts, full.time_base = self._count, self._encoder.time_base
        self._count += 1
        packets = self._encoder.encode(full)
        if len(packets) != 1:   # mjpeg is intra-only without delay: one packet per frame
            raise RuntimeError(f"mjpeg encoder returned {len(packets)} packets for one frame")
        image = cv2.imdecode(np.frombuffer(bytes(packets[0]), np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise RuntimeError("OpenCV could not decode an mjpeg frame")
        return image


@dataclass(frozen=True)
class VideoStreamInfo:
    """What the evaluation reports about a video's frame rate.

    Attributes:
        frame_rate: the stream's average frame rate.
        resampled: True when the frames are resampled to 25 fps (the rate is not exactly 25).
        sample_aspect_ratio: the stream's pixel aspect ratio (1 when unknown).
        width, height: decoded frame size.
    """

    path: Path
    frame_rate: Fraction
    resampled: bool
    sample_aspect_ratio: Fraction
    width: int
    height: int


def probe_video(path: str | Path) -> VideoStreamInfo:
    """Read a video's header: frame rate, size, and whether it needs resampling to 25 fps.

    Raises:
        LipSyncError: missing or unreadable file, no video stream, or no frame rate.
    """
    path = Path(path)
    with open_media(path, "video") as container:
        if not container.streams.video:
            raise LipSyncError(f"no video stream in {path}")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise LipSyncError(f"cannot tell the frame rate of {path}; re-encode it at 25 fps")
        aspect = stream.codec_context.sample_aspect_ratio or Fraction(1)
        return VideoStreamInfo(path=path, frame_rate=Fraction(rate), resampled=Fraction(rate) != SYNCNET_FPS,
                               sample_aspect_ratio=Fraction(aspect), width=stream.codec_context.width,
                               height=stream.codec_context.height)


@dataclass(frozen=True)
class SyncNetFrame:
    """One frame of the 25 fps sequence SyncNet sees.

    Attributes:
        index: position in the 25 fps sequence.
        source_index: the decoded frame it shows (equal to `index` unless resampled).
        frame: the decoded frame (shared between duplicates: do not modify it).
    """

    index: int
    source_index: int
    frame: av.VideoFrame


def _tick(seconds: Fraction) -> int:
    """A timestamp in 1/25 s ticks, rounded to nearest with ties away from zero (av_rescale_q_rnd's NEAR)."""
    ticks = seconds * SYNCNET_FPS
    return math.floor(ticks + Fraction(1, 2)) if ticks >= 0 else -math.floor(-ticks + Fraction(1, 2))


def syncnet_frames(path: str | Path, info: VideoStreamInfo | None = None) -> Iterator[SyncNetFrame]:
    """Decode a video into the 25 fps frame sequence of the evaluation, one frame at a time.

    A 25 fps video yields every decoded frame, as the reference does. Any other rate is resampled the way
    ffmpeg's ``fps=25`` filter does it (``vf_fps.c``, default options): the stream's timestamps are rounded to
    the nearest 1/25 s tick; from the first frame's tick on, each tick shows the last frame whose tick is not
    after it (so frames are repeated or skipped); the sequence ends at the tick of the last frame's end (its
    timestamp plus its duration).

    Args:
        path: the video.
        info: its `probe_video` result, if already read.

    Raises:
        LipSyncError: unreadable file or undecodable frame.
    """
    path = Path(path)
    info = info or probe_video(path)
    with open_media(path, "video") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_index = -1
        try:
            if not info.resampled:
                for source_index, frame in enumerate(container.decode(stream)):
                    yield SyncNetFrame(source_index, source_index, frame)
                return
            yield from _resampled(container.decode(stream), info.frame_rate)
        except av.FFmpegError as error:
            raise LipSyncError(f"cannot decode frame {source_index + 1} of {path}: {_describe(error)}") from None


def _resampled(frames: Iterator[av.VideoFrame], native_rate: Fraction) -> Iterator[SyncNetFrame]:
    next_tick: int | None = None
    held: tuple[int, av.VideoFrame] | None = None        # vf_fps's frames[0]: the frame shown at next_tick
    end_time = Fraction(0)
    index = 0
    for source_index, frame in enumerate(frames):
        time = Fraction(frame.pts) * frame.time_base if frame.pts is not None else source_index / native_rate
        duration = Fraction(frame.duration) * frame.time_base if frame.duration else 1 / native_rate
        tick = _tick(time)
        end_time = max(end_time, time + duration)
        if held is None:
            next_tick = tick                # the output starts at the first frame's tick
        while tick > next_tick:             # the held frame covers every tick before the new frame's
            yield SyncNetFrame(index, *held)
            index += 1
            next_tick += 1
        held = (source_index, frame)
    if held is not None:
        while next_tick < _tick(end_time):
            yield SyncNetFrame(index, *held)
            index += 1
            next_tick += 1


def extract_audio(path: str | Path) -> NDArray[np.int16]:
    """The reference's ``audio.wav``: the first audio stream as mono 16 kHz int16 samples.

    Decoded samples go through libswresample as ``ffmpeg -async 1 -ac 1 -ar 16000 -acodec pcm_s16le`` sends
    them (channels mixed down, resampled, rounded to int16; gaps of more than 0.1 s in the timestamps are
    filled with silence, overlaps trimmed). Timestamps count from the container's start, as ffmpeg's do.

    Args:
        path: a video (or audio) file.

    Returns:
        (num_samples,) int16 at 16 kHz, unscaled (what ``scipy.io.wavfile.read`` returns).

    Raises:
        LipSyncError: no audio stream (LSE needs the speech track), unreadable or empty audio.
    """
    path = Path(path)
    chunks: list[NDArray[np.int16]] = []
    with open_media(path, "video") as container:
        if not container.streams.audio:
            raise LipSyncError(f"{path} has no audio track; LSE-D / LSE-C compare the lips with the speech in it")
        stream = container.streams.audio[0]
        start = Fraction(container.start_time or 0, av.time_base)
        graph: av.filter.Graph | None = None
        try:
            for frame in container.decode(stream):
                if graph is None:
                    graph = _audio_graph(frame)
                rate = frame.sample_rate
                if frame.pts is not None:
                    frame.pts = round((Fraction(frame.pts) * frame.time_base - start) * rate)
                frame.time_base = Fraction(1, rate)
                graph.push(frame)
                _drain(graph, chunks)
            if graph is not None:
                graph.push(None)
                _drain(graph, chunks)
        except av.FFmpegError as error:
            raise LipSyncError(f"cannot decode the audio of {path}: {_describe(error)}") from None
    if not chunks or sum(len(chunk) for chunk in chunks) == 0:
        raise LipSyncError(f"the audio track of {path} holds no samples")
    return np.concatenate(chunks)


def _audio_graph(frame: av.AudioFrame) -> av.filter.Graph:
    graph = av.filter.Graph()
    source = graph.add_abuffer(sample_rate=frame.sample_rate, format=frame.format.name, layout=frame.layout.name,
                               time_base=Fraction(1, frame.sample_rate))
    resample = graph.add("aresample", AUDIO_FILTER)
    pin = graph.add("aformat", f"sample_fmts=s16:sample_rates={MFCC_SAMPLE_RATE}:channel_layouts=mono")
    sink = graph.add("abuffersink")
    source.link_to(resample)
    resample.link_to(pin)
    pin.link_to(sink)
    graph.configure()
    return graph


def _drain(graph: av.filter.Graph, chunks: list[NDArray[np.int16]]) -> None:
    while True:
        try:
            frame = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return
        chunks.append(frame.to_ndarray().reshape(-1).astype(np.int16, copy=False))
