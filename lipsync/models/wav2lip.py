"""The classic Wav2Lip generator and its visual-quality discriminator, key-for-key compatible with the
public checkpoints (Rudrabha/Wav2Lip @ 5c90fa9, `models/wav2lip.py`).

The layer lists are written as spec tables whose order reproduces the reference module tree, hence its
state-dict keys. Axis legend: b batch, t frames, c channels, h height, w width, m mel bins, s mel steps.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lipsync.models.layers import ConvBlock, ConvTransposeBlock, PlainConvBlock

FACE_SIZE = 96           # generator resolution (hparams.img_size)
FACE_CHANNELS = 6        # masked target (BGR) + reference (BGR)


class Stage(NamedTuple):
    """One resolution level: an entry layer followed by `num_residual` shape-preserving residual layers.

    For the encoders `channels` is (cin, cout) of the entry convolution. For the decoder it is the
    transposed convolution's (cin, cout); its cin counts the skip connection concatenated before it.
    """

    channels: tuple[int, int]
    kernel: int
    stride: int | tuple[int, int]
    padding: int
    num_residual: int


# Face encoder: 96 -> 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1 (feature sizes noted per row).
FACE_ENCODER = (
    Stage((6, 16), 7, 1, 3, 0),        # 96
    Stage((16, 32), 3, 2, 1, 2),       # 48
    Stage((32, 64), 3, 2, 1, 3),       # 24
    Stage((64, 128), 3, 2, 1, 2),      # 12
    Stage((128, 256), 3, 2, 1, 2),     # 6
    Stage((256, 512), 3, 2, 1, 1),     # 3
)
# Audio encoder over an (80 mel x 16 step) window: 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1.
AUDIO_ENCODER = (
    Stage((1, 32), 3, 1, 1, 2),
    Stage((32, 64), 3, (3, 1), 1, 2),
    Stage((64, 128), 3, 3, 1, 2),
    Stage((128, 256), 3, (3, 2), 1, 1),
)
# Decoder: transposed convolutions from 1x1 back to 96x96; cin includes the skip connection.
FACE_DECODER = (
    Stage((1024, 512), 3, 1, 0, 1),    # 1 -> 3
    Stage((1024, 512), 3, 2, 1, 2),    # 3 -> 6
    Stage((768, 384), 3, 2, 1, 2),     # 6 -> 12
    Stage((512, 256), 3, 2, 1, 2),     # 12 -> 24
    Stage((320, 128), 3, 2, 1, 2),     # 24 -> 48
    Stage((160, 64), 3, 2, 1, 2),      # 48 -> 96
)


def _encoder_stage(stage: Stage) -> list[nn.Module]:
    cin, cout = stage.channels
    layers: list[nn.Module] = [ConvBlock(cin, cout, stage.kernel, stage.stride, stage.padding)]
    layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(stage.num_residual)]
    return layers


def _decoder_stage(stage: Stage) -> nn.Sequential:
    cin, cout = stage.channels
    output_padding = 0 if stage.stride == 1 else 1   # doubles the size exactly
    layers: list[nn.Module] = [ConvTransposeBlock(cin, cout, stage.kernel, stage.stride, stage.padding, output_padding)]
    layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(stage.num_residual)]
    return nn.Sequential(*layers)


def _bottleneck(cin: int) -> list[nn.Module]:
    # 3x3 -> 1x1 valid convolution, then a 1x1 mixing layer: the 512-d embedding.
    return [ConvBlock(cin, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)]


def build_audio_encoder(embedding_dim: int = 512) -> nn.Sequential:
    """Wav2Lip's audio encoder: an (80 mel x 16 step) window -> (embedding_dim, 1, 1).

    With the default width its layers and keys are the released generator's `audio_encoder`.
    """
    layers = [layer for stage in AUDIO_ENCODER for layer in _encoder_stage(stage)]
    return nn.Sequential(*layers, ConvBlock(256, 512, 3, 1, 0), ConvBlock(512, embedding_dim, 1, 1, 0))


def fold_time(x: torch.Tensor) -> torch.Tensor:
    """(b, c, t, h, w) -> (t b, c, h, w): time-major, as the reference's `torch.cat([x[:, :, i] ...], 0)`."""
    return rearrange(x, "b c t h w -> (t b) c h w")


