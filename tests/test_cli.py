"""The command line, as a user runs it (subprocesses, budget=smoke, tiny body)."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def run_cli(*args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ORCA_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "orca.train", *args, "trainer.enable_progress_bar=false"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_cli_smoke_run_writes_record(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("task=digits", "body=tiny-random", "budget=smoke", f"hydra.run.dir={out}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert record["task"] == "digits" and record["body"] == "tiny-random"
    assert "test error (0-1 error %)" in proc.stdout  # the summary table
    assert (out / "config.yaml").exists() and (out / "train.log").exists()


def test_cli_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "task=digits", "body=tiny-random", "budget=smoke", "method=fpt,scratch",
                   f"hydra.sweep.dir={sweep}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert sorted(r["method"] for r in records) == ["fpt", "scratch"]
