"""Fast evaluation-time encoders for :class:`~syncnet.syncnet_v2.SyncNetV2` (LSE-D / LSE-C scoring).

Numerically these are ``SyncNetV2.forward_lip`` on every window ``frames[v:v + 5]`` and ``forward_aud`` on MFCC
windows, in eval mode; they are only organised to do less work on a CPU. Both fold every batch norm into the
preceding convolution, keep tensors channels-last (oneDNN's fast layout) and apply each ReLU after the max pool
that follows it where there is one (max commutes with a monotone ReLU), on up to 4x fewer values.

The lip encoder also avoids most of the first layer's arithmetic:

* The lip tower looks across frames only in its first Conv3d (temporal kernel 5, stride 1, no padding); every
  later layer has temporal kernel 1. So windows are never copied out of the clip: after the first layer every
  window is an independent 2-D stack, and the first layer reads each group of 10 frames once for 6 windows.
* That first convolution is the most expensive layer (735 multiply-adds per output). Along time it is a plain
  5-tap correlation whose "multiplications" are 2-D convolutions, so a Winograd ``F(6, 5)`` over time
  (:mod:`syncnet.winograd`) produces 6 windows from 10 2-D convolutions (3 input channels each) instead of 30:
  3x fewer multiply-adds, with the spatial work still done by oneDNN. The input transform of integer pixels
  is exact in float32 (dyadic points); the layer's float32 error measured 2.4x a direct float32 convolution's
  (``F(4, 5)``: 0.5x, with a 5-9% slower lip tower); the embeddings' distance from the reference did not change.

On CPUs every later 3x3 convolution (lip layers 3-5, audio layers 3-5) and the lip tower's 5x5 stride-2 layer 2
run as spatial Winograd ``F(4x4, 3x3)`` (:mod:`syncnet.winograd_conv`): 2.25 instead of 9 multiply-adds per
3x3 tap set, 15-20% less time for the lip layers after the first and ~15% for the audio tower on the project
machine. (Audio layer 2, with 64 input channels, is as fast direct.) The 3x3 layers see all maps of a call
laid out on one canvas (:mod:`syncnet.canvas`), which wastes 17-23% fewer tiles on the maps' ragged edges, and
each tower's last convolution, whose kernel covers its whole input, is one matrix product.

The audio windows overlap too (hop 4 of 20 MFCC steps), but every audio convolution zero-pads the window
edges, so no window shares an exact intermediate value with its neighbour; the audio encoder runs per window.

Axis legend: t frames, v windows (6 per Winograd group), j Winograd terms (10 per group), c input channels,
o output channels, h height, w width.
"""
from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from syncnet.canvas import Canvas
from syncnet.syncnet_v2 import LIP_WINDOW, SyncNetV2
from syncnet.winograd import winograd_matrices
from syncnet.winograd_conv import OUTPUT_TILE, WinogradConv2d

__all__ = ["FastAudioEncoder", "FastLipEncoder"]

FRAME_SIZE = 224   # SyncNetV2's lip input is 224x224 (its last Conv3d has a 6x6 kernel sized for it)
CONV1_SIZE = (FRAME_SIZE - 7) // 2 + 1   # 109: first convolution, 7x7 stride 2, no padding
POOLED_SIZE = (CONV1_SIZE - 3) // 2 + 1  # 54: its 3x3 stride-2 max pool

# F(6, 5) over time. Dyadic points keep the input transform of 0..255 pixels exact in float32 (multiples of
# 1/16 below 2^15). The first layer's float32 error against float64 on the conformance clip, in units of a
# direct float32 convolution's: F(4, 5) 0.5, F(5, 5) +4: 2.4, F(6, 5) +4, +1/4: 2.4 (chosen), with -4, -1/4 in
# either place 2.6-3.8, +-4: 7.4; the error grows with the spread of the points.
TEMPORAL_TILE = 6
WINOGRAD_POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2), 4, Fraction(1, 4))


