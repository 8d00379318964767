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


def _window_weights(length: int) -> NDArray[np.float32]:
    # Triangular, positive at both ends: overlapping windows cross-fade and every frame has some weight.
    position = np.arange(length, dtype=np.float32)
    return np.minimum(position + 1, length - position)


class WindowedSynthesizer:
    """Runs a T-frame generator (e.g. `MarlinLipSync`) over a stream of frames with overlapping windows.

    Windows start every `stride` frames; the outputs of overlapping windows are cross-faded with triangular
    weights, so no seam appears where one window hands over to the next. Frames arrive in order through
    `push`; a run of consecutive faces is a segment (`end_segment` closes it: a frame without a face, or
    the end of the video). A segment shorter than T is padded with its last frame.

    Args:
        model: maps (b, t, 1, 80, 16) mels and (b, 6, t, s, s) faces to (b, 3, t, s, s), all BGR in [0, 1].
        device, dtype: where and in what precision it runs.
        stride: frames between window starts (default T / 2: every frame is seen by two windows).
        windows_per_call: windows batched into one model call; None: 1 on CPU (a 16-frame window already
            fills the cores, and each extra one adds its full-resolution activations: ViT-S peaked at
            7.3 GB with 4 and 2.4-2.5 GB with 1, and ran faster; benchmarks/marlin_generator_bench.py), 4 on
            accelerators.
    """

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype, stride: int | None = None,
                 windows_per_call: int | None = None) -> None:
        self.model = model.eval().to(device)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.device = device
        self.dtype = dtype
        self.window = int(model.num_frames)
        self.face_size = int(getattr(model.config, "face_size", 96))
        self.stride = stride or max(1, self.window // 2)
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"stride must be in [1, {self.window}], got {self.stride}")
        self.windows_per_call = windows_per_call or (1 if device.type == "cpu" else 4)
        self.weights = _window_weights(self.window)
        self._reset()

    def fresh(self) -> "WindowedSynthesizer":
        """A synthesizer sharing this one's model, with empty streaming state (one per video)."""
        return WindowedSynthesizer(self.model, self.device, self.dtype, self.stride, self.windows_per_call)

    def _reset(self) -> None:
        # Inputs are kept from `_input_base` on: enough history for the segment's last, end-aligned window.
        self._faces: list[NDArray[np.uint8]] = []
        self._mels: list[NDArray[np.float32]] = []
        self._input_base = 0
        # Weighted sums of outputs not yet final, from `_output_base` on.
        self._sums: list[NDArray[np.float32]] = []
        self._totals: list[float] = []
        self._output_base = 0
        self._next_start = 0          # segment index where the next regular window starts
        self._count = 0               # frames pushed into this segment

    def push(self, faces: NDArray[np.uint8], mels: NDArray[np.float32]) -> list[NDArray[np.uint8]]:
        """Add consecutive frames of the current segment; return the outputs that are now final, in order."""
        for face, mel in zip(faces, mels):
            self._faces.append(face)
            self._mels.append(mel)
            self._sums.append(np.zeros(face.shape, dtype=np.float32))
            self._totals.append(0.0)
            self._count += 1
        starts = []
        while self._next_start + self.window <= self._count:
            starts.append(self._next_start)
            self._next_start += self.stride
        self._run(starts)
        # Later regular windows start at or after `_next_start`: every frame before it is final.
        outputs = self._release(self._next_start)
        keep_from = max(0, min(self._next_start, self._count - self.window))
        del self._faces[: keep_from - self._input_base], self._mels[: keep_from - self._input_base]
        self._input_base = keep_from
        return outputs

    def end_segment(self) -> list[NDArray[np.uint8]]:
        """Finish the current segment and return every output still held."""
        if self._count == 0:
            return []
        covered_until = self._next_start - self.stride + self.window if self._next_start else 0
        if covered_until < self._count:
            self._run([max(0, self._count - self.window)])    # a last window, flush with the segment's end
        outputs = self._release(self._count)
        self._reset()
        return outputs

    def _run(self, starts: list[int]) -> None:
        for first in range(0, len(starts), self.windows_per_call):
            group = starts[first : first + self.windows_per_call]
            faces = np.stack([self._window(self._faces, start) for start in group])      # (b, t, h, w, 3)
            mels = np.stack([self._window(self._mels, start) for start in group])        # (b, t, 80, 16)
            generated = self._generate(faces, mels)
            for start, window in zip(group, generated):
                for offset in range(min(self.window, self._count - start)):
                    slot = start + offset - self._output_base
                    if slot >= 0:                       # earlier frames are already out
                        self._sums[slot] += self.weights[offset] * window[offset]
                        self._totals[slot] += float(self.weights[offset])

    def _window(self, items: list, start: int) -> NDArray:
        begin = start - self._input_base
        chosen = items[begin : begin + self.window]
        chosen = chosen + [chosen[-1]] * (self.window - len(chosen))   # pad a segment shorter than T
        return np.stack(chosen)

    @torch.inference_mode()
    def _generate(self, faces: NDArray[np.uint8], mels: NDArray[np.float32]) -> NDArray[np.float32]:
        face = torch.from_numpy(faces).to(self.device).permute(0, 4, 1, 2, 3).float().div_(255.0)  # (b, 3, t, h, w)
        masked = face.clone()
        masked[:, :, :, self.face_size // 2 :] = 0
        audio = torch.from_numpy(mels).to(self.device).unsqueeze(2)                               # (b, t, 1, 80, 16)
        with autocast(self.device, self.dtype):
            generated = self.model(audio, torch.cat((masked, face), dim=1))
        return generated.float().mul_(255.0).permute(0, 2, 3, 4, 1).cpu().numpy()               # (b, t, h, w, 3)

    def _release(self, until: int) -> list[NDArray[np.uint8]]:
        count = until - self._output_base
        outputs = [np.clip(np.rint(total_sum / total), 0, 255).astype(np.uint8)
                   for total_sum, total in zip(self._sums[:count], self._totals[:count])]
        del self._sums[:count], self._totals[:count]
        self._output_base = until
        return outputs


class FrameSynthesisStream:
    """Gives a per-frame synthesizer the streaming interface of `WindowedSynthesizer`."""

    def __init__(self, synthesizer: FaceSynthesizer) -> None:
        self.synthesizer = synthesizer
        self.face_size = synthesizer.face_size

    def push(self, faces: NDArray[np.uint8], mels: NDArray[np.float32]) -> list[NDArray[np.uint8]]:
        return list(self.synthesizer(faces, mels)) if len(faces) else []

    def end_segment(self) -> list[NDArray[np.uint8]]:
        return []
