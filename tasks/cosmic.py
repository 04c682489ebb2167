"""Cosmic: cosmic-ray detection in Hubble ACS/WFC images (deepCR, Zhang & Bloom 2020), as
NAS-Bench-360 publishes it: a per-pixel segmentation of cosmic-ray hits.

Files as published: ``deepCR.ACS-WFC.train.tar`` and ``deepCR.ACS-WFC.test.tar`` extract
to ``npy_train/<filter>/<prop_id>/<visit>/*.npy`` and ``npy_test/...`` (plus a ``sky.npy``
per visit folder, the sky level used by deepCR's augmentation). Each image file holds one
float array ``data``: data[0] the image, data[1] the cosmic-ray mask (0/1), and, when
data.shape[0] == 3, data[2] the ignore mask (1 = bad pixel, not scored).

As NAS-Bench-360: every filter and field is used; a fixed crop [64:192, 64:192] gives the
input (1, 128, 128) and the target cosmic-ray mask (128, 128) float 0/1; no intensity
normalisation. ORCA's loaders add a random sky background to every image, in training and
in test (its level from the visit's sky.npy times U(-0.9, 3)); ``protocol.data=orca`` does
the same, our default does not (a test set that changes at every evaluation is not one
test set; not compared on validation). The mask of entries that count is
1 - ignore (bool, True = scored). Validation: a fixed-seed `val_frac` (10%) of the train
files (`split_seed`); test: every test file.

Loss: binary cross-entropy with logits over the pixels that count (no positive weight, as
ORCA). Metric: AUROC over all test pixels that count, from the scores (never from
thresholded predictions, which is the reference's flaw); the paper's number is 1 - AUROC.
`reference_error` is ORCA's ``inv_auroc`` (`orca_thresholded_auroc`): 1 - the AUROC of the
0/1 predictions ``logit > 0`` over every pixel, ignored ones included, within chunks of
1,000 images in the split's order, averaged over the chunks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchmetrics

from orca.errors import DataNotFoundError
from orca.metrics import ChunkedScore, MaskedBinaryAUROC, orca_thresholded_auroc
from orca.registry import TASKS
from orca.tasks import DenseTask, fetch_archive, reading

URLS = {"npy_train": "https://pde-xd.s3.amazonaws.com/cosmic/deepCR.ACS-WFC.train.tar",
        "npy_test": "https://pde-xd.s3.amazonaws.com/cosmic/deepCR.ACS-WFC.test.tar"}
CROP = slice(64, 192)  # 128x128


def image_files(folder: Path) -> list[Path]:
    """Every image file <filter>/<prop_id>/<visit>/*.npy under `folder`, sorted (sky.npy excluded)."""
    return sorted(p for p in folder.glob("*/*/*/*.npy") if p.name != "sky.npy")


def read_crops(files: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> images (n, 1, 128, 128) float32, cosmic-ray masks (n, 128, 128) float32 0/1, the
    pixels that count (n, 128, 128) bool (1 - ignore), and each image's sky level (n,)
    float32: entry k - 1 of its visit folder's sky.npy for a file named ``<k>_*.npy`` (0
    without a sky.npy, as ORCA's loader)."""
    n = len(files)
    x = np.empty((n, 1, 128, 128), np.float32)
    y = np.empty((n, 128, 128), np.float32)
    keep = np.ones((n, 128, 128), bool)
    sky = np.zeros(n, np.float32)
    for i, path in enumerate(files):
        with reading(path):
            data = np.load(path, mmap_mode="r")  # (2 or 3, H, W); only the crop is read
            x[i, 0] = data[0, CROP, CROP]
            y[i] = data[1, CROP, CROP] > 0.5
            if data.shape[0] == 3:
                keep[i] = data[2, CROP, CROP] < 0.5
        levels = path.parent / "sky.npy"
        if levels.exists():
            sky[i] = np.load(levels)[int(path.name.split("_")[0]) - 1]
    return x, y, keep, sky


@TASKS.register("cosmic")
class Cosmic(DenseTask):
    name = "cosmic"
    input_shape = (1, 128, 128)
    output_shape = (128, 128)
    error_name = "1 - AUROC"
    paper = {"Hand-designed": 0.127, "NAS-Bench-360": 0.229, "DASH": 0.19, "Perceiver IO": 0.485,
             "FPT": 0.233, "ORCA": 0.152}

    extra_names = ("mask", "sky")  # the pixels that count; the image's sky level (ORCA's augmentation)
    sky_range = (-0.9, 3.0)  # ORCA's aug_sky: sky x U(-0.9, 3) added to an image

    def __init__(self, val_frac: float = 0.1, split_seed: int = 0):
        self.val_frac, self.split_seed = val_frac, split_seed

    def add_sky(self, x: torch.Tensor, sky: torch.Tensor | None) -> torch.Tensor:
        """ORCA's sky augmentation (``PairedDatasetImagePath.get_skyaug``), under
        protocol.data=orca only: each image (B, 1, H, W) plus its sky level times U(-0.9, 3)."""
        if not self.orca_data or sky is None:
            return x
        low, high = self.sky_range
        factor = torch.empty(len(x), device=x.device).uniform_(low, high)
        return x + (sky.to(x.dtype) * factor)[:, None, None, None]

    def augment(self, x, **extras):
        return self.add_sky(x, extras.get("sky"))

    def augment_eval(self, x, **extras):  # ORCA's test loader adds a random sky too
        return self.add_sky(x, extras.get("sky"))

    def load_arrays(self, root: Path, download: bool):
        files = {}
        for folder, url in URLS.items():
            fetch_archive(url, root, folder, download=download)
            files[folder] = image_files(root / folder)
            if not files[folder]:
                raise DataNotFoundError(f"no image files <filter>/<prop_id>/<visit>/*.npy under {root / folder}; "
                                        f"get them from {url} (extract into {root})")
        train = files["npy_train"]
        order = np.random.default_rng(self.split_seed).permutation(len(train))
        n_val = int(round(self.val_frac * len(train)))
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        return {"train": read_crops([train[i] for i in train_idx]),
                "val": read_crops([train[i] for i in val_idx]),
                "test": read_crops(files["npy_test"])}

    def loss(self, outputs, targets, mask=None):
        if mask is not None:  # only the pixels that count
            outputs, targets = outputs[mask], targets[mask]
        return torch.nn.functional.binary_cross_entropy_with_logits(outputs, targets.float())

    reference_error_name = "ORCA's inv_auroc: 1 - AUROC of thresholded (> 0) outputs, mean over chunks of 1,000 images"

    def metrics(self):
        return torchmetrics.MetricCollection({
            "auroc": MaskedBinaryAUROC(),
            "orca_thresholded_auroc": ChunkedScore(orca_thresholded_auroc, chunk=1000),  # eval batch 1000 at 4
        })

    def error(self, metrics):
        return 1.0 - metrics["auroc"]

    def reference_error(self, metrics):
        return 1.0 - metrics["orca_thresholded_auroc"]
