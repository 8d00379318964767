"""The `lipsync` command: argparse -> frozen configs -> the shared core. Nothing else happens here.

User errors (`LipSyncError`, bad flags) print one line on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

from lipsync.errors import LipSyncError
from lipsync.utils.allocator import reuse_freed_memory

EXIT_USAGE = 2
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`lipsync infer: error: ...`) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _defaults(config_class: type) -> dict[str, object]:
    return {item.name: item.default for item in fields(config_class)}


def _add_infer(commands: argparse._SubParsersAction) -> None:
    from lipsync.config import (EXTEND_MODES, MEL_TIMINGS, MISSING_FACE_POLICIES, PRECISIONS, SMOOTHING_LEVELS,
                                InferenceConfig, RuntimeConfig)
    from lipsync.generators import GENERATOR_MODELS

    defaults = _defaults(InferenceConfig)
    runtime_defaults = _defaults(RuntimeConfig)
    parser = commands.add_parser("infer", help="lip-sync a face video or photo to speech",
                                 description="Re-render the mouth in FACE so that it follows AUDIO.")
    parser.add_argument("--face", required=True, type=Path, help="face video or photo")
    parser.add_argument("--audio", required=True, type=Path,
                        help="speech: wav, mp3, m4a, flac, ogg, or a video with an audio track")
    parser.add_argument("--outfile", type=Path, default=None,
                        help="output .mp4 (default: FACE-STEM_lipsync.mp4 in the current directory)")
    parser.add_argument("--model", choices=GENERATOR_MODELS, default=None,
                        help="generator architecture (default: as recorded in the checkpoint, else wav2lip)")
    parser.add_argument("--checkpoint", default=None,
                        help="generator weights: a file or a manifest name (default: the cached wav2lip_gan)")
    parser.add_argument("--device", default=runtime_defaults["device"], help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", choices=PRECISIONS, default=runtime_defaults["precision"],
                        help="auto picks bf16 where the hardware runs it fast")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                        help="frames per generator call (default: 8 on CPU, 128 on GPU)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"),
                       help="one face box in pixels for every frame (skips detection)")
    where.add_argument("--boxes", type=Path, metavar="FILE.json",
                       help="JSON list, one entry per decoded frame: null or [x1, y1, x2, y2] (skips detection)")
    parser.add_argument("--pads", type=int, nargs=4, default=list(defaults["pads"]),
                        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), help="pixels added to detected boxes")
    parser.add_argument("--smooth", choices=SMOOTHING_LEVELS, default=defaults["smooth"],
                        help="steady detected boxes over time (one-euro filter)")
    parser.add_argument("--no-smooth", action="store_true", help="same as --smooth off")
    parser.add_argument("--on-missing-face", choices=MISSING_FACE_POLICIES, default=defaults["on_missing_face"],
                        help="frames without a face: leave them unchanged, interpolate boxes across gaps of at "
                             "most --max-gap frames, or stop with an error naming the frames")
    parser.add_argument("--max-gap", type=int, default=defaults["max_gap"],
                        help="longest gap (frames) that --on-missing-face interpolate fills")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--face-index", type=int, default=None, metavar="N",
                       help="lip-sync the N-th face from the left (0-based) where faces first appear "
                            "(default: the largest face)")
    which.add_argument("--select-box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"),
                       help="lip-sync the face that overlaps this box most")
    parser.add_argument("--detect-every", type=int, default=defaults["detect_every"], metavar="K",
                        help="run the face detector on every K-th frame (and at scene cuts); track in between")
    parser.add_argument("--detect-max-side", type=int, default=defaults["detect_max_side"],
                        help="the detector sees frames shrunk to this longer side")
    parser.add_argument("--detect-threshold", type=float, default=defaults["detect_threshold"],
                        help="minimum face detection score")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE.json",
                        help="write the face coverage report (frames with and without a face, gaps, tracks, "
                             "scene cuts) as JSON")
    parser.add_argument("--no-cache", action="store_true",
                        help="detect again even if an earlier run cached this file's faces")
    parser.add_argument("--fps", type=float, default=defaults["fps"], help="frame rate of a photo's output")
    parser.add_argument("--extend", choices=EXTEND_MODES, default=defaults["extend"],
                        help="continue a video shorter than the audio by playing it back and forth, looping, "
                             "or freezing the last frame")
    parser.add_argument("--mel-timing", choices=MEL_TIMINGS, default=defaults["mel_timing"],
                        help="audio window per frame: Wav2Lip's training alignment, or inference.py's")
    parser.add_argument("--crf", type=int, default=defaults["crf"], help="x264 quality, 0-51 (lower is better)")
    parser.add_argument("--preset", default=defaults["preset"], help="x264 speed preset")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _COMMANDS["infer"] = _run_infer


def _run_infer(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lipsync.config import InferenceConfig, RuntimeConfig
    from lipsync.face.boxes import parse_box, read_boxes_file
    from lipsync.io.atomic import atomic_write_bytes
    from lipsync.pipeline import LipSyncPipeline

    if args.report is not None and args.box is not None:
        raise LipSyncError("--report describes detected faces or --boxes; with --box every frame uses that box")
    boxes = None
    if args.boxes is not None:
        track = read_boxes_file(args.boxes)
        boxes = tuple(None if row[0] != row[0] else tuple(float(value) for value in row) for row in track)
    config = InferenceConfig(
        batch_size=args.batch_size, pads=tuple(args.pads), box=parse_box(args.box) if args.box else None,
        boxes=boxes, smooth="off" if args.no_smooth else args.smooth, fps=args.fps, extend=args.extend,
        mel_timing=args.mel_timing, detect_max_side=args.detect_max_side, crf=args.crf, preset=args.preset,
        on_missing_face=args.on_missing_face, max_gap=args.max_gap, face_index=args.face_index,
        select_box=parse_box(args.select_box) if args.select_box else None, detect_every=args.detect_every,
        detect_threshold=args.detect_threshold, detection_cache=not args.no_cache,
    )
    runtime = RuntimeConfig(device=args.device, precision=args.precision, num_threads=args.threads)
    outfile = args.outfile or Path(f"{args.face.stem}_lipsync.mp4")
    if outfile.suffix.lower() != ".mp4":
        raise LipSyncError(f"--outfile must end in .mp4, got {outfile}")
    pipeline = LipSyncPipeline.from_pretrained(args.checkpoint, model=args.model, runtime=runtime)
    result = pipeline(args.face, args.audio, outfile, config, progress=None if args.quiet else tqdm)
    print(f"wrote {result.output} ({result.num_frames} frames, {result.duration:.2f} s, "
          f"face re-rendered in {result.frames_with_face})")
    if result.coverage is not None:
        print(result.coverage.summary())
        if args.report is not None:
            atomic_write_bytes(args.report, (result.coverage.to_json() + "\n").encode())
    return 0


def _add_download(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("download", help="fetch checkpoints into the cache (sha256-verified)",
                                 description="Download checkpoints listed in the manifest into "
                                             "$LIPSYNC_HOME/checkpoints (default ~/.cache/lipsync).")
    parser.add_argument("names", nargs="*", help="checkpoint names (see --list)")
    parser.add_argument("--list", action="store_true", help="list the manifest and what is cached")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="accept a checkpoint that has no published sha256")
    _COMMANDS["download"] = _run_download


def _run_download(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lipsync.weights import download, load_manifest, manifest_entry

    if args.list or not args.names:
        for entry in load_manifest().values():
            state = "cached" if entry.path.exists() else "-"
            size = f"{entry.bytes / 1e6:.0f} MB" if entry.bytes else "size unknown"
            print(f"{entry.name:<22} {state:<7} {size:>12}  {entry.licence}")
        return 0
    for name in args.names:
        path = download(manifest_entry(name), tqdm_class=tqdm, allow_unverified=args.allow_unverified)
        print(f"{name}: {path}")
    return 0


def _add_preprocess(commands: argparse._SubParsersAction) -> None:
    from lipsync.config import InferenceConfig, MISSING_FACE_POLICIES, SMOOTHING_LEVELS

    defaults = _defaults(InferenceConfig)
    parser = commands.add_parser(
        "preprocess", help="videos -> training clips (face crops, audio, mel, landmarks)",
        description="Turn a folder of videos, a list file (one video per line) or the LRS2 layout (main/, "
                    "pretrain/ and the official train/val/test lists) into the clip format the training "
                    "recipes read. Resumable; failures are recorded in OUT/failures.jsonl and skipped.")
    parser.add_argument("input", type=Path, help="folder, list file, or LRS2 root (mvlrs_v1)")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--device", default="cpu", help="where S3FD runs in each worker")
    parser.add_argument("--detect-every", type=int, default=defaults["detect_every"], metavar="K",
                        help="S3FD on every K-th frame and at scene cuts, tracking in between")
    parser.add_argument("--detect-max-side", type=int, default=defaults["detect_max_side"])
    parser.add_argument("--pads", type=int, nargs=4, default=list(defaults["pads"]),
                        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
    parser.add_argument("--smooth", choices=SMOOTHING_LEVELS, default=defaults["smooth"])
    parser.add_argument("--on-missing-face", choices=MISSING_FACE_POLICIES, default="interpolate",
                        help="gaps in the face track (default interpolate: short gaps are filled)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _COMMANDS["preprocess"] = _run_preprocess


def _run_preprocess(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lipsync.config import InferenceConfig
    from lipsync.face.detect import find_s3fd_weights
    from lipsync.train.preprocess import DetectionTrackerFactory, preprocess

    try:
        find_s3fd_weights()    # fail before starting workers when the detector is missing
    except LipSyncError:
        raise LipSyncError("preprocess needs the S3FD face detector; run: lipsync download s3fd") from None
    config = InferenceConfig(detect_every=args.detect_every, detect_max_side=args.detect_max_side,
                             pads=tuple(args.pads), smooth=args.smooth, on_missing_face=args.on_missing_face)
    counts = preprocess(args.input, args.out, DetectionTrackerFactory(config, args.device), workers=args.workers,
                        progress=None if args.quiet else tqdm)
    print(f"preprocessed into {args.out}: {counts['done']} new, {counts['skipped']} already there, "
          f"{counts['failed']} failed" + (f" (see {args.out / 'failures.jsonl'})" if counts["failed"] else ""))
    return 0


def _training_options() -> argparse.ArgumentParser:
    """Options every `lipsync train` recipe shares: the loop's TrainConfig."""
    from lipsync.config import PRECISIONS, TrainConfig

    defaults = _defaults(TrainConfig)
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--data", required=True, help="preprocessed dataset (lipsync preprocess --out)")
    parent.add_argument("--run-dir", required=True, type=Path,
                        help="checkpoints, metrics.jsonl and samples go here; an existing run resumes")
    parent.add_argument("--steps", type=int, default=defaults["max_steps"], help="optimiser steps to reach")
    parent.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="samples per process")
    parent.add_argument("--accum", type=int, default=defaults["grad_accum_steps"], help="gradient accumulation")
    parent.add_argument("--device", default=defaults["device"], help="auto, cpu or cuda (torchrun: one GPU per rank)")
    parent.add_argument("--precision", choices=PRECISIONS, default=defaults["precision"],
                        help="auto: bf16 autocast on GPUs that support it, fp32 elsewhere")
    parent.add_argument("--workers", type=int, default=defaults["num_workers"], help="data loader workers")
    parent.add_argument("--seed", type=int, default=defaults["seed"])
    parent.add_argument("--log-every", type=int, default=defaults["log_every"])
    parent.add_argument("--val-every", type=int, default=defaults["val_every"])
    parent.add_argument("--val-batches", type=int, default=defaults["val_batches"])
    parent.add_argument("--checkpoint-every", type=int, default=defaults["checkpoint_every"])
    parent.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override any recipe setting, e.g. --set optim.lr=3e-4 (repeatable)")
    parent.add_argument("--quiet", action="store_true", help="no progress bar")
    return parent


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model (runs under torchrun for several GPUs/processes)",
                                 description="Train with the one training loop. Under torchrun every process "
                                             "trains a shard of each batch (DistributedDataParallel).")
    recipes = parser.add_subparsers(dest="recipe", required=True, parser_class=_OneLineParser)
    common = _training_options()
    syncnet = recipes.add_parser("syncnet", parents=[common], help="a SyncNet expert (Wav2Lip's loss)")
    syncnet.add_argument("--frames", type=int, choices=(5, 16), default=5,
                         help="5: Wav2Lip's expert; 16: the MARLIN generator's expert")
    syncnet.add_argument("--init", default=None, help="weights to start from (e.g. lipsync_expert.pth)")
    from lipsync.train.recipes.marlin_pretrain import MASK_STRATEGIES, PRETRAIN_ARCHITECTURES

    marlin = recipes.add_parser("marlin", parents=[common],
                                help="pretrain a MARLIN encoder (masked reconstruction + WGAN critic)",
                                description="MARLIN pretraining on preprocessed face clips (faces224 and, for "
                                            "Fasking, landmarks68). The learning rate is the base rate x "
                                            "batch x accumulation x processes / 256.")
    marlin.add_argument("--config", choices=tuple(PRETRAIN_ARCHITECTURES), default="vit_base",
                        help="architecture (tiny: 64 px, for smoke runs)")
    marlin.add_argument("--mask", choices=MASK_STRATEGIES, default="fasking",
                        help="masking: facial regions first (fasking), or VideoMAE-style tube/random/frame")
    marlin.add_argument("--grad-checkpointing", action="store_true",
                        help="recompute transformer blocks in backward (ViT-L on small GPUs)")
    marlin.add_argument("--init", default=None,
                        help="MARLIN weights to start from (*.full.pt, *.encoder.pt or our .safetensors)")
    generator = recipes.add_parser(
        "generator", parents=[common], help="a lip-sync generator (Wav2Lip or MARLIN)",
        description="Train a lip-sync generator with Wav2Lip's losses and schedule: L1, the frozen SyncNet "
                    "expert's sync loss (switched on once the validation sync loss falls below 0.75), and the "
                    "visual-quality discriminator (GAN).")
    generator.add_argument("--model", choices=("wav2lip", "marlin"), default="marlin",
                           help="wav2lip: the classic generator (5-frame windows); marlin: MARLIN encoder, T=16")
    generator.add_argument("--config", choices=("vit_small", "vit_base", "vit_large", "tiny"), default="vit_base",
                           help="MARLIN encoder size for --model marlin")
    generator.add_argument("--marlin-checkpoint", default=None,
                           help="MARLIN encoder weights to start from (file or manifest name, e.g. "
                                "marlin_vit_base_ytf); default: from scratch (the 'Wav2Lip + ViT' baseline)")
    generator.add_argument("--expert", default=None,
                           help="frozen SyncNet expert for the sync loss (lipsync_expert for wav2lip; a 16-frame "
                                "expert from lipsync train syncnet --frames 16 for marlin)")
    generator.add_argument("--expert-batchnorm", choices=("running", "batch"), default="running",
                           help="the expert's BatchNorm: stored statistics (default) or each batch's, as Wav2Lip "
                                "did")
    generator.add_argument("--no-disc", action="store_true", help="train without the visual-quality discriminator")
    generator.add_argument("--init", default=None, help="generator weights to start from (fine-tuning)")
    _COMMANDS["train"] = _run_train


