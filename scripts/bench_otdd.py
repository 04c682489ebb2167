"""Benchmark: our OTDD against the OTDD authors' implementation, and the cost of a real
align step.

    python scripts/bench_otdd.py [--reference ../shared/otdd-reference] [--repeats 5]
        [--reference-python $OTDD_REF_DIR/venv/bin/python]
        [--data-root satellite=../shared/datasets/satellite-crop --data-root ecg=...]

1. Reference cases: for each case and inner method, our value and median seconds per call
   (a fresh OTDD object each call: label distances, both self-terms and the cross term,
   as the reference times one call) beside the reference values, the authors'
   implementation's median seconds and the speed-up; then where our seconds go on the
   largest case. With --reference-python (the venv that
   ../shared/tools/otdd_reference/setup.sh makes), the authors' code is timed in the same
   run, on this machine, by that tool in its own process (the project never imports it);
   without it, the times recorded with the cases stand in, labelled as another machine's.
2. A real align step, as `method=orca budget=cpu` runs it: the cached source features
   (CoNLL-2003 through MiniLM, budget=cpu's 1,000 sentences), a task's training data
   through a freshly initialised embedder, and per target class one OTDD forward and
   backward on a sample of 64 or 128 of its points. Prints the median per class (one call
   alone), per step (all classes through `OTDD.class_losses`, which overlaps one class's
   Sinkhorn with the next classes' label distances) and for the step's label distances
   alone (every class's network-simplex solves through the thread pool, nothing else). Tasks whose data folder is missing are
   skipped with a note.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from orca.align.otdd import OTDD, Classes, class_distances, ground_cost, squared_distances, start_class_distances  # noqa: E402
from orca.align.sinkhorn import kernel_dtype, sinkhorn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SETTINGS = {"exact": "S1_exact_innerdebT", "gaussian": "S2_gauss_debT"}
REFERENCE_TOOL = SHARED / "tools" / "otdd_reference" / "time_reference.py"
DEFAULT_TASKS = {"satellite": SHARED / "datasets" / "satellite-crop", "ecg": SHARED / "datasets" / "physionet2017"}


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def time_authors(python: Path, tool: Path, cases: list[Path], repeats: int) -> dict[tuple[str, str], float]:
    """(case, setting) -> the authors' median seconds a call, timed now on this machine by
    the otdd_reference tool in its own process."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reference.json"
        proc = subprocess.run([str(python), str(tool), *map(str, cases), "--repeats", str(repeats),
                               "--json", str(out)], capture_output=True, text=True)
        if not out.exists():
            raise SystemExit(f"timing the authors' OTDD failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        results = json.loads(out.read_text())["results"]
    return {(r["case"], r["setting"]): r["median_s"] for r in results}


def reference_cases(folder: Path, repeats: int, authors: dict[tuple[str, str], float] | None) -> None:
    where = "this machine, this run" if authors else "recorded with the cases on another machine"
    print(f"## Reference cases ({folder}; median of {repeats} calls, {torch.get_num_threads()} threads; "
          f"the authors' seconds: {where})\n")
    print(f"{'case':14} {'inner':8} {'ours':>10} {'reference':>10} {'rel.diff':>8} {'ours s':>8} {'authors s':>9} "
          f"{'speed-up':>8}")
    for path in sorted(folder.glob("*.npz")):
        d = np.load(path)
        xs, ys, xt, yt = (torch.as_tensor(d[k]) for k in ("xs", "ys", "xt", "yt"))
        for inner, setting in SETTINGS.items():
            seconds, value = median_seconds(lambda: float(OTDD(xs, ys, inner=inner)(xt, yt)), repeats)
            ref = float(d[f"otdd_{setting}"])
            ref_s = authors[path.stem, setting] if authors else float(d[f"time_{setting}"])
            rel = f"{abs(value - ref) / abs(ref):8.1%}" if abs(ref) > 1e-3 else f"{'—':>8}"
            print(f"{path.stem:14} {inner:8} {value:10.4g} {ref:10.4g} {rel} {seconds:8.3f} {ref_s:9.3f} "
                  f"{ref_s / seconds:7.1f}x")


def breakdown(path: Path, repeats: int) -> None:
    """Seconds of each part of one OTDD call on a reference case."""
    d = np.load(path)
    xs, ys, xt, yt = (torch.as_tensor(d[k]) for k in ("xs", "ys", "xt", "yt"))
    print(f"\n## Where the seconds go ({path.stem}: {len(xs)} x {xs.shape[1]} source, {len(xt)} target)\n")
    for inner in SETTINGS:
        parts = []
        for name, (a, ya, b, yb) in {"source-target": (xs, ys, xt, yt), "source-source": (xs, ys, xs, ys),
                                     "target-target": (xt, yt, xt, yt)}.items():
            s_w, W = median_seconds(lambda: class_distances(a, ya, b, yb, inner), repeats)
            cost = lambda: ground_cost(squared_distances(a.to(kernel_dtype(1e-4)), b.to(kernel_dtype(1e-4))), W, ya, yb)  # noqa: E731
            s_c, M = median_seconds(cost, repeats)
            s_s, sol = median_seconds(lambda: sinkhorn(M, 0.1, symmetric=a is b), repeats)
            sparse = "sparse" if sol.kernel.sparse else "dense"
            parts.append(f"{name}: labels {s_w:.3f} s, cost {s_c:.3f} s, Sinkhorn {s_s:.3f} s "
                         f"({sol.iterations} iterations, last kernel {sparse})")
        print(f"{inner}:\n  " + "\n  ".join(parts))


def align_inputs(task: str, root: Path, source_root: Path, per_class_pool: int = 1024):
    """Cached source features and labels, and up to per_class_pool embedded training
    samples of each target class, as `method=orca budget=cpu` builds them (seed 0)."""
    from orca.align.sources import load_source
    from orca.bodies import load_body
    from orca.methods import MethodConfig
    from orca.model import build_model
    from orca.pipeline import _pooled_features, model_architecture, node_options
    from orca.tasks import create_task

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"task={task}", "method=orca", "budget=cpu", f"data.root={root}",
                                          f"align.source_root={source_root}"])
    torch.manual_seed(0)
    t = create_task(cfg.task.name, **node_options(cfg.task))
    splits = t.load(cfg.data.root, download=False, max_samples=node_options(cfg.data.max_samples, drop=()), seed=0)
    loaded = load_body(cfg.body.name, cfg.body.path, pretrained=True)
    _, arch = model_architecture(cfg, t, loaded, MethodConfig(**node_options(cfg.method, drop=())))
    embedder = build_model(loaded, arch).embedder
    a = cfg.align
    xs, ys, _ = load_source("conll2003", loaded, a.source_samples, a.seq_len, str(source_root), seed=0,
                            cache_dir=cfg.paths.cache_dir, download=False)
    x, y = splits.train.tensors[:2]
    labels = t.align_labels(y)
    rng = np.random.default_rng(0)
    pools = [rng.permutation(np.flatnonzero(labels.numpy() == c))[:per_class_pool] for c in labels.unique().tolist()]
    feats = [_pooled_features(embedder, x[torch.as_tensor(p)]) for p in pools]
    return xs, ys, feats


