"""`lipsync evaluate`: extraction conformance with syncnet_python's ffmpeg steps, both protocols, FID, reports.

The seeded stand-in weights make the scores meaningless as quality numbers; they are fingerprints (see
conformance/README.md). Face tracking answers from the shared annotations (`ReferenceDetector`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import av.filter
import cv2
import numpy as np
import pytest
import torch

from lipsync.cli import main
from lipsync.errors import LipSyncError
from lipsync.eval.evaluate import EvalConfig, Evaluator, cached_sync_scorer, find_videos, match_videos
from lipsync.eval.extract import JpegRoundTrip, extract_audio, probe_video, syncnet_frames, to_full_range
from lipsync.eval.fid import FeatureBatcher, FIDFeatures, FIDStats, build_fid_inception, frechet_distance
from lipsync.eval.lse import (CROP_PAD_VALUE, CROP_SCALE, box_geometry, crop_geometry, face_crops, prepare_clip,
                              tracked_crop)
from lipsync.eval.report import write_report
from test_tracking import ReferenceDetector

PCAVS = "pcavs_00015_224_25fps"
RESAMPLED = "vexpress_radio10_2997fps"         # 30000/1001 fps, 61 frames, one timestamp gap
GENERATED = ("retalk_face5_25fps", RESAMPLED)


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "lipsync_home"))


@pytest.fixture(scope="module")
def eval_vectors(vectors):
    return vectors("syncnet_eval")


@pytest.fixture(scope="module")
def syncnet_file(seeded_state_dict, tmp_path_factory) -> Path:
    """Seeded SyncNet weights in syncnet_python's bare `syncnet_v2.model` format."""
    path = tmp_path_factory.mktemp("weights") / "syncnet_v2.model"
    torch.save(seeded_state_dict("syncnet_v2"), path)
    return path


