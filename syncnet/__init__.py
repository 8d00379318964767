"""SyncNet experts: Wav2Lip's colour expert, syncnet_python's SyncNet and the LSE-D / LSE-C evaluation.

A leaf package: it depends on torch, numpy and einops only (and the shared
`checkpoint_io` loader).
"""
from syncnet.color_expert import SyncNetColor, default_mel_steps, sync_loss
from syncnet.conv import ConvBlock
from syncnet.fast_encoders import FastAudioEncoder, FastLipEncoder
from syncnet.mfcc import mfcc
from syncnet.scoring import SyncNetScorer, calc_pdist, evaluate_clip
from syncnet.syncnet_v2 import SyncNetV2
from syncnet.weights import CheckpointMismatchError, load_into

__all__ = [
    "CheckpointMismatchError",
    "ConvBlock",
    "FastAudioEncoder",
    "FastLipEncoder",
    "SyncNetColor",
    "default_mel_steps",
    "SyncNetScorer",
    "SyncNetV2",
    "calc_pdist",
    "evaluate_clip",
    "load_into",
    "mfcc",
    "sync_loss",
]
