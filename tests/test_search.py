"""The recipe search: token choices, and a study that resumes where it stopped."""
import json
import subprocess
import sys

import optuna

from conftest import ROOT
from orca.search import token_choices


def test_token_choices_are_the_distinct_token_counts():
    assert token_choices((1, 8, 8)) == [1, 4, 16, 64]  # patches 8, 4, 2, 1
    assert [46 // (46 // t) if 46 % t == 0 else None for t in token_choices((1, 46))] == [1, 2, 23, 46]
    assert all(t <= 64 for t in token_choices((1, 1000)))


def test_search_starts_from_the_defaults_and_resumes(tmp_path, make_cfg):
    out = tmp_path / "study"
    args = [sys.executable, "scripts/search_recipe.py", "--task", "digits", "--method", "finetune", "--budget", "smoke",
            "--budget-s", "0", "--override", "body=tiny-random", "--override", f"paths.cache_dir={tmp_path / 'c'}",
            "--out", str(out)]
    first = subprocess.run([*args, "--trials", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    study = optuna.load_study(study_name="digits-finetune", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 2
    cfg = make_cfg("task=digits", "method=finetune")
    assert study.trials[0].params == {"embedder.target_len": cfg.embedder.target_len,
                                      "finetune.optimizer.lr": cfg.finetune.optimizer.lr,
                                      "finetune.new_lr": cfg.finetune.new_lr}
    record = json.loads((out / "trials" / "000" / "results.json").read_text())
    assert study.trials[0].value == record["metrics"]["val"]["error"]
    again = subprocess.run([*args, "--trials", "3"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 3 trials finished" in again.stdout
    study = optuna.load_study(study_name="digits-finetune", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert "| trial | val error |" in again.stdout
