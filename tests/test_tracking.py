"""Keyframe detection, tracking, smoothing, missing faces, face choice and the detection cache.

The reference boxes in ../shared/data/annotations stand in for the detector: `ReferenceDetector` recognises
each frame it is given by hashing it, so keyframe-only detection still gets each frame's own faces.
"""
from __future__ import annotations

import hashlib
import math
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import annotation, face_boxes
from lipsync.config import InferenceConfig
from lipsync.errors import LipSyncError
from lipsync.face.cache import DetectionCache
from lipsync.face.cuts import SceneCutDetector
from lipsync.face.gaps import fill_gaps, find_gaps
from lipsync.face.locate import build_face_track
from lipsync.face.select import select_target
from lipsync.face.smooth import smooth_boxes
from lipsync.face.track import FaceTracker, FaceTracks, TrackerSettings, associate, box_iou, detector_view_size
from lipsync.io.video import VideoReader

TALKING_FACES = ["retalk_face2_25fps", "retalk_face3_25fps", "retalk_face5_25fps", "marlin_video01_30fps",
                 "liveportrait_d20_25fps", "vexpress_radio10_2997fps", "pcavs_00015_224_25fps",
                 "iplap_129_noaudio_30fps"]
HAMILTON = "hamilton_multiface_cuts_2997fps"
NO_FACE = "noface_bottles_2983fps"


class ReferenceDetector:
    """A `FaceDetector` answering from the reference annotations.

    The video is decoded once here; each frame, shrunk to the size the tracker gives the detector, is keyed
    by its sha1, so the detector knows which frame it was handed. It returns every reference face of that
    frame with its score, in the shrunk frame's pixels.

    Args:
        shared_data: the shared data folder.
        stem: the clip.
        max_side: the tracker's `detect_max_side`.
        without: frames whose faces are deleted (a detector that misses them).
        cache_id: set to make the tracks cacheable (detectors without one are never cached).
    """

    def __init__(self, shared_data: Path, stem: str, max_side: int = InferenceConfig().detect_max_side,
                 without: set[int] | frozenset[int] = frozenset(), cache_id: str | None = None) -> None:
        reference = annotation(shared_data, stem)
        reader = VideoReader(shared_data / "video" / f"{stem}.mp4")
        width, height = reader.info.width, reader.info.height
        size = detector_view_size(width, height, max_side)
        to_view = np.array([size[0] / width, size[1] / height] * 2, dtype=np.float32)
        self._faces: dict[str, np.ndarray] = {}
        for frame in reader:
            image = frame.image if size == (width, height) else cv2.resize(frame.image, size,
                                                                            interpolation=cv2.INTER_AREA)
            rows = np.flatnonzero(reference["face_frame"] == frame.index)
            faces = np.zeros((0, 5), np.float32)
            if len(rows) and frame.index not in without:
                faces = np.concatenate([reference["face_box"][rows] * to_view, reference["face_score"][rows, None]],
                                       axis=1).astype(np.float32)
            self._faces.setdefault(_digest(image), faces)
        if cache_id is not None:
            self.cache_id = cache_id
        self.batch_sizes: list[int] = []

    @property
    def frames_seen(self) -> int:
        return sum(self.batch_sizes)

    def detect(self, images):
        self.batch_sizes.append(len(images))
        return [self._faces[_digest(image)].copy() for image in images]


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _track(shared_data: Path, stem: str, detector, duration: float = math.inf, **options):
    reader = VideoReader(shared_data / "video" / f"{stem}.mp4")
    config = InferenceConfig(pads=(0, 0, 0, 0), **options)   # compare the boxes themselves, unpadded
    return build_face_track(reader, duration, config, detector)


def _iou(first, second) -> float:
    return float(box_iou(np.array([first]), np.array([second]))[0, 0])


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "lipsync_home"))


# -- keyframes + tracking + smoothing against the reference ----------------------------------------------

