"""Shared fixtures: the real media and the conformance vectors beside the project (../shared)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = Path(os.environ.get("LIPSYNC_SHARED", PROJECT_ROOT.parent / "shared"))

# Conformance vectors were produced with 2 threads; fewer threads also keeps CI predictable on 2 cores.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real videos, audio, photos and their reference annotations."""
    path = SHARED_ROOT / "data"
    if not path.is_dir():
        pytest.skip(f"{path} not found: the shared test media live beside the project")
    return path


@pytest.fixture(scope="session")
def conformance() -> Path:
    """../shared/conformance: reference key lists and vectors from the official implementations."""
    path = SHARED_ROOT / "conformance"
    if not path.is_dir():
        pytest.skip(f"{path} not found: the conformance vectors live beside the project")
    return path


@pytest.fixture(scope="session")
def reference_keys(conformance):
    """reference_keys("wav2lip_generator") -> ordered {state_dict_key: shape tuple}."""

    def load(name: str) -> dict[str, tuple[int, ...]]:
        with open(conformance / "keys" / f"{name}.json") as handle:
            return {key: tuple(shape) for key, shape in json.load(handle).items()}

    return load


@pytest.fixture(scope="session")
def seeded_state_dict(conformance, reference_keys):
    """seeded_state_dict("wav2lip_generator") -> the deterministic weights the vectors were made with."""
    spec = importlib.util.spec_from_file_location("seeded_weights", conformance / "seeded_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def build(name: str) -> dict[str, torch.Tensor]:
        return module.seeded_state_dict(reference_keys(name))

    return build


@pytest.fixture(scope="session")
def vectors(conformance):
    """vectors("wav2lip_mel") -> the npz of expected inputs and outputs."""

    def load(name: str):
        return np.load(conformance / "vectors" / f"{name}.npz")

    return load


def annotation(shared_data: Path, stem: str):
    """The reference face annotations of one shared media file (see data/annotations/README.md)."""
    return np.load(shared_data / "annotations" / f"{stem}.npz")


@pytest.fixture(scope="session")
def seeded_wav2lip_checkpoint(seeded_state_dict, tmp_path_factory) -> Path:
    """The seeded generator weights in the official Wav2Lip container format (with DataParallel prefixes)."""
    state = seeded_state_dict("wav2lip_generator")
    path = tmp_path_factory.mktemp("checkpoints") / "seeded_wav2lip.pth"
    torch.save({"state_dict": {f"module.{key}": value for key, value in state.items()}, "optimizer": {},
                "global_step": 0, "global_epoch": 0}, path)
    return path


def face_boxes(shared_data: Path, stem: str) -> list[list[float] | None]:
    """The reference box of the top-scoring face per frame (None where the frame has no face)."""
    reference = annotation(shared_data, stem)
    boxes: list[list[float] | None] = [None] * int(reference["n_frames"])
    for row in np.flatnonzero(reference["face_idx"] == 0):
        boxes[int(reference["face_frame"][row])] = [float(value) for value in reference["face_box"][row]]
    return boxes


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples in [-1, 1] as 16-bit PCM WAV (via PyAV, as users' files would be)."""
    import av

    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def probe(path: Path) -> dict:
    """Decode an output file fully: frame count, timestamps, size, rate, audio duration."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {"width": video.codec_context.width, "height": video.codec_context.height,
                "rate": video.base_rate, "average_rate": video.average_rate, "has_audio": bool(container.streams.audio)}
        times = [frame.time for frame in container.decode(video)]
    info["num_frames"] = len(times)
    info["times"] = times
    info["video_duration"] = times[-1] + 1 / float(info["rate"]) if times else 0.0
    if info["has_audio"]:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            # The container's duration: decoders return the last AAC frame whole (1024 samples), players
            # stop where the track's timing says it ends.
            info["audio_duration"] = float(stream.duration * stream.time_base)
            info["audio_peak"] = max(float(np.abs(frame.to_ndarray()).max()) for frame in container.decode(stream))
    return info
