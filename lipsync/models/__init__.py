"""Generators and discriminators (tensors in, tensors out)."""
from lipsync.models.wav2lip import Wav2Lip, Wav2LipDiscQual

__all__ = ["Wav2Lip", "Wav2LipDiscQual"]