def _fold_batch_norm(conv: nn.Module, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding convolution: returns (weight, bias) in float64."""
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    bias = (conv.bias.double() - norm.running_mean.double()) * scale + norm.bias.double()
    return weight, bias


class _DirectConv:
    """A folded Conv2d (channels-last float32) with :class:`WinogradConv2d`'s call signature."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, *, stride: int = 1, padding: int = 0) -> None:
        self.weight = weight.float().contiguous(memory_format=torch.channels_last)
        self.bias, self.stride, self.padding = bias.float(), stride, padding

    def __call__(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)
        return x.relu_() if relu else x

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of the zero-padded input (as :meth:`WinogradConv2d.padded_size`)."""
        return height + 2 * self.padding, width + 2 * self.padding

    def convolve_padded(self, padded: torch.Tensor, height: int, width: int, relu: bool = False) -> torch.Tensor:
        """``self(x, relu)`` for an ``x`` already laid out with its zero padding."""
        if tuple(padded.shape[2:]) != self.padded_size(height, width):
            raise ValueError(f"a padded {height}x{width} input is {self.padded_size(height, width)}, "
                             f"got {tuple(padded.shape[2:])}")
        x = F.conv2d(padded, self.weight, self.bias, stride=self.stride)
        return x.relu_() if relu else x


class _WholeInputConv:
    """A folded Conv2d whose kernel covers its whole (unpadded) input: one matrix product per batch.

    SyncNet's last convolution in each tower maps a 6x6 (lip) or 5x4 (audio) map to 1x1. oneDNN ran the audio
    one 7x slower than the equivalent ``addmm`` on this project's CPU (15-22 ms vs 2-3 ms per 64 windows).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.kernel = tuple(weight.shape[2:])
        # Rows in channels-last order (h, w, c), so a channels-last input flattens without a copy.
        self.weight = weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0]).float().contiguous()   # (h w c) o
        self.bias = bias.float()

    def __call__(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.kernel:
            raise ValueError(f"expected {self.kernel} inputs for a whole-input convolution, got {tuple(x.shape[2:])}")
        out = torch.addmm(self.bias, x.permute(0, 2, 3, 1).reshape(x.shape[0], -1), self.weight)
        if relu:
            out.relu_()
        return out[:, :, None, None]


def _folded_conv(sequence: nn.Sequential, conv_index: int, *, stride: int = 1, padding: int = 0,
                 winograd: bool = False, whole_input: bool = False
                 ) -> WinogradConv2d | _DirectConv | _WholeInputConv:
    """``sequence[conv_index]`` + its batch norm, folded in float64, as a Conv2d.

    A Conv3d with temporal kernel 1 is a Conv2d applied per frame, so its time axis is squeezed out.
    ``winograd`` asks for ``F(4x4, 3x3)`` on CPUs; GPUs keep their library's convolution (cuDNN picks its own
    Winograd/FFT/implicit-GEMM kernels). ``whole_input`` declares that the kernel spans the whole unpadded
    input (a 1x1 output), which is a plain matrix product on every device.
    """
    weight, bias = _fold_batch_norm(sequence[conv_index], sequence[conv_index + 1])
    if weight.dim() == 5:
        weight = weight.squeeze(2)
    if whole_input:
        if stride != 1 or padding != 0:
            raise ValueError("a whole-input convolution has stride 1 and no padding")
        return _WholeInputConv(weight, bias)
    if winograd and weight.device.type == "cpu":
        return WinogradConv2d(weight, bias, stride=stride, padding=padding)
    return _DirectConv(weight, bias, stride=stride, padding=padding)


class _Head:
    """``Linear -> BatchNorm1d -> ReLU -> Linear`` with the norm folded in, so train mode cannot change it."""

    def __init__(self, head: nn.Sequential) -> None:
        weight, bias = _fold_batch_norm(head[0], head[1])
        self.hidden = weight.float(), bias.float()
        self.output = head[3].weight.detach().float().clone(), head[3].bias.detach().float().clone()

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(features, *self.hidden).relu_(), *self.output)


