"""A new modality from outside orca: a spoken-digit task reading .wav files and a
log-spectrogram embedder, chosen by name (task=fsdd) from an installed package that ships
its configs, or from a plain module whose classes give the defaults."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile

from orca.errors import ConfigError
from orca.tasks import create_task

ROOT = Path(__file__).resolve().parents[1]

PLUGIN_CODE = '''
"""Spoken digits (FSDD file names: <digit>_<speaker>_<index>.wav, 8 kHz) and a log spectrogram."""
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import torch
from torch import nn

from orca.embedders import Embedder
from orca.registry import EMBEDDERS, TASKS
from orca.tasks import ClassificationTask, reading

LENGTH = 2048  # samples: 0.26 s at 8 kHz


@TASKS.register("fsdd")
class SpokenDigits(ClassificationTask):
    name = "fsdd"
    input_shape = (1, LENGTH)
    num_outputs = 10
    error_name = "0-1 error %"
    config = {"embedder": {"name": "logspec"}}  # used where no config file names the embedder

    def __init__(self, test_every: int = 6):
        self.test_every = test_every

    def load_arrays(self, root, download):
        files = sorted(Path(root, "recordings").glob("*.wav"))
        x = np.zeros((len(files), 1, LENGTH), np.float32)
        for i, f in enumerate(files):
            with reading(f):
                wave = scipy.io.wavfile.read(f)[1][:LENGTH] / 32768.0
            x[i, 0, : len(wave)] = wave
        y = np.array([int(f.name.split("_")[0]) for f in files])
        index = np.array([int(f.stem.split("_")[2]) for f in files]) % self.test_every
        parts = {"test": index == 0, "val": index == 1, "train": index > 1}
        return {split: (x[keep], y[keep]) for split, keep in parts.items()}

    def error(self, metrics):
        return 100.0 * (1.0 - metrics["accuracy"])


@EMBEDDERS.register("logspec")
class LogSpectrogram(Embedder):
    """(B, 1, L) -> frames of n_fft samples -> log(1 + |rfft|) -> Linear -> LayerNorm -> positions."""

    def __init__(self, input_shape, body, target_len=16, patch_size=None, n_fft=128):
        self.n_fft = n_fft
        super().__init__(body, grid=(input_shape[-1] // n_fft,))
        self.proj = nn.Linear(n_fft // 2 + 1, body.hidden_size)
        self.norm = nn.LayerNorm(body.hidden_size)

    def forward(self, x):
        frames = x[:, 0, : self.grid[0] * self.n_fft].unflatten(1, (self.grid[0], self.n_fft))
        return self.add_positions(self.norm(self.proj(torch.log1p(torch.fft.rfft(frames).abs()))))
'''


def write_recordings(root: Path, digits=(0, 1, 2), per_digit: int = 12) -> Path:
    """Tones whose pitch tells the digit, as FSDD-named 16-bit wav files."""
    folder = root / "recordings"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(2048) / 8000
    for d in digits:
        for i in range(per_digit):
            wave = np.sin(2 * np.pi * (300 + 400 * d) * t) + 0.1 * rng.standard_normal(len(t))
            scipy.io.wavfile.write(folder / f"{d}_spk{i % 2}_{i}.wav", 8000, (wave * 8000).astype(np.int16))
    return root


def write_package(site: Path) -> Path:
    """An installed package as importlib.metadata sees one: fsdd_plugin/ with its configs, and
    a dist-info folder declaring the entry points (orca.plugins, orca.configs)."""
    package = site / "fsdd_plugin"
    (package / "configs" / "task").mkdir(parents=True)
    (package / "configs" / "embedder").mkdir()
    (package / "__init__.py").write_text(PLUGIN_CODE)
    (package / "configs" / "__init__.py").write_text("")
    (package / "configs" / "task" / "fsdd.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        task:
          name: fsdd
          test_every: 6
        data:
          root: ${paths.data_dir}/fsdd
        embedder:
          name: logspec
        """))
    (package / "configs" / "embedder" / "logspec.yaml").write_text("name: logspec\nn_fft: 128\n")
    info = site / "fsdd_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fsdd-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[orca.plugins]\nfsdd = fsdd_plugin\n\n"
                                          "[orca.configs]\nfsdd = fsdd_plugin.configs\n")
    return site


def run_cli(args: list[str], tmp: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ORCA_CACHE_DIR": str(tmp / "cache"),
           "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "orca.train", *args, "body=tiny-random", "budget=smoke",
                           "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("method", ["finetune", "fpt"])
def test_plugin_package_runs_by_name_with_its_configs(tmp_path, method):
    site = write_package(tmp_path / "site")
    data = write_recordings(tmp_path / "data")
    proc = run_cli(["task=fsdd", f"method={method}", f"data.root={data}"], tmp_path, site)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["task"] == "fsdd" and record["data_sizes"] == {"train": 24, "val": 6, "test": 6}
    assert record["config"]["task"] == {"name": "fsdd", "test_every": 6}  # its own keys only
    assert record["finetune"]["embedder"] == "logspec"  # FPT keeps a plugin's embedder
    assert record["finetune"]["token_grid"] == [16]


def test_plugin_module_without_configs_takes_its_class_defaults(tmp_path):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "fsdd_module.py").write_text(PLUGIN_CODE)
    data = write_recordings(tmp_path / "data")
    proc = run_cli(["task=fsdd", "plugins=[fsdd_module]", "embedder=logspec", "embedder.n_fft=256",
                    f"data.root={data}"], tmp_path, tmp_path / "mods")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["config"]["task"] == {"name": "fsdd", "test_every": 6}
    assert record["config"]["embedder"]["n_fft"] == 256 and record["finetune"]["token_grid"] == [8]


def test_config_search_path_has_one_home(tmp_path):
    """orca/config_path.py lists our options and an installed package's; orca/plugins.py and
    orca/preflight.py read them there, neither imports the other."""
    site = write_package(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = textwrap.dedent("""\
        import json, sys
        from orca.config_path import known_options
        from orca.plugins import with_plugin_configs
        argv = with_plugin_configs(["task=fsdd"])
        print(json.dumps([known_options("embedder"), argv, "orca.preflight" in sys.modules]))
        """)
    shown = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert json.loads(shown.stdout or "null") == [["conv1d", "linear_patch", "logspec", "patch2d", "swin_patch"],
                                                  ["task=fsdd", "hydra.searchpath=[pkg://fsdd_plugin.configs]"],
                                                  False], shown.stderr[-3000:]
    other = subprocess.run([sys.executable, "-c", "import sys, orca.preflight; print('orca.plugins' in sys.modules)"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert other.stdout.strip() == "False", other.stderr[-3000:]


def test_unknown_plugin_option_lists_the_known_ones(tmp_path):
    (tmp_path / "fsdd_module.py").write_text(PLUGIN_CODE)
    proc = run_cli(["task=fsdd2", "plugins=[fsdd_module]"], tmp_path, tmp_path)
    assert proc.returncode == 2 and "unknown task 'fsdd2'; known tasks: cifar10" in proc.stderr


def test_a_task_receives_only_its_own_keys():
    with pytest.raises(ConfigError, match="task 'digits' takes no option format .* choose the task with task=digits"):
        create_task("digits", val_frac=0.15, test_frac=0.15, split_seed=0, format="auto")
