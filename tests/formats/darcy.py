"""Miniature Darcy Flow files in both published formats.

`write` gives NAS-Bench-360's: ``piececonst_r421_N1024_smooth1.mat`` (8 samples) and
``piececonst_r421_N1024_smooth2.mat`` (3 samples), MATLAB v5 with ``coeff`` and ``sol``
float64 (n, 421, 421); the split sizes shrink through `OVERRIDES`. `write_neuraloperator`
gives the neuraloperator release: ``darcy_{train,test}_{R}.pt`` holding
``{"x": bool (n, R, R), "y": float32 (n, R, R)}``.

Permeability is piecewise constant (3 or 12, thresholded smooth noise, as in the FNO data);
the "solution" is a smooth field that is larger where the permeability is low and zero on
the boundary (not a PDE solve, but learnable from the input).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
from scipy.ndimage import zoom

OVERRIDES = ["task.n_train=6", "task.n_val=2", "task.n_test=3"]


def fields(n: int, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(coeff, sol), each (n, side, side) float64."""
    coarse = rng.standard_normal((n, 8, 8))
    smooth = np.stack([zoom(c, side / 8, order=1)[:side, :side] for c in coarse])
    coeff = np.where(smooth > 0, 12.0, 3.0)
    t = np.linspace(0, 1, side)
    bump = np.outer(np.sin(np.pi * t), np.sin(np.pi * t))
    sol = 0.05 * bump / (7.5 + 4.5 * np.tanh(3 * smooth))  # smooth, high where coeff is low
    return coeff, sol


def write(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("piececonst_r421_N1024_smooth1.mat", 8), ("piececonst_r421_N1024_smooth2.mat", 3)):
        coeff, sol = fields(n, 421, rng)
        scipy.io.savemat(root / name, {"coeff": coeff, "sol": sol})
    return root


def write_neuraloperator(root: Path, n_train: int = 40, n_test: int = 10, resolution: int = 16) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("test", n_test)):
        coeff, sol = fields(n, resolution, rng)
        torch.save({"x": torch.from_numpy(coeff > 5), "y": torch.from_numpy(sol.astype(np.float32))},
                   root / f"darcy_{split}_{resolution}.pt")
    return root
