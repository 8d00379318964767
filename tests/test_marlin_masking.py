"""Mask generators on real landmark sequences (shared annotations), and the landmark -> LaPa rasteriser."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import annotation
from marlin_encoder import masking
from marlin_encoder.masking import MaskConfig, MaskGenerator, num_visible, patch_regions
from marlin_encoder.regions import LAPA_LABELS, landmarks_to_label_map, landmarks_to_label_maps

GRID = (8, 14, 14)  # 16 frames / tubelet 2, 224 / 16
NUM_TOKENS = 1568
COMPONENTS = slice(0, 5)  # REGION_GROUPS: eyes+brows ×2, nose, mouth, hair
SKIN, BACKGROUND = 5, 6


def _landmark_clip(shared_data, stem: str, first: int, frames: int = 16, step: int = 2, scale: float = 1.5):
    """(frames, 68, 2) landmarks of face 0 in a fixed 224×224 crop: frame `first`'s face box enlarged `scale`×.

    The crop stays put while the head moves (as in a clip cropped once), so the regions drift across patches.
    `step` 2 is MARLIN's temporal sample rate.
    """
    reference = annotation(shared_data, stem)
    indices = range(first, first + frames * step, step)
    row = np.where((reference["face_frame"] == first) & (reference["face_idx"] == 0))[0][0]
    x1, y1, x2, y2 = reference["face_box"][row]
    side = scale * max(x2 - x1, y2 - y1)
    corner = np.array([(x1 + x2 - side) / 2, (y1 + y2 - side) / 2])
    landmarks = []
    for index in indices:
        mesh = np.where((reference["mesh_frame"] == index) & (reference["mesh_face"] == 0))[0][0]
        landmarks.append((reference["lm68"][mesh] - corner) * 224 / side)
    return np.stack(landmarks)


@pytest.fixture(scope="module")
def label_maps(shared_data) -> torch.Tensor:
    """(2, 16, 224, 224) uint8 LaPa maps of two real clips: a head moving back (liveportrait) and a talker."""
    clips = [
        _landmark_clip(shared_data, "liveportrait_d20_25fps", 0),
        _landmark_clip(shared_data, "retalk_face3_25fps", 64),
    ]
    return torch.from_numpy(np.stack([landmarks_to_label_maps(clip, 224, 224) for clip in clips]))


@pytest.fixture(scope="module")
def token_regions(label_maps) -> torch.Tensor:
    """(2, 1568, 7) bool: region groups each token touches in its own tubelet's (first) frame."""
    regions = patch_regions(label_maps[:, ::2], 16)  # (b, tt, g, gh, gw)
    return regions.permute(0, 1, 3, 4, 2).reshape(2, NUM_TOKENS, 7)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Counts and reproducibility ------------------------------------------------------------------------------
def test_num_visible_is_floor():
    assert num_visible(1568, 0.9) == 156
    assert num_visible(128, 0.75) == 32
    assert num_visible(10, 0.9) == 1  # 10·(1 − 0.9) is 0.99999… in floating point
    with pytest.raises(ValueError):
        num_visible(10, 1.0)


@pytest.mark.parametrize("strategy", ["random", "frame", "tube", "fasking", "fasking_reverse"])
@pytest.mark.parametrize("ratio", [0.9, 0.75])
def test_exact_count_and_seeding(strategy, ratio, label_maps):
    masker = MaskGenerator(MaskConfig(strategy=strategy, mask_ratio=ratio))
    maps = label_maps if strategy.startswith("fasking") else None
    first = masker(2, _generator(1), label_maps=maps)
    assert first.dtype == torch.bool and first.shape == (2, NUM_TOKENS)
    assert first.sum(dim=1).tolist() == [num_visible(NUM_TOKENS, ratio)] * 2
    assert torch.equal(masker(2, _generator(1), label_maps=maps), first)
    assert not torch.equal(masker(2, _generator(2), label_maps=maps), first)


def test_fasking_needs_label_maps():
    with pytest.raises(ValueError, match="label maps"):
        MaskGenerator(MaskConfig(strategy="fasking"))(2, _generator(0))
    with pytest.raises(ValueError, match="unknown masking strategy"):
        MaskConfig(strategy="blocks")


# VideoMAE-style strategies ------------------------------------------------------------------------------------
def test_frame_masking_keeps_whole_tubelets():
    visible = masking.frame_masking(4, GRID, 0.9, _generator(3)).view(4, 8, 196)
    for sample in visible:
        tubelets = sample.any(dim=1)
        assert tubelets.sum() == 1  # ⌈8·0.1⌉ = 1 tubelet holds all 156 visible tokens
    visible = masking.frame_masking(4, GRID, 0.5, _generator(3)).view(4, 8, 196)
    assert (visible.all(dim=2).sum(dim=1) == 4).all()  # 784 visible = exactly 4 whole tubelets


