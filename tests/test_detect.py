"""The face-alignment S3FD code path with seeded weights: shapes, batching and box mapping (not accuracy)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from lipsync.errors import LipSyncError
from lipsync.face.boxes import pad_and_clip, read_boxes_file
from lipsync.face.detect import S3FDDetector
from lipsync.io import VideoReader


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


@pytest.mark.parametrize("threshold, batched", [(0.5, True), (0.1, True), (0.0, False)])
def test_vectorised_decoding_gives_face_alignments_boxes(seeded_s3fd_home, monkeypatch, tmp_path, shared_data,
                                                         threshold, batched):
    # Seeded weights make thousands of candidates, so NMS and thresholds have plenty to do. Below
    # face-alignment's 0.05 candidate floor its batched mode also keeps weak boxes borrowed from the other
    # frames' candidate cells; one frame at a time it does not, and that is what ours matches.
    monkeypatch.setenv("TORCH_HOME", str(seeded_s3fd_home))
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "empty_cache"))
    detector = S3FDDetector(device="cpu", max_side=192, threshold=threshold)
    reader = VideoReader(shared_data / "video" / "retalk_face5_25fps.mp4")
    frames = [cv2.resize(frame.image, (192, 192), interpolation=cv2.INTER_AREA)
              for frame, _ in zip(reader, range(3))]
    groups = [frames] if batched else [[frame] for frame in frames]
    total = 0
    for group in groups:
        ours = detector.detect(group)
        rgb = torch.from_numpy(np.stack(group)[..., ::-1].copy()).permute(0, 3, 1, 2).float()
        theirs = detector._detector.detect_from_batch(rgb)
        for mine, reference in zip(ours, theirs):
            reference = np.asarray(reference, dtype=np.float32).reshape(-1, 5)
            assert mine.shape == reference.shape
            np.testing.assert_array_equal(mine, reference)
            total += len(mine)
    assert total > 0


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


def test_padding_grows_boxes_and_clips_them_to_the_frame():
    padded = pad_and_clip(np.array([[5.0, 5.0, 50.0, 40.0], [np.nan] * 4]), (0, 10, 2, 3), width=52, height=100)
    np.testing.assert_array_equal(padded[0], [3.0, 5.0, 52.0, 50.0])
    assert np.isnan(padded[1]).all()


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
