"""Reproduce the comparison table: run a suite of (task, method, seed) runs, resumably, and
write table.md, table.csv, table.png and alignment.md from their records.

    python scripts/reproduce_table.py --suite mini \
        --data-root ecg=../shared/datasets/physionet2017 --data-root satellite=../shared/datasets/satellite-crop \
        --data-root darcy=../shared/datasets/darcy16 --data-root cifar10=../shared/datasets/cifar10-subset
    python scripts/reproduce_table.py --suite mini --dry-run          # the planned runs, one a line
    python scripts/reproduce_table.py --suite nb360 --data-root ...    # the paper's ten tasks (GPUs)

Calling it again skips finished runs and retries failed or interrupted ones; --table-only
redraws the table from the records without running anything. Merged runs written under
<out>/merges/<task>/<name>/ by python -m orca.merge join the table as rows of their own.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from orca.errors import ConfigError, OrcaError  # noqa: E402
from orca.sweep import (PROTOCOLS, SUITES, check_runs, describe, merged_runs, parse_data_roots,  # noqa: E402
                        plan, run_missing, split_names)
from orca.table import alignment_markdown, collect, describe_markdown, markdown, write_all  # noqa: E402


def union(default, given) -> list:
    """The suite's names followed by any others given, each once."""
    return list(dict.fromkeys([*default, *(given or ())]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), default="mini")
    parser.add_argument("--tasks", nargs="+", help="subset of the suite's tasks (or others with a config): a b or a,b")
    parser.add_argument("--methods", nargs="+", help="subset of methods (orca, finetune, fpt, scratch, classical, lora, orca_lora, ...)")
    parser.add_argument("--seeds", nargs="+", help="seeds (default: the suite's, 0 1 2)")
    parser.add_argument("--budget", help="budget config (default: the suite's; cpu for mini, paper for nb360)")
    parser.add_argument("--data-root", action="append", default=[], metavar="TASK=PATH",
                        help="a task's data folder; repeat per task")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for every run, e.g. align.source_root=PATH; repeatable")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="clean",
                        help="clean: selected on validation (default); reference: ORCA's code as it runs, "
                             "selected on test (rows of their own, beside the clean ones in the table)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/<suite>)")
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs and run nothing")
    parser.add_argument("--table-only", action="store_true", help="write the table from existing records only")
    args = parser.parse_args(argv)

    suite = SUITES[args.suite]
    out = args.out or Path("results") / args.suite
    try:
        seeds = split_names(args.seeds)
        if seeds is not None and not all(s.isdigit() for s in seeds):
            raise ConfigError(f"--seeds takes integers (0 1 2 or 0,1,2), not {' '.join(args.seeds)!r}")
        def planned(protocol: str):
            return plan(suite, out, split_names(args.tasks), split_names(args.methods),
                        seeds and list(map(int, seeds)), args.budget, parse_data_roots(args.data_root),
                        tuple(args.override), protocol=protocol)

        runs = planned(args.protocol)
        first = {} if args.table_only else check_runs(runs)
    except OrcaError as exc:
        parser.error(str(exc))
    if args.dry_run:  # per task (its first run), then every run
        print(describe_markdown([describe(run, cfg) for run, cfg in first.items()]) + "\n")
        for run in runs:
            state = "done" if run.done else "failed, will retry" if run.failed else "to run"
            print(f"{run.task:<10} {run.method:<9} seed {run.seed}  [{state}]  {' '.join(run.command()[1:])}")
        print(f"{len(runs)} runs planned, {sum(r.done for r in runs)} done")
        return 0
    t0 = time.perf_counter()
    counts = {"failed": 0}
    if not args.table_only:
        counts = run_missing(runs)
        print(f"sweep: {counts} in {(time.perf_counter() - t0) / 60:.1f} min")
    # The table shows every finished run of the folder, not only this call's subset: a sweep of
    # seed 1 alone must not redraw the table without seed 0 (both protocols; merges as rows).
    tasks, methods = union(suite.tasks, split_names(args.tasks)), union(suite.methods, split_names(args.methods))
    everything = [r for protocol in PROTOCOLS
                  for r in plan(suite, out, tasks, methods, union(suite.seeds, seeds and list(map(int, seeds))),
                                protocol=protocol)]
    shown = sorted({r.folder: r for r in runs + [r for r in everything if r.done]}.values(),
                   key=lambda r: (tasks.index(r.task), methods.index(r.method)))  # the suite's order
    merged = [r for r in merged_runs(out) if r.task in {run.task for run in shown}]  # python -m orca.merge's
    table = collect(shown + merged, published=suite.published)
    budget = args.budget or suite.budget
    paths = write_all(table, out, f"Suite {args.suite}, budget={budget}", reference=suite.reference)
    print(markdown(table, f"Suite {args.suite}, budget={budget}"))
    print(alignment_markdown(table))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
