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

Validation and test windows are cut as NAS-Bench-360 cuts its test set, with the class
strides (`eval_stride: null`, the default): the benchmark's test set, on which the paper's
0.28 and FPT's 0.50 were measured. Most of its windows come from the rare classes (the
share of "N" windows is about a quarter, of "N" recordings about three fifths), so its
window-level F1 weighs a noisy or AF recording more than a normal one.
``task.eval_stride=500`` cuts every class every 500 samples instead (each second half of a
window starts the next one), so that which windows are scored does not depend on their
label: a different test set, on which the same model scores higher (issue 9: 0.588 against
0.447 on the benchmark's cut). A budget's cap on a split (``data.max_samples``) takes a
fixed random subset of its windows, drawn from all of its recordings.

Splits: ours stratify the recordings by label into 70 / 10 / 20 % (`split_seed`). ORCA's
data (``protocol=reference``, ``protocol.data=orca``) is its `valid_split: False` split:
scikit-learn's ``train_test_split(test_size=0.1, random_state=0)`` over the recordings in
REFERENCE.csv's order, 90 % trained on, 10 % tested, no validation split; there a recording
of at most 1,000 samples gives no window, as in ``slide_and_cut``. ORCA splits the
recordings of NAS-Bench-360's ``challenge2017.pkl`` in that file's order, which we take to
be REFERENCE.csv's (the pickle is not on this machine to check).

Metrics over the whole split: window-level macro-F1, whose 1 - F1 is the paper's number
(`error`), and `record_f1_macro`, NAS-Bench-360's per-recording evaluation (majority vote
over each recording's windows, then macro-F1 over recordings), which does not depend on
how many windows a class's recordings are cut into. `reference_error` is 1 - F1 as ORCA's
code computes it (`orca_f1`): the windows in a fixed random order, in chunks of 1,000, the
mean F1 of the classes present in each chunk, averaged over chunks.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from orca.errors import DataNotFoundError
from orca.metrics import ChunkedScore, GroupVoteF1, orca_ecg_f1
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

    cap_keeps_groups = False  # a capped split samples windows from every recording

    def __init__(self, window: int = 1000, stride: int = 500, eval_stride: int | None = None, val_frac: float = 0.1,
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
        for split, idx in self.split_recordings(labels).items():
            strides = self.strides if split == "train" else self.eval_strides
            signals, starts, ys, groups, offset = [], [], [], [], 0
            for i in tqdm(idx, desc=f"ecg {split}", leave=False):
                name, label = records[i]
                mat = folder / f"{name}.mat"
                if not mat.exists():
                    raise DataNotFoundError(f"{mat} is listed in REFERENCE.csv but missing; re-download from {URL}")
                with reading(mat):
                    raw = scipy.io.loadmat(mat)["val"][0].astype(np.float32)  # (T,) at 300 Hz
                if self.orca_data and len(raw) <= self.window:
                    continue  # slide_and_cut cuts no window from it
                signal, begin = prepare(raw, self.window, strides[label])
                signals.append(signal)
                starts.append(offset + begin)
                offset += len(signal)
                ys.append(np.full(len(begin), label))
                groups.append(np.full(len(begin), i))
            # The recordings once, windows cut when read (orca/tasks.py: WindowArray).
            x = WindowArray(np.concatenate(signals or [np.zeros(0, np.float32)]),
                            np.concatenate(starts or [np.zeros(0, np.int64)]), self.window)
            out[split] = (x, np.concatenate(ys or [np.zeros(0, np.int64)]),
                          np.concatenate(groups or [np.zeros(0, np.int64)]))
        return out

    def split_recordings(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """{split: indices of its recordings}: ours, stratified, or ORCA's 90 / 10 (no validation)."""
        if not self.orca_data:
            return stratified_split(labels, self.fractions, self.split_seed)
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(np.arange(len(labels)), test_size=0.1, random_state=0)
        return {"train": train, "val": np.zeros(0, np.int64), "test": test}

    reference_error_name = "1 - ORCA's F1: mean over chunks of 1,000 windows of the F1 of the classes present"

    def metrics(self):
        metrics = super().metrics()
        metrics.add_metrics({"record_f1_macro": GroupVoteF1(self.num_outputs),
                             # ORCA's eval_batch_size 1000 at batch 4: chunks of 1,000 windows
                             "orca_f1": ChunkedScore(orca_ecg_f1, chunk=1000, seed=0)})  # shuffled, as ORCA's test loader
        return metrics

    def reference_error(self, metrics):
        return 1.0 - metrics["orca_f1"]

    def error(self, metrics):
        return 1.0 - metrics["f1_macro"]
