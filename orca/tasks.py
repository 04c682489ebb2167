"""The task contract: what a task module in ``tasks/`` provides.

A task knows its data (files as published, splits), the shape of one input sample, its
output kind and loss, its metrics (computed over a whole split), the paper's lower-is-
better number for it (``error``), and the labels OTDD should use for alignment.

Three kinds share the contract, one base class each:

- :class:`ClassificationTask`: targets (n,) int64 class indices; cross-entropy.
- :class:`MultiLabelTask`: targets (n, K) 0/1 float32; BCE with logits and a positive weight.
- :class:`DenseTask`: targets (n, H, W) float32 fields, optionally with a mask (n, H, W) bool
  that marks the entries that count (a protein's own length, pixels not to ignore).

Regression, dense and multi-label targets are aligned with k-means pseudo-labels (k = 10 on
the flattened targets), as the reference method does.
"""
from __future__ import annotations

import hashlib
import tarfile
import urllib.request
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torchmetrics
from torch.utils.data import TensorDataset

from orca.errors import ConfigError, DataNotFoundError
from orca.metrics import MultilabelMeanAUROC, MultilabelMeanAveragePrecision
from orca.registry import TASKS

SPLITS = ("train", "val", "test")


@dataclass
class Splits:
    """Tensors for each split: inputs (n, *input_shape) float32, targets, and for masked
    dense tasks a third tensor, the mask."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLITS}


class Task(ABC):
    """Base class; subclasses set the class attributes and implement :meth:`load_arrays`,
    :meth:`metrics` and :meth:`error` (the kind base classes below give the first two
    defaults). ``input_shape`` is the published layout; a task that also reads another
    format may set it on the instance in :meth:`load_arrays`."""

    name: ClassVar[str]
    input_shape: tuple[int, ...]
    num_outputs: int  # classes, labels, or output channels of a dense field
    output_kind: ClassVar[str]  # "classes" | "multilabel" | "dense"
    error_name: ClassVar[str]  # what `error` means, e.g. "1 - macro-F1"
    paper: ClassVar[dict[str, float]] = {}  # the comparison table's column (DESIGN.md section 4)
    align_clusters: ClassVar[int] = 10  # k of the k-means pseudo-labels (non-class targets)
    # What the arrays after (inputs, targets) hold, by name: a dense task's mask, or the
    # recording each window was cut from ("groups", (n,) int64; subsets keep whole groups).
    extra_names: ClassVar[tuple[str, ...]] = ("mask",)

    @abstractmethod
    def load_arrays(self, root: Path, download: bool) -> dict[str, tuple[np.ndarray, ...]]:
        """Return {split: (inputs, targets, *extras)} for train, val, test (see `extra_names`)."""

    def load(self, root: str | Path, download: bool = True, max_samples: dict | None = None,
             seed: int = 0) -> Splits:
        arrays = self.load_arrays(Path(root).expanduser(), download)
        tensors = {}
        for split in SPLITS:
            x, *targets = arrays[split]
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ConfigError(
                    f"task {self.name!r}: {split} inputs are shaped {tuple(x.shape[1:])} per sample, "
                    f"expected {tuple(self.input_shape)}"
                )
            cap = (max_samples or {}).get(split)
            if cap is not None and len(x) > cap:  # a budget's cap: a fixed random subset
                keep = capped_subset(len(x), cap, seed, self.extras(targets[1:]).get("groups"))
                x, targets = x[keep], [t[keep] for t in targets]
            tensors[split] = TensorDataset(torch.as_tensor(x, dtype=torch.float32),
                                           *(torch.as_tensor(t) for t in targets))
        return Splits(**tensors)

    def extras(self, tensors) -> dict:
        """The tensors after (inputs, targets) of a batch or split, by name."""
        return dict(zip(self.extra_names, tensors))

    # --- outputs -----------------------------------------------------------------
    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss of a batch."""

    @abstractmethod
    def metrics(self) -> torchmetrics.MetricCollection:
        """Metrics accumulated over a whole split (never averaged over chunks)."""

    @abstractmethod
    def error(self, metrics: dict[str, float]) -> float:
        """The paper's lower-is-better number, in the paper's units."""

    def align_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """Labels for OTDD (n,) int64 in 0..C-1: k-means clusters of the flattened targets."""
        return kmeans_labels(targets, self.align_clusters)


class ClassificationTask(Task):
    """Targets (n,) int64 in 0..num_outputs-1; cross-entropy; accuracy and macro-F1."""

    output_kind = "classes"

    def loss(self, outputs, targets, mask=None):
        return torch.nn.functional.cross_entropy(outputs, targets)

    def metrics(self):
        k = self.num_outputs
        return torchmetrics.MetricCollection({
            "accuracy": torchmetrics.classification.MulticlassAccuracy(k, average="micro"),
            "f1_macro": torchmetrics.classification.MulticlassF1Score(k, average="macro"),
        })

    def align_labels(self, targets):
        return targets.long()  # the classes themselves


