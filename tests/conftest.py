"""Shared fixtures: configs composed with Hydra's compose API, tiny data in real formats."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hydra import compose, initialize_config_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
# pytest-xdist runs the suite in parallel (pyproject.toml: -n auto): each worker, and every
# process it starts, gets its share of the cores for torch's threads, as two processes each
# spinning two OpenMP threads on two cores slow each other down many times over.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture
def make_cfg(tmp_path):
    """compose(overrides) -> the resolved run config, writing into tmp_path."""

    def make(*overrides: str, run_dir: Path | None = None):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            return compose("train", overrides=[
                f"paths.run_dir={run_dir or tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
                "trainer.enable_progress_bar=false", *overrides,
            ])

    return make


def write_physionet2017(root: Path, n_per_class=(8, 4, 6, 3), seed: int = 0) -> Path:
    """A miniature PhysioNet/CinC 2017 release: training2017/A00001.mat (MATLAB v4, `val`
    int16 (1, T)), A00001.hea, REFERENCE.csv, RECORDS. Classes differ in their rhythm so
    that a model can tell them apart."""
    folder = root / "training2017"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows, i = [], 0
    for label, count in zip("NAO~", n_per_class):
        for _ in range(count):
            i += 1
            name = f"A{i:05d}"
            length = int(rng.integers(2700, 4500))
            t = np.arange(length) / 300
            freq = {"N": 1.2, "A": 2.5, "O": 0.7, "~": 5.0}[label]
            signal = 400 * np.sin(2 * np.pi * freq * t) + 50 * rng.standard_normal(length)
            scipy.io.savemat(folder / f"{name}.mat", {"val": signal.astype(np.int16)[None]}, format="4")
            (folder / f"{name}.hea").write_text(f"{name} 1 300 {length}\n{name}.mat 16+24 1000/mV 16 0 0 0 0 ECG\n")
            rows.append(f"{name},{label}")
    (folder / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    (folder / "RECORDS").write_text("\n".join(r.split(",")[0] for r in rows) + "\n")
    return root


@pytest.fixture
def ecg_root(tmp_path) -> Path:
    return write_physionet2017(tmp_path / "physionet2017")


def write_conll(path: Path) -> Path:
    """A tiny CoNLL-2003 train.txt: token POS chunk NER a line, blank line between sentences."""
    sentences = [
        [("EU", "NNP", "B-NP", "B-ORG"), ("rejects", "VBZ", "B-VP", "O"), ("German", "JJ", "B-NP", "B-MISC"),
         ("call", "NN", "I-NP", "O")],
        [("Peter", "NNP", "B-NP", "B-PER"), ("Blackburn", "NNP", "I-NP", "I-PER")],
        [("BRUSSELS", "NNP", "B-NP", "B-LOC"), ("1996-08-22", "CD", "I-NP", "O")],
        [("The", "DT", "B-NP", "O"), ("talks", "NNS", "I-NP", "O"), ("ended", "VBD", "B-VP", "O")],
    ] * 6
    lines = ["-DOCSTART- -X- -X- O", ""]
    for sentence in sentences:
        lines += [" ".join(cols) for cols in sentence] + [""]
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.txt").write_text("\n".join(lines))
    return path
