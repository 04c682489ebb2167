"""Pieces shared by the tasks scored as a 0-1 error in percent (CIFAR-100, Spherical,
NinaPro, image folders): the error, per-channel normalisation of 8-bit images, the
standard crop-and-flip augmentation, and a validation split carved from train when the
published files have none.
"""
from __future__ import annotations

import numpy as np
import torch

from orca.tasks import ClassificationTask, stratified_split


class PercentErrorTask(ClassificationTask):
    """A classification task whose paper number is the 0-1 error in percent,
    100 * (1 - accuracy) over the whole split."""

    error_name = "0-1 error %"

    def error(self, metrics):
        return 100.0 * (1.0 - metrics["accuracy"])


def crop_and_flip(x: torch.Tensor, pad: int, fill=None) -> torch.Tensor:
    """The standard CIFAR augmentation on a normalised batch (B, C, H, W): each image padded
    by `pad` pixels of value `fill` (C,) on every side (default zeros: the channel mean after
    normalisation; a black pixel, as torchvision's RandomCrop pads before Normalize, is
    -mean / std), cropped back to H x W at a random offset, and mirrored left-right with
    probability 1/2."""
    b, c, h, w = x.shape
    fill = torch.zeros(c) if fill is None else torch.as_tensor(fill, dtype=x.dtype)
    fill = fill.to(x.device)[:, None, None]
    padded = torch.nn.functional.pad(x - fill, (pad, pad, pad, pad)) + fill
    top, left = torch.randint(0, 2 * pad + 1, (2, b)).tolist()
    crops = torch.stack([padded[i, :, t : t + h, l : l + w] for i, (t, l) in enumerate(zip(top, left))])
    flip = torch.rand(b, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(-1), crops)


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
