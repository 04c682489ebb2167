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


def test_cli_unknown_task_lists_known(tmp_path):
    proc = run_cli("task=nope", tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "nope" in proc.stderr and "digits" in proc.stderr and "ecg" in proc.stderr


def test_cli_unknown_embedder_lists_known(tmp_path):
    proc = run_cli("body=tiny-random", "embedder.name=nope", f"hydra.run.dir={tmp_path / 'r'}", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "unknown embedder 'nope'" in proc.stderr and "patch2d" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_data_names_path_and_url(tmp_path):
    proc = run_cli("task=ecg", f"data.root={tmp_path / 'absent'}", "data.download=false", "body=tiny-random",
                   f"hydra.run.dir={tmp_path / 'r'}", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert str(tmp_path / "absent" / "training2017") in proc.stderr and "physionet.org" in proc.stderr


def test_cli_wrong_shape_for_embedder_fails_before_training(tmp_path):
    proc = run_cli("task=digits", "embedder.name=conv1d", "body=tiny-random", f"hydra.run.dir={tmp_path / 'r'}",
                   tmp_path=tmp_path)
    assert proc.returncode == 2 and "takes inputs shaped (C, L)" in proc.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()
