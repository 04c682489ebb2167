"""Miniature DeepSEA data: ``deepsea_filtered.npz`` (uncompressed) with x_train, y_train,
x_val, y_val, x_test, y_test; x one-hot uint8 (N, 1000, 4), y 0/1 uint8 (N, 36). Label j is
positive when the base at position 27 j is G or C, so the labels can be learned."""
from pathlib import Path

import numpy as np

SIZES = {"train": 24, "val": 8, "test": 12}


def write(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        bases = rng.integers(0, 4, size=(n, 1000))  # A, C, G, T
        arrays[f"x_{split}"] = np.eye(4, dtype=np.uint8)[bases]  # (n, 1000, 4)
        arrays[f"y_{split}"] = np.isin(bases[:, 27 * np.arange(36)], (1, 2)).astype(np.uint8)  # (n, 36)
    np.savez(root / "deepsea_filtered.npz", **arrays)
    return root

# The smoke run's 1,000 -> 500 tokens make six MiniLM steps slow on two CPU cores; 125 tokens check the same path.
OVERRIDES = ["embedder.target_len=128"]
