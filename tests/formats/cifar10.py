"""Miniature image folders in the CIFAR-10 style: train/<class>/NNNN.jpg and
test/<class>/NNNN.jpg, 32x32 RGB JPEGs, a few classes."""
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("bird", "cat", "ship")
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 3
COLOURS = {"bird": (200, 60, 40), "cat": (40, 180, 70), "ship": (30, 60, 210)}


def write(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for c in CLASSES:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.array(COLOURS[c]) + rng.integers(-25, 26, size=(32, 32, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=90)
    return root
