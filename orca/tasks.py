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
import inspect
import logging
import tarfile
import urllib.request
import zipfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torchmetrics
from torch.utils.data import Dataset, TensorDataset

from orca.errors import ConfigError, DataError, DataNotFoundError
from orca.metrics import MultilabelMeanAUROC, MultilabelMeanAveragePrecision
from orca.registry import TASKS

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


class WindowArray:
    """Windows of 1D recordings, cut when read; it stands for the (n, 1, length) array of them.

    `signal` (T,) float32 holds the recordings end to end, each as the task prepared it and
    at least `length` long; window i is ``signal[starts[i] : starts[i] + length]``. Windows
    that overlap (ECG's training windows overlap up to 12-fold) share the recordings' memory
    instead of copying it. Indexing with an index array or a slice gives a WindowArray of
    those windows; :meth:`values` cuts them.
    """

    def __init__(self, signal: np.ndarray, starts: np.ndarray, length: int):
        self.signal, self.starts, self.length = signal, np.asarray(starts, dtype=np.int64), length

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.starts), 1, self.length)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index) -> WindowArray:
        return WindowArray(self.signal, self.starts[index], self.length)

    def values(self, index=slice(None)) -> np.ndarray:
        """(k, 1, length) float32 windows `index` (an int gives (1, length))."""
        starts = self.starts[index]
        cut = self.signal[np.asarray(starts)[..., None] + np.arange(self.length)]
        return cut[..., None, :]

    def bad_windows(self) -> np.ndarray:
        """Indices of the windows that hold NaN or inf."""
        if np.isfinite(self.signal).all():  # the common case, without a cumulative count of T int64s
            return np.zeros(0, np.int64)
        bad = np.concatenate([[0], np.cumsum(~np.isfinite(self.signal))])
        return np.flatnonzero(bad[self.starts + self.length] > bad[self.starts])


class WindowDataset(Dataset):
    """A split whose inputs are a :class:`WindowArray`: a sample's window is cut when it
    is read. `tensors`, as a TensorDataset's, cuts every window (small data and tests)."""

    def __init__(self, windows: WindowArray, *others: torch.Tensor):
        self.windows, self.others = windows, others

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i):
        return (torch.from_numpy(self.windows.values(i)), *(t[i] for t in self.others))

    def inputs(self, index) -> torch.Tensor:
        return torch.from_numpy(self.windows.values(index))

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.inputs(slice(None)), *self.others)


def inputs_of(dataset, index=slice(None)) -> torch.Tensor:
    """Inputs (k, *input_shape) of the samples `index` of a split, however it holds them."""
    return dataset.inputs(index) if isinstance(dataset, WindowDataset) else dataset.tensors[0][index]


def labels_of(dataset) -> tuple[torch.Tensor, ...]:
    """The targets of a whole split, then its extras (mask or groups), without its inputs."""
    return dataset.others if isinstance(dataset, WindowDataset) else dataset.tensors[1:]


@dataclass
class Splits:
    """Tensors for each split: inputs (n, *input_shape) float32, targets, and for masked
    dense tasks a third tensor, the mask."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLITS}

    def selected_on_test(self) -> Splits:
        """ORCA's `valid_split: False`: training on train + validation, and the test split
        in the validation split's place (the model is selected on test)."""
        return Splits(train=concat(self.train, self.val), val=self.test, test=self.test)


