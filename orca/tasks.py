"""The task contract: what a task module in ``tasks/`` provides.

A task knows its data (files as published, splits), the shape of one input sample, its
output kind and loss, its metrics (computed over a whole split), the paper's lower-is-
better number for it (``error``), and the labels OTDD should use for alignment.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torchmetrics
from torch.utils.data import TensorDataset

from orca.errors import ConfigError, DataNotFoundError
from orca.registry import TASKS

SPLITS = ("train", "val", "test")


@dataclass
class Splits:
    """Tensors for each split: inputs (n, *input_shape) float32, targets (n,) int64."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLITS}


class Task(ABC):
    """Base class; subclasses set the class attributes and implement :meth:`load_arrays`
    and :meth:`error`."""

    name: ClassVar[str]
    input_shape: ClassVar[tuple[int, ...]]
    num_outputs: ClassVar[int]
    output_kind: ClassVar[str] = "classes"
    error_name: ClassVar[str]  # what `error` means, e.g. "1 - macro-F1"
    paper: ClassVar[dict[str, float]] = {}  # the comparison table's column (DESIGN.md section 4)

    @abstractmethod
    def load_arrays(self, root: Path, download: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Return {split: (inputs, targets)} for train, val and test."""

    def load(self, root: str | Path, download: bool = True, max_samples: dict | None = None,
             seed: int = 0) -> Splits:
        arrays = self.load_arrays(Path(root).expanduser(), download)
        tensors = {}
        for split in SPLITS:
            x, y = arrays[split]
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ConfigError(
                    f"task {self.name!r}: {split} inputs are shaped {tuple(x.shape[1:])} per sample, "
                    f"expected {tuple(self.input_shape)}"
                )
            cap = (max_samples or {}).get(split)
            if cap is not None and len(x) > cap:  # a budget's cap: a fixed random subset
                keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:cap])
                x, y = x[keep], y[keep]
            tensors[split] = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))
        return Splits(**tensors)

    # --- outputs -----------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs, targets)

    def metrics(self) -> torchmetrics.MetricCollection:
        """Metrics accumulated over a whole split (never averaged over chunks)."""
        k = self.num_outputs
        return torchmetrics.MetricCollection({
            "accuracy": torchmetrics.classification.MulticlassAccuracy(k, average="micro"),
            "f1_macro": torchmetrics.classification.MulticlassF1Score(k, average="macro"),
        })

    @abstractmethod
    def error(self, metrics: dict[str, float]) -> float:
        """The paper's lower-is-better number, in the paper's units."""

    def align_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """Labels for OTDD (n,) int64 in 0..C-1: the classes themselves for classification."""
        return targets.long()


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Indices per split, each class divided in the given proportions (fractions sum to 1)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {name: [] for name in fractions}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        bounds = np.round(np.cumsum(list(fractions.values())) * len(idx)).astype(int)
        for name, chunk in zip(fractions, np.split(idx, bounds[:-1])):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def fetch_archive(url: str, root: Path, expected: str, md5: str | None = None, download: bool = True) -> None:
    """Make sure `root / expected` exists: download and unpack `url` into `root` if allowed.

    Fails with a message naming the path looked in and the official URL.
    """
    if (root / expected).exists():
        return
    where = f"expected {root / expected}"
    if not download:
        raise DataNotFoundError(f"{where} (not found, download disabled); get it from {url} "
                                f"and unpack it into {root}, or point data.root at a copy")
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(url).name
    try:
        print(f"downloading {url} -> {archive}")
        urllib.request.urlretrieve(url, archive)
    except OSError as exc:
        archive.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"{where} (not found) and the download from {url} failed ({exc}); get it from that URL, "
            f"unpack it into {root}, or point data.root at a copy"
        ) from None
    if md5 is not None and hashlib.md5(archive.read_bytes()).hexdigest() != md5:
        raise DataNotFoundError(f"checksum mismatch for {archive} downloaded from {url}; delete it and retry")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root)
    if not (root / expected).exists():
        raise DataNotFoundError(f"{where}, but the archive from {url} did not contain it")


def create_task(name: str, **options) -> Task:
    return TASKS.get(name)(**options)
