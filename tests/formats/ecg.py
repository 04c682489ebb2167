"""PhysioNet/CinC 2017 as published (training2017/*.mat, *.hea, REFERENCE.csv)."""
from pathlib import Path

from conftest import write_physionet2017


def write(root: Path) -> Path:
    return write_physionet2017(root / "physionet2017")
