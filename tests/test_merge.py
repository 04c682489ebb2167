"""Model merging (orca/merge.py): WiSE-FT's ends, a one-run soup, the greedy soup's rule,
Fisher weighting, task arithmetic, and soups fine-tuned from one alignment (align.from_run)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from orca.bodies import load_body
from orca.errors import ConfigError
from orca.export import load_run
from orca.merge import average, fisher_average, greedy_soup, merge, recorded_splits, task_arithmetic, wise
from orca.pipeline import train

from conftest import ROOT

SMOKE = ("task=digits", "body=tiny-random", "budget=smoke", "finetune.max_steps=8")


def _train(folder, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", [f"paths.run_dir={folder}", f"paths.cache_dir={folder.parent / 'cache'}",
                                "trainer.enable_progress_bar=false", *SMOKE, *overrides])
    return train(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One ORCA run, and two fine-tuned from its aligned embedder at other learning rates."""
    tmp = tmp_path_factory.mktemp("merge")
    _train(tmp / "a", "method=orca")
    _train(tmp / "b", "method=orca", f"align.from_run={tmp / 'a'}", "finetune.optimizer.lr=3e-4")
    _train(tmp / "c", "method=orca", f"align.from_run={tmp / 'a'}", "finetune.new_lr=3e-3")
    return tmp


def _state(folder):
    return load_run(folder)[0].state_dict()


def test_soup_ingredients_share_one_alignment(runs):
    a, b = (json.loads((runs / f / "results.json").read_text()) for f in "ab")
    assert b["align"]["from_run"] == str(runs / "a") and "align" not in b["time_s"]
    assert b["align"]["after"] == a["align"]["after"]
    embedder = torch.load(runs / "a" / "checkpoints" / "align.pt", weights_only=True)["embedder"]
    b_start = torch.load(next((runs / "b" / "checkpoints" / "finetune").glob("best-*.ckpt")), weights_only=False)
    assert set(embedder) <= {k.removeprefix("model.embedder.") for k in b_start["state_dict"]}


def test_wise_ft_at_alpha_0_and_1_gives_its_ends(runs, tmp_path):
    run = json.loads((runs / "a" / "results.json").read_text())
    one = merge([str(runs / "a")], "wise", str(tmp_path / "one"), alpha=1.0)
    assert one["metrics"]["val"]["error"] == pytest.approx(run["metrics"]["val"]["error"], abs=1e-6)
    assert one["metrics"]["test"]["error"] == pytest.approx(run["metrics"]["test"]["error"], abs=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "one" / "predictions" / "test.npy"),
                               np.load(runs / "a" / "predictions" / "test.npy"), atol=1e-6)
    merge([str(runs / "a")], "wise", str(tmp_path / "zero"), alpha=0.0)
    zero, finetuned = _state(tmp_path / "zero"), _state(runs / "a")
    pretrained = load_body("tiny-random").body.state_dict()
    for key, value in zero.items():
        expected = pretrained[key.removeprefix("body.")] if key.startswith("body.") else finetuned[key]
        assert torch.equal(value, expected), key


def test_wise_chooses_alpha_on_validation(runs, tmp_path):
    record = merge([str(runs / "a")], "wise", str(tmp_path / "w"))
    errors = record["merge"]["val_error_by_alpha"]
    assert list(errors) == [str(i / 10) for i in range(11)]
    assert errors[str(record["merge"]["alpha"])] == min(errors.values()) == record["metrics"]["val"]["error"]


def test_a_soup_of_one_run_is_that_run(runs, tmp_path):
    record = merge([str(runs / "b")], "uniform", str(tmp_path / "u"))
    original = _state(runs / "b")
    assert all(torch.equal(v, original[k]) for k, v in _state(tmp_path / "u").items())
    run = json.loads((runs / "b" / "results.json").read_text())
    assert record["metrics"]["test"]["error"] == pytest.approx(run["metrics"]["test"]["error"], abs=1e-6)
    assert record["method"] == "soup_uniform" and record["merge"]["runs"] == [str(runs / "b")]


def test_greedy_never_adds_a_run_that_raises_validation_error():
    target = torch.tensor([1.0])
    states = [{"w": torch.tensor([0.85])}, {"w": torch.tensor([1.2])}, {"w": torch.tensor([9.0])},
              {"w": torch.tensor([1.1])}]

    def val_error(state):
        return float((state["w"] - target).abs())

    soup, steps = greedy_soup(states, [val_error(s) for s in states], val_error)
    # best first (1.1); 0.85 brings the average to 0.975; 1.2 would move it to 1.05 and 9.0 far off
    assert soup == [3, 0]
    assert [s["run"] for s in steps] == [0, 1, 2] and [s["added"] for s in steps] == [True, False, False]
    best = val_error(states[3])
    for step in steps:  # every added run kept the soup's error at or below the best so far
        assert step["added"] == (step["soup_val_error"] <= best)
        best = min(best, step["soup_val_error"]) if step["added"] else best


def test_greedy_soup_of_real_runs(runs, tmp_path):
    record = merge([str(runs / f) for f in "abc"], "greedy", str(tmp_path / "g"))
    details = record["merge"]
    assert record["metrics"]["val"]["error"] <= min(details["runs_val_error"]) + 1e-9
    assert details["ingredients"][0] == details["runs"][int(np.argmin(details["runs_val_error"]))]
    assert len(details["steps"]) == 2


