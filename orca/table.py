"""The comparison table from run records: methods x tasks, mean +- std of the test error
over seeds, written as Markdown, CSV and a figure; and the alignment / stage-time view.

Reads only ``results.json`` files (one per run, see orca/record.py); a planned run with no
record is shown as missing, one that failed as failed.
"""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from orca.record import RECORD_NAME, machine_text
from orca.sweep import Run

PUBLISHED_ROWS = ("Hand-designed", "NAS-Bench-360", "DASH", "Perceiver IO", "FPT", "ORCA")
STAGES = ("data", "source", "align", "calibrate", "finetune", "fit", "test", "total")  # fit: method=classical


@dataclass
class Cell:
    """Test errors of one (method, task) over the planned seeds."""

    planned: int = 0
    failed: int = 0
    errors: list[float] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    reference_errors: list[float] = field(default_factory=list)  # as ORCA's code computes the error

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.errors) if self.errors else None

    @property
    def std(self) -> float | None:  # sample standard deviation over seeds
        return statistics.stdev(self.errors) if len(self.errors) > 1 else None

    def as_orca_computes(self) -> Cell:
        """The same runs, scored as ORCA's code scores them (`reference_error`)."""
        return Cell(self.planned, self.failed, self.reference_errors, self.records)

    @property
    def selected_on_test(self) -> bool:
        """Whether its runs picked their model on test (protocol=reference): never marked best."""
        return any((r.get("protocol") or {}).get("select_on") == "test" for r in self.records)


@dataclass
class Table:
    tasks: list[str]
    methods: list[str]
    cells: dict[tuple[str, str], Cell]
    error_names: dict[str, str]
    published: dict[str, dict[str, float]]  # task -> {row: value}, when shown
    reference_names: dict[str, str] = field(default_factory=dict)  # task -> what its reference_error is

    def best(self, task: str) -> str | None:
        """The method with the lowest mean error on `task` (None if no run finished), among the
        rows whose models were selected on validation."""
        cells = [(m, self.cells[m, task]) for m in self.methods]
        means = {m: c.mean for m, c in cells if c.mean is not None and not c.selected_on_test}
        return min(means, key=means.get) if means else None


def collect(runs: list[Run], published: bool = False) -> Table:
    tasks = list(dict.fromkeys(r.task for r in runs))
    methods = list(dict.fromkeys(r.row for r in runs))
    cells = {(m, t): Cell() for m in methods for t in tasks}
    error_names: dict[str, str] = {}
    reference_names: dict[str, str] = {}
    papers: dict[str, dict[str, float]] = {}
    for run in runs:
        cell = cells[run.row, run.task]
        cell.planned += 1
        if run.done:
            record = json.loads((run.folder / RECORD_NAME).read_text())
            test = record["metrics"]["test"]
            cell.errors.append(float(test["error"]))
            if test.get("reference_error") is not None:
                cell.reference_errors.append(float(test["reference_error"]))
                reference_names[run.task] = record.get("reference_error_name") or "ORCA's computation"
            cell.records.append(record)
            error_names[run.task] = record["error_name"]
            papers[run.task] = record.get("paper") or {}
        elif run.failed:
            cell.failed += 1
    return Table(tasks, methods, cells, error_names, papers if published else {}, reference_names)


def describe_markdown(rows: list[dict]) -> str:
    """What a sweep's runs will do, a row per task (its first run), as :func:`orca.sweep.describe`
    gives them; optimiser steps and samples seen over the epochs where ORCA's training-set size
    is known (protocol=reference)."""
    lines = ["| task | method | body | protocol | alignment source | align steps | epochs | batch x accum "
             "| optimiser steps | samples seen |", "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['method']} | {r['body']} | {r['protocol']} | {r['source']} | "
                     f"{r['align_steps']} | {r['epochs'] or '—'} | {r['batch']} | "
                     f"{format(r['optimizer_steps'], ',') if r['optimizer_steps'] else '—'} | "
                     f"{format(r['samples_seen'], ',') if r['samples_seen'] else '—'} |")
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def cell_text(cell: Cell) -> str:
    if not cell.errors:
        return f"missing (0/{cell.planned}{f', {cell.failed} failed' if cell.failed else ''})"
    spread = f" ± {fmt(cell.std, 2)}" if cell.std is not None else ""
    note = f"n={len(cell.errors)}" + (f" of {cell.planned}" if len(cell.errors) < cell.planned else "")
    note += f", {cell.failed} failed" if cell.failed else ""
    return f"{fmt(cell.mean)}{spread} ({note})"


