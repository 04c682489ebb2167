"""Benchmark: MiniLM encoder forward+backward on this CPU in fp32 vs bf16 autocast.

    python scripts/bench_precision.py [--batch 32] [--tokens 50] [--repeats 7]

Prints the median seconds per step for each precision and their ratio, measured in one run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from orca.bodies import load_body  # noqa: E402


def median_step(body, tokens: torch.Tensor, bf16: bool, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = body(tokens)
        out.float().mean().backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    body = load_body("minilm").body.train()
    tokens = torch.randn(args.batch, args.tokens, body.hidden_size, requires_grad=True)
    fp32 = median_step(body, tokens, False, args.repeats)
    bf16 = median_step(body, tokens, True, args.repeats)
    print(f"MiniLM forward+backward, batch {args.batch} x {args.tokens} tokens, {torch.get_num_threads()} threads")
    print(f"  fp32            median {fp32:.3f} s/step")
    print(f"  bf16 autocast   median {bf16:.3f} s/step")
    print(f"  bf16 / fp32     {bf16 / fp32:.2f}x time")


if __name__ == "__main__":
    main()
