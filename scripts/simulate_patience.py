"""What early stopping with patience P would have done to finished runs that trained without
it: from each run's validation history (its CSV log, ``logs/finetune/metrics.csv``), the
validation at which P validations in a row without improvement would have stopped it, the
best validation error it would have kept, and the share of the fine-tuning steps it would
have saved. For choosing `finetune.early_stopping_patience` on validation alone.

    python scripts/simulate_patience.py results/curves-patience --patience 1 2 3 4 5
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def val_history(metrics_csv: Path) -> list[tuple[int, float]]:
    """[(step, val/error), ...] in order, one per validation (the repeat at the end dropped)."""
    rows = [(int(r["step"]), float(r["val/error"])) for r in csv.DictReader(metrics_csv.open()) if r.get("val/error")]
    return [row for i, row in enumerate(rows) if i == 0 or row[0] > rows[i - 1][0] + 1]


def simulate(history: list[tuple[int, float]], patience: int) -> tuple[int, float]:
    """(the step at which Lightning's EarlyStopping, min_delta 0, would stop, the best
    validation error up to there)."""
    best, wait = float("inf"), 0
    for step, error in history:
        if error < best:
            best, wait = error, 0
        else:
            wait += 1
            if wait >= patience:
                return step, best
    return history[-1][0], best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="searched for runs' logs/finetune/metrics.csv")
    parser.add_argument("--patience", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    args = parser.parse_args(argv)
    logs = sorted(args.folder.rglob("logs/finetune/metrics.csv"))
    if not logs:
        parser.error(f"no logs/finetune/metrics.csv under {args.folder} (runs need logger=csv, the default)")
    print("| run | validations | best val error (no stopping) | " +
          " | ".join(f"P={p}: val error, steps saved" for p in args.patience) + " |")
    print("|---|---|---|" + "---|" * len(args.patience))
    for path in logs:
        history = val_history(path)
        if not history:  # a run still before its first validation
            continue
        last = history[-1][0]
        cells = []
        for p in args.patience:
            step, best = simulate(history, p)
            cells.append(f"{best:.2f}, {1 - step / last:.0%}")
        run = path.parents[2].relative_to(args.folder)
        print(f"| {run} | {len(history)} | {min(e for _, e in history):.2f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