@pytest.mark.parametrize("stem", TALKING_FACES)
def test_keyframes_tracking_and_smoothing_match_the_reference_boxes(shared_data, stem):
    detector = ReferenceDetector(shared_data, stem)
    track = _track(shared_data, stem, detector)            # defaults: k = 5, smoothing "light"
    reference = face_boxes(shared_data, stem)
    assert track.boxes.shape == (len(reference), 4)
    ious = [_iou(box, track.boxes[index]) if not np.isnan(track.boxes[index, 0]) else 0.0
            for index, box in enumerate(reference) if box is not None]
    print(f"{stem}: mean IoU {np.mean(ious):.4f}, min {np.min(ious):.3f}, detector on "
          f"{detector.frames_seen} of {len(reference)} frames")
    assert np.mean(ious) >= 0.9
    assert track.coverage.cuts == ()                        # no false scene cut on a talking head
    # One keyframe in five (plus the last frame): the face never left, so nothing was re-detected.
    assert detector.frames_seen == math.ceil(len(reference) / 5) + ((len(reference) - 1) % 5 != 0)
    assert track.coverage.frames_with_face == len(reference)


def test_multiface_clip_follows_one_person_through_its_shots(shared_data):
    reference = annotation(shared_data, HAMILTON)
    detector = ReferenceDetector(shared_data, HAMILTON)
    track = _track(shared_data, HAMILTON, detector)
    boxes = track.boxes
    num_frames = int(reference["n_frames"])
    assert track.coverage.cuts == (20, 82, 211)            # the cuts found by eye (annotations README)
    shots = [(0, 19), (20, 81), (82, 210), (211, 274)]

    def faces(index: int) -> np.ndarray:
        return reference["face_box"][reference["face_frame"] == index]

    # Who each shot's person is: the singer; the singer in profile (the only face at the cut); the singer
    # again; and after the last cut the face nearest in position and size to where the singer was.
    last_of_shot_3 = boxes[210]
    shot_4_faces = faces(211)
    centres = (shot_4_faces[:, :2] + shot_4_faces[:, 2:]) / 2
    nearest = shot_4_faces[np.argmin(np.linalg.norm(centres - (last_of_shot_3[:2] + last_of_shot_3[2:]) / 2, axis=1))]
    seeds = [faces(0)[0], faces(20)[0], faces(82)[0], nearest]
    for (first, last), seed in zip(shots, seeds):
        person = _reference_person(faces, seed, first, last)
        for index in range(first, last + 1):
            box = boxes[index]
            if person[index] is not None:
                assert not np.isnan(box[0]) and _iou(box, person[index]) >= 0.5, (index, box, person[index])
            elif not np.isnan(box[0]):
                # Tracked across a frame where the reference lost the person: never on somebody else.
                assert all(_iou(box, other) < 0.3 for other in faces(index)), (index, box)
    # In the second shot the profile face is last seen at frame 36; the audience is never taken instead.
    assert np.isnan(boxes[37:82, 0]).all()
    assert (37, 81) in track.coverage.gaps
    assert len(boxes) == num_frames


def _reference_person(faces, seed: np.ndarray, first: int, last: int) -> list[np.ndarray | None]:
    """The reference boxes of one person within a shot: linked frame to frame by position and size."""
    person: dict[int, np.ndarray] = {}
    previous = seed
    for index in range(first, last + 1):
        candidates = faces(index)
        if len(candidates) == 0:
            continue
        pairs = associate(previous[None], candidates, min_iou=0.3, max_shift=0.6, max_scale=1.5)
        if pairs:
            previous = person[index] = candidates[pairs[0][1]]
    return [person.get(index) for index in range(last + 1)]


def test_face_index_and_select_box_choose_the_person(shared_data):
    stem = HAMILTON
    detector = ReferenceDetector(shared_data, stem)
    woman = (300.0, 50.0, 380.0, 130.0)          # the woman right of centre in the last shot
    track = _track(shared_data, stem, detector, select_box=woman)
    assert _iou(track.boxes[250], woman) > 0.5
    # The same person is kept back to the start: re-associated across cuts by position and size.
    assert not np.isnan(track.boxes[0, 0])
    left = _track(shared_data, stem, detector, face_index=0)
    assert _iou(left.boxes[0], face_boxes(shared_data, stem)[0]) > 0.8      # one face on frame 0
    with pytest.raises(LipSyncError, match="--face-index 1: frame 0, the first with faces, has only 1 face"):
        _track(shared_data, stem, detector, face_index=1)
    with pytest.raises(LipSyncError, match="overlaps none"):
        _track(shared_data, stem, detector, select_box=(0.0, 300.0, 10.0, 310.0))


