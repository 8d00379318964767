"""The Gradio demo: one page around `LipSyncPipeline`, built once and called per request.

    settings = DemoSettings(port=7860, max_duration_s=60)
    launch(settings)                        # what `lipsync demo` and demo/app.py run

Models are loaded when the app starts (the default checkpoint) or the first time another checkpoint or
precision is chosen, and then kept: a request never loads a model and never runs the command line.
Uploads, outputs and Gradio's own cache live in one temporary folder of this app; only that folder is
served, old files in it are swept while the app runs, and it is removed when the app stops.

Gradio is an optional dependency (`pip install -e ".[demo]"`): it is imported only when a page is built.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsync.config import EXTEND_MODES, MISSING_FACE_POLICIES, PRECISIONS, InferenceConfig, RuntimeConfig
from lipsync.errors import LipSyncError
from lipsync.face.coverage import CoverageReport
from lipsync.io.video import VIDEO_EXTENSIONS

if TYPE_CHECKING:
    import gradio as gr
    import pandas as pd

    from lipsync.pipeline import InferenceResult, LipSyncPipeline

logger = logging.getLogger(__name__)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus")
DOWNLOAD_HINT = "lipsync download wav2lip_gan"
INTERNAL_ERROR = "the lip-sync failed with an internal error; the details are in the server's log"

# Called with the output video and the face box the request gave (None: detected), returns SyncNet's framewise
# confidence (`lipsync.eval.Evaluator.frame_confidence`); the demo plots it under the face coverage.
SyncScorer = Callable[[Path, "tuple[float, float, float, float] | None"], Sequence[float]]


@dataclass(frozen=True)
class DemoSettings:
    """How the demo is served (the command line fills it; `launch` reads it).

    Attributes:
        host, port: where the server listens (127.0.0.1: this machine only).
        checkpoint: a generator checkpoint (file or manifest name) offered first, besides the cached ones.
        device: where models run ("auto", "cpu", "cuda", "cuda:N", "mps").
        precision: the precision preselected in the page ("auto", "fp32", "bf16").
        max_upload_bytes: largest file accepted per upload (Gradio refuses bigger ones in the page).
        max_duration_s: longest speech accepted, in seconds. The output lasts as long as the speech (a longer
            face video is cut), so this bounds the work per request; `max_upload_bytes` bounds the rest.
        concurrency: requests lip-synced at the same time.
        max_queue: requests waiting beyond those; more are refused until the queue drains.
        examples_dir: a folder of face videos, photos and speech offered as examples (the project ships none).
        temp_dir: where the app's temporary folder is created (default: the system's temporary folder).
        keep_outputs_s: uploads and outputs older than this are deleted while the app runs.
    """

    host: str = "127.0.0.1"
    port: int = 7860
    checkpoint: str | None = None
    device: str = "auto"
    precision: str = "auto"
    max_upload_bytes: int = 200_000_000
    max_duration_s: float = 120.0
    concurrency: int = 1
    max_queue: int = 16
    examples_dir: Path | None = None
    temp_dir: Path | None = None
    keep_outputs_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise LipSyncError(f"--port must be in [0, 65535], got {self.port}")
        if self.max_upload_bytes < 1:
            raise LipSyncError(f"--max-upload-mb must be positive, got {self.max_upload_bytes} bytes")
        if not self.max_duration_s > 0:
            raise LipSyncError(f"--max-duration must be positive, got {self.max_duration_s}")
        if self.concurrency < 1 or self.max_queue < 1:
            raise LipSyncError("--concurrency and --queue-size must be at least 1")
        if self.keep_outputs_s <= 0:
            raise LipSyncError(f"outputs must be kept a positive time, got {self.keep_outputs_s} s")
        if self.examples_dir is not None and not Path(self.examples_dir).is_dir():
            raise LipSyncError(f"--examples folder not found: {self.examples_dir}")
        RuntimeConfig(device=self.device, precision=self.precision)   # checks both names


# -- which checkpoints, and one pipeline per (checkpoint, precision) --------------------------------------


def cached_generator_checkpoints(extra: str | Path | None = None) -> dict[str, Path]:
    """The generator checkpoints available without a download, by the label shown in the page.

    Args:
        extra: a checkpoint named on the command line (file or manifest name); listed first.

    Returns:
        {label: file}: `extra` (its name as given), then the manifest's generator checkpoints that are
        downloaded (by manifest name), then our `.safetensors` generators in the cache folder (by file name).

    Raises:
        LipSyncError: `extra` does not exist or is not downloaded.
    """
    from lipsync.generators import _ARCHITECTURES
    from lipsync.weights import checkpoints_dir, load_manifest, read_safetensors_metadata, resolve_checkpoint

    generator_architectures = set(_ARCHITECTURES.values())
    found: dict[str, Path] = {}
    if extra is not None:
        found[Path(str(extra)).name] = resolve_checkpoint(extra).resolve()
    for entry in load_manifest().values():
        if entry.architecture in generator_architectures and entry.path.exists():
            found.setdefault(entry.name, entry.path.resolve())
    folder = checkpoints_dir()
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            architecture = read_safetensors_metadata(path).get("arch", "")
        except Exception as error:  # safetensors raises several unrelated types for a damaged file
            logger.warning("skipping %s: %s", path, error)
            continue
        if architecture in generator_architectures:
            found.setdefault(path.name, path.resolve())
    # One entry per file, under its first label.
    unique: dict[str, Path] = {}
    for label, path in found.items():
        if path not in unique.values():
            unique[label] = path
    return unique


PipelineFactory = Callable[[Path, str], "LipSyncPipeline"]


class PipelinePool:
    """Loads each (checkpoint, precision) pipeline once, on first use, and keeps it.

    Args:
        checkpoints: {label: file} offered in the page.
        device: where every pipeline runs.
        factory: builds a pipeline from (checkpoint file, precision); default `LipSyncPipeline.from_pretrained`.
    """

    def __init__(self, checkpoints: Mapping[str, Path], device: str = "auto",
                 factory: PipelineFactory | None = None) -> None:
        self.checkpoints = dict(checkpoints)
        self.device = device
        self._factory = factory or self._from_pretrained
        self._pipelines: dict[tuple[Path, str], LipSyncPipeline] = {}
        self._lock = threading.Lock()

    def _from_pretrained(self, checkpoint: Path, precision: str) -> "LipSyncPipeline":
        from lipsync.pipeline import LipSyncPipeline

        return LipSyncPipeline.from_pretrained(checkpoint, runtime=RuntimeConfig(device=self.device,
                                                                                 precision=precision))

    @property
    def default_label(self) -> str | None:
        return next(iter(self.checkpoints), None)

    def get(self, label: str | None, precision: str) -> "LipSyncPipeline":
        """The pipeline for a checkpoint label and precision, loading it the first time only.

        Raises:
            LipSyncError: no checkpoint at all (the message says what to download), or an unknown label.
        """
        if not self.checkpoints:
            raise LipSyncError(f"no generator checkpoint is in the cache; run: {DOWNLOAD_HINT} "
                               f"(or start the demo with --checkpoint FILE)")
        label = label or self.default_label
        if label not in self.checkpoints:
            raise LipSyncError(f"unknown model {label!r}; choose one of {', '.join(self.checkpoints)}")
        key = (self.checkpoints[label], precision)
        with self._lock:   # two requests choosing a new model at once load it once
            if key not in self._pipelines:
                logger.info("loading %s (%s)", key[0], precision)
                self._pipelines[key] = self._factory(*key)
            return self._pipelines[key]

    @property
    def loaded(self) -> list[tuple[Path, str]]:
        """(checkpoint, precision) pairs loaded so far."""
        return list(self._pipelines)


# -- request helpers (no Gradio here) ---------------------------------------------------------------------


def parse_box_text(text: str | None) -> tuple[float, float, float, float] | None:
    """ "x1 y1 x2 y2" (spaces or commas) -> a box; empty -> None (detect the face)."""
    from lipsync.face.boxes import parse_box

    if text is None or not text.strip():
        return None
    parts = [part for part in re.split(r"[\s,]+", text.strip().strip("[]()")) if part]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise LipSyncError(f"face box {text.strip()!r} must be four numbers: x1 y1 x2 y2 (pixels)") from None
    return parse_box(values)


def media_duration(path: str | Path, what: str) -> float:
    """Length of a media file in seconds, from its header, else from its packets (nothing is decoded).

    Raises:
        LipSyncError: unreadable file.
    """
    from lipsync.audio.decode import open_media

    with open_media(path, what) as container:
        if container.duration is not None and container.duration > 0:
            return container.duration / 1_000_000   # AV_TIME_BASE
        end = 0.0
        streams = [stream for stream in container.streams if stream.type in ("audio", "video")]
        for packet in container.demux(*streams):   # webcam recordings carry no duration in their header
            if packet.pts is not None and packet.time_base is not None:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        return end


def check_duration(path: str | Path, what: str, limit_s: float) -> None:
    """Refuse media longer than `limit_s` with a message naming the limit."""
    seconds = media_duration(path, what)
    if seconds > limit_s:
        raise LipSyncError(f"the {what} lasts {seconds:.1f} s; this demo accepts at most {limit_s:g} s")


def face_presence(coverage: CoverageReport | None, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame face presence for the plot.

    Args:
        coverage: the pipeline's report; None (one fixed box) means a face in every frame.
        num_frames: frames to show when there is no report.

    Returns:
        present: (n,) float 1.0 where the face is re-rendered, 0.0 where the frame passes through.
        interpolated: (n,) float 1.0 where the box was drawn across a short gap, else 0.0.
    """
    if coverage is None:
        return np.ones(num_frames), np.zeros(num_frames)
    present = np.ones(coverage.num_frames)
    interpolated = np.zeros(coverage.num_frames)
    for first, last in coverage.gaps:
        present[first:last + 1] = 0.0
    for first, last in coverage.filled:
        interpolated[first:last + 1] = 1.0
    return present, interpolated


