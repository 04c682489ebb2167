"""The learning-curve sweep's plan, curves and figure (scripts/learning_curve.py), from
hand-written records, and one real run per setting at the smallest scale."""
import importlib.util
import json

import pytest

from conftest import ROOT
from orca.errors import OrcaError
from orca.table import collect
from test_reproduce_table import fake_record

spec = importlib.util.spec_from_file_location("learning_curve", ROOT / "scripts" / "learning_curve.py")
curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curve)


def test_plan_gives_each_size_and_budget_its_folder_and_overrides(tmp_path):
    runs = curve.plan(tmp_path, ["satellite"], ["finetune", "fpt_random"], [0.02, 1.0], [280, 1180], [0, 1],
                      {"satellite": "/data/sat"}, ("x=1",))
    assert len(runs) == 2 * 2 * 2 * 2
    # every method of a seed, then the next seed: a sweep cut short leaves whole comparisons
    assert [(r.method, r.variant.split()[1], r.seed) for r in runs[:3]] == [
        ("finetune", "f0.02-t280", 0), ("fpt_random", "f0.02-t280", 0), ("finetune", "f0.02-t280", 1)]
    by = {(r.method, r.variant.split()[1], r.seed): r for r in runs}
    run = by["fpt_random", "f0.02-t1180", 1]
    assert run.folder == tmp_path / "runs" / "satellite" / "fpt_random" / "f0.02-t1180" / "s1"
    command = " ".join(run.command())
    for part in ("method=fpt_random", "data.train_fraction=0.02", "budget_s=1180", "budget=cpu", "data.root=/data/sat",
                 "x=1"):
        assert part in command
    with pytest.raises(OrcaError, match=r"in \(0, 1\]"):
        curve.plan(tmp_path, ["satellite"], ["finetune"], [2.0], [280], [0], {}, ())


def test_curves_average_seeds_per_size_and_the_figure_is_written(tmp_path):
    runs = curve.plan(tmp_path, ["ta"], ["finetune", "scratch"], [0.1, 1.0], [280], [0, 1], {}, ())
    for run in runs:
        size = float(run.variant.split()[1][1:].split("-")[0])
        fake_record(run, (40.0 if run.method == "finetune" else 50.0) - 10 * size + run.seed)
        record = json.loads((run.folder / "results.json").read_text())
        record["data_sizes"] = {"train": int(1000 * size), "val": 100, "test": 100}
        (run.folder / "results.json").write_text(json.dumps(record))
    lines = curve.curves(collect(runs))[("ta", 280)]
    assert [n for n, _, _ in lines["finetune"]] == [100, 1000]
    n, mean, se = lines["scratch"][0]
    assert mean == pytest.approx(49.5) and se == pytest.approx(0.5)  # errors 49 and 50: std 0.707 / sqrt(2)
    curve.plot(collect(runs), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    verdicts = curve.verdicts_markdown(collect(runs))  # finetune 39, 40 against scratch 49, 50 at each size
    assert "| ta | 280 | 0.1 | 100 | finetune − scratch | -10 | 0.71 | 0.005 | finetune better |" in verdicts
    assert "orca − " not in verdicts and "fpt − " not in verdicts  # no runs of theirs: no verdict


def test_a_small_sweep_runs_and_resumes(tmp_path):
    args = ["--tasks", "digits", "--methods", "finetune", "--sizes", "0.2", "1", "--budgets", "20", "--seeds", "0",
            "--out", str(tmp_path), "--override", "body=tiny-random", "--override", "finetune.max_steps=4"]
    assert curve.main(args) == 0
    records = sorted(tmp_path.glob("runs/digits/finetune/*/s0/results.json"))
    sizes = [json.loads(p.read_text())["data_sizes"]["train"] for p in records]
    assert len(records) == 2 and sizes[0] < sizes[1]  # f0.2 and f1
    assert (tmp_path / "curves.png").exists() and "finetune f0.2-t20" in (tmp_path / "table.md").read_text()
    assert curve.main(args) == 0  # nothing left to run


def test_simulated_patience_stops_where_early_stopping_would(tmp_path):
    spec = importlib.util.spec_from_file_location("simulate_patience", ROOT / "scripts" / "simulate_patience.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    log = tmp_path / "run" / "logs" / "finetune" / "metrics.csv"
    log.parent.mkdir(parents=True)
    rows = [("9", "", "2.0"), ("99", "50", ""), ("199", "40", ""), ("299", "41", ""), ("399", "40", ""),
            ("499", "39", ""), ("500", "39", "")]  # the last: trainer.validate's repeat of the best
    log.write_text("step,val/error,train/loss\n" + "\n".join(",".join(r) for r in rows) + "\n")
    history = sim.val_history(log)
    assert history == [(99, 50.0), (199, 40.0), (299, 41.0), (399, 40.0), (499, 39.0)]
    assert sim.simulate(history, 2) == (399, 40.0)  # 41 and 40 do not improve on 40: stop at the second
    assert sim.simulate(history, 3) == (499, 39.0)  # never three in a row: runs to the end
    assert sim.main([str(tmp_path), "--patience", "2"]) == 0
