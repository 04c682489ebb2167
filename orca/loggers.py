"""Where a run's metrics go: the logger= config group (configs/logger/), through Lightning's loggers.

csv (the default) has a logger a stage: <run>/logs/<stage>/metrics.csv, beside the run's own
config.yaml and results.json. The trackers (tensorboard, mlflow, wandb) keep one tracker run
per orca run, so that a run is one row to compare in their tables: the first stage opens it
and logs the resolved config as its parameters; the later stages, the record's final metrics
(final/val/*, final/test/*) and a resumed attempt join it through its id, kept in
<run>/checkpoints/tracker.json. The stages' metric names already say where they come from
(align/loss; train/loss, val/*, test/*), so they share the run without a prefix; only
Lightning's own `epoch` counter is logged by both stages.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from hydra.utils import instantiate
from lightning.fabric.utilities.logger import _flatten_dict
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

TRACKER_FILE = "tracker.json"  # in <run>/checkpoints: {"logger": its name, "version": the tracker run's id}


def stage_logger(cfg: DictConfig, run_dir: Path, stage: str) -> Logger | bool:
    """The logger of one stage's Trainer (~logger on the command line: none)."""
    if cfg.get("logger") is None:
        return False
    if cfg.logger.per_stage:
        return _create(cfg.logger, run_dir, version=stage)
    return _tracker_run(cfg, run_dir)


def log_record(cfg: DictConfig, run_dir: Path, record: dict) -> None:
    """Send the record's final metrics to the tracker run and close it (csv: results.json has them)."""
    if cfg.get("logger") is None or cfg.logger.per_stage:
        return
    logger = _tracker_run(cfg, run_dir)
    final = {f"final/{split}/{name}": value for split in ("val", "test")
             for name, value in record["metrics"][split].items()}
    if isinstance(logger, TensorBoardLogger):  # its HParams tab shows the config beside these metrics
        logger.log_hyperparams(config_params(cfg, run_dir), metrics=final)
    else:
        logger.log_metrics(final)
    logger.finalize("success")
    if isinstance(logger, WandbLogger):  # Lightning leaves W&B's run open: the next run of a sweep needs its own
        logger.experiment.finish()


def config_params(cfg: DictConfig, run_dir: Path) -> dict[str, object]:
    """The run's resolved config, flat: {"finetune.optimizer.lr": 0.0001, "task.name": "digits", ...}."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.pop("hydra", None)  # a config composed outside a Hydra run (orca/select.py) has Hydra's node ...
        cfg.paths.run_dir = str(run_dir)  # ... and no Hydra runtime folder
    return _flatten_dict(OmegaConf.to_container(cfg, resolve=True), delimiter=".")


def _tracker_run(cfg: DictConfig, run_dir: Path) -> Logger:
    """A logger on this orca run's tracker run: opened (its config logged) on first use, reopened after."""
    saved_file = run_dir / "checkpoints" / TRACKER_FILE
    saved = json.loads(saved_file.read_text()) if saved_file.exists() else {}
    options = cfg.logger
    if saved.get("logger") == options.name:
        return _create(options, run_dir, **({options.reopen_with: saved["version"]} if options.reopen_with else {}))
    logger = _create(options, run_dir)
    logger.log_hyperparams(config_params(cfg, run_dir))  # starts the tracker run (rank zero only)
    if rank_zero_only.rank == 0:
        saved_file.parent.mkdir(parents=True, exist_ok=True)
        saved_file.write_text(json.dumps({"logger": options.name, "version": logger.version}))
    return logger


def _create(options: DictConfig, run_dir: Path, **arguments) -> Logger:
    """logger.lightning instantiated; its save_dir: null is the run folder."""
    if options.lightning.get("save_dir", "") is None:
        arguments = {"save_dir": str(run_dir), **arguments}
    return instantiate(options.lightning, _convert_="all", **arguments)
