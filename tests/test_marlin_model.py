"""MARLIN model: official key layout, conformance vectors, checkpoint I/O (tolerances: conformance README)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from marlin_encoder import CheckpointMismatchError, Marlin, MarlinConfig, PatchEmbed3d, patchify, select_tokens
from marlin_encoder.config import MARLIN_CONFIGS
from marlin_encoder.layers import sincos_table

FEATURE_ATOL = 5e-4  # features_seq, features_pooled, encoder_visible, reconstruction
MSE_ATOL = 1e-5  # rec_mse

RELEASED = [
    ("marlin_vit_small_ytf", "marlin_vit_small"),
    ("marlin_vit_base_ytf", "marlin_vit_base"),
    ("marlin_vit_large_ytf", "marlin_vit_large"),
]


@pytest.fixture(scope="module")
def tiny_config(conformance) -> dict:
    return json.loads((conformance / "vectors" / "marlin_tiny.config.json").read_text())


@pytest.fixture(scope="module")
def tiny_vectors(vectors):
    return vectors("marlin_tiny")


@pytest.fixture(scope="module")
def tiny_full(conformance, tiny_config) -> Marlin:
    return Marlin.from_file(conformance / "vectors" / "marlin_tiny.full.pt", config=tiny_config)


@pytest.fixture(scope="module")
def tiny_encoder(conformance, tiny_config) -> Marlin:
    return Marlin.from_file(conformance / "vectors" / "marlin_tiny.encoder.pt", config=tiny_config)


def _max_error(mine: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(mine.detach().numpy() - reference).max())


# Architecture ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,key_file", RELEASED)
@pytest.mark.parametrize("part", ["encoder", "full"])
def test_released_keys_and_shapes(reference_keys, name, key_file, part):
    with torch.device("meta"):  # shapes only: ViT-L would otherwise allocate and initialise 1.2 GB
        model = Marlin.from_name(name, as_feature_extractor=part == "encoder")
    mine = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    assert mine == list(reference_keys(f"{key_file}_{part}").items())


def test_released_presets_match_reference_configs():
    # src/marlin_pytorch/config.py and config/pretrain/marlin_vit_*.yaml (decoder heads).
    expected = {
        "marlin_vit_small_ytf": (384, 12, 6, 192, 4, 3),
        "marlin_vit_base_ytf": (768, 12, 12, 384, 4, 6),
        "marlin_vit_large_ytf": (1024, 24, 16, 512, 12, 8),
    }
    for name, dims in expected.items():
        cfg = MARLIN_CONFIGS[name]
        assert (cfg.encoder_embed_dim, cfg.encoder_depth, cfg.encoder_num_heads,
                cfg.decoder_embed_dim, cfg.decoder_depth, cfg.decoder_num_heads) == dims
        assert (cfg.img_size, cfg.patch_size, cfg.n_frames, cfg.tubelet_size, cfg.num_patches) == (224, 16, 16, 2, 1568)
        assert cfg.qkv_bias and cfg.mlp_ratio == 4.0 and cfg.init_values == 0.0


def test_tiny_keys_and_config_from_json(reference_keys, tiny_config):
    cfg = MarlinConfig.from_dict(tiny_config)
    assert cfg.to_dict() == tiny_config
    assert (cfg.num_patches, cfg.decoder_num_patches, cfg.patch_dim) == (128, 128, 1536)
    for part, as_feature_extractor in (("encoder", True), ("full", False)):
        model = Marlin.from_config(tiny_config, as_feature_extractor=as_feature_extractor)
        mine = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
        assert mine == list(reference_keys(f"marlin_tiny_{part}").items())


def test_config_rejects_unknown_and_mistyped_fields(tiny_config):
    with pytest.raises(ValueError, match="embed_dim"):
        MarlinConfig.from_dict({**tiny_config, "embed_dim": 96})
    with pytest.raises(ValueError, match="encoder_depth"):
        MarlinConfig.from_dict({**tiny_config, "encoder_depth": "2"})
    with pytest.raises(ValueError, match="norm_layer"):
        MarlinConfig.from_dict({**tiny_config, "norm_layer": "BatchNorm"})
    with pytest.raises(ValueError, match="divisible"):
        MarlinConfig.from_dict({**tiny_config, "encoder_num_heads": 5})


def test_from_name_unknown():
    with pytest.raises(KeyError, match="marlin_vit_base_ytf"):
        Marlin.from_name("marlin_vit_huge_ytf")


# Conformance vectors -----------------------------------------------------------------------------------------
def test_features_match_official(tiny_encoder, tiny_vectors):
    clip = torch.from_numpy(tiny_vectors["clip"])
    sequence = tiny_encoder.extract_features(clip, keep_seq=True)
    pooled = tiny_encoder.extract_features(clip, keep_seq=False)
    assert sequence.shape == (2, 128, 96) and pooled.shape == (2, 96)
    assert _max_error(sequence, tiny_vectors["features_seq"]) <= FEATURE_ATOL
    assert _max_error(pooled, tiny_vectors["features_pooled"]) <= FEATURE_ATOL
    # forward_features without a mask is the generator's entry point: the same normalised sequence.
    with torch.no_grad():
        assert torch.equal(tiny_encoder.forward_features(clip), sequence)


def test_encoder_visible_matches_official(tiny_encoder, tiny_vectors):
    clip = torch.from_numpy(tiny_vectors["clip"])
    mask = torch.from_numpy(tiny_vectors["visible_mask"])
    with torch.no_grad():
        visible = tiny_encoder.encoder(clip, mask)
    assert visible.shape == (2, 32, 96)
    assert _max_error(visible, tiny_vectors["encoder_visible"]) <= FEATURE_ATOL


def test_reconstruction_and_targets_match_official(tiny_full, tiny_vectors):
    clip = torch.from_numpy(tiny_vectors["clip"])
    mask = torch.from_numpy(tiny_vectors["visible_mask"])
    with torch.no_grad():
        reconstruction = tiny_full(clip, mask)
    assert reconstruction.shape == (2, 96, 1536)
    assert _max_error(reconstruction, tiny_vectors["reconstruction"]) <= FEATURE_ATOL

    masked_index = torch.arange(128).expand(2, -1)[~mask].view(2, -1)
    assert np.array_equal(masked_index.numpy(), tiny_vectors["masked_index"])
    targets = patchify(clip, patch_size=16, tubelet_size=2)
    assert targets.shape == (2, 128, 1536)
    assert np.array_equal(torch.gather(targets, 1, masked_index[..., None].expand(-1, -1, 1536)).numpy(),
                          tiny_vectors["target_patches"])
    assert np.array_equal(select_tokens(targets, ~mask).numpy(), tiny_vectors["target_patches"])
    rec_mse = torch.nn.functional.mse_loss(reconstruction, torch.from_numpy(tiny_vectors["target_patches"]))
    assert abs(rec_mse.item() - float(tiny_vectors["rec_mse"])) <= MSE_ATOL


def test_bf16_autocast_within_documented_bound(tiny_encoder, tiny_vectors):
    # bf16 cannot meet the float32 tolerance (README); we hold it to 2 % of the output's magnitude.
    clip = torch.from_numpy(tiny_vectors["clip"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sequence = tiny_encoder.extract_features(clip, keep_seq=True).float()
    reference = tiny_vectors["features_seq"]
    assert _max_error(sequence, reference) <= 2e-2 * np.abs(reference).max()


def test_rebuild_from_seeded_weights_is_bit_exact(conformance, seeded_state_dict, tiny_config):
    model = Marlin.from_config(tiny_config, as_feature_extractor=False)
    state_dict = seeded_state_dict("marlin_tiny_full")
    for key in ("encoder.pos_embedding.emb", "decoder.pos_embedding.emb"):
        state_dict[key] = model.state_dict()[key]  # the model's own fixed sin-cos tables
    model.load_state_dict(state_dict, strict=True)
    official = torch.load(conformance / "vectors" / "marlin_tiny.full.pt", map_location="cpu", weights_only=True)
    assert list(model.state_dict()) == list(official)
    for key, value in model.state_dict().items():
        assert torch.equal(value, official[key]), key
    encoder_file = torch.load(conformance / "vectors" / "marlin_tiny.encoder.pt", map_location="cpu", weights_only=True)
    assert list(encoder_file) == [key for key in official if key.startswith("encoder.")]


def test_sincos_table_rows():
    table = sincos_table(1568, 768)
    assert table.dtype == torch.float32
    assert torch.equal(table[0], torch.tensor([0.0, 1.0] * 384))
    position, column = 37, 10  # angle = pos / 10000^(2·5/768)
    assert table[position, column].item() == pytest.approx(np.sin(position / 10000 ** (10 / 768)), abs=1e-5)
    assert table[position, column + 1].item() == pytest.approx(np.cos(position / 10000 ** (10 / 768)), abs=1e-5)


# Checkpoint I/O ------------------------------------------------------------------------------------------------
def test_safetensors_round_trip(tmp_path, tiny_full, tiny_vectors):
    path = tmp_path / "tiny.safetensors"
    tiny_full.save_pretrained(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["config"]) == tiny_full.config.to_dict()
    assert json.loads(metadata["as_feature_extractor"]) is False
    loaded = Marlin.from_file(path)
    assert loaded.config == tiny_full.config and not loaded.as_feature_extractor
    for key, value in tiny_full.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    encoder_only = Marlin.from_file(path, as_feature_extractor=True)
    assert list(encoder_only.state_dict()) == [key for key in tiny_full.state_dict() if key.startswith("encoder.")]
    clip = torch.from_numpy(tiny_vectors["clip"])
    assert torch.equal(encoder_only.extract_features(clip), tiny_full.extract_features(clip))


def test_wrong_shape_and_extra_key_are_named(tmp_path, conformance, tiny_config):
    state_dict = torch.load(conformance / "vectors" / "marlin_tiny.full.pt", map_location="cpu", weights_only=True)
    bad_shape = dict(state_dict)
    bad_shape["encoder.blocks.1.attn.proj.weight"] = torch.zeros(96, 95)
    torch.save(bad_shape, tmp_path / "bad_shape.full.pt")
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.blocks\.1\.attn\.proj\.weight \(96, 95\)") as error:
        Marlin.from_file(tmp_path / "bad_shape.full.pt", config=tiny_config)
    assert "\n" not in str(error.value)

    extra = {**state_dict, "encoder.blocks.0.attn.k_bias": torch.zeros(96)}
    torch.save(extra, tmp_path / "extra.full.pt")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(1\) \[encoder\.blocks\.0\.attn\.k_bias\]"):
        Marlin.from_file(tmp_path / "extra.full.pt", config=tiny_config)

    missing = {key: value for key, value in state_dict.items() if key != "decoder.mask_token"}
    torch.save(missing, tmp_path / "missing.full.pt")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(\d+\) \[decoder\.mask_token"):
        Marlin.from_file(tmp_path / "missing.full.pt", config=tiny_config)


def test_leading_prefixes_only_and_training_checkpoints(tmp_path, conformance, tiny_config, tiny_full):
    state_dict = torch.load(conformance / "vectors" / "marlin_tiny.full.pt", map_location="cpu", weights_only=True)
    wrapped = {"state_dict": {f"module._orig_mod.{key}": value for key, value in state_dict.items()},
               "global_step": 7}
    wrapped["state_dict"]["module.discriminator.layers.0.linear.weight"] = torch.zeros(192, 1536)
    torch.save(wrapped, tmp_path / "training.ckpt")
    loaded = Marlin.from_file(tmp_path / "training.ckpt", config=tiny_config)
    for key, value in tiny_full.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)

    # An inner "module." is a real name, never rewritten.
    inner = {**state_dict, "encoder.module.weight": torch.zeros(1)}
    torch.save(inner, tmp_path / "inner.full.pt")
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.module\.weight"):
        Marlin.from_file(tmp_path / "inner.full.pt", config=tiny_config)


def test_from_file_needs_a_known_architecture(conformance):
    with pytest.raises(ValueError, match="pass config="):
        Marlin.from_file(conformance / "vectors" / "marlin_tiny.full.pt")


def test_encoder_file_cannot_make_a_full_model(conformance, tiny_config):
    with pytest.raises(ValueError, match="only an encoder"):
        Marlin.from_file(conformance / "vectors" / "marlin_tiny.encoder.pt", config=tiny_config,
                         as_feature_extractor=False)


def test_from_pretrained_missing_file_hints_download(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"lipsync download marlin_vit_base_ytf") as error:
        Marlin.from_pretrained("marlin_vit_base_ytf")
    assert str(tmp_path / "checkpoints") in str(error.value)


def test_from_pretrained_reads_the_cache(tmp_path, monkeypatch, tiny_full):
    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    tiny_full.save_pretrained(tmp_path / "checkpoints" / "tiny_test.safetensors")
    loaded = Marlin.from_pretrained("tiny_test")
    assert loaded.as_feature_extractor and loaded.config == tiny_full.config


# Behaviour -----------------------------------------------------------------------------------------------
def test_full_sequence_at_224_has_1568_tokens():
    cfg = MarlinConfig(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2)
    model = Marlin.from_config(cfg).eval()
    clip = torch.rand(1, 3, 16, 224, 224)
    tokens = model.forward_features(clip)
    assert tokens.shape == (1, 1568, 32) and tokens.requires_grad


def test_intermediate_block_outputs(tiny_encoder, tiny_vectors):
    clip = torch.from_numpy(tiny_vectors["clip"])
    with torch.no_grad():
        first, last = tiny_encoder.encoder.forward_intermediates(clip, (0, -1))
        torch.testing.assert_close(tiny_encoder.encoder.norm(last), tiny_encoder.forward_features(clip), atol=0, rtol=0)
    assert first.shape == last.shape == (2, 128, 96) and not torch.equal(first, last)
    with pytest.raises(IndexError):
        tiny_encoder.encoder.forward_intermediates(clip, (2,))


def test_decoder_is_built_for_16_frames(tiny_config):
    # The official decoder ignores n_frames (README "Why n_frames is 16"): with 4 frames the encoder works
    # and the full forward fails; ours fails with a message instead of an IndexError.
    model = Marlin.from_config({**tiny_config, "n_frames": 4}, as_feature_extractor=False)
    assert model.encoder.pos_embedding.emb.shape[1] == 32 and model.decoder.pos_embedding.emb.shape[1] == 128
    clip, mask = torch.rand(1, 3, 4, 64, 64), torch.arange(32)[None] < 8
    assert model.forward_features(clip, mask).shape == (1, 8, 96)
    with pytest.raises(ValueError, match="16 frames"):
        model(clip, mask)


def test_unequal_visible_counts_are_rejected(tiny_full, tiny_vectors):
    mask = torch.from_numpy(tiny_vectors["visible_mask"]).clone()
    mask[0, (~mask[0]).nonzero()[0]] = True
    with pytest.raises(ValueError, match="same number"):
        tiny_full(torch.from_numpy(tiny_vectors["clip"]), mask)


def test_feature_extractor_model_has_no_reconstruction(tiny_encoder, tiny_vectors):
    with pytest.raises(RuntimeError, match="feature extractor"):
        tiny_encoder(torch.from_numpy(tiny_vectors["clip"]), torch.from_numpy(tiny_vectors["visible_mask"]))


def test_six_channel_patch_embedding_starts_as_the_rgb_one(tiny_encoder, tiny_vectors):
    embedding = tiny_encoder.encoder.patch_embedding
    assert isinstance(embedding, PatchEmbed3d) and embedding.in_channels == 3
    wide = embedding.with_in_channels(6)
    clip = torch.from_numpy(tiny_vectors["clip"])
    with torch.no_grad():
        expected = embedding(clip)
        got = wide(torch.cat([clip, torch.rand_like(clip)], dim=1))
    assert wide.in_channels == 6 and wide.projection.weight.shape == (96, 6, 2, 16, 16)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_patch_embedding_equals_conv3d(tiny_encoder, tiny_vectors):
    embedding = tiny_encoder.encoder.patch_embedding
    clip = torch.from_numpy(tiny_vectors["clip"])
    with torch.no_grad():
        conv = embedding.projection(clip).flatten(2).transpose(1, 2)  # b d nt nh nw -> b (nt nh nw) d
        torch.testing.assert_close(embedding(clip), conv, atol=1e-5, rtol=0)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config, tiny_vectors):
    torch.manual_seed(0)
    model = Marlin.from_config(tiny_config, as_feature_extractor=False).train()
    clip = torch.from_numpy(tiny_vectors["clip"])
    mask = torch.from_numpy(tiny_vectors["visible_mask"])
    gradients = []
    for enabled in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enabled)
        model(clip, mask).square().mean().backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, atol=1e-6, rtol=1e-5, msg=name)
    assert model.encoder.pos_embedding.emb.grad is None  # fixed table, never trained
