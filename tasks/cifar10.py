"""Image folders: any user's labelled images on disk, by default CIFAR-10 style.

Layout (the common "image folder" convention): ``data.root`` holds ``train/<class>/*.jpg``
and ``test/<class>/*.jpg`` (also .jpeg, .png, .bmp; decoded with Pillow). The classes are
the sorted folder names under ``train/``, so ``num_outputs`` is set on the task from the
folders; every image is read as RGB and ``input_shape`` (3, H, W) comes from the first one
(all must share its size; default (3, 32, 32)). On this machine ``../shared/datasets/cifar10-subset`` holds real
CIFAR-10 images in this layout (1,000 train and 200 test a class, 32x32 JPEG). Nothing is
downloaded.

Preprocessing: ToTensor + Normalize with the CIFAR-10 mean (0.4914, 0.4822, 0.4465) and std
(0.2470, 0.2435, 0.2616) (options `mean`, `std`). Augmentation, for fine-tuning only:
`crop_pad` > 0 pads each training image by that many pixels, crops it back at a random
offset and mirrors it left-right half the time (0, the default: none). Splits: the test
folder is the test split; validation is 10% of the train folder, stratified by class with
a fixed seed (option `split_seed`). Metric: accuracy; the error is the 0-1 error in
percent. Not in the paper's table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from orca.errors import ConfigError, DataNotFoundError
from orca.registry import TASKS
from orca.tasks import reading
from tasks.images import PercentErrorTask, carve_validation, crop_and_flip, normalise

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
LAYOUT = "train/<class>/ and test/<class>/ folders of images (.jpg, .jpeg, .png, .bmp)"


def list_images(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths under folder/<class>/, their class indices (n,) int64, and the classes
    (the sorted subfolder names, unless given: then every subfolder must be one of them)."""
    if not folder.is_dir():
        raise DataNotFoundError(f"expected the folder {folder} (not found); data.root must hold {LAYOUT}")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    is_train = classes is None  # every training class needs images; a test folder may lack some
    if is_train:
        classes = found
    elif unknown := sorted(set(found) - set(classes)):
        raise ConfigError(f"{folder} has class folders {unknown} that {folder.parent / 'train'} lacks")
    paths, labels = [], []
    for c in found:
        files = sorted(p for p in (folder / c).iterdir() if p.suffix.lower() in EXTENSIONS)
        if not files and is_train:
            raise DataNotFoundError(f"no images in the class folder {folder / c}: every class needs training images")
        paths += files
        labels += [classes.index(c)] * len(files)
    if not paths:
        raise DataNotFoundError(f"no images in {folder}: expected {folder}/<class>/*.jpg; data.root must hold {LAYOUT}")
    return paths, np.asarray(labels, dtype=np.int64), classes


def decode(path: Path) -> np.ndarray:
    """One image file -> (H, W, 3) uint8 RGB (grey, palette or RGBA images are converted)."""
    with reading(path), Image.open(path) as im:
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def read_images(paths: list[Path], desc: str) -> np.ndarray:
    """Decode images -> (n, 3, H, W) uint8; all must have the first image's size."""
    first = decode(paths[0])
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)  # (n, H, W, 3)
    for i, path in enumerate(tqdm(paths, desc=desc, leave=False)):
        pixels = decode(path)
        if pixels.shape != first.shape:
            raise ConfigError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} but {paths[0]} is "
                              f"{first.shape[1]}x{first.shape[0]}; resize the images to one size")
        out[i] = pixels
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (n, 3, H, W)


@TASKS.register("cifar10")
class ImageFolder(PercentErrorTask):
    name = "cifar10"
    input_shape = (3, 32, 32)  # set from the first image on load
    num_outputs = 10  # set from the class folders on load
    paper: dict[str, float] = {}  # not in the paper's table

    def __init__(self, val_frac: float = 0.1, split_seed: int = 0, mean=MEAN, std=STD, crop_pad: int = 0):
        self.val_frac, self.split_seed = val_frac, split_seed
        self.mean, self.std = tuple(mean), tuple(std)
        if crop_pad < 0:
            raise ConfigError(f"task.crop_pad must be a number of pixels >= 0 (0: no augmentation), got {crop_pad}")
        self.crop_pad = crop_pad

    def augment(self, x, **extras):
        return crop_and_flip(x, self.crop_pad) if self.crop_pad else x

    def load_arrays(self, root: Path, download: bool):
        train_paths, train_y, classes = list_images(root / "train")
        test_paths, test_y, _ = list_images(root / "test", classes)
        self.classes, self.num_outputs = classes, len(classes)
        raw = {"train": (read_images(train_paths, "cifar10 train"), train_y),
               "test": (read_images(test_paths, "cifar10 test"), test_y)}
        if raw["test"][0].shape[1:] != raw["train"][0].shape[1:]:
            raise ConfigError(f"test images are shaped {raw['test'][0].shape[1:]} but train images "
                              f"{raw['train'][0].shape[1:]}; resize the images to one size")
        self.input_shape = tuple(raw["train"][0].shape[1:])
        splits = {**carve_validation(*raw["train"], self.val_frac, self.split_seed), "test": raw["test"]}
        return {split: (normalise(x, self.mean, self.std), y) for split, (x, y) in splits.items()}
