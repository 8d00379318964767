"""Token masks for MARLIN pretraining: random, frame, tube, and facial-region guided masking ("Fasking").

Axis legend: b batch, t frames, tt tubelets (t / tubelet_size), gh/gw patch grid, n = tt·gh·gw tokens in
(t, h, w) order, g region groups.

Every generator returns `visible_mask` (b, n) bool with True = visible (the official MARLIN convention) and
exactly `num_visible(n, mask_ratio)` = ⌊n·(1 − mask_ratio)⌋ visible tokens in every sample, so encoder
batches need no padding. Randomness comes only from the `torch.Generator` passed in.

Fasking (MARLIN, Cai et al., CVPR 2023, §3; official dataset/youtube_face.py): each patch is labelled with
the facial regions it touches in a face-parsing map (LaPa labels, see `regions.py`); facial components
(each eye with its brow, nose, mouth, hair) are masked first in a random order per sample, then skin, then
background; `fasking_reverse` masks background, then skin, then the components. A patch is masked at the
first step at which any region it touches is masked; inside one step the choice is random. Each tubelet
uses the map of its own first frame (as the reference does), so the masked "tube" bends with the face.

Differences from the reference, on purpose:
* the reference grows a per-tubelet VISIBLE set, adding all patches that touch the next region in its
  keep order until 1 − ratio of the tubelet is visible, then trims the clip's union at random to the exact
  count. A patch touching background and an eye is therefore kept visible with the background. We rank all
  tokens of the clip by masking step instead and keep the last-masked ones: the exact count comes directly,
  and no patch touching a component stays visible while any patch touching none is masked. For
  `fasking_reverse` the same rule means every patch touching background (then skin) goes first, so the
  patches kept longest are those lying wholly inside components;
* a patch "touches" a region when more than `min_pixel_fraction` of its pixels carry the label (default 0:
  any pixel, the reference's max-pool rule); a patch whose regions all fall below the threshold counts as
  its majority region.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

__all__ = [
    "REGION_GROUPS",
    "MaskConfig",
    "MaskGenerator",
    "num_visible",
    "random_masking",
    "frame_masking",
    "tube_masking",
    "fasking",
    "fasking_reverse",
    "patch_regions",
    "masking_priority",
]

# LaPa label groups in the reference order (youtube_face.py `seg_groups`): the five facial components,
# then skin, then background. LaPa: 0 background, 1 skin, 2/3 eyebrows, 4/5 eyes, 6 nose, 7 upper lip,
# 8 inner mouth, 9 lower lip, 10 hair.
REGION_GROUPS: tuple[tuple[int, ...], ...] = (
    (2, 4),  # one eye with its eyebrow
    (3, 5),  # the other eye with its eyebrow
    (6,),  # nose
    (7, 8, 9),  # mouth: lips and inner mouth
    (10,),  # hair
    (1,),  # skin
    (0,),  # background
)
NUM_LABELS = 11
NUM_COMPONENT_GROUPS = 5
SKIN_GROUP, BACKGROUND_GROUP = 5, 6

Strategy = Literal["random", "frame", "tube", "fasking", "fasking_reverse"]

# Guards ⌊x⌋/⌈x⌉ against float noise, e.g. 10·(1 − 0.9) = 0.9999999999999998 must give 1.
_EPS = 1e-9


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    """⌊num_tokens·(1 − mask_ratio)⌋, robust to float rounding (1568 tokens at 0.9 -> 156).

    Args:
        num_tokens: tokens per sample.
        mask_ratio: fraction masked, in [0, 1).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return int(math.floor(num_tokens * (1.0 - mask_ratio) + _EPS))


def _ceil_visible(count: int, mask_ratio: float) -> int:
    return int(math.ceil(count * (1.0 - mask_ratio) - _EPS))


def _keep_top(scores: Tensor, keep: int) -> Tensor:
    """(b, n) scores -> (b, n) bool with True at each row's `keep` largest scores."""
    visible = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if keep > 0:
        visible.scatter_(1, scores.topk(keep, dim=1).indices, True)
    return visible


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
    """Uniform [0, 1) noise drawn on the generator's device, then moved (keeps seeds device-independent)."""
    generator_device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=generator_device).to(device or generator_device)