@pytest.fixture(scope="module")
def fid_file(seeded_weights, tmp_path_factory) -> Path:
    """Seeded FID Inception weights, keys from the architecture, in pytorch-fid's bare format."""
    shapes = {key: tuple(value.shape) for key, value in build_fid_inception().state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "pt_inception_seeded.pth"
    torch.save(seeded_weights.seeded_state_dict(shapes), path)
    return path


@pytest.fixture(scope="module")
def evaluator(syncnet_file, fid_file) -> Evaluator:
    return Evaluator(syncnet_file, fid_file, config=EvalConfig(fid_frame_step=10))


def _reference_frames(eval_vectors) -> np.ndarray:
    data, offsets = eval_vectors["jpeg_bytes"], eval_vectors["jpeg_offsets"]
    return np.stack([cv2.imdecode(data[start:stop], cv2.IMREAD_COLOR) for start, stop in zip(offsets, offsets[1:])])


def _video_folder(root: Path, shared_data: Path, names_to_stems: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, stem in names_to_stems.items():
        (root / f"{name}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.mp4").symlink_to(shared_data / "video" / f"{stem}.mp4")
    return root


# -- (a) extraction conformance: frames, audio, end-to-end scores on the reference clip ----------------------

def test_jpeg_round_trip_reproduces_the_reference_frames(shared_data, eval_vectors):
    reference = _reference_frames(eval_vectors)
    path = shared_data / "video" / f"{PCAVS}.mp4"
    round_trip = JpegRoundTrip(probe_video(path).sample_aspect_ratio)
    mine = np.stack([round_trip(item.frame) for item in syncnet_frames(path)])
    assert mine.shape == reference.shape == (174, 224, 224, 3)
    per_frame = np.abs(mine.astype(np.int16) - reference).mean(axis=(1, 2, 3))
    identical = [hashlib.sha256(frame.tobytes()).hexdigest() for frame in mine] == list(eval_vectors["frame_sha256"])
    print(f"decoded frames: mean abs diff max {per_frame.max():.4f}, identical to the reference's: {identical}")
    # The round trip itself costs 2-5 levels; another libavcodec may move the rate control a little.
    assert per_frame.max() < 0.25
    # Without the round trip the frames are far from the reference's: the test can tell.
    with av.open(str(path)) as container:
        direct = np.stack([frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)])
    assert np.abs(direct.astype(np.int16) - reference).mean() > 1.0


def test_full_range_conversion_is_close_to_this_swscale(shared_data):
    # ffmpeg 5.1's conversion is emulated; FFmpeg >= 7.1's swscale rounds a little differently (within a level).
    with av.open(str(shared_data / "video" / f"{PCAVS}.mp4")) as container:
        frame = next(container.decode(video=0))
    mine = to_full_range(frame).to_ndarray().astype(np.int16)
    theirs = frame.reformat(format="yuvj420p").to_ndarray().astype(np.int16)
    assert mine.shape == theirs.shape and np.abs(mine - theirs).max() <= 1
    assert mine[:224].min() < 16 or mine[:224].max() > 235      # full range really is used


def test_audio_extraction_matches_the_reference(shared_data, eval_vectors):
    audio = extract_audio(shared_data / "video" / f"{PCAVS}.mp4")
    reference = eval_vectors["audio_int16"]
    assert audio.dtype == np.int16 and audio.shape == reference.shape == (111616,)
    difference = audio.astype(np.int32) - reference
    # 24 samples differ by one level: FFmpeg 8.1's AAC decoder gives values like 8855.499 where 5.1 gave
    # 8855.5+ before rounding to int16. Everything else is identical.
    assert np.abs(difference).max() <= 1 and np.count_nonzero(difference) <= 32


@pytest.mark.slow
def test_end_to_end_scores_match_the_reference(shared_data, eval_vectors, syncnet_file):
    evaluator = Evaluator(syncnet_file)
    score, fconfm, _ = evaluator.score_video(shared_data / "video" / f"{PCAVS}.mp4", "lrs2")
    z = eval_vectors
    # Frames identical and audio within 24 samples of one level: the numbers agree as closely as the
    # decode-path conformance test (tests/test_syncnet_eval.py) allows.
    assert score.offset == int(z["offset"]) == 15
    assert score.frames == 174 and score.windows == 169 and not score.resampled
    assert abs(score.lse_d - float(z["minval"])) <= 2e-3, score.lse_d
    assert abs(score.lse_c - float(z["conf"])) <= 2e-3, score.lse_c
    np.testing.assert_allclose(fconfm, z["fconfm"], rtol=0, atol=2e-3)


# -- 25 fps resampling, crops ---------------------------------------------------------------------------

@pytest.mark.parametrize("stem", [RESAMPLED, "hamilton_multiface_cuts_2997fps", "marlin_video01_30fps"])
def test_resampling_picks_the_frames_ffmpeg_fps_filter_picks(shared_data, stem):
    path = shared_data / "video" / f"{stem}.mp4"

    def digest(frame: av.VideoFrame) -> str:
        return hashlib.sha1(frame.to_ndarray().tobytes()).hexdigest()

    mine = [digest(item.frame) for item in syncnet_frames(path)]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        source, fps, sink = graph.add_buffer(template=stream), graph.add("fps", "fps=25"), graph.add("buffersink")
        source.link_to(fps)
        fps.link_to(sink)
        graph.configure()
        theirs = []
        for frame in [*container.decode(stream), None]:
            graph.push(frame)
            while True:
                try:
                    theirs.append(digest(graph.pull()))
                except (av.BlockingIOError, av.EOFError):
                    break
    assert probe_video(path).resampled
    assert mine == theirs and len(mine) > 0


def _padded_slice_crop(image, centre_x, centre_y, half_size):
    """run_pipeline.py crop_video, literally: pad the whole frame, slice, resize."""
    pad = int(half_size * (1 + 2 * CROP_SCALE))
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), "constant", constant_values=(CROP_PAD_VALUE,) * 2)
    y, x = centre_y + pad, centre_x + pad
    face = padded[int(y - half_size):int(y + half_size * (1 + 2 * CROP_SCALE)),
                  int(x - half_size * (1 + CROP_SCALE)):int(x + half_size * (1 + CROP_SCALE))]
    return cv2.resize(face, (224, 224))


