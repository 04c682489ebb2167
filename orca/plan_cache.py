"""The plans of time-budgeted runs, kept for the next run of the same command on the same
machine, so that it trains the same steps (orca/budget.py).

A plan is written to ``<paths.cache_dir>/plans/<key>.json`` once a run's first real steps
supported it (confirmed a calibrated plan, or re-planned from them), and read instead of
calibrating; the file keeps the fastest plan real steps have supported (:func:`worth_keeping`).
The key is a hash of everything that sets the speed of a step and the time a run has: the
resolved config less the keys in SPEED_NEUTRAL, the machine (orca/record.py: machine())
and the versions of the packages that do the work. Deleting the folder (or one file) makes
the next run calibrate again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from orca.budget import StepPlan
from orca.record import machine, package_versions

log = logging.getLogger(__name__)

# Config keys that change neither a step's cost nor the time budget, so runs that differ
# only in them share a plan: the seed (a sweep's seeds train the same steps), where files
# go (paths: run folder, data parent, this cache), Hydra's own settings, whether data may be
# downloaded, what a run does at its deadline, and the learning rates and warm-up (so the
# trials of a recipe search, scripts/search_recipe.py, that share their tokens train the
# same steps), and early stopping (it ends a plan sooner, at no other cost). Everything else
# counts, even where it rarely changes the speed (the data seeds: a cap that keeps whole
# groups, as FSD50K's clips, gives sizes that follow the seed).
SPEED_NEUTRAL = ("seed", "paths", "hydra", "data.download", "finetune.stop_on_time", "finetune.optimizer.lr",
                 "finetune.new_lr", "finetune.warmup_frac", "align.lr", "finetune.early_stopping_patience")


def key_inputs(cfg: DictConfig) -> dict:
    """What a plan depends on: the config less SPEED_NEUTRAL, the machine, the package versions."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for dotted in SPEED_NEUTRAL:
        *parents, last = dotted.split(".")
        node = config
        for name in parents:
            node = node.get(name) or {}
        node.pop(last, None)
    return {"config": config, "machine": machine(), "versions": package_versions()}


def plan_key(cfg: DictConfig) -> str:
    text = json.dumps(key_inputs(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.cache_dir).expanduser() / "plans" / f"{plan_key(cfg)}.json"


def cached_plan(cfg: DictConfig) -> StepPlan | None:
    """The plan kept for this command on this machine, to be checked again (check None), or
    None. An unreadable file counts as none (the run calibrates and replaces it)."""
    path = plan_path(cfg)
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text())
        plan = StepPlan.from_dict(entry["plan"])
        origin = f"from run folder {entry['run_dir']} at {entry['written']}"
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable plan cache %s (%s: %s)", path, type(exc).__name__, exc)
        return None
    return StepPlan(plan.max_steps, plan.val_every, plan.calibration, plan.seconds_left,
                    source=f"cached ({path}, {origin})")


def worth_keeping(followed: StepPlan, checked: StepPlan) -> bool:
    """Whether `checked`, the plan a run's first steps settled on from the plan it `followed`
    (orca/budget.py: check_plan), is to be kept for the next run: yes for a plan made in
    this run (calibrated and confirmed, or re-planned); for a cached plan, only a re-plan
    to faster steps replaces it. A cached plan the steps confirm stays as it was, and so does
    one whose steps this run finds slower (another process's burst): that run follows its
    re-plan, and the cache keeps the best the machine has shown."""
    if not followed.source.startswith("cached"):
        return True
    return not checked.check["confirmed"] and checked.check["ratio"] < 1


def keep_plan(cfg: DictConfig, plan: StepPlan, run_dir: Path) -> Path:
    """Write `plan` (the one a run follows, with what its first steps measured) for the next
    run of this command, over any earlier one."""
    path = plan_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"plan": plan.to_dict(), "run_dir": str(run_dir), "written": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "key": key_inputs(cfg)}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry, indent=2, default=str))
    tmp.replace(path)  # atomic: two runs of one command may finish their checks at once
    return path
