"""Stand-ins for detectors and landmarkers that answer from the shared reference annotations.

face-alignment cannot fetch its weights here, so tests use the MediaPipe annotations in
../shared/data/annotations as "perfect" detectors. Instances are picklable (preprocessing workers).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class AnnotationTracker:
    """A face tracker returning the top-scoring reference box of every frame shown before `duration`."""

    def __init__(self, annotations: Path) -> None:
        self.annotations = Path(annotations)

    def __call__(self, reader, duration: float) -> np.ndarray:
        reference = np.load(self.annotations / f"{reader.path.stem}.npz")
        times = reference["timestamps"] - reference["timestamps"][0]
        count = int(np.sum(times < duration))
        boxes = np.full((count, 4), np.nan)
        for row in np.flatnonzero(reference["face_idx"] == 0):
            frame = int(reference["face_frame"][row])
            if frame < count:
                boxes[frame] = reference["face_box"][row]
        return boxes


class AnnotationTrackerFactory:
    def __init__(self, annotations: Path) -> None:
        self.annotations = Path(annotations)

    def __call__(self) -> AnnotationTracker:
        return AnnotationTracker(self.annotations)


class AnnotationLandmarker:
    """68-point landmarks (iBUG-300W layout) of the top-scoring face, from the reference meshes."""

    def __init__(self, annotations: Path) -> None:
        self.annotations = Path(annotations)
        self._cache: dict[str, dict[int, np.ndarray]] = {}

    def _frames(self, stem: str) -> dict[int, np.ndarray]:
        if stem not in self._cache:
            reference = np.load(self.annotations / f"{stem}.npz")
            by_frame = {}
            for row in np.flatnonzero(reference["face_idx"] == 0):
                mesh = int(reference["face_mesh_row"][row])
                if mesh >= 0:
                    by_frame[int(reference["face_frame"][row])] = reference["lm68"][mesh]
            self._cache[stem] = by_frame
        return self._cache[stem]

    def __call__(self, frame, box, *, index: int, source: Path):
        return self._frames(Path(source).stem).get(index)


class AnnotationLandmarkerFactory:
    def __init__(self, annotations: Path) -> None:
        self.annotations = Path(annotations)

    def __call__(self) -> AnnotationLandmarker:
        return AnnotationLandmarker(self.annotations)
