"""A resumable sweep of runs: plan (task, method, seed) runs, run the missing ones.

Each run is one ``python -m orca.train`` process writing into its own fixed folder
``<out>/runs/<task>/<method>/s<seed>``. One process per run (rather than a Hydra multirun)
because a sweep must survive interruption and failure: a run whose ``results.json``
exists is done and never rerun; a run without one (failed, killed, never started) is
started again on the next call. A retried run starts afresh, its earlier attempt kept
beside it as ``s<seed>.partial-<k>``: the record's time per stage must come from one
uninterrupted process to be comparable across runs (a user rerunning ``orca.train`` in the
same folder still resumes from the stage checkpoints). A failure is recorded in
``failed.txt`` in the run's folder and does not stop the sweep.
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from orca.config_path import known_options
from orca.errors import ConfigError, RunFolderBusyError
from orca.lock import refuse_if_held
from orca.preflight import check_overrides
from orca.record import RECORD_NAME

FAILED_NAME = "failed.txt"


@dataclass(frozen=True)
class Suite:
    """Which runs a suite holds, and the overrides every run of a task gets."""

    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    budget: str
    task_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    published: bool = False  # print the paper's rows beside ours
    reference: str = "orca"  # the method every other is tested against (Welch's t-test)


SUITES = {
    # Sized for a 2-core CPU: four tasks on the real data in ../shared/datasets, MiniLM body.
    "mini": Suite(tasks=("ecg", "satellite", "darcy", "cifar10"),
                  methods=("orca", "finetune", "fpt", "scratch", "classical", "lora", "orca_lora"), seeds=(0, 1, 2),
                  budget="cpu"),
    # Stage 3's adaptation methods against full fine-tuning and LoRA on one machine (the
    # mini rows of other days ran on other CPUs: a 280 s budget buys their steps at their speed).
    "adaptation": Suite(tasks=("satellite", "cifar10"),
                        methods=("finetune", "lora", "partial", "prompt", "prefix", "ia3", "adapter"), seeds=(0, 1, 2),
                        budget="cpu", reference="finetune"),
    # The paper's ten tasks; budget=paper brings its bodies (RoBERTa for 1D, Swin for 2D,
    # configs/paper_body/) and hyperparameters: for GPUs.
    "nb360": Suite(
        tasks=("cifar100", "spherical", "darcy", "psicov", "cosmic", "ninapro", "fsd50k", "ecg", "satellite", "deepsea"),
        methods=("orca", "fpt", "finetune", "scratch"), seeds=(0, 1, 2), budget="paper", published=True,
    ),
}


@dataclass(frozen=True)
class Run:
    task: str
    method: str
    seed: int
    folder: Path
    overrides: tuple[str, ...]
    variant: str = ""  # a table row other than the method (an ablation's setting)

    @property
    def row(self) -> str:
        return self.variant or self.method

    @property
    def done(self) -> bool:
        return (self.folder / RECORD_NAME).exists()

    @property
    def failed(self) -> bool:
        return not self.done and (self.folder / FAILED_NAME).exists()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "orca.train", f"task={self.task}", f"method={self.method}", f"seed={self.seed}",
                *self.overrides, f"hydra.run.dir={self.folder}"]


def merged_runs(out: Path) -> list[Run]:
    """The merged runs written under <out>/merges/<task>/<name>/ (python -m orca.merge),
    one table row per merge method (wise_ft, soup_greedy, ...), its seeds averaged."""
    import json

    runs = []
    for record_path in sorted(Path(out).glob(f"merges/*/*/{RECORD_NAME}")):
        record = json.loads(record_path.read_text())
        runs.append(Run(record["task"], record["method"], int(record["seed"]), record_path.parent, ()))
    return runs


def parse_data_roots(pairs: list[str]) -> dict[str, str]:
    """["ecg=PATH", ...] -> {"ecg": "PATH"}."""
    roots = {}
    for pair in pairs:
        task, sep, path = pair.partition("=")
        if not sep or not task or not path:
            raise ConfigError(f"--data-root takes TASK=PATH, got {pair!r}")
        roots[task] = path
    return roots


def add_sweep_arguments(parser, out: Path) -> None:
    """The options every sweep script shares: seeds, data roots, overrides, output folder,
    --dry-run and --table-only."""
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-root", action="append", default=[], metavar="TASK=PATH")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for every run, e.g. align.source_root=PATH; repeatable")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs and run nothing")
    parser.add_argument("--table-only", action="store_true", help="write the table from existing records only")


def split_names(values: list[str] | None) -> list[str] | None:
    """Command-line lists given as `a,b`, `a b` or both -> [a, b]."""
    return None if values is None else [v for value in values for v in value.split(",") if v]


def check_runs(runs: list[Run]) -> dict[Run, DictConfig]:
    """Before anything is launched: every task and method name is known, and each task's
    command composes with keys and values of the right types (orca/preflight.py). Returns
    each task's first run with its composed config."""
    for group, names in (("task", {r.task for r in runs}), ("method", {r.method for r in runs})):
        known = known_options(group)
        unknown = sorted(names - set(known))
        if unknown:
            raise ConfigError(f"unknown {group}{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                              f"known {group}s: {', '.join(known)}")
    first = {}
    for run in runs:
        first.setdefault(run.task, run)
    return {run: check_overrides(run.command()[3:-1]) for run in first.values()}  # without interpreter and folder


PROTOCOLS = ("clean", "reference")
REFERENCE_ROW = "{method} (reference: selected on test)"  # a method's table row under protocol=reference


def describe(run: Run, cfg: DictConfig) -> dict:
    """What a run will do, from its composed config `cfg` alone (nothing loaded): body,
    alignment source and steps, epochs, and, for a task whose config gives ORCA's
    training-set size (reference.train_samples: train + validation, what protocol=reference
    trains on), the optimiser steps and samples seen over its epochs."""
    from orca.align.sources import choose_source  # torch: only when asked

    f, a = cfg.finetune, cfg.align
    try:
        source = choose_source(a.source, a.source_root, a.text_fallback, images=cfg.embedder.name == "swin_patch")
    except ConfigError:
        source = "conll2003: needs align.source_root"
    n = cfg.get("reference", {}).get("train_samples") if cfg.protocol.select_on == "test" else None
    epochs = f.max_epochs if f.max_steps in (None, -1) else None
    steps = seen = None
    if n and epochs:  # an epoch: ceil(n / batch) micro-batches, an optimiser step every accumulate of them
        seen = epochs * n
        steps = epochs * (math.ceil(n / f.batch_size) // f.accumulate_grad_batches)
    return {"task": run.task, "method": run.method, "body": cfg.body.name, "protocol": cfg.protocol.name,
            "source": source, "align_steps": a.steps if cfg.method.align else 0, "epochs": epochs,
            "batch": f"{f.batch_size} x {f.accumulate_grad_batches}", "optimizer_steps": steps, "samples_seen": seen}


def plan(suite: Suite, out: Path, tasks=None, methods=None, seeds=None, budget=None,
         data_roots: dict[str, str] | None = None, overrides: tuple[str, ...] = (),
         protocol: str = "clean") -> list[Run]:
    """Every run of the suite (or of the given subsets), in task, method, seed order. Runs
    under protocol=reference (ORCA's code as it runs) go to <method>@reference/ and their
    own table rows, so that a table can show both protocols."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    data_roots = data_roots or {}
    unknown = set(data_roots) - set(tasks or suite.tasks)
    if unknown:
        raise ConfigError(f"--data-root for {', '.join(sorted(unknown))}, which the sweep does not run")
    runs = []
    for task in tasks or suite.tasks:
        task_args = (f"budget={budget or suite.budget}", *suite.task_overrides.get(task, ()),
                     *((f"data.root={data_roots[task]}",) if task in data_roots else ()),
                     *(("protocol=reference",) if protocol == "reference" else ()), *overrides)
        for method in methods or suite.methods:
            folder = method if protocol == "clean" else f"{method}@reference"
            row = "" if protocol == "clean" else REFERENCE_ROW.format(method=method)
            for seed in seeds if seeds is not None else suite.seeds:
                runs.append(Run(task, method, int(seed), out / "runs" / task / folder / f"s{seed}", task_args,
                                variant=row))
    return runs


def _set_aside(folder: Path) -> Path:
    """Rename an unfinished run folder to the first free <name>.partial-<k>."""
    k = 1
    while (aside := folder.with_name(f"{folder.name}.partial-{k}")).exists():
        k += 1
    folder.rename(aside)
    return aside


def run_missing(runs: list[Run], log=print) -> dict[str, int]:
    """Run every planned run without a record, one process at a time, skipping any that a live
    process holds (orca/lock.py); returns counts."""
    todo = [r for r in runs if not r.done]
    log(f"{len(runs) - len(todo)} of {len(runs)} runs already done; running {len(todo)}")
    counts = {"done": len(runs) - len(todo), "ran": 0, "failed": 0, "busy": 0}
    for i, run in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {run.task} {run.method} seed {run.seed} -> {run.folder}")
        try:  # another sweep on the same folder runs it now: neither set aside nor run twice
            refuse_if_held(run.folder)
        except RunFolderBusyError as exc:
            counts["busy"] += 1
            log(f"    skipped: {exc}")
            continue
        if run.folder.exists() and any(run.folder.iterdir()):
            aside = _set_aside(run.folder)
            log(f"    an earlier attempt is kept in {aside}; starting afresh")
        run.folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(run.folder / "stdout.log", "a") as stdout:
            proc = subprocess.run(run.command(), stdout=stdout, stderr=subprocess.PIPE, text=True)
        minutes = (time.perf_counter() - t0) / 60
        if proc.returncode == 0 and run.done:
            counts["ran"] += 1
            log(f"    finished in {minutes:.1f} min")
        else:
            counts["failed"] += 1
            (run.folder / FAILED_NAME).write_text(f"exit code {proc.returncode}\n{proc.stderr[-5000:]}")
            log(f"    FAILED (exit {proc.returncode}) after {minutes:.1f} min; see {run.folder / FAILED_NAME}")
    return counts