@pytest.mark.parametrize("box", [(100, 80, 260, 250), (-30, -20, 90, 120), (250, 160, 330, 245), (5, 5, 315, 235)])
def test_tracked_crop_equals_padding_and_slicing(box):
    image = np.random.default_rng(3).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    (centre_x, centre_y, half_size), = box_geometry(box)
    np.testing.assert_array_equal(tracked_crop(image, centre_x, centre_y, half_size),
                                  _padded_slice_crop(image, centre_x, centre_y, half_size))


def test_crop_geometry_is_median_filtered_over_13_frames():
    boxes = np.tile([100.0, 100.0, 200.0, 220.0], (40, 1))
    boxes[20] += 50                                     # one outlier frame
    geometry = crop_geometry(boxes)
    np.testing.assert_allclose(geometry[6:34], [[150.0, 160.0, 60.0]] * 28)   # the outlier is gone
    assert geometry[0, 2] == 60.0                       # zero padding: 7 of 13 values are real


# -- FID ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fid_features_equal_pytorch_fid_inception(fid_file, monkeypatch):
    import pytorch_fid.inception

    # pytorch-fid downloads its weights when built: hand it ours instead, then compare the two networks.
    state = torch.load(fid_file, weights_only=True)
    monkeypatch.setattr(pytorch_fid.inception, "load_state_dict_from_url", lambda *args, **kwargs: state)
    theirs = pytorch_fid.inception.InceptionV3([3]).eval()
    ours = FIDFeatures.from_file(fid_file)
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = theirs(images)[0].flatten(1)
        torch.testing.assert_close(ours(images), expected, rtol=0, atol=1e-5)
    faces = (images.permute(0, 2, 3, 1).numpy()[..., ::-1] * 255).round().astype(np.uint8)   # BGR uint8
    assert ours.features(faces).shape == (2, 2048)


def test_fid_crops_handed_over_one_by_one_give_the_stacked_features(shared_data, fid_file):
    # lipsync evaluate feeds FID as frames stream past; batching must be exactly that of the stacked crops.
    faces = face_crops(shared_data / "video" / "retalk_face5_25fps.mp4", "lrs2", step=9)[:7]
    model = FIDFeatures.from_file(fid_file)
    batcher = FeatureBatcher(model, batch_size=3)
    for face in faces:
        batcher.add(face)
    np.testing.assert_array_equal(batcher.result(), model.features(faces, batch_size=3))
    assert FeatureBatcher(model).result().shape == (0, 2048)


def test_fid_weights_load_strictly(tmp_path, fid_file):
    state = torch.load(fid_file, weights_only=True)
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(LipSyncError, match="Mixed_7c.branch_pool.conv.weight"):
        FIDFeatures.from_file(tmp_path / "broken.pth")


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(300, 64)) * np.linspace(0.1, 2, 64)
    stats = FIDStats.from_features(features)
    other = FIDStats.from_features(features + 0.5)
    assert abs(frechet_distance(stats, stats)) < 1e-6
    assert frechet_distance(stats, other) == pytest.approx(64 * 0.25, rel=1e-6)   # only |mu1 - mu2|^2 differs


# -- (b) `lipsync evaluate` end to end ---------------------------------------------------------------------

def _evaluate(*args: str) -> int:
    return main(["evaluate", "--quiet", *args])


