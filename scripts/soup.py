"""Model soups from one alignment, per seed: three ORCA runs of a task that share the align
stage (`a` aligns; `b` and `c` start from its embedder with `align.from_run` and fine-tune the
body at half and twice the tuned learning rate), then their merges (orca/merge.py): the greedy
and uniform soups, the Fisher-weighted average and task arithmetic. Resumable like the sweeps:
a run or merge with a record is never redone; --table-only merges finished ingredients only.

    python scripts/soup.py --task satellite --data-root satellite=../shared/datasets/satellite-crop \\
        --override align.source_root=../shared/datasets/conll2003 --seeds 1 2 --out results/adaptation

Ingredients go to ``<out>/soup/<task>/s<seed>/{a,b,c}``, merges to
``<out>/merges/<task>/<how>-s<seed>``, where reproduce_table.py's suites pick them
up as rows of their own.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from orca.errors import OrcaError  # noqa: E402
from orca.merge import merge, summary  # noqa: E402
from orca.preflight import check_overrides  # noqa: E402
from orca.record import RECORD_NAME  # noqa: E402
from orca.sweep import Run, add_sweep_arguments, parse_data_roots, run_missing  # noqa: E402

LR_FACTORS = {"a": 1.0, "b": 0.5, "c": 2.0}  # each ingredient's body learning rate over the tuned one
SOUPS = ("greedy", "uniform", "fisher", "task_arithmetic")  # orca.merge's `how`s for several runs


def ingredients(task: str, seed: int, out: Path, common: tuple[str, ...], tuned_lr: float) -> list[Run]:
    folder = out / "soup" / task / f"s{seed}"
    runs = []
    for name, factor in LR_FACTORS.items():
        shared = () if name == "a" else (f"align.from_run={(folder / 'a').resolve()}",
                                         f"finetune.optimizer.lr={tuned_lr * factor:.6g}")
        runs.append(Run(task, "orca", seed, folder / name, (*common, *shared)))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--budget", default="cpu")
    add_sweep_arguments(parser, Path("results/adaptation"))
    args = parser.parse_args(argv)
    try:
        roots = parse_data_roots(args.data_root)
        common = (f"budget={args.budget}", *([f"data.root={roots[args.task]}"] if args.task in roots else ()),
                  *args.override)
        tuned_lr = check_overrides([f"task={args.task}", "method=orca", *common]).finetune.optimizer.lr
    except OrcaError as exc:
        parser.error(str(exc))
    for seed in args.seeds:
        runs = ingredients(args.task, seed, args.out, common, tuned_lr)
        if args.dry_run:
            print("\n".join(" ".join(run.command()[1:]) for run in runs))
            continue
        if not args.table_only and run_missing(runs)["failed"]:
            return 1
        for how in SOUPS:
            soup = args.out / "merges" / args.task / f"{how}-s{seed}"
            if all(run.done for run in runs) and not (soup / RECORD_NAME).exists():
                print(summary(merge([str(run.folder) for run in runs], how, str(soup))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
