"""ECG: PhysioNet/Computing in Cardiology Challenge 2017, single-lead AF classification.

Files as published (``training2017/``): ``A00001.mat`` (MATLAB v4, variable ``val``, int16,
shape (1, T), 300 Hz), ``A00001.hea`` (WFDB header), ``REFERENCE.csv`` (``record,label``).
Preprocessing as NAS-Bench-360 and ORCA (``slide_and_cut``): z-score each recording, cut
windows of 1,000 samples starting every `stride` samples, where the stride depends on the
recording's class (500 // (1, 6, 2, 20) for N, A, O, ~: 500, 83, 250, 25; starts
0, s, 2s, ... < T - 1000, as published), which oversamples the rare classes; labels
N, A, O, ~ -> 0..3 (the full set gives 327,804 windows this way). Recordings, not windows,
are split into train / validation / test (stratified by label, fixed seed), so no
recording feeds two splits.

Validation and test windows are cut with one stride for every class, `eval_stride` (500:
each second half of a window starts the next one), so that which windows are scored does
not depend on their label; ``task.eval_stride=null`` cuts them with the class strides, as
the reference code does for its test set. A budget's cap on a split keeps whole recordings.

Metrics over the whole split: window-level macro-F1, whose 1 - F1 is the paper's number
(`error`), and `record_f1_macro`, NAS-Bench-360's per-recording evaluation (majority vote
over each recording's windows, then macro-F1 over recordings), which does not depend on
how many windows a class's recordings are cut into.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from orca.errors import DataNotFoundError
from orca.metrics import GroupVoteF1
from orca.registry import TASKS
from orca.tasks import ClassificationTask, WindowArray, fetch_archive, reading, stratified_split

URL = "https://physionet.org/files/challenge-2017/1.0.0/training2017.zip"
LABELS = ("N", "A", "O", "~")
STRIDE_DIVISORS = (1, 6, 2, 20)  # per class: window stride = stride // divisor (NAS-Bench-360)


def read_reference(folder: Path) -> list[tuple[str, int]]:
    """(record, label index) pairs from REFERENCE.csv (a header line, if any, is skipped)."""
    pairs = []
    with open(folder / "REFERENCE.csv", newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[1].strip() in LABELS:
                pairs.append((row[0].strip(), LABELS.index(row[1].strip())))
    if not pairs:
        raise DataNotFoundError(f"{folder / 'REFERENCE.csv'} holds no `record,label` rows with labels {LABELS}")
    return pairs


def prepare(signal: np.ndarray, length: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(T,) -> the z-scored signal (zero-padded to `length` if shorter) and the starts of its
    windows: 0, stride, ... < T - length (NAS-Bench-360's range), or one window at 0 for a
    recording of at most `length` samples."""
    signal = ((signal - signal.mean()) / (signal.std() + 1e-8)).astype(np.float32)
    if len(signal) <= length:
        return np.pad(signal, (0, length - len(signal))), np.zeros(1, np.int64)
    return signal, np.arange(0, len(signal) - length, stride)


def windows(signal: np.ndarray, length: int, stride: int) -> np.ndarray:
    """(T,) -> (n, length) windows of the z-scored signal (see :func:`prepare`)."""
    signal, starts = prepare(signal, length, stride)
    return WindowArray(signal, starts, length).values()[:, 0]


@TASKS.register("ecg")
class ECG(ClassificationTask):
    name = "ecg"
    input_shape = (1, 1000)
    num_outputs = 4
    error_name = "1 - macro-F1"
    paper = {"Hand-designed": 0.28, "NAS-Bench-360": 0.34, "DASH": 0.32, "Perceiver IO": 0.66,
             "FPT": 0.50, "ORCA": 0.28}
    extra_names = ("groups",)  # the recording each window was cut from

    def __init__(self, window: int = 1000, stride: int = 500, eval_stride: int | None = 500, val_frac: float = 0.1,
                 test_frac: float = 0.2, split_seed: int = 0):
        self.window = window
        self.strides = [max(1, stride // d) for d in STRIDE_DIVISORS]  # per class
        self.eval_strides = self.strides if eval_stride is None else [eval_stride] * len(LABELS)
        self.fractions = {"train": 1 - val_frac - test_frac, "val": val_frac, "test": test_frac}
        self.split_seed = split_seed

    def load_arrays(self, root: Path, download: bool):
        folder = root / "training2017"
        fetch_archive(URL, root, "training2017/REFERENCE.csv", download=download)
        records = read_reference(folder)
        labels = np.array([label for _, label in records])
        out = {}
        for split, idx in stratified_split(labels, self.fractions, self.split_seed).items():
            strides = self.strides if split == "train" else self.eval_strides
            signals, starts, ys, groups, offset = [], [], [], [], 0
            for i in tqdm(idx, desc=f"ecg {split}", leave=False):
                name, label = records[i]
                mat = folder / f"{name}.mat"
                if not mat.exists():
                    raise DataNotFoundError(f"{mat} is listed in REFERENCE.csv but missing; re-download from {URL}")
                with reading(mat):
                    raw = scipy.io.loadmat(mat)["val"][0].astype(np.float32)  # (T,) at 300 Hz
                signal, begin = prepare(raw, self.window, strides[label])
                signals.append(signal)
                starts.append(offset + begin)
                offset += len(signal)
                ys.append(np.full(len(begin), label))
                groups.append(np.full(len(begin), i))
            # The recordings once, windows cut when read (orca/tasks.py: WindowArray).
            x = WindowArray(np.concatenate(signals), np.concatenate(starts), self.window)
            out[split] = (x, np.concatenate(ys), np.concatenate(groups))
        return out

    def metrics(self):
        metrics = super().metrics()
        metrics.add_metrics({"record_f1_macro": GroupVoteF1(self.num_outputs)})
        return metrics

    def error(self, metrics):
        return 1.0 - metrics["f1_macro"]