def coverage_table(coverage: CoverageReport | None, num_frames: int) -> "pd.DataFrame":
    """Long-form table (frame, value, series) for the coverage line plot."""
    import pandas as pd

    present, interpolated = face_presence(coverage, num_frames)
    frames = np.arange(len(present))
    parts = [pd.DataFrame({"frame": frames, "value": present, "series": "face found"})]
    if interpolated.any():
        parts.append(pd.DataFrame({"frame": frames, "value": interpolated, "series": "interpolated"}))
    return pd.concat(parts, ignore_index=True)


def coverage_text(result: "InferenceResult") -> str:
    """The page's coverage summary (Markdown)."""
    if result.coverage is None:
        return (f"Face box given: the face was re-rendered in all {result.frames_with_face} of "
                f"{result.num_frames} frames.")
    return result.coverage.summary()


def coverage_json(result: "InferenceResult") -> str:
    if result.coverage is None:
        return '{"source": "box", "note": "one fixed face box: every frame has the face"}'
    return result.coverage.to_json()


def _safe_stem(path: str | Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem)[:60] or "face"


class _ProgressBar:
    """The part of tqdm the pipeline uses, shown by a `gr.Progress` (one bar at a time)."""

    def __init__(self, progress: Any, total: float | None = None, unit: str = "it", desc: str | None = None,
                 initial: float = 0, **_: Any) -> None:
        self._progress = progress
        self.total, self.unit, self.desc, self.n = total, unit, desc, initial
        self.postfix = ""
        self._show()

    def update(self, count: float = 1) -> None:
        self.n += count
        self._show()

    def set_postfix(self, *args: Any, **values: Any) -> None:
        self.postfix = ", ".join([str(arg) for arg in args] + [f"{key}={value}" for key, value in values.items()])
        self._show()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc
        self._show()

    def refresh(self) -> None:
        self._show()

    def close(self) -> None:
        pass

    def _show(self) -> None:
        desc = f"{self.desc} ({self.postfix})" if self.postfix and self.desc else (self.desc or self.postfix)
        total = int(math.ceil(self.total)) if self.total else None     # unknown (or empty): no percentage
        done = int(min(self.n, total)) if total else int(self.n)
        self._progress((done, total), desc=desc, unit=self.unit)


