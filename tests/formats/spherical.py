"""Miniature Spherical CIFAR-100: s2_cifar100.gz, a gzip-compressed pickle of
{"train": {"images": (n, 3, 60, 60), "labels": (n,)}, "test": {...}}. The published dtype is
undocumented; uint8 0..255 is written (the loader divides by 255 as ORCA does)."""
import gzip
import pickle
from pathlib import Path

import numpy as np

CLASSES = (0, 13, 57, 99)
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 3


def split(labels: np.ndarray, rng: np.random.Generator) -> dict:
    base = (labels[:, None] * np.array([37, 91, 53]) % 256)[:, :, None, None]  # (n, 3, 1, 1)
    pixels = base + rng.integers(-20, 21, size=(len(labels), 3, 60, 60))
    return {"images": np.clip(pixels, 0, 255).astype(np.uint8), "labels": labels.astype(np.int64)}


def write(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    dataset = {"train": split(np.repeat(CLASSES, TRAIN_PER_CLASS), rng),
               "test": split(np.repeat(CLASSES, TEST_PER_CLASS), rng)}
    with gzip.open(root / "s2_cifar100.gz", "wb", compresslevel=1) as f:
        pickle.dump(dataset, f)
    return root
