"""Building blocks of MARLIN: 3-D patch embedding, fixed sin-cos positions, pre-norm transformer block.

Axis legend: b batch, c channels, t frames, h height, w width, n tokens, d width of a token,
pt/ph/pw tubelet and patch sizes, nt/nh/nw token grid, k heads, e head width.

Module and parameter names reproduce the official state-dict keys (ControlNet/MARLIN @ c9d5698,
src/marlin_pytorch/model/{util,modules,positional_embedding}.py); the computations are re-implemented, with
attention on `F.scaled_dot_product_attention` and the patch embedding as one matmul.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "PatchEmbed3d",
    "SinCosPositionalEmbedding",
    "sincos_table",
    "Attention",
    "Mlp",
    "Block",
    "patchify",
    "init_transformer_weights",
]


def patchify(video: Tensor, patch_size: int, tubelet_size: int) -> Tensor:
    """Cut a clip into non-overlapping tubelet patches, flattened in (c, pt, ph, pw) order.

    This is the reconstruction target of the official `model/marlin.py step()` (`x.unfold` over t, h, w then
    `b (nt nh nw) (c pt ph pw)`), and also the layout the patch embedding's Conv3d weight flattens to.

    Args:
        video: (b, c, t, h, w) any float dtype; t divisible by tubelet_size, h and w by patch_size.
        patch_size: spatial patch side p.
        tubelet_size: frames per patch pt.

    Returns:
        (b, n, c·pt·p·p) with tokens in (t, h, w) order; a copy, exact (pure rearrangement).
    """
    return rearrange(
        video, "b c (nt pt) (nh ph) (nw pw) -> b (nt nh nw) (c pt ph pw)", pt=tubelet_size, ph=patch_size, pw=patch_size
    )


class PatchEmbed3d(nn.Module):
    """Tubelet patch embedding: a Conv3d with kernel = stride = (pt, p, p), computed as reshape + matmul.

    The weight is stored exactly as the reference's `projection` Conv3d (`projection.weight` (d, c, pt, p, p),
    `projection.bias` (d,)). Because kernel = stride, the convolution is one GEMM over flattened patches;
    doing it as `patchify` + `F.linear` avoids the Conv3d im2col path on CPU (faster, same result up to
    float32 summation order, ~1e-6).

    Args:
        in_channels: input channels c (3 for RGB; the lip-sync generator may use 6).
        embed_dim: token width d.
        patch_size: spatial patch side p.
        tubelet_size: frames per patch pt.
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, tubelet_size: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.projection = nn.Conv3d(in_channels, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, video: Tensor) -> Tensor:
        """(b, c, t, h, w) -> (b, n, d) tokens in (t, h, w) order."""
        if video.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got video of shape {tuple(video.shape)}")
        patches = patchify(video, self.patch_size, self.tubelet_size)
        weight = rearrange(self.projection.weight, "d c pt ph pw -> d (c pt ph pw)")
        return F.linear(patches, weight, self.projection.bias)

    def with_in_channels(self, in_channels: int) -> "PatchEmbed3d":
        """A copy taking `in_channels` inputs whose first min(c, in_channels) channels reuse these weights.

        Extra channels start at zero, so on inputs whose extra channels are anything the new module first
        behaves exactly like this one; useful to feed a 6-channel (masked face + reference) clip to a pretrained
        RGB encoder.

        Args:
            in_channels: channels of the new embedding.
        """
        new = PatchEmbed3d(in_channels, self.embed_dim, self.patch_size, self.tubelet_size)
        new = new.to(device=self.projection.weight.device, dtype=self.projection.weight.dtype)
        keep = min(in_channels, self.in_channels)
        with torch.no_grad():
            new.projection.weight.zero_()
            new.projection.weight[:, :keep] = self.projection.weight[:, :keep]
            new.projection.bias.copy_(self.projection.bias)
        return new


