"""The three stages end to end on a tiny random body and tiny data, through train(cfg)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from orca.align.sources import load_source, read_conll, sentence_label
from orca.bodies import load_body
from orca.errors import NonFiniteLossError, RunExistsError
from orca.pipeline import train
from orca.registry import TASKS
from tasks.digits import Digits
from conftest import write_conll

TINY = ("body=tiny-random", "budget=smoke")


def test_orca_three_stages_on_ecg(make_cfg, ecg_root, tmp_path):
    cfg = make_cfg("task=ecg", f"data.root={ecg_root}", "data.download=false", *TINY)
    record = train(cfg)
    run = tmp_path / "run"
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk["task"] == "ecg" and on_disk["method"] == "orca" and on_disk["seed"] == 0
    test = on_disk["metrics"]["test"]
    assert test["error"] == pytest.approx(1 - test["f1_macro"])
    assert 0 <= on_disk["metrics"]["val"]["error"] <= 1
    align = on_disk["align"]
    assert align["distance"] == "otdd" and np.isfinite(align["before"]) and np.isfinite(align["after"])
    assert "pydoc-topics" in align["source"]
    assert align["steps"] == cfg.align.steps and align["classes"] == 4 and align["distance_s_per_step"] > 0
    assert {"data", "embed", "source", "align", "finetune", "test", "total"} <= set(on_disk["time_s"])
    assert on_disk["peak_rss_mb"] > 0 and on_disk["config"]["task"]["name"] == "ecg"
    machine = on_disk["machine"]  # what a time-budgeted number depends on
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert machine["cores"] >= 1 and machine["torch_threads"] >= 1 and machine["cpu"]
    assert ("avx2" in machine["flags"]) == (" avx2" in cpuinfo) and machine["accelerator"] is None
    assert (run / "checkpoints" / "align.pt").exists()
    assert record["metrics"] == on_disk["metrics"]


def test_alignment_lowers_the_distance(make_cfg):
    """With a few more steps the align stage must move the embedded digits towards the text."""
    cfg = make_cfg("task=digits", *TINY, "align.steps=15", "align.lr=1e-2", "align.milestones=[100]",
                   "finetune.max_steps=1", "finetune.val_check_interval=1")
    align = train(cfg)["align"]
    assert align["after"] < align["before"]


@pytest.mark.parametrize("overrides", [("align.steps=0",), ("align=mmd",)])
def test_the_ablation_settings_report_the_otdd(make_cfg, overrides):
    """No align steps: the OTDD is measured twice on an unchanged embedder. MMD: the stage
    minimises MMD and still reports the OTDD, so that every variant is on one scale."""
    align = train(make_cfg("task=digits", *TINY, *overrides))["align"]
    assert align["reported"] == "otdd" and np.isfinite(align["after"])
    if overrides == ("align.steps=0",):
        assert align["after"] == align["before"] and align["steps"] == 0 and align["distance_s_per_step"] is None
    else:
        assert align["distance"] == "mmd" and align["steps"] == 2 and align["after"] != align["before"]


def test_finished_run_is_not_overwritten_and_stages_resume(make_cfg, tmp_path):
    cfg = make_cfg("task=digits", *TINY)
    first = train(cfg)
    results = tmp_path / "run" / "results.json"
    before = results.read_text()
    with pytest.raises(RunExistsError, match="not overwritten"):
        train(cfg)
    assert results.read_text() == before
    # An interrupted run (no results.json) resumes: the finished align stage is not redone.
    results.unlink()
    align_ckpt = tmp_path / "run" / "checkpoints" / "align.pt"
    mtime = align_ckpt.stat().st_mtime_ns
    second = train(cfg)
    assert align_ckpt.stat().st_mtime_ns == mtime
    assert second["align"] == first["align"]


@pytest.mark.parametrize("method", ["fpt", "scratch", "finetune"])
def test_baseline_methods(make_cfg, method):
    record = train(make_cfg("task=digits", f"method={method}", *TINY))
    assert record["method"] == method and record["align"] is None
    params = record["params"]
    if method == "fpt":
        assert params["trainable"] < params["total"]
    else:
        assert params["trainable"] == params["total"]


@pytest.mark.parametrize("method", ["finetune", "fpt"])
def test_a_task_stem_is_used_by_our_embedder_and_left_out_of_fpts(make_cfg, method):
    """A tuned task may give its embedder a convolutional stem; FPT keeps its linear patch layer."""
    record = train(make_cfg("task=digits", f"method={method}", *TINY, "+embedder.stem=[4]", "+embedder.stem_kernel=5"))
    stem = torch.load(record["checkpoint"], weights_only=True)["state_dict"].get("model.embedder.stem.0.weight")
    if method == "fpt":
        assert record["finetune"]["embedder"] == "linear_patch" and stem is None
    else:
        assert record["finetune"]["embedder"] == "patch2d" and stem.shape == (4, 1, 5, 5)
        assert record["finetune"]["token_grid"] == [2, 2]  # 8x8 -> 4x4 after the stem -> 2x2 patches


def test_fpt_freezes_attention_and_mlp_but_trains_layer_norms(make_cfg):
    record = train(make_cfg("task=digits", "method=fpt", *TINY, "finetune.optimizer.lr=1e-2"))
    state = torch.load(record["checkpoint"], weights_only=True)["state_dict"]
    initial = load_body("tiny-random").body.model.state_dict()
    layer = "model.body.model.encoder.layer.0."
    assert torch.equal(state[layer + "attention.self.query.weight"], initial["encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(state[layer + "intermediate.dense.weight"], initial["encoder.layer.0.intermediate.dense.weight"])
    assert not torch.equal(state[layer + "output.LayerNorm.weight"], initial["encoder.layer.0.output.LayerNorm.weight"])


def test_fpt_random_trains_what_fpt_trains_on_a_random_frozen_body(make_cfg, tmp_path):
    """FPT's control: the same trainable parts and optimiser, the body's weights not loaded."""
    fpt = train(make_cfg("task=digits", "method=fpt", *TINY))
    control = train(make_cfg("task=digits", "method=fpt_random", *TINY, run_dir=tmp_path / "control"))
    assert control["method"] == "fpt_random" and control["params"] == fpt["params"]
    assert control["params"]["trainable"] < control["params"]["total"]
    assert control["config"]["finetune"]["optimizer"] == fpt["config"]["finetune"]["optimizer"]
    # On a pretrained body, the control's body is a fresh initialisation, not the checkpoint.
    minilm = train(make_cfg("task=digits", "method=fpt_random", "body=minilm", "budget=smoke", "finetune.max_steps=1",
                            run_dir=tmp_path / "minilm"))
    state = torch.load(minilm["checkpoint"], weights_only=True)["state_dict"]
    pretrained = load_body("minilm").body.model.state_dict()
    query = "encoder.layer.0.attention.self.query.weight"
    assert state["model.body.model." + query].shape == pretrained[query].shape
    assert not torch.allclose(state["model.body.model." + query], pretrained[query], atol=1e-2)


def test_early_stopping_ends_a_run_that_stops_improving_and_says_so(make_cfg, tmp_path):
    # Learning rates so small that the validation error never moves: validations every 2 steps,
    # the first sets the best, the next 2 do not improve on it, so the run stops at step 6.
    record = train(make_cfg("task=digits", "method=finetune", *TINY, "finetune.max_steps=40",
                            "finetune.num_validations=20", "finetune.early_stopping_patience=2",
                            "finetune.optimizer.lr=1e-12", "finetune.new_lr=1e-12"))
    ft = record["finetune"]
    assert ft["steps_done"] == 6 and ft["selected_step"] == 2 and ft["stopped_on_time"] is False
    assert ft["stopped_early"] == {"step": 6, "patience": 2, "best_val_error": pytest.approx(record["metrics"]["val"]["error"]),
                                   "reason": "val/error did not improve for 2 validations in a row"}
    unstopped = train(make_cfg("task=digits", "method=finetune", *TINY, "finetune.max_steps=4",
                               run_dir=tmp_path / "unstopped"))
    assert unstopped["finetune"]["stopped_early"] is None and unstopped["finetune"]["steps_done"] == 4


def test_train_fraction_takes_nested_class_stratified_subsets(make_cfg, tmp_path):
    from orca.tasks import create_task, nested_subset

    labels = np.repeat(np.arange(3), [50, 30, 20])
    small, large = (nested_subset(labels, 100, f, seed=0) for f in (0.1, 0.5))
    assert set(small) <= set(large) and np.bincount(labels[small]).tolist() == [5, 3, 2]
    assert np.bincount(labels[large]).tolist() == [25, 15, 10]
    assert nested_subset(labels, 100, 0.01, seed=0).size == 3  # at least one of each class
    groups = np.repeat(np.arange(10), 10)  # whole groups: 3 of 10 groups, all their samples
    kept = nested_subset(None, 100, 0.3, seed=0, groups=groups)
    assert len(kept) == 30 and all(np.isin(groups[groups == g], groups[kept]).all() for g in np.unique(groups[kept]))
    full = create_task("digits").load("unused", train_fraction=None)
    part = create_task("digits").load("unused", train_fraction=0.1)
    assert len(part.train) == sum(int(np.ceil(0.1 * c)) for c in np.bincount(full.train.tensors[1].numpy()))
    assert part.sizes()["val"] == full.sizes()["val"] and part.sizes()["test"] == full.sizes()["test"]
    record = train(make_cfg("task=digits", "method=finetune", *TINY, "data.train_fraction=0.1"))
    assert record["data_sizes"]["train"] == len(part.train)


class OverflowDigits(Digits):
    """Digits with finite inputs too large for float32 arithmetic (NaN inputs are refused
    when loaded): training must stop with a message, not run on."""

    name = "overflow-digits"

    def load_arrays(self, root, download):
        arrays = super().load_arrays(root, download)
        x, y = arrays["train"]
        arrays["train"] = (np.full_like(x, 3e38), y)
        return arrays


TASKS.register("overflow-digits")(OverflowDigits)


def test_non_finite_loss_names_stage_and_step(make_cfg):
    cfg = make_cfg("task=digits", "task.name=overflow-digits", "method=finetune", *TINY)
    with pytest.raises(NonFiniteLossError, match="stage 'finetune' at step 0"):
        train(cfg)


def test_conll_reader_and_labels(tmp_path):
    sentences = read_conll(write_conll(tmp_path / "conll") / "train.txt")
    assert len(sentences) == 24 and sentences[1][0] == ["Peter", "Blackburn"]
    assert [sentence_label(tags) for _, tags in sentences[:4]] == [2, 1, 3, 0]  # ORG (tie: first), PER, LOC, O


def test_source_features_are_cached_per_body_and_source(tmp_path):
    loaded = load_body("tiny-random")
    root = str(write_conll(tmp_path / "conll"))
    feats, labels, desc = load_source("conll2003", loaded, 16, 32, root, seed=0, cache_dir=tmp_path / "cache")
    assert feats.shape == (16, loaded.body.hidden_size) and "conll2003" in desc
    again, labels_again, desc_again = load_source("conll2003", loaded, 16, 32, root, seed=0, cache_dir=tmp_path / "cache")
    assert desc_again.endswith("(cached)") and torch.equal(feats, again) and torch.equal(labels, labels_again)
    assert len(list((tmp_path / "cache" / "sources").iterdir())) == 1


@pytest.mark.parametrize("budget", ["smoke", "cpu", "paper"])
def test_fpt_keeps_its_own_optimiser_under_every_budget(make_cfg, budget):
    fpt = make_cfg("task=ecg", "method=fpt", f"budget={budget}").finetune
    assert (fpt.optimizer.name, fpt.optimizer.lr, fpt.optimizer.weight_decay, fpt.gradient_clip_val) == ("adam", 1e-3, 0, 1)
    if budget == "paper":  # the other methods take the task's ORCA reference protocol
        assert make_cfg("task=ecg", "method=orca", "budget=paper").finetune.optimizer.name == "sgd"
