"""The run record: one ``results.json`` per run folder, and the summary printed at the end."""
from __future__ import annotations

import json
import resource
import time
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

RECORD_NAME = "results.json"
PACKAGES = ("torch", "transformers", "lightning", "pot", "torchmetrics", "hydra-core")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageTimer:
    """Wall-clock seconds and peak RSS after each named stage."""

    def __init__(self):
        self.start = time.perf_counter()
        self.time_s: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.time_s[name] = round(time.perf_counter() - t0, 2)
            self.peak_rss_mb[name] = round(peak_rss_mb(), 1)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    def totals(self) -> dict[str, float]:
        return {**self.time_s, "total": round(time.perf_counter() - self.start, 2)}


def package_versions() -> dict[str, str]:
    return {name: version(name) for name in PACKAGES}


def write_record(run_dir: Path, record: dict) -> Path:
    path = Path(run_dir) / RECORD_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float))
    tmp.replace(path)  # atomic: a record on disk is always complete
    return path


def summary(record: dict) -> str:
    """A short human-readable table of one run."""
    test, val = record["metrics"]["test"], record["metrics"]["val"]
    rows = [
        ("task / method / body", f"{record['task']} / {record['method']} / {record['body'] or '-'} (seed {record['seed']})"),
        (f"test error ({record['error_name']})", f"{test['error']:.4g}"),
        ("val error (selected model)", f"{val['error']:.4g}"),
    ]
    rows += [(f"test {k}", f"{v:.4f}") for k, v in test.items() if k != "error"]
    if record.get("align"):
        a = record["align"]
        rows.append((f"{a['distance']} before -> after align", f"{a['before']:.4g} -> {a['after']:.4g}"))
    if record.get("finetune"):
        f = record["finetune"]
        planned = f" of {f['steps_planned']} planned" if f.get("steps_planned") else ""
        rows.append(("fine-tuning steps", f"{f['steps_done']}{planned}, {f['seconds_per_step']:.3f} s a step (validation included), "
                                          f"selected at step {f['selected_step']}"))
    if record.get("classical"):
        c = record["classical"]
        rows.append(("classical model", f"{c['model']}, {c['strength_name']} = {c['chosen']:g} (chosen on validation)"))
    rows.append(("time (s)", ", ".join(f"{k} {v:.1f}" for k, v in record["time_s"].items())))
    rows.append(("peak RSS (MiB)", f"{record['peak_rss_mb']:.0f}"))
    paper = record.get("paper") or {}
    if paper:
        rows.append(("paper (published)", ", ".join(f"{k} {v}" for k, v in paper.items())))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)
