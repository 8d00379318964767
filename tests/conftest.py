"""Shared fixtures: the real media and the conformance vectors beside the project (../shared)."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections.abc import Iterator
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
def seeded_weights(conformance):
    """The conformance folder's `seeded_weights` module (deterministic weights from key names)."""
    spec = importlib.util.spec_from_file_location("seeded_weights", conformance / "seeded_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def seeded_state_dict(seeded_weights, reference_keys):
    """seeded_state_dict("wav2lip_generator") -> the deterministic weights the vectors were made with."""

    def build(name: str) -> dict[str, torch.Tensor]:
        return seeded_weights.seeded_state_dict(reference_keys(name))

    return build


@pytest.fixture(scope="session")
def syncnet_v2(seeded_state_dict):
    """syncnet_python's SyncNet with the seeded weights, in eval mode (tests that switch modes restore it)."""
    from syncnet import SyncNetV2

    model = SyncNetV2()
    model.load_state_dict(seeded_state_dict("syncnet_v2"), strict=True)
    return model.eval()


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


TRAINING_STEMS = ("retalk_face3_25fps", "retalk_face5_25fps", "pcavs_00015_224_25fps", "liveportrait_d20_25fps")


@pytest.fixture(scope="session")
def training_clips(shared_data, tmp_path_factory) -> Path:
    """Four real talking-head videos preprocessed once per session (reference boxes and 68-point landmarks
    from the shared annotations stand in for the detector and landmarker)."""
    from lipsync.train.preprocess import preprocess
    from oracles import AnnotationLandmarkerFactory, AnnotationTrackerFactory

    videos = tmp_path_factory.mktemp("training_videos")
    for stem in TRAINING_STEMS:
        (videos / f"{stem}.mp4").symlink_to(shared_data / "video" / f"{stem}.mp4")
    out = tmp_path_factory.mktemp("training_clips")
    annotations = shared_data / "annotations"
    counts = preprocess(videos, out, AnnotationTrackerFactory(annotations), AnnotationLandmarkerFactory(annotations))
    assert counts["done"] == len(TRAINING_STEMS)
    return out


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: multi-threaded CPU kernels may sum in another order from run to run, so
    bit-exact comparisons (resume) need it; tiny models also run faster without a second thread to wait on."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_torchrun(script: Path, *args: str, port: int, processes: int = 2):
    """Run `script` under torchrun on this machine's CPU (gloo), one thread per process."""
    import subprocess
    import sys

    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                           "--master-port", str(port), str(script), *args],
                          capture_output=True, text=True, timeout=900, env=environment)


@pytest.fixture(scope="session")
def seeded_s3fd_home(tmp_path_factory, seeded_weights):
    """A TORCH_HOME whose hub cache holds seeded S3FD weights under face-alignment's file name."""
    from face_alignment.detection.sfd.net_s3fd import s3fd

    from lipsync.face.detect import S3FD_FILE

    shapes = {key: tuple(value.shape) for key, value in s3fd().state_dict().items()}
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(seeded_weights.seeded_state_dict(shapes), home / "hub" / "checkpoints" / S3FD_FILE)
    return home
