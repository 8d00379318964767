"""The evaluation report: per-video and mean LSE-D / LSE-C, FID, settings and weights, as JSON and Markdown."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lipsync.io.atomic import atomic_write_bytes

__all__ = ["EvaluationReport", "VideoScore", "WeightsInfo", "write_report"]


@dataclass(frozen=True)
class VideoScore:
    """One generated video's sync scores.

    Attributes:
        name: path relative to the generated folder.
        reference: matching reference video (relative to the reference folder), or None.
        offset: SyncNet's audio-visual offset in frames (positive: the audio leads).
        lse_d: LSE-D (lower is better).
        lse_c: LSE-C (higher is better).
        frames: 25 fps frames scored.
        windows: 5-frame windows compared.
        source_frames: decoded frames of the video that were shown.
        source_fps: the video's average frame rate.
        resampled: True when the video was resampled to 25 fps before scoring.
        audio_seconds: length of its extracted 16 kHz audio.
        face_frames_filled: tracked protocol: frames without a detected face (boxes interpolated or held).
    """

    name: str
    reference: str | None
    offset: int
    lse_d: float
    lse_c: float
    frames: int
    windows: int
    source_frames: int
    source_fps: float
    resampled: bool
    audio_seconds: float
    face_frames_filled: int = 0


@dataclass(frozen=True)
class WeightsInfo:
    """A checkpoint the numbers depend on."""

    name: str
    path: str
    sha256: str


@dataclass(frozen=True)
class EvaluationReport:
    """Everything `lipsync evaluate` measured.

    Attributes:
        protocol: "lrs2" or "tracked".
        generated_dir, reference_dir: the folders evaluated.
        videos: per-video scores, in name order.
        fid: FID of the generated face crops against the reference ones, or None when not asked for.
        fid_images: (generated, reference) face crops the FID is over.
        fid_stats_cached: whether the reference statistics came from the cache.
        settings: every option that changes the numbers.
        weights: the checkpoints used, with their sha256.
        seconds: wall time of the evaluation.
    """

    protocol: str
    generated_dir: str
    reference_dir: str | None
    videos: tuple[VideoScore, ...]
    fid: float | None = None
    fid_images: tuple[int, int] | None = None
    fid_stats_cached: bool | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    weights: tuple[WeightsInfo, ...] = ()
    seconds: float = 0.0

    @property
    def mean_lse_d(self) -> float:
        return _mean([video.lse_d for video in self.videos])

    @property
    def mean_lse_c(self) -> float:
        return _mean([video.lse_c for video in self.videos])

    @property
    def resampled(self) -> list[str]:
        """Names of the videos that were resampled to 25 fps."""
        return [video.name for video in self.videos if video.resampled]

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["mean"] = {"lse_d": self.mean_lse_d, "lse_c": self.mean_lse_c, "videos": len(self.videos)}
        record["resampled_to_25fps"] = self.resampled
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """The per-video table and the means, as aligned text (the CLI's summary)."""
        width = max([len(video.name) for video in self.videos] + [5])
        lines = [f"{'video':<{width}}  {'offset':>6}  {'LSE-D':>8}  {'LSE-C':>7}  {'frames':>6}  note"]
        for video in self.videos:
            note = f"resampled from {video.source_fps:.3f} fps" if video.resampled else ""
            lines.append(f"{video.name:<{width}}  {video.offset:>6d}  {video.lse_d:>8.3f}  {video.lse_c:>7.3f}  "
                         f"{video.frames:>6d}  {note}".rstrip())
        lines.append(f"{'mean':<{width}}  {'':>6}  {self.mean_lse_d:>8.3f}  {self.mean_lse_c:>7.3f}  "
                     f"{sum(video.frames for video in self.videos):>6d}")
        if self.fid is not None:
            source = "cached" if self.fid_stats_cached else "computed"
            lines.append(f"FID {self.fid:.3f} ({self.fid_images[0]} generated vs {self.fid_images[1]} reference "
                         f"face crops; reference statistics {source})")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        lines = [f"# Lip-sync evaluation: {self.generated_dir}", "",
                 f"Protocol **{self.protocol}** ({_PROTOCOL_TEXT[self.protocol]}). "
                 f"{len(self.videos)} video(s), {self.seconds:.1f} s.", ""]
        lines += ["| video | offset | LSE-D ↓ | LSE-C ↑ | frames | source fps | resampled to 25 fps |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for video in self.videos:
            lines.append(f"| {video.name} | {video.offset} | {video.lse_d:.3f} | {video.lse_c:.3f} | {video.frames} "
                         f"| {video.source_fps:.3f} | {'yes' if video.resampled else 'no'} |")
        lines.append(f"| **mean** | | **{self.mean_lse_d:.3f}** | **{self.mean_lse_c:.3f}** | "
                     f"{sum(video.frames for video in self.videos)} | | |")
        lines.append("")
        if self.resampled:
            lines += [f"Resampled to 25 fps before scoring (nearest frame by timestamp, as ffmpeg's fps filter): "
                      f"{', '.join(self.resampled)}.", ""]
        if self.fid is not None:
            source = "read from the cache" if self.fid_stats_cached else "computed"
            lines += [f"**FID {self.fid:.3f}** between {self.fid_images[0]} generated and {self.fid_images[1]} "
                      f"reference face crops ({self.reference_dir}; reference statistics {source}).", ""]
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in self.settings.items()]
        lines += ["", "## Weights", "", "| name | file | sha256 |", "|---|---|---|"]
        lines += [f"| {weights.name} | {weights.path} | `{weights.sha256}` |" for weights in self.weights]
        return "\n".join(lines) + "\n"


_PROTOCOL_TEXT = {
    "lrs2": "whole frame resized to 224x224, as Wav2Lip's LRS2 evaluation",
    "tracked": "face-track crop resized to 224x224, as syncnet_python's real-video pipeline",
}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def write_report(report: EvaluationReport, prefix: str | Path) -> tuple[Path, Path]:
    """Write ``PREFIX.json`` and ``PREFIX.md`` atomically.

    Returns:
        The two paths.
    """
    prefix = Path(prefix)
    json_path = prefix.with_name(prefix.name + ".json")
    markdown_path = prefix.with_name(prefix.name + ".md")
    atomic_write_bytes(json_path, (report.to_json() + "\n").encode())
    atomic_write_bytes(markdown_path, report.to_markdown().encode())
    return json_path, markdown_path
