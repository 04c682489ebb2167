"""Command line: ``python -m orca.train task=ecg method=fpt seed=1`` (Hydra; ``-m`` sweeps)."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from orca.errors import OrcaError
from orca.pipeline import train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        record = train(cfg)
    except OrcaError as exc:  # the user's to fix: the message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return record["metrics"]["val"]["error"]


if __name__ == "__main__":
    main()
