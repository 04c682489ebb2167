"""Darcy Flow: 2D steady-state Darcy equation -div(a grad u) = 1 on the unit square; the
piecewise-constant permeability a in, the pressure field u out (Li et al., Fourier Neural
Operator, 2021; NAS-Bench-360's "DARCY-FLOW-5").

Two published formats are read, picked by `format` (``auto``: whichever is in data.root):

- ``nb360`` (NAS-Bench-360, from the FNO release): ``piececonst_r421_N1024_smooth1.mat``
  (train + validation) and ``piececonst_r421_N1024_smooth2.mat`` (test), MATLAB files with
  fields ``coeff`` (a) and ``sol`` (u), each (1024, 421, 421). Subsampled with r = 5 to
  85x85 (``[:, ::5, ::5][:, :85, :85]``). Splits as NAS-Bench-360: train smooth1[:900],
  validation smooth1[900:1000], test smooth2[:100] (`n_train`, `n_val`, `n_test`).
- ``neuraloperator`` (the small Darcy set of the neuraloperator library):
  ``darcy_train_{R}.pt`` and ``darcy_test_{R}.pt``, torch files holding
  ``{"x": bool (N, R, R), "y": float32 (N, R, R)}`` (R = `resolution`, 16 by default:
  1,000 train, 50 test). The train file gives train and a validation split (a fixed-seed
  `val_frac` of it, `split_seed`); the test file is the test split.

Both go through the same preprocessing (ORCA's): the input field is normalised pointwise
(mean and std over the train samples at every grid point, eps 1e-5) and two grid channels
are appended (column coordinate j/(R-1), then row coordinate i/(R-1)), giving (3, R, R);
the target is u (R, R). Targets are normalised pointwise with train statistics as well, as
ORCA does, and decoded back to physical units inside the loss and the metric, so the model
predicts a normalised field while every number is measured on u itself (the decoder is
fitted by :meth:`load_arrays`; before any load, targets are taken as they are).

Loss: relative L2 ||pred - u||_2 / ||u||_2 per sample, mean over the batch (ORCA's code
sums it over the batch, ``LpLoss(size_average=False)``: so does ``protocol.data=orca``; at
batch 4 its gradients are 4x ours). Metric: the mean relative L2 over the whole split (the
paper's number). Under ``protocol=reference`` training takes train + validation, ORCA's
1,000 training fields of the NAS-Bench-360 files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
import torchmetrics

from orca.errors import ConfigError, DataNotFoundError
from orca.metrics import RelativeL2
from orca.registry import TASKS
from orca.tasks import DenseTask, fetch_archive, reading

NB360_URL = "https://pde-xd.s3.amazonaws.com/{name}"
NB360_FILES = ("piececonst_r421_N1024_smooth1.mat", "piececonst_r421_N1024_smooth2.mat")  # train+val, test
NEURALOP_URL = "https://zenodo.org/records/10982484/files/{name}?download=1"
NEURALOP_MD5 = {"darcy_train_16.pt": "248e3c55c8c4b5a41ff2b972bf56c7d9",
                "darcy_test_16.pt": "9f747d431dc5fd91b5bff2dd580ae452"}
FORMATS = ("auto", "nb360", "neuraloperator")
SUBSAMPLE, SIDE = 5, 85  # 421x421 -> 85x85
EPS = 1e-5  # ORCA's UnitGaussianNormalizer


def neuralop_files(resolution: int) -> tuple[str, str]:
    return f"darcy_train_{resolution}.pt", f"darcy_test_{resolution}.pt"


def read_mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Fields of a MATLAB file: scipy for v4-v7.2 files, h5py (axes reversed) for v7.3."""
    with reading(path):
        try:
            mat = scipy.io.loadmat(path, variable_names=list(keys))
        except NotImplementedError:  # scipy's answer to a v7.3 (HDF5) file
            try:
                import h5py
            except ImportError:
                raise ConfigError(f"{path} is a MATLAB v7.3 (HDF5) file; reading it needs h5py "
                                  "(pip install h5py)") from None
            with h5py.File(path, "r") as f:
                return {k: np.asarray(f[k]).transpose() for k in keys}
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataNotFoundError(f"{path} has no field(s) {', '.join(missing)}")
    return {k: mat[k] for k in keys}


def grid_channels(side: int) -> np.ndarray:
    """(2, side, side): channel 0 = column coordinate j/(side-1), channel 1 = row coordinate i/(side-1)."""
    cols, rows = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side))
    return np.stack([cols, rows]).astype(np.float32)


