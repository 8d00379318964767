"""The classic generator and discriminator against the official Wav2Lip code (conformance vectors)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsync.generators import load_synthesizer
from lipsync.models import Wav2Lip, Wav2LipDiscQual
from lipsync.synthesis import Wav2LipSynthesizer


def _key_shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in model.state_dict().items()]


@pytest.mark.parametrize("model_class, keys_name", [(Wav2Lip, "wav2lip_generator"),
                                                    (Wav2LipDiscQual, "wav2lip_disc_qual")])
def test_state_dict_keys_and_shapes_match_the_reference(model_class, keys_name, reference_keys):
    assert _key_shapes(model_class()) == list(reference_keys(keys_name).items())


@pytest.fixture(scope="module")
def generator(seeded_state_dict):
    model = Wav2Lip()
    model.load_state_dict(seeded_state_dict("wav2lip_generator"), strict=True)
    return model.eval()


def test_generator_temporal_call(generator, vectors):
    reference = vectors("wav2lip_generator")
    captured = {}
    hook = generator.audio_encoder.register_forward_hook(lambda module, args, output: captured.update(emb=output))
    with torch.no_grad():
        output = generator(torch.from_numpy(reference["audio_sequences"]), torch.from_numpy(reference["face_sequences"]))
    hook.remove()
    assert output.shape == (2, 3, 5, 96, 96)
    assert np.abs(output.numpy() - reference["output"]).max() <= 1e-4
    # Time-major folding: row t*B + b. A batch-major fold would still give this shape but not these values.
    assert np.abs(captured["emb"].numpy() - reference["audio_embedding"]).max() <= 5e-4


def test_generator_single_frame_call(generator, vectors):
    reference = vectors("wav2lip_generator")
    with torch.no_grad():
        output = generator(torch.from_numpy(reference["audio_single"]), torch.from_numpy(reference["face_single"]))
        embedding = generator.audio_encoder(torch.from_numpy(reference["audio_single"]))
    assert np.abs(output.numpy() - reference["output_single"]).max() <= 1e-4
    assert np.abs(embedding.numpy() - reference["audio_embedding_single"]).max() <= 5e-4


def test_the_pipelines_generator_with_folded_batch_norms_still_matches(seeded_wav2lip_checkpoint, vectors):
    # lipsync infer loads the official checkpoint file and folds each batch norm into its convolution.
    synthesizer = load_synthesizer("wav2lip", seeded_wav2lip_checkpoint, torch.device("cpu"), torch.float32)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in synthesizer.model.modules())
    reference = vectors("wav2lip_generator")
    with torch.no_grad():
        for audio, face, expected in [("audio_sequences", "face_sequences", "output"),
                                      ("audio_single", "face_single", "output_single")]:
            output = synthesizer.model(torch.from_numpy(reference[audio]), torch.from_numpy(reference[face]))
            assert np.abs(output.numpy() - reference[expected]).max() <= 1e-4


def test_synthesizer_feeds_the_generator_like_inference_py(generator, vectors):
    # inference.py builds [face with rows 48: zeroed, face] / 255 from a uint8 crop; the synthesizer must
    # build the same input from the same crop and return the output as uint8.
    reference = vectors("wav2lip_generator")
    faces = np.rint(reference["face_single"][:, 3:] * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    synthesizer = Wav2LipSynthesizer(generator, torch.device("cpu"), torch.float32)
    produced = synthesizer(np.ascontiguousarray(faces), reference["audio_single"][:, 0])
    expected = reference["output_single"].transpose(0, 2, 3, 1) * 255
    assert produced.dtype == np.uint8 and produced.shape == (3, 96, 96, 3)
    assert np.abs(produced.astype(np.float32) - expected).max() <= 0.5 + 1e-3   # rounding only


def test_synthesizer_bf16_stays_close_to_fp32(generator, vectors):
    reference = vectors("wav2lip_generator")
    faces = np.ascontiguousarray(np.rint(reference["face_single"][:, 3:] * 255).astype(np.uint8).transpose(0, 2, 3, 1))
    mels = reference["audio_single"][:, 0]
    fp32 = Wav2LipSynthesizer(generator, torch.device("cpu"), torch.float32)(faces, mels).astype(np.float64)
    bf16 = Wav2LipSynthesizer(generator, torch.device("cpu"), torch.bfloat16)(faces, mels).astype(np.float64)
    psnr = 10 * np.log10(255.0**2 / np.mean((fp32 - bf16) ** 2 + 1e-12))
    # Documented looser bound for reduced precision (conformance README): bf16 cannot meet 1e-4.
    assert psnr > 35.0, psnr


@pytest.fixture(scope="module")
def discriminator(seeded_state_dict):
    model = Wav2LipDiscQual()
    model.load_state_dict(seeded_state_dict("wav2lip_disc_qual"), strict=True)
    return model.eval()


def test_discriminator_outputs(discriminator, vectors):
    reference = vectors("wav2lip_disc_qual")
    faces = torch.from_numpy(reference["face_sequences"])
    with torch.no_grad():
        assert np.abs(discriminator(faces).numpy() - reference["output"]).max() <= 1e-5
        assert np.abs(discriminator.logits(faces).numpy() - reference["logits"]).max() <= 1e-5
        loss = discriminator.perceptual_forward(faces)
    assert abs(loss.item() - float(reference["perceptual_forward"])) <= 1e-5
