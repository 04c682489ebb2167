"""python -m orca.select: bodies ranked by OTDD before and after a short alignment; a body
that cannot load offline is listed as unavailable; a finished selection is not overwritten."""
import json
import os
import subprocess
import sys
from pathlib import Path

from orca.select import rank

ROOT = Path(__file__).resolve().parents[1]


def select_cli(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf-empty"), "ORCA_CACHE_DIR": str(tmp / "cache")}
    return subprocess.run([sys.executable, "-m", "orca.select", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_select_ranks_the_bodies_that_load(tmp_path):
    out = tmp_path / "sel"
    args = ("task=digits", "bodies=[tiny-random,minilm:random,gpt2]", "steps=3", f"out={out}",
            "data.max_samples.train=300", "align.source_samples=200", "align.per_class=16",
            "align.eval_samples=200", "align.eval_source_samples=200")
    proc = select_cli(*args, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "select.json").read_text())
    rows = {r["body"]: r for r in result["bodies"]}
    assert rows["gpt2"]["status"] == "unavailable" and "could not load body 'gpt2'" in rows["gpt2"]["reason"]
    ok = [rows["tiny-random"], rows["minilm:random"]]
    assert [r["width"] for r in ok] == [32, 384]
    assert all(r["steps"] == 3 and r["otdd_after"] != r["otdd_before"] for r in ok)  # the embedders moved
    assert sorted(r["rank_after"] for r in ok) == [1, 2]
    best = min(ok, key=lambda r: r["otdd_after"])
    assert best["rank_after"] == 1 and result["bodies"][0] is not None and result["bodies"][0]["body"] == best["body"]
    assert "| 1 | " + best["body"] in (out / "select.md").read_text()
    again = select_cli(*args, tmp=tmp_path)
    assert again.returncode == 2 and "that selection is finished" in again.stderr


def test_select_checks_names_first(tmp_path):
    proc = select_cli("task=digits", "bodies=[tiny-random,nope]", f"out={tmp_path / 'sel'}", tmp=tmp_path)
    assert proc.returncode == 2 and "unknown body 'nope'; known bodys:" in proc.stderr
    assert not (tmp_path / "sel").exists()
    proc = select_cli("task=digits", f"out={tmp_path / 'sel'}", tmp=tmp_path)
    assert proc.returncode == 2 and "bodies=[" in proc.stderr


def test_rank_orders_by_distance_after_alignment():
    rows = rank([{"body": "a", "status": "ok", "otdd_before": 1.0, "otdd_after": 0.9},
                 {"body": "b", "status": "unavailable", "reason": "offline"},
                 {"body": "c", "status": "ok", "otdd_before": 2.0, "otdd_after": 0.5}])
    assert [r["body"] for r in rows] == ["c", "a", "b"]
    assert (rows[0]["rank_after"], rows[0]["rank_before"], rows[1]["rank_before"]) == (1, 2, 1)