def pointwise_stats(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std + eps over the sample axis at every grid point: (H, W) each."""
    return train.mean(0), train.std(0) + EPS


def preprocess(fields: dict[str, tuple[np.ndarray, np.ndarray]]):
    """{split: (a (n, R, R), u (n, R, R))} -> ({split: (x (n, 3, R, R), y (n, R, R))},
    y mean (R, R), y scale (R, R)): inputs and targets normalised with train statistics."""
    x_mean, x_scale = pointwise_stats(fields["train"][0])
    y_mean, y_scale = pointwise_stats(fields["train"][1])
    side = fields["train"][0].shape[-1]
    grid = grid_channels(side)
    out = {}
    for split, (a, u) in fields.items():
        a = ((a - x_mean) / x_scale).astype(np.float32)
        x = np.concatenate([a[:, None], np.broadcast_to(grid, (len(a), 2, side, side))], axis=1)
        out[split] = (x, ((u - y_mean) / y_scale).astype(np.float32))
    return out, y_mean.astype(np.float32), y_scale.astype(np.float32)


@TASKS.register("darcy")
class Darcy(DenseTask):
    name = "darcy"
    input_shape = (3, SIDE, SIDE)
    output_shape = (SIDE, SIDE)
    error_name = "relative L2"
    paper = {"Hand-designed": 8e-3, "NAS-Bench-360": 2.6e-2, "DASH": 7.9e-3, "Perceiver IO": 2.4e-2,
             "FPT": 2.1e-2, "ORCA": 7.28e-3}

    def __init__(self, format: str = "auto", resolution: int = 16, n_train: int = 900, n_val: int = 100,
                 n_test: int = 100, val_frac: float = 0.1, split_seed: int = 0):
        if format not in FORMATS:
            raise ConfigError(f"task darcy: unknown format {format!r}; known: {', '.join(FORMATS)}")
        self.format, self.resolution = format, resolution
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.val_frac, self.split_seed = val_frac, split_seed
        self.y_mean, self.y_scale = torch.tensor(0.0), torch.tensor(1.0)  # identity until a load fits them

    # --- data ------------------------------------------------------------------------
    def detect_format(self, root: Path, download: bool) -> str:
        """The format to read: the one asked for, else whichever one's files are in `root`,
        else NAS-Bench-360's (downloaded when allowed)."""
        if self.format != "auto":
            return self.format
        if all((root / n).exists() for n in NB360_FILES):
            return "nb360"
        if all((root / n).exists() for n in neuralop_files(self.resolution)):
            return "neuraloperator"
        if download:
            return "nb360"
        raise DataNotFoundError(
            f"no Darcy data in {root} (download disabled): expected either the NAS-Bench-360 files "
            f"{' and '.join(NB360_FILES)} (from {' and '.join(NB360_URL.format(name=n) for n in NB360_FILES)}) "
            f"or the neuraloperator files {' and '.join(neuralop_files(self.resolution))} (resolution 16 from "
            f"{NEURALOP_URL.format(name='darcy_train_16.pt')} and darcy_test_16.pt beside it); put them into "
            "that folder or point data.root at a copy")

    def load_arrays(self, root: Path, download: bool):
        fmt = self.detect_format(root, download)
        fields = self.read_nb360(root, download) if fmt == "nb360" else self.read_neuraloperator(root, download)
        side = fields["train"][0].shape[-1]
        self.input_shape, self.output_shape = (3, side, side), (side, side)
        for split, (a, u) in fields.items():  # before the train statistics would spread a bad value
            self.check_values(split, a, u)
        arrays, y_mean, y_scale = preprocess(fields)
        self.y_mean, self.y_scale = torch.from_numpy(y_mean), torch.from_numpy(y_scale)
        return arrays

    def read_nb360(self, root: Path, download: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        for name in NB360_FILES:
            fetch_archive(NB360_URL.format(name=name), root, name, download=download)
        cut = slice(None, None, SUBSAMPLE)

        def take(name: str, start: int, stop: int):  # (n, 421, 421) -> (n, 85, 85) float64, coeff and sol
            mat = read_mat(root / name, ("coeff", "sol"))  # one 1.6 GB file in memory at a time
            return tuple(mat[k][start:stop, cut, cut][:, :SIDE, :SIDE].astype(np.float64) for k in ("coeff", "sol"))

        train_val = take(NB360_FILES[0], 0, self.n_train + self.n_val)
        fields = {"train": tuple(f[: self.n_train] for f in train_val),
                  "val": tuple(f[self.n_train :] for f in train_val),
                  "test": take(NB360_FILES[1], 0, self.n_test)}
        for split, (a, _) in fields.items():
            if len(a) == 0:
                source = root / NB360_FILES[split == "test"]
                raise DataNotFoundError(f"Darcy {split} split is empty: {source} holds too few samples for "
                                        f"n_train={self.n_train}, n_val={self.n_val}, n_test={self.n_test}")
        return fields

    def read_neuraloperator(self, root: Path, download: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        data = {}
        for name in neuralop_files(self.resolution):
            if name in NEURALOP_MD5:
                fetch_archive(NEURALOP_URL.format(name=name), root, name, md5=NEURALOP_MD5[name], download=download)
            elif not (root / name).exists():
                raise DataNotFoundError(f"expected {root / name} (not found); the neuraloperator library "
                                        f"publishes resolution 16 at {NEURALOP_URL.format(name='darcy_train_16.pt')}")
            with reading(root / name):
                d = torch.load(root / name, map_location="cpu", weights_only=True)
                data[name] = (d["x"].double().numpy(), d["y"].double().numpy())
        (a, u), test = (data[n] for n in neuralop_files(self.resolution))
        order = np.random.default_rng(self.split_seed).permutation(len(a))
        n_val = int(round(self.val_frac * len(a)))
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        return {"train": (a[train], u[train]), "val": (a[val], u[val]), "test": test}

    # --- outputs -----------------------------------------------------------------------
    def decode(self, y: torch.Tensor) -> torch.Tensor:
        """Normalised (B, R, R) -> physical units."""
        return y * self.y_scale.to(y.device) + self.y_mean.to(y.device)

    def loss(self, outputs, targets, mask=None):
        pred, true = self.decode(outputs).flatten(1), self.decode(targets).flatten(1)
        relative = (pred - true).norm(dim=1) / true.norm(dim=1).clamp_min(1e-12)  # (B,)
        return relative.sum() if self.orca_data else relative.mean()  # ORCA: LpLoss(size_average=False)

    def metrics(self):
        return torchmetrics.MetricCollection({"relative_l2": RelativeL2(scale=self.y_scale, shift=self.y_mean)})

    def error(self, metrics):
        return metrics["relative_l2"]