@pytest.mark.slow
def test_cli_reports_both_sets_resampling_and_cached_fid(shared_data, tmp_path, syncnet_file, fid_file, capsys):
    generated = _video_folder(tmp_path / "generated", shared_data, {stem: stem for stem in GENERATED})
    same = _video_folder(tmp_path / "same", shared_data, {stem: stem for stem in GENERATED})
    weights = ["--syncnet-weights", str(syncnet_file), "--fid-weights", str(fid_file), "--fid-frame-step", "25"]

    assert _evaluate(str(generated), "--reference", str(same), "--fid", *weights, "--out", str(tmp_path / "a")) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    markdown = (tmp_path / "a.md").read_text()
    assert report["protocol"] == "lrs2"
    videos = {video["name"]: video for video in report["videos"]}
    assert set(videos) == {f"{stem}.mp4" for stem in GENERATED}
    assert videos[f"{RESAMPLED}.mp4"]["resampled"] and videos[f"{RESAMPLED}.mp4"]["source_fps"] == 29.97003
    assert videos[f"{RESAMPLED}.mp4"]["frames"] == 52            # 61 frames over 2.07 s at 25 fps
    assert not videos["retalk_face5_25fps.mp4"]["resampled"] and videos["retalk_face5_25fps.mp4"]["frames"] == 122
    assert report["resampled_to_25fps"] == [f"{RESAMPLED}.mp4"]
    assert "Resampled to 25 fps before scoring" in markdown and RESAMPLED in markdown
    for video in videos.values():
        assert np.isfinite(video["lse_d"]) and np.isfinite(video["lse_c"]) and -15 <= video["offset"] <= 15
    assert report["mean"]["lse_d"] == pytest.approx(np.mean([video["lse_d"] for video in videos.values()]))
    assert report["fid_images"] == [8, 8] and not report["fid_stats_cached"]   # frames 0, 25, ... of each video
    assert abs(report["fid"]) < 1e-9                              # a set against itself
    assert {weights["name"] for weights in report["weights"]} == {"syncnet_v2", "fid_inception"}
    summary = capsys.readouterr().out
    assert "LSE-D" in summary and "FID" in summary and "resampled from 29.970 fps" in summary

    assert _evaluate(str(generated), "--reference", str(same), "--fid", *weights, "--out", str(tmp_path / "b")) == 0
    again = json.loads((tmp_path / "b.json").read_text())
    assert again["fid_stats_cached"] and again["fid"] == report["fid"]
    assert [video["lse_d"] for video in again["videos"]] == [video["lse_d"] for video in report["videos"]]


@pytest.mark.slow
def test_second_fid_run_does_not_run_inception_on_the_reference(shared_data, tmp_path, evaluator, monkeypatch):
    generated = _video_folder(tmp_path / "generated", shared_data, {RESAMPLED: RESAMPLED})
    reference = _video_folder(tmp_path / "reference", shared_data, {RESAMPLED: "retalk_face5_25fps"})
    first = evaluator.evaluate(generated, reference, fid=True)
    calls = []
    original = FIDFeatures.features
    monkeypatch.setattr(FIDFeatures, "features", lambda self, faces, *args: calls.append(len(faces))
                        or original(self, faces, *args))
    second = evaluator.evaluate(generated, reference, fid=True)
    assert not first.fid_stats_cached and second.fid_stats_cached
    assert calls == [6]                                  # the generated video's crops only (52 frames, every 10th)
    assert second.fid == first.fid and first.fid_images == second.fid_images == (6, 13)
    assert len(list((tmp_path / "lipsync_home" / "fid_stats").glob("*.npz"))) == 1
    # Another video is further away than a set from itself (below 1e-9, see the CLI test): the seeded Inception's
    # features vary little from image to image, so the distance is small in absolute terms (about 1e-6).
    assert first.fid > 1e-8


@pytest.mark.slow
def test_tracked_protocol_with_the_face_track(shared_data, tmp_path, syncnet_file, fid_file):
    detectors = [ReferenceDetector(shared_data, stem) for stem in GENERATED]

    class Oracle:
        def detect(self, images):
            return [next(detector._faces[key] for detector in detectors if key in detector._faces).copy()
                    for key in map(_digest, images)]

    evaluator = Evaluator(syncnet_file, fid_file, detector=Oracle(), config=EvalConfig(fid_frame_step=10))
    generated = _video_folder(tmp_path / "generated", shared_data, {stem: stem for stem in GENERATED})
    report = evaluator.evaluate(generated, generated, protocol="tracked", fid=True)
    json_path, markdown_path = write_report(report, tmp_path / "tracked")
    record = json.loads(json_path.read_text())
    assert record["protocol"] == "tracked" and "face-track crop" in markdown_path.read_text()
    assert record["resampled_to_25fps"] == [f"{RESAMPLED}.mp4"]
    assert all(video["face_frames_filled"] == 0 for video in record["videos"])
    assert abs(record["fid"]) < 1e-2 and record["fid_stats_cached"] is False   # the oracle has no cache_id
    lrs2 = evaluator.evaluate(generated, protocol="lrs2")
    # The crop changes what SyncNet sees: the two protocols give different numbers on the same videos.
    assert [video.lse_d for video in lrs2.videos] != [video["lse_d"] for video in record["videos"]]


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_tracked_crop_of_a_known_box_feeds_syncnet_224_crops(shared_data):
    path = shared_data / "video" / "retalk_face5_25fps.mp4"
    clip = prepare_clip(path, "tracked", box_geometry((150, 120, 400, 400)), face_step=30)
    assert clip.frames.shape == (122, 224, 224, 3) and clip.faces.shape == (5, 224, 224, 3)
    assert clip.audio.dtype == np.int16 and len(clip.audio) == pytest.approx(4.9 * 16000, rel=0.02)


