"""NinaPro DB5: hand gestures from surface electromyography (sEMG), 18 gesture classes, as
processed by NAS-Bench-360 (windows of 52 time steps from 16 electrodes).

Files as published (six NumPy files): ``ninapro_{train,val,test}.npy`` holding (N, 52, 16)
windows and ``label_{train,val,test}.npy`` holding labels 0..17, read with
``allow_pickle=True, encoding="bytes"`` as the reference loaders do (N = 2,638 / 659 / 659).
No checksum is published (the md5s in one third-party wrapper are not official, so none is
checked). Preprocessing as NAS-Bench-360: (N, 52, 16) -> transpose -> (N, 1, 16, 52), no
normalisation. Splits: as given by the files (train / val / test). Loss: ORCA's focal loss
with gamma 0, i.e. cross-entropy. Metric: accuracy; the paper's number is the 0-1 error in
percent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from orca.registry import TASKS
from orca.tasks import fetch_archive, reading
from tasks.images import PercentErrorTask

URL = "https://pde-xd.s3.amazonaws.com/ninapro/{}"
SPLITS = ("train", "val", "test")


@TASKS.register("ninapro")
class NinaPro(PercentErrorTask):
    name = "ninapro"
    input_shape = (1, 16, 52)
    num_outputs = 18
    paper = {"Hand-designed": 8.73, "NAS-Bench-360": 7.34, "DASH": 6.60, "Perceiver IO": 22.22,
             "FPT": 15.69, "ORCA": 7.54}

    def load_arrays(self, root: Path, download: bool):
        out = {}
        for split in SPLITS:
            data, label = f"ninapro_{split}.npy", f"label_{split}.npy"
            for name in (data, label):
                fetch_archive(URL.format(name), root, name, download=download)
            with reading(root / data):
                x = np.load(root / data, allow_pickle=True, encoding="bytes").astype(np.float32)  # (N, 52, 16)
            with reading(root / label):
                y = np.load(root / label, allow_pickle=True, encoding="bytes").astype(np.int64)  # (N,) 0..17
            out[split] = (np.ascontiguousarray(x.transpose(0, 2, 1)[:, None]), y)  # (N, 1, 16, 52)
        return out
