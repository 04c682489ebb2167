"""Digits ships with scikit-learn: nothing to write."""
from pathlib import Path


def write(root: Path) -> Path:
    return root