class FastAudioEncoder:
    """Audio embeddings of MFCC windows from a loaded :class:`SyncNetV2` (``forward_aud`` in eval mode).

    The encoder snapshots (folds) the model's weights when built and never modifies the model; its results do
    not depend on the model's train/eval mode.

    Args:
        model: the SyncNet.
    """

    @torch.no_grad()
    def __init__(self, model: SyncNetV2) -> None:
        tower = model.netcnnaud
        self.head = _Head(model.netfcaud)
        self.conv1, self.conv2 = _folded_conv(tower, 0, padding=1), _folded_conv(tower, 4, padding=1)
        self.conv3, self.conv4, self.conv5 = (_folded_conv(tower, i, padding=1, winograd=True) for i in (8, 11, 14))
        self.conv6 = _folded_conv(tower, 18, whole_input=True)

    @torch.inference_mode()
    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """Embed MFCC windows.

        Args:
            windows: (v, 1, 13, 20) float32 MFCC windows on the model's device.

        Returns:
            (v, embed_dim) float32 audio embeddings (``forward_aud`` outputs).
        """
        x = windows.contiguous(memory_format=torch.channels_last)
        x = self.conv1(x, relu=True)                              # 64 x 13 x 20 (the 1x1 max pool is identity)
        x = self.conv2(x)                                         # 192 x 13 x 20
        x = F.max_pool2d(x, 3, (1, 2)).relu_()                    # 192 x 11 x 9
        x = _convs_then_pool(x, (self.conv3, self.conv4, self.conv5), (True, True, False))  # 384/256/256 x 11 x 9
        x = x.relu_()                                             # 256 x 5 x 4
        return self.head(self.conv6(x, relu=True).flatten(1))      # 512 x 1 x 1