def sincos_table(num_positions: int, dim: int) -> Tensor:
    """Fixed sin-cos positional table of the official `SinCosPositionalEmbedding.make_embedding`, bit for bit.

    angle[pos, j] = pos / 10000^(2·floor(j/2)/dim); sin on even j, cos on odd j; float32.
    The reference computes `pos / denom` as a Python int divided by a tensor, which torch evaluates as
    `denom.reciprocal() * pos`; we do the same so the stored tables (e.g. marlin_tiny.full.pt) match exactly.

    Args:
        num_positions: rows (tokens).
        dim: columns (token width).

    Returns:
        (num_positions, dim) float32.
    """
    exponent = 2 * torch.div(torch.arange(dim), 2, rounding_mode="trunc") / dim
    inverse_denominator = torch.tensor(10000).pow(exponent).reciprocal()
    table = torch.arange(num_positions, dtype=torch.float32)[:, None] * inverse_denominator[None, :]
    # In-place on strided views, as the reference does: keeps torch on the same sin/cos kernels.
    table[:, 0::2] = torch.sin(table[:, 0::2])
    table[:, 1::2] = torch.cos(table[:, 1::2])
    return table.float()


class SinCosPositionalEmbedding(nn.Module):
    """Adds a fixed sin-cos table, kept in the state dict as `emb` (1, n, d) like official checkpoints.

    It is a persistent buffer rather than a frozen Parameter: it still loads from and saves to `emb`, but no
    optimizer or weight decay can touch it.

    Args:
        num_positions: tokens n.
        dim: token width d.
    """

    def __init__(self, num_positions: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("emb", sincos_table(num_positions, dim).unsqueeze(0), persistent=True)

    def forward(self, tokens: Tensor) -> Tensor:
        """(b, n, d) -> (b, n, d) with the table added."""
        return tokens + self.emb.to(tokens.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a bias-free fused `qkv` weight and separate q/v biases (k bias = 0).

    Args:
        dim: token width d.
        num_heads: heads k; head width e = d / k.
        qkv_bias: learn `q_bias` and `v_bias`.
        qk_scale: logit scale, None for e ** -0.5.
        attn_drop: dropout on attention probabilities (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, tokens: Tensor) -> Tensor:
        """(b, n, d) -> (b, n, d)."""
        bias = None
        if self.q_bias is not None:
            # One fused GEMM + bias for q, k, v; k has no bias in the reference (BEiT-style).
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(tokens, self.qkv.weight, bias)
        q, k, v = rearrange(qkv, "b n (three k e) -> three b k n e", three=3, k=self.num_heads).unbind(0)
        attended = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        attended = rearrange(attended, "b k n e -> b n (k e)")
        return self.proj_drop(self.proj(attended))


class _Projection(nn.Module):
    """A bare Linear under the attribute name `linear`, reproducing the reference's `layers.N.linear` keys."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.linear(tokens)


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear, stored as `layers.{0,1}.linear` (official key names).

    Args:
        in_features: input width.
        hidden_features: hidden width.
        out_features: output width.
        activation: activation module class (GELU in the transformer, LeakyReLU in the discriminator).
        drop: dropout after the activation (the reference applies none after the last layer).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        activation: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [_Projection(in_features, hidden_features), _Projection(hidden_features, out_features)]
        )
        self.activation = activation()
        self.drop = nn.Dropout(drop)

    def forward(self, tokens: Tensor) -> Tensor:
        """(..., in_features) -> (..., out_features)."""
        return self.layers[1](self.drop(self.activation(self.layers[0](tokens))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)), optional layer scale.

    Args:
        dim: token width d.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / d.
        qkv_bias: learn q/v biases.
        qk_scale: attention logit scale, None for head_dim ** -0.5.
        drop: dropout after attention projection and in the MLP.
        attn_drop: dropout on attention probabilities.
        init_values: layer-scale init; 0 disables it (no gamma_1/gamma_2 parameters, as in the releases).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float = 0.0,
    ) -> None:
        super().__init__()
        if init_values > 0:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma_1 = None
            self.gamma_2 = None
        # LayerNorm eps 1e-5 is the torch default the reference relies on.
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, activation=nn.GELU, drop=drop)

    def forward(self, tokens: Tensor) -> Tensor:
        """(b, n, d) -> (b, n, d)."""
        if self.gamma_1 is None:
            tokens = tokens + self.attn(self.norm1(tokens))
            return tokens + self.mlp(self.norm2(tokens))
        tokens = tokens + self.gamma_1 * self.attn(self.norm1(tokens))
        return tokens + self.gamma_2 * self.mlp(self.norm2(tokens))


def init_transformer_weights(module: nn.Module) -> None:
    """Reference init: xavier-uniform Linear weights, zero biases, unit LayerNorm (`_init_weights`)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

