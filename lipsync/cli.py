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
    from lipsync.config import EXTEND_MODES, MEL_TIMINGS, PRECISIONS, InferenceConfig, RuntimeConfig
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
    parser.add_argument("--model", choices=GENERATOR_MODELS, default="wav2lip", help="generator architecture")
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
    parser.add_argument("--no-smooth", action="store_true", help="do not smooth detected boxes over time")
    parser.add_argument("--detect-max-side", type=int, default=defaults["detect_max_side"],
                        help="the detector sees frames shrunk to this longer side")
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
    from lipsync.pipeline import LipSyncPipeline

    boxes = None
    if args.boxes is not None:
        track = read_boxes_file(args.boxes)
        boxes = tuple(None if row[0] != row[0] else tuple(float(value) for value in row) for row in track)
    config = InferenceConfig(
        batch_size=args.batch_size, pads=tuple(args.pads), box=parse_box(args.box) if args.box else None,
        boxes=boxes, smooth=not args.no_smooth, fps=args.fps, extend=args.extend, mel_timing=args.mel_timing,
        detect_max_side=args.detect_max_side, crf=args.crf, preset=args.preset,
    )
    runtime = RuntimeConfig(device=args.device, precision=args.precision, num_threads=args.threads)
    outfile = args.outfile or Path(f"{args.face.stem}_lipsync.mp4")
    if outfile.suffix.lower() != ".mp4":
        raise LipSyncError(f"--outfile must end in .mp4, got {outfile}")
    pipeline = LipSyncPipeline.from_pretrained(args.checkpoint, model=args.model, runtime=runtime)
    result = pipeline(args.face, args.audio, outfile, config, progress=None if args.quiet else tqdm)
    print(f"wrote {result.output} ({result.num_frames} frames, {result.duration:.2f} s, "
          f"face re-rendered in {result.frames_with_face})")
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


def build_parser() -> argparse.ArgumentParser:
    from lipsync import __version__

    parser = _OneLineParser(prog="lipsync", description="Lip-sync toolkit: Wav2Lip and MARLIN generators.")
    parser.add_argument("--version", action="version", version=f"marlin-lipsync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    _add_infer(commands)
    _add_download(commands)
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
