"""Checkpoint loading in every supported container, strictness, safety, and verified downloads."""
from __future__ import annotations

import hashlib
import http.server
import pickle
import re
import threading
import warnings
from pathlib import Path

import pytest
import torch

from lipsync.errors import LipSyncError
from lipsync.generators import load_generator
from lipsync.models import Wav2Lip
from lipsync.weights import (
    CheckpointEntry,
    download,
    load_into,
    load_manifest,
    load_state_dict,
    resolve_checkpoint,
    save_safetensors,
    strip_prefixes,
)


@pytest.fixture(scope="module")
def seeded(seeded_state_dict):
    return seeded_state_dict("wav2lip_generator")


def _assert_loads(path: Path, seeded: dict) -> None:
    model = Wav2Lip()
    load_into(model, load_state_dict(path), what=str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, seeded[key]), key


def test_official_container_with_module_prefix(seeded_wav2lip_checkpoint, seeded):
    _assert_loads(seeded_wav2lip_checkpoint, seeded)


def test_bare_state_dict(tmp_path, seeded):
    torch.save(seeded, tmp_path / "bare.pth")
    _assert_loads(tmp_path / "bare.pth", seeded)


def test_torchscript_archive(tmp_path, seeded):
    model = Wav2Lip()
    model.load_state_dict(seeded)
    # The newer official release (Wav2Lip-SD-*.pt) is a TorchScript archive of this kind.
    example = (torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96))
    with warnings.catch_warnings():   # torch marks tracing deprecated; the archives stay loadable
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.trace(model.eval(), example)
    scripted.save(str(tmp_path / "scripted.pt"))
    _assert_loads(tmp_path / "scripted.pt", seeded)


def test_our_safetensors(tmp_path, seeded):
    save_safetensors(tmp_path / "ours.safetensors", seeded, {"arch": "wav2lip", "config": {"a": 1}})
    _assert_loads(tmp_path / "ours.safetensors", seeded)


def test_generator_from_a_half_precision_checkpoint_runs_in_fp32(tmp_path, seeded):
    # load_generator builds on the meta device and adopts the loaded tensors; fp16 ones must be widened.
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in seeded.items()}, tmp_path / "half.pth")
    generator = load_generator("wav2lip", tmp_path / "half.pth")
    state = generator.state_dict()
    assert all(value.dtype == torch.float32 for value in state.values() if value.is_floating_point())
    assert not any(value.is_meta for value in state.values())
    key = "face_encoder_blocks.0.0.conv_block.0.weight"
    assert torch.equal(state[key], seeded[key].half().float())


def test_prefixes_are_stripped_only_at_the_start():
    stripped = strip_prefixes({"module._orig_mod.a.module.b": torch.zeros(1), "x.module.y": torch.zeros(1)})
    assert set(stripped) == {"a.module.b", "x.module.y"}


def test_wrong_checkpoint_names_the_keys(tmp_path, seeded_state_dict):
    torch.save(seeded_state_dict("wav2lip_disc_qual"), tmp_path / "disc.pth")
    with pytest.raises(LipSyncError) as caught:
        load_into(Wav2Lip(), load_state_dict(tmp_path / "disc.pth"), what="disc.pth")
    message = str(caught.value)
    assert "\n" not in message
    assert "missing keys (326)" in message and "face_encoder_blocks.0.0.conv_block.1.weight" in message
    assert "wrong shapes" in message and "face_encoder_blocks.0.0.conv_block.0.weight" in message


def test_code_in_a_pickle_is_never_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"state_dict": Payload()}, handle)
    with pytest.raises(LipSyncError, match="cannot read checkpoint"):
        load_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_garbage_and_non_checkpoints_are_one_line_errors(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"\x00garbage" * 50)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pth")
    for name in ("garbage.pth", "list.pth"):
        with pytest.raises(LipSyncError) as caught:
            load_state_dict(tmp_path / name)
        assert "\n" not in str(caught.value)


def test_manifest_entries_are_complete():
    entries = load_manifest()
    required = {"wav2lip", "wav2lip_gan", "lipsync_expert", "s3fd", "syncnet_v2", "marlin_vit_small_ytf",
                "marlin_vit_base_ytf", "marlin_vit_large_ytf", "fid_inception"}
    assert required <= set(entries)
    for entry in entries.values():
        assert entry.urls and all(url.startswith("https://") for url in entry.urls), entry.name
        assert entry.sha256 == "" or re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.name
        assert entry.licence and entry.source and entry.architecture and entry.format
    # torch hub names carry the first hex digits of the sha256: the manifest must agree with them.
    assert entries["s3fd"].sha256.startswith("619a316812")
    assert entries["fid_inception"].sha256.startswith("6726825d")


def test_named_checkpoint_not_downloaded_gives_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path))
    with pytest.raises(LipSyncError, match="lipsync download wav2lip_gan"):
        resolve_checkpoint("wav2lip_gan")


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    served_ranges: list = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        start = 0
        header = self.headers.get("Range")
        if header:
            start = int(header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        type(self).served_ranges.append(start)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def http_server():
    _RangeHandler.payload = bytes(range(256)) * 4096
    _RangeHandler.served_ranges = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/weights.bin"
    server.shutdown()


def _entry(url: str, sha256: str, size: int) -> CheckpointEntry:
    return CheckpointEntry(name="test", file="weights.bin", urls=(url,), sha256=sha256, bytes=size,
                           licence="test", source="test", architecture="test", format="bare")


def test_download_resumes_and_verifies(http_server, monkeypatch, tmp_path):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path))
    payload = _RangeHandler.payload
    entry = _entry(http_server, hashlib.sha256(payload).hexdigest(), len(payload))
    partial = entry.path.with_name("weights.bin.download")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(payload[:300_000])          # an interrupted earlier download
    path = download(entry)
    assert path.read_bytes() == payload
    assert _RangeHandler.served_ranges == [300_000]  # only the missing tail was fetched
    assert not partial.exists()


def test_download_rejects_a_wrong_hash(http_server, monkeypatch, tmp_path):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path))
    entry = _entry(http_server, "0" * 64, len(_RangeHandler.payload))
    with pytest.raises(LipSyncError, match="does not match"):
        download(entry)
    assert not entry.path.exists()


def test_download_offline_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path))
    entry = _entry("http://127.0.0.1:9/nothing-listens-here", "0" * 64, 10)
    with pytest.raises(LipSyncError, match="could not download test") as caught:
        download(entry, timeout=2)
    assert "\n" not in str(caught.value)


def test_unverified_entries_need_consent(http_server, monkeypatch, tmp_path):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path))
    entry = _entry(http_server, "", 0)
    with pytest.raises(LipSyncError, match="--allow-unverified"):
        download(entry)
    assert download(entry, allow_unverified=True).read_bytes() == _RangeHandler.payload
