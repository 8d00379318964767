"""Wav2Lip's other two layer kinds; the Conv+BN+ReLU block itself lives in `syncnet.conv` (shared with the expert).

Key names follow Rudrabha/Wav2Lip `models/conv.py`: each block's parameters sit in a Sequential called
`conv_block`, so checkpoints load unchanged.
Axis legend: b batch, c channels, h height, w width.
"""
from __future__ import annotations

import torch
from torch import nn

from syncnet.conv import ConvBlock, IntPair

__all__ = ["ConvBlock", "ConvTransposeBlock", "PlainConvBlock"]


class ConvTransposeBlock(nn.Module):
    """`relu(bn(conv_transpose(x)))`: the generator's upsampling layer (Wav2Lip `Conv2dTranspose`).

    Args:
        cin, cout: channels.
        kernel_size, stride, padding, output_padding: as `nn.ConvTranspose2d`.
    """

    def __init__(self, cin: int, cout: int, kernel_size: IntPair, stride: IntPair, padding: IntPair,
                 output_padding: IntPair = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, cin, h, w) -> (b, cout, h', w')."""
        return self.act(self.conv_block(x))


class PlainConvBlock(nn.Module):
    """`leaky_relu(conv(x), 0.01)` without normalisation: the discriminator's layer (Wav2Lip `nonorm_Conv2d`)."""

    def __init__(self, cin: int, cout: int, kernel_size: IntPair, stride: IntPair, padding: IntPair) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, cin, h, w) -> (b, cout, h', w')."""
        return self.act(self.conv_block(x))
