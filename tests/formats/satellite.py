"""Miniature Satellite data: NAS-Bench-360's ``satellite_train.npy`` / ``satellite_test.npy``
(each a pickled dict {'data': (N, 46) float64, 'label': (N,) int64 1..24}), and for the UCR
archive format ``Crop_TRAIN.tsv`` (optionally ``Crop_TEST.tsv``): class, then 46 values, tab-separated."""
from pathlib import Path

import numpy as np

CLASSES, LENGTH = 24, 46


def series(labels: np.ndarray, seed: int) -> np.ndarray:
    """(n,) classes 1..24 -> (n, 46) NDVI-like curves whose seasonal peak depends on the class."""
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH)
    peaks = 2 + (labels[:, None] - 1) * 1.8
    curves = 0.2 + 0.6 * np.exp(-0.5 * ((t[None] - peaks) / 4.0) ** 2)
    return curves + 0.02 * rng.standard_normal(curves.shape)


def write(root: Path, train_per_class: int = 5, test_per_class: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = (("satellite_train.npy", train_per_class, 0), ("satellite_test.npy", test_per_class, 1))
    for name, per_class, seed in files:
        labels = np.repeat(np.arange(1, CLASSES + 1), per_class).astype(np.int64)
        np.save(root / name, {"data": series(labels, seed), "label": labels}, allow_pickle=True)
    return root


def write_ucr(root: Path, train_per_class: int = 5, test_per_class: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = (("Crop_TRAIN.tsv", train_per_class, 0), ("Crop_TEST.tsv", test_per_class, 1))
    for name, per_class, seed in files:
        if per_class:
            labels = np.repeat(np.arange(1, CLASSES + 1), per_class)
            rows = ["\t".join([str(c), *(f"{v:.5g}" for v in row)]) for c, row in zip(labels, series(labels, seed))]
            (root / name).write_text("\n".join(rows) + "\n")
    return root