def markdown(table: Table, title: str) -> str:
    head = [f"# {title}", "",
            "Test error, lower is better: mean ± sample standard deviation over seeds (n = seeds finished). "
            "**Bold**: best mean of the column.", ""]
    columns = [f"{t} ({table.error_names.get(t, '?')})" for t in table.tasks]
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method in table.methods:
        texts = []
        for task in table.tasks:
            text = cell_text(table.cells[method, task])
            texts.append(f"**{text}**" if table.best(task) == method else text)
        lines.append(f"| {method} (ours) | " + " | ".join(texts) + " |")
    if table.published:
        for row in PUBLISHED_ROWS:
            values = [fmt(table.published.get(t, {}).get(row)) for t in table.tasks]
            lines.append(f"| {row} (published) | " + " | ".join(values) + " |")
        lines += ["", "Published rows: the ORCA paper (Shen et al., ICML 2023), NAS-Bench-360 protocol, GPUs."]
    return "\n".join(head + lines + reference_lines(table)) + "\n"


def reference_lines(table: Table) -> list[str]:
    """The tasks whose number ORCA's code computes otherwise (`reference_error`), scored that
    way: the published rows were computed so, so these are the cells to hold against them."""
    tasks = [t for t in table.tasks if t in table.reference_names]
    if not tasks:
        return []
    lines = ["", "## As ORCA's code computes the error", "",
             "The same runs, scored as ORCA's `evaluate` scores them (the paper's numbers were computed so; the "
             "table above gives each split's own metric):", ""]
    lines += [f"- {t}: {table.reference_names[t]}" for t in tasks]
    lines += ["", "| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for method in table.methods:
        texts = [cell_text(table.cells[method, t].as_orca_computes()) for t in tasks]
        lines.append(f"| {method} (ours) | " + " | ".join(texts) + " |")
    for row in PUBLISHED_ROWS if table.published else ():
        lines.append(f"| {row} (published) | " + " | ".join(fmt(table.published.get(t, {}).get(row)) for t in tasks) + " |")
    return lines


def welch(a: Cell, b: Cell) -> tuple[float, float, float] | None:
    """a against b over seeds: (Δ = mean error of a − mean error of b, its standard error
    sqrt(s_a²/n_a + s_b²/n_b), the two-sided p-value of Welch's t-test), or None with fewer
    than two seeds on either side. With three seeds a side, Δ/SE read as a z-score would
    overstate the certainty: Welch's test uses the t distribution at its own degrees of freedom."""
    from scipy.stats import ttest_ind

    if len(a.errors) < 2 or len(b.errors) < 2:
        return None
    delta = a.mean - b.mean
    se = (a.std ** 2 / len(a.errors) + b.std ** 2 / len(b.errors)) ** 0.5
    if se == 0:  # both sides constant: the test is undefined; equal or certainly different
        return delta, se, 1.0 if delta == 0 else 0.0
    return delta, se, float(ttest_ind(a.errors, b.errors, equal_var=False).pvalue)


VERDICT_P = 0.05  # a difference counts when Welch's p-value is below this


def verdict(name_a: str, name_b: str, comparison: tuple[float, float, float]) -> str:
    delta, _, p = comparison
    if p >= VERDICT_P:
        return "no difference shown"
    return f"{name_a} better" if delta < 0 else f"{name_b} better"


def comparison_cells(comparison: tuple[float, float, float]) -> str:
    """'Δ | SE | p' table cells."""
    delta, se, p = comparison
    return f"{delta:+.4g} | {fmt(se, 2)} | {p:.2g}"


def versus_markdown(table: Table, reference: str = "orca") -> str:
    """`reference` against each other method per task: difference of mean test errors, its
    standard error over seeds, Welch's t-test p-value and a verdict (p < 0.05 counts)."""
    if reference not in table.methods or len(table.methods) < 2:
        return ""
    lines = [f"## {reference} against each baseline", "",
             f"Δ = mean error of {reference} − mean error of the baseline (negative: {reference} is better); "
             f"SE = sqrt(s1²/n1 + s2²/n2) over seeds; p: Welch's two-sided t-test; a verdict needs p < {VERDICT_P}.",
             "", "| task | baseline | Δ | SE | p | verdict |", "|---|---|---|---|---|---|"]
    for task in table.tasks:
        for method in table.methods:
            comparison = welch(table.cells[reference, task], table.cells[method, task])
            if method == reference or comparison is None:
                continue
            lines.append(f"| {task} | {method} | {comparison_cells(comparison)} | "
                         f"{verdict(reference, method, comparison)} |")
    return "\n".join(lines) + "\n"


def write_csv(table: Table, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "method", "task", "error_name", "mean", "std", "n", "planned", "failed", "errors"])
        for (method, task), cell in table.cells.items():
            writer.writerow(["ours", method, task, table.error_names.get(task, ""), cell.mean, cell.std,
                             len(cell.errors), cell.planned, cell.failed, " ".join(f"{e:.6g}" for e in cell.errors)])
        for task, rows in table.published.items():
            for row, value in rows.items():
                writer.writerow(["published", row, task, table.error_names.get(task, ""), value, "", "", "", "", ""])


