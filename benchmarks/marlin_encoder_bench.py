"""Throughput of `Marlin.extract_features` on CPU: ViT-S and ViT-B, 16×224×224 clips, batch 1.

Prints clips/s and s/clip for float32 and bf16 autocast, plus the process's peak RSS. Weights are seeded
random (no download); speed does not depend on their values.

Reference on the same 2-core machine: official MARLIN ViT-B took 2.74 s/clip (fp32) and 0.95 s/clip (bf16).
On a shared machine those fixed figures are only comparable when it is idle, so the script also times, in
the same process and interleaved with ours, a "reference-style" forward: the same weights run through the
official operation order (Conv3d patch embedding, attention with a materialised softmax matrix), and prints
the ratio of the two medians.

    python benchmarks/marlin_encoder_bench.py [--models marlin_vit_small_ytf marlin_vit_base_ytf] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from einops import rearrange

from marlin_encoder import Marlin

from peak_memory import peak_rss_mb   # benchmarks/peak_memory.py

REFERENCE_S_PER_CLIP = {("marlin_vit_base_ytf", "fp32"): 2.74, ("marlin_vit_base_ytf", "bf16"): 0.95}


@torch.no_grad()
def reference_style_features(model: Marlin, clip: torch.Tensor, keep_seq: bool) -> torch.Tensor:
    """Our weights through the official op order (src/marlin_pytorch/model/{encoder,modules}.py): a Conv3d
    patch embedding and eager attention that materialises the (heads, n, n) softmax matrix."""
    encoder = model.encoder
    tokens = rearrange(encoder.patch_embedding.projection(clip), "b d nt nh nw -> b (nt nh nw) d")
    tokens = tokens + encoder.pos_embedding.emb
    for block in encoder.blocks:
        attention = block.attn
        bias = torch.cat((attention.q_bias, torch.zeros_like(attention.v_bias), attention.v_bias))
        qkv = F.linear(block.norm1(tokens), attention.qkv.weight, bias)
        q, k, v = rearrange(qkv, "b n (three k e) -> three b k n e", three=3, k=attention.num_heads)
        weights = ((q * attention.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        attended = rearrange(weights @ v, "b k n e -> b n (k e)")
        tokens = tokens + attention.proj(attended)
        tokens = tokens + block.mlp(block.norm2(tokens))
    if not keep_seq:
        tokens = tokens.mean(dim=1)
    return encoder.norm(tokens)


def time_interleaved(runners: dict, precision: str, repeats: int) -> dict[str, float]:
    """Median seconds per call of each runner, alternating runners every round after one warm-up round."""
    timings: dict[str, list[float]] = {name: [] for name in runners}
    for index in range(repeats + 1):
        for name, run in runners.items():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                run()
            if index:  # the first round pays for allocator and kernel warm-up
                timings[name].append(time.perf_counter() - start)
    return {name: sorted(values)[len(values) // 2] for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["marlin_vit_small_ytf", "marlin_vit_base_ytf"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-seq", action="store_true", help="per-token features instead of pooled")
    parser.add_argument("--no-baseline", action="store_true", help="skip the reference-style forward")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clip = torch.rand(1, 3, 16, 224, 224)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, clip {tuple(clip.shape)}, "
          f"keep_seq={args.keep_seq}, median of {args.repeats}")
    for name in args.models:
        model = Marlin.from_name(name).eval()
        runners = {"ours": lambda: model.extract_features(clip, keep_seq=args.keep_seq)}
        if not args.no_baseline:
            runners["reference-style"] = lambda: reference_style_features(model, clip, args.keep_seq)
            difference = (runners["ours"]() - runners["reference-style"]()).abs().max().item()
            print(f"{name}: max |ours - reference-style| = {difference:.2e} (fp32)")
        for precision in args.precisions:
            seconds = time_interleaved(runners, precision, args.repeats)
            ours = seconds["ours"]
            line = f"{name:22s} {precision:5s} {1 / ours:6.3f} clips/s  {ours:6.3f} s/clip"
            if "reference-style" in seconds:
                baseline = seconds["reference-style"]
                line += f"  | reference-style {baseline:6.3f} s/clip -> {baseline / ours:.2f}x"
            official = REFERENCE_S_PER_CLIP.get((name, precision))
            if official is not None:
                line += f"  | official {official:.2f} s/clip -> {official / ours:.2f}x"
            print(line, flush=True)
        del model, runners
    print(f"peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
