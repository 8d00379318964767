"""The coverage report: which frames got a face, which did not, and why (printed and written as JSON)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from lipsync.face.gaps import format_ranges


@dataclass(frozen=True)
class TrackSummary:
    """One face track.

    Attributes:
        track_id: its number (in order of appearance).
        first_frame, last_frame: where it starts and ends (inclusive).
        num_frames: frames in which it has a box.
        selected: part of the person being lip-synced.
    """

    track_id: int
    first_frame: int
    last_frame: int
    num_frames: int
    selected: bool


@dataclass(frozen=True)
class CoverageReport:
    """Where the lip-synced face was found, over the source frames the output shows.

    Attributes:
        source: where the boxes came from: "detector", "cache" (an earlier run's detections) or "boxes".
        policy: the --on-missing-face policy applied.
        num_frames: source frames covered (those shown before the audio ends).
        frames_with_face: frames that get a face box (and so are re-rendered).
        frames_detected: of these, frames whose box the detector itself found (the rest were tracked or
            interpolated between keyframes, or filled across a gap).
        frames_filled: frames filled by `interpolate` across a short gap.
        detector_frames: frames the detector ran on (0 for boxes given by the user or a cache hit).
        gaps: inclusive frame ranges without a face (after the policy).
        filled: inclusive frame ranges filled by `interpolate`.
        cuts: frames that start a new shot.
        tracks: every face track (empty for user boxes).
    """

    source: str
    policy: str
    num_frames: int
    frames_with_face: int
    frames_detected: int
    frames_filled: int
    detector_frames: int
    gaps: tuple[tuple[int, int], ...]
    filled: tuple[tuple[int, int], ...]
    cuts: tuple[int, ...]
    tracks: tuple[TrackSummary, ...]

    @property
    def coverage(self) -> float:
        """Fraction of frames with a face, 0 to 1 (0 for no frames)."""
        return self.frames_with_face / self.num_frames if self.num_frames else 0.0

    def to_json(self) -> str:
        """The report as a JSON object (ranges as [first, last] lists, coverage as a fraction)."""
        record = asdict(self)
        record["coverage"] = round(self.coverage, 6)
        return json.dumps(record, indent=2)

    def summary(self) -> str:
        """One paragraph for people."""
        text = f"Face found in {self.frames_with_face} of {self.num_frames} frames ({100 * self.coverage:.1f} %)"
        if self.source == "boxes":
            text += " (boxes given with --boxes)"
        else:
            between = self.frames_with_face - self.frames_detected - self.frames_filled
            if between > 0:
                text += f", {between} of them tracked between detector keyframes"
            where = ("detections reused from the cache" if self.source == "cache"
                     else f"detector run on {self.detector_frames} frame(s)")
            selected = sum(track.selected for track in self.tracks)
            text += f"; {where}; {len(self.tracks)} face track(s), {selected} followed as the chosen person"
            text += f"; {len(self.cuts)} scene cut(s)"
            if self.cuts:
                shown = ", ".join(str(cut) for cut in self.cuts[:10])
                text += f" (before frames {shown}{', ...' if len(self.cuts) > 10 else ''})"
        if self.filled:
            text += f"; {self.frames_filled} frame(s) interpolated across gaps ({format_ranges(self.filled)})"
        if self.gaps:
            missing = self.num_frames - self.frames_with_face
            text += f"; {missing} frame(s) without a face pass through unchanged ({format_ranges(self.gaps)})"
        return text + "."
