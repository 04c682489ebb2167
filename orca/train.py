"""Command line: ``python -m orca.train task=ecg method=fpt seed=1`` (Hydra; ``-m`` sweeps).

The command line is checked (orca/preflight.py) before Hydra writes anything; an error the
user can fix prints one line and exits with status 2. Plugins' configs join Hydra's search
path first (orca/plugins.py).
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from orca.errors import OrcaError
from orca.plugins import with_plugin_configs
from orca.preflight import preflight


def _fail(exc: OrcaError):
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def _run(cfg: DictConfig) -> float:
    from orca.pipeline import (
        train,  # imports torch: after the command line is known to be good
    )

    try:
        record = train(cfg)
    except OrcaError as exc:  # the user's to fix: the message, no traceback
        _fail(exc)
    return record["metrics"]["val"]["error"]


def main() -> None:
    try:
        sys.argv[1:] = with_plugin_configs(sys.argv[1:])  # task=<a plugin's task> finds its config
        preflight(sys.argv[1:])
    except OrcaError as exc:
        _fail(exc)
    _run()


if __name__ == "__main__":
    main()
