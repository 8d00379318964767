"""Conv2d + BatchNorm2d + ReLU block with an optional identity shortcut.

This is the building block of every Wav2Lip network (the expert SyncNet, the generator's encoders and the
MARLIN generator's audio encoder). Its submodule is named ``conv_block`` so checkpoint keys read
``<prefix>.conv_block.0.weight`` (the convolution) and ``<prefix>.conv_block.1.running_mean`` (the batch norm),
as in Rudrabha/Wav2Lip ``models/conv.py`` ``Conv2d``.

Axis legend: b batch, c channels, h height, w width.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBlock", "IntPair"]

IntPair = int | tuple[int, int]


class ConvBlock(nn.Module):
    """``relu(bn(conv(x)) [+ x])``: one Wav2Lip convolution layer.

    Args:
        cin: input channels.
        cout: output channels.
        kernel_size: convolution kernel, an int or (height, width).
        stride: convolution stride, an int or (height, width).
        padding: zero padding, an int or (height, width).
        residual: add the block input before the ReLU. Needs ``cin == cout`` and a shape-preserving
            convolution (stride 1, "same" padding).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: IntPair,
        stride: IntPair,
        padding: IntPair,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and cin != cout:
            raise ValueError(f"a residual ConvBlock needs cin == cout, got {cin} -> {cout}")
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        # Stateless, so it adds no state-dict keys; kept as a module so the tree prints like the reference.
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: (b, cin, h, w) float tensor.

        Returns:
            (b, cout, h', w') tensor; h' = h and w' = w when ``residual`` is set.
        """
        out = self.conv_block(x)
        if self.residual:
            # The shortcut is added before the activation (Wav2Lip models/conv.py).
            out = out + x
        return self.act(out)

    def extra_repr(self) -> str:
        return f"residual={self.residual}"
