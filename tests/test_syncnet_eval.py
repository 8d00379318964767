"""syncnet MFCC front end and LSE-D / LSE-C evaluation against syncnet_python's own outputs."""
from __future__ import annotations

import copy
import gc
import hashlib
import itertools

import numpy as np
import pytest
import torch

from syncnet import SyncNetScorer, calc_pdist, evaluate_clip, mfcc
from syncnet import scoring
from syncnet.mfcc import mfcc_float64

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def eval_vectors(vectors):
    return vectors("syncnet_eval")


@pytest.fixture(scope="module")
def decoded_frames(eval_vectors) -> np.ndarray:
    """The 174 JPEGs ffmpeg wrote for the reference run, decoded as cv2.imread does (BGR uint8)."""
    # The reference decoded with OpenCV's libjpeg; another decoder (FFmpeg's mjpeg) rounds differently.
    cv2 = pytest.importorskip("cv2", reason="opencv-python decodes the reference's JPEG frames")
    data, offsets = eval_vectors["jpeg_bytes"], eval_vectors["jpeg_offsets"]
    frames = np.stack([cv2.imdecode(data[start:stop], cv2.IMREAD_COLOR) for start, stop in zip(offsets, offsets[1:])])
    digests = [hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest() for frame in frames]
    mismatched = [i for i, (mine, theirs) in enumerate(zip(digests, eval_vectors["frame_sha256"])) if mine != theirs]
    assert not mismatched, f"this OpenCV/libjpeg decodes frames {mismatched[:5]}... differently from the reference"
    return frames


@pytest.fixture(scope="module")
def evaluation(decoded_frames, eval_vectors, syncnet_v2) -> dict:
    return evaluate_clip(decoded_frames, eval_vectors["audio_int16"], syncnet_v2)


# ---------------------------------------------------------------------------------------------- MFCC


def test_mfcc_matches_reference(vectors):
    z = vectors("syncnet_mfcc")
    features = mfcc(z["audio_int16"], int(z["sample_rate"]))
    assert features.dtype == np.float32 and features.shape == z["mfcc"].shape == (13, 959)
    np.testing.assert_allclose(features, z["mfcc"], rtol=0, atol=1e-3)


def test_mfcc_of_eval_clip_matches_reference(eval_vectors):
    np.testing.assert_allclose(mfcc(eval_vectors["audio_int16"], 16000), eval_vectors["mfcc"], rtol=0, atol=1e-3)


