"""Miniature NinaPro DB5 as NAS-Bench-360 publishes it: ninapro_{train,val,test}.npy holding
(N, 52, 16) sEMG windows (52 time steps, 16 electrodes) and label_{train,val,test}.npy holding
labels 0..17. The published dtypes are undocumented; float32 windows and int64 labels are
written."""
from pathlib import Path

import numpy as np

SIZES = {"train": 36, "val": 12, "test": 12}


def write(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in SIZES.items():
        labels = np.arange(n) % 18
        # each gesture drives one electrode harder than the others
        strength = np.eye(16)[labels % 16] * (1 + labels[:, None] // 16)  # (n, 16)
        x = 0.1 * rng.standard_normal((n, 52, 16)) + strength[:, None, :]
        np.save(root / f"ninapro_{split}.npy", x.astype(np.float32))
        np.save(root / f"label_{split}.npy", labels.astype(np.int64))
    return root
