"""The audio front end against Wav2Lip's reference numbers and on every shared audio file."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import annotation
from lipsync.audio import load_audio, mel_basis, mel_window_starts, mel_windows, melspectrogram
from lipsync.errors import LipSyncError


def test_load_audio_is_exactly_int16_over_32768(shared_data, vectors):
    reference = vectors("wav2lip_mel")
    wav = load_audio(shared_data / "audio" / "latentsync_demo1_16k_mono.wav")
    assert wav.dtype == np.float32
    np.testing.assert_array_equal(wav, reference["wav"])


def test_mel_basis_matches_librosa_slaney(vectors):
    reference = vectors("wav2lip_mel")["mel_basis"]
    assert np.abs(mel_basis() - reference).max() <= 1e-7


def test_melspectrogram_matches_wav2lip(vectors):
    reference = vectors("wav2lip_mel")
    mel = melspectrogram(reference["wav"])
    assert mel.shape == reference["mel"].shape == (80, 769)
    assert mel.dtype == np.float32
    assert np.abs(mel - reference["mel"]).max() <= 5e-4
    # Zero padding instead of reflect padding changes the edge columns by up to 0.22 on this clip: the
    # comparison above would fail; check that the last columns in particular are right.
    assert np.abs(mel[:, -2:] - reference["mel"][:, -2:]).max() <= 5e-4


@pytest.mark.parametrize("fps_key, fps", [("chunk_starts_fps25", 25.0), ("chunk_starts_fps29_97", 29.97),
                                          ("chunk_starts_fps30000_1001", 30000 / 1001)])
def test_official_timing_reproduces_inference_py_chunks(vectors, fps_key, fps):
    reference = vectors("wav2lip_mel")
    expected = reference[fps_key]
    starts = mel_window_starts(np.arange(len(expected)) / fps, timing="official", fps=fps,
                               num_mel_steps=reference["mel"].shape[1])
    np.testing.assert_array_equal(starts, expected)


def test_training_timing_is_one_frame_early_at_25fps():
    frames = np.arange(1, 400)
    starts = mel_window_starts(frames / 25.0)
    # Wav2Lip's data loader: crop_audio_window(spec, frame - 1) -> int(80 * (frame - 1) / 25).
    np.testing.assert_array_equal(starts, [int(80.0 * ((frame - 1) / 25.0)) for frame in frames])
    assert mel_window_starts(np.array([0.0]))[0] == -4   # before the audio: floor(-3.2)


def test_training_timing_follows_real_timestamps(shared_data):
    # The 29.97 fps clip has a gap of two frame durations before its last frame.
    reference = annotation(shared_data, "vexpress_radio10_2997fps")
    times = reference["timestamps"] - reference["timestamps"][0]
    starts = mel_window_starts(times)
    steps = np.diff(starts)
    assert steps[:-1].min() >= 2 and steps[:-1].max() <= 3      # 80 / 29.97 = 2.67 steps per frame
    assert steps[-1] >= 5                                       # the gap is seen, not papered over


def test_windows_pad_with_silence_at_both_edges(vectors):
    mel = melspectrogram(vectors("wav2lip_mel")["wav"])
    windows = mel_windows(mel, np.array([-4, 0, mel.shape[1] - 10, mel.shape[1] + 50]))
    assert windows.shape == (4, 80, 16)
    np.testing.assert_array_equal(windows[0, :, :4], -4.0)
    np.testing.assert_array_equal(windows[0, :, 4:], mel[:, :12])
    np.testing.assert_array_equal(windows[1], mel[:, :16])
    np.testing.assert_array_equal(windows[2, :, :10], mel[:, -10:])
    np.testing.assert_array_equal(windows[2, :, 10:], -4.0)
    np.testing.assert_array_equal(windows[3], -4.0)


@pytest.mark.parametrize("name, seconds", [
    ("audio/latentsync_demo1_16k_mono.wav", 9.60),
    ("audio/pcavs_681600002_wav_named_mp3.mp3", 14.53),       # a WAV named .mp3: probed by content
    ("audio/retalk_audio1_44k_stereo.wav", 5.02),
    ("audio/sadtalker_chinese_news_48k.wav", 8.00),           # 48 kHz stereo: resampled
    ("audio/sadtalker_radio34_16k_stereo.wav", 8.00),
    ("video/pcavs_00015_224_25fps.mp4", 6.98),                # AAC track of a video
    ("video/hamilton_multiface_cuts_2997fps.mp4", 10.01),
])
def test_every_shared_audio_source_loads(shared_data, name, seconds):
    wav = load_audio(shared_data / name)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) / 16000 - seconds) < 0.05
    assert 0.05 < np.abs(wav).max() <= 1.5    # real speech, not silence, not unscaled int16
    assert np.isfinite(wav).all()


def test_stereo_is_averaged_to_mono(shared_data):
    from lipsync.audio import decode_audio

    stereo, rate = decode_audio(shared_data / "audio" / "sadtalker_radio34_16k_stereo.wav")
    assert stereo.shape[0] == 2 and rate == 16000
    np.testing.assert_allclose(load_audio(shared_data / "audio" / "sadtalker_radio34_16k_stereo.wav"),
                               stereo.mean(axis=0), atol=1e-7)


def test_resampling_keeps_the_pitch(tmp_path):
    from conftest import write_wav

    rate = 44100
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(rate) / rate)
    wav = load_audio(write_wav(tmp_path / "tone.wav", tone, rate))
    spectrum = np.abs(np.fft.rfft(wav[2000:-2000] * np.hanning(len(wav) - 4000)))
    peak_hz = np.argmax(spectrum) * 16000 / (len(wav) - 4000)
    assert abs(peak_hz - 440.0) < 2.0
    assert abs(len(wav) - 16000) <= 1


def test_audio_errors_are_one_line(shared_data, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"this is not audio" * 100)
    cases = {
        tmp_path / "missing.wav": "not found",
        empty: "empty",
        corrupt: "cannot read",
        shared_data / "video" / "iplap_129_noaudio_30fps.mp4": "no audio stream",
        shared_data / "image" / "hallo_6.jpg": "no audio stream",
    }
    for path, fragment in cases.items():
        with pytest.raises(LipSyncError, match=fragment) as caught:
            load_audio(path)
        assert "\n" not in str(caught.value)
