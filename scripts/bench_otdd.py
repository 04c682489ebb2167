"""Benchmark: our OTDD against the OTDD authors' implementation on the reference cases.

    python scripts/bench_otdd.py [--reference ../shared/otdd-reference] [--repeats 3]

For each case and setting, prints our value and median time per call beside the values and
times the reference implementation recorded (same 2-core machine type; see its README).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from orca.align.otdd import OTDD

SETTINGS = {"exact": "S1_exact_innerdebT", "gaussian": "S2_gauss_debT"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "otdd-reference")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'case':14} {'inner':8} {'ours':>10} {'reference':>10} {'rel.diff':>8} {'ours s':>8} {'ref s':>8}")
    for path in sorted(args.reference.glob("*.npz")):
        d = np.load(path)
        for inner, setting in SETTINGS.items():
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                value = float(OTDD(d["xs"], d["ys"], inner=inner)(torch.tensor(d["xt"]), torch.tensor(d["yt"])))
                times.append(time.perf_counter() - t0)
            ref = float(d[f"otdd_{setting}"])
            rel = abs(value - ref) / abs(ref) if abs(ref) > 1e-3 else float("nan")
            print(f"{path.stem:14} {inner:8} {value:10.4g} {ref:10.4g} {rel:8.1%} {statistics.median(times):8.2f} "
                  f"{float(d[f'time_{setting}']):8.2f}")


if __name__ == "__main__":
    main()
