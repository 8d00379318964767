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
