"""Content-addressed cache of face tracks: a second run on the same file does not detect again.

An entry is named by the sha256 of the video's bytes together with everything that changes the tracks (the
detector's identity, its input size, the keyframe spacing, the cut threshold, the tracker version), so a
renamed or copied file still hits and an edited one never does. Entries are written atomically (temporary
file, then rename): concurrent runs each write a complete entry and the last one wins; a reader never sees
half a file. An unreadable entry is a miss, never an error.

Only detector results are cached. Which face is followed, smoothing, the missing-face policy and padding
are applied after, so changing them reuses the entry.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lipsync.face.track import TRACKER_VERSION, FaceTracks, TrackerSettings
from lipsync.io.atomic import atomic_write_bytes
from lipsync.weights import lipsync_home, sha256_file

logger = logging.getLogger(__name__)


def detections_dir() -> Path:
    """Where cached tracks live: `$LIPSYNC_HOME/detections`."""
    return lipsync_home() / "detections"


def cache_key(video: Path, detector_id: str, settings: TrackerSettings) -> str:
    """The entry name for `video` tracked with `settings` by the detector identified by `detector_id`.

    Args:
        video: the face video or photo (its bytes are hashed).
        detector_id: what makes this detector's answers what they are (e.g. weights hash and threshold).
        settings: the tracker settings.
    """
    identity = {"video_sha256": sha256_file(video), "detector": detector_id, "tracker_version": TRACKER_VERSION,
                "settings": asdict(settings)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class DetectionCache:
    """Face tracks by cache key, as .npz files.

    Args:
        root: the cache folder (default `detections_dir()`).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else detections_dir()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str, duration: float) -> FaceTracks | None:
        """The cached tracks of the frames earlier than `duration` seconds, or None (miss).

        An entry made for a shorter audio (which stopped before `duration`) is a miss.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as arrays:
                tracks = FaceTracks(
                    times=arrays["times"].astype(np.float64), cuts=tuple(int(cut) for cut in arrays["cuts"]),
                    track_ids=arrays["track_ids"].astype(np.int64), frames=arrays["frames"].astype(np.int64),
                    boxes=arrays["boxes"].astype(np.float64).reshape(-1, 4), detected=arrays["detected"].astype(bool),
                    detector_frames=int(arrays["detector_frames"]), covered_until=float(arrays["covered_until"]))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            logger.warning("ignoring unreadable detection cache entry %s: %s", path, error)
            return None
        if duration > tracks.covered_until:
            return None
        return tracks.truncated(duration)

    def store(self, key: str, tracks: FaceTracks) -> None:
        """Write (or replace) an entry atomically."""
        buffer = io.BytesIO()
        np.savez(buffer, times=tracks.times, cuts=np.array(tracks.cuts, dtype=np.int64), track_ids=tracks.track_ids,
                 frames=tracks.frames, boxes=tracks.boxes, detected=tracks.detected,
                 detector_frames=np.int64(tracks.detector_frames),
                 covered_until=np.float64(tracks.covered_until))
        atomic_write_bytes(self.path(key), buffer.getvalue())
