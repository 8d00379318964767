"""Spatial Winograd ``F(4x4, 3x3)`` convolution for float32 inference on channels-last tensors.

A 3x3 convolution costs 9 multiply-adds per output and input channel. ``F(4x4, 3x3)`` (Lavin & Gray 2016)
computes each 4x4 block of outputs from a 6x6 input tile with 36 element-wise products in a transformed
domain, 2.25 per output, so the arithmetic becomes 36 independent matrix products ``(tiles x c) @ (c x o)`` that
BLAS runs near peak, plus two linear transforms. PyTorch's oneDNN CPU convolutions are direct, already near
this CPU's peak rate, so fewer multiply-adds is what is left to make the evaluator faster.

A stride-2 convolution with a 5x5 (or 6x6) kernel is first rewritten as a stride-1 3x3 convolution over the
2x2 space-to-depth rearrangement of its input (4x the channels, each kernel tap lands in exactly one of them),
so SyncNet's ``5x5 / 2`` layer uses the same path; its tiles are gathered straight from the padded input.

Memory traffic, not arithmetic, bounds the transforms, so copies are avoided where the caller can help: outputs
come back as views of a buffer rounded up to whole tiles, and :meth:`WinogradConv2d.convolve_padded` takes an
input that its producer already wrote into a zero-padded buffer.

Accuracy: the transforms use the interpolation points (0, 1, -1, 1/2, -2), which gave a smaller float32 error
than (0, +-1, +-2) or (0, +-1, +-1/2) on SyncNet's layer shapes; the error measured 1.1-3.2x that of a direct
float32 convolution, about 1e-6 of the output's scale (tests/test_syncnet_models.py). In SyncNetV2's towers
the lip embeddings moved from 7.5e-5 to 7.8e-5 from the reference's, and the scores did not change.

Speed (this project's 2-vCPU machine, SyncNet's layer shapes): 1.1-1.3x a oneDNN direct convolution per
layer; the transforms are memory-bound, so the gain is well below the 4x fewer multiply-adds.

Axis legend: n batch, h height, w width, c input channels, o output channels, a b transformed tile positions
(6 each), p q output positions in a tile (4 each), i j tile indices.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from syncnet.winograd import winograd_matrices

__all__ = ["WinogradConv2d"]

OUTPUT_TILE = 4
KERNEL = 3
INPUT_TILE = OUTPUT_TILE + KERNEL - 1   # 6
POINTS = (0, 1, -1, Fraction(1, 2), -2)
# Tiles transformed per pass: bounds the intermediates (36 x tiles x channels floats, ~14 MB for SyncNet's
# 384-channel layer) to cache-friendly sizes whatever the batch; as fast as whole batches here.
TILES_PER_SLICE = 256
# Space-to-depth phases (row, column parity) in channel order. A 5x5 kernel's odd phases have a zero last tap,
# so at the points at infinity only even-row (first two) or even-column (middle two) phases have weights, and
# either set is a contiguous channel range that the products can be restricted to (see _point_groups).
PHASES = ((0, 1), (0, 0), (1, 0), (1, 1))


class WinogradConv2d:
    """A 3x3 stride-1 convolution (or a <= 6x6 stride-2 one) with bias, as ``F(4x4, 3x3)``.

    Args:
        weight: (o, c, k, k) float kernel; k = 3 for stride 1, 5 or 6 for stride 2.
        bias: (o,) bias or None.
        stride: 1 or 2.
        padding: zero padding on every side of the input.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int = 1, padding: int = 0) -> None:
        out_channels, in_channels, kernel_h, kernel_w = weight.shape
        if stride not in (1, 2) or kernel_h != kernel_w or -(-kernel_h // stride) != KERNEL:
            raise ValueError(f"F(4x4, 3x3) needs a 3x3 stride-1 or 5x5/6x6 stride-2 kernel, got "
                             f"{kernel_h}x{kernel_w} stride {stride}")
        self.stride, self.padding, self.kernel = stride, padding, kernel_h
        weight = weight.detach().double()
        if stride == 2:
            # Tap (2a + dy, 2b + dx) of the padded 6x6 kernel meets input channel (phase (dy, dx), c) at tap (a, b).
            weight = F.pad(weight, (0, 6 - kernel_w, 0, 6 - kernel_h))
            weight = weight.reshape(out_channels, in_channels, 3, 2, 3, 2)
            weight = torch.cat([weight[:, :, :, dy, :, dx] for dy, dx in PHASES], dim=1)   # o (phase c) a b
        wino = winograd_matrices(OUTPUT_TILE, KERNEL, POINTS)
        at, g, bt = (torch.tensor(m, dtype=torch.float64, device=weight.device) for m in wino.as_arrays(np.float64))
        transformed = torch.einsum("ak,ockl,bl->abco", g, weight, g)
        transformed = transformed.reshape(INPUT_TILE * INPUT_TILE, *transformed.shape[2:])   # (a b) c o
        points, self.groups = _point_groups(transformed)
        self.weight = transformed[points].float().contiguous()
        self.input_transform = torch.kron(bt, bt)[points].float()        # (a b) <- (6x6 tile positions)
        self.output_transform = torch.kron(at, at)[:, points].float()    # (p q) <- (a b)
        self.bias = None if bias is None else bias.detach().float()
        self.in_channels, self.out_channels = in_channels, out_channels

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of zero-padded input the tiles read for a ``height x width`` input."""
        out_h, out_w = self._output_size(height, width)
        return ((_round_up(out_h, OUTPUT_TILE) + KERNEL - 1) * self.stride,
                (_round_up(out_w, OUTPUT_TILE) + KERNEL - 1) * self.stride)

    def __call__(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """Convolve (n, c, h, w) ``x`` (channels-last); returns (n, o, h', w'), ReLU'd if asked.

        The result has channels innermost in memory but is a view of a buffer rounded up to whole 4x4 tiles.
        """
        _, channels, height, width = x.shape
        if channels != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {channels}")
        need_h, need_w = self.padded_size(height, width)
        pad = self.padding
        # Zero beyond the padded input (F.pad crops where the tiles need less than the padding gives).
        padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, pad, need_w - width - pad, pad, need_h - height - pad))
        return self.convolve_padded(padded.permute(0, 3, 1, 2), height, width, relu)

    def convolve_padded(self, padded: torch.Tensor, height: int, width: int, relu: bool = False) -> torch.Tensor:
        """``self(x, relu)`` for an ``x`` already laid out with its zero padding (saves that copy).

        Args:
            padded: (n, c, *padded_size(height, width)) with channels innermost in memory: the
                ``height x width`` input at rows and columns ``padding ..``, zeros everywhere else.
            height, width: the input's size.
            relu: apply a ReLU.
        """
        n, channels, rows, cols = padded.shape
        if channels != self.in_channels or padded.stride(1) != 1:
            raise ValueError(f"expected {self.in_channels} input channels innermost, got shape {tuple(padded.shape)} "
                             f"strides {padded.stride()}")
        if (rows, cols) != self.padded_size(height, width):
            raise ValueError(f"a padded {height}x{width} input is {self.padded_size(height, width)}, got {rows}x{cols}")
        out_h, out_w = self._output_size(height, width)
        result = torch.empty(n, _round_up(out_h, OUTPUT_TILE), _round_up(out_w, OUTPUT_TILE), self.out_channels,
                             dtype=torch.float32, device=padded.device)
        tiles_per_image = (result.shape[1] // OUTPUT_TILE) * (result.shape[2] // OUTPUT_TILE)
        images_per_slice = max(1, TILES_PER_SLICE // tiles_per_image)
        padded = padded.permute(0, 2, 3, 1)                                            # n h w c (a view)
        for start in range(0, n, images_per_slice):
            self._convolve(padded[start : start + images_per_slice], result[start : start + images_per_slice])
        if relu:
            result.relu_()
        return result[:, :out_h, :out_w].permute(0, 3, 1, 2)

    def _output_size(self, height: int, width: int) -> tuple[int, int]:
        return ((height + 2 * self.padding - self.kernel) // self.stride + 1,
                (width + 2 * self.padding - self.kernel) // self.stride + 1)

    def _convolve(self, padded: torch.Tensor, result: torch.Tensor) -> None:
        """Padded (n, h, w, c) -> (n, rows, cols, o) ``result`` in whole tiles (bias added)."""
        n = padded.shape[0]
        tiles_h, tiles_w = result.shape[1] // OUTPUT_TILE, result.shape[2] // OUTPUT_TILE
        tiles = self._gather_tiles(padded, tiles_h, tiles_w)                           # (a b) (n i j c)
        transformed = torch.mm(self.input_transform, tiles)                              # (a b) (n i j c)
        transformed = transformed.view(len(self.weight), n * tiles_h * tiles_w, -1)
        products = torch.empty(len(self.weight), transformed.shape[1], self.out_channels,
                               dtype=torch.float32, device=padded.device)
        for start, stop, low, high in self.groups:                                       # (a b) (n i j) o
            torch.bmm(transformed[start:stop, :, low:high], self.weight[start:stop, low:high],
                      out=products[start:stop])
        out = torch.mm(self.output_transform, products.view(len(self.weight), -1))      # (p q) (n i j o)
        out = out.view(OUTPUT_TILE, OUTPUT_TILE, n, tiles_h, tiles_w, self.out_channels)
        out = out.permute(2, 3, 0, 4, 1, 5)                                              # n i p j q o
        # One pass from the transform's layout to the result's, adding the bias on the way.
        target = result.view(n, tiles_h, OUTPUT_TILE, tiles_w, OUTPUT_TILE, self.out_channels)
        if self.bias is None:
            target.copy_(out)
        else:
            torch.add(out, self.bias, out=target)

    def _gather_tiles(self, padded: torch.Tensor, tiles_h: int, tiles_w: int) -> torch.Tensor:
        """Overlapping 6x6 input tiles of a padded (n, h, w, c) input as a (36, n i j c') matrix, c' = c per phase.

        A stride-2 kernel reads every tile in space-to-depth form: tile position (a, b) of tile (i, j) in phase
        (dy, dx) is padded pixel (8i + 2a + dy, 8j + 2b + dx), gathered here in one pass without building
        the space-to-depth tensor first.
        """
        n, _, _, channels = padded.shape
        if self.stride == 1:
            tiles = padded.unfold(1, INPUT_TILE, OUTPUT_TILE).unfold(2, INPUT_TILE, OUTPUT_TILE)   # n i j c 6 6
            return tiles.permute(4, 5, 0, 1, 2, 3).reshape(INPUT_TILE * INPUT_TILE, -1)
        tiles = torch.empty(INPUT_TILE, INPUT_TILE, n, tiles_h, tiles_w, len(PHASES), channels,
                            dtype=padded.dtype, device=padded.device)
        batch_step, row_step, col_step, channel_step = padded.stride()
        step = 2 * OUTPUT_TILE   # input pixels between neighbouring tiles
        sizes = (INPUT_TILE, INPUT_TILE, n, tiles_h, tiles_w, channels)
        strides = (2 * row_step, 2 * col_step, batch_step, step * row_step, step * col_step, channel_step)
        for slot, (dy, dx) in enumerate(PHASES):
            offset = padded.storage_offset() + dy * row_step + dx * col_step
            tiles[:, :, :, :, :, slot].copy_(padded.as_strided(sizes, strides, offset))
        return tiles.view(INPUT_TILE * INPUT_TILE, -1)


def _point_groups(transformed: torch.Tensor) -> tuple[list[int], list[tuple[int, int, int, int]]]:
    """Order the transformed points so that each matrix product skips input channels with zero weights.

    A 5x5 stride-2 kernel padded to 6x6 has a zero last tap in its odd phases, and the point at infinity
    reads only the last tap: there the odd-phase channels' transformed weights are exactly zero (16% of
    SyncNet's layer-2 multiply-adds). Points whose nonzero channels span the same range share one batched
    product over that range; points with no nonzero weight are dropped.

    Args:
        transformed: (points, c, o) float64 transformed weights.

    Returns:
        (the kept points in their new order, [(start, stop, first channel, channel stop)] per group).
    """
    nonzero = transformed.abs().amax(dim=2) != 0                                       # points x c
    spans = {}
    for point, row in enumerate(nonzero):
        channels = row.nonzero().flatten().tolist()
        if channels:
            spans[point] = (channels[0], channels[-1] + 1)
    order = sorted(spans, key=lambda point: (spans[point][0] - spans[point][1], spans[point], point))
    groups: list[tuple[int, int, int, int]] = []
    for position, point in enumerate(order):
        if groups and groups[-1][2:] == spans[point]:
            groups[-1] = (groups[-1][0], position + 1, *spans[point])
        else:
            groups.append((position, position + 1, *spans[point]))
    return order, groups


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
