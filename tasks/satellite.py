"""Satellite: land-cover classes of FORMOSAT-2 satellite image time series (NDVI of one
pixel over 46 dates, 24 classes), the NAS-Bench-360 task, or the UCR archive's "Crop" set
that comes from the same source with far fewer series.

Files read (``format: auto`` takes the first that is present):

- NAS-Bench-360 (``nb360``): ``satellite_train.npy`` and ``satellite_test.npy``, each a
  pickled dict ``{'data': (N, 46), 'label': (N,) 1..24}`` (``np.load(allow_pickle=True)[()]``).
  There is no validation file: a fixed-seed random set of len(test) training rows (option
  `split_seed`) becomes validation, the size NAS-Bench-360 uses (800K / 100K / 100K). Its
  backbone takes the *last* len(test) rows instead; a random draw does not depend on the
  unknown row order of the file (ORCA's own draw overlaps train, a bug not copied here).
- UCR archive (``ucr``): ``Crop_TRAIN.tsv`` and optionally ``Crop_TEST.tsv``, tab-separated,
  the class 1..24 first, then the 46 values. ``Crop_TEST.tsv`` is the test split when
  present, and TRAIN is divided stratified into train / validation in the ratio
  (1 - val_frac - test_frac) : val_frac; with TRAIN alone it is divided stratified into
  train / validation / test (70 / 10 / 20 by default). Fixed seed `split_seed` either way.

Preprocessing, the same for both: each series z-scored by its own mean and standard
deviation (as NAS-Bench-360's backbone does; a constant series becomes zeros), shaped
(1, 46); classes 1..24 -> 0..23. ORCA's code feeds the raw values: so does
``protocol.data=orca`` (``protocol=reference``), which otherwise reads the same files.
Metric: accuracy over the whole split; the paper's number is the 0-1 error in percent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from orca.errors import ConfigError, DataNotFoundError
from orca.registry import TASKS
from orca.tasks import ClassificationTask, fetch_archive, reading, stratified_split

URLS = {
    "satellite_train.npy": "https://pde-xd.s3.amazonaws.com/satellite/satellite_train.npy",
    "satellite_test.npy": "https://pde-xd.s3.amazonaws.com/satellite/satellite_test.npy",
}
DRIVE = "https://drive.google.com/drive/folders/1OOp6UrCiP79mTIkCrUdjjHWDo8K0bJUw"  # NB360's current mirror
UCR_TRAIN, UCR_TEST = "Crop_TRAIN.tsv", "Crop_TEST.tsv"
UCR_URL = "https://www.cs.ucr.edu/~eamonn/time_series_data_2018/"
LENGTH, CLASSES = 46, 24


def zscore(x: np.ndarray) -> np.ndarray:
    """(n, L) -> (n, L) float32, each row minus its mean over its standard deviation."""
    x = x.astype(np.float64)
    std = x.std(axis=1, keepdims=True)
    return ((x - x.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def prepare(data: np.ndarray, labels: np.ndarray, source: Path, normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Published rows (n, 46) and classes 1..24 -> inputs (n, 1, 46) float32 (each row z-scored,
    or raw without `normalise`), targets 0..23."""
    data, labels = np.asarray(data), np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != LENGTH or len(labels) != len(data):
        raise DataNotFoundError(f"{source}: expected {LENGTH} values and one class per series, "
                                f"got data {data.shape} and labels {labels.shape}")
    classes = np.rint(labels.astype(np.float64)).astype(np.int64)
    if classes.min() < 1 or classes.max() > CLASSES:
        raise DataNotFoundError(f"{source}: classes must be 1..{CLASSES}, found {classes.min()}..{classes.max()}")
    x = zscore(data) if normalise else data.astype(np.float32)
    return x[:, None, :], classes - 1


def read_nb360(path: Path, normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    with reading(path):
        record = np.load(path, allow_pickle=True)[()]  # {'data': (N, 46), 'label': (N,)}
        data, label = record["data"], record["label"]
    return prepare(data, label, path, normalise)


def read_ucr(path: Path, normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    with reading(path):
        table = np.loadtxt(path, delimiter="\t", ndmin=2)  # (N, 1 + 46): class, then the series
    return prepare(table[:, 1:], table[:, 0], path, normalise)


@TASKS.register("satellite")
class Satellite(ClassificationTask):
    name = "satellite"
    input_shape = (1, LENGTH)
    num_outputs = CLASSES
    error_name = "0-1 error %"
    paper = {"Hand-designed": 19.80, "NAS-Bench-360": 12.51, "DASH": 12.28, "Perceiver IO": 15.93,
             "FPT": 20.83, "ORCA": 11.59}

    def __init__(self, format: str = "auto", val_frac: float = 0.1, test_frac: float = 0.2, split_seed: int = 0):
        if format not in ("auto", "nb360", "ucr"):
            raise ConfigError(f"task.format must be auto, nb360 or ucr, not {format!r}")
        self.format, self.split_seed = format, split_seed
        self.fractions = {"train": 1 - val_frac - test_frac, "val": val_frac, "test": test_frac}

    def load_arrays(self, root: Path, download: bool):
        fmt = self.format
        if fmt == "auto":  # NB360's files when present (or downloadable), else the UCR archive's
            has_ucr = (root / UCR_TRAIN).exists() and not (root / "satellite_train.npy").exists()
            fmt = "ucr" if has_ucr else "nb360"
        if fmt == "ucr":
            return self._ucr(root)
        try:
            for name, url in URLS.items():
                fetch_archive(url, root, name, download=download)
        except DataNotFoundError as exc:
            if self.format == "nb360":
                raise
            raise DataNotFoundError(
                f"no satellite data in {root}: expected NAS-Bench-360's satellite_train.npy and "
                f"satellite_test.npy (from {URLS['satellite_train.npy']} and {URLS['satellite_test.npy']}, "
                f"or the mirror {DRIVE}), or the UCR archive's {UCR_TRAIN} (optionally with {UCR_TEST}; "
                f"from {UCR_URL}); put them into {root} or point data.root at a copy ({exc})"
            ) from None
        return self._nb360(root)

    def _nb360(self, root: Path):
        x, y = read_nb360(root / "satellite_train.npy", not self.orca_data)
        test = read_nb360(root / "satellite_test.npy", not self.orca_data)
        order = np.random.default_rng(self.split_seed).permutation(len(x))  # val: len(test) random rows
        val_idx, train_idx = np.sort(order[: len(test[0])]), np.sort(order[len(test[0]):])
        return {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]), "test": test}

    def _ucr(self, root: Path):
        if not (root / UCR_TRAIN).exists():
            raise DataNotFoundError(f"expected {root / UCR_TRAIN} (the UCR archive's Crop set, from {UCR_URL}); "
                                    "put it there or point data.root at a copy")
        x, y = read_ucr(root / UCR_TRAIN, not self.orca_data)
        fractions, test = self.fractions, None
        if (root / UCR_TEST).exists():  # TEST is the test split; TRAIN -> train / val in the same ratio
            test = read_ucr(root / UCR_TEST, not self.orca_data)
            kept = fractions["train"] + fractions["val"]
            fractions = {"train": fractions["train"] / kept, "val": fractions["val"] / kept}
        out = {split: (x[idx], y[idx]) for split, idx in stratified_split(y, fractions, self.split_seed).items()}
        return out if test is None else {**out, "test": test}

    def error(self, metrics):
        return 100.0 * (1.0 - metrics["accuracy"])