def test_tube_masking_repeats_one_spatial_pattern():
    visible = masking.tube_masking(4, GRID, 0.9, _generator(4)).view(4, 8, 196)
    for sample in visible:
        positions = sample.any(dim=0)
        assert positions.sum() == 20  # ⌈196·0.1⌉ candidate positions shared by every tubelet
        assert (sample.sum(dim=1) >= 15).all()  # 160 candidates trimmed to 156: a few dropped at most
    visible = masking.tube_masking(2, GRID, 0.75, _generator(4)).view(2, 8, 196)
    assert (visible == visible[:, :1]).all()  # 49 positions × 8 = 392 exactly: a perfect tube


def test_random_masking_is_uniform():
    visible = masking.random_masking(400, GRID, 0.9, _generator(5))
    frequency = visible.float().mean(dim=0)
    assert abs(frequency.mean().item() - 156 / 1568) < 1e-6
    assert frequency.min() > 0.03 and frequency.max() < 0.2  # binomial(400, 0.1): ±5 σ
    assert (visible.view(400, 8, 196).any(dim=2)).all()  # not frame or tube shaped


# Fasking ---------------------------------------------------------------------------------------------------
def test_fasking_masks_components_before_skin_and_background(label_maps, token_regions):
    for seed in range(3):
        visible = masking.fasking(label_maps, 16, 2, 0.9, _generator(seed))
        touches_component = token_regions[..., COMPONENTS].any(dim=-1)
        touches_skin = token_regions[..., SKIN]
        assert not (visible & touches_component).any()
        # 156 visible per clip and over 600 background-only tokens: skin is masked too, background stays.
        assert (~(touches_component | touches_skin)).sum(dim=1).min() > 600
        assert not (visible & touches_skin).any()


def test_fasking_reverse_masks_background_first(label_maps, token_regions):
    visible = masking.fasking_reverse(label_maps, 16, 2, 0.9, _generator(0))
    touches_background = token_regions[..., BACKGROUND]
    assert (~touches_background).sum(dim=1).min() > 156
    assert not (visible & touches_background).any()
    # Every token left visible is on the face; tokens entirely inside components outrank skin ones.
    inside_components = ~token_regions[..., SKIN:].any(dim=-1)
    assert (visible | ~inside_components).all()


@pytest.mark.parametrize("reverse", [False, True])
def test_priority_levels_are_respected_exactly(label_maps, reverse):
    # Same seed -> same component order; visible tokens must all come from levels masked no earlier.
    steps = masking.masking_priority(label_maps, 16, 2, _generator(7), reverse=reverse)
    for ratio in (0.9, 0.6, 0.3):
        visible = masking.fasking(label_maps, 16, 2, ratio, _generator(7), reverse=reverse)
        for sample in range(2):
            assert steps[sample][visible[sample]].min() >= steps[sample][~visible[sample]].max()


def test_component_order_is_random_per_sample(label_maps):
    orders = set()
    for seed in range(6):
        steps = masking.masking_priority(label_maps[:1], 16, 2, _generator(seed))
        regions = patch_regions(label_maps[:1, ::2], 16).permute(0, 1, 3, 4, 2).reshape(1, NUM_TOKENS, 7)
        # The step of a token touching only group g (plus possibly later groups) reveals g's rank.
        order = tuple(
            int(steps[0][regions[0, :, group] & ~regions[0, :, :group].any(-1)].max()) if group else -1
            for group in range(5)
        )
        orders.add(order)
    assert len(orders) > 1


def test_masks_follow_the_face_from_tubelet_to_tubelet(label_maps, token_regions):
    """Each tubelet is masked with its own frame's map, so the masked tube bends as the head moves."""
    component = token_regions[..., COMPONENTS].any(dim=-1).view(2, 8, 196)
    # Real motion: the component patches of the first and last tubelet differ substantially.
    assert ((component[:, 0] ^ component[:, -1]).sum(dim=1) > 10).all()
    # At the ratio that leaves exactly the non-component tokens visible, the mask is each tubelet's own
    # complement, not tubelet 0's pattern repeated.
    for sample in range(2):
        keep = int((~component[sample]).sum())
        ratio = 1 - (keep + 0.5) / NUM_TOKENS
        assert num_visible(NUM_TOKENS, ratio) == keep
        visible = masking.fasking(label_maps[sample:sample + 1], 16, 2, ratio, _generator(sample)).view(8, 196)
        assert torch.equal(visible, ~component[sample])
        assert not torch.equal(visible, (~component[sample, :1]).expand(8, -1))


