"""`lipsync infer` end to end on the shared media, with the seeded generator and reference face boxes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import face_boxes, probe, write_wav
from lipsync.audio import load_audio
from lipsync.cli import main


def _short_audio(shared_data: Path, tmp_path: Path, seconds: float, source: str = "latentsync_demo1_16k_mono.wav"
                 ) -> Path:
    wav = load_audio(shared_data / "audio" / source)
    return write_wav(tmp_path / f"speech_{seconds:g}s.wav", wav[: int(seconds * 16000)], 16000)


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def _infer(*args: str) -> int:
    return main(["infer", "--quiet", "--precision", "fp32", *args])


@pytest.mark.slow
@pytest.mark.parametrize("stem, fps", [("retalk_face3_25fps", 25), ("vexpress_radio10_2997fps", 30000 / 1001),
                                       ("marlin_video01_30fps", 30)])
def test_infer_keeps_rate_size_duration_and_untouched_pixels(shared_data, tmp_path, seeded_wav2lip_checkpoint,
                                                             stem, fps):
    boxes = face_boxes(shared_data, stem)
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps(boxes))
    audio = _short_audio(shared_data, tmp_path, 2.6)   # longer than vexpress (2.07 s): exercises pingpong
    output = tmp_path / "out.mp4"
    assert _infer("--face", str(shared_data / "video" / f"{stem}.mp4"), "--audio", str(audio), "--outfile",
                  str(output), "--checkpoint", str(seeded_wav2lip_checkpoint), "--boxes", str(boxes_file)) == 0
    info = probe(output)
    source = av.open(str(shared_data / "video" / f"{stem}.mp4")).streams.video[0]
    assert (info["width"], info["height"]) == (source.codec_context.width, source.codec_context.height)
    assert float(info["rate"]) == pytest.approx(fps, abs=1e-3)
    assert info["has_audio"] and info["audio_duration"] == pytest.approx(2.6, abs=0.03)
    assert abs(info["video_duration"] - 2.6) <= 1 / fps + 1e-6

    # Outside the face boxes the frames are the input frames, up to the codec's error.
    original = _decode(shared_data / "video" / f"{stem}.mp4")
    produced = _decode(output)
    margin = 12
    for index in range(0, min(len(original), len(produced)), 7):
        box = boxes[index]
        keep = np.ones(original[index].shape[:2], dtype=bool)
        if box is not None:
            x1, y1, x2, y2 = (int(round(value)) for value in box)
            keep[max(0, y1 - margin): y2 + margin, max(0, x1 - margin): x2 + margin] = False
        difference = np.abs(produced[index].astype(np.int16) - original[index].astype(np.int16))[keep]
        assert difference.mean() < 2.0, (index, difference.mean())
    # Inside the lower face the seeded (random) generator visibly changed the picture.
    box = boxes[0]
    x1, y1, x2, y2 = (int(round(value)) for value in box)
    mouth = (slice(y1 + (y2 - y1) * 3 // 4 - 4, y1 + (y2 - y1) * 3 // 4 + 4), slice((x1 + x2) // 2 - 8, (x1 + x2) // 2 + 8))
    assert np.abs(produced[0][mouth].astype(np.int16) - original[0][mouth].astype(np.int16)).mean() > 5


@pytest.mark.slow
def test_infer_photo_with_fixed_box(shared_data, tmp_path, seeded_wav2lip_checkpoint):
    box = face_boxes(shared_data, "hallo_6")[0]
    audio = _short_audio(shared_data, tmp_path, 1.5, source="sadtalker_chinese_news_48k.wav")
    output = tmp_path / "photo.mp4"
    assert _infer("--face", str(shared_data / "image" / "hallo_6.jpg"), "--audio", str(audio), "--outfile",
                  str(output), "--checkpoint", str(seeded_wav2lip_checkpoint), "--box", *map(str, box),
                  "--fps", "25") == 0
    info = probe(output)
    assert (info["width"], info["height"]) == (624, 624)
    assert info["num_frames"] == 38                      # ceil(1.5 s * 25)
    assert float(info["rate"]) == 25
    assert info["audio_duration"] == pytest.approx(1.5, abs=0.03)


@pytest.mark.slow
def test_frames_without_a_face_pass_through(shared_data, tmp_path, seeded_wav2lip_checkpoint):
    # The no-face clip: every boxes entry is null, so nothing is generated and every frame passes through.
    video = shared_data / "video" / "noface_bottles_2983fps.mp4"
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps(face_boxes(shared_data, "noface_bottles_2983fps")))
    audio = _short_audio(shared_data, tmp_path, 1.0)
    output = tmp_path / "noface.mp4"
    assert _infer("--face", str(video), "--audio", str(audio), "--outfile", str(output), "--checkpoint",
                  str(seeded_wav2lip_checkpoint), "--boxes", str(boxes_file)) == 0
    original, produced = _decode(video), _decode(output)
    assert len(produced) == 30
    for index in (0, 15, 29):
        assert np.abs(produced[index].astype(np.int16) - original[index].astype(np.int16)).mean() < 2.0


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lipsync.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def bad_inputs(shared_data, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 4000)
    disc = tmp_path / "disc.pth"
    import torch

    torch.save({"binary_pred.0.weight": torch.zeros(1, 512, 1, 1)}, disc)
    return {"empty": empty, "corrupt": corrupt, "disc": disc}


@pytest.mark.slow
@pytest.mark.parametrize("case, fragment", [
    ("missing face", "face video file not found"),
    ("empty face", "empty"),
    ("corrupt face", "cannot read face video"),
    ("audio without sound", "no audio stream"),
    ("face without picture", "no video stream"),
    ("wrong checkpoint", "does not fit Wav2Lip"),
    ("missing checkpoint", "checkpoint not found"),
])
def test_bad_input_exits_2_with_one_line_and_no_file(shared_data, tmp_path, seeded_wav2lip_checkpoint,
                                                     bad_inputs, case, fragment):
    face = shared_data / "video" / "retalk_face5_25fps.mp4"
    audio = shared_data / "audio" / "latentsync_demo1_16k_mono.wav"
    checkpoint = seeded_wav2lip_checkpoint
    if case == "missing face":
        face = tmp_path / "nope.mp4"
    elif case == "empty face":
        face = bad_inputs["empty"]
    elif case == "corrupt face":
        face = bad_inputs["corrupt"]
    elif case == "audio without sound":
        audio = shared_data / "video" / "iplap_129_noaudio_30fps.mp4"
    elif case == "face without picture":
        face = audio
    elif case == "wrong checkpoint":
        checkpoint = bad_inputs["disc"]
    elif case == "missing checkpoint":
        checkpoint = tmp_path / "nothing.pth"
    output = tmp_path / "out" / "result.mp4"
    completed = _run_cli("infer", "--quiet", "--face", str(face), "--audio", str(audio), "--outfile", str(output),
                         "--checkpoint", str(checkpoint), "--box", "10", "10", "200", "200")
    assert completed.returncode == 2, completed.stderr
    assert fragment in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    assert not output.exists()
    assert not output.parent.exists() or not any(output.parent.iterdir())


class _OracleDetector:
    """Stands in for S3FD: returns the reference boxes of the shared annotations, frame after frame."""

    def __init__(self, boxes: list[list[float] | None]) -> None:
        self._boxes = iter(boxes)
        self.frames_seen = 0

    def detect(self, images):
        results = []
        for _ in images:
            box = next(self._boxes)
            self.frames_seen += 1
            results.append(np.zeros((0, 5), np.float32) if box is None else np.array([box + [0.99]], np.float32))
        return results


@pytest.mark.slow
def test_pipeline_detects_pads_and_passes_faceless_frames(shared_data, tmp_path, seeded_wav2lip_checkpoint):
    from lipsync import InferenceConfig, LipSyncPipeline, RuntimeConfig

    stem = "retalk_face5_25fps"
    boxes = face_boxes(shared_data, stem)
    for index in range(10, 20):          # a stretch where "the detector" finds nothing
        boxes[index] = None
    detector = _OracleDetector(boxes)
    pipeline = LipSyncPipeline.from_pretrained(seeded_wav2lip_checkpoint, runtime=RuntimeConfig(precision="fp32"),
                                               detector=detector)
    audio = _short_audio(shared_data, tmp_path, 1.0)
    # Every frame goes to the detector (no keyframe tracking) at full size: this oracle answers in call order.
    config = InferenceConfig(detect_every=1, detect_max_side=640)
    result = pipeline(shared_data / "video" / f"{stem}.mp4", audio, tmp_path / "out.mp4", config)
    assert detector.frames_seen == 25                 # only the frames the 1 s of audio shows
    assert result.num_frames == 25 and result.frames_with_face == 15
    original, produced = _decode(shared_data / "video" / f"{stem}.mp4"), _decode(tmp_path / "out.mp4")

    def mouth_change(index: int) -> float:
        x1, y1, x2, y2 = (int(round(value)) for value in face_boxes(shared_data, stem)[index])
        rows = slice(y1 + (y2 - y1) * 3 // 4 - 6, y1 + (y2 - y1) * 3 // 4 + 6)
        columns = slice((x1 + x2) // 2 - 12, (x1 + x2) // 2 + 12)
        return float(np.abs(produced[index][rows, columns].astype(np.int16)
                            - original[index][rows, columns].astype(np.int16)).mean())

    assert mouth_change(12) < 6.0       # no face found: passed through (codec error only, ~3.5)
    assert mouth_change(5) > 20.0       # re-rendered by the (random) seeded generator (~54)
