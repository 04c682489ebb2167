"""Does alignment help? ORCA with 0, 20, 60 and 200 alignment steps, and with MMD instead
of OTDD, on the same tasks and seeds; resumable, like reproduce_table.py.

    python scripts/ablate_alignment.py \\
        --data-root satellite=../shared/datasets/satellite-crop --data-root cifar10=../shared/datasets/cifar10-subset \\
        --override align.source_root=../shared/datasets/conll2003
    python scripts/ablate_alignment.py --dry-run     # the planned runs
    python scripts/ablate_alignment.py --table-only  # table and figure from the records so far

Every variant is `method=orca` with the recipe as the defaults stand; only the align stage
changes. The learning-rate decay points scale with the steps (at 1/3 and 2/3, as ORCA's
20/40 of 60). Each record reports the OTDD before and after its align stage on the same
fixed subsets, whichever distance it minimised. Writes to results/ablation/: table.md
(mean ± std over seeds, each variant against otdd-0, i.e. no alignment), table.csv, and
ablation.png (test error against OTDD after alignment, one dot per run).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from orca.errors import OrcaError  # noqa: E402
from orca.sweep import Run, add_sweep_arguments, check_runs, parse_data_roots, run_missing, split_names  # noqa: E402
from orca.table import Table, collect, markdown, versus_markdown, write_csv  # noqa: E402


def _steps(n: int) -> tuple[str, ...]:
    decay = (f"align.milestones=[{round(n / 3)},{round(2 * n / 3)}]",) if n else ()
    return (f"align.steps={n}", *decay)


VARIANTS = {
    "otdd-0": _steps(0),  # the embedder as initialised: fine-tuning only, with the OTDD measured
    "otdd-20": _steps(20),
    "otdd-60": _steps(60),  # budget=cpu's default, ORCA's schedule
    "otdd-200": _steps(200),
    "mmd-60": ("align=mmd", *_steps(60)),
}
TASKS = ("satellite", "cifar10")


def plan(out: Path, tasks, variants, seeds, data_roots: dict[str, str], overrides: tuple[str, ...]) -> list[Run]:
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise OrcaError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    runs = []
    for task in tasks:
        base = ("budget=cpu", *((f"data.root={data_roots[task]}",) if task in data_roots else ()), *overrides)
        for variant in variants:
            for seed in seeds:
                runs.append(Run(task, "orca", seed, out / "runs" / task / variant / f"s{seed}",
                                (*base, *VARIANTS[variant]), variant=variant))
    return runs


def plot(table: Table, path: Path) -> None:
    """One panel per task: each run's test error against its OTDD after alignment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table.tasks), figsize=(4.5 * len(table.tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], table.tasks):
        for i, variant in enumerate(table.methods):
            records = [r for r in table.cells[variant, task].records if r.get("align")]
            ax.plot([r["align"]["after"] for r in records], [r["metrics"]["test"]["error"] for r in records],
                    "o", color=f"C{i}", label=variant)
        ax.set_xlabel("OTDD after alignment (to the source)", fontsize=8)
        ax.set_ylabel(f"test {table.error_names.get(task, 'error')}", fontsize=8)
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("orca: test error against OTDD after the align stage (one dot per run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def otdd_markdown(table: Table) -> str:
    lines = ["## OTDD before and after alignment", "", "| task | variant | OTDD before | OTDD after | align s |",
             "|---|---|---|---|---|"]
    for task in table.tasks:
        for variant in table.methods:
            records = [r for r in table.cells[variant, task].records if r.get("align")]
            if records:
                mean = lambda values: sum(values) / len(values)  # noqa: E731
                lines.append(f"| {task} | {variant} | {mean([r['align']['before'] for r in records]):.4g} | "
                             f"{mean([r['align']['after'] for r in records]):.4g} | "
                             f"{mean([r['time_s'].get('align', 0) for r in records]):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"subset of {', '.join(VARIANTS)}")
    add_sweep_arguments(parser, Path("results") / "ablation")
    args = parser.parse_args(argv)
    try:
        runs = plan(args.out, split_names(args.tasks), split_names(args.variants), args.seeds,
                    parse_data_roots(args.data_root), tuple(args.override))
        if not args.table_only:
            check_runs(runs)
    except OrcaError as exc:
        parser.error(str(exc))
    if args.dry_run:
        for run in runs:
            print(f"{run.task:<10} {run.variant:<9} seed {run.seed}  [{'done' if run.done else 'to run'}]  "
                  f"{' '.join(run.command()[1:])}")
        return 0
    counts = {"failed": 0}
    if not args.table_only:
        t0 = time.perf_counter()
        counts = run_missing(runs)
        print(f"ablation: {counts} in {(time.perf_counter() - t0) / 60:.1f} min")
    table = collect(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(table, "Alignment ablation: orca, budget=cpu") + "\n" + otdd_markdown(table)
    text += "\n" + versus_markdown(table, reference="otdd-0")
    (args.out / "table.md").write_text(text)
    write_csv(table, args.out / "table.csv")
    plot(table, args.out / "ablation.png")
    print(text)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