class MultiLabelTask(Task):
    """Targets (n, K) 0/1; BCE with logits weighting positives by `pos_weight`; mean AUROC
    and mean average precision over labels, from scores."""

    output_kind = "multilabel"
    pos_weight: float = 1.0

    def loss(self, outputs, targets, mask=None):
        weight = torch.full((outputs.shape[1],), self.pos_weight, device=outputs.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(outputs, targets.float(), pos_weight=weight)

    def metrics(self):
        k = self.num_outputs
        return torchmetrics.MetricCollection({  # means over the labels where each is defined
            "auroc": MultilabelMeanAUROC(k),
            "map": MultilabelMeanAveragePrecision(k),
        })


class DenseTask(Task):
    """Targets (n, H, W) float32 fields on the input grid (`output_shape`), optionally with
    a mask of the entries that count; the model outputs (B, H, W)."""

    output_kind = "dense"
    num_outputs = 1
    output_shape: tuple[int, int]


def capped_subset(n: int, cap: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of a fixed random subset of at most `cap` of n samples. With `groups`
    (n,), whole groups are kept (in a seeded random order, while they fit), so that a
    recording's windows are never split by the cap."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return np.sort(rng.permutation(n)[:cap])
    groups = np.asarray(groups)
    ids, counts = np.unique(groups, return_counts=True)
    order = rng.permutation(len(ids))
    fits = np.cumsum(counts[order]) <= cap
    fits[0] = True  # at least one group, however large
    return np.flatnonzero(np.isin(groups, ids[order][fits]))


def kmeans_labels(targets: torch.Tensor, k: int = 10, seed: int = 0, max_dims: int = 1024,
                  max_fit: int = 5000) -> torch.Tensor:
    """(n, ...) targets -> (n,) int64 cluster indices of k-means on the flattened targets.

    Fields larger than `max_dims` values are average-pooled to a coarser grid first, and
    the centres are fitted on at most `max_fit` samples (seeded) to bound the cost.
    """
    from sklearn.cluster import KMeans

    y = targets.float()
    if y.dim() == 3 and y[0].numel() > max_dims:  # (n, H, W) -> (n, s, s) with s*s <= max_dims
        side = int(max_dims ** 0.5)
        y = torch.nn.functional.adaptive_avg_pool2d(y[:, None], side)[:, 0]
    flat = y.flatten(1).numpy() if y.dim() > 1 else y[:, None].numpy()
    k = min(k, len(flat))
    rng = np.random.default_rng(seed)
    fit = flat[rng.permutation(len(flat))[:max_fit]]
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(fit)
    labels = km.predict(flat)
    return torch.as_tensor(np.unique(labels, return_inverse=True)[1], dtype=torch.long)  # 0..C-1, no gaps


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
    """Make sure `root / expected` exists: download `url` into `root` if allowed, check its
    md5 where one is published, and unpack it if it is a .zip or .tar(.gz) archive (a plain
    file is saved as `expected` itself).

    Fails with a message naming the path looked in and the official URL.
    """
    target = root / expected
    if target.exists():
        return
    if not download:
        raise DataNotFoundError(f"expected {target} (not found, download disabled); get it from {url} "
                                f"and put it into {root}, or point data.root at a copy")
    name = Path(url.split("?")[0]).name
    is_archive = name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))
    root.mkdir(parents=True, exist_ok=True)
    archive = root / (name if is_archive else expected)
    partial = archive.with_name(archive.name + ".part")
    try:
        print(f"downloading {url} -> {archive}")
        urllib.request.urlretrieve(url, partial)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"expected {target} (not found) and the download from {url} failed ({exc}); get it from that "
            f"URL, put it into {root}, or point data.root at a copy"
        ) from None
    if md5 is not None and hashlib.md5(partial.read_bytes()).hexdigest() != md5:
        partial.unlink()
        raise DataNotFoundError(f"checksum mismatch for {url} (expected md5 {md5}); download it again")
    partial.replace(archive)
    if is_archive:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(root)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(root, filter="data")
    if not target.exists():
        raise DataNotFoundError(f"expected {target}, but the download from {url} did not contain it")


def require_files(root: Path, names: list[str], url: str) -> None:
    """Fail naming every expected file missing from `root` and where to get them."""
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise DataNotFoundError(f"missing {', '.join(missing)} in {root}; get them from {url} "
                                "or point data.root at a folder that holds them")


def create_task(name: str, **options) -> Task:
    return TASKS.get(name)(**options)
