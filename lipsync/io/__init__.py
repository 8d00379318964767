"""Streaming media I/O: PyAV decode with timestamps, H.264/AAC encode, atomic output."""
from lipsync.io.atomic import atomic_path, atomic_write_bytes
from lipsync.io.video import Frame, VideoInfo, VideoReader
from lipsync.io.writer import VideoWriter

__all__ = ["Frame", "VideoInfo", "VideoReader", "VideoWriter", "atomic_path", "atomic_write_bytes"]