@pytest.mark.parametrize("length", [1, 399, 400, 401, 560, 16000])
@pytest.mark.parametrize("kind", ["speech", "silence", "full_scale"])
def test_mfcc_computes_python_speech_features_mfcc(vectors, kind, length):
    """Our numpy front end against the package the reference calls, in float64, on speech and edge cases."""
    python_speech_features = pytest.importorskip("python_speech_features", reason="the reference's MFCC package")
    speech = vectors("syncnet_mfcc")["audio_int16"]
    audio = {
        "speech": speech[16000 : 16000 + length],
        "silence": np.zeros(length, dtype=np.int16),   # every energy exactly zero: the eps floors
        "full_scale": np.where(np.arange(length) % 2, 32767, -32768).astype(np.int16),
    }[kind]
    expected = python_speech_features.mfcc(audio, 16000)
    ours = mfcc_float64(audio)
    assert ours.shape == expected.shape == (1 + max(0, -(-(length - 400) // 160)), 13)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-9)


def test_mfcc_whole_recording_equals_the_package_to_float32(vectors):
    python_speech_features = pytest.importorskip("python_speech_features", reason="the reference's MFCC package")
    audio = vectors("syncnet_mfcc")["audio_int16"]
    np.testing.assert_allclose(mfcc(audio, 16000), python_speech_features.mfcc(audio, 16000).T.astype(np.float32),
                               rtol=0, atol=1e-5)


def test_mfcc_rejects_other_rates(vectors):
    with pytest.raises(ValueError, match="16000 Hz"):
        mfcc(vectors("syncnet_mfcc")["audio_int16"], 44100)


# ---------------------------------------------------------------------------------------------- distances


def test_calc_pdist_matches_a_direct_loop():
    generator = torch.Generator().manual_seed(0)
    lip, aud = torch.randn(12, 16, generator=generator), torch.randn(12, 16, generator=generator)
    vshift = 3
    padded = torch.cat([torch.zeros(vshift, 16), aud, torch.zeros(vshift, 16)])
    expected = torch.tensor([
        [float(torch.linalg.vector_norm(lip[v] - padded[v + j] + 1e-6)) for j in range(2 * vshift + 1)]
        for v in range(12)
    ])
    torch.testing.assert_close(calc_pdist(lip, aud, vshift), expected, rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_clip_matches_reference(evaluation, eval_vectors):
    z = eval_vectors
    assert evaluation["num_frames"] == int(z["num_frames"]) == 174
    assert evaluation["min_length"] == int(z["min_length"]) == 174
    assert evaluation["minidx"] == int(z["minidx"])
    assert evaluation["offset"] == int(z["offset"])
    assert evaluation["dists"].shape == z["dists"].shape == (169, 31)
    np.testing.assert_allclose(evaluation["mfcc"], z["mfcc"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(evaluation["lip_features"], z["lip_features"], rtol=0, atol=5e-3)
    np.testing.assert_allclose(evaluation["aud_features"], z["aud_features"], rtol=0, atol=1e-3)
    for key in ("dists", "mdist", "fconfm"):
        np.testing.assert_allclose(evaluation[key], z[key], rtol=0, atol=2e-3, err_msg=key)
    assert abs(evaluation["min_dist"] - float(z["minval"])) <= 2e-3
    assert abs(evaluation["confidence"] - float(z["conf"])) <= 2e-3


@pytest.mark.parametrize("block_sizes", [(1,), (7,), (23, 1, 60)], ids=["frame_by_frame", "sevens", "uneven"])
def test_frames_streamed_in_blocks_give_the_whole_clips_embeddings(decoded_frames, eval_vectors, syncnet_v2,
                                                                   evaluation, block_sizes):
    blocks, start, sizes = [], 0, itertools.cycle(block_sizes)
    while start < len(decoded_frames):
        size = next(sizes)
        blocks.append(decoded_frames[start : start + size])
        start += size
    scorer = SyncNetScorer(syncnet_v2)
    streamed = scorer.score_stream(iter(blocks), eval_vectors["audio_int16"])
    # Against the encoder's one call on the whole stacked clip for every window that fits (170; scoring keeps
    # 169). Windows of a chunk share Winograd tiles, so the call must cover the same windows to agree bit for bit.
    whole = scorer.lip_encoder(torch.from_numpy(decoded_frames), 170).numpy()[:169]
    np.testing.assert_array_equal(streamed["lip_features"], whole)
    for key in ("dists", "fconfm"):
        np.testing.assert_array_equal(streamed[key], evaluation[key])
    assert (streamed["offset"], streamed["num_frames"]) == (evaluation["offset"], 174)


def test_video_longer_than_its_audio_streams_only_what_is_scored(decoded_frames, eval_vectors, syncnet_v2):
    audio = eval_vectors["audio_int16"][: 100 * 640]            # 100 frames of audio under 174 of video
    scorer = SyncNetScorer(syncnet_v2)
    streamed = scorer.score_stream(iter(np.array_split(decoded_frames, 9)), audio)
    assert (streamed["num_frames"], streamed["min_length"]) == (174, 100)
    assert streamed["lip_features"].shape == (95, 1024)
    # The contract is the whole-clip score. (Not a 95-window encoder call: windows sharing a chunk share
    # Winograd tiles, so which neighbours a window has moves its float32 rounding.)
    whole = scorer(decoded_frames, audio)
    for key in ("lip_features", "dists"):
        np.testing.assert_array_equal(streamed[key], whole[key])
    np.testing.assert_allclose(streamed["lip_features"],
                               scorer.lip_encoder(torch.from_numpy(decoded_frames), 95).numpy(), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_scores_use_eval_semantics_and_leave_the_model_alone(decoded_frames, eval_vectors, syncnet_v2):
    frames, audio = decoded_frames[:12], eval_vectors["audio_int16"][: 12 * 640]
    before = {key: value.clone() for key, value in syncnet_v2.state_dict().items()}
    syncnet_v2.train()
    try:
        in_train_mode = evaluate_clip(frames, audio, syncnet_v2, vshift=2)
        assert syncnet_v2.training
    finally:
        syncnet_v2.eval()
    for key, value in syncnet_v2.state_dict().items():   # BatchNorm running stats untouched
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert in_train_mode["dists"].shape == (7, 5) and in_train_mode["min_length"] == 12
    scorer = SyncNetScorer(syncnet_v2)
    in_eval_mode = scorer(frames, audio, vshift=2)
    np.testing.assert_array_equal(in_train_mode["lip_features"], in_eval_mode["lip_features"])
    np.testing.assert_array_equal(in_train_mode["aud_features"], in_eval_mode["aud_features"])


def test_evaluate_clip_reuses_its_scorer_only_while_the_weights_are_unchanged(decoded_frames, eval_vectors,
                                                                              syncnet_v2):
    frames, audio = decoded_frames[:16], eval_vectors["audio_int16"][: 16 * 640]
    model = copy.deepcopy(syncnet_v2)
    first = evaluate_clip(frames, audio, model, vshift=2)
    scorer = scoring._SCORERS[model][1]
    again = evaluate_clip(frames, audio, model, vshift=2)
    assert scoring._SCORERS[model][1] is scorer
    np.testing.assert_array_equal(again["dists"], first["dists"])

    with torch.no_grad():
        model.netcnnlip[0].weight.mul_(0.5)   # an in-place update, as an optimiser step or load_state_dict makes
    changed = evaluate_clip(frames, audio, model, vshift=2)
    assert scoring._SCORERS[model][1] is not scorer
    assert not np.array_equal(changed["lip_features"], first["lip_features"])
    fresh = SyncNetScorer(model)(frames, audio, vshift=2)
    np.testing.assert_array_equal(changed["lip_features"], fresh["lip_features"])

    cached = len(scoring._SCORERS)
    del model, scorer
    gc.collect()
    assert len(scoring._SCORERS) == cached - 1   # the cache does not keep models alive


@pytest.mark.parametrize(
    ("frames", "audio", "sample_rate", "message"),
    [
        (np.zeros((10, 112, 112, 3), np.uint8), np.zeros(6400, np.int16), 16000, "224x224"),
        (np.zeros((10, 224, 224, 3), np.float32), np.zeros(6400, np.int16), 16000, "uint8"),
        (np.zeros((10, 224, 224, 3), np.uint8), np.zeros(6400, np.int16), 44100, "resample"),
        (np.zeros((10, 224, 224, 3), np.uint8), np.zeros(6400, np.float32), 16000, "int16"),
        (np.zeros((5, 224, 224, 3), np.uint8), np.zeros(6400, np.int16), 16000, "too short"),
    ],
)
def test_evaluate_clip_rejects_bad_input(syncnet_v2, frames, audio, sample_rate, message):
    with pytest.raises(ValueError, match=message):
        evaluate_clip(frames, audio, syncnet_v2, sample_rate=sample_rate)
