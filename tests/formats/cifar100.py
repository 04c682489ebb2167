"""Miniature CIFAR-100 "python version": cifar-100-python/{train,test,meta}, pickled by
Python 2 (protocol 2, byte strings as Python 2 `str`, so that they load as bytes with
encoding="bytes" and as text with encoding="latin1", like the published files) holding
b"data" uint8 (n, 3072) as R, G, B planes of 32x32, b"fine_labels", b"coarse_labels",
b"filenames", b"batch_label"; meta holds b"fine_label_names" and b"coarse_label_names"."""
import pickle
import struct
from pathlib import Path

import numpy as np

CLASSES = (0, 7, 42, 99)  # a few of the 100 fine labels
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 3


class Python2Pickler(pickle._Pickler):
    """Writes bytes with Python 2's `str` opcodes, as the published files were written."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        Python2Pickler(f, protocol=2).dump(obj)


def images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 3072) uint8: a class-dependent colour plus noise, so the classes are learnable."""
    base = (np.asarray(labels)[:, None] * np.array([37, 91, 53]) % 256)[:, :, None]  # (n, 3, 1)
    pixels = base + rng.integers(-20, 21, size=(len(labels), 3, 1024))
    return np.clip(pixels, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def write_batch(path: Path, labels: np.ndarray, batch_label: bytes, rng: np.random.Generator) -> None:
    entry = {
        b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(labels))],
        b"batch_label": batch_label,
        b"fine_labels": [int(c) for c in labels],
        b"coarse_labels": [int(c) // 5 for c in labels],
        b"data": images(labels, rng),
    }
    dump(entry, path)


def write(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_batch(folder / "train", np.repeat(CLASSES, TRAIN_PER_CLASS), b"training batch 1 of 1", rng)
    write_batch(folder / "test", np.repeat(CLASSES, TEST_PER_CLASS), b"testing batch 1 of 1", rng)
    meta = {b"fine_label_names": [f"class_{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"superclass_{i:02d}".encode() for i in range(20)]}
    dump(meta, folder / "meta")
    return root
