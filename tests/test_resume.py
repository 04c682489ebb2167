"""Exact resume: a real tiny run, killed with SIGKILL once in each stage and restarted in its
folder each time, ends with the record of an uninterrupted run (metrics to the last digit)."""
import json
import os
import signal
import subprocess
import sys

from conftest import ROOT

ARGS = ["task=digits", "body=tiny-random", "budget=smoke", "plugins=[kill_switch]",
        "trainer.enable_progress_bar=false", "finetune.max_steps=12", "finetune.new_lr=0.02"]  # learns by step 12
KILL_POINTS = ["data", "align:1", "finetune:8", "test"]  # 2 align steps; 12 fine-tuning, validated at 6 and 12


def run(folder, tmp_path, kill_at=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ORCA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT / "tests")}
    env.pop("ORCA_KILL_AT", None)
    if kill_at:
        env["ORCA_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "orca.train", *ARGS, f"hydra.run.dir={folder}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def test_a_run_killed_in_every_stage_resumes_to_the_same_record(tmp_path):
    reference = run(tmp_path / "reference", tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    folder = tmp_path / "killed"
    for point in KILL_POINTS:
        proc = run(folder, tmp_path, kill_at=point)
        assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-3000:])
        assert not (folder / "results.json").exists()
    resumed = run(folder, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected = json.loads((tmp_path / "reference" / "results.json").read_text())
    record = json.loads((folder / "results.json").read_text())
    assert record["metrics"] == expected["metrics"]  # every metric, to the last digit
    for key in ("before", "after", "steps"):
        assert record["align"][key] == expected["align"][key]
    for key in ("steps_done", "selected_step", "plan"):
        assert record["finetune"][key] == expected["finetune"][key]
    # The selected model is the last one, trained after the kill (steps 7-12 replayed from the
    # checkpoint at 6), so the equal metrics above show those steps replayed exactly, the
    # plugin's random augmentation included.
    assert expected["finetune"]["selected_step"] == 12
    assert record["attempts"] == len(KILL_POINTS) + 1 and expected["attempts"] == 1
    assert record["time_s"]["data"] > 0 and record["time_s"]["total"] >= sum(
        v for k, v in record["time_s"].items() if k != "total") - 0.1