class Wav2Lip(nn.Module):
    """Wav2Lip generator: a U-Net over the face with the audio embedding at its bottleneck.

    Inputs are BGR in [0, 1]: channels 0-2 the target frame with its lower half (rows 48-95) zeroed,
    channels 3-5 a reference frame of the same person. Output is the full face, sigmoid in [0, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [nn.Sequential(*_encoder_stage(stage)) for stage in FACE_ENCODER] + [nn.Sequential(*_bottleneck(512))]
        )
        self.audio_encoder = build_audio_encoder()
        self.face_decoder_blocks = nn.ModuleList(
            [nn.Sequential(ConvBlock(512, 512, 1, 1, 0))] + [_decoder_stage(stage) for stage in FACE_DECODER]
        )
        self.output_block = nn.Sequential(
            ConvBlock(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """Generate faces.

        Args:
            audio_sequences: (b, 1, 80, 16) mel windows, or (b, t, 1, 80, 16) for a window of t frames.
            face_sequences: (b, 6, 96, 96), or (b, 6, t, 96, 96); BGR in [0, 1].

        Returns:
            (b, 3, 96, 96), or (b, 3, t, 96, 96), in [0, 1].
        """
        batch_size = audio_sequences.size(0)
        temporal = face_sequences.dim() > 4
        if temporal:
            audio_sequences = rearrange(audio_sequences, "b t c m s -> (t b) c m s")
            face_sequences = fold_time(face_sequences)
        audio_embedding = self.audio_encoder(audio_sequences)          # ((t b), 512, 1, 1)
        skips = []
        x = face_sequences
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = audio_embedding
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        x = self.output_block(x)
        if temporal:
            x = rearrange(x, "(t b) c h w -> b c t h w", b=batch_size)
        return x


DISC_ENCODER = (
    Stage((3, 32), 7, 1, 3, 0),            # 48x96 lower half
    Stage((32, 64), 5, (1, 2), 2, 1),      # 48x48
    Stage((64, 128), 5, 2, 2, 1),          # 24
    Stage((128, 256), 5, 2, 2, 1),         # 12
    Stage((256, 512), 3, 2, 1, 1),         # 6
    Stage((512, 512), 3, 2, 1, 1),         # 3
)


def _disc_stage(stage: Stage) -> nn.Sequential:
    # The discriminator's "residual" layers are plain same-size convolutions (no shortcut, no norm).
    cin, cout = stage.channels
    same_padding = stage.kernel // 2
    layers = [PlainConvBlock(cin, cout, stage.kernel, stage.stride, stage.padding)]
    layers += [PlainConvBlock(cout, cout, stage.kernel, 1, same_padding) for _ in range(stage.num_residual)]
    return nn.Sequential(*layers)


class Wav2LipDiscQual(nn.Module):
    """Wav2Lip's visual-quality discriminator: real vs generated, judged on the lower half of the face."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [_disc_stage(stage) for stage in DISC_ENCODER]
            + [nn.Sequential(PlainConvBlock(512, 512, 3, 1, 0), PlainConvBlock(512, 512, 1, 1, 0))]
        )
        self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, kernel_size=1, stride=1, padding=0), nn.Sigmoid())

    def logits(self, face_sequences: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores, one per frame.

        Args:
            face_sequences: (b, 3, t, 96, 96) BGR in [0, 1].

        Returns:
            ((t b), 1) time-major.
        """
        x = fold_time(face_sequences)
        x = x[:, :, x.size(2) // 2 :]            # the lower half: the mouth region is what it judges
        for block in self.face_encoder_blocks:
            x = block(x)
        return self.binary_pred[0](x).flatten(1)

    def forward(self, face_sequences: torch.Tensor) -> torch.Tensor:
        """Probability that each frame is real: ((t b), 1) in [0, 1]."""
        return torch.sigmoid(self.logits(face_sequences))

    def perceptual_forward(self, fake_sequences: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss: BCE(D(fake), real), averaged over frames (a scalar)."""
        logits = self.logits(fake_sequences)
        # BCE on the logits is the same loss as the reference's BCE on the sigmoid, but stable in bf16.
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