def _select(candidates: Tensor, keep: int, generator: torch.Generator | None) -> Tensor:
    """Keep `keep` tokens per row, all from `candidates` when possible, chosen at random among equals."""
    scores = candidates.float() + _uniform(tuple(candidates.shape), generator, candidates.device)
    return _keep_top(scores, keep)


def random_masking(
    batch_size: int,
    grid: tuple[int, int, int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniformly random visible tokens (VideoMAE "random").

    Args:
        batch_size: samples b.
        grid: token grid (tt, gh, gw), e.g. (8, 14, 14).
        mask_ratio: fraction masked.
        generator: RNG for reproducibility.
        device: device of the result.

    Returns:
        (b, tt·gh·gw) bool, True = visible, exactly `num_visible` per row.
    """
    num_tokens = math.prod(grid)
    noise = _uniform((batch_size, num_tokens), generator, device)
    return _keep_top(noise, num_visible(num_tokens, mask_ratio))


def frame_masking(
    batch_size: int,
    grid: tuple[int, int, int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Whole tubelets visible or masked (the reference's "frame" strategy).

    ⌈tt·(1 − ratio)⌉ random tubelets are candidates; the exact visible count is then drawn at random from
    their tokens, so every visible token lies in one of those tubelets (at 0.9 on 8 tubelets: 156 of the
    196 tokens of a single tubelet).

    Args:
        batch_size, grid, mask_ratio, generator, device: as in `random_masking`.
    """
    tubelets, height, width = grid
    chosen = _keep_top(_uniform((batch_size, tubelets), generator, device), _ceil_visible(tubelets, mask_ratio))
    candidates = rearrange(chosen, "b tt -> b tt 1").expand(-1, -1, height * width).reshape(batch_size, -1)
    return _select(candidates, num_visible(math.prod(grid), mask_ratio), generator)


def tube_masking(
    batch_size: int,
    grid: tuple[int, int, int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """One spatial pattern repeated over all tubelets (VideoMAE "tube").

    ⌈gh·gw·(1 − ratio)⌉ random spatial positions are candidates in every tubelet; the exact visible count is
    drawn at random from those tokens (⌊n(1 − r)⌋ is generally not a multiple of tt, so a few positions are
    dropped in some tubelets, as in the reference).

    Args:
        batch_size, grid, mask_ratio, generator, device: as in `random_masking`.
    """
    tubelets, height, width = grid
    noise = _uniform((batch_size, height * width), generator, device)
    spatial = _keep_top(noise, _ceil_visible(height * width, mask_ratio))
    candidates = rearrange(spatial, "b s -> b 1 s").expand(-1, tubelets, -1).reshape(batch_size, -1)
    return _select(candidates, num_visible(math.prod(grid), mask_ratio), generator)


def _as_label_tensor(label_maps: Tensor | np.ndarray) -> Tensor:
    labels = torch.as_tensor(label_maps)
    if labels.ndim == 3:
        labels = labels.unsqueeze(0)
    if labels.ndim != 4 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"label maps must be integer (b, t, h, w) or (t, h, w), got {labels.dtype} {tuple(labels.shape)}"
        )
    return labels


def patch_regions(label_maps: Tensor | np.ndarray, patch_size: int, min_pixel_fraction: float = 0.0) -> Tensor:
    """Which region groups each patch touches, per map.

    Args:
        label_maps: (b, m, h, w) or (m, h, w) integer LaPa labels (0..10); h, w divisible by patch_size.
        patch_size: patch side p.
        min_pixel_fraction: a patch touches a group when more than this fraction of its pixels carry one of
            the group's labels (0: any pixel). Patches touching no group count as their majority group.

    Returns:
        (b, m, g, gh, gw) bool over the 7 `REGION_GROUPS`.
    """
    labels = _as_label_tensor(label_maps)
    if labels.shape[-2] % patch_size or labels.shape[-1] % patch_size:
        raise ValueError(f"label maps {tuple(labels.shape[-2:])} are not a multiple of patch_size {patch_size}")
    # The groups partition the 11 labels: one table lookup gives each pixel its group (7 `isin` passes over
    # the maps cost ~40 ms each at 224 px).
    group_of_label = torch.empty(NUM_LABELS, dtype=torch.long, device=labels.device)
    for group, members in enumerate(REGION_GROUPS):
        group_of_label[list(members)] = group
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= NUM_LABELS):
        raise ValueError(f"label maps hold values outside the LaPa labels 0..{NUM_LABELS - 1}")
    one_hot = F.one_hot(group_of_label[labels.long()], len(REGION_GROUPS)).float()     # b m h w g
    fraction = reduce(one_hot, "b m (gh ph) (gw pw) g -> b m g gh gw", "mean", ph=patch_size, pw=patch_size)
    touched = fraction > min_pixel_fraction
    majority = fraction == fraction.amax(dim=2, keepdim=True)
    return touched | (majority & ~touched.any(dim=2, keepdim=True))


def masking_priority(
    label_maps: Tensor | np.ndarray,
    patch_size: int,
    tubelet_size: int,
    generator: torch.Generator | None = None,
    reverse: bool = False,
    min_pixel_fraction: float = 0.0,
    per_tubelet: bool = False,
) -> Tensor:
    """Masking step of every token: 0 is masked first; tokens with the highest step stay visible longest.

    Components get steps 0–4 in a random order per sample, skin 5, background 6 (reverse: background 0,
    skin 1, components 2–6 in random order). A token's step is the earliest step of any group its patch
    touches in the map of its own tubelet.

    Args:
        label_maps: (b, t, h, w) per-frame maps (tubelet k uses frame k·tubelet_size); (t, h, w) means b = 1.
        patch_size: patch side p.
        tubelet_size: frames per tubelet.
        generator: RNG for the component order.
        reverse: fasking_reverse priorities.
        min_pixel_fraction: see `patch_regions`.
        per_tubelet: the maps are already one per tubelet (b, tt, h, w).

    Returns:
        (b, n) int64 steps in 0..6, tokens in (t, h, w) order.
    """
    labels = _tubelet_maps(_as_label_tensor(label_maps), tubelet_size, per_tubelet)
    return _priority_from_regions(patch_regions(labels, patch_size, min_pixel_fraction), generator, reverse)


def _priority_from_regions(regions: Tensor, generator: torch.Generator | None, reverse: bool) -> Tensor:
    """(b, tt, g, gh, gw) touched groups -> (b, n) masking step of every token."""
    batch, device = regions.shape[0], regions.device
    component_order = _uniform((batch, NUM_COMPONENT_GROUPS), generator, device).argsort(dim=1)
    skin_and_background = torch.tensor([SKIN_GROUP, BACKGROUND_GROUP], device=device).expand(batch, 2)
    if reverse:
        order = torch.cat([skin_and_background.flip(1), component_order], dim=1)  # background, skin, components
    else:
        order = torch.cat([component_order, skin_and_background], dim=1)  # components, skin, background
    # step_of_group[b, g] = position of group g in sample b's masking order (the inverse permutation).
    positions = torch.arange(order.shape[1], device=device).expand(batch, -1)
    step_of_group = torch.empty_like(order).scatter_(1, order, positions)
    # A patch is masked as soon as any group it touches is; untouched groups must not lower the minimum.
    never = torch.full(regions.shape, order.shape[1], dtype=torch.int64, device=device)
    steps = torch.where(regions, rearrange(step_of_group, "b g -> b 1 g 1 1"), never)
    return rearrange(steps.amin(dim=2), "b tt gh gw -> b (tt gh gw)")

def fasking(
    label_maps: Tensor | np.ndarray,
    patch_size: int,
    tubelet_size: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    reverse: bool = False,
    min_pixel_fraction: float = 0.0,
    per_tubelet: bool = False,
) -> Tensor:
    """Facial-region guided masking (MARLIN "fasking"): components masked first, then skin, then background.

    Args:
        label_maps: per-frame LaPa maps (b, t, h, w) at the model's input size (tubelet k uses frame
            k·tubelet_size, as the reference does); (t, h, w) means b = 1.
        patch_size: patch side p.
        tubelet_size: frames per tubelet (used to pick each tubelet's own frame).
        mask_ratio: fraction masked.
        generator: RNG (component order and the choice inside a priority level).
        reverse: mask background, then skin, then components ("fasking_reverse", the reference's fasking_opp).
        min_pixel_fraction: see `patch_regions`.
        per_tubelet: the maps are already one per tubelet (b, t/tubelet_size, h, w).

    Returns:
        (b, n) bool, True = visible, exactly `num_visible(n, mask_ratio)` per row.
    """
    steps = masking_priority(label_maps, patch_size, tubelet_size, generator, reverse, min_pixel_fraction, per_tubelet)
    scores = steps.float() + _uniform(tuple(steps.shape), generator, steps.device)
    return _keep_top(scores, num_visible(steps.shape[1], mask_ratio))


def fasking_reverse(
    label_maps: Tensor | np.ndarray,
    patch_size: int,
    tubelet_size: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    min_pixel_fraction: float = 0.0,
    per_tubelet: bool = False,
) -> Tensor:
    """Background first, then skin, then facial components (the reference's "fasking_opp"). See `fasking`."""
    return fasking(label_maps, patch_size, tubelet_size, mask_ratio, generator, True, min_pixel_fraction, per_tubelet)


def _tubelet_maps(labels: Tensor, tubelet_size: int, per_tubelet: bool) -> Tensor:
    """(b, t, h, w) per-frame maps -> (b, tt, h, w): each tubelet's first frame (reference: i % tubelet == 0)."""
    if per_tubelet:
        return labels
    if labels.shape[1] % tubelet_size:
        raise ValueError(f"{labels.shape[1]} frame maps is not a multiple of tubelet_size {tubelet_size}")
    return labels[:, ::tubelet_size]


@dataclass(frozen=True)
class MaskConfig:
    """How to mask a pretraining batch (defaults: the released configs, config/pretrain/marlin_vit_*.yaml).

    Args:
        strategy: "random", "frame", "tube", "fasking" or "fasking_reverse".
        mask_ratio: fraction masked (0.9 in MARLIN).
        patch_size: patch side p.
        tubelet_size: frames per tubelet.
        n_frames: frames per clip.
        img_size: frame side.
        min_pixel_fraction: fasking region threshold, see `patch_regions`.
    """

    strategy: Strategy = "fasking"
    mask_ratio: float = 0.9
    patch_size: int = 16
    tubelet_size: int = 2
    n_frames: int = 16
    img_size: int = 224
    min_pixel_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.strategy not in ("random", "frame", "tube", "fasking", "fasking_reverse"):
            raise ValueError(f"unknown masking strategy {self.strategy!r}")
        num_visible(1, self.mask_ratio)  # validates the ratio

    @property
    def grid(self) -> tuple[int, int, int]:
        side = self.img_size // self.patch_size
        return self.n_frames // self.tubelet_size, side, side


class MaskGenerator:
    """Callable mask source for a training recipe: `visible = masker(batch_size, generator, label_maps)`.

    Args:
        cfg: `MaskConfig`.
    """

    def __init__(self, cfg: MaskConfig) -> None:
        self.cfg = cfg

    def __call__(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        label_maps: Tensor | np.ndarray | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """(batch_size, n) bool visible mask; fasking strategies need `label_maps` (b, t, h, w)."""
        cfg = self.cfg
        if cfg.strategy in ("fasking", "fasking_reverse"):
            if label_maps is None:
                raise ValueError(f"{cfg.strategy} needs per-frame label maps (b, t, h, w)")
            labels = _as_label_tensor(label_maps)
            if labels.shape[0] != batch_size:
                raise ValueError(f"got {labels.shape[0]} label-map sequences for a batch of {batch_size}")
            visible = fasking(labels, cfg.patch_size, cfg.tubelet_size, cfg.mask_ratio, generator,
                              reverse=cfg.strategy == "fasking_reverse", min_pixel_fraction=cfg.min_pixel_fraction)
            return visible.to(device) if device is not None else visible
        strategies = {"random": random_masking, "frame": frame_masking, "tube": tube_masking}
        return strategies[cfg.strategy](batch_size, cfg.grid, cfg.mask_ratio, generator, device)
