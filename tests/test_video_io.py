"""Streaming decode/encode on the shared videos: timestamps, seeking, timelines, atomic writes."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from conftest import annotation, probe, write_wav
from lipsync.errors import LipSyncError
from lipsync.io import VideoReader, VideoWriter, atomic_path
from lipsync.playback import playback


@pytest.mark.parametrize("stem", ["hamilton_multiface_cuts_2997fps", "vexpress_radio10_2997fps",
                                  "retalk_face3_25fps", "iplap_129_noaudio_30fps"])
def test_decode_order_count_and_timestamps(shared_data, stem):
    reference = annotation(shared_data, stem)
    reader = VideoReader(shared_data / "video" / f"{stem}.mp4")
    assert (reader.info.width, reader.info.height) == (int(reference["width"]), int(reference["height"]))
    times = []
    for frame in reader:
        assert frame.image.shape == (reader.info.height, reader.info.width, 3) and frame.image.dtype == np.uint8
        times.append(frame.time)
    assert reader.num_frames == int(reference["n_frames"])       # vexpress: 61 decoded, header says 62
    expected = reference["timestamps"] - reference["timestamps"][0]
    np.testing.assert_allclose(times, expected, atol=1e-6)


def test_read_range_matches_forward_decoding(shared_data):
    reader = VideoReader(shared_data / "video" / "retalk_face5_25fps.mp4")
    forward = [frame.image for frame in reader]
    for start, stop in [(0, 5), (40, 72), (100, reader.num_frames)]:
        block = reader.read_range(start, stop)
        assert [frame.index for frame in block] == list(range(start, stop))
        for frame in block:
            np.testing.assert_array_equal(frame.image, forward[frame.index])


def test_photo_is_a_still(shared_data):
    reader = VideoReader(shared_data / "image" / "hallo_6.jpg", still_fps=30)
    assert reader.info.is_still and float(reader.info.frame_rate) == 30
    frames = list(reader)
    assert len(frames) == 1 and frames[0].image.shape == (624, 624, 3)


def _sources(reader, duration, mode):
    return [(timed.index, round(timed.time, 6), timed.source.index) for timed in playback(reader, duration, mode)]


@pytest.mark.parametrize("mode", ["pingpong", "loop", "freeze"])
def test_extension_modes(shared_data, mode):
    reader = VideoReader(shared_data / "video" / "vexpress_radio10_2997fps.mp4")   # 61 frames, 2.07 s
    timeline = _sources(reader, 6.0, mode)
    sources = [source for _, _, source in timeline]
    first_pass = list(range(61))
    assert sources[:61] == first_pass
    expected_tail = {
        "pingpong": list(range(59, 0, -1)) + first_pass + list(range(59, 0, -1)),
        "loop": first_pass * 3,
        "freeze": [60] * 200,
    }[mode]
    assert sources[61:] == expected_tail[: len(sources) - 61]
    times = np.array([time for _, time, _ in timeline])
    assert times[-1] < 6.0 <= times[-1] + 1001 / 30000 + 1e-9     # covers the audio, one frame at most over
    assert np.all(np.diff(times) > 0)


def test_video_longer_than_audio_is_cut(shared_data):
    reader = VideoReader(shared_data / "video" / "retalk_face2_25fps.mp4")
    timeline = _sources(reader, 1.0, "pingpong")
    assert [source for _, _, source in timeline] == list(range(25))


def test_writer_keeps_rate_size_and_audio_length(shared_data, tmp_path):
    reader = VideoReader(shared_data / "video" / "vexpress_radio10_2997fps.mp4")
    audio = write_wav(tmp_path / "tone.wav", 0.3 * np.sin(np.arange(3 * 16000) * 0.05), 16000)
    output = tmp_path / "out.mp4"
    with VideoWriter(output, width=reader.info.width, height=reader.info.height, frame_rate=reader.info.frame_rate,
                     time_base=reader.info.time_base, audio=audio) as writer:
        for timed in playback(reader, 3.0, "pingpong"):
            writer.write(timed.source.image, timed.time)
    info = probe(output)
    assert (info["width"], info["height"]) == (512, 512)
    assert info["rate"] == reader.info.frame_rate
    assert abs(info["audio_duration"] - 3.0) < 0.03
    assert abs(info["video_duration"] - 3.0) <= 1001 / 30000 + 1e-6
    # The PTS gap before source frame 60 survives in the output.
    assert np.diff(info["times"])[59] == pytest.approx(2 * 1001 / 30000, abs=1e-4)


def test_odd_frame_size_is_padded_for_h264(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (241, 427, 3), dtype=np.uint8)
    with VideoWriter(tmp_path / "odd.mp4", width=427, height=241, frame_rate=Fraction(25),
                     time_base=Fraction(1, 25)) as writer:
        for index in range(3):
            writer.write(image, index / 25)
    info = probe(tmp_path / "odd.mp4")
    assert (info["width"], info["height"]) == (428, 242) and info["num_frames"] == 3


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"done")
    assert target.read_bytes() == b"done" and list(tmp_path.iterdir()) == [target]


def test_video_errors(shared_data, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01junk" * 1000)
    for path, fragment in [(tmp_path / "nope.mp4", "not found"), (tmp_path / "empty.mp4", "empty"),
                           (tmp_path / "junk.mp4", "cannot read"),
                           (shared_data / "audio" / "latentsync_demo1_16k_mono.wav", "no video stream")]:
        with pytest.raises(LipSyncError, match=fragment):
            VideoReader(path)
