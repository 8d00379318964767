"""The MARLIN lip-sync generator ("Wav2Lip + ViT + MARLIN", MARLIN paper, CVPR 2023, Table 5).

Wav2Lip's convolutional face encoder is replaced by a MARLIN ViT over T-frame windows. What the paper
discloses, and is followed here: 16-frame windows; 96 px faces upsampled to 224 for the encoder and the
output brought back to 96; no U-Net skip connections; the encoder's (B, 1568, 768) tokens rearranged to
per-frame maps (B·16, 384, 14, 14) (each tubelet token split into its two frames' halves), a 384-d per-frame
audio embedding tiled over 14x14 and concatenated, plus the 6 input-image channels (774 for ViT-B); the
latent injected at several decoder stages with upsampling, and the resized input image concatenated to the
decoder's feature maps.

Not disclosed, designed here (each a config field): how the 6-channel input (masked target + reference)
reaches the 3-channel encoder (`encoder_input`, `pretrained_half`), the decoder widths, the width of the
latent injected per stage, and the audio encoder (Wav2Lip's, with a D/2-wide embedding).

Axis legend: b windows, t frames, c channels, h/w pixels, n tokens, d token width, g token-grid side,
p frames per tubelet, m mel bins, s mel steps.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lipsync.models.layers import ConvBlock, ConvTransposeBlock
from lipsync.models.wav2lip import build_audio_encoder
from marlin_encoder import MarlinConfig, MarlinEncoder, resolve_config

ENCODER_INPUTS = ("both", "masked")
PRETRAINED_HALVES = ("masked", "reference")


@dataclass(frozen=True)
class MarlinLipSyncConfig:
    """Architecture of the MARLIN lip-sync generator.

    Attributes:
        encoder: a released MARLIN architecture ("marlin_vit_small_ytf", "..._base_ytf", "..._large_ytf").
        encoder_overrides: MARLIN config fields replacing the preset's (tiny test models, other frame counts).
        face_size: generator input/output resolution (LRS2 crops are 96 px).
        encoder_input: "both": masked target and reference go through a 6-channel patch embedding;
            "masked": only the masked target is encoded (the reference still reaches the decoder as image).
        pretrained_half: with "both", which 3 channels inherit the pretrained RGB patch embedding; the other
            three start at zero, so at initialisation the encoder computes exactly the pretrained features of
            that half. Default "masked": MARLIN was pretrained to encode faces with masked regions, and the
            masked target carries the pose and motion of the frames being generated.
        decoder_widths: channels of the decoder stages, each doubling the resolution from the token grid
            (14 -> 28 -> 56 -> 112 -> 224 for four stages).
        injection_width: channels of the latent re-injected at every stage (a 1x1 projection, upsampled).
        audio_dim: per-frame audio embedding width; None means half the encoder width (384 for ViT-B).
    """

    encoder: str = "marlin_vit_base_ytf"
    encoder_overrides: dict[str, Any] = field(default_factory=dict)
    face_size: int = 96
    encoder_input: str = "both"
    pretrained_half: str = "masked"
    decoder_widths: tuple[int, ...] = (512, 256, 128, 64)
    injection_width: int = 64
    audio_dim: int | None = None

    def __post_init__(self) -> None:
        if self.encoder_input not in ENCODER_INPUTS:
            raise ValueError(f"encoder_input must be one of {ENCODER_INPUTS}, got {self.encoder_input!r}")
        if self.pretrained_half not in PRETRAINED_HALVES:
            raise ValueError(f"pretrained_half must be one of {PRETRAINED_HALVES}, got {self.pretrained_half!r}")
        if not self.decoder_widths:
            raise ValueError("decoder_widths needs at least one stage")
        if self.marlin.encoder_embed_dim % self.marlin.tubelet_size:
            raise ValueError("the encoder width must split evenly over the frames of a tubelet")

    @property
    def marlin(self) -> MarlinConfig:
        from dataclasses import replace

        return replace(resolve_config(self.encoder), **self.encoder_overrides)

    @property
    def num_frames(self) -> int:
        return self.marlin.n_frames

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["decoder_widths"] = list(self.decoder_widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MarlinLipSyncConfig":
        data = dict(data)
        data["decoder_widths"] = tuple(data.get("decoder_widths", cls.decoder_widths))
        return cls(**data)


MARLIN_LIPSYNC_S = MarlinLipSyncConfig(encoder="marlin_vit_small_ytf")
MARLIN_LIPSYNC_B = MarlinLipSyncConfig(encoder="marlin_vit_base_ytf")
MARLIN_LIPSYNC_L = MarlinLipSyncConfig(encoder="marlin_vit_large_ytf")
PRESETS = {"vit_small": MARLIN_LIPSYNC_S, "vit_base": MARLIN_LIPSYNC_B, "vit_large": MARLIN_LIPSYNC_L}


class DecoderStage(nn.Module):
    """Upsample x2, then fuse with the re-injected latent and the input image at the new resolution."""

    def __init__(self, cin: int, cout: int, injection_width: int, image_channels: int) -> None:
        super().__init__()
        self.upsample = ConvTransposeBlock(cin, cout, 3, 2, 1, output_padding=1)
        self.fuse = ConvBlock(cout + injection_width + image_channels, cout, 3, 1, 1)
        self.refine = ConvBlock(cout, cout, 3, 1, 1, residual=True)

    def forward(self, x: torch.Tensor, injected: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """x (n, cin, r, r) -> (n, cout, 2r, 2r); injected and image already at 2r."""
        x = self.upsample(x)
        return self.refine(self.fuse(torch.cat((x, injected, image), dim=1)))


class MarlinLipSync(nn.Module):
    """MARLIN lip-sync generator; same call as Wav2Lip's temporal form.

    Args:
        config: architecture.
    """

    def __init__(self, config: MarlinLipSyncConfig = MARLIN_LIPSYNC_B) -> None:
        super().__init__()
        self.config = config
        marlin = config.marlin
        self.num_frames = marlin.n_frames
        self.tubelet_size = marlin.tubelet_size
        self.encoder_size = marlin.img_size
        self.grid = marlin.img_size // marlin.patch_size
        frame_dim = marlin.encoder_embed_dim // marlin.tubelet_size
        audio_dim = config.audio_dim or frame_dim
        self.encoder = MarlinEncoder(marlin, in_channels=6 if config.encoder_input == "both" else 3)
        self.audio_encoder = build_audio_encoder(audio_dim)
        latent_dim = frame_dim + audio_dim
        image_channels = 6
        widths = config.decoder_widths
        self.bottleneck = ConvBlock(latent_dim + image_channels, widths[0], 3, 1, 1)
        self.injections = nn.ModuleList(ConvBlock(latent_dim, config.injection_width, 1, 1, 0) for _ in widths)
        stage_inputs = (widths[0],) + widths[:-1]
        self.stages = nn.ModuleList(DecoderStage(cin, cout, config.injection_width, image_channels)
                                    for cin, cout in zip(stage_inputs, widths))
        self.output_block = nn.Sequential(
            ConvBlock(widths[-1] + image_channels, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1),
            nn.Sigmoid(),
        )
        self.decoder_size = self.grid * 2 ** len(widths)

    @classmethod
    def from_marlin(cls, config: MarlinLipSyncConfig, marlin_state: dict[str, torch.Tensor]) -> "MarlinLipSync":
        """A generator whose encoder starts from a MARLIN checkpoint (`encoder.*` keys of the official files).

        The pretrained RGB patch embedding goes to the channels named by `config.pretrained_half`; the other
        three start at zero (see `MarlinLipSyncConfig`).
        """
        model = cls(config)
        encoder_state = {key.removeprefix("encoder."): value for key, value in marlin_state.items()
                         if key.startswith("encoder.")}
        rgb = MarlinEncoder(config.marlin, in_channels=3)
        rgb.load_state_dict(encoder_state, strict=True)
        if config.encoder_input == "both":
            rgb.patch_embedding = rgb.patch_embedding.with_in_channels(6)
        model.encoder.load_state_dict(rgb.state_dict(), strict=True)
        return model

    def encoder_clip(self, face_sequences: torch.Tensor) -> torch.Tensor:
        """The encoder's input: (b, 6, t, s, s) BGR faces -> (b, 6 or 3, t, 224, 224) RGB, pretrained half first."""
        frames = rearrange(face_sequences, "b c t h w -> (b t) c h w")
        frames = F.interpolate(frames, size=(self.encoder_size, self.encoder_size), mode="bilinear",
                               align_corners=False)
        masked, reference = frames[:, [2, 1, 0]], frames[:, [5, 4, 3]]      # BGR -> RGB, as MARLIN was trained
        if self.config.encoder_input == "masked":
            halves = (masked,)
        elif self.config.pretrained_half == "masked":
            halves = (masked, reference)
        else:
            halves = (reference, masked)
        return rearrange(torch.cat(halves, dim=1), "(b t) c h w -> b c t h w", b=face_sequences.shape[0])

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """Generate a window of faces.

        Args:
            audio_sequences: (b, t, 1, 80, 16) per-frame mel windows.
            face_sequences: (b, 6, t, s, s) BGR in [0, 1]: masked targets (lower half zeroed) and references.

        Returns:
            (b, 3, t, s, s) BGR in [0, 1].
        """
        batch, _, frames, size, _ = face_sequences.shape
        if frames != self.num_frames:
            raise ValueError(f"expected windows of {self.num_frames} frames, got {frames}")
        tokens = self.encoder.forward_features(self.encoder_clip(face_sequences))            # (b, n, d)
        latent = rearrange(tokens, "b (t h w) (p c) -> (b t p) c h w", h=self.grid, w=self.grid,
                           p=self.tubelet_size)                                              # (b t, d/p, g, g)
        audio = self.audio_encoder(rearrange(audio_sequences, "b t c m s -> (b t) c m s"))  # (b t, a, 1, 1)
        latent = torch.cat((latent, audio.expand(-1, -1, self.grid, self.grid).to(latent.dtype)), dim=1)
        image = rearrange(face_sequences, "b c t h w -> (b t) c h w")
        x = self.bottleneck(torch.cat((latent, _resize(image, self.grid)), dim=1))
        resolution = self.grid
        for injection, stage in zip(self.injections, self.stages):
            resolution *= 2
            injected = F.interpolate(injection(latent), size=(resolution, resolution), mode="bilinear",
                                     align_corners=False)
            x = stage(x, injected, _resize(image, resolution))
        x = self.output_block(torch.cat((x, _resize(image, resolution)), dim=1))
        x = _resize(x, size)
        return rearrange(x, "(b t) c h w -> b c t h w", b=batch)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    # Antialiasing when shrinking (224 -> 96): plain bilinear would alias fine texture. The antialiased CPU
    # kernel has no bf16 version, so under autocast a shrink runs, and returns, in fp32 (for the generator's
    # final output that also spares a rounding to bf16 before the pixels are quantised).
    if images.shape[-1] > size:
        return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                             antialias=True)
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def tiny_config(num_frames: int = 4) -> MarlinLipSyncConfig:
    """A few-million-parameter model for tests and CPU experiments (32 px encoder input, 2x2 tokens)."""
    return MarlinLipSyncConfig(
        encoder="marlin_vit_small_ytf",
        encoder_overrides={"img_size": 32, "n_frames": num_frames, "encoder_embed_dim": 64, "encoder_depth": 2,
                           "encoder_num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
                           "decoder_num_heads": 2},
        decoder_widths=(64, 32, 16, 16), injection_width=8,
    )


def parameter_count(model: nn.Module) -> int:
    return sum(math.prod(parameter.shape) for parameter in model.parameters())