def concat(a, b):
    """Split `a` followed by split `b` (TensorDatasets, or WindowDatasets of windows)."""
    if isinstance(a, WindowDataset):
        wa, wb = a.windows, b.windows
        if wa.signal is wb.signal:
            windows = WindowArray(wa.signal, np.concatenate([wa.starts, wb.starts]), wa.length)
        else:
            windows = WindowArray(np.concatenate([wa.signal, wb.signal]),
                                  np.concatenate([wa.starts, wb.starts + len(wa.signal)]), wa.length)
        return WindowDataset(windows, *(torch.cat(pair) for pair in zip(a.others, b.others)))
    return TensorDataset(*(torch.cat(pair) for pair in zip(a.tensors, b.tensors)))


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
    # recording each window was cut from ("groups", (n,) int64).
    extra_names: ClassVar[tuple[str, ...]] = ("mask",)
    cap_keeps_groups: ClassVar[bool] = True  # a budget's cap keeps whole groups (False: samples across them)
    # Set by :meth:`load`: the splits and preprocessing of ORCA's code (protocol.data=orca)
    # instead of ours; a task whose data is ORCA's either way ignores it.
    orca_data: bool = False

    @abstractmethod
    def load_arrays(self, root: Path, download: bool) -> dict[str, tuple[np.ndarray, ...]]:
        """Return {split: (inputs, targets, *extras)} for train, val, test (see `extra_names`)."""

    def load(self, root: str | Path, download: bool = True, max_samples: dict | None = None,
             seed: int = 0, orca_data: bool = False, train_fraction: float | None = None) -> Splits:
        """The task's splits. `max_samples` {split: cap}: a fixed random subset of a larger
        split (`seed`); `train_fraction`: a nested subset of the training split, before its cap
        (see :func:`nested_subset`); `orca_data`: ORCA's splits and preprocessing."""
        self.orca_data = orca_data
        root = Path(root).expanduser()
        if root.exists() and not root.is_dir():
            raise DataNotFoundError(f"data.root {root} is a file; point data.root at the folder that holds "
                                    f"task {self.name!r}'s files (or at an empty folder to download them into)")
        arrays = self.load_arrays(root, download)
        tensors, labels, kept = {}, {}, {}
        for split in SPLITS:
            x, *targets = arrays[split]
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ConfigError(
                    f"task {self.name!r}: {split} inputs are shaped {tuple(x.shape[1:])} per sample, "
                    f"expected {tuple(self.input_shape)}"
                )
            self.check_values(split, x, targets[0])
            labels[split] = targets[0]
            if split == "train" and train_fraction is not None and train_fraction < 1:
                extras = self.extras(targets[1:])
                keep = nested_subset(np.asarray(targets[0]) if self.output_kind == "classes" else None,
                                     len(x), train_fraction, seed, extras.get("groups"))
                x, targets = x[keep], [t[keep] for t in targets]
            cap = (max_samples or {}).get(split)
            if cap is not None and len(x) > cap:  # a budget's cap: a fixed random subset
                groups = self.extras(targets[1:]).get("groups") if self.cap_keeps_groups else None
                keep = capped_subset(len(x), cap, seed, groups)
                x, targets = x[keep], [t[keep] for t in targets]
            kept[split] = targets[0]
            others = [torch.as_tensor(t) for t in targets]
            tensors[split] = (WindowDataset(x, *others) if isinstance(x, WindowArray) else
                              TensorDataset(torch.as_tensor(x, dtype=torch.float32), *others))
        self.check_classes(labels)
        if any(kept[s] is not labels[s] for s in SPLITS):
            self.check_classes(kept, strict=False)  # what a budget's caps (data.max_samples) left
        return Splits(**tensors)

    def check_values(self, split: str, x: np.ndarray, y: np.ndarray) -> None:
        """Inputs and float targets must be finite; classes must have training samples."""
        for what, a in (("inputs", x), ("targets", y)):
            if isinstance(a, WindowArray):
                bad = a.bad_windows()
            else:
                a = np.asarray(a)
                finite = a.dtype.kind != "f" or np.isfinite(a).all()
                bad = [] if finite else np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(1))
            if len(bad):
                raise DataError(f"task {self.name!r}: {len(bad)} {split} samples hold NaN or inf {what} (the first "
                                f"is sample {bad[0]}); clean or drop them in the data files")

    def check_classes(self, labels: dict[str, np.ndarray], strict: bool = True) -> None:
        """Tasks with classes check their labels, per split (an error; a warning if not strict)."""

    def augment(self, x: torch.Tensor, **extras) -> torch.Tensor:
        """A training batch's inputs (B, *input_shape), randomised for fine-tuning (never for
        alignment); identity unless the task overrides it. `extras`: the batch's extras by
        name (see `extra_names`), for an augmentation that needs them."""
        return x

    def augment_eval(self, x: torch.Tensor, **extras) -> torch.Tensor:
        """A validation or test batch's inputs, as :meth:`augment`: identity, except where
        ORCA's code randomises its test inputs too and ``protocol.data=orca`` follows it."""
        return x

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

    # What `reference_error` is, for a task whose number ORCA's code computes otherwise.
    reference_error_name: ClassVar[str | None] = None

    def reference_error(self, metrics: dict[str, float]) -> float | None:
        """The paper's number as ORCA's code computes it (chunked, thresholded, ...), where
        that differs from `error`; None where it does not."""
        return None

    def scores(self, metrics: dict[str, float]) -> dict[str, float]:
        """A split's metrics with its `error` and, where the task has one, `reference_error`."""
        reference = self.reference_error(metrics)
        extra = {} if reference is None else {"reference_error": reference}
        return {**metrics, "error": self.error(metrics), **extra}

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

    def check_classes(self, labels: dict[str, np.ndarray], strict: bool = True) -> None:
        """Labels lie in 0..K-1, and every class in validation or test has training samples
        (a class in no split at all is allowed: a subset of a dataset's classes)."""
        labels = {split: np.asarray(y) for split, y in labels.items()}
        for split, y in labels.items():
            outside = y[(y < 0) | (y >= self.num_outputs)]
            if len(outside):
                raise DataError(f"task {self.name!r}: label {outside[0]} in the {split} split is outside "
                                f"0..{self.num_outputs - 1}; check the label files")
        trained = set(np.unique(labels["train"]).tolist())
        for split in ("val", "test"):
            missing = sorted(set(np.unique(labels[split]).tolist()) - trained)
            if not missing:
                continue
            message = (f"task {self.name!r}: class{'es' if len(missing) > 1 else ''} "
                       f"{', '.join(map(str, missing[:10]))} of the {split} split "
                       f"{'have' if len(missing) > 1 else 'has'} no training samples")
            if not strict:  # a budget's cap: the run goes on, the user is told
                log.warning("%s after data.max_samples; raise the caps for a run that sees every class", message)
                return
            raise DataError(f"{message}; check the label files, or merge or drop those classes in the task")


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


