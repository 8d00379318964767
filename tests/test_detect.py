"""The face-alignment S3FD code path with seeded weights: shapes, batching and box mapping (not accuracy)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsync.errors import LipSyncError
from lipsync.face.boxes import pad_and_clip, read_boxes_file, smooth_track
from lipsync.face.detect import S3FD_FILE, S3FDDetector, largest_face
from lipsync.io import VideoReader


@pytest.fixture(scope="module")
def seeded_s3fd_home(tmp_path_factory, conformance):
    """A TORCH_HOME whose hub cache holds seeded S3FD weights under face-alignment's file name."""
    import importlib.util

    from face_alignment.detection.sfd.net_s3fd import s3fd

    spec = importlib.util.spec_from_file_location("seeded_weights", conformance / "seeded_weights.py")
    seeded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeded)
    shapes = {key: tuple(value.shape) for key, value in s3fd().state_dict().items()}
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(seeded.seeded_state_dict(shapes), home / "hub" / "checkpoints" / S3FD_FILE)
    return home


@pytest.fixture()
def detector(seeded_s3fd_home, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(seeded_s3fd_home))
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "empty_cache"))
    # A low threshold: seeded weights give low scores, and the test is about the plumbing.
    return S3FDDetector(device="cpu", max_side=160, threshold=0.0)


def test_weights_are_found_in_torch_hub_cache_only_when_present(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "nothing"))
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "nothing_either"))
    with pytest.raises(LipSyncError, match="lipsync download s3fd"):
        S3FDDetector()


def test_batched_detection_on_real_frames(detector, shared_data):
    frames = [frame.image for frame, _ in zip(VideoReader(shared_data / "video" / "retalk_face5_25fps.mp4"), range(3))]
    results = detector.detect(frames)
    assert len(results) == 3
    for detections in results:
        assert detections.dtype == np.float32 and detections.ndim == 2 and detections.shape[1] == 5
        assert len(detections) > 0
    # Batching must not mix frames up: each frame alone gives the same boxes.
    for frame, batched in zip(frames, results):
        np.testing.assert_allclose(detector.detect([frame])[0], batched, rtol=1e-4, atol=1e-2)


def test_boxes_are_mapped_back_to_full_resolution(detector, shared_data):
    # A frame upsampled 2x by pixel repetition shrinks back (INTER_AREA) to exactly the original, so its
    # detections must be the original's scaled by 2.
    small = next(iter(VideoReader(shared_data / "video" / "pcavs_00015_224_25fps.mp4"))).image[:160, :160].copy()
    large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    on_small = detector.detect([small])[0]
    on_large = detector.detect([large])[0]
    assert len(on_small) == len(on_large) > 0
    np.testing.assert_allclose(on_large[:, :4], on_small[:, :4] * 2, atol=1e-3)
    np.testing.assert_allclose(on_large[:, 4], on_small[:, 4], atol=1e-6)


def test_largest_face_and_padding():
    detections = np.array([[10, 10, 20, 20, 0.9], [0, 0, 50, 40, 0.6]], dtype=np.float32)
    np.testing.assert_array_equal(largest_face(detections), [0, 0, 50, 40])
    assert largest_face(np.zeros((0, 5), dtype=np.float32)) is None
    padded = pad_and_clip(np.array([[5.0, 5.0, 50.0, 40.0]]), (0, 10, 2, 3), width=52, height=100)
    np.testing.assert_array_equal(padded, [[3.0, 5.0, 52.0, 50.0]])


def test_smoothing_is_centred_and_skips_missing_frames():
    track = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [np.nan] * 4, [6, 0, 16, 10], [8, 0, 18, 10]], dtype=float)
    smoothed = smooth_track(track, radius=1)
    assert np.isnan(smoothed[2]).all()
    np.testing.assert_allclose(smoothed[1], [1, 0, 11, 10])
    np.testing.assert_allclose(smoothed[3], [7, 0, 17, 10])


def test_boxes_file_validation(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text("[null, [1, 2, 30, 40]]")
    track = read_boxes_file(path)
    assert np.isnan(track[0]).all() and track[1].tolist() == [1, 2, 30, 40]
    for text, fragment in [("{}", "JSON list"), ("[[1, 2, 3]]", "4 numbers"), ("[[5, 5, 1, 1]]", "empty"),
                           ("not json", "not valid JSON"), ('[["a", 1, 2, 3]]', "entry 0")]:
        path.write_text(text)
        with pytest.raises(LipSyncError, match=fragment):
            read_boxes_file(path)