def test_largest_face_and_left_to_right_order():
    # Two faces from frame 0: a small one on the left, a large one on the right.
    rows = [(0, frame, [10, 10, 30, 30]) for frame in range(4)] + [(1, frame, [100, 10, 160, 70]) for frame in range(4)]
    rows.sort(key=lambda row: row[1])
    tracks = FaceTracks(times=np.arange(4) / 25, cuts=(), track_ids=np.array([row[0] for row in rows]),
                        frames=np.array([row[1] for row in rows]), boxes=np.array([row[2] for row in rows], float),
                        detected=np.ones(len(rows), bool), detector_frames=4, covered_until=math.inf)
    assert select_target(tracks).track_ids == (1,)
    assert select_target(tracks, face_index=0).track_ids == (0,)
    assert select_target(tracks, face_index=1).track_ids == (1,)
    assert select_target(tracks, select_box=(0, 0, 35, 35)).track_ids == (0,)


# -- missing faces -------------------------------------------------------------------------------------

def test_no_face_clip_passes_through_with_zero_coverage(shared_data):
    detector = ReferenceDetector(shared_data, NO_FACE)
    track = _track(shared_data, NO_FACE, detector)
    num_frames = int(annotation(shared_data, NO_FACE)["n_frames"])
    assert np.isnan(track.boxes).all() and track.boxes.shape == (num_frames, 4)
    report = track.coverage
    assert report.coverage == 0.0 and report.frames_with_face == 0 and report.tracks == ()
    assert report.gaps == ((0, num_frames - 1),)
    assert detector.frames_seen == math.ceil(num_frames / 5) + ((num_frames - 1) % 5 != 0)
    assert max(detector.batch_sizes) == TrackerSettings.batch_size          # keyframes go in batches
    with pytest.raises(LipSyncError, match=f"no face in {num_frames} of {num_frames} frames .*0-{num_frames - 1}"):
        _track(shared_data, NO_FACE, detector, on_missing_face="fail")


@pytest.mark.parametrize("policy", ["passthrough", "interpolate", "fail"])
def test_gaps_are_filled_up_to_max_gap_and_passed_through_beyond(shared_data, policy):
    stem = "retalk_face3_25fps"
    short, long = range(30, 38), range(60, 90)               # 8 and 30 frames without the face
    detector = ReferenceDetector(shared_data, stem, without=set(short) | set(long))
    options = dict(on_missing_face=policy, max_gap=10)
    if policy == "fail":
        with pytest.raises(LipSyncError, match="no face in 38 of 125 frames .*frames 30-37, 60-89"):
            _track(shared_data, stem, detector, **options)
        return
    track = _track(shared_data, stem, detector, **options)
    boxes, reference = track.boxes, face_boxes(shared_data, stem)
    # The gaps start and end on their exact frames: around a vanishing face every frame is detected.
    assert np.isnan(boxes[list(long), 0]).all()
    assert not np.isnan(boxes[[29, 38, 59, 90], 0]).any()
    if policy == "interpolate":
        assert not np.isnan(boxes[list(short), 0]).any()
        assert min(_iou(boxes[index], reference[index]) for index in short) > 0.8
        assert track.coverage.filled == ((30, 37),) and track.coverage.gaps == ((60, 89),)
    else:
        assert np.isnan(boxes[list(short), 0]).all()
        assert track.coverage.gaps == ((30, 37), (60, 89)) and track.coverage.filled == ()
    assert track.coverage.frames_with_face == 125 - 30 - (0 if policy == "interpolate" else 8)