def nested_subset(labels: np.ndarray | None, n: int, fraction: float, seed: int,
                  groups: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of a `fraction` of n samples for a learning curve: stratified by class
    (`labels` (n,), or one stratum when None), a class's first ceil(fraction x its size) units
    in a seeded random order, so that the subset of a smaller fraction lies inside that of a
    larger one (same seed). Units are samples, or whole `groups` (n,) (a recording's windows
    stay together; a group's class is its first sample's)."""
    units = np.arange(n) if groups is None else np.unique(np.asarray(groups))
    first = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_index=True)[1]
    strata = np.zeros(len(units), np.int64) if labels is None else np.asarray(labels)[first]
    rng = np.random.default_rng(seed)
    kept = []
    for c in np.unique(strata):
        members = rng.permutation(units[strata == c])
        kept.append(members[: max(1, int(np.ceil(fraction * len(members))))])
    kept = np.concatenate(kept)
    return np.sort(kept) if groups is None else np.flatnonzero(np.isin(np.asarray(groups), kept))


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


@contextmanager
def reading(path: Path):
    """Any failure to parse `path` becomes a DataError that names the file and the fix."""
    try:
        yield
    except (DataNotFoundError, ConfigError, MemoryError):
        raise
    except Exception as exc:  # numpy, scipy, pickle, PIL, torch: each fails its own way on a bad file
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(f"could not read {path} ({type(exc).__name__}: {message}); the file is corrupt or "
                        "truncated: download it again, or remove it so that it is downloaded") from None


def require_files(root: Path, names: list[str], url: str) -> None:
    """Fail naming every expected file missing from `root` and where to get them."""
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise DataNotFoundError(f"missing {', '.join(missing)} in {root}; get them from {url} "
                                "or point data.root at a folder that holds them")


def predictions(outputs: torch.Tensor, output_kind: str) -> torch.Tensor:
    """What a user gets for a model's outputs: (n, K) class probabilities, (n, K) label
    scores in [0, 1], or the fields as they are."""
    if output_kind == "classes":
        return outputs.softmax(-1)
    return outputs.sigmoid() if output_kind == "multilabel" else outputs


def create_task(name: str, **options) -> Task:
    """TASKS[name](**options); options the task's constructor does not take are refused (the
    keys of another task's config, left by ``task.name=NAME`` on top of it)."""
    factory = TASKS.get(name)
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        foreign = sorted(set(options) - set(parameters))
        if foreign:
            raise ConfigError(f"task {name!r} takes no option{'s' if len(foreign) > 1 else ''} "
                              f"{', '.join(foreign)} (its options: {', '.join(parameters) or 'none'}); choose the "
                              f"task with task={name}, not task.name={name} on top of another task's config")
    return factory(**options)
