"""The run record: one ``results.json`` per run folder, and the summary printed at the end."""
from __future__ import annotations

import json
import os
import platform
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
    """Wall-clock seconds and peak RSS after each named stage.

    With a `path`, the times are summed over the attempts of a run that was interrupted and
    resumed: each attempt adds its own to what the file holds (written at the attempt's
    start, at each stage's end and every few seconds of training: orca/resume.py SaveTimes).
    """

    def __init__(self, path: Path | None = None):
        self.start = time.perf_counter()
        self.path = path
        saved = json.loads(path.read_text()) if path is not None and path.exists() else {}
        self.attempts = saved.get("attempts", 0) + 1
        self.earlier: dict[str, float] = saved.get("time_s", {})  # all earlier attempts
        self.time_s: dict[str, float] = {}  # this attempt's finished stages
        self.running: dict[str, float] = {}  # stage -> its start in this attempt
        self.peak_rss_mb: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        self.running[name] = time.perf_counter()
        try:
            yield
        finally:
            self.time_s[name] = self.time_s.get(name, 0.0) + time.perf_counter() - self.running.pop(name)
            self.peak_rss_mb[name] = round(peak_rss_mb(), 1)
            self.save()

    def elapsed(self) -> float:
        """Seconds since this attempt started."""
        return time.perf_counter() - self.start

    def totals(self) -> dict[str, float]:
        """Seconds per stage and in all, over every attempt (running stages up to now)."""
        now = time.perf_counter()
        current = dict(self.time_s, total=now - self.start)
        for name, t0 in self.running.items():
            current[name] = current.get(name, 0.0) + now - t0
        names = [*self.earlier, *(k for k in current if k not in self.earlier)]
        summed = {k: round(self.earlier.get(k, 0.0) + current.get(k, 0.0), 2) for k in names if k != "total"}
        return {**summed, "total": round(self.earlier.get("total", 0.0) + current["total"], 2)}

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"attempts": self.attempts, "time_s": self.totals()}))
            tmp.replace(self.path)


def package_versions() -> dict[str, str]:
    return {name: version(name) for name in PACKAGES}


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # what decides fp32/bf16 speed here


def machine() -> dict:
    """What a time-budgeted number depends on: the CPU model, its cores, torch's threads, the
    instruction sets that matter (AVX-512, AMX; Linux's /proc/cpuinfo), and any accelerator."""
    import torch  # here: the sweep and table read records without torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:  # not Linux: the flags stay unknown
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "flags": [f for f in SPEED_FLAGS if f in flags],
            "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine_text(m: dict) -> str:
    """A record's machine in one line: "AMD EPYC, 2 cores, 2 threads, avx2"."""
    return (f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} threads"
            f"{', ' + ' '.join(m['flags']) if m['flags'] else ''}{', ' + m['accelerator'] if m['accelerator'] else ''}")


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
    if (record.get("protocol") or {}).get("note"):
        rows.append(("protocol", record["protocol"]["note"]))
    if record.get("align"):
        a = record["align"]
        rows.append((f"{a['distance']} before -> after align", f"{a['before']:.4g} -> {a['after']:.4g}"))
    if record.get("finetune"):
        f = record["finetune"]
        planned = f" of {f['steps_planned']} planned" if f.get("steps_planned") else ""
        stopped = ", stopped at the deadline" if f.get("stopped_on_time") else ""
        if f.get("stopped_early"):
            stopped = f", stopped early ({f['stopped_early']['reason']})"
        rows.append(("fine-tuning steps", f"{f['steps_done']}{planned}{stopped}, {f['seconds_per_step']:.3f} s a step "
                                          f"(validation included), selected at step {f['selected_step']}"))
        if (f.get("plan") or {}).get("source"):
            rows.append(("step plan", f["plan"]["source"]))
    if record.get("classical"):
        c = record["classical"]
        chosen = c["chosen"] if isinstance(c["chosen"], str) else f"{c['model']} {c['strength_name']}={c['chosen']:g}"
        rows.append(("classical model", f"{chosen} (chosen on validation)"))  # older records: a strength only
    rows.append(("time (s)", ", ".join(f"{k} {v:.1f}" for k, v in record["time_s"].items())))
    rows.append(("peak RSS (MiB)", f"{record['peak_rss_mb']:.0f}"))
    if record.get("machine"):
        rows.append(("machine", machine_text(record["machine"])))
    paper = record.get("paper") or {}
    if paper:
        rows.append(("paper (published)", ", ".join(f"{k} {v}" for k, v in paper.items())))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)
