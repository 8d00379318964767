"""Wav2Lip's colour lip-sync expert (``SyncNet_color``, the ``lipsync_expert.pth`` checkpoint).

Both towers are plain stacks of :class:`~syncnet.conv.ConvBlock`, written below as spec tables so the layer
list reads like the paper while the module tree (and therefore every state-dict key) stays identical to
Rudrabha/Wav2Lip ``models/syncnet.py`` at 5c90fa9. The reference interleaves no other modules, so table row i
is ``face_encoder.i`` / ``audio_encoder.i``.

Axis legend: b batch, c channels, t frames, h height, w width, m mel bins, s mel steps, d embedding width.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from syncnet.conv import ConvBlock, IntPair
from syncnet.weights import load_into

__all__ = [
    "AUDIO_ENCODER_SPEC",
    "FACE_ENCODER_SPEC",
    "ConvSpec",
    "SyncNetColor",
    "sync_loss",
]


@dataclass(frozen=True)
class ConvSpec:
    """One :class:`ConvBlock` of a tower.

    Args:
        cout: output channels (the input channels are the previous row's ``cout``).
        kernel_size: kernel, int or (height, width).
        stride: stride, int or (height, width).
        padding: zero padding, int or (height, width).
        residual: identity shortcut before the ReLU.
    """

    cout: int
    kernel_size: IntPair
    stride: IntPair
    padding: IntPair
    residual: bool = False


# The towers, one row per ConvBlock: ConvSpec(cout, kernel, stride, padding[, residual]). Row i is key prefix
# face_encoder.i / audio_encoder.i. Comments give the output size for the reference input. Residual blocks
# preserve the shape and add their input before the ReLU.

# Face: (b, 3 * num_frames, 48, 96) lower-half faces -> (b, 512, 1, 1).
FACE_ENCODER_SPEC: tuple[ConvSpec, ...] = (
    ConvSpec(32, 7, 1, 3),                  # 0: 48x96
    ConvSpec(64, 5, (1, 2), 1),             # 1: 46x47
    ConvSpec(64, 3, 1, 1, residual=True),   # 2
    ConvSpec(64, 3, 1, 1, residual=True),   # 3
    ConvSpec(128, 3, 2, 1),                 # 4: 23x24
    ConvSpec(128, 3, 1, 1, residual=True),  # 5
    ConvSpec(128, 3, 1, 1, residual=True),  # 6
    ConvSpec(128, 3, 1, 1, residual=True),  # 7
    ConvSpec(256, 3, 2, 1),                 # 8: 12x12
    ConvSpec(256, 3, 1, 1, residual=True),  # 9
    ConvSpec(256, 3, 1, 1, residual=True),  # 10
    ConvSpec(512, 3, 2, 1),                 # 11: 6x6
    ConvSpec(512, 3, 1, 1, residual=True),  # 12
    ConvSpec(512, 3, 1, 1, residual=True),  # 13
    ConvSpec(512, 3, 2, 1),                 # 14: 3x3
    ConvSpec(512, 3, 1, 0),                 # 15: 1x1
    ConvSpec(512, 1, 1, 0),                 # 16: 1x1
)

# Audio: (b, 1, 80, 16) mel window (mel bins x steps) -> (b, 512, 1, 1).
AUDIO_ENCODER_SPEC: tuple[ConvSpec, ...] = (
    ConvSpec(32, 3, 1, 1),                  # 0: 80x16
    ConvSpec(32, 3, 1, 1, residual=True),   # 1
    ConvSpec(32, 3, 1, 1, residual=True),   # 2
    ConvSpec(64, 3, (3, 1), 1),             # 3: 27x16
    ConvSpec(64, 3, 1, 1, residual=True),   # 4
    ConvSpec(64, 3, 1, 1, residual=True),   # 5
    ConvSpec(128, 3, 3, 1),                 # 6: 9x6
    ConvSpec(128, 3, 1, 1, residual=True),  # 7
    ConvSpec(128, 3, 1, 1, residual=True),  # 8
    ConvSpec(256, 3, (3, 2), 1),            # 9: 3x3
    ConvSpec(256, 3, 1, 1, residual=True),  # 10
    ConvSpec(256, 3, 1, 1, residual=True),  # 11
    ConvSpec(512, 3, 1, 0),                 # 12: 1x1
    ConvSpec(512, 1, 1, 0),                 # 13: 1x1
)


def _tower(cin: int, spec: tuple[ConvSpec, ...]) -> nn.Sequential:
    """Build an ``nn.Sequential`` of :class:`ConvBlock` from a spec table, threading the channel counts."""
    layers = []
    for row in spec:
        layers.append(ConvBlock(cin, row.cout, row.kernel_size, row.stride, row.padding, residual=row.residual))
        cin = row.cout
    return nn.Sequential(*layers)


def default_mel_steps(num_frames: int) -> int:
    """Audio window matching `num_frames` video frames at 25 fps: 16 mel steps (0.2 s) per 5 frames, and never
    below the 16 steps the audio tower needs."""
    return max(16, round(16 * num_frames / 5))


class SyncNetColor(nn.Module):
    """Wav2Lip's expert lip-sync discriminator on colour lower-half faces.

    ``num_frames=5`` is the released ``lipsync_expert.pth``; ``num_frames=16`` is the MARLIN generator's expert.
    Its weights differ only in the first convolution's input channels (3 * 16 = 48); its audio window covers
    the same 0.64 s as its frames (51 mel steps), and the audio tower's output, 1 x 7 instead of 1 x 1 for
    that width, is averaged into one embedding (for 16 steps the average is over one position: the
    released expert's exact computation).

    Args:
        num_frames: frames stacked along the channel axis of the face input.
        mel_steps: audio window in mel steps; default `default_mel_steps(num_frames)`.
    """

    embed_dim = 512

    def __init__(self, num_frames: int = 5, mel_steps: int | None = None) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        self.num_frames = num_frames
        self.mel_steps = mel_steps or default_mel_steps(num_frames)
        if self.mel_steps < 16:
            raise ValueError(f"the audio tower needs at least 16 mel steps, got {self.mel_steps}")
        self.face_encoder = _tower(3 * num_frames, FACE_ENCODER_SPEC)
        self.audio_encoder = _tower(1, AUDIO_ENCODER_SPEC)

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed a mel window and a stack of face crops.

        Args:
            audio: (b, 1, 80, mel_steps) float mel window (Wav2Lip's [-4, 4] mel scale).
            face: (b, 3 * num_frames, 48, 96) float lower-half faces in [0, 1], BGR, frame-major channels
                (frame 0's B, G, R, then frame 1's, ...).

        Returns:
            (audio_embedding, face_embedding), each (b, 512) and L2-normalised along dim 1.
        """
        face_embedding = self.face_encoder(face).flatten(1)    # b d 1 1 -> b d
        audio_embedding = self.audio_encoder(audio).mean(dim=(2, 3))   # b d 1 w -> b d
        return F.normalize(audio_embedding, p=2, dim=1), F.normalize(face_embedding, p=2, dim=1)

    @classmethod
    def from_file(cls, path: str | Path, num_frames: int = 5) -> "SyncNetColor":
        """Load a Wav2Lip expert checkpoint (``{"state_dict": ..., "optimizer": ..., ...}``) strictly.

        Args:
            path: ``lipsync_expert.pth`` or a checkpoint of the same layout (a leading ``module.`` is stripped).
            num_frames: frames per face stack of the checkpoint (5 for the released expert).

        Returns:
            the model in eval mode on the CPU.
        """
        return load_into(cls(num_frames=num_frames), path)


def sync_loss(audio_embedding: torch.Tensor, face_embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Wav2Lip's expert loss: binary cross-entropy of the cosine similarity.

    The reference (``color_syncnet_train.py``/``wav2lip_train.py`` ``cosine_loss``) feeds the raw cosine to
    ``nn.BCELoss`` with no clamp or rescaling. That is sound because both embeddings come out of a ReLU, so
    the cosine lies in [0, 1]; ``BCELoss`` itself bounds each log term at -100.

    Args:
        audio_embedding: (b, d) audio embeddings.
        face_embedding: (b, d) face embeddings.
        target: (b, 1) or (b,) float labels, 1 for in-sync pairs and 0 for off-sync pairs.

    Returns:
        scalar mean loss.
    """
    similarity = F.cosine_similarity(audio_embedding, face_embedding).unsqueeze(1)   # b -> b 1
    return F.binary_cross_entropy(similarity, target.reshape(similarity.shape).to(similarity.dtype))
