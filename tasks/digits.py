"""Digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes) as a
small 2D image task that every machine has offline; the embedded default task.

Split 70/15/15, stratified, fixed seed; pixels scaled from 0..16 to 0..1. Metric: accuracy;
the error is the 0-1 error in percent, like the image columns of the comparison table.
"""
from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from orca.registry import TASKS
from orca.tasks import ClassificationTask, stratified_split


@TASKS.register("digits")
class Digits(ClassificationTask):
    name = "digits"
    input_shape = (1, 8, 8)
    num_outputs = 10
    error_name = "0-1 error %"

    def __init__(self, val_frac: float = 0.15, test_frac: float = 0.15, split_seed: int = 0):
        self.fractions = {"train": 1 - val_frac - test_frac, "val": val_frac, "test": test_frac}
        self.split_seed = split_seed

    def load_arrays(self, root, download):
        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
        y = digits.target.astype(np.int64)
        return {split: (x[idx], y[idx]) for split, idx in stratified_split(y, self.fractions, self.split_seed).items()}

    def error(self, metrics):
        return 100.0 * (1.0 - metrics["accuracy"])