def test_fill_gaps_stays_inside_shots_and_away_from_the_ends():
    boxes = np.full((12, 4), np.nan)
    boxes[[1, 4, 5, 9]] = [[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10], [10, 0, 20, 10]]
    filled, done = fill_gaps(boxes, max_gap=3, cuts=(7,))
    assert done == [(2, 3)]                                  # 6-8 spans the cut at 7; 0 and 10-11 are ends
    np.testing.assert_allclose(filled[2], [1, 0, 11, 10])
    assert np.isnan(filled[[0, 6, 7, 8, 10, 11], 0]).all()
    assert find_gaps(~np.isnan(filled[:, 0])) == [(0, 0), (6, 8), (10, 11)]


# -- smoothing, association, cuts ------------------------------------------------------------------------

def test_one_euro_smoothing_removes_jitter_without_lag():
    generator = np.random.default_rng(0)
    times = np.arange(100) / 25.0
    centre = 100 + 60 * np.sin(2 * np.pi * 0.5 * times)      # a head swaying at 0.5 Hz
    truth = np.stack([centre - 50, np.full(100, 50.0), centre + 50, np.full(100, 150.0)], axis=1)
    noisy = truth + generator.normal(0, 2.0, truth.shape)
    for preset in ("light", "strong"):
        smoothed = smooth_boxes(noisy, times, preset)
        assert np.abs(np.diff(smoothed, 2, axis=0)).mean() < 0.5 * np.abs(np.diff(noisy, 2, axis=0)).mean()
        # Forwards + backwards: no systematic lag behind the moving face.
        velocity = np.gradient(centre)
        lag = np.sum((smoothed[:, 0] - truth[:, 0]) * velocity) / np.sum(velocity ** 2)
        assert abs(lag) < 0.5, (preset, lag)                 # frames
    np.testing.assert_array_equal(smooth_boxes(noisy, times, "off"), noisy)
    with_gap = noisy.copy()
    with_gap[40:45] = np.nan
    assert np.isnan(smooth_boxes(with_gap, times, "light")[40:45]).all()


def test_association_prefers_overlap_then_position_and_is_one_to_one():
    previous = np.array([[0, 0, 10, 10], [100, 0, 120, 20]], float)
    current = np.array([[108, 2, 128, 22], [1, 1, 11, 11], [300, 0, 310, 10]], float)
    assert sorted(associate(previous, current)) == [(0, 1), (1, 0)]
    # No overlap, but near and as large: still the same face.
    assert associate(np.array([[0, 0, 20, 20]], float), np.array([[21, 0, 41, 20]], float), max_shift=1.1) == [(0, 0)]
    assert associate(np.array([[0, 0, 20, 20]], float), np.array([[21, 0, 71, 50]], float), max_shift=1.1) == []


def test_scene_cuts_of_the_multiface_clip(shared_data):
    detector = SceneCutDetector(InferenceConfig().cut_threshold)
    reader = VideoReader(shared_data / "video" / f"{HAMILTON}.mp4")
    cuts = [frame.index for frame in reader if detector(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY))]
    assert cuts == [20, 82, 211]


# -- streaming, template tracking ------------------------------------------------------------------------

class _PlantedFace:
    """A detector for synthetic frames: each frame's face box is known by the frame's hash."""

    def __init__(self) -> None:
        self.boxes: dict[str, np.ndarray] = {}
        self.frames_seen = 0

    def detect(self, images):
        self.frames_seen += len(images)
        return [np.array([[*self.boxes[_digest(image)], 0.99]], np.float32) for image in images]


