"""DeepSEA: predict 36 chromatin profiles (a filtered subset of DeepSEA's 919) from a
1,000 bp DNA sequence, the NAS-Bench-360 task; multi-label.

File as published: ``deepsea_filtered.npz`` with ``x_train``, ``y_train``, ``x_val``,
``y_val``, ``x_test``, ``y_test``; x one-hot bases (N, 1000, 4), y 0/1 (N, 36).
Splits are the file's own (about 71K / 2.5K / 149K; ORCA trains on train + val and selects
on test, we keep validation apart). Preprocessing: x -> (N, 4, 1000) float32 (channels
first, as ORCA); nothing else. The arrays are read one at a time (the file is 860 MB) and
each is converted once to the layout the model takes.
Loss: BCE with logits, positives weighted 4 (ORCA). Metric: AUROC per label from scores,
averaged over the labels that have both classes in the split (the reference's nanmean);
the paper's number is 1 - that mean. `reference_error` is 1 - the mean AUROC as ORCA's code
prints it (`orca_auroc`): the same per-label nan-mean within chunks of 1,008 test sequences
(ORCA's eval_batch_size 1000 at batch 16), averaged over the chunks in the split's order.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from orca.errors import DataNotFoundError
from orca.metrics import ChunkedScore, orca_mean_auroc
from orca.registry import TASKS
from orca.tasks import MultiLabelTask, fetch_archive

URL = "https://pde-xd.s3.amazonaws.com/deepsea/deepsea_filtered.npz"
FILE = "deepsea_filtered.npz"
LENGTH, LABELS = 1000, 36


def read_split(npz, split: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, 4, 1000) float32, y (n, 36) float32) of one split of the open npz."""
    missing = [k for k in (f"x_{split}", f"y_{split}") if k not in npz.files]
    if missing:
        raise DataNotFoundError(f"{path} lacks {', '.join(missing)} (has {', '.join(npz.files)}); "
                                f"re-download it from {URL}")
    x, y = npz[f"x_{split}"], npz[f"y_{split}"]  # (n, 1000, 4), (n, 36)
    if x.shape[1:] != (LENGTH, 4) or y.shape != (len(x), LABELS):
        raise DataNotFoundError(f"{path}: {split} arrays are {x.shape} and {y.shape}, "
                                f"expected (n, {LENGTH}, 4) and (n, {LABELS})")
    return x.transpose(0, 2, 1).astype(np.float32, order="C"), y.astype(np.float32)


@TASKS.register("deepsea")
class DeepSEA(MultiLabelTask):
    name = "deepsea"
    input_shape = (4, LENGTH)
    num_outputs = LABELS
    pos_weight = 4.0
    error_name = "1 - AUROC"
    paper = {"Hand-designed": 0.30, "NAS-Bench-360": 0.32, "DASH": 0.28, "Perceiver IO": 0.38,
             "FPT": 0.37, "ORCA": 0.29}

    def load_arrays(self, root: Path, download: bool):
        fetch_archive(URL, root, FILE, download=download)
        path = root / FILE
        try:
            with np.load(path) as npz:  # lazy: each array is read when asked for
                return {split: read_split(npz, split, path) for split in ("train", "val", "test")}
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise DataNotFoundError(f"{path} is not a readable npz ({exc}); re-download it from {URL}") from None

    reference_error_name = "1 - ORCA's AUROC: mean over chunks of 1,008 sequences of the nan-mean AUROC over labels"

    def metrics(self):
        metrics = super().metrics()
        metrics.add_metrics({"orca_auroc": ChunkedScore(orca_mean_auroc, chunk=1008)})
        return metrics

    def error(self, metrics):
        return 1.0 - metrics["auroc"]

    def reference_error(self, metrics):
        return 1.0 - metrics["orca_auroc"]