def _run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lipsync.config import TrainConfig, apply_overrides
    from lipsync.train.loop import Trainer
    from lipsync.train.recipes import RECIPES

    recipe_class, config_class = RECIPES[args.recipe]
    if args.recipe == "syncnet":
        recipe_config = config_class(data=args.data, num_frames=args.frames, init_checkpoint=args.init)
    elif args.recipe == "generator":
        recipe_config = config_class(data=args.data, model=args.model, marlin=args.config,
                                     marlin_checkpoint=args.marlin_checkpoint, init_checkpoint=args.init,
                                     expert_checkpoint=args.expert, expert_batchnorm=args.expert_batchnorm,
                                     discriminator=not args.no_disc)
    elif args.recipe == "marlin":
        recipe_config = config_class(data=args.data, config=args.config, mask=args.mask,
                                     grad_checkpointing=args.grad_checkpointing, init_checkpoint=args.init)
    recipe_config = apply_overrides(recipe_config, args.set)
    train_config = TrainConfig(
        run_dir=str(args.run_dir), max_steps=args.steps, batch_size=args.batch_size, grad_accum_steps=args.accum,
        precision=args.precision, device=args.device, seed=args.seed, num_workers=args.workers,
        log_every=args.log_every, val_every=args.val_every, val_batches=args.val_batches,
        checkpoint_every=args.checkpoint_every)
    # MARLIN scales its learning rate by the effective batch, which the loop's settings define.
    recipe = recipe_class(recipe_config, train_config) if args.recipe == "marlin" else recipe_class(recipe_config)
    trainer = Trainer(recipe, train_config, progress=None if args.quiet else tqdm)
    metrics = trainer.fit()
    if trainer.context.is_main:
        summary = ", ".join(f"{key} {value:.4g}" for key, value in metrics.items())
        print(f"trained {args.recipe} to step {trainer.step} in {args.run_dir}: {summary}")
    return 0