# -- errors ---------------------------------------------------------------------------------------------

def test_offline_without_weights_is_one_line_and_writes_nothing(shared_data, tmp_path, capsys, syncnet_file):
    generated = _video_folder(tmp_path / "generated", shared_data, {RESAMPLED: RESAMPLED})
    assert _evaluate(str(generated), "--out", str(tmp_path / "report")) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "lipsync download syncnet_v2" in error
    assert _evaluate(str(generated), "--reference", str(generated), "--fid", "--syncnet-weights", str(syncnet_file),
                     "--out", str(tmp_path / "report")) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "lipsync download fid_inception" in error
    assert not list(tmp_path.glob("report*"))


def test_pairs_are_matched_by_path_then_stem_and_missing_ones_named(shared_data, tmp_path):
    generated = _video_folder(tmp_path / "generated", shared_data, {"a": RESAMPLED, "sub/b": RESAMPLED})
    reference = _video_folder(tmp_path / "reference", shared_data, {"a": RESAMPLED})
    (tmp_path / "reference" / "elsewhere").mkdir()
    (tmp_path / "reference" / "elsewhere" / "b.mov").symlink_to(shared_data / "video" / f"{RESAMPLED}.mp4")
    pairs = match_videos(find_videos(generated), reference)
    assert [(pair.name, pair.reference_name) for pair in pairs] == [("a.mp4", "a.mp4"), ("sub/b.mp4",
                                                                                          "elsewhere/b.mov")]
    (tmp_path / "reference" / "elsewhere" / "b.mov").unlink()
    with pytest.raises(LipSyncError, match=r"no reference video .* 1 generated video\(s\): sub/b.mp4"):
        match_videos(find_videos(generated), reference)
    with pytest.raises(LipSyncError, match="no videos"):
        find_videos(tmp_path / "reference" / "elsewhere")


def test_fid_without_reference_and_video_without_speech_are_user_errors(shared_data, tmp_path, syncnet_file,
                                                                        capsys):
    silent = _video_folder(tmp_path / "silent", shared_data, {"face": "iplap_129_noaudio_30fps"})
    assert _evaluate(str(silent), "--fid", "--syncnet-weights", str(syncnet_file)) == 2
    assert "--reference" in capsys.readouterr().err
    assert _evaluate(str(silent), "--syncnet-weights", str(syncnet_file), "--out", str(tmp_path / "r")) == 2
    assert "no audio track" in capsys.readouterr().err and not list(tmp_path.glob("r.*"))


# -- the demo's sync plot -------------------------------------------------------------------------------

def test_demo_scorer_needs_cached_weights_and_scores_per_frame(shared_data, tmp_path, syncnet_file):
    from lipsync.weights import manifest_entry

    assert cached_sync_scorer("cpu") is None                # nothing downloaded: the page says "not available"
    cached = manifest_entry("syncnet_v2").path
    cached.parent.mkdir(parents=True)
    cached.symlink_to(syncnet_file)
    scorer = cached_sync_scorer("cpu")
    confidence = scorer(shared_data / "video" / f"{RESAMPLED}.mp4", (130.0, 110.0, 390.0, 400.0))
    # 52 frames at 25 fps but 2.048 s of audio: min(52, 51) - 5 windows, as the reference counts them.
    assert confidence.shape == (46,) and confidence.dtype == np.float32
