"""Face tracking through the pipeline and `lipsync infer`: S3FD with seeded weights, reports, policies, cache."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import annotation, face_boxes, probe
from lipsync.cli import main
from lipsync.face.detect import S3FDDetector
from lipsync.face.locate import IdentifiedDetector
from lipsync.face.track import FaceTracker, TrackerSettings
from lipsync.io.video import VideoReader
from test_infer import _short_audio
from test_tracking import ReferenceDetector

RETALK = "retalk_face5_25fps"
NO_FACE = "noface_bottles_2983fps"


@pytest.fixture()
def homes(seeded_s3fd_home, monkeypatch, tmp_path):
    """Seeded S3FD in face-alignment's cache, and a private lipsync cache (detections land there)."""
    monkeypatch.setenv("TORCH_HOME", str(seeded_s3fd_home))
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "lipsync_home"))
    return tmp_path / "lipsync_home"


def _infer(*args: str) -> int:
    return main(["infer", "--quiet", "--precision", "fp32", *args])


class _Counting:
    """Passes calls to a detector and records the batch sizes."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.batch_sizes: list[int] = []

    def detect(self, images):
        assert len({image.shape for image in images}) == 1
        self.batch_sizes.append(len(images))
        return self.detector.detect(images)


def test_s3fd_keyframes_are_batched_and_mapped_to_full_frames(homes, shared_data):
    # Seeded weights: boxes are meaningless but real S3FD outputs; the plumbing is what is checked.
    settings = TrackerSettings(detect_max_side=160, detect_every=5, cut_threshold=20.0, batch_size=2)
    detector = _Counting(IdentifiedDetector("cpu", threshold=0.5))
    reader = VideoReader(shared_data / "video" / f"{RETALK}.mp4")
    tracker = FaceTracker(detector, settings, reader.info.width, reader.info.height)
    frames = [frame for frame, _ in zip(reader, range(11))]
    for frame in frames:
        tracker.push(frame.index, frame.time, frame.image)
    tracks = tracker.finish()
    assert detector.batch_sizes[0] == 2                     # keyframes 0 and 5 in one call
    assert max(detector.batch_sizes) <= settings.batch_size and sum(detector.batch_sizes) == tracks.detector_frames >= 3
    assert tracks.boxes.shape == (len(tracks.frames), 4) and tracks.num_frames == 11
    # Frame 0's detections, mapped back by the tracker, equal S3FD's own downscale-and-map-back path.
    direct = S3FDDetector(device="cpu", max_side=160, threshold=0.5).detect([frames[0].image])[0]
    direct = direct[np.argsort(-direct[:, 4], kind="stable")[: settings.max_faces], :4]
    mapped = tracks.boxes[(tracks.frames == 0) & tracks.detected]
    assert len(mapped) == len(direct) > 0
    np.testing.assert_allclose(np.sort(mapped, axis=0), np.sort(direct, axis=0), atol=1e-2)
    assert "s3fd sha256=" in detector.detector.cache_id


@pytest.mark.slow
def test_infer_end_to_end_through_s3fd_reports_and_caches(homes, shared_data, tmp_path, seeded_wav2lip_checkpoint,
                                                         capsys):
    audio = _short_audio(shared_data, tmp_path, 0.6)
    face = shared_data / "video" / f"{RETALK}.mp4"
    arguments = ["--face", str(face), "--audio", str(audio), "--checkpoint", str(seeded_wav2lip_checkpoint),
                 "--detect-max-side", "128", "--on-missing-face", "interpolate"]
    assert _infer(*arguments, "--outfile", str(tmp_path / "first.mp4"), "--report", str(tmp_path / "first.json")) == 0
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["source"] == "detector" and first["num_frames"] == 15 and first["detector_frames"] >= 4
    assert first["frames_with_face"] + sum(last - first_ + 1 for first_, last in first["gaps"]) == 15
    assert 0 <= first["coverage"] <= 1 and first["policy"] == "interpolate"
    assert probe(tmp_path / "first.mp4")["num_frames"] == 15
    assert "Face found in" in capsys.readouterr().out
    assert len(list((homes / "detections").glob("*.npz"))) == 1
    # The same file again: the detections come from the cache (the detector runs on no frame).
    assert _infer(*arguments, "--outfile", str(tmp_path / "second.mp4"), "--report", str(tmp_path / "second.json")) == 0
    second = json.loads((tmp_path / "second.json").read_text())
    assert second["source"] == "cache" and second["detector_frames"] == 0
    assert second["frames_with_face"] == first["frames_with_face"] and second["gaps"] == first["gaps"]
    # --no-cache detects again.
    assert _infer(*arguments, "--no-cache", "--outfile", str(tmp_path / "third.mp4"), "--report",
                  str(tmp_path / "third.json")) == 0
    assert json.loads((tmp_path / "third.json").read_text())["source"] == "detector"


@pytest.mark.slow
def test_no_face_clip_exits_0_with_zero_coverage_report(shared_data, tmp_path, seeded_wav2lip_checkpoint,
                                                        monkeypatch, capsys):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "lipsync_home"))
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps(face_boxes(shared_data, NO_FACE)))          # all null
    report = tmp_path / "coverage.json"
    audio = _short_audio(shared_data, tmp_path, 1.0)
    assert _infer("--face", str(shared_data / "video" / f"{NO_FACE}.mp4"), "--audio", str(audio), "--outfile",
                  str(tmp_path / "out.mp4"), "--checkpoint", str(seeded_wav2lip_checkpoint), "--boxes",
                  str(boxes_file), "--report", str(report)) == 0
    written = json.loads(report.read_text())
    assert written["coverage"] == 0.0 and written["frames_with_face"] == 0 and written["source"] == "boxes"
    assert written["gaps"] == [[0, int(annotation(shared_data, NO_FACE)["n_frames"]) - 1]]
    assert "Face found in 0 of 1189 frames (0.0 %)" in capsys.readouterr().out
    assert probe(tmp_path / "out.mp4")["num_frames"] == 30


@pytest.mark.slow
def test_fail_policy_exits_2_naming_the_frames(shared_data, tmp_path, seeded_wav2lip_checkpoint, capsys):
    boxes = face_boxes(shared_data, RETALK)
    for index in list(range(3, 7)) + [12]:
        boxes[index] = None
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps(boxes))
    output = tmp_path / "out.mp4"
    audio = _short_audio(shared_data, tmp_path, 1.0)
    arguments = ["--face", str(shared_data / "video" / f"{RETALK}.mp4"), "--audio", str(audio), "--outfile",
                 str(output), "--checkpoint", str(seeded_wav2lip_checkpoint), "--boxes", str(boxes_file)]
    assert _infer(*arguments, "--on-missing-face", "fail") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "frames 3-6, 12" in error and not output.exists()
    assert _infer(*arguments[:-2], "--box", "1", "1", "50", "50", "--report", str(tmp_path / "r.json")) == 2
    assert "--report" in capsys.readouterr().err


@pytest.mark.slow
def test_pipeline_with_reference_detector_interpolates_gaps(shared_data, tmp_path, seeded_wav2lip_checkpoint):
    from lipsync import InferenceConfig, LipSyncPipeline, RuntimeConfig

    detector = ReferenceDetector(shared_data, RETALK, without=set(range(8, 14)))
    pipeline = LipSyncPipeline.from_pretrained(seeded_wav2lip_checkpoint, runtime=RuntimeConfig(precision="fp32"),
                                               detector=detector)
    audio = _short_audio(shared_data, tmp_path, 1.0)
    face = shared_data / "video" / f"{RETALK}.mp4"
    passed = pipeline(face, audio, tmp_path / "passed.mp4", InferenceConfig())
    assert passed.frames_with_face == 19 and passed.coverage.gaps == ((8, 13),)
    filled = pipeline(face, audio, tmp_path / "filled.mp4", InferenceConfig(on_missing_face="interpolate", max_gap=6))
    assert filled.frames_with_face == 25 and filled.coverage.filled == ((8, 13),)
    assert "detect" in filled.stage_seconds and "track" in filled.stage_seconds