def plot(table: Table, path: Path) -> None:
    """One panel per task: each seed's error as a dot, the mean as a bar with its spread
    (the axis spans the data, so that close methods stay apart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(table.tasks)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for ax, task in zip(axes[0], table.tasks):
        best = table.best(task)
        for x, method in enumerate(table.methods):
            cell = table.cells[method, task]
            if not cell.errors:
                ax.annotate("missing", (x, 0.5), xycoords=("data", "axes fraction"), rotation=90, ha="center",
                            va="center", fontsize=8, color="grey")
                continue
            colour = "tab:orange" if method == best else "tab:blue"
            ax.errorbar(x, cell.mean, yerr=cell.std or 0, fmt="s", color=colour, markersize=8, capsize=5)
            ax.plot([x] * len(cell.errors), cell.errors, ".", color="black", markersize=4)
        ax.set_xticks(range(len(table.methods)), table.methods, rotation=30)
        ax.set_xlim(-0.6, len(table.methods) - 0.4)
        ax.set_title(task, fontsize=10)
        ax.set_ylabel(f"{table.error_names.get(task, 'error')} (lower is better)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("test error by method: mean ± std over seeds (squares), each seed (dots); orange = best mean",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def alignment_markdown(table: Table) -> str:
    """OTDD before -> after alignment per (task, aligning method), and seconds per stage."""
    lines = ["# Alignment stage and stage times", "",
             "OTDD between the embedded target data and the source data, on fixed subsets, before and after "
             "the align stage (mean ± std over seeds).", "",
             "| task | method | OTDD before | OTDD after | change | steps | distance s/step | source |",
             "|---|---|---|---|---|---|---|---|"]
    for task in table.tasks:
        for method in table.methods:
            aligned = [r["align"] for r in table.cells[method, task].records if r.get("align")]
            if not aligned:
                continue
            before, after = [a["before"] for a in aligned], [a["after"] for a in aligned]
            change = statistics.fmean((a - b) / b for a, b in zip(after, before) if b)
            steps = aligned[0].get("steps", "—")  # records before the per-step timing have neither
            per_step = [a["distance_s_per_step"] for a in aligned if a.get("distance_s_per_step") is not None]
            lines.append(f"| {task} | {method} | {_mean_std(before)} | {_mean_std(after)} | {100 * change:+.1f} % "
                         f"| {steps} | {_mean_std(per_step) if per_step else '—'} | {aligned[0]['source'].split(':')[0]} |")
    lines += ["", "Mean wall-clock seconds per stage over seeds, fine-tuning steps done (each seed's), mean seconds "
              "per fine-tuning step, trainable and total parameters, peak resident memory, and the machines the "
              "seeds ran on (records older than that field: —).", "",
              "| task | method | " + " | ".join(STAGES) + " | steps | s/step | trainable / total params "
              "| peak RSS (MiB) | machine |", "|---" * (len(STAGES) + 7) + "|"]
    for task in table.tasks:
        for method in table.methods:
            records = table.cells[method, task].records
            if not records:
                continue
            times = []
            for stage in STAGES:  # a stage a method skips (align for fpt) has no time
                values = [r["time_s"][stage] for r in records if stage in r["time_s"]]
                times.append(fmt(statistics.fmean(values), 3) if values else "—")
            rss = statistics.fmean(r["peak_rss_mb"] for r in records)
            tuned = [r["finetune"] for r in records if r.get("finetune")]
            steps = ", ".join(str(f["steps_done"]) for f in tuned) or "—"
            per_step = fmt(statistics.fmean(f["seconds_per_step"] for f in tuned), 3) if tuned else "—"
            params = records[0].get("params") or {}
            counts = f"{params['trainable'] / 1e6:.3g}M / {params['total'] / 1e6:.3g}M" if params.get("total") else "—"
            machines = "; ".join(dict.fromkeys(machine_text(r["machine"]) for r in records if r.get("machine"))) or "—"
            lines.append(f"| {task} | {method} | " + " | ".join(times)
                         + f" | {steps} | {per_step} | {counts} | {rss:.0f} | {machines} |")
    return "\n".join(lines) + "\n"


def _mean_std(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4g}{spread}"


def write_all(table: Table, out: Path, title: str, reference: str = "orca") -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "table.md", "csv": out / "table.csv", "png": out / "table.png",
             "alignment": out / "alignment.md"}
    versus = versus_markdown(table, reference)
    paths["md"].write_text(markdown(table, title) + (f"\n{versus}" if versus else ""))
    write_csv(table, paths["csv"])
    plot(table, paths["png"])
    paths["alignment"].write_text(alignment_markdown(table))
    return paths
