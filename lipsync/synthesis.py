"""Adapters between the pipeline's frames and a generator network: uint8 face crops + mel windows in,
uint8 faces out. The pipeline never needs to know which generator it drives.

Axis legend: n faces, h/w face size, c channels (BGR), m mel bins, s mel steps.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from lipsync.utils.device import autocast


class FaceSynthesizer(Protocol):
    """Generates lip-synced faces for consecutive frames."""

    face_size: int

    def __call__(self, faces: NDArray[np.uint8], mels: NDArray[np.float32]) -> NDArray[np.uint8]:
        """Args: faces (n, h, w, 3) uint8 BGR crops; mels (n, 80, 16). Returns (n, h, w, 3) uint8 BGR."""
        ...


class Wav2LipSynthesizer:
    """Runs the classic generator as Wav2Lip's `inference.py` feeds it: each frame is its own reference.

    Args:
        model: a `Wav2Lip` generator (moved to `device` and set to eval here).
        device: where it runs.
        dtype: torch.float32, or torch.bfloat16 for autocast.
    """

    face_size = 96

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self.dtype = dtype
        # channels_last lets oneDNN / cuDNN pick their fastest convolution kernels.
        self.model = model.eval().to(device=device, memory_format=torch.channels_last)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.inference_mode()
    def __call__(self, faces: NDArray[np.uint8], mels: NDArray[np.float32]) -> NDArray[np.uint8]:
        face = torch.from_numpy(faces).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        masked = face.clone()
        masked[:, :, self.face_size // 2 :] = 0       # the generator must draw the mouth from audio alone
        face_input = torch.cat((masked, face), dim=1).contiguous(memory_format=torch.channels_last)
        audio_input = torch.from_numpy(mels).to(self.device).unsqueeze(1)     # (n, 1, 80, 16)
        with autocast(self.device, self.dtype):
            generated = self.model(audio_input, face_input)
        generated = generated.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return generated.permute(0, 2, 3, 1).contiguous().cpu().numpy()
