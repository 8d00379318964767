"""MARLIN masked video autoencoder: encoder, decoder and the `Marlin` wrapper with the official key layout.

Axis legend: b batch, c channels (3, RGB in [0, 1], no mean/std normalisation), t frames, h height, w width,
n tokens in (t, h, w) order, d token width, nv visible tokens, nm masked tokens.

Masks follow the official convention: `visible_mask` (b, n) bool, True = visible (VideoMAE uses the
opposite), and every sample must have the same number of visible tokens.

Reference: ControlNet/MARLIN @ c9d5698, src/marlin_pytorch/model/{marlin,encoder,decoder}.py; numerics checked
against conformance/vectors/marlin_tiny.* (tests/test_marlin_model.py).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from checkpoint_io import read_safetensors_metadata

from .checkpoint import check_state_dict, default_checkpoint_dir, encoder_subset, filter_marlin_checkpoint, load_state_dict
from .config import MARLIN_CONFIGS, MarlinConfig, resolve_config
from .layers import Block, PatchEmbed3d, SinCosPositionalEmbedding, init_transformer_weights

__all__ = ["MarlinEncoder", "MarlinDecoder", "Marlin", "select_tokens", "build_blocks"]

logger = logging.getLogger(__name__)


def select_tokens(tokens: Tensor, keep: Tensor) -> Tensor:
    """Gather the tokens where `keep` is True, in ascending token order, per sample.

    Args:
        tokens: (b, n, d).
        keep: (b, n) bool with the same count of True in every row.

    Returns:
        (b, k, d) where k is the per-row count.

    Raises:
        ValueError: wrong shape/dtype, or rows with different counts (they cannot form a batch).
    """
    if keep.dtype != torch.bool or keep.shape != tokens.shape[:2]:
        raise ValueError(f"mask must be bool of shape {tuple(tokens.shape[:2])}, got {keep.dtype} {tuple(keep.shape)}")
    counts = keep.sum(dim=1)
    if bool((counts != counts[0]).any()):
        raise ValueError(f"every sample must keep the same number of tokens, got counts {counts.tolist()}")
    return tokens[keep].view(tokens.shape[0], -1, tokens.shape[2])


def build_blocks(cfg: MarlinConfig, embed_dim: int, depth: int, num_heads: int) -> nn.ModuleList:
    """`depth` transformer blocks of width `embed_dim` with the config's shared MLP/attention settings."""
    return nn.ModuleList(
        Block(
            embed_dim,
            num_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            qk_scale=cfg.qk_scale,
            drop=cfg.drop_rate,
            attn_drop=cfg.attn_drop_rate,
            init_values=cfg.init_values,
        )
        for _ in range(depth)
    )