def test_fisher_weights_follow_the_information():
    states = [{"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 6.0])}]
    same = [{"w": torch.ones(2)}, {"w": torch.ones(2)}]
    assert torch.allclose(fisher_average(states, same)["w"], average(states)["w"])
    lopsided = [{"w": torch.tensor([3.0, 0.0])}, {"w": torch.tensor([1.0, 1.0])}]
    assert torch.allclose(fisher_average(states, lopsided)["w"], torch.tensor([1.0, 6.0]), atol=1e-6)


def test_fisher_merge_of_real_runs(runs, tmp_path):
    record = merge([str(runs / "b"), str(runs / "c")], "fisher", str(tmp_path / "f"), fisher_samples=8)
    assert record["method"] == "fisher_merge" and record["merge"]["fisher_samples"] == 8
    b, c, merged = _state(runs / "b"), _state(runs / "c"), _state(tmp_path / "f")
    head = next(k for k in merged if k.startswith("head.") and merged[k].is_floating_point())
    low, high = torch.minimum(b[head], c[head]), torch.maximum(b[head], c[head])
    assert ((merged[head] >= low - 1e-6) & (merged[head] <= high + 1e-6)).all()  # a convex combination


def test_task_arithmetic():
    pre = {"body.w": torch.tensor([1.0]), "head.w": torch.tensor([0.0])}
    runs = [{"body.w": torch.tensor([2.0]), "head.w": torch.tensor([1.0])},
            {"body.w": torch.tensor([4.0]), "head.w": torch.tensor([3.0])}]
    merged = task_arithmetic(runs, pre, 0.5)
    assert merged["body.w"].item() == 1.0 + 0.5 * (1.0 + 3.0) and merged["head.w"].item() == 2.0
    assert task_arithmetic(runs[:1], pre, 1.0)["body.w"].item() == 2.0
    assert wise(runs[0], pre, 0.25)["body.w"].item() == 0.75 * 1.0 + 0.25 * 2.0


def test_merges_that_cannot_work_are_refused(runs, tmp_path):
    _train(tmp_path / "other", "method=finetune", "embedder.target_len=2")
    with pytest.raises(ConfigError, match="differ in their architecture"):
        merge([str(runs / "a"), str(tmp_path / "other")], "uniform", str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="how='average'; known: wise, uniform, greedy, fisher, task_arithmetic"):
        merge([str(runs / "a")], "average", str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="alpha applies to how=wise and how=task_arithmetic"):
        merge([str(runs / "a")], "uniform", str(tmp_path / "x"), alpha=0.5)
    with pytest.raises(ConfigError, match="is not empty; merging never writes over"):
        merge([str(runs / "a")], "uniform", str(runs / "b"))
    with pytest.raises(ConfigError, match="how=wise interpolates one run"):
        merge([str(runs / "a"), str(runs / "b")], "wise", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="that run's embedder differ"):
        _train(tmp_path / "y", "method=orca", f"align.from_run={runs / 'a'}", "embedder.target_len=2")


def test_merge_command_line(runs, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "orca.merge", f"runs=[{runs / 'b'},{runs / 'c'}]", "how=uniform",
                           f"out={out}"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "soup_uniform" in proc.stdout and (out / "results.json").exists()
    model, record = load_run(out)  # the merged run loads as any run, its predictions reproduced
    x = recorded_splits(record)[1].test.tensors[0]
    with torch.no_grad():
        np.testing.assert_allclose(model(x).softmax(-1).numpy(), np.load(out / "predictions" / "test.npy"),
                                   atol=1e-5)
    proc = subprocess.run([sys.executable, "-m", "orca.merge", f"runs={runs / 'b'}", "how=soup", f"out={out}2"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error: how='soup'; known:")


def test_soup_script_makes_three_ingredients_from_one_alignment_and_their_merges(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("soup", ROOT / "scripts" / "soup.py")
    soup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soup)
    args = ["--task", "digits", "--budget", "smoke", "--seeds", "0", "--out", str(tmp_path),
            "--override", "body=tiny-random", "--override", "finetune.max_steps=4"]
    assert soup.main(args) == 0
    folder = tmp_path / "soup" / "digits" / "s0"
    a, b, c = (json.loads((folder / f / "results.json").read_text()) for f in "abc")
    assert a["config"]["align"]["from_run"] is None and "align" in a["time_s"]  # a aligns; b and c do not
    assert b["align"]["from_run"] == c["align"]["from_run"] == str((folder / "a").resolve())
    lr = a["config"]["finetune"]["optimizer"]["lr"]
    assert (b["config"]["finetune"]["optimizer"]["lr"], c["config"]["finetune"]["optimizer"]["lr"]) == \
        pytest.approx((lr / 2, lr * 2))
    for how in soup.SOUPS:
        record = json.loads((tmp_path / "merges" / "digits" / f"{how}-s0" / "results.json").read_text())
        assert record["merge"]["runs"] == [str(folder / f) for f in "abc"]
    mtimes = [p.stat().st_mtime for p in sorted(tmp_path.rglob("results.json"))]
    assert soup.main(args) == 0  # resumed: nothing trained or merged again
    assert [p.stat().st_mtime for p in sorted(tmp_path.rglob("results.json"))] == mtimes
