"""`lipsync features` on a real video with the reference face boxes and a seeded tiny MARLIN checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import face_boxes
from lipsync.cli import main
from lipsync.features import square_face_crop
from lipsync.io import VideoReader
from lipsync.train.recipes.marlin_pretrain import PRETRAIN_ARCHITECTURES
from marlin_encoder import FeatureExtractor, Marlin

STEM = "retalk_face5_25fps"      # 524×524, 122 frames at 25 fps, one face in every frame
NUM_FRAMES = 122
TINY = PRETRAIN_ARCHITECTURES["tiny"]      # 64 px, 96 wide, 128 tokens per window


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoints") / "marlin_tiny_seeded.safetensors"
    Marlin(TINY).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def video(shared_data) -> Path:
    return shared_data / "video" / f"{STEM}.mp4"


@pytest.fixture(scope="module")
def boxes_file(shared_data, tmp_path_factory) -> Path:
    boxes = face_boxes(shared_data, STEM)
    assert len(boxes) == NUM_FRAMES and all(box is not None for box in boxes)
    path = tmp_path_factory.mktemp("boxes") / "boxes.json"
    path.write_text(json.dumps(boxes))
    return path


def _features(*args: str) -> int:
    return main(["features", "--quiet", "--precision", "fp32", *args])


def test_boxes_file_gives_the_whole_clip_features(video, checkpoint, boxes_file, tmp_path, shared_data):
    out = tmp_path / "features" / "retalk.npy"
    assert _features(str(video), "--out", str(out), "--checkpoint", str(checkpoint), "--boxes", str(boxes_file),
                     "--batch-size", "3") == 0
    features = np.load(out)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    # Defaults: stride 16, sample rate 2 -> windows start at 0, 16, ..., 96 (96 + 32 ≥ 122 ends the plan).
    assert features.shape == (7, 96) and features.dtype == np.float32 and np.isfinite(features).all()
    assert sidecar["window_starts"] == [0, 16, 32, 48, 64, 80, 96]
    assert sidecar["padded"] == [False] * 6 + [True]          # 96 + 2·15 = 126 > 121
    assert sidecar["frame_indices"][0] == list(range(0, 32, 2))
    assert sidecar["frame_indices"][-1] == [min(96 + 2 * k, NUM_FRAMES - 1) for k in range(16)]
    assert sidecar["num_frames"] == NUM_FRAMES and sidecar["fps"] == 25.0 and sidecar["shape"] == [7, 96]
    assert sidecar["window_start_times"][1] == pytest.approx(16 / 25)
    assert sidecar["checkpoint"] == str(checkpoint) and sidecar["model_config"]["img_size"] == 64
    assert sidecar["face_source"] == "boxes" and (sidecar["stride"], sidecar["sample_rate"]) == (16, 2)
    assert sorted(path.name for path in out.parent.iterdir()) == ["retalk.json", "retalk.npy"]
    # Streaming in batches of windows gives exactly what FeatureExtractor computes on the whole cropped clip.
    boxes = json.loads(boxes_file.read_text())
    crops = np.stack([square_face_crop(frame.image, boxes[frame.index]) for frame in VideoReader(video)])
    expected = FeatureExtractor(Marlin.from_file(checkpoint), stride=16, sample_rate=2)(torch.from_numpy(crops))
    np.testing.assert_allclose(features, expected.features.numpy(), atol=1e-6, rtol=0)
    # The crop is the face: the box centre's colour is skin-like (red > blue), not the backdrop.
    centre = crops[60, 100:124, 100:124].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[2] + 20


def test_fixed_box_per_token_and_stride(video, checkpoint, tmp_path):
    out = tmp_path / "tokens.npy"
    assert _features(str(video), "--out", str(out), "--checkpoint", str(checkpoint), "--box", "110", "185", "395",
                     "470", "--per-token", "--stride", "40", "--sample-rate", "1") == 0
    features = np.load(out)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert features.shape == (4, 128, 96) and sidecar["window_starts"] == [0, 40, 80, 120]
    assert sidecar["padded"] == [False, False, False, True] and sidecar["face_source"] == "box"
    assert sidecar["frame_indices"][3] == [120, 121] + [121] * 14


class _StillFaceDetector:
    """A `FaceDetector` for a talking head that barely moves: the reference boxes' median, in the pixels of
    whatever (shrunk) frame it is handed."""

    def __init__(self, shared_data: Path, width: int) -> None:
        self.box = np.median(np.array(face_boxes(shared_data, STEM), dtype=np.float32), axis=0)
        self.width = width
        self.calls = 0

    def detect(self, images):
        self.calls += len(images)
        return [np.array([[*(self.box * image.shape[1] / self.width), 0.99]], dtype=np.float32) for image in images]


def test_detected_faces_through_the_pipelines_pass_one(video, checkpoint, tmp_path, shared_data):
    from lipsync.config import InferenceConfig, RuntimeConfig
    from lipsync.features import FeatureConfig, extract_video_features

    detector = _StillFaceDetector(shared_data, width=524)
    result = extract_video_features(video, tmp_path / "detected.npy",
                                    FeatureConfig(checkpoint=str(checkpoint), stride=32, sample_rate=2),
                                    InferenceConfig(on_missing_face="interpolate", detection_cache=False),
                                    RuntimeConfig(precision="fp32"), detector=detector)
    sidecar = json.loads(result.sidecar.read_text())
    assert detector.calls > 0 and sidecar["face_source"] == "detector"
    assert result.shape == (4, 96) and sidecar["window_starts"] == [0, 32, 64, 96]
    assert np.isfinite(np.load(result.output)).all()


@pytest.mark.parametrize("case, fragment", [
    ("missing video", "not found"),
    ("box outside", "outside"),
    ("short boxes", "entries"),
    ("wrong suffix", ".npy"),
    ("missing checkpoint", "checkpoint not found"),
    ("not a marlin checkpoint", "cannot load MARLIN checkpoint"),
])
def test_bad_input_exits_2_with_one_line_and_no_file(case, fragment, video, checkpoint, boxes_file, tmp_path,
                                                     capsys):
    out = tmp_path / "out" / "features.npy"
    arguments = [str(video), "--out", str(out), "--checkpoint", str(checkpoint), "--box", "110", "185", "395", "470"]
    if case == "missing video":
        arguments[0] = str(tmp_path / "nope.mp4")
    elif case == "box outside":
        arguments[-4:] = ["2000", "2000", "2100", "2100"]
    elif case == "short boxes":
        short = tmp_path / "short.json"
        short.write_text(json.dumps(json.loads(boxes_file.read_text())[:50]))
        arguments[-5:] = ["--boxes", str(short)]
    elif case == "wrong suffix":
        out = out.with_suffix(".txt")
        arguments[2] = str(out)
    elif case == "missing checkpoint":
        arguments[4] = str(tmp_path / "nope.safetensors")
    elif case == "not a marlin checkpoint":
        other = tmp_path / "other.pt"
        torch.save({"weight": torch.zeros(2)}, other)
        arguments[4] = str(other)
    assert _features(*arguments) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lipsync features: error:") and fragment in lines[0], lines
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())       # no partial files either


@pytest.mark.slow
def test_the_command_exits_2_from_a_shell(video, tmp_path):
    completed = subprocess.run([sys.executable, "-m", "lipsync.cli", "features", str(video), "--out",
                                str(tmp_path / "f.npy"), "--box", "1", "1", "0", "5"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert len(completed.stderr.strip().splitlines()) == 1 and "empty" in completed.stderr
    assert not (tmp_path / "f.npy").exists()