class _BlockStack(nn.Module):
    """Shared block runner with optional activation checkpointing (a flag, not a config field)."""

    blocks: nn.ModuleList
    grad_checkpointing: bool = False

    def run_block(self, block: nn.Module, tokens: Tensor) -> Tensor:
        """One block, (b, n, d) -> (b, n, d), recomputed in backward when checkpointing is on."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            # Recompute the block in backward: ViT-L activations at 1568 tokens otherwise dominate memory.
            return checkpoint(block, tokens, use_reentrant=False)
        return block(tokens)

    def run_blocks(self, tokens: Tensor) -> Tensor:
        """All blocks in order, (b, n, d) -> (b, n, d), no final norm."""
        for block in self.blocks:
            tokens = self.run_block(block, tokens)
        return tokens


class MarlinEncoder(_BlockStack):
    """ViT encoder over tubelet tokens: patch embedding, fixed sin-cos positions, blocks, final LayerNorm.

    Args:
        cfg: architecture; uses img_size, patch_size, n_frames, tubelet_size and the encoder_* fields.
        in_channels: input channels of the patch embedding (3 for the released RGB models).
    """

    def __init__(self, cfg: MarlinConfig, in_channels: int = 3) -> None:
        super().__init__()
        self.embed_dim = cfg.encoder_embed_dim
        self.patch_embedding = PatchEmbed3d(in_channels, cfg.encoder_embed_dim, cfg.patch_size, cfg.tubelet_size)
        self.pos_embedding = SinCosPositionalEmbedding(cfg.num_patches, cfg.encoder_embed_dim)
        self.norm = nn.LayerNorm(cfg.encoder_embed_dim)
        self.blocks = build_blocks(cfg, cfg.encoder_embed_dim, cfg.encoder_depth, cfg.encoder_num_heads)
        self.apply(init_transformer_weights)

    def embed(self, video: Tensor) -> Tensor:
        """Patch embedding plus positions: (b, c, t, h, w) -> (b, n, d), before any block."""
        if video.ndim != 5:
            raise ValueError(f"expected a (b, c, t, h, w) clip, got shape {tuple(video.shape)}")
        tokens = self.patch_embedding(video)
        if tokens.shape[1] != self.pos_embedding.emb.shape[1]:
            raise ValueError(
                f"clip {tuple(video.shape)} gives {tokens.shape[1]} tokens but the model expects "
                f"{self.pos_embedding.emb.shape[1]} (check frames and image size)"
            )
        return self.pos_embedding(tokens)

    def forward_features(self, video: Tensor, visible_mask: Tensor | None = None) -> Tensor:
        """Token sequence after the final LayerNorm.

        Args:
            video: (b, c, t, h, w) float clip, RGB in [0, 1] for the released weights.
            visible_mask: optional (b, n) bool, True = visible; None keeps every token.

        Returns:
            (b, n, d) without a mask (1568 tokens for 16×224×224), else (b, nv, d) in ascending token order.
        """
        tokens = self.embed(video)
        if visible_mask is not None:
            tokens = select_tokens(tokens, visible_mask)
        return self.norm(self.run_blocks(tokens))

    def forward(self, video: Tensor, visible_mask: Tensor | None = None) -> Tensor:
        """Same as `forward_features` (the official `encoder(x, mask)` call)."""
        return self.forward_features(video, visible_mask)

    def forward_intermediates(self, video: Tensor, indices: Sequence[int]) -> list[Tensor]:
        """Un-normalised outputs of the given blocks (0-based; negative counts from the end), all tokens.

        Args:
            video: (b, c, t, h, w).
            indices: block indices to return, e.g. (3, 7, 11) for multi-scale skip features.

        Returns:
            list of (b, n, d) in the order of `indices`.
        """
        depth = len(self.blocks)
        if any(not -depth <= index < depth for index in indices):
            raise IndexError(f"block indices {list(indices)} out of range for depth {depth}")
        wanted = [index % depth for index in indices]
        outputs: dict[int, Tensor] = {}
        tokens = self.embed(video)
        for index, block in enumerate(self.blocks):
            tokens = self.run_block(block, tokens)
            if index in wanted:
                outputs[index] = tokens
            if index >= max(wanted, default=-1):
                break
        return [outputs[index] for index in wanted]

    def extract_features(self, video: Tensor, keep_seq: bool = True) -> Tensor:
        """Official `extract_features`: all tokens LayerNorm-ed, or LayerNorm of the token mean.

        Note the order when pooling: mean over tokens first, then the final norm (as the reference does).

        Args:
            video: (b, c, t, h, w).
            keep_seq: True -> (b, n, d); False -> (b, d).
        """
        tokens = self.run_blocks(self.embed(video))
        if not keep_seq:
            tokens = tokens.mean(dim=1)
        return self.norm(tokens)


class MarlinDecoder(_BlockStack):
    """Lightweight ViT decoder: visible tokens + mask tokens -> pixels of the masked patches.

    Its positional table always has 16 frames' worth of rows, as in the reference (see `MarlinConfig`).

    Args:
        cfg: architecture; uses the decoder_* fields, patch and tubelet size.
    """

    def __init__(self, cfg: MarlinConfig) -> None:
        super().__init__()
        self.embed_dim = cfg.decoder_embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_embed_dim))
        self.norm = nn.LayerNorm(cfg.decoder_embed_dim)
        self.pos_embedding = SinCosPositionalEmbedding(cfg.decoder_num_patches, cfg.decoder_embed_dim)
        self.blocks = build_blocks(cfg, cfg.decoder_embed_dim, cfg.decoder_depth, cfg.decoder_num_heads)
        self.head = nn.Linear(cfg.decoder_embed_dim, cfg.patch_dim)
        self.apply(init_transformer_weights)
        # Reference init: truncated normal, std 0.02 clipped to ±0.02 (no_grad_trunc_normal_).
        nn.init.trunc_normal_(self.mask_token, mean=0.0, std=0.02, a=-0.02, b=0.02)

    def forward(self, visible_tokens: Tensor, visible_mask: Tensor) -> Tensor:
        """Reconstruct the masked patches.

        Args:
            visible_tokens: (b, nv, d_dec), already projected to the decoder width, ascending token order.
            visible_mask: (b, n) bool, True = visible; n must equal the 16-frame table size.

        Returns:
            (b, nm, c·pt·p·p) in (c, pt, ph, pw) order, rows in ascending masked-token order.
        """
        batch = visible_tokens.shape[0]
        table = self.pos_embedding.emb.to(visible_tokens.dtype).expand(batch, -1, -1)
        if visible_mask.shape != table.shape[:2]:
            raise ValueError(
                f"visible_mask {tuple(visible_mask.shape)} does not match the decoder's {table.shape[1]} positions "
                "(the reference decoder is built for 16 frames)"
            )
        position_visible = select_tokens(table, visible_mask)
        position_masked = select_tokens(table, ~visible_mask)
        # Visible first, then mask tokens; attention is order-free apart from positions, so the last
        # nm outputs are the masked tokens in ascending order.
        tokens = torch.cat([visible_tokens + position_visible, self.mask_token + position_masked], dim=1)
        tokens = self.run_blocks(tokens)
        tokens = tokens[:, -position_masked.shape[1]:]
        return self.head(self.norm(tokens))


class Marlin(nn.Module):
    """MARLIN with the official state-dict layout: `encoder.*`, and for the full model `decoder.*`, `enc_dec_proj`.

    Args:
        cfg: architecture.
        as_feature_extractor: True builds the encoder only (keys of `*.encoder.pt`); False adds the decoder and
            the encoder→decoder projection (keys of `*.full.pt`).
    """

    def __init__(self, cfg: MarlinConfig, as_feature_extractor: bool = True) -> None:
        super().__init__()
        self.config = cfg
        self.as_feature_extractor = as_feature_extractor
        self.encoder = MarlinEncoder(cfg)
        if as_feature_extractor:
            self.decoder = None
            self.enc_dec_proj = None
        else:
            self.decoder = MarlinDecoder(cfg)
            self.enc_dec_proj = nn.Linear(cfg.encoder_embed_dim, cfg.decoder_embed_dim, bias=False)
            init_transformer_weights(self.enc_dec_proj)

    # Construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: MarlinConfig | Mapping[str, Any], as_feature_extractor: bool = True) -> "Marlin":
        """Randomly initialised model from a `MarlinConfig` or its dict form (e.g. marlin_tiny.config.json)."""
        if not isinstance(cfg, MarlinConfig):
            cfg = MarlinConfig.from_dict(cfg)
        return cls(cfg, as_feature_extractor=as_feature_extractor)

    @classmethod
    def from_name(cls, name: str, as_feature_extractor: bool = True) -> "Marlin":
        """Released architecture by name ("marlin_vit_{small,base,large}_ytf"), random init, no weights."""
        return cls(resolve_config(name), as_feature_extractor=as_feature_extractor)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        config: MarlinConfig | Mapping[str, Any] | None = None,
        as_feature_extractor: bool | None = None,
    ) -> "Marlin":
        """Load an official `.encoder.pt`/`.full.pt` or one of our `.safetensors` checkpoints, strictly.

        Args:
            path: checkpoint file. For `.pt` files the architecture comes from the file-name stem when it names
                a released model (`marlin_vit_base_ytf.full.pt`), else from `config`. Safetensors files carry
                their config in the metadata.
            config: architecture override (required for `.pt` files with other names).
            as_feature_extractor: None follows the file (any `decoder.*` key means full model); True on a
                full file loads only its encoder; False on an encoder-only file is an error.

        Raises:
            CheckpointMismatchError: keys or shapes differ from the architecture (one line naming them).
            ValueError: the architecture cannot be determined, or a full model is asked of an encoder file.
        """
        path = Path(path)
        state_dict = filter_marlin_checkpoint(load_state_dict(path))
        if config is not None:
            cfg = config if isinstance(config, MarlinConfig) else MarlinConfig.from_dict(config)
        elif path.suffix == ".safetensors":
            metadata = read_safetensors_metadata(path)
            if "config" not in metadata:
                raise ValueError(f"{path}: safetensors metadata has no 'config' entry; pass config=")
            cfg = MarlinConfig.from_dict(json.loads(metadata["config"]))
        else:
            stem = path.name.split(".")[0]
            if stem not in MARLIN_CONFIGS:
                raise ValueError(
                    f"{path}: cannot infer the architecture from the name {stem!r} (released: "
                    f"{sorted(MARLIN_CONFIGS)}); pass config="
                )
            cfg = MARLIN_CONFIGS[stem]
        file_is_full = any(key.startswith("decoder.") for key in state_dict)
        if as_feature_extractor is None:
            as_feature_extractor = not file_is_full
        elif as_feature_extractor and file_is_full:
            state_dict = encoder_subset(state_dict)
        elif not as_feature_extractor and not file_is_full:
            raise ValueError(f"{path} holds only an encoder; a full model (as_feature_extractor=False) needs *.full.pt")

        with torch.device("meta"):
            model = cls(cfg, as_feature_extractor=as_feature_extractor)
        check_state_dict(model, state_dict, source=str(path))
        # Checkpoint tensors become the parameters directly (no second random init, no copy for ViT-L).
        state_dict = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
        model.load_state_dict(state_dict, strict=True, assign=True)
        logger.info("loaded MARLIN %s from %s", "encoder" if as_feature_extractor else "full model", path)
        return model.eval()

    @classmethod
    def from_pretrained(
        cls, name: str, as_feature_extractor: bool = True, cache_dir: str | os.PathLike | None = None
    ) -> "Marlin":
        """Load a released model from the toolkit cache `$LIPSYNC_HOME/checkpoints/<name>.{encoder,full}.pt`.

        Args:
            name: e.g. "marlin_vit_base_ytf".
            as_feature_extractor: encoder only (looks for `.encoder.pt`, then `.full.pt`), or the full model.
            cache_dir: overrides the cache directory.

        Raises:
            FileNotFoundError: nothing cached; the message says how to download it.
        """
        directory = Path(cache_dir) if cache_dir is not None else default_checkpoint_dir()
        suffixes = (".encoder.pt", ".full.pt") if as_feature_extractor else (".full.pt",)
        candidates = [directory / f"{name}{suffix}" for suffix in suffixes] + [directory / f"{name}.safetensors"]
        for candidate in candidates:
            if candidate.is_file():
                return cls.from_file(candidate, as_feature_extractor=as_feature_extractor)
        raise FileNotFoundError(
            f"no checkpoint for {name!r} in {directory} (looked for {', '.join(c.name for c in candidates)}); "
            f"run `lipsync download {name}` first"
        )

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write a safetensors checkpoint with the config (JSON) and the model kind in its metadata.

        The file is written to a temporary name and renamed, so an interrupted save never leaves a torn file.

        Args:
            path: destination, conventionally `*.safetensors`.
        """
        from safetensors.torch import save_file  # lazy: only needed for our own checkpoints

        path = Path(path)
        metadata = {
            "config": json.dumps(self.config.to_dict()),
            "as_feature_extractor": json.dumps(self.as_feature_extractor),
            "format": "pt",
        }
        tensors = {key: value.detach().contiguous().cpu() for key, value in self.state_dict().items()}
        temporary = path.with_name(path.name + ".tmp")
        save_file(tensors, str(temporary), metadata=metadata)
        os.replace(temporary, path)

    # Running ----------------------------------------------------------------------------------------------
    def forward(self, video: Tensor, visible_mask: Tensor) -> Tensor:
        """Masked reconstruction (full model only).

        Args:
            video: (b, 3, 16, h, w) RGB in [0, 1].
            visible_mask: (b, n) bool, True = visible, same count per sample.

        Returns:
            (b, nm, 3·pt·p·p) reconstructed masked patches, (c, pt, ph, pw) order, ascending token order.
        """
        if self.decoder is None or self.enc_dec_proj is None:
            raise RuntimeError("this Marlin is a feature extractor; use extract_features/forward_features, "
                               "or build it with as_feature_extractor=False")
        visible = self.encoder(video, visible_mask)
        return self.decoder(self.enc_dec_proj(visible), visible_mask)

    def forward_features(self, video: Tensor, visible_mask: Tensor | None = None) -> Tensor:
        """Encoder tokens after the final norm: (b, n, d), or (b, nv, d) with a mask. Keeps autograd."""
        return self.encoder.forward_features(video, visible_mask)

    @torch.no_grad()
    def extract_features(self, video: Tensor, keep_seq: bool = True) -> Tensor:
        """Official `Marlin.extract_features`, without autograd.

        Unlike the reference it does not switch the module to eval() behind the caller's back; call `.eval()`
        (from_file already returns an eval model). With the released configs (no dropout) the modes agree.

        Args:
            video: (b, 3, 16, h, w) RGB in [0, 1], no mean/std normalisation.
            keep_seq: True -> every token LayerNorm-ed, (b, n, d); False -> LayerNorm(mean over tokens), (b, d).
        """
        return self.encoder.extract_features(video, keep_seq=keep_seq)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute transformer blocks during backward (encoder and decoder) to save activation memory."""
        for module in self.modules():
            if isinstance(module, _BlockStack):
                module.grad_checkpointing = enabled

    @property
    def device(self) -> torch.device:
        return self.encoder.norm.weight.device