def _add_features(commands: argparse._SubParsersAction) -> None:
    from lipsync.config import PRECISIONS, RuntimeConfig
    from lipsync.features import FeatureConfig

    defaults = _defaults(FeatureConfig)
    parser = commands.add_parser("features", help="MARLIN features of the face in a video (.npy)",
                                 description="Decode VIDEO, find the face in every frame, crop it square at 224 px "
                                             "and write MARLIN encoder features of sliding windows to --out, with "
                                             "a JSON sidecar (window starts, frame indices, padded flags, fps).")
    parser.add_argument("video", type=Path, help="face video")
    parser.add_argument("--out", required=True, type=Path, metavar="FEATURES.npy", help="output .npy")
    parser.add_argument("--checkpoint", default=defaults["checkpoint"],
                        help="MARLIN weights: a file or a manifest name")
    parser.add_argument("--stride", type=int, default=defaults["stride"], help="source frames between windows")
    parser.add_argument("--sample-rate", type=int, default=defaults["sample_rate"],
                        help="take every N-th frame inside a 16-frame window")
    parser.add_argument("--per-token", action="store_true",
                        help="every token's feature per window (windows, tokens, width) instead of the mean")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="windows per encoder call")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"),
                       help="one face box in pixels for every frame (skips detection)")
    where.add_argument("--boxes", type=Path, metavar="FILE.json",
                       help="JSON list, one entry per decoded frame: null or [x1, y1, x2, y2] (skips detection)")
    parser.add_argument("--device", default=RuntimeConfig.device, help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", choices=PRECISIONS, default=RuntimeConfig.precision,
                        help="auto picks bf16 where the hardware runs it fast")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _COMMANDS["features"] = _run_features


