"""A miniature deepCR ACS-WFC release as NAS-Bench-360 publishes it (the extracted tars):
``npy_train/<filter>/<prop_id>/<visit>/<k>_<j>.npy`` and ``npy_test/...``, one float32
array (3, 256, 256) per file (image, cosmic-ray mask, ignore mask; some files carry only
the first two), and a ``sky.npy`` per visit folder.

Images are sky noise with a few stars (smooth blobs) and cosmic rays (sharp bright
pixels and short streaks, marked in the mask); a rectangle of bad pixels is ignored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SIDE = 256
VISITS = {"npy_train": [("f435w", "10595", "7"), ("f606w", "10420", "3"), ("f814w", "12213", "1")],
          "npy_test": [("f435w", "10760", "2")]}
PER_VISIT = {"npy_train": 6, "npy_test": 4}
STAR = (200 * np.exp(-((np.arange(15)[:, None] - 7) ** 2 + (np.arange(15)[None] - 7) ** 2) / 18)).astype(np.float32)


def image(rng: np.random.Generator, with_ignore: bool) -> np.ndarray:
    img = 20.0 + 3.0 * rng.standard_normal((SIDE, SIDE), dtype=np.float32)
    for _ in range(5):  # stars: smooth 15x15 blobs
        cy, cx = rng.integers(0, SIDE - 15, 2)
        img[cy : cy + 15, cx : cx + 15] += STAR
    cr = np.zeros((SIDE, SIDE), np.float32)
    for _ in range(40):  # cosmic rays: sharp, one to four pixels along a row
        cy, cx = rng.integers(40, SIDE - 40, 2)
        cr[cy, cx : cx + rng.integers(1, 5)] = 1
    img += cr * np.float32(rng.uniform(150, 400))
    layers = [img, cr]
    if with_ignore:
        ignore = np.zeros((SIDE, SIDE), np.float32)
        ignore[100:110, 70:150] = 1
        layers.append(ignore)
    return np.stack(layers).astype(np.float32)


def write(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, visits in VISITS.items():
        for visit in visits:
            folder = root.joinpath(split, *visit)
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / "sky.npy", rng.uniform(10, 30, 4).astype(np.float32))
            for k in range(PER_VISIT[split]):
                np.save(folder / f"{k % 4 + 1}_{k}.npy", image(rng, with_ignore=k % 3 != 2))
    return root
