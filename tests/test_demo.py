"""The Gradio demo: served by `demo/app.py` in a subprocess, driven by headless Chromium and by gradio_client.

One app serves the whole module (seeded Wav2Lip weights, a 1 MB upload limit and a 5 s duration limit); the
face position is given as a box because no detector weights are available here.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, face_boxes, probe, write_wav
from lipsync.audio import load_audio
from lipsync.errors import LipSyncError

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install -e '.[demo]')")

CHROMIUM = Path("/usr/bin/chromium")
# How this machine runs Chromium headless: no sandbox as root, and no background traffic to a closed network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SPEECH_SECONDS = 1.5          # the seeded generator runs about 10 frames/s on a CPU
MAX_UPLOAD_MB = 1             # retalk_face3 (393 kB) passes; sadtalker_chinese_news (1.5 MB) does not
MAX_DURATION_S = 5            # latentsync_demo1 (9.6 s, 307 kB) is refused after upload
VIDEO_STEM = "retalk_face3_25fps"


@dataclass
class DemoApp:
    url: str
    temp_dir: Path
    log: Path
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def _box_text(box: list[float]) -> str:
    return " ".join(f"{value:.1f}" for value in box)


def _wait_until_serving(app: DemoApp, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            pytest.fail(f"the demo exited with {app.process.returncode}:\n{app.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(app.url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"the demo did not answer within {timeout:.0f} s:\n{app.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def speech(shared_data, tmp_path_factory) -> Path:
    wav = load_audio(shared_data / "audio" / "latentsync_demo1_16k_mono.wav")
    folder = tmp_path_factory.mktemp("speech")
    return write_wav(folder / "speech.wav", wav[: int(SPEECH_SECONDS * 16000)], 16000)


@pytest.fixture(scope="module")
def demo_app(shared_data, seeded_wav2lip_checkpoint, speech, tmp_path_factory):
    """`demo/app.py` in a subprocess; on teardown it is stopped with SIGTERM and must leave no files."""
    root = tmp_path_factory.mktemp("demo")
    examples = root / "examples"
    examples.mkdir()
    (examples / "example_speech.wav").write_bytes(speech.read_bytes())
    temp_dir = root / "tmp"
    port = _free_port()
    log = root / "app.log"
    env = {**os.environ, "LIPSYNC_HOME": str(root / "home"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(PROJECT_ROOT / "demo" / "app.py"), "--checkpoint", str(seeded_wav2lip_checkpoint),
               "--host", "127.0.0.1", "--port", str(port), "--precision", "fp32", "--device", "cpu",
               "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-duration", str(MAX_DURATION_S),
               "--temp-dir", str(temp_dir), "--examples", str(examples)]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=root)
    app = DemoApp(url=f"http://127.0.0.1:{port}/", temp_dir=temp_dir, log=log, process=process)
    try:
        _wait_until_serving(app)
        yield app
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"the demo did not stop on SIGTERM:\n{log.read_text()[-3000:]}")
    # Uploads, outputs and Gradio's cache all lived in the app's own temporary folder, now gone.
    assert temp_dir.is_dir() and not any(temp_dir.iterdir()), list(temp_dir.rglob("*"))[:10]
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) "
                    f"for the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (Python)")
    with sync_api.sync_playwright() as playwright:
        # Playwright gives every launch a fresh, empty profile (user data dir).
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, demo_app):
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(demo_app.url)
    page.wait_for_selector("#generate")
    yield page
    context.close()


def _upload(page, component: str, path: Path) -> None:
    """Give a file to a page input and wait until the page shows it (the upload has finished)."""
    page.locator(f"#{component} input[type=file]").set_input_files(path)
    shown = {"face-video": "video", "face-photo": "img", "speech": "[data-testid='waveform-Speech']"}[component]
    page.locator(f"#{component} {shown}").first.wait_for(state="attached")


def _set_face_box(page, box: list[float]) -> None:
    page.locator("#options").get_by_text("Options").click()
    page.locator("#face-box textarea, #face-box input").first.fill(_box_text(box))


# Records every text the page's progress trackers show, however briefly.
RECORD_PROGRESS = """() => {
    window.progressTexts = [];
    new MutationObserver(() => document.querySelectorAll("[data-testid='status-tracker']").forEach(tracker => {
        const text = tracker.innerText.trim();
        if (text && !window.progressTexts.includes(text)) window.progressTexts.push(text);
    })).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _generate_and_download(page, target: Path) -> Path:
    page.evaluate(RECORD_PROGRESS)
    page.locator("#generate").click()
    # The output video, or a message that says why there is none.
    page.locator("#output-video video, [data-testid='toast-body']").first.wait_for(timeout=120_000)
    if page.locator("[data-testid='toast-body']").count():
        page.screenshot(path=str(target.with_suffix(".failed.png")), full_page=True)
        pytest.fail(f"the page says: {page.locator('[data-testid=toast-text]').first.text_content()}")
    with page.expect_download() as download:
        page.locator("#output-video").get_by_label("Download").first.click()
    download.value.save_as(target)
    return target


def _assert_lasts_like_speech(info: dict, fps: float) -> None:
    assert info["has_audio"] and info["audio_duration"] == pytest.approx(SPEECH_SECONDS, abs=0.03)
    assert abs(info["video_duration"] - SPEECH_SECONDS) <= 1 / fps + 1e-6
    assert info["num_frames"] == round(SPEECH_SECONDS * fps)


@pytest.mark.slow
@pytest.mark.browser
def test_browser_video_and_speech_to_a_downloaded_video(page, shared_data, speech, tmp_path):
    _upload(page, "face-video", shared_data / "video" / f"{VIDEO_STEM}.mp4")
    _upload(page, "speech", speech)
    _set_face_box(page, face_boxes(shared_data, VIDEO_STEM)[0])
    output = _generate_and_download(page, tmp_path / "downloaded.mp4")
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

    info = probe(output)
    assert (info["width"], info["height"]) == (590, 590)
    _assert_lasts_like_speech(info, fps=25)
    # The progress bar followed the pipeline's frames.
    assert any(f"{info['num_frames']}/{info['num_frames']} frame" in text and "lip-sync" in text
               for text in page.evaluate("window.progressTexts"))
    summary = page.locator("#coverage-summary").inner_text()
    assert f"all {info['num_frames']} of {info['num_frames']} frames" in summary
    assert page.locator("#coverage-plot").get_by_text("source frame").first.is_visible()
    assert page.locator("#sync-note").get_by_text("not available yet").is_visible()
    assert page.get_by_text("Example speech").first.is_visible()   # from --examples


@pytest.mark.slow
@pytest.mark.browser
def test_browser_photo_and_speech(page, shared_data, speech, tmp_path):
    page.get_by_role("tab", name="Photo").click()
    _upload(page, "face-photo", shared_data / "image" / "hallo_6.jpg")
    _upload(page, "speech", speech)
    _set_face_box(page, face_boxes(shared_data, "hallo_6")[0])
    info = probe(_generate_and_download(page, tmp_path / "photo.mp4"))
    assert (info["width"], info["height"]) == (624, 624)
    _assert_lasts_like_speech(info, fps=25)


@pytest.mark.browser
def test_browser_refuses_an_oversized_upload_with_a_message(page, shared_data):
    oversized = shared_data / "audio" / "sadtalker_chinese_news_48k.wav"
    assert oversized.stat().st_size > MAX_UPLOAD_MB * 1e6
    page.locator("#speech input[type=file]").set_input_files(oversized)
    message = page.get_by_text("exceed the maximum allowed size").first
    message.wait_for(state="visible")
    assert oversized.name in message.inner_text()


@pytest.mark.browser
def test_browser_refuses_too_long_speech_with_a_message(page, shared_data):
    page.get_by_role("tab", name="Photo").click()
    _upload(page, "face-photo", shared_data / "image" / "hallo_6.jpg")
    _upload(page, "speech", shared_data / "audio" / "latentsync_demo1_16k_mono.wav")
    page.locator("#generate").click()
    page.get_by_text(f"this demo accepts at most {MAX_DURATION_S} s").first.wait_for(state="visible")


@pytest.mark.slow
def test_gradio_client_returns_a_video(demo_app, shared_data, speech, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(demo_app.url, download_files=str(tmp_path), verbose=False)
    video, summary, report, plot, sync_plot, timings = client.predict(
        face_video=handle_file(str(shared_data / "video" / f"{VIDEO_STEM}.mp4")), face_photo=None,
        audio=handle_file(str(speech)), face_box=_box_text(face_boxes(shared_data, VIDEO_STEM)[0]),
        api_name="/generate")
    info = probe(Path(video))
    _assert_lasts_like_speech(info, fps=25)
    assert "re-rendered in all" in summary and '"source": "box"' in report
    assert sync_plot is None and "generator" in timings
    assert [row[1] for row in plot["data"]] == [1.0] * info["num_frames"]


def test_gradio_client_gets_the_error_message_not_a_traceback(demo_app, shared_data, speech, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(demo_app.url, download_files=str(tmp_path), verbose=False)
    with pytest.raises(Exception) as raised:
        client.predict(face_video=None, face_photo=handle_file(str(shared_data / "image" / "hallo_6.jpg")),
                       audio=handle_file(str(speech)), face_box="10 20 30", api_name="/generate")
    assert "a box needs 4 numbers" in str(raised.value) and "Traceback" not in str(raised.value)


def test_only_the_apps_own_files_are_served(demo_app, speech):
    for path in (PROJECT_ROOT / "README.md", speech, Path("/etc/passwd")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{demo_app.url}gradio_api/file={path}", timeout=10)
        assert refused.value.code == 403, path


# -- in-process: the parts that need no server -------------------------------------------------------------


def test_face_box_text_and_presence():
    from lipsync.demo import face_presence, parse_box_text
    from lipsync.face.coverage import CoverageReport

    assert parse_box_text("  ") is None
    assert parse_box_text("[1, 2, 30.5, 40]") == (1.0, 2.0, 30.5, 40.0)
    with pytest.raises(LipSyncError, match="four numbers"):
        parse_box_text("1 2 x 4")
    with pytest.raises(LipSyncError, match="empty"):
        parse_box_text("30 40 10 20")
    report = CoverageReport(source="detector", policy="interpolate", num_frames=10, frames_with_face=7,
                            frames_detected=5, frames_filled=2, detector_frames=3, gaps=((0, 1), (9, 9)),
                            filled=((4, 5),), cuts=(), tracks=())
    present, interpolated = face_presence(report, num_frames=99)
    assert present.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0]
    assert interpolated.tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    present, interpolated = face_presence(None, num_frames=3)
    assert present.tolist() == [1, 1, 1] and not interpolated.any()


def test_pool_loads_each_model_and_precision_once(tmp_path):
    from lipsync.demo import PipelinePool

    calls = []
    pool = PipelinePool({"a": tmp_path / "a.pth", "b": tmp_path / "b.pth"},
                        factory=lambda path, precision: calls.append((path.name, precision)) or object())
    first = pool.get(None, "fp32")
    assert pool.get("a", "fp32") is first and pool.get("b", "fp32") is not first
    pool.get("a", "bf16")
    assert calls == [("a.pth", "fp32"), ("b.pth", "fp32"), ("a.pth", "bf16")]
    with pytest.raises(LipSyncError, match="unknown model"):
        pool.get("c", "fp32")
    with pytest.raises(LipSyncError, match="lipsync download wav2lip_gan"):
        PipelinePool({}).get(None, "auto")


def test_page_without_checkpoints_says_what_to_run(tmp_path, monkeypatch, seeded_wav2lip_checkpoint):
    from lipsync.demo import (DemoSettings, PipelinePool, TempSpace, build_demo, cached_generator_checkpoints,
                              page_errors)

    monkeypatch.setenv("LIPSYNC_HOME", str(tmp_path / "home"))
    assert cached_generator_checkpoints() == {}
    found = cached_generator_checkpoints(seeded_wav2lip_checkpoint)
    assert found == {seeded_wav2lip_checkpoint.name: seeded_wav2lip_checkpoint.resolve()}

    space = TempSpace.create(tmp_path / "tmp", keep_s=60)
    demo = build_demo(PipelinePool({}), DemoSettings(concurrency=2, max_queue=3), space)
    assert (demo._queue.default_concurrency_limit, demo._queue.max_size) == (2, 3)
    texts = [str(block.value) for block in demo.blocks.values() if isinstance(block, gr.Markdown)]
    assert any("lipsync download wav2lip_gan" in text for text in texts)
    space.remove()
    assert not space.root.exists()

    def broken() -> None:
        raise RuntimeError("internal detail")

    with pytest.raises(gr.Error) as raised:
        page_errors(broken)()
    assert "internal detail" not in raised.value.message and "server's log" in raised.value.message


def test_demo_settings_are_checked(tmp_path):
    from lipsync.cli import build_parser
    from lipsync.demo import DemoSettings

    with pytest.raises(LipSyncError, match="max-duration"):
        DemoSettings(max_duration_s=0)
    with pytest.raises(LipSyncError, match="examples"):
        DemoSettings(examples_dir=tmp_path / "missing")
    args = build_parser().parse_args(["demo", "--port", "7999", "--max-upload-mb", "2"])
    assert (args.host, args.port, args.max_upload_mb) == ("127.0.0.1", 7999, 2.0)