def _run_features(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lipsync.config import InferenceConfig, RuntimeConfig
    from lipsync.face.boxes import parse_box, read_boxes_file
    from lipsync.features import FeatureConfig, extract_video_features

    boxes = None
    if args.boxes is not None:
        track = read_boxes_file(args.boxes)
        boxes = tuple(None if row[0] != row[0] else tuple(float(value) for value in row) for row in track)
    # Short gaps in detected or given boxes are bridged; longer ones are an error (every window needs a face).
    face = InferenceConfig(box=parse_box(args.box) if args.box else None, boxes=boxes, on_missing_face="interpolate")
    config = FeatureConfig(checkpoint=args.checkpoint, stride=args.stride, sample_rate=args.sample_rate,
                           per_token=args.per_token, batch_size=args.batch_size)
    runtime = RuntimeConfig(device=args.device, precision=args.precision)
    result = extract_video_features(args.video, args.out, config, face, runtime,
                                    progress=None if args.quiet else tqdm)
    print(f"wrote {result.output} {list(result.shape)} ({result.num_windows} windows over {result.num_frames} "
          f"frames) and {result.sidecar}")
    return 0


def _add_demo(commands: argparse._SubParsersAction) -> None:
    from lipsync.config import PRECISIONS
    from lipsync.demo import DemoSettings

    defaults = _defaults(DemoSettings)
    parser = commands.add_parser("demo", help="serve the Gradio demo page (needs the demo extra: gradio)",
                                 description="Serve a web page that lip-syncs an uploaded or recorded face video "
                                             "or photo to uploaded or recorded speech. The model is loaded once, "
                                             "at start-up.")
    parser.add_argument("--host", default=defaults["host"],
                        help="address to listen on (127.0.0.1: this machine only; 0.0.0.0: the network)")
    parser.add_argument("--port", type=int, default=defaults["port"], help="port to listen on")
    parser.add_argument("--checkpoint", default=None,
                        help="a generator checkpoint (file or manifest name) offered first, besides the cached ones")
    parser.add_argument("--device", default=defaults["device"], help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", choices=PRECISIONS, default=defaults["precision"],
                        help="precision preselected in the page")
    parser.add_argument("--examples", type=Path, default=None, metavar="DIR",
                        help="folder of face videos, photos and speech offered as examples")
    parser.add_argument("--max-upload-mb", type=float, default=defaults["max_upload_bytes"] / 1e6,
                        help="largest file accepted per upload, in MB (10^6 bytes)")
    parser.add_argument("--max-duration", type=float, default=defaults["max_duration_s"], metavar="SECONDS",
                        help="longest speech accepted (the output lasts as long as the speech)")
    parser.add_argument("--concurrency", type=int, default=defaults["concurrency"],
                        help="requests processed at the same time")
    parser.add_argument("--queue-size", type=int, default=defaults["max_queue"],
                        help="requests that may wait; more are refused until the queue drains")
    parser.add_argument("--temp-dir", type=Path, default=None,
                        help="where the app's temporary folder goes (default: the system's temporary folder)")
    _COMMANDS["demo"] = _run_demo


def _run_demo(args: argparse.Namespace) -> int:
    from lipsync.demo import DemoSettings, launch

    settings = DemoSettings(host=args.host, port=args.port, checkpoint=args.checkpoint, device=args.device,
                            precision=args.precision, max_upload_bytes=int(args.max_upload_mb * 1e6),
                            max_duration_s=args.max_duration, concurrency=args.concurrency,
                            max_queue=args.queue_size, examples_dir=args.examples, temp_dir=args.temp_dir)
    launch(settings)
    return 0


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    from lipsync.eval.evaluate import EvalConfig
    from lipsync.eval.lse import PROTOCOLS

    defaults = _defaults(EvalConfig)
    parser = commands.add_parser(
        "evaluate", help="LSE-D / LSE-C (and FID) of generated videos",
        description="Score lip sync with syncnet_python's SyncNet exactly as the published evaluations do (frames "
                    "through the reference's JPEG round trip, 25 fps, 16 kHz audio) and, with --fid, the FID of "
                    "the face crops against --reference videos. Writes PREFIX.json and PREFIX.md.")
    parser.add_argument("generated", type=Path, metavar="GENERATED_DIR",
                        help="folder of generated videos with their speech track (searched recursively), or one video")
    parser.add_argument("--reference", type=Path, default=None, metavar="DIR",
                        help="real videos, matched to generated ones by relative path or file name (for --fid)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="lrs2",
                        help="lrs2: whole frame resized to 224 (Wav2Lip's LRS2 protocol); tracked: face-track crop "
                             "(syncnet_python's real-video protocol, with our face tracking)")
    parser.add_argument("--fid", action="store_true", help="also compute FID against --reference")
    parser.add_argument("--fid-frame-step", type=int, default=defaults["fid_frame_step"], metavar="N",
                        help="FID uses every N-th frame of each video")
    parser.add_argument("--syncnet-weights", default=None, metavar="FILE",
                        help="syncnet_v2.model (default: the cached syncnet_v2)")
    parser.add_argument("--fid-weights", default=None, metavar="FILE",
                        help="FID Inception weights (default: the cached fid_inception)")
    parser.add_argument("--out", type=Path, default=None, metavar="REPORT_PREFIX",
                        help="write REPORT_PREFIX.json and REPORT_PREFIX.md (default: GENERATED-NAME_eval in the "
                             "current directory)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _COMMANDS["evaluate"] = _run_evaluate


def _run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lipsync.eval import EvalConfig, Evaluator, write_report

    if args.fid and args.reference is None:
        raise LipSyncError("--fid compares with real videos: give --reference DIR")
    config = EvalConfig(fid_frame_step=args.fid_frame_step)
    evaluator = Evaluator(args.syncnet_weights, (args.fid_weights or "fid_inception") if args.fid else None,
                          device=args.device, config=config)
    report = evaluator.evaluate(args.generated, args.reference, protocol=args.protocol, fid=args.fid,
                                progress=None if args.quiet else tqdm)
    prefix = args.out or Path(f"{args.generated.resolve().name or 'videos'}_eval")
    json_path, markdown_path = write_report(report, prefix)
    print(report.table())
    print(f"wrote {json_path} and {markdown_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from lipsync import __version__

    parser = _OneLineParser(prog="lipsync", description="Lip-sync toolkit: Wav2Lip and MARLIN generators.")
    parser.add_argument("--version", action="version", version=f"marlin-lipsync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    _add_infer(commands)
    _add_download(commands)
    _add_preprocess(commands)
    _add_train(commands)
    _add_features(commands)
    _add_demo(commands)
    _add_evaluate(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # One job per process: trading retained heap for no page faults on every activation tensor is a win here.
    reuse_freed_memory()
    try:
        return _COMMANDS[args.command](args)
    except LipSyncError as error:
        print(f"lipsync {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"lipsync {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
