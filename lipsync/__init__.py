"""marlin-lipsync: lip-sync a face video or photo to speech (Wav2Lip and the MARLIN video-encoder generator)."""
from lipsync.config import InferenceConfig, RuntimeConfig
from lipsync.errors import LipSyncError
from lipsync.generators import load_generator
from lipsync.pipeline import InferenceResult, LipSyncPipeline

__version__ = "0.1.0"

__all__ = ["InferenceConfig", "InferenceResult", "LipSyncError", "LipSyncPipeline", "RuntimeConfig",
           "__version__", "load_generator"]
