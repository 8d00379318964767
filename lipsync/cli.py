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
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="frames per generator call")
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
    _COMMANDS["train"] = _run_train


def _run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lipsync.config import TrainConfig, apply_overrides
    from lipsync.train.loop import Trainer
    from lipsync.train.recipes import RECIPES

    recipe_class, config_class = RECIPES[args.recipe]
    if args.recipe == "syncnet":
        recipe_config = config_class(data=args.data, num_frames=args.frames, init_checkpoint=args.init)
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


def build_parser() -> argparse.ArgumentParser:
    from lipsync import __version__

    parser = _OneLineParser(prog="lipsync", description="Lip-sync toolkit: Wav2Lip and MARLIN generators.")
    parser.add_argument("--version", action="version", version=f"marlin-lipsync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    _add_infer(commands)
    _add_download(commands)
    _add_train(commands)
    _add_features(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
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
