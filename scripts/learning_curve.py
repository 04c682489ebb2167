"""When does cross-modal transfer pay? Test error against training-set size (and, optionally,
fine-tuning time) for every method, on the same validation and test splits; resumable, like
reproduce_table.py (one process a run, a run with a record is never rerun).

    python scripts/learning_curve.py \\
        --data-root satellite=../shared/datasets/satellite-crop --data-root cifar10=../shared/datasets/cifar10-subset \\
        --data-root darcy=../shared/datasets/darcy16 --override align.source_root=../shared/datasets/conll2003
    python scripts/learning_curve.py --tasks satellite --methods scratch finetune orca --sizes 1 --budgets 1180
    python scripts/learning_curve.py --dry-run       # the planned runs, one a line
    python scripts/learning_curve.py --table-only    # table and figure from the records so far

A size is a fraction of the training split (`data.train_fraction`: class-stratified, and
nested: the series of a smaller size are among those of a larger one, for every seed); the
recipe (tokens, learning rates) stays the task's tuned one at every size (not searched again
per size). A budget is the run's `budget_s` (280: `budget=cpu`'s five minutes); within it a
run stops early when validation stops improving (CURVE_OVERRIDES). Each run is
``<out>/runs/<task>/<method>/f<size>-t<budget>/s<seed>``. Writes `table.md` (mean ± std over
seeds, one row a method at a size and budget; then the verdicts: orca and finetune against
scratch, orca against finetune, fpt against fpt_random, each with Welch's t-test), `table.csv`, and `curves.png`: a panel per
task and budget, test error against training samples on a log axis, one line per method, a
band of ± one standard error over seeds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from orca.errors import OrcaError  # noqa: E402
from orca.sweep import Run, add_sweep_arguments, check_runs, parse_data_roots, run_missing, split_names  # noqa: E402
from orca.table import Table, collect, comparison_cells, markdown, verdict, welch, write_csv  # noqa: E402

TASKS = ("satellite", "cifar10", "darcy")
METHODS = ("scratch", "finetune", "orca", "lora", "fpt", "fpt_random", "classical")
SIZES = (0.02, 0.1, 1.0)
BUDGETS = (280,)
# Every curve run validates 10 times (budget=cpu: 5) and stops once 3 validations in a row
# have not improved: on a small subset the model memorises its training set within a tenth
# of the steps. Patience chosen on validation error alone, from runs that trained without
# stopping (results/curves-patience/patience.md, scripts/simulate_patience.py).
CURVE_OVERRIDES = ("finetune.num_validations=10", "finetune.early_stopping_patience=3")
# The questions the curves answer: does a pretrained body beat a random one (orca, finetune
# against scratch), does alignment add to fine-tuning, and FPT's own control.
QUESTIONS = (("orca", "scratch"), ("finetune", "scratch"), ("orca", "finetune"), ("fpt", "fpt_random"))


def label(size: float, budget: int) -> str:
    return f"f{size:g}-t{budget}"


def plan(out: Path, tasks, methods, sizes, budgets, seeds, data_roots: dict[str, str],
         overrides: tuple[str, ...]) -> list[Run]:
    for size in sizes:
        if not 0 < size <= 1:
            raise OrcaError(f"--sizes takes fractions of the training split in (0, 1], got {size:g}")
    for budget in budgets:
        if budget <= 0:
            raise OrcaError(f"--budgets takes seconds > 0, got {budget}")
    runs = []  # every method for a seed before the next seed: a sweep cut short leaves whole comparisons
    for task in tasks:
        base = ("budget=cpu", *CURVE_OVERRIDES, *((f"data.root={data_roots[task]}",) if task in data_roots else ()),
                *overrides)
        for budget in budgets:
            for size in sizes:
                setting = (f"data.train_fraction={size:g}", f"budget_s={budget}")
                for seed in seeds:
                    for method in methods:
                        runs.append(Run(task, method, seed, out / "runs" / task / method / label(size, budget) / f"s{seed}",
                                        (*base, *setting), variant=f"{method} {label(size, budget)}"))
    return runs


def curves(table: Table) -> dict[tuple[str, int], dict[str, list[tuple[int, float, float]]]]:
    """{(task, budget): {method: [(training samples, mean error, standard error), ...]}} over
    the finished seeds of each row, sorted by size."""
    out: dict[tuple[str, int], dict[str, list]] = {}
    for (row, task), cell in table.cells.items():
        if not cell.errors:
            continue
        method, setting = row.split(" ")
        budget = int(setting.split("-t")[1])
        n = statistics.fmean(r["data_sizes"]["train"] for r in cell.records)
        se = cell.std / len(cell.errors) ** 0.5 if cell.std is not None else 0.0
        out.setdefault((task, budget), {}).setdefault(method, []).append((n, cell.mean, se))
    return {key: {m: sorted(points) for m, points in lines.items()} for key, lines in out.items()}


def verdicts_markdown(table: Table) -> str:
    """Per task, budget and size, each of QUESTIONS as Δ, its standard error, Welch's p and a
    verdict (orca/table.py: welch)."""
    lines = ["## Verdicts", "", "Δ = mean test error of the first method − that of the second (negative: the first "
             "is better), over seeds; SE its standard error; p: Welch's two-sided t-test; a verdict needs p < 0.05.",
             "", "| task | budget s | fraction | samples | comparison | Δ | SE | p | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    settings = sorted({row.split(" ")[1] for row, _ in table.cells}, key=lambda s: (int(s.split("-t")[1]),
                                                                                    float(s[1:].split("-t")[0])))
    for task in table.tasks:
        for setting in settings:
            for a, b in QUESTIONS:
                cell_a, cell_b = table.cells.get((f"{a} {setting}", task)), table.cells.get((f"{b} {setting}", task))
                comparison = welch(cell_a, cell_b) if cell_a and cell_b else None
                if comparison is None:
                    continue
                size, budget = setting[1:].split("-t")
                n = round(statistics.fmean(r["data_sizes"]["train"] for r in cell_a.records))
                lines.append(f"| {task} | {budget} | {size} | {n:,} | {a} − {b} | {comparison_cells(comparison)} | "
                             f"{verdict(a, b, comparison)} |")
    return "\n".join(lines) + "\n"


def plot(table: Table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = curves(table)
    keys = sorted(panels)
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.5 * max(1, len(keys)), 3.8), squeeze=False)
    for ax, (task, budget) in zip(axes[0], keys):
        for i, (method, points) in enumerate(sorted(panels[task, budget].items())):
            n, mean, se = (list(v) for v in zip(*points))
            ax.plot(n, mean, "o-", color=f"C{i}", label=method)
            ax.fill_between(n, [m - s for m, s in zip(mean, se)], [m + s for m, s in zip(mean, se)],
                            color=f"C{i}", alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("training samples", fontsize=8)
        ax.set_ylabel(f"test {table.error_names.get(task, 'error')}", fontsize=8)
        ax.set_title(f"{task}, {budget} s", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("test error against training-set size: mean over seeds, band ± one standard error", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--sizes", nargs="+", type=float, default=list(SIZES),
                        help="fractions of the training split (data.train_fraction)")
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS), help="budget_s of each run, s")
    add_sweep_arguments(parser, Path("results") / "curves")
    args = parser.parse_args(argv)
    try:
        runs = plan(args.out, split_names(args.tasks), split_names(args.methods), args.sizes, args.budgets,
                    args.seeds, parse_data_roots(args.data_root), tuple(args.override))
        if not args.table_only:
            check_runs(runs)
    except OrcaError as exc:
        parser.error(str(exc))
    if args.dry_run:
        for run in runs:
            print(f"{run.task:<10} {run.variant:<24} seed {run.seed}  [{'done' if run.done else 'to run'}]  "
                  f"{' '.join(run.command()[1:])}")
        print(f"{len(runs)} runs planned, {sum(r.done for r in runs)} done")
        return 0
    counts = {"failed": 0}
    if not args.table_only:
        t0 = time.perf_counter()
        counts = run_missing(runs)
        print(f"learning curves: {counts} in {(time.perf_counter() - t0) / 60:.1f} min")
    table = collect(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(table, "Learning curves: test error by method, training-set fraction (f) and budget (t, s)")
    text += "\n" + verdicts_markdown(table)
    (args.out / "table.md").write_text(text)
    write_csv(table, args.out / "table.csv")
    plot(table, args.out / "curves.png")
    print(text)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