def align_step(task: str, root: Path, source_root: Path, steps: int) -> None:
    xs, ys, feats = align_inputs(task, root, source_root)
    otdd = OTDD(xs, ys)  # budget=cpu's options: exact inner, eps 0.1, debiased
    rng = np.random.default_rng(1)
    for per_class in (64, 128):
        per_call, per_step, labels = [], [], []
        for _ in range(steps):
            samples = [pool[rng.permutation(len(pool))[:per_class]].clone() for pool in feats]
            for c, sample in enumerate(samples):  # one class at a time
                sample.requires_grad_(True)
                start = time.perf_counter()
                otdd.loss(sample, torch.full((len(sample),), c)).backward()
                per_call.append(time.perf_counter() - start)
            x = torch.cat(samples).detach().requires_grad_(True)  # a whole step, as the align stage runs it
            y = torch.cat([torch.full((len(s),), c) for c, s in enumerate(samples)])
            start = time.perf_counter()
            sum(otdd.class_losses(x, y).values()).backward()
            per_step.append(time.perf_counter() - start)
            start = time.perf_counter()
            solving = [start_class_distances(otdd.source_classes, Classes(s, torch.full((len(s),), c)))
                       for c, s in enumerate(samples)]
            [wait() for wait in solving]
            labels.append(time.perf_counter() - start)
        print(f"{task:10} {len(feats):3d} classes x {per_class:3d} points: {1e3 * statistics.median(per_call):6.1f} ms "
              f"a class alone, {statistics.median(per_step):6.3f} s a step (all classes, batched), "
              f"60 steps ~ {60 * statistics.median(per_step):5.1f} s; the step's label distances alone "
              f"{statistics.median(labels):6.3f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, default=SHARED / "otdd-reference")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-python", type=Path,
                        help="python of the otdd_reference venv: time the authors' code here, in this run")
    parser.add_argument("--reference-tool", type=Path, default=REFERENCE_TOOL)
    parser.add_argument("--data-root", action="append", default=[], metavar="TASK=PATH",
                        help="a task's data folder for the align-step benchmark (default: satellite and ecg in "
                             f"{SHARED / 'datasets'})")
    parser.add_argument("--source-root", type=Path, default=SHARED / "datasets" / "conll2003")
    parser.add_argument("--steps", type=int, default=10, help="align steps timed per task and sample size")
    args = parser.parse_args()
    if args.reference.exists():
        authors = None
        if args.reference_python:
            cases = sorted(args.reference.glob("*.npz"))
            authors = time_authors(args.reference_python, args.reference_tool, cases, args.repeats)
        reference_cases(args.reference, args.repeats, authors)
        largest = max(args.reference.glob("*.npz"), key=lambda p: p.stat().st_size)
        breakdown(largest, args.repeats)
    else:
        print(f"reference cases not found at {args.reference}: skipped (--reference PATH)")
    tasks = dict(item.split("=", 1) for item in args.data_root) if args.data_root else DEFAULT_TASKS
    print(f"\n## One align step (median over {args.steps} steps; forward and backward of the distance)\n")
    for task, root in tasks.items():
        if not Path(root).exists() or not args.source_root.exists():
            print(f"{task}: data at {root} or source at {args.source_root} not found: skipped")
            continue
        align_step(task, Path(root), args.source_root, args.steps)


if __name__ == "__main__":
    main()