class FastLipEncoder:
    """Lip embeddings of all sliding 5-frame windows of a clip, from a loaded :class:`SyncNetV2`.

    The encoder snapshots (folds and transforms) the model's weights when built and never modifies the model;
    build a new one after changing the weights. Its results do not depend on the model's train/eval mode.

    Args:
        model: the SyncNet.
    """

    @torch.no_grad()
    def __init__(self, model: SyncNetV2) -> None:
        tower = model.netcnnlip
        device = tower[0].weight.device
        self.device = device
        self.head = _Head(model.netfclip)

        wino = winograd_matrices(TEMPORAL_TILE, LIP_WINDOW, WINOGRAD_POINTS)
        at, g, bt = wino.as_arrays(np.float64)
        self.num_terms = wino.n
        self.input_transform = torch.tensor(bt, dtype=torch.float32, device=device)     # j <- t
        self.output_transform = torch.tensor(at, dtype=torch.float32, device=device)    # v <- j

        # First layer: (96, 3, 5, 7, 7) -> n transformed 2-D kernels (96, 3, 7, 7), one convolution per term.
        # (A single grouped convolution with 3 channels per group ran 2.5x slower in oneDNN.)
        weight, bias = _fold_batch_norm(tower[0], tower[1])
        weight = torch.einsum("jk,ockhw->jochw", torch.tensor(g, dtype=torch.float64, device=device), weight)
        self.first_weights = [w.float().contiguous(memory_format=torch.channels_last) for w in weight]
        # The bias must reach every window exactly once: AT's column for the point x = 1 is all ones, so the
        # bias rides on that term's convolution (fused by oneDNN) and no other.
        self.first_biases: list[torch.Tensor | None] = [None] * self.num_terms
        self.first_biases[WINOGRAD_POINTS.index(1)] = bias.float()
        self.first_channels = weight.shape[1]

        self.conv2 = _folded_conv(tower, 4, stride=2, padding=1, winograd=True)
        self.conv3, self.conv4, self.conv5 = (_folded_conv(tower, i, padding=1, winograd=True) for i in (8, 11, 14))
        self.conv6 = _folded_conv(tower, 18, whole_input=True)

    def __call__(self, frames: torch.Tensor, num_windows: int, windows_per_chunk: int = 20) -> torch.Tensor:
        """Embed windows ``frames[v:v + 5]`` for v < ``num_windows``: ``head(trunk(...))``.

        Returns:
            (num_windows, embed_dim) float32 lip embeddings (``forward_lip`` outputs).
        """
        with torch.inference_mode():
            return self.head(self.trunk(frames, num_windows, windows_per_chunk))

    @torch.inference_mode()
    def trunk(self, frames: torch.Tensor, num_windows: int, windows_per_chunk: int = 20,
              buffers: "_Buffers | None" = None) -> torch.Tensor:
        """The tower before the fully connected head for windows ``frames[v:v + 5]``, v < ``num_windows``.

        Args:
            frames: (t, 224, 224, 3) uint8 (or float 0..255) BGR frames, t >= num_windows + 4. May stay on the
                CPU; groups of frames move to the model's device as they are used.
            num_windows: number of windows to embed.
            windows_per_chunk: windows per pass through the layers after the first (rounded up to a multiple
                of 6). Affects memory and speed only, never the values beyond float32 summation order.
            buffers: scratch to reuse from an earlier call (what :meth:`stream` passes); a fresh set by default.

        Returns:
            (num_windows, 512) float32 features; ``head`` turns them into embeddings.
        """
        num_frames = frames.shape[0]
        if tuple(frames.shape[1:]) != (FRAME_SIZE, FRAME_SIZE, 3):
            raise ValueError(f"expected (t, {FRAME_SIZE}, {FRAME_SIZE}, 3) frames, got {tuple(frames.shape)}")
        if num_windows < 1 or num_windows + LIP_WINDOW - 1 > num_frames:
            raise ValueError(f"{num_windows} windows need {num_windows + LIP_WINDOW - 1} frames, got {num_frames}")
        chunk = max(1, -(-windows_per_chunk // TEMPORAL_TILE)) * TEMPORAL_TILE
        # Reused across groups: fresh multi-megabyte tensors cost page faults comparable to the arithmetic.
        buffers = buffers if buffers is not None else _Buffers()
        # The first layer's output goes straight into layer 2's zero-padded input (the padding is never
        # written, so the buffer is zeroed only when made).
        padded_h, padded_w = self.conv2.padded_size(POOLED_SIZE, POOLED_SIZE)
        pad = self.conv2.padding
        features = []
        for first_window in range(0, num_windows, chunk):
            last_window = min(num_windows, first_window + chunk)
            groups = -(-(last_window - first_window) // TEMPORAL_TILE)
            padded = buffers.get("layer2_input", (chunk, padded_h, padded_w, self.first_channels), self.device,
                                 zeros=True)
            padded = padded[: groups * TEMPORAL_TILE]                                    # v h w o
            for offset in range(0, last_window - first_window, TEMPORAL_TILE):
                group_out = padded[offset : offset + TEMPORAL_TILE, pad : pad + POOLED_SIZE, pad : pad + POOLED_SIZE]
                self._first_layer(frames, first_window + offset, buffers, out=group_out)
            # ReLU; the later layers see only the wanted windows (a group's spare ones are dropped here).
            padded = padded[: last_window - first_window].clamp_min_(0).permute(0, 3, 1, 2)   # v o h w
            features.append(self._later_layers(padded, buffers))
        return torch.cat(features)

    def stream(self, blocks: Iterable[torch.Tensor | np.ndarray], windows_per_chunk: int = 20
               ) -> tuple[torch.Tensor, int]:
        """``trunk`` of every window of a clip that arrives in consecutive blocks of frames, holding few of them.

        Frames are consumed in spans of one chunk plus 4: each span goes through the tower exactly as ``trunk``
        takes that chunk of the whole clip (same 6-window groups, the same frames behind each group, zeros only
        past the clip's end), so the features equal those of one call on the stacked clip for every window that
        fits. (Windows of one chunk share Winograd tiles, so a call that stops earlier may round its last chunk
        differently.) Pass the rows wanted through ``head`` in one call: a matrix product's rounding can depend
        on its row count, so the head of the same rows as a whole-clip call gives the same embeddings bit for bit.

        Args:
            blocks: (n, 224, 224, 3) uint8 BGR frames, in order; any n, including 0.
            windows_per_chunk: as ``__call__``.

        Returns:
            ((num_frames - 4, 512) float32 features of every window that fits, num_frames).
        """
        chunk = max(1, -(-windows_per_chunk // TEMPORAL_TILE)) * TEMPORAL_TILE
        span = chunk + LIP_WINDOW - 1
        buffers = _Buffers()   # one set for every span: no re-zeroing, no fresh multi-megabyte tensors
        pending: list[torch.Tensor] = []
        held = 0
        num_frames = 0
        features = []
        for block in blocks:
            block = torch.as_tensor(block)
            num_frames += block.shape[0]
            pending.append(block)
            held += block.shape[0]
            if held < span:
                continue
            frames = pending[0] if len(pending) == 1 else torch.cat(pending)
            start = 0
            while held - start >= span:
                features.append(self.trunk(frames[start : start + span], chunk, windows_per_chunk, buffers))
                start += chunk
            pending, held = [frames[start:]], held - start
        if held >= LIP_WINDOW:
            frames = pending[0] if len(pending) == 1 else torch.cat(pending)
            features.append(self.trunk(frames, held - LIP_WINDOW + 1, windows_per_chunk, buffers))
        if not features:
            return torch.zeros(0, self.head.hidden[0].shape[1], device=self.device), num_frames
        return torch.cat(features), num_frames

    def _first_layer(self, frames: torch.Tensor, first_window: int, buffers: "_Buffers", out: torch.Tensor) -> None:
        """Conv3d + BN + max pool of windows first_window .. + 5 into ``out`` (6, 54, 54, 96); ReLU still to do."""
        tile, terms = TEMPORAL_TILE, self.num_terms
        clip = frames[first_window : first_window + terms]
        tiles = buffers.get("tiles", (terms, FRAME_SIZE * FRAME_SIZE * 3), self.device)
        tiles[: clip.shape[0]].copy_(rearrange(clip, "t h w c -> t (h w c)"))
        tiles[clip.shape[0] :].zero_()   # past the clip end: zero frames feed only windows that get dropped
        transformed = buffers.get("transformed", tiles.shape, self.device)
        torch.matmul(self.input_transform, tiles, out=transformed)                      # j (h w c)
        transformed = rearrange(transformed, "j (h w c) -> j 1 c h w", h=FRAME_SIZE, w=FRAME_SIZE)  # channels-last

        products = [
            rearrange(  # (1, o, h, w) channels-last -> (h w o), a view
                F.conv2d(transformed[term], self.first_weights[term], self.first_biases[term], stride=2),
                "1 o h w -> (h w o)",
            )
            for term in range(terms)
        ]
        # Gathering the terms once and applying AT as one matrix product moves half the bytes of
        # accumulating term by term (this step is memory-bound).
        stacked = buffers.get("products", (terms, products[0].shape[0]), self.device)
        torch.stack(products, out=stacked)                                               # j (h w o)
        windows = buffers.get("windows", (tile, stacked.shape[1]), self.device)
        torch.mm(self.output_transform, stacked, out=windows)                            # v (h w o)
        windows = rearrange(windows, "v (h w o) -> v h w o", h=CONV1_SIZE, w=CONV1_SIZE)
        rows = buffers.get("pool_rows", (tile, POOLED_SIZE, CONV1_SIZE, windows.shape[-1]), self.device)
        _max_pool_3x3_stride_2(windows, rows, out)

    def _later_layers(self, padded: torch.Tensor, buffers: "_Buffers") -> torch.Tensor:
        """Layers 2-6 on (v, 96, 54, 54) maps laid out with layer 2's zero padding -> (v, 512)."""
        x = self.conv2.convolve_padded(padded, POOLED_SIZE, POOLED_SIZE)        # 256 x 26 x 26
        count, channels, height, width = x.shape
        pooled = buffers.get("layer2_pooled", (count, height // 2, width // 2, channels), self.device)
        rows = buffers.get("layer2_pool_rows", (count, height // 2, width, channels), self.device)
        _max_pool_3x3_stride_2(x.permute(0, 2, 3, 1), rows, pooled, padding=1)  # reads the strided view in place
        x = pooled.relu_().permute(0, 3, 1, 2)                                   # 256 x 13 x 13
        x = _convs_then_pool(x, (self.conv3, self.conv4, self.conv5), (True, True, True))  # 256 x 6 x 6
        x = self.conv6(x, relu=True)                                             # 512 x 1 x 1
        return x.flatten(1)


def _convs_then_pool(x: torch.Tensor, convs: tuple, relus: tuple[bool, ...]) -> torch.Tensor:
    """Size-preserving 3x3 (padding 1) convolutions, each ReLU'd if asked, then a 3x3 stride-2 max pool.

    Winograd convolutions run on a :class:`~syncnet.canvas.Canvas` of all maps: 17-23% fewer tiles for
    SyncNet's 11x9 and 13x13 maps than map by map. Each map's result is the same as alone up to float32
    rounding, which now depends on its neighbours on the canvas: the same maps in the same call give the same
    bits, which is what streaming relies on (see :meth:`FastLipEncoder.stream`).
    """
    count, _, height, width = x.shape
    canvas = None
    if all(isinstance(conv, WinogradConv2d) for conv in convs) and height % 2 and width % 2:
        canvas = Canvas(count, height, width, OUTPUT_TILE)   # odd maps: even cells keep the stride-2 pool aligned
        x = canvas.pack(x)
    for index, (conv, relu) in enumerate(zip(convs, relus)):
        if canvas is not None and index:
            canvas.clear_gaps(x)
        x = conv(x, relu=relu)
    x = F.max_pool2d(x, 3, 2)
    if canvas is not None:
        x = canvas.cells(x, (height - 3) // 2 + 1, (width - 3) // 2 + 1, stride=2)
    return x


def _max_pool_3x3_stride_2(x: torch.Tensor, rows: torch.Tensor, out: torch.Tensor, padding: int = 0) -> None:
    """``max_pool2d(kernel 3, stride 2, padding)`` on (v, h, w, c) data as two separable passes into ``out``.

    Equal to ``F.max_pool2d`` bit for bit, about 1.4x faster on channels-last data; it reads strided views
    (``F.max_pool2d`` copies them first) and writes into a slice of a preallocated buffer. ``rows`` is
    (v, out_h, w, c) scratch. ``padding`` 1 (implicit -inf, as ``F.max_pool2d``) needs even h and w.
    """
    _max_of_three(x, 1, rows, padding)
    _max_of_three(rows, 2, out, padding)


def _max_of_three(x: torch.Tensor, dim: int, out: torch.Tensor, padding: int) -> None:
    """``out[i] = max(x[2i - padding .. 2i - padding + 2])`` along ``dim``, over the entries that exist."""
    size, length = out.shape[dim], x.shape[dim]
    if padding not in (0, 1) or (padding and length != 2 * size):
        raise ValueError(f"a 3-wide stride-2 maximum of {length} entries into {size} with padding {padding}")

    def taps(first: int, count: int) -> torch.Tensor:   # x[first], x[first + 2], ... along dim
        return x.narrow(dim, first, 2 * count - 1)[(slice(None),) * dim + (slice(None, None, 2),)]

    if padding:   # the first window overhangs the start: max of x[0], x[1]
        torch.maximum(x.narrow(dim, 0, 1), x.narrow(dim, 1, 1), out=out.narrow(dim, 0, 1))
        out = out.narrow(dim, 1, size - 1)
        size -= 1
    torch.maximum(taps(padding, size), taps(padding + 1, size), out=out)
    torch.maximum(out, taps(padding + 2, size), out=out)


class _Buffers:
    """Named scratch tensors reused across loop iterations."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], device: torch.device, zeros: bool = False) -> torch.Tensor:
        """The float32 tensor called ``name``, made (zeroed if asked) when first wanted at this shape."""
        tensor = self._tensors.get(name)
        if tensor is None or tuple(tensor.shape) != tuple(shape):
            make = torch.zeros if zeros else torch.empty
            tensor = self._tensors[name] = make(shape, dtype=torch.float32, device=device)
        return tensor
