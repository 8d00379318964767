"""MARLIN pretraining objectives: MAE reconstruction and WGAN critic/generator losses on the tiny model."""
from __future__ import annotations

import json

import pytest
import torch

from marlin_encoder import Marlin, filter_marlin_checkpoint
from marlin_encoder.config import MarlinConfig
from marlin_encoder.pretrain import (
    PatchDiscriminator,
    PretrainLossConfig,
    discriminator_loss,
    discriminator_objective,
    generator_adversarial_loss,
    generator_objective,
    gradient_penalty,
    masked_patch_targets,
    reconstruction_loss,
)


@pytest.fixture(scope="module")
def tiny_config(conformance) -> MarlinConfig:
    return MarlinConfig.from_dict(json.loads((conformance / "vectors" / "marlin_tiny.config.json").read_text()))


@pytest.fixture(scope="module")
def tiny_vectors(vectors):
    return vectors("marlin_tiny")


def test_reconstruction_loss_matches_official_rec_mse(tiny_vectors):
    clip = torch.from_numpy(tiny_vectors["clip"])
    mask = torch.from_numpy(tiny_vectors["visible_mask"])
    targets = masked_patch_targets(clip, mask, patch_size=16, tubelet_size=2)
    assert torch.equal(targets, torch.from_numpy(tiny_vectors["target_patches"]))
    loss = reconstruction_loss(torch.from_numpy(tiny_vectors["reconstruction"]), targets)
    assert abs(loss.item() - float(tiny_vectors["rec_mse"])) <= 1e-5


def test_released_loss_settings():
    cfg = PretrainLossConfig()
    assert (cfg.adv_weight, cfg.gp_weight, cfg.d_steps, cfg.g_steps) == (0.01, 0.0, 1, 1)


def test_discriminator_layout_matches_reference_keys(tiny_config):
    critic = PatchDiscriminator.from_config(tiny_config)
    shapes = {key: tuple(value.shape) for key, value in critic.state_dict().items()}
    # model/marlin.py: MLP([patch·patch·3·tubelet, int(decoder_embed_dim·mlp_ratio), 1], LeakyReLU)
    assert shapes == {
        "layers.0.linear.weight": (192, 1536),
        "layers.0.linear.bias": (192,),
        "layers.1.linear.weight": (1, 192),
        "layers.1.linear.bias": (1,),
    }
    assert critic(torch.zeros(2, 96, 1536)).shape == (2, 96)


def test_wgan_loss_signs_and_gradients():
    real = torch.tensor([2.0, 3.0])
    fake = torch.tensor([-1.0, 0.0], requires_grad=True)
    loss = discriminator_loss(real, fake)
    assert loss.item() == pytest.approx(-3.0)  # critic separates well -> negative loss
    loss.backward()
    assert torch.allclose(fake.grad, torch.full((2,), 0.5))  # the critic lowers fake scores

    fake = torch.tensor([-1.0, 0.0], requires_grad=True)
    generator_loss = generator_adversarial_loss(fake)
    assert generator_loss.item() == pytest.approx(0.5)
    generator_loss.backward()
    assert torch.allclose(fake.grad, torch.full((2,), -0.5))  # the generator raises fake scores


def test_one_adversarial_round_on_the_tiny_model(tiny_config, tiny_vectors):
    torch.manual_seed(0)
    model = Marlin(tiny_config, as_feature_extractor=False).train()
    critic = PatchDiscriminator.from_config(tiny_config)
    clip = torch.from_numpy(tiny_vectors["clip"])
    mask = torch.from_numpy(tiny_vectors["visible_mask"])
    targets = masked_patch_targets(clip, mask, 16, 2)

    # Critic step: descending its loss widens the real-fake score gap.
    losses = PretrainLossConfig(gp_weight=10.0)
    critic_optimizer = torch.optim.SGD(critic.parameters(), lr=1e-2)
    prediction = model(clip, mask)
    result = discriminator_objective(prediction, targets, critic, losses, generator=torch.Generator().manual_seed(0))
    assert set(result) == {"loss", "d_loss", "gp"} and all(torch.isfinite(v) for v in result.values())
    assert result["gp"] >= 0
    result["loss"].backward()
    assert all(p.grad is None for p in model.parameters())  # reconstructions were detached
    assert all(torch.isfinite(p.grad).all() for p in critic.parameters())
    assert all(critic.layers[i].linear.weight.grad.abs().sum() > 0 for i in (0, 1))
    # The output bias shifts real and fake scores alike, so E[D(fake)] − E[D(real)] cannot depend on it.
    assert critic.layers[1].linear.bias.grad.abs().item() < 1e-6
    before = result["d_loss"].item()
    critic_optimizer.step()
    with torch.no_grad():
        after = discriminator_loss(critic(targets), critic(prediction)).item()
    assert after < before

    # Generator step: reconstruction + 0.01 · adversarial, gradients reach the encoder, not the critic's use.
    critic.zero_grad()
    result = generator_objective(model(clip, mask), targets, critic, PretrainLossConfig())
    assert set(result) == {"loss", "rec_loss", "adv_loss"}
    assert torch.isfinite(result["loss"]) and result["rec_loss"] > 0
    assert result["loss"].item() == pytest.approx(result["rec_loss"].item() + result["adv_loss"].item(), abs=1e-6)
    result["loss"].backward()
    encoder_gradient = model.encoder.blocks[0].attn.qkv.weight.grad
    assert encoder_gradient is not None and torch.isfinite(encoder_gradient).all() and encoder_gradient.abs().sum() > 0
    assert model.encoder.pos_embedding.emb.grad is None


def test_gradient_penalty_is_zero_for_a_unit_slope_critic():
    critic = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.8, 0.0, 0.0]]))  # ‖∇‖ = 1 everywhere
    real, fake = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert gradient_penalty(lambda x: critic(x).squeeze(-1), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        critic.weight.mul_(3)  # ‖∇‖ = 3 -> (3 − 1)² = 4
    assert gradient_penalty(lambda x: critic(x).squeeze(-1), real, fake).item() == pytest.approx(4.0, rel=1e-5)


def test_filter_drops_only_the_discriminator(conformance, tiny_config):
    state_dict = torch.load(conformance / "vectors" / "marlin_tiny.full.pt", map_location="cpu", weights_only=True)
    critic = PatchDiscriminator.from_config(tiny_config)
    training = {**state_dict, **{f"discriminator.{key}": value for key, value in critic.state_dict().items()}}
    filtered = filter_marlin_checkpoint(training)
    assert list(filtered) == list(state_dict)
    model = Marlin(tiny_config, as_feature_extractor=False)
    model.load_state_dict(filtered, strict=True)