def test_fasking_accepts_numpy_maps_and_one_map_per_tubelet(label_maps):
    from_numpy = masking.fasking(label_maps.numpy(), 16, 2, 0.9, _generator(0))
    per_tubelet = masking.fasking(label_maps[:, ::2], 16, 2, 0.9, _generator(0), per_tubelet=True)
    assert torch.equal(from_numpy, masking.fasking(label_maps, 16, 2, 0.9, _generator(0)))
    assert torch.equal(per_tubelet, from_numpy)


def test_pixel_threshold_shrinks_regions(label_maps):
    any_pixel = patch_regions(label_maps[:, ::2], 16, min_pixel_fraction=0.0)
    ten_percent = patch_regions(label_maps[:, ::2], 16, min_pixel_fraction=0.1)
    assert (ten_percent <= any_pixel).all() and ten_percent.sum() < any_pixel.sum()
    assert ten_percent.any(dim=2).all()  # every patch keeps at least its majority region


# Landmarks -> label map ------------------------------------------------------------------------------------
def test_landmark_label_map_places_regions(shared_data):
    # A wider crop (2× the box) than for masking, so the hair band above the forehead is inside the image.
    landmarks = _landmark_clip(shared_data, "retalk_face3_25fps", 64, frames=1, scale=2.0)[0]
    labels = landmarks_to_label_map(landmarks, 224, 224)
    assert labels.shape == (224, 224) and labels.dtype == np.uint8

    def label_at(point) -> int:
        x, y = np.floor(point).astype(int)
        return int(labels[y, x])

    assert label_at(landmarks[36:42].mean(axis=0)) == LAPA_LABELS["left_eye"]
    assert label_at(landmarks[42:48].mean(axis=0)) == LAPA_LABELS["right_eye"]
    assert label_at(landmarks[30] + [0, -2]) == LAPA_LABELS["nose"]
    assert label_at((landmarks[51] + landmarks[62]) / 2) == LAPA_LABELS["upper_lip"]
    assert label_at((landmarks[57] + landmarks[66]) / 2) == LAPA_LABELS["lower_lip"]
    assert label_at(landmarks[19] + [0, 1]) == LAPA_LABELS["left_eyebrow"]
    assert label_at(landmarks[24] + [0, 1]) == LAPA_LABELS["right_eyebrow"]
    assert label_at((landmarks[3] + landmarks[48]) / 2) == LAPA_LABELS["skin"]  # cheek
    brows = landmarks[17:27].mean(axis=0)
    up = brows - landmarks[8]  # chin to brows: the module's face axis and length unit
    assert label_at(brows + 0.3 * up) == LAPA_LABELS["skin"]  # forehead
    assert label_at(brows + 0.6 * up) == LAPA_LABELS["hair"]
    assert labels[0, 0] == labels[-1, 0] == labels[-1, -1] == LAPA_LABELS["background"]


def test_open_mouth_has_inner_mouth_pixels():
    # A synthetic frontal face with an open mouth: the inner ring encloses inner-mouth pixels.
    landmarks = np.zeros((68, 2))
    jaw_angles = np.linspace(0, np.pi, 17)
    landmarks[0:17] = np.stack([np.linspace(40, 180, 17), 100 + 80 * np.sin(jaw_angles)], axis=1)
    landmarks[17:27] = np.stack([np.linspace(60, 160, 10), np.full(10, 80.0)], axis=1)
    landmarks[27:31] = np.stack([np.full(4, 110.0), np.linspace(90, 125, 4)], axis=1)
    landmarks[31:36] = np.stack([np.linspace(98, 122, 5), np.full(5, 130.0)], axis=1)
    for start, centre in ((36, 80.0), (42, 140.0)):
        angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        landmarks[start:start + 6] = np.stack([centre + 10 * np.cos(angles), 95 + 4 * np.sin(angles)], axis=1)
    # Lip contours start at the image-left corner and run over the top first (y grows downwards).
    outer = np.pi + np.linspace(0, 2 * np.pi, 12, endpoint=False)
    landmarks[48:60] = np.stack([110 + 25 * np.cos(outer), 150 + 12 * np.sin(outer)], axis=1)
    inner = np.pi + np.linspace(0, 2 * np.pi, 8, endpoint=False)
    landmarks[60:68] = np.stack([110 + 18 * np.cos(inner), 150 + 6 * np.sin(inner)], axis=1)
    labels = landmarks_to_label_map(landmarks, 224, 224)
    assert labels[150, 110] == LAPA_LABELS["inner_mouth"]
    assert labels[141, 110] == LAPA_LABELS["upper_lip"] and labels[159, 110] == LAPA_LABELS["lower_lip"]
    assert set(np.unique(labels)) == set(range(11))


def test_landmarks_must_be_68_points():
    with pytest.raises(ValueError, match="68"):
        landmarks_to_label_map(np.zeros((5, 2)), 224, 224)
