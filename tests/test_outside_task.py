"""A new modality with no config: tasks registered from a plain module, naming no embedder,
take the default embedder for their input rank ((C, L): conv1d, (C, H, W): patch2d), the
token rule and the default learning rates, under every method; `embedder.name=X` and
`embedder=X` choose another, as for a built-in task."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT
from orca.preflight import check_overrides

MODULE = '''
"""Two outside tasks that a user with a new modality would write: no `config`, no YAML."""
import numpy as np

from orca.registry import TASKS
from orca.tasks import ClassificationTask


def _splits(x, y):
    order = np.random.default_rng(1).permutation(len(y))
    x, y = x[order], y[order]
    n = len(y)
    return {"train": (x[: n // 2], y[: n // 2]), "val": (x[n // 2 : 3 * n // 4], y[n // 2 : 3 * n // 4]),
            "test": (x[3 * n // 4 :], y[3 * n // 4 :])}


@TASKS.register("tones")
class Tones(ClassificationTask):
    """(1, 256) series: a slow sine below zero or a fast one above, with noise."""
    name = "tones"
    input_shape = (1, 256)
    num_outputs = 2
    error_name = "0-1 error %"

    def load_arrays(self, root, download):
        rng = np.random.default_rng(0)
        y = np.arange(160) % 2
        t = np.arange(256) / 256
        x = np.sin(2 * np.pi * np.where(y[:, None] == 1, 24.0, 3.0) * t + rng.uniform(0, 6, (160, 1))) + y[:, None] - 0.5
        x = (x + 0.3 * rng.standard_normal(x.shape))[:, None].astype(np.float32)
        return _splits(x, y)

    def error(self, metrics):
        return 100.0 * (1.0 - metrics["accuracy"])


@TASKS.register("stripes")
class Stripes(ClassificationTask):
    """(1, 16, 16) images: horizontal or vertical stripes, with noise."""
    name = "stripes"
    input_shape = (1, 16, 16)
    num_outputs = 2
    error_name = "0-1 error %"

    def load_arrays(self, root, download):
        rng = np.random.default_rng(0)
        y = np.arange(160) % 2
        rows = np.sin(np.arange(16) * 1.6)[None, :, None] + 0 * np.zeros((160, 16, 16))
        x = np.where(y[:, None, None] == 1, rows, rows.transpose(0, 2, 1))
        x = (x + 0.3 * rng.standard_normal(x.shape))[:, None].astype(np.float32)
        return _splits(x, y)

    def error(self, metrics):
        return 100.0 * (1.0 - metrics["accuracy"])
'''
METHODS = ["orca", "finetune", "fpt", "scratch", "classical", "lora", "orca_lora", "linear_probe", "lp_ft"]
DEFAULT = {"tones": "conv1d", "stripes": "patch2d"}


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """The module on sys.path, its tasks registered, their configs written from the classes."""
    from orca.plugins import with_plugin_configs

    folder = tmp_path_factory.mktemp("mods")
    (folder / "outside_tasks.py").write_text(MODULE)
    sys.path.insert(0, str(folder))
    yield lambda task, *more: with_plugin_configs([f"task={task}", "plugins=[outside_tasks]", *more])
    sys.path.remove(str(folder))


def compose_outside(make_cfg, argv, tmp_path, *more):
    return make_cfg("body=tiny-random", "budget=smoke", f"data.root={tmp_path}", *argv, *more)


@pytest.mark.parametrize("task", ["tones", "stripes"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_an_outside_task_with_the_default_embedder(outside, make_cfg, tmp_path, task, method):
    from orca.pipeline import train

    record = train(compose_outside(make_cfg, outside(task, f"method={method}"), tmp_path))
    assert record["task"] == task and record["data_sizes"] == {"train": 80, "val": 40, "test": 40}
    if method == "classical":
        assert record["finetune"] is None
        return
    expected = "linear_patch" if method == "fpt" else DEFAULT[task]  # FPT's own input layer
    assert record["finetune"]["embedder"] == record["model"]["embedder"]["name"] == expected
    assert record["config"]["embedder"]["name"] is None  # nothing named it
    assert record["finetune"]["token_grid"] == ([8] if task == "tones" else [2, 2])  # the token rule
    if method != "fpt":  # FPT brings its own optimiser
        assert record["config"]["finetune"]["optimizer"]["lr"] == 1e-4 and record["config"]["finetune"]["new_lr"] == 1e-3


@pytest.mark.parametrize("task", ["tones", "stripes"])
def test_an_outside_task_learns_with_the_default_embedder(outside, make_cfg, tmp_path, task):
    from orca.pipeline import train

    record = train(compose_outside(make_cfg, outside(task, "method=finetune"), tmp_path, "finetune.max_steps=40",
                                   "finetune.batch_size=16"))
    assert record["metrics"]["test"]["error"] <= 15.0, record["metrics"]  # chance: 50 %


@pytest.mark.parametrize("how", ["embedder.name=linear_patch", "embedder=linear_patch"])
def test_an_outside_task_takes_a_named_embedder_both_ways(outside, make_cfg, tmp_path, how):
    from orca.pipeline import train

    argv = outside("tones", "method=finetune", how)
    check_overrides([*argv, "body=tiny-random", "budget=smoke"])  # the command line's own check passes
    record = train(compose_outside(make_cfg, argv, tmp_path))
    assert record["finetune"]["embedder"] == "linear_patch"


def test_the_cli_runs_an_outside_task_with_no_config(tmp_path):
    """The issue's first try, as a user types it: exit 0, the default embedder, a record."""
    import os
    import subprocess

    (tmp_path / "outside_tasks.py").write_text(MODULE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ORCA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "orca.train", "plugins=[outside_tasks]", "task=tones",
                           "body=tiny-random", "budget=smoke", "trainer.enable_progress_bar=false",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["finetune"]["embedder"] == "conv1d" and record["method"] == "orca"


def test_an_input_rank_without_a_default_names_the_fix():
    from orca.embedders import default_embedder
    from orca.errors import ConfigError

    with pytest.raises(ConfigError, match=r"shaped \(2, 3, 4, 5\) and names no embedder.*embedder=NAME"):
        default_embedder("volumes", (2, 3, 4, 5))
