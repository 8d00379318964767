"""SyncNet models: state-dict layout, conformance vectors, loaders, the fast encoders and the sync loss."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from syncnet import (
    CheckpointMismatchError,
    ConvBlock,
    FastAudioEncoder,
    FastLipEncoder,
    SyncNetColor,
    SyncNetV2,
    sync_loss,
)
from syncnet.canvas import Canvas
from syncnet.winograd import winograd_matrices
from syncnet import winograd_conv
from syncnet.winograd_conv import WinogradConv2d

torch.set_num_threads(2)


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


@pytest.fixture(scope="module")
def color_expert(seeded_state_dict) -> SyncNetColor:
    model = SyncNetColor()
    model.load_state_dict(seeded_state_dict("wav2lip_syncnet_color"), strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------- layout


def test_color_expert_keys_match_reference(reference_keys):
    assert list(_shapes(SyncNetColor()).items()) == list(reference_keys("wav2lip_syncnet_color").items())


def test_syncnet_v2_keys_match_reference(reference_keys):
    assert list(_shapes(SyncNetV2()).items()) == list(reference_keys("syncnet_v2").items())


def test_sixteen_frame_expert_differs_only_in_first_conv(reference_keys):
    reference = reference_keys("wav2lip_syncnet_color")
    shapes = _shapes(SyncNetColor(num_frames=16))
    assert list(shapes) == list(reference)
    differing = {key for key in shapes if shapes[key] != reference[key]}
    assert differing == {"face_encoder.0.conv_block.0.weight"}
    assert shapes["face_encoder.0.conv_block.0.weight"] == (32, 48, 7, 7)


def test_conv_block_keys_and_residual():
    block = ConvBlock(8, 8, 3, 1, 1, residual=True).eval()
    assert list(block.state_dict()) == [
        "conv_block.0.weight", "conv_block.0.bias",
        "conv_block.1.weight", "conv_block.1.bias", "conv_block.1.running_mean", "conv_block.1.running_var",
        "conv_block.1.num_batches_tracked",
    ]
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = torch.relu(block.conv_block(x) + x)   # shortcut added before the activation
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cin == cout"):
        ConvBlock(8, 16, 3, 1, 1, residual=True)


# ---------------------------------------------------------------------------------------------- vectors


def test_color_expert_matches_reference_vectors(color_expert, vectors):
    z = vectors("wav2lip_syncnet_color")
    with torch.no_grad():
        audio_embedding, face_embedding = color_expert(torch.from_numpy(z["audio"]), torch.from_numpy(z["face"]))
    np.testing.assert_allclose(audio_embedding.numpy(), z["audio_embedding"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(face_embedding.numpy(), z["face_embedding"], rtol=0, atol=1e-5)
    cosine = F.cosine_similarity(audio_embedding, face_embedding)
    np.testing.assert_allclose(cosine.numpy(), z["cosine_similarity"], rtol=0, atol=1e-5)


def test_syncnet_v2_matches_reference_vectors(syncnet_v2, vectors):
    z = vectors("syncnet_v2")
    lip_input = torch.from_numpy(z["lip_input"].astype(np.float32))
    with torch.inference_mode():
        np.testing.assert_allclose(
            syncnet_v2.forward_aud(torch.from_numpy(z["aud_input"])).numpy(), z["aud_output"], rtol=0, atol=1e-3
        )
        np.testing.assert_allclose(syncnet_v2.forward_lip(lip_input).numpy(), z["lip_output"], rtol=0, atol=5e-3)
        np.testing.assert_allclose(
            syncnet_v2.forward_lipfeat(lip_input).numpy(), z["lipfeat_output"], rtol=0, atol=1e-2
        )


# ---------------------------------------------------------------------------------------------- fast paths


def test_lip_tower_over_whole_clip_equals_per_window(syncnet_v2):
    generator = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 256, (1, 3, 8, 224, 224), generator=generator).float()
    with torch.inference_mode():
        per_window = torch.cat([syncnet_v2.forward_lip(clip[:, :, v : v + 5]) for v in range(4)])
        whole = syncnet_v2.forward_lip_clip(clip)[0]
    assert whole.shape == (4, 1024)
    torch.testing.assert_close(whole, per_window, rtol=0, atol=5e-3)


@pytest.fixture(scope="module")
def nine_frames(syncnet_v2, vectors) -> tuple[torch.Tensor, torch.Tensor]:
    """9 frames (5 windows: one full Winograd group plus a partial one that reads past the clip end) and the
    per-window ``forward_lip`` embeddings."""
    frames = torch.from_numpy(vectors("syncnet_v2")["lip_input"])                  # b c t h w uint8
    frames = torch.cat([frames[0], frames[1, :, :4]], dim=1).permute(1, 2, 3, 0)   # t h w c
    clip = frames.permute(3, 0, 1, 2).unsqueeze(0).float()
    with torch.inference_mode():
        expected = torch.cat([syncnet_v2.forward_lip(clip[:, :, v : v + 5]) for v in range(5)])
    return frames, expected


@pytest.mark.parametrize("windows_per_chunk", [4, 20])
def test_fast_lip_encoder_equals_forward_lip(syncnet_v2, nine_frames, windows_per_chunk):
    frames, expected = nine_frames
    fast = FastLipEncoder(syncnet_v2)(frames, num_windows=5, windows_per_chunk=windows_per_chunk)
    torch.testing.assert_close(fast, expected, rtol=0, atol=5e-3)


def test_fast_lip_encoder_rejects_bad_input(syncnet_v2):
    encoder = FastLipEncoder(syncnet_v2)
    with pytest.raises(ValueError, match="224"):
        encoder(torch.zeros(9, 112, 112, 3, dtype=torch.uint8), num_windows=5)
    with pytest.raises(ValueError, match="need 10 frames"):
        encoder(torch.zeros(9, 224, 224, 3, dtype=torch.uint8), num_windows=6)


def test_fast_audio_encoder_matches_reference_vectors(syncnet_v2, vectors):
    z = vectors("syncnet_v2")
    output = FastAudioEncoder(syncnet_v2)(torch.from_numpy(z["aud_input"]))
    np.testing.assert_allclose(output.numpy(), z["aud_output"], rtol=0, atol=1e-3)


@pytest.mark.parametrize(("m", "r", "points"), [
    (4, 5, (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))),
    (4, 3, (0, 1, -1, 2, -2)),
    (4, 3, (0, 1, -1, Fraction(1, 2), -2)),
    (2, 2, (0, 1)),
])
def test_winograd_matrices_are_exact(m, r, points):
    wino = winograd_matrices(m, r, points)
    generator = np.random.default_rng(0)
    data = [Fraction(int(v)) for v in generator.integers(-9, 10, wino.n)]
    taps = [Fraction(int(v)) for v in generator.integers(-9, 10, r)]
    transformed = [sum(b * d for b, d in zip(row, data)) * sum(g * t for g, t in zip(grow, taps))
                   for row, grow in zip(wino.BT, wino.G)]
    outputs = [sum(a * p for a, p in zip(row, transformed)) for row in wino.AT]
    assert outputs == [sum(taps[k] * data[i + k] for k in range(r)) for i in range(m)]


@pytest.mark.parametrize(("in_channels", "out_channels", "size", "kernel", "stride", "padding"), [
    (256, 256, (13, 13), 3, 1, 1),   # SyncNetV2 lip conv3-5
    (192, 384, (11, 9), 3, 1, 1),    # audio conv3: sizes that are not multiples of the 4x4 output tile
    (96, 256, (54, 54), 5, 2, 1),    # lip conv2, 5x5 stride 2 through space-to-depth
    (8, 5, (23, 18), 5, 2, 2),       # odd height, other padding
    (4, 6, (9, 10), 6, 2, 0),        # a 6x6 stride-2 kernel (no zero taps added)
    (3, 4, (7, 7), 3, 1, 0),         # valid convolution
])
def test_winograd_conv_matches_direct_convolution(in_channels, out_channels, size, kernel, stride, padding):
    generator = torch.Generator().manual_seed(0)
    scale = (in_channels * kernel**2) ** -0.5
    weight = torch.randn(out_channels, in_channels, kernel, kernel, generator=generator) * scale
    bias = torch.randn(out_channels, generator=generator)
    x = torch.rand(3, in_channels, *size, generator=generator).contiguous(memory_format=torch.channels_last)
    exact = F.conv2d(x.double(), weight.double(), bias.double(), stride=stride, padding=padding)
    direct_error = (F.conv2d(x, weight, bias, stride=stride, padding=padding).double() - exact).abs().max()
    conv = WinogradConv2d(weight, bias, stride=stride, padding=padding)
    out = conv(x)
    assert out.shape == exact.shape and out.stride(1) == 1   # channels innermost (a view of the tiled output)
    error = (out.double() - exact).abs().max()
    # float32 rounding of the transforms: measured 1.1-3.2x a direct convolution's, ~1e-6 of the output scale.
    assert error <= max(5 * direct_error, 1e-6) and error <= 1e-5 * exact.abs().max()
    torch.testing.assert_close(conv(x, relu=True), out.relu(), rtol=0, atol=0)
    no_bias = WinogradConv2d(weight, None, stride=stride, padding=padding)(x)
    torch.testing.assert_close(no_bias.double(), exact - bias.double()[:, None, None], rtol=0, atol=float(2 * error))


def test_winograd_conv_skips_structurally_zero_weights():
    generator = torch.Generator().manual_seed(3)
    for kernel, taps in ((5, 121), (6, 144)):   # 5x5 padded to 6x6: 11x11 transformed taps per phase set
        conv = WinogradConv2d(torch.randn(4, 3, kernel, kernel, generator=generator), None, stride=2)
        # Multiply-adds per tile and output channel: every point's product runs over its channel span only.
        assert sum((stop - start) * (high - low) for start, stop, low, high in conv.groups) == taps * 3
        assert conv.groups[0] == (0, 25 if kernel == 5 else 36, 0, 12)


@pytest.mark.parametrize(("count", "size", "tiles"), [(20, (13, 13), 245), (64, (11, 9), 480), (3, (13, 13), 44)])
def test_canvas_convolution_equals_each_map_alone(count, size, tiles):
    canvas = Canvas(count, *size)
    rows, cols = canvas.canvas_h, canvas.canvas_w
    assert -(-rows // 4) * -(-cols // 4) == tiles <= count * -(-size[0] // 4) * -(-size[1] // 4)
    generator = torch.Generator().manual_seed(4)
    maps = torch.randn(count, 5, *size, generator=generator, dtype=torch.float64)
    kernels = torch.randn(3, 5, 5, 3, 3, generator=generator, dtype=torch.float64)
    alone, packed = maps, canvas.pack(maps)
    assert packed.shape == (1, 5, rows, cols)
    torch.testing.assert_close(canvas.cells(packed, *size), maps, rtol=0, atol=0)
    for index, kernel in enumerate(kernels):   # float64: equal to the last bit
        alone = F.conv2d(alone, kernel, padding=1).relu()
        packed = F.conv2d(canvas.clear_gaps(packed) if index else packed, kernel, padding=1).relu()
    torch.testing.assert_close(canvas.cells(packed, *size), alone, rtol=0, atol=0)
    pooled = F.max_pool2d(alone, 3, 2)
    torch.testing.assert_close(canvas.cells(F.max_pool2d(packed, 3, 2), *pooled.shape[2:], stride=2), pooled,
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="maps of"):
        canvas.pack(maps[:, :, :-1])


def test_whole_input_convolution_is_the_convolution():
    from syncnet.fast_encoders import _WholeInputConv

    generator = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(7, 6, 5, 4, generator=generator), torch.randn(7, generator=generator)
    x = torch.randn(3, 6, 5, 4, generator=generator).contiguous(memory_format=torch.channels_last)
    conv = _WholeInputConv(weight, bias)
    torch.testing.assert_close(conv(x, relu=True), F.conv2d(x, weight, bias).relu(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="whole-input"):
        conv(torch.zeros(1, 6, 6, 4))


def test_winograd_conv_in_slices_equals_one_pass(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(16, 8, 5, 5, generator=generator), torch.randn(16, generator=generator)
    x = torch.rand(7, 8, 30, 30, generator=generator).contiguous(memory_format=torch.channels_last)
    conv = WinogradConv2d(weight, bias, stride=2, padding=1)
    monkeypatch.setattr(winograd_conv, "TILES_PER_SLICE", 10**9)
    whole = conv(x)
    monkeypatch.setattr(winograd_conv, "TILES_PER_SLICE", 32)   # 16 tiles per image: 2 images per slice, 1 last
    torch.testing.assert_close(conv(x), whole, rtol=0, atol=1e-5)


def test_gpu_fallback_convolution_agrees_with_winograd():
    from syncnet.fast_encoders import _DirectConv   # what the encoders use off the CPU

    generator = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(12, 6, 5, 5, generator=generator), torch.randn(12, generator=generator)
    x = torch.rand(2, 6, 20, 20, generator=generator).contiguous(memory_format=torch.channels_last)
    direct = _DirectConv(weight, bias, stride=2, padding=1)(x, relu=True)
    torch.testing.assert_close(direct, WinogradConv2d(weight, bias, stride=2, padding=1)(x, relu=True),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_convolution_of_a_prepadded_input_equals_padding_it(stride):
    from syncnet.fast_encoders import _DirectConv

    generator = torch.Generator().manual_seed(6)
    kernel = 3 if stride == 1 else 5
    weight, bias = torch.randn(8, 6, kernel, kernel, generator=generator), torch.randn(8, generator=generator)
    x = torch.rand(2, 6, 14, 11, generator=generator).contiguous(memory_format=torch.channels_last)
    for conv in (WinogradConv2d(weight, bias, stride=stride, padding=1),
                 _DirectConv(weight, bias, stride=stride, padding=1)):
        rows, cols = conv.padded_size(14, 11)
        padded = torch.zeros(2, rows, cols, 6)
        padded[:, 1:15, 1:12] = x.permute(0, 2, 3, 1)
        prepadded = conv.convolve_padded(padded.permute(0, 3, 1, 2), 14, 11, relu=True)
        torch.testing.assert_close(prepadded, conv(x, relu=True), rtol=0, atol=0)
        with pytest.raises(ValueError, match="padded 14x11 input"):
            conv.convolve_padded(padded[:, :, :-1].permute(0, 3, 1, 2), 14, 11)


@pytest.mark.parametrize(("size", "padding"), [((109, 109), 0), ((26, 26), 1), ((8, 12), 1), ((7, 9), 0)])
def test_separable_max_pool_equals_max_pool2d_on_strided_views(size, padding):
    from syncnet.fast_encoders import _max_pool_3x3_stride_2

    generator = torch.Generator().manual_seed(7)
    full = torch.randn(3, size[0] + 2, size[1] + 2, 5, generator=generator)   # v h w c, maps are a window of it
    x = full[:, : size[0], : size[1]]
    expected = F.max_pool2d(x.permute(0, 3, 1, 2), 3, 2, padding=padding).permute(0, 2, 3, 1)
    rows = torch.empty(3, expected.shape[1], size[1], 5)
    out = torch.empty_like(expected)
    _max_pool_3x3_stride_2(x, rows, out, padding=padding)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    if padding:
        with pytest.raises(ValueError, match="stride-2 maximum"):
            _max_pool_3x3_stride_2(full[:, : size[0] + 1], torch.empty(3, expected.shape[1] + 1, size[1] + 2, 5),
                                   torch.empty(3, expected.shape[1] + 1, expected.shape[2] + 1, 5), padding=1)


def test_winograd_conv_rejects_other_kernels():
    with pytest.raises(ValueError, match="3x3 stride-1"):
        WinogradConv2d(torch.zeros(4, 4, 5, 5), None, stride=1)
    with pytest.raises(ValueError, match="3x3 stride-1"):
        WinogradConv2d(torch.zeros(4, 4, 3, 3), None, stride=2)
    with pytest.raises(ValueError, match="input channels"):
        WinogradConv2d(torch.zeros(4, 4, 3, 3), None)(torch.zeros(1, 3, 8, 8))


def test_winograd_rejects_repeated_points():
    with pytest.raises(ValueError, match="distinct"):
        winograd_matrices(2, 3, (0, 0, 1))


# ---------------------------------------------------------------------------------------------- training use


def test_sixteen_frame_expert_forward_backward():
    model = SyncNetColor(num_frames=16).train()
    audio = torch.randn(2, 1, 80, 16)
    face = torch.rand(2, 48, 48, 96, requires_grad=True)
    audio_embedding, face_embedding = model(audio, face)
    assert audio_embedding.shape == face_embedding.shape == (2, 512)
    torch.testing.assert_close(face_embedding.norm(dim=1), torch.ones(2))
    sync_loss(audio_embedding, face_embedding, torch.ones(2, 1)).backward()
    assert face.grad.shape == face.shape
    assert model.face_encoder[0].conv_block[0].weight.grad.shape == (32, 48, 7, 7)


def test_sync_loss_prefers_matching_pairs():
    generator = torch.Generator().manual_seed(0)
    audio = torch.rand(8, 512, generator=generator) ** 4            # sparse non-negative, like ReLU outputs
    face = audio + 0.05 * torch.rand(8, 512, generator=generator)
    target = torch.ones(8, 1)
    matching = sync_loss(F.normalize(audio), F.normalize(face), target)
    shuffled = sync_loss(F.normalize(audio), F.normalize(face.roll(1, dims=0)), target)
    assert matching < shuffled
    # Exactly Wav2Lip's formula: BCE of the raw cosine similarity (no clamp, no rescaling).
    expected = F.binary_cross_entropy(F.cosine_similarity(audio, face).unsqueeze(1), target)
    torch.testing.assert_close(matching, expected)


# ---------------------------------------------------------------------------------------------- loading


def test_load_wav2lip_expert_checkpoint(tmp_path, seeded_state_dict):
    state_dict = seeded_state_dict("wav2lip_syncnet_color")
    checkpoint = {  # the layout color_syncnet_train.py writes, from a DataParallel model
        "state_dict": {f"module.{key}": value for key, value in state_dict.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "global_step": 1234,
        "global_epoch": 7,
    }
    path = tmp_path / "lipsync_expert.pth"
    torch.save(checkpoint, path)
    model = SyncNetColor.from_file(path)
    assert not model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state_dict[key], rtol=0, atol=0)


def test_load_syncnet_v2_bare_state_dict(tmp_path, seeded_state_dict):
    state_dict = seeded_state_dict("syncnet_v2")
    path = tmp_path / "syncnet_v2.model"
    torch.save(state_dict, path)
    model = SyncNetV2.from_file(path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state_dict[key], rtol=0, atol=0)


def test_wrong_key_names_the_key(tmp_path, seeded_state_dict):
    state_dict = seeded_state_dict("syncnet_v2")
    state_dict["netcnnlip.99.weight"] = state_dict.pop("netcnnlip.18.weight")
    path = tmp_path / "bad.model"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointMismatchError) as error:
        SyncNetV2.from_file(path)
    message = str(error.value)
    assert "\n" not in message
    assert "missing keys (1) [netcnnlip.18.weight]" in message
    assert "unexpected keys (1) [netcnnlip.99.weight]" in message


def test_wrong_shape_names_the_key(tmp_path, seeded_state_dict):
    state_dict = seeded_state_dict("wav2lip_syncnet_color")   # the 5-frame expert into a 16-frame model
    path = tmp_path / "expert.pth"
    torch.save({"state_dict": state_dict}, path)
    with pytest.raises(CheckpointMismatchError, match=r"face_encoder\.0\.conv_block\.0\.weight \(32, 15, 7, 7\)"):
        SyncNetColor.from_file(path, num_frames=16)


def test_sixteen_frame_expert_hears_its_whole_window():
    import torch

    from syncnet import SyncNetColor, default_mel_steps

    assert default_mel_steps(5) == 16 and default_mel_steps(16) == 51 and default_mel_steps(4) == 16
    expert = SyncNetColor(num_frames=16).eval()
    audio = torch.randn(2, 1, 80, 51)
    with torch.no_grad():
        audio_embedding, face_embedding = expert(audio, torch.rand(2, 48, 48, 96))
        # Every part of the 0.64 s window matters, the end included.
        changed = audio.clone()
        changed[..., -8:] = 4.0
        assert not torch.allclose(expert(changed, torch.rand(2, 48, 48, 96))[0], audio_embedding)
    assert audio_embedding.shape == face_embedding.shape == (2, 512)
