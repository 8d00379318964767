"""syncnet_python's SyncNet (``SyncNetModel.S``, the ``syncnet_v2.model`` checkpoint) used for LSE-D / LSE-C.

The four ``nn.Sequential`` towers keep the reference's layer indices, ReLU and pooling layers included, so the
state-dict keys (``netcnnlip.4.weight`` ...) match joonson/syncnet_python ``SyncNetModel.py`` at 6efbb1c.

Axis legend: n windows, b batch, c channels, t frames, h height, w width, k MFCC coefficients, s MFCC steps.
"""
from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from syncnet.weights import load_into

__all__ = ["LIP_WINDOW", "SyncNetV2"]

# Frames per lip window: the first Conv3d's temporal kernel; every later lip layer has temporal kernel 1.
LIP_WINDOW = 5


def _bn_relu2d(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


def _bn_relu3d(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(channels), nn.ReLU(inplace=True)]


def _audio_tower() -> nn.Sequential:
    # (n, 1, 13, 20) MFCC window -> (n, 512, 1, 1); sizes (coefficients x steps) in comments.
    return nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1), *_bn_relu2d(64),       # 0-2: 13x20
        nn.MaxPool2d(kernel_size=1, stride=1),                                          # 3: identity in the reference
        nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1), *_bn_relu2d(192),     # 4-6
        nn.MaxPool2d(kernel_size=3, stride=(1, 2)),                                     # 7: 11x9
        nn.Conv2d(192, 384, kernel_size=3, padding=1), *_bn_relu2d(384),              # 8-10
        nn.Conv2d(384, 256, kernel_size=3, padding=1), *_bn_relu2d(256),              # 11-13
        nn.Conv2d(256, 256, kernel_size=3, padding=1), *_bn_relu2d(256),              # 14-16
        nn.MaxPool2d(kernel_size=3, stride=2),                                          # 17: 5x4
        nn.Conv2d(256, 512, kernel_size=(5, 4), padding=0), *_bn_relu2d(512),         # 18-20: 1x1
    )


def _lip_tower() -> nn.Sequential:
    # (n, 3, 5, 224, 224) BGR 0..255 -> (n, 512, 1, 1, 1); time collapses to 1 in layer 0, sizes (h x w) in comments.
    return nn.Sequential(
        nn.Conv3d(3, 96, kernel_size=(LIP_WINDOW, 7, 7), stride=(1, 2, 2)), *_bn_relu3d(96),             # 0-2: 109x109
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),                                           # 3: 54x54
        nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), *_bn_relu3d(256),  # 4-6: 26x26
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),                        # 7: 13x13
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), *_bn_relu3d(256),                 # 8-10
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), *_bn_relu3d(256),                 # 11-13
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), *_bn_relu3d(256),                 # 14-16
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),                                           # 17: 6x6
        nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0), *_bn_relu3d(512),                         # 18-20: 1x1
    )


def _head(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNetV2(nn.Module):
    """The SyncNet that LSE-D / LSE-C are defined with (``S(num_layers_in_fc_layers=1024)``).

    Args:
        embed_dim: output width of both heads (1024 for the released ``syncnet_v2.model``).
    """

    def __init__(self, embed_dim: int = 1024) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        # Attribute order fixes the state-dict order: aud tower, aud head, lip head, lip tower (as the reference).
        self.netcnnaud = _audio_tower()
        self.netfcaud = _head(embed_dim)
        self.netfclip = _head(embed_dim)
        self.netcnnlip = _lip_tower()

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """Audio embedding of MFCC windows.

        Args:
            x: (n, 1, 13, 20) float32 MFCC windows (raw-int16 MFCCs, see :func:`syncnet.mfcc`).

        Returns:
            (n, embed_dim) embeddings, not normalised.
        """
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lipfeat(self, x: torch.Tensor) -> torch.Tensor:
        """Lip-tower features before the head.

        Args:
            x: (n, 3, 5, 224, 224) float32 BGR frames in 0..255 (no normalisation).

        Returns:
            (n, 512) features.
        """
        return self.netcnnlip(x).flatten(1)

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """Lip embedding of 5-frame windows.

        Args:
            x: (n, 3, 5, 224, 224) float32 BGR frames in 0..255 (no normalisation).

        Returns:
            (n, embed_dim) embeddings, not normalised.
        """
        return self.netfclip(self.forward_lipfeat(x))

    def forward_lip_clip(self, clip: torch.Tensor) -> torch.Tensor:
        """Lip embeddings of every 5-frame window of a clip, running the tower once over the whole clip.

        Only the first Conv3d looks across frames (temporal kernel 5, stride 1, no padding); every later layer
        has temporal kernel 1 and batch norm is per channel, so output time step v is exactly window v
        (frames v..v+4). This avoids copying each frame into five overlapping windows.

        Args:
            clip: (b, 3, t, 224, 224) float32 BGR frames in 0..255, t >= 5.

        Returns:
            (b, t - 4, embed_dim) embeddings; ``[:, v]`` equals ``forward_lip(clip[:, :, v:v + 5])``.
        """
        features = self.netcnnlip(clip)                                        # b 512 (t-4) 1 1
        batch = features.shape[0]
        features = rearrange(features, "b c t h w -> (b t) (c h w)")
        return rearrange(self.netfclip(features), "(b t) d -> b t d", b=batch)

    @classmethod
    def from_file(cls, path: str | Path) -> "SyncNetV2":
        """Load ``syncnet_v2.model`` (a bare ``{key: tensor}`` dict) strictly.

        Args:
            path: the checkpoint file.

        Returns:
            the model in eval mode on the CPU.
        """
        return load_into(cls(), path)
