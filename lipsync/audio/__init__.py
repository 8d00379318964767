"""Audio front end: decoding (`load_audio`) and Wav2Lip's mel spectrogram with per-frame windows."""
from lipsync.audio.decode import decode_audio, load_audio
from lipsync.audio.mel import (
    MEL_STEPS_PER_SECOND,
    MEL_WINDOW_STEPS,
    SAMPLE_RATE,
    mel_basis,
    mel_window_starts,
    mel_windows,
    melspectrogram,
)

__all__ = [
    "MEL_STEPS_PER_SECOND",
    "MEL_WINDOW_STEPS",
    "SAMPLE_RATE",
    "decode_audio",
    "load_audio",
    "mel_basis",
    "mel_window_starts",
    "mel_windows",
    "melspectrogram",
]
