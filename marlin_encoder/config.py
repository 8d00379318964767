"""MARLIN architecture configuration: one frozen dataclass and the released presets.

Field names and defaults follow the official `marlin_pytorch.config.MarlinConfig` and `Marlin.__init__`
(ControlNet/MARLIN @ c9d5698, src/marlin_pytorch/config.py and model/marlin.py), so a config dict written by
either side reads on the other. The defaults are the released ViT-B/YTF model.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

__all__ = [
    "MarlinConfig",
    "MARLIN_VIT_SMALL_YTF",
    "MARLIN_VIT_BASE_YTF",
    "MARLIN_VIT_LARGE_YTF",
    "MARLIN_CONFIGS",
    "resolve_config",
]


@dataclass(frozen=True)
class MarlinConfig:
    """Constructor arguments of the official `Marlin` (field names kept for checkpoint interchange).

    Args:
        img_size: side of the square input frames in pixels (224 for every released model).
        patch_size: side of a spatial patch in pixels.
        n_frames: frames per clip seen by the encoder. The decoder's positional table is always built for
            16 frames, as the official `Marlin.__init__` never passes `n_frames` to `MarlinDecoder`.
        encoder_embed_dim: encoder token width D.
        encoder_depth: number of encoder transformer blocks.
        encoder_num_heads: encoder attention heads.
        decoder_embed_dim: decoder token width.
        decoder_depth: number of decoder transformer blocks.
        decoder_num_heads: decoder attention heads.
        mlp_ratio: hidden width of each MLP as a multiple of the token width.
        qkv_bias: learn q and v biases (the k bias is fixed at zero, as in BEiT/VideoMAE).
        qk_scale: attention logit scale; None means head_dim ** -0.5.
        drop_rate: dropout after the attention projection and inside the MLP (0 in every release).
        attn_drop_rate: dropout on attention probabilities (0 in every release).
        norm_layer: only "LayerNorm" (eps 1e-5, torch default) exists in the reference.
        init_values: layer-scale init; 0 disables layer scale (every release).
        tubelet_size: frames per patch along time.
    """

    img_size: int = 224
    patch_size: int = 16
    n_frames: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    decoder_embed_dim: int = 384
    decoder_depth: int = 4
    decoder_num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    norm_layer: str = "LayerNorm"
    init_values: float = 0.0
    tubelet_size: int = 2

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name), _FIELD_TYPES[field.name])
        if self.norm_layer != "LayerNorm":
            raise ValueError(f"norm_layer must be 'LayerNorm' (the reference's only one), got {self.norm_layer!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.n_frames % self.tubelet_size:
            raise ValueError(f"n_frames {self.n_frames} is not a multiple of tubelet_size {self.tubelet_size}")
        if DECODER_FRAMES % self.tubelet_size:
            raise ValueError(f"the decoder's 16-frame table needs 16 % tubelet_size == 0, got {self.tubelet_size}")
        for prefix in ("encoder", "decoder"):
            width, heads = getattr(self, f"{prefix}_embed_dim"), getattr(self, f"{prefix}_num_heads")
            if width % heads:
                raise ValueError(f"{prefix}_embed_dim {width} is not divisible by {prefix}_num_heads {heads}")

    # Derived sizes -----------------------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """Patches along each spatial side (14 at 224/16)."""
        return self.img_size // self.patch_size

    @property
    def num_tubelets(self) -> int:
        """Token rows along time for the encoder (8 for 16 frames, tubelet 2)."""
        return self.n_frames // self.tubelet_size

    @property
    def num_patches(self) -> int:
        """Encoder tokens per clip, N = (T/pt)·(H/p)·(W/p) (1568 for the released models)."""
        return self.num_tubelets * self.grid_size**2

    @property
    def decoder_num_patches(self) -> int:
        """Rows of the decoder positional table: always computed for 16 frames (see class docstring)."""
        return (DECODER_FRAMES // self.tubelet_size) * self.grid_size**2

    @property
    def patch_dim(self) -> int:
        """Values per reconstructed patch, 3·pt·p·p (1536 at tubelet 2, patch 16)."""
        return 3 * self.tubelet_size * self.patch_size**2

    # Serialisation -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict in field order, JSON-serialisable (the layout of marlin_tiny.config.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MarlinConfig":
        """Build from a dict such as the official constructor kwargs or our checkpoint metadata.

        Missing fields take the ViT-B defaults; unknown fields are rejected rather than ignored so that a
        typo (e.g. `embed_dim` for `encoder_embed_dim`) cannot silently build the wrong architecture.

        Args:
            values: {field name: value}; ints are accepted for float fields.

        Raises:
            ValueError: unknown field names, or values of the wrong type.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MarlinConfig field(s) {unknown}; valid fields are {sorted(known)}")
        coerced = {
            name: float(value) if _FIELD_TYPES[name] is float and type(value) is int else value
            for name, value in values.items()
        }
        return cls(**coerced)


# Why 16: the official Marlin never passes n_frames to MarlinDecoder, whose default is 16
# (conformance README, "Why n_frames is 16").
DECODER_FRAMES = 16

_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(MarlinConfig)


def _check_type(name: str, value: Any, expected: Any) -> None:
    """Reject values whose type does not match the field annotation (bools are not ints here)."""
    allowed = typing.get_args(expected) or (expected,)
    if value is None and type(None) in allowed:
        return
    allowed = tuple(kind for kind in allowed if kind is not type(None))
    if float in allowed and type(value) is int:
        return
    if type(value) not in allowed:
        raise ValueError(f"MarlinConfig.{name} must be {expected}, got {type(value).__name__} {value!r}")
    if type(value) is float and not math.isfinite(value):
        raise ValueError(f"MarlinConfig.{name} must be finite, got {value!r}")


# Released models (src/marlin_pytorch/config.py; decoder heads from config/pretrain/marlin_vit_*.yaml,
# decoder widths and depths also checked against the shapes in conformance/keys/marlin_vit_*_full.json).
MARLIN_VIT_BASE_YTF = MarlinConfig()
MARLIN_VIT_SMALL_YTF = replace(
    MARLIN_VIT_BASE_YTF,
    encoder_embed_dim=384, encoder_depth=12, encoder_num_heads=6,
    decoder_embed_dim=192, decoder_depth=4, decoder_num_heads=3,
)
MARLIN_VIT_LARGE_YTF = replace(
    MARLIN_VIT_BASE_YTF,
    encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
    decoder_embed_dim=512, decoder_depth=12, decoder_num_heads=8,
)

MARLIN_CONFIGS: Mapping[str, MarlinConfig] = {
    "marlin_vit_small_ytf": MARLIN_VIT_SMALL_YTF,
    "marlin_vit_base_ytf": MARLIN_VIT_BASE_YTF,
    "marlin_vit_large_ytf": MARLIN_VIT_LARGE_YTF,
}


def resolve_config(name: str) -> MarlinConfig:
    """Config of a released model by name.

    Args:
        name: one of `MARLIN_CONFIGS` (e.g. "marlin_vit_base_ytf").

    Raises:
        KeyError: the name is not a released model.
    """
    try:
        return MARLIN_CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown MARLIN model {name!r}; released models are {sorted(MARLIN_CONFIGS)}") from None
