"""FeatureExtractor on real face frames (decoded with PyAV, cropped with the reference face boxes)."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from conftest import annotation
from marlin_encoder import FeatureExtractor, Marlin

STEM = "liveportrait_d20_25fps"  # 480×480, one frontal talking face
NUM_FRAMES = 40  # 2.5 windows of 16: exercises the padded tail


@pytest.fixture(scope="module")
def tiny_encoder(conformance) -> Marlin:
    config = json.loads((conformance / "vectors" / "marlin_tiny.config.json").read_text())
    return Marlin.from_file(conformance / "vectors" / "marlin_tiny.encoder.pt", config=config)


@pytest.fixture(scope="module")
def face_clip(shared_data) -> torch.Tensor:
    """(t, s, s, 3) uint8 RGB: the first NUM_FRAMES frames cropped to frame 0's face box, enlarged 1.3×."""
    reference = annotation(shared_data, STEM)
    row = np.where((reference["face_frame"] == 0) & (reference["face_idx"] == 0))[0][0]
    x1, y1, x2, y2 = reference["face_box"][row]
    side = int(round(1.3 * max(x2 - x1, y2 - y1)))
    width, height = int(reference["width"]), int(reference["height"])
    left = int(np.clip(round((x1 + x2) / 2 - side / 2), 0, width - side))
    top = int(np.clip(round((y1 + y2) / 2 - side / 2), 0, height - side))
    frames = []
    with av.open(str(shared_data / "video" / f"{STEM}.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24")[top:top + side, left:left + side])
            if len(frames) == NUM_FRAMES:
                break
    return torch.from_numpy(np.stack(frames))


def test_window_plan_covers_every_frame(tiny_encoder):
    extractor = FeatureExtractor(tiny_encoder, window=16, stride=16)
    starts, indices, padded = extractor.plan(40)
    assert starts.tolist() == [0, 16, 32] and padded.tolist() == [False, False, True]
    assert indices[2].tolist() == list(range(32, 40)) + [39] * 8
    assert set(indices.flatten().tolist()) == set(range(40))

    starts, indices, padded = FeatureExtractor(tiny_encoder, stride=8, sample_rate=2).plan(40)
    assert starts.tolist() == [0, 8] and not padded.any()  # window 8 reads frames 8, 10, …, 38
    assert indices[0].tolist() == list(range(0, 32, 2)) and indices[1].tolist() == list(range(8, 40, 2))

    starts, _, padded = extractor.plan(5)  # shorter than a window: one padded window
    assert starts.tolist() == [0] and padded.tolist() == [True]
    starts, _, padded = extractor.plan(32)  # exact fit: no padding
    assert starts.tolist() == [0, 16] and not padded.any()


def test_pooled_and_per_token_features_on_real_frames(tiny_encoder, face_clip):
    assert face_clip.dtype == torch.uint8 and face_clip.shape[0] == NUM_FRAMES
    pooled = FeatureExtractor(tiny_encoder, batch_size=2)(face_clip)
    assert pooled.features.shape == (3, 96) and torch.isfinite(pooled.features).all()
    assert pooled.padded.tolist() == [False, False, True]
    # Real, changing content: consecutive windows differ.
    assert (pooled.features[0] - pooled.features[1]).abs().max() > 1e-3

    per_token = FeatureExtractor(tiny_encoder, per_token=True)(face_clip)
    assert per_token.features.shape == (3, 128, 96)


def test_layouts_dtypes_and_batching_agree(tiny_encoder, face_clip):
    reference = FeatureExtractor(tiny_encoder, batch_size=3)(face_clip).features
    channels_first = face_clip.permute(3, 0, 1, 2)  # (3, t, h, w)
    for clip, batch_size in ((channels_first, 1), (face_clip.float() / 255, 2)):
        got = FeatureExtractor(tiny_encoder, batch_size=batch_size)(clip).features
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)


def test_padding_repeats_the_last_frame(tiny_encoder, face_clip):
    extractor = FeatureExtractor(tiny_encoder)
    explicit = torch.cat([face_clip, face_clip[-1:].expand(8, -1, -1, -1)])  # 48 frames, no padding needed
    padded = extractor(face_clip)
    unpadded = extractor(explicit)
    assert not unpadded.padded.any()
    torch.testing.assert_close(padded.features, unpadded.features, atol=1e-6, rtol=0)


def test_sample_rate_reads_every_kth_frame(tiny_encoder, face_clip):
    strided = FeatureExtractor(tiny_encoder, stride=16, sample_rate=2)(face_clip)
    subsampled = FeatureExtractor(tiny_encoder, stride=16)(face_clip[::2].contiguous())
    torch.testing.assert_close(strided.features[0], subsampled.features[0], atol=1e-6, rtol=0)


def test_input_validation(tiny_encoder, face_clip):
    extractor = FeatureExtractor(tiny_encoder)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        extractor(face_clip.float())
    with pytest.raises(ValueError, match="channels_last"):
        extractor(torch.zeros(3, 8, 8, 3))
    with pytest.raises(ValueError, match="n_frames"):
        FeatureExtractor(tiny_encoder, window=8)