def gradio_tqdm(progress: Any) -> Callable[..., _ProgressBar]:
    """A tqdm-like class for the pipeline's `progress` argument that drives the page's progress bar."""
    return functools.partial(_ProgressBar, progress)


def page_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a request handler so that the page shows a message, never a traceback.

    A `LipSyncError` shows its own one-line message; anything else is logged with its traceback on the
    server and shows a generic message.
    """
    import gradio as gr

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except LipSyncError as error:
            raise gr.Error(str(error), duration=None, print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            logger.exception("demo request failed")
            raise gr.Error(INTERNAL_ERROR, duration=None, print_exception=False) from None

    return wrapped


# -- the app's temporary folder ---------------------------------------------------------------------------


@dataclass
class TempSpace:
    """This app's temporary folder: Gradio's uploads and cache (`uploads/`) and our outputs (`outputs/`).

    Args:
        root: the folder (created by `create`, removed by `remove`).
        keep_s: files older than this are swept.
    """

    root: Path
    keep_s: float = 3600.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, parent: Path | None, keep_s: float) -> "TempSpace":
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="lipsync-demo-", dir=parent)).resolve()
        (root / "uploads").mkdir()
        (root / "outputs").mkdir()
        return cls(root, keep_s)

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def new_output_dir(self) -> Path:
        """A fresh folder for one request's output (sweeping expired ones first)."""
        self.sweep()
        folder = self.root / "outputs" / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def sweep(self) -> None:
        """Delete request folders older than `keep_s` (Gradio's `delete_cache` sweeps its own cache)."""
        limit = time.time() - self.keep_s
        with self._lock:
            for folder in (self.root / "outputs").iterdir():
                if folder.stat().st_mtime < limit:
                    shutil.rmtree(folder, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# -- the page -----------------------------------------------------------------------------------------------


def _example_files(folder: Path | None) -> tuple[list[str], list[str], list[str]]:
    if folder is None:
        return [], [], []
    files = sorted(path for path in Path(folder).iterdir() if path.is_file())
    pick = lambda suffixes: [str(path) for path in files if path.suffix.lower() in suffixes]  # noqa: E731
    return pick(VIDEO_EXTENSIONS), pick(PHOTO_SUFFIXES), pick(AUDIO_SUFFIXES)


def build_demo(pool: PipelinePool, settings: DemoSettings, space: TempSpace | None = None,
               sync_scorer: SyncScorer | None = None) -> "gr.Blocks":
    """The Blocks page around the pipelines of `pool`, queued with the settings' limits; its endpoint is
    `/generate`.

    Args:
        pool: the loaded (and loadable) pipelines.
        settings: limits and examples.
        space: the app's temporary folder for outputs (default: a new one under `settings.temp_dir`).
        sync_scorer: per-frame sync confidence of an output (the evaluator's hook); None shows that it is
            not available.
    """
    import gradio as gr

    space = space or TempSpace.create(settings.temp_dir, settings.keep_outputs_s)
    defaults = InferenceConfig()

    def generate(face_video: str | None, face_photo: str | None, audio: str | None, model: str | None,
                 precision: str, face_box: str, on_missing_face: str, pad_top: float, pad_bottom: float,
                 pad_left: float, pad_right: float, extend: str, photo_fps: float,
                 progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        return page_errors(_generate)(face_video, face_photo, audio, model, precision, face_box, on_missing_face,
                                      (pad_top, pad_bottom, pad_left, pad_right), extend, photo_fps, progress)

    def _generate(face_video: str | None, face_photo: str | None, audio: str | None, model: str | None,
                  precision: str, face_box: str, on_missing_face: str, pads: tuple[float, ...], extend: str,
                  photo_fps: float, progress: Any) -> tuple[Any, ...]:
        if face_video and face_photo:
            raise LipSyncError("give either a face video or a photo, not both (clear one of them)")
        face = face_video or face_photo
        if not face:
            raise LipSyncError("add a face video or a photo")
        if not audio:
            raise LipSyncError("add speech: upload an audio file or record one")
        check_duration(audio, "speech", settings.max_duration_s)
        if any(value is None or value != value for value in pads):
            raise LipSyncError("pads must be four whole numbers of pixels")
        config = InferenceConfig(box=parse_box_text(face_box), on_missing_face=on_missing_face,
                                 pads=tuple(int(value) for value in pads), extend=extend,
                                 fps=float(photo_fps or defaults.fps))
        progress(0, desc="loading the model")
        pipeline = pool.get(model, precision)
        output = space.new_output_dir() / f"{_safe_stem(face)}_lipsync.mp4"
        result = pipeline(face, audio, output, config, progress=gradio_tqdm(progress))
        status = (f"{result.num_frames} frames, {result.duration:.2f} s at {float(result.frame_rate):.3g} fps; "
                  f"face re-rendered in {result.frames_with_face}. Stage times: "
                  + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in sorted(result.stage_seconds.items())))
        sync_plot = None
        if sync_scorer is not None:
            import pandas as pd

            scores = np.asarray(sync_scorer(result.output, config.box), dtype=float)
            sync_plot = pd.DataFrame({"frame": np.arange(len(scores)), "confidence": scores})
        return (str(result.output), coverage_text(result), coverage_json(result),
                coverage_table(result.coverage, result.num_frames), sync_plot, status)

    videos, photos, sounds = _example_files(settings.examples_dir)
    limit_mb = settings.max_upload_bytes / 1e6
    with gr.Blocks(title="lip-sync demo", analytics_enabled=False,
                   delete_cache=(max(60, int(settings.keep_outputs_s) // 4), int(settings.keep_outputs_s))) as demo:
        gr.Markdown("# Lip-sync\nRe-render the mouth in a face video or photo so that it follows the speech. "
                    f"Uploads up to {limit_mb:.3g} MB each; speech up to {settings.max_duration_s:g} s.")
        if not pool.checkpoints:
            gr.Markdown(f"**No generator checkpoint is in the cache.** Run `{DOWNLOAD_HINT}` and restart the "
                        f"demo (or start it with `--checkpoint FILE`).", elem_id="no-checkpoint")
        with gr.Row():
            with gr.Column():
                with gr.Tabs():
                    with gr.Tab("Face video", id="video-tab"):
                        face_video = gr.Video(label="Face video", sources=["upload", "webcam"],
                                              include_audio=True, elem_id="face-video")
                    with gr.Tab("Photo", id="photo-tab"):
                        face_photo = gr.Image(label="Face photo", sources=["upload", "webcam"], type="filepath",
                                              image_mode=None, elem_id="face-photo")
                audio = gr.Audio(label="Speech", sources=["upload", "microphone"], type="filepath",
                                 elem_id="speech")
                with gr.Row():
                    model = gr.Dropdown(list(pool.checkpoints), value=pool.default_label, label="Model",
                                        info="generator checkpoints in the cache", elem_id="model")
                    precision = gr.Radio(list(PRECISIONS), value=settings.precision, label="Precision",
                                         elem_id="precision")
                with gr.Accordion("Options", open=False, elem_id="options"):
                    face_box = gr.Textbox(label="Face box (x1 y1 x2 y2 pixels; empty: detect the face)",
                                          placeholder="empty: detect", elem_id="face-box")
                    on_missing_face = gr.Radio(list(MISSING_FACE_POLICIES), value=defaults.on_missing_face,
                                               label="Frames without a face", elem_id="on-missing-face")
                    with gr.Row():
                        pad_inputs = [gr.Number(value, label=f"Pad {side}", precision=0, minimum=-512,
                                                maximum=512, min_width=80)
                                      for value, side in zip(defaults.pads, ("top", "bottom", "left", "right"))]
                    extend = gr.Radio(list(EXTEND_MODES), value=defaults.extend,
                                      label="Video shorter than the speech")
                    photo_fps = gr.Number(defaults.fps, label="Frame rate for a photo", minimum=1, maximum=240)
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                output_video = gr.Video(label="Lip-synced video", interactive=False, buttons=["download"],
                                        elem_id="output-video")
                summary = gr.Markdown(label="coverage summary", elem_id="coverage-summary")
                coverage_plot = gr.LinePlot(x="frame", y="value", color="series", y_lim=[-0.05, 1.05],
                                            x_title="source frame", y_title="face",
                                            label="Face coverage per frame", elem_id="coverage-plot")
                sync_plot = gr.LinePlot(x="frame", y="confidence", label="Sync confidence per frame",
                                        visible=sync_scorer is not None, elem_id="sync-plot")
                if sync_scorer is None:
                    gr.Markdown("*Per-frame sync confidence: not available yet (it needs the SyncNet weights: "
                                "run `lipsync download syncnet_v2` and restart the demo).*", elem_id="sync-note")
                with gr.Accordion("Coverage report (JSON)", open=False):
                    report = gr.Code(language="json", label="coverage report", elem_id="coverage-report")
                status = gr.Markdown(label="timings", elem_id="status")
        if videos:
            gr.Examples([[path] for path in videos], inputs=[face_video], label="Example face videos")
        if photos:
            gr.Examples([[path] for path in photos], inputs=[face_photo], label="Example photos")
        if sounds:
            gr.Examples([[path] for path in sounds], inputs=[audio], label="Example speech")
        button.click(generate,
                     inputs=[face_video, face_photo, audio, model, precision, face_box, on_missing_face,
                             *pad_inputs, extend, photo_fps],
                     outputs=[output_video, summary, report, coverage_plot, sync_plot, status],
                     api_name="generate")
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.max_queue)
    return demo


def launch(settings: DemoSettings, pool: PipelinePool | None = None, sync_scorer: SyncScorer | None = None
           ) -> None:
    """Load the default model, serve the page until interrupted (Ctrl-C or SIGTERM), then clean up.

    Args:
        settings: host, port, limits, examples.
        pool: pipelines to serve; default: the cached generator checkpoints (plus `settings.checkpoint`).
        sync_scorer: see `build_demo`; default: SyncNet's when `syncnet_v2` is in the cache.
    """
    import importlib.util

    if importlib.util.find_spec("gradio") is None:   # found, not imported: GRADIO_TEMP_DIR is set first
        raise LipSyncError('the demo needs gradio; install it with: pip install -e ".[demo]"')
    pool = pool or PipelinePool(cached_generator_checkpoints(settings.checkpoint), device=settings.device)
    if pool.checkpoints:
        pool.get(pool.default_label, settings.precision)   # load at start-up, not on the first request
    else:
        logger.warning("no generator checkpoint in the cache; the page will say: run %s", DOWNLOAD_HINT)
    if sync_scorer is None:
        from lipsync.eval import cached_sync_scorer

        sync_scorer = cached_sync_scorer(settings.device)
    space = TempSpace.create(settings.temp_dir, settings.keep_outputs_s)
    # Gradio keeps uploads and served copies under GRADIO_TEMP_DIR (read when its modules and apps are
    # created): pointing it into our folder makes that folder the only place files are served from.
    os.environ["GRADIO_TEMP_DIR"] = str(space.uploads)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo = build_demo(pool, settings, space, sync_scorer)
        demo.launch(server_name=settings.host, server_port=settings.port, max_file_size=settings.max_upload_bytes,
                    allowed_paths=[str(space.root)], show_error=False, share=False, ssr_mode=False,
                    inbrowser=False)
    finally:
        space.remove()


def _interrupt(signum: int, frame: Any) -> None:
    # Gradio's server loop stops on KeyboardInterrupt and `launch` then removes its files; a second
    # SIGTERM (from a supervisor that repeats it) must not cut that clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt
