"""Encode the lip-synced frames to H.264 and mux the driving audio as AAC, in one streaming pass."""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from lipsync.audio.decode import _describe, open_media
from lipsync.errors import LipSyncError
from lipsync.io.video import frame_size_for_encoder, from_bgr, pad_to_even

logger = logging.getLogger(__name__)

# AAC-LC sample rates (ISO/IEC 14496-3 sampling frequency index table); others are resampled to 48 kHz.
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
# How far audio is encoded ahead of the video, so the muxer interleaves without buffering a whole track.
_AUDIO_LEAD_SECONDS = 0.5


class _AudioTranscoder:
    """Decode the driving audio and re-encode it as AAC into `output`, up to a requested time."""

    def __init__(self, source: Path, output: av.container.OutputContainer, bit_rate: int) -> None:
        self._input = open_media(source, "audio")
        if not self._input.streams.audio:
            self._input.close()
            raise LipSyncError(f"no audio stream in {source}")
        self._source = source
        in_stream = self._input.streams.audio[0]
        rate = in_stream.rate if in_stream.rate in _AAC_RATES else 48000
        layout = "stereo" if in_stream.channels >= 2 else "mono"
        self.stream = output.add_stream("aac", rate=rate)
        self.stream.layout = layout
        self.stream.bit_rate = bit_rate
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate,
                                            frame_size=self.stream.codec_context.frame_size or 1024)
        self._frames = self._input.decode(in_stream)
        self._output = output
        self._rate = rate
        self._samples_written = 0
        self._exhausted = False

    @property
    def encoded_seconds(self) -> float:
        return self._samples_written / self._rate

    def advance(self, until_seconds: float) -> None:
        while not self._exhausted and self.encoded_seconds < until_seconds:
            try:
                decoded = next(self._frames)
            except StopIteration:
                self._exhausted = True
                self._encode(self._resampler.resample(None))
                break
            except av.FFmpegError as error:
                raise LipSyncError(f"cannot decode audio in {self._source}: {_describe(error)}") from None
            decoded.pts = None   # timestamps restart at 0: the audio defines the output's time zero
            self._encode(self._resampler.resample(decoded))

    def _encode(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            frame.pts = self._samples_written
            frame.time_base = Fraction(1, self._rate)
            self._samples_written += frame.samples
            self._output.mux(self.stream.encode(frame))

    def finish(self) -> None:
        self.advance(float("inf"))
        self._output.mux(self.stream.encode(None))
        self._input.close()


class VideoWriter:
    """Write BGR frames with their timestamps as H.264 (yuv420p) mp4, with the driving audio as AAC.

    The output keeps the input's time base and each frame's own timestamp, so variable-frame-rate input
    stays in sync. Write to a temporary path and rename on success (`lipsync.io.atomic.atomic_path`).

    Args:
        path: output file (.mp4).
        width, height: frame size; odd sides are padded by one pixel (H.264 4:2:0 needs even sides).
        frame_rate: nominal rate, recorded in the stream header.
        time_base: timestamp unit of the output stream.
        crf: x264 constant rate factor (0 lossless, 18 visually lossless, 23 default, 51 worst).
        preset: x264 speed preset.
        audio: file whose first audio stream is muxed, or None for a silent video.
        audio_bit_rate: AAC bit rate in bit/s.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        frame_rate: Fraction,
        time_base: Fraction,
        crf: int = 18,
        preset: str = "veryfast",
        audio: str | Path | None = None,
        audio_bit_rate: int = 160_000,
    ) -> None:
        self._container = av.open(str(path), mode="w", format="mp4")
        try:
            encoded_width, encoded_height = frame_size_for_encoder(width, height)
            if (encoded_width, encoded_height) != (width, height):
                logger.warning("padding %dx%d frames to %dx%d for H.264 4:2:0", width, height,
                               encoded_width, encoded_height)
            self._stream = self._container.add_stream("libx264", rate=frame_rate,
                                                      options={"crf": str(crf), "preset": preset})
            self._stream.width = encoded_width
            self._stream.height = encoded_height
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = time_base
            self._time_base = time_base
            self._audio = _AudioTranscoder(Path(audio), self._container, audio_bit_rate) if audio else None
        except BaseException:
            self._container.close()
            raise
        self._last_pts: int | None = None
        self.frames_written = 0

    def write(self, image: NDArray[np.uint8], time: float) -> None:
        """Encode one (h, w, 3) uint8 BGR frame shown at `time` seconds."""
        if self._audio is not None:
            self._audio.advance(time + _AUDIO_LEAD_SECONDS)
        pts = round(time / self._time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1   # rounding must never make timestamps collide
        self._last_pts = pts
        frame = from_bgr(pad_to_even(image))
        frame.pts = pts
        frame.time_base = self._time_base
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoders, finish the audio track and close the file."""
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.finish()
        finally:
            self._container.close()

    def abort(self) -> None:
        """Close without flushing (the caller deletes the partial file)."""
        try:
            self._container.close()
        except av.FFmpegError:
            pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
