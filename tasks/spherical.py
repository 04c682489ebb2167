"""Spherical CIFAR-100: CIFAR-100 images projected onto the sphere (as in Cohen et al.'s
spherical CNNs) and sampled on a 60x60 grid, with the 100 CIFAR classes.

File as published by NAS-Bench-360: ``s2_cifar100.gz``, a gzip-compressed pickle of a dict
``{"train": {"images": (50000, 3, 60, 60), "labels": (50000,)}, "test": {...10000...}}``.
The stored dtype is not documented; values are 0..255. Preprocessing as ORCA: float32 / 255,
no per-channel normalisation (NAS-Bench-360's own backbone code skips the division).
Splits: the file's test set is the test split; validation is carved from train, 10,000 of
50,000 images stratified by class with a fixed seed (option `split_seed`), like NAS-Bench-360's
40k/10k/10k. Metric: accuracy; the paper's number is the 0-1 error in percent.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from orca.errors import DataNotFoundError
from orca.registry import TASKS
from orca.tasks import fetch_archive, reading
from tasks.images import PercentErrorTask, carve_validation

URL = "https://pde-xd.s3.amazonaws.com/spherical/s2_cifar100.gz"
FILE = "s2_cifar100.gz"


@TASKS.register("spherical")
class Spherical(PercentErrorTask):
    name = "spherical"
    input_shape = (3, 60, 60)
    num_outputs = 100
    paper = {"Hand-designed": 67.41, "NAS-Bench-360": 48.23, "DASH": 71.28, "Perceiver IO": 82.57,
             "FPT": 76.38, "ORCA": 29.85}

    def __init__(self, val_frac: float = 0.2, split_seed: int = 0):
        self.val_frac, self.split_seed = val_frac, split_seed

    def load_arrays(self, root: Path, download: bool):
        fetch_archive(URL, root, FILE, download=download)  # no checksum is published
        with reading(root / FILE), gzip.open(root / FILE, "rb") as f:
            dataset = pickle.load(f)
        raw = {}
        for split in ("train", "test"):
            if split not in dataset or not {"images", "labels"} <= set(dataset[split]):
                raise DataNotFoundError(f"{root / FILE} lacks {split}/images or {split}/labels; "
                                        f"re-download it from {URL}")
            raw[split] = (np.asarray(dataset[split]["images"]),  # (n, 3, 60, 60), 0..255
                          np.asarray(dataset[split]["labels"]).astype(np.int64))
        splits = {**carve_validation(*raw["train"], self.val_frac, self.split_seed), "test": raw["test"]}
        return {split: (x.astype(np.float32) / np.float32(255.0), y) for split, (x, y) in splits.items()}
