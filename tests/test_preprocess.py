"""`lipsync preprocess` on real shared videos, and reading the clips back."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import annotation
from lipsync.audio import load_audio, melspectrogram
from lipsync.errors import LipSyncError
from lipsync.io import VideoReader
from lipsync.train.clips import Clip, find_clips
from lipsync.train.preprocess import discover, preprocess
from oracles import AnnotationLandmarkerFactory, AnnotationTrackerFactory

STEMS = ("retalk_face5_25fps", "pcavs_00015_224_25fps", "vexpress_radio10_2997fps")


@pytest.fixture(scope="module")
def video_folder(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    for stem in STEMS:
        (folder / "speaker").mkdir(exist_ok=True)
        shutil.copy(shared_data / "video" / f"{stem}.mp4", folder / "speaker" / f"{stem}.mp4")
    shutil.copy(shared_data / "video" / "iplap_129_noaudio_30fps.mp4", folder / "silent.mp4")   # must fail
    return folder


@pytest.fixture(scope="module")
def preprocessed(shared_data, video_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    counts = preprocess(video_folder, out, AnnotationTrackerFactory(shared_data / "annotations"),
                        AnnotationLandmarkerFactory(shared_data / "annotations"), workers=2)
    return out, counts


def test_counts_and_failures_are_recorded(preprocessed):
    out, counts = preprocessed
    assert counts == {"done": 3, "skipped": 0, "failed": 1}
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 1 and "silent.mp4" in failures[0]["source"] and "no audio" in failures[0]["error"]
    assert len(find_clips(out)) == 3


def test_second_run_skips_finished_clips(preprocessed, shared_data, video_folder):
    out, _ = preprocessed
    counts = preprocess(video_folder, out, AnnotationTrackerFactory(shared_data / "annotations"), workers=1)
    assert counts["skipped"] == 3 and counts["done"] == 0


@pytest.mark.parametrize("stem", STEMS)
def test_clip_contents_match_the_source(preprocessed, shared_data, stem):
    out, _ = preprocessed
    clip = Clip(out / "speaker" / stem)
    reference = annotation(shared_data, stem)
    wav = load_audio(shared_data / "video" / f"{stem}.mp4")
    frames = [frame for frame in VideoReader(shared_data / "video" / f"{stem}.mp4") if frame.time < len(wav) / 16000]
    assert clip.num_frames == len(frames)
    assert clip.faces96.shape == (len(frames), 96, 96, 3) and clip.faces224.shape == (len(frames), 224, 224, 3)
    assert clip.has_face.all()
    np.testing.assert_allclose(clip.times, [frame.time for frame in frames], atol=1e-9)
    np.testing.assert_array_equal(clip.audio16k, np.clip(np.round(wav * 32768), -32768, 32767).astype(np.int16))
    np.testing.assert_allclose(clip.mel, melspectrogram(wav), atol=1e-6)
    # The 96 px crop is the reference box of that very frame (not a neighbour's).
    import cv2

    index = len(frames) // 2
    x1, y1, x2, y2 = (int(round(value)) for value in clip.boxes[index])
    expected = cv2.resize(frames[index].image[max(0, y1):y2, max(0, x1):x2], (96, 96))
    if x1 >= 0 and y1 >= 0:
        assert np.abs(clip.faces96[index].astype(int) - expected).mean() < 1.0
    # Landmarks land inside the 224 crop, mouth below eyes.
    points = clip.landmarks68[index]
    assert np.isfinite(points).all() and (points > -20).all() and (points < 244).all()
    assert points[48:68, 1].mean() > points[36:48, 1].mean() + 30
    assert reference["n_frames"] >= clip.num_frames


def test_lrs2_layout_is_recognised(tmp_path, shared_data):
    root = tmp_path / "mvlrs_v1"
    (root / "main" / "5535415699068794046").mkdir(parents=True)
    shutil.copy(shared_data / "video" / "retalk_face5_25fps.mp4", root / "main" / "5535415699068794046" / "00001.mp4")
    (root / "train.txt").write_text("5535415699068794046/00001\n")
    (root / "test.txt").write_text("5535415699068794046/00001 NF\n")
    jobs = discover(root, tmp_path / "out")
    assert [(job.split, job.clip_dir.relative_to(tmp_path / "out").as_posix()) for job in jobs] == [
        ("train", "train/5535415699068794046/00001"), ("test", "test/5535415699068794046/00001")]


def test_list_file_and_errors(tmp_path, shared_data):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{shared_data / 'video' / 'retalk_face5_25fps.mp4'}\n# comment\n")
    assert len(discover(listing, tmp_path / "out")) == 1
    listing.write_text("missing.mp4\n")
    with pytest.raises(LipSyncError, match="missing"):
        discover(listing, tmp_path / "out")
    with pytest.raises(LipSyncError, match="no videos"):
        discover(tmp_path / "out_empty" if (tmp_path / "out_empty").mkdir() is None else None, tmp_path)


@pytest.mark.slow
def test_preprocess_command_runs_the_pipeline_face_tracker(shared_data, seeded_s3fd_home, monkeypatch, tmp_path):
    # The real pass 1 (S3FD through face-alignment, seeded weights) inside the command's worker: with random
    # weights the boxes are meaningless, so check the plumbing: every video ends up a clip or a recorded
    # failure, and the summary line is printed.
    from lipsync.cli import main

    monkeypatch.setenv("TORCH_HOME", str(seeded_s3fd_home))
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "home"))
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").symlink_to(shared_data / "video" / "vexpress_radio10_2997fps.mp4")
    out = tmp_path / "dataset"
    assert main(["preprocess", str(videos), "--out", str(out), "--quiet", "--detect-every", "30"]) == 0
    clips = find_clips(out) if any(out.rglob("meta.json")) else []
    failures = (out / "failures.jsonl").read_text().splitlines() if (out / "failures.jsonl").exists() else []
    assert len(clips) + len(failures) == 1
    for clip in clips:
        assert Clip(clip).num_frames == 61


def test_preprocess_command_without_detector_is_one_line(tmp_path, monkeypatch, capsys):
    from lipsync.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "none"))
    assert main(["preprocess", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == ("lipsync preprocess: error: preprocess needs the S3FD face detector; "
                                               "run: lipsync download s3fd")
