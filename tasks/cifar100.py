"""CIFAR-100: 32x32 colour images of 100 object classes (Krizhevsky 2009).

Files as published (the "python version", ``cifar-100-python.tar.gz`` from cs.toronto.edu,
unpacked to ``cifar-100-python/``): ``train`` (50,000 images) and ``test`` (10,000), each a
pickle of a dict with ``data`` uint8 (n, 3072) (row-major R, G, B planes of 32x32) and
``fine_labels`` (0..99), besides ``coarse_labels``, ``filenames`` and ``batch_label``;
``meta`` holds the label names. When the folder is missing, torchvision's ``CIFAR100``
downloads the tarball and checks torchvision's md5s of the tarball and the unpacked files.
The pickles are then read here in torchvision's way, without its md5 check on every load,
so that any copy in the published layout (a mirror, a miniature test copy) loads.

Preprocessing as NAS-Bench-360 / ORCA at test time: ToTensor + Normalize with mean (0.5071,
0.4867, 0.4408) and std (0.2675, 0.2565, 0.2761). Augmentation for fine-tuning as ORCA's
training transforms: RandomCrop(32, padding 4) with black padding and a horizontal flip half
the time (`crop_pad: 4`; 0: none). ORCA's, as there are no CIFAR-100 files on this machine
to compare the two on validation; ``protocol.data=orca`` always crops with padding 4. Splits: the published test set is the test split; validation is carved from train,
10,000 of 50,000 images stratified by class with a fixed seed (option `split_seed`), as
NAS-Bench-360 holds out 20% of train (ORCA itself validates on test). Metric: accuracy;
the paper's number is the 0-1 error in percent.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from orca.errors import ConfigError, DataNotFoundError
from orca.registry import TASKS
from orca.tasks import reading
from tasks.images import PercentErrorTask, carve_validation, crop_and_flip, normalise

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One published pickle -> images uint8 (n, 3, 32, 32), fine labels int64 (n,)."""
    with reading(path), open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")  # written by Python 2, like torchvision reads it
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return images, np.asarray(entry["fine_labels"], dtype=np.int64)


def ensure_downloaded(root: Path, download: bool) -> Path:
    """The unpacked folder; downloaded (md5-checked by torchvision) when missing and allowed."""
    folder = root / FOLDER
    missing = [name for name in ("train", "test") if not (folder / name).exists()]
    if not missing:
        return folder
    if download:
        from torchvision.datasets import CIFAR100 as TorchvisionCIFAR100

        try:
            TorchvisionCIFAR100(str(root), train=True, download=True)
        except (OSError, RuntimeError) as exc:
            raise DataNotFoundError(f"expected {folder / missing[0]} (not found) and the download from {URL} "
                                    f"failed ({exc}); get it from that URL, unpack it into {root}, "
                                    "or point data.root at a copy") from None
        return folder
    raise DataNotFoundError(f"expected {folder / missing[0]} (not found, download disabled); get {URL}, "
                            f"unpack it into {root}, or point data.root at a copy")


@TASKS.register("cifar100")
class CIFAR100(PercentErrorTask):
    name = "cifar100"
    input_shape = (3, 32, 32)
    num_outputs = 100
    paper = {"Hand-designed": 19.39, "NAS-Bench-360": 23.39, "DASH": 24.37, "Perceiver IO": 70.04,
             "FPT": 10.11, "ORCA": 6.53}

    def __init__(self, val_frac: float = 0.2, split_seed: int = 0, crop_pad: int = 4):
        if crop_pad < 0:
            raise ConfigError(f"task.crop_pad must be a number of pixels >= 0 (0: no augmentation), got {crop_pad}")
        self.val_frac, self.split_seed, self.crop_pad = val_frac, split_seed, crop_pad

    def augment(self, x, **extras):
        pad = 4 if self.orca_data else self.crop_pad  # ORCA: RandomCrop(32, 4), then the flip
        black = [-m / s for m, s in zip(MEAN, STD)]  # a zero pixel after Normalize
        return crop_and_flip(x, pad, fill=black) if pad else x

    def load_arrays(self, root: Path, download: bool):
        folder = ensure_downloaded(root, download)
        raw = {name: read_batch(folder / name) for name in ("train", "test")}
        splits = {**carve_validation(*raw["train"], self.val_frac, self.split_seed), "test": raw["test"]}
        return {split: (normalise(x, MEAN, STD), y) for split, (x, y) in splits.items()}  # (n, 3, 32, 32)