def test_tracking_follows_motion_between_keyframes_in_bounded_memory():
    # A textured 60-pixel "face" on a textured background, moving on a curve a straight line between
    # keyframes would cut: the template tracker must follow it.
    generator = np.random.default_rng(1)
    background = cv2.GaussianBlur(generator.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 2)
    face = cv2.GaussianBlur(generator.integers(0, 255, (60, 60, 3), dtype=np.uint8), (0, 0), 1.5)
    detector = _PlantedFace()
    settings = TrackerSettings(detect_every=10, detect_max_side=320, cut_threshold=20.0, batch_size=2)
    tracker = FaceTracker(detector, settings, 320, 240)
    truth = []
    largest_queue = 0
    for index in range(61):
        x = 100 + 60 * math.sin(2 * math.pi * index / 20)      # a full swing every 20 frames: keyframes at 0, 10
        y = 90 + 20 * math.cos(2 * math.pi * index / 20)      # see the same place
        image = background.copy()
        image[int(y):int(y) + 60, int(x):int(x) + 60] = face
        box = np.array([int(x), int(y), int(x) + 60, int(y) + 60], float)
        detector.boxes[_digest(image)] = box
        truth.append(box)
        tracker.push(index, index / 25, image)
        largest_queue = max(largest_queue, tracker.queued_frames)
    tracks = tracker.finish()
    assert largest_queue <= settings.batch_size * settings.detect_every
    assert detector.frames_seen == 7                         # keyframes only: 0, 10, ..., 60
    assert set(tracks.track_ids.tolist()) == {0} and tracks.num_frames == 61
    ious = [_iou(box, tracks.boxes[index]) for index, box in enumerate(truth)]
    assert min(ious) > 0.9, min(ious)                        # straight lines would give 0 here (same endpoints)


# -- the detection cache --------------------------------------------------------------------------------

def test_second_run_hits_the_cache_and_skips_the_detector(shared_data):
    stem = "vexpress_radio10_2997fps"
    first_detector = ReferenceDetector(shared_data, stem, cache_id="reference-annotations")
    first = _track(shared_data, stem, first_detector, duration=1.0)
    assert first_detector.frames_seen > 0 and first.coverage.source == "detector"
    second_detector = ReferenceDetector(shared_data, stem, cache_id="reference-annotations")
    second = _track(shared_data, stem, second_detector, duration=1.0, smooth="strong")
    assert second_detector.frames_seen == 0 and second.coverage.source == "cache"
    assert second.coverage.detector_frames == 0 and second.boxes.shape == first.boxes.shape
    # A shorter audio reuses the entry too; a longer one needs frames it never saw.
    assert _track(shared_data, stem, second_detector, duration=0.5).coverage.source == "cache"
    assert second_detector.frames_seen == 0
    assert _track(shared_data, stem, second_detector, duration=1.5).coverage.source == "detector"
    # Other detector settings, or no cache wanted: detect again.
    assert _track(shared_data, stem, second_detector, duration=1.0, detect_every=3).coverage.source == "detector"
    assert _track(shared_data, stem, second_detector, duration=1.0, detection_cache=False).coverage.source == "detector"
    # A detector without a cache identity is never cached.
    anonymous = ReferenceDetector(shared_data, stem)
    _track(shared_data, stem, anonymous, duration=1.0)
    once = anonymous.frames_seen
    assert _track(shared_data, stem, anonymous, duration=1.0).coverage.source == "detector"
    assert once > 0 and anonymous.frames_seen == 2 * once


def test_cache_survives_concurrent_writers_and_broken_entries(tmp_path):
    cache = DetectionCache(tmp_path / "detections")
    tracks = FaceTracks(times=np.arange(50) / 25, cuts=(20,), track_ids=np.zeros(50, np.int64),
                        frames=np.arange(50), boxes=np.tile([1.0, 2.0, 30.0, 40.0], (50, 1)),
                        detected=np.arange(50) % 5 == 0, detector_frames=10, covered_until=math.inf)
    failures: list[str] = []

    def write() -> None:
        for _ in range(20):
            cache.store("key", tracks)

    def read() -> None:
        for _ in range(50):
            loaded = cache.load("key", 10.0)
            if loaded is not None and not np.array_equal(loaded.boxes, tracks.boxes):
                failures.append("a reader saw a different entry")

    threads = [threading.Thread(target=write) for _ in range(3)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert [path.name for path in (tmp_path / "detections").iterdir()] == ["key.npz"]    # no temporary left
    loaded = cache.load("key", 1.0)
    assert loaded is not None and loaded.num_frames == 25 and loaded.cuts == (20,) and loaded.detected.sum() == 5
    cache.path("key").write_bytes(b"not a zip file")
    assert cache.load("key", 1.0) is None                   # a broken entry is a miss, not an error
