"""Pieces shared by the tasks scored as a 0-1 error in percent (CIFAR-100, Spherical,
NinaPro, image folders): the error, per-channel normalisation of 8-bit images, and a
validation split carved from train when the published files have none.
"""
from __future__ import annotations

import numpy as np

from orca.tasks import ClassificationTask, stratified_split


class PercentErrorTask(ClassificationTask):
    """A classification task whose paper number is the 0-1 error in percent,
    100 * (1 - accuracy) over the whole split."""

    error_name = "0-1 error %"

    def error(self, metrics):
        return 100.0 * (1.0 - metrics["accuracy"])


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
    """(n, C, H, W) 0..255 -> float32 (x / 255 - mean[c]) / std[c], as ToTensor + Normalize."""
    x = images.astype(np.float32)
    x /= 255.0
    x -= np.asarray(mean, dtype=np.float32)[:, None, None]
    x /= np.asarray(std, dtype=np.float32)[:, None, None]
    return x


def carve_validation(x: np.ndarray, y: np.ndarray, val_frac: float, seed: int) -> dict[str, tuple]:
    """Split published train arrays into train and val: each class divided 1-val_frac : val_frac
    at random with a fixed seed (e.g. 40,000 / 10,000 of CIFAR-100's 50,000 at 0.2)."""
    parts = stratified_split(y, {"train": 1.0 - val_frac, "val": val_frac}, seed)
    return {split: (x[idx], y[idx]) for split, idx in parts.items()}
