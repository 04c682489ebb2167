"""Every task: built from the registry, loaded from its miniature published-format fixture
(tests/formats/<task>.py) with its own config, and run with budget=smoke: through the
command line on the default body (MiniLM), as a user would, for a 1D and a 2D task; in this
process on the tiny random body for every other (the same code path, without a fresh
process's imports and the real body's weight)."""
import json
import math

import numpy as np
import pytest
import torch
import torchmetrics
from omegaconf import OmegaConf

from conftest import ROOT
from formats import WRITERS
from orca.registry import TASKS, load_plugins
from orca.tasks import create_task
from test_cli import run_cli

load_plugins()
NB360 = ("cifar100", "spherical", "darcy", "psicov", "cosmic", "ninapro", "fsd50k", "ecg", "satellite", "deepsea")
PAPER_ROWS = {"Hand-designed", "NAS-Bench-360", "DASH", "Perceiver IO", "FPT", "ORCA"}
CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "task").glob("*.yaml"))


def test_every_table_task_is_registered_with_its_paper_column():
    for name in NB360:
        assert name in TASKS, f"task {name} missing"
        assert set(TASKS.get(name).paper) == PAPER_ROWS, name


def test_every_task_config_names_a_registered_task_with_a_fixture_writer():
    assert set(CONFIGS) <= set(TASKS.names()) and set(CONFIGS) <= set(WRITERS)


@pytest.mark.parametrize("name", TASKS.names())
def test_every_registered_task_builds(name):
    task = create_task(name)
    assert task.output_kind in ("classes", "multilabel", "dense") and task.error_name
    assert all(isinstance(s, int) and s > 0 for s in task.input_shape) and task.num_outputs >= 1
    assert isinstance(task.metrics(), torchmetrics.MetricCollection)
    if task.output_kind == "dense":
        assert len(task.output_shape) == 2


def _task_from_config(make_cfg, name, root):
    cfg = make_cfg(f"task={name}", f"data.root={root}", "data.download=false", *getattr(WRITERS[name], "OVERRIDES", []))
    options = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}
    return create_task(name, **options)


@pytest.mark.parametrize("name", CONFIGS)
def test_fixture_loads_in_the_declared_shapes(make_cfg, tmp_path, name):
    root = WRITERS[name].write(tmp_path / "data")
    task = _task_from_config(make_cfg, name, root)
    splits = task.load(root, download=False)
    for split in ("train", "val", "test"):
        x, y, *rest = getattr(splits, split).tensors
        extras = task.extras(rest)
        assert len(x) > 0, f"{name}: empty {split} split"
        assert x.shape[1:] == task.input_shape and x.dtype == torch.float32 and torch.isfinite(x).all()
        if task.output_kind == "classes":
            assert y.dtype == torch.int64 and y.shape == (len(x),) and 0 <= y.min() and y.max() < task.num_outputs
        elif task.output_kind == "multilabel":
            assert y.shape == (len(x), task.num_outputs) and set(y.unique().tolist()) <= {0.0, 1.0}
        else:
            assert y.shape == (len(x), *task.output_shape) and y.dtype == torch.float32
        if "mask" in extras:
            assert extras["mask"].shape == y.shape and extras["mask"].dtype == torch.bool and extras["mask"].any()
        if "groups" in extras:
            assert extras["groups"].shape == (len(x),) and extras["groups"].dtype == torch.int64
    labels = task.align_labels(splits.train.tensors[1])
    assert labels.shape == (len(splits.train),) and labels.dtype == torch.int64


THROUGH_THE_CLI = ("digits", "ecg")  # (1, 8, 8) images and (1, 1000) series on the real body


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_run_through_the_cli(make_cfg, tmp_path, name):
    root = WRITERS[name].write(tmp_path / "data")
    out = tmp_path / "run"
    overrides = [f"task={name}", "budget=smoke", f"data.root={root}", "data.download=false",
                 *getattr(WRITERS[name], "OVERRIDES", [])]
    if name in THROUGH_THE_CLI:
        proc = run_cli(*overrides, f"hydra.run.dir={out}", tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        record = json.loads((out / "results.json").read_text())
        body = "minilm"
    else:
        from orca.pipeline import train

        # The tiny body has 128 positions: PSICOV's maps take fewer tokens; FSD50K's 96x102
        # spectrograms cannot (16x17 square patches at the fewest), so they keep the real body.
        body = "minilm" if name == "fsd50k" else "tiny-random"
        fit = ["embedder.target_len=128"] if name == "psicov" else []
        record = train(make_cfg(*overrides, f"body={body}", *fit, run_dir=out))
        assert json.loads((out / "results.json").read_text())["metrics"] == record["metrics"]
    assert record["task"] == name and record["method"] == "orca" and record["body"] == body
    assert math.isfinite(record["metrics"]["test"]["error"]) and np.isfinite(record["align"]["after"])
