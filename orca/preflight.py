"""Checks of a command line before Hydra runs it.

Hydra creates the run folder, appends to its log and reports its own errors (several lines,
exit status 1) before any of our code runs. So ``python -m orca.train`` first composes the
config itself with Hydra's compose API (no torch import, about a second) and stops with one
line and exit status 2 when:

- a config group option is unknown (``task=nope``; the message lists the known ones);
- a key does not exist, or the override syntax is wrong;
- an option's value has the wrong type or is out of range (``seed=abc``,
  ``finetune.optimizer.lr=-1``: the option schema, orca/schema.py; a key that the schema
  does not declare, a task's or a plugin's own, takes its default's type);
- the logger's package is not installed (``logger=mlflow`` without the mlflow extra);
- the run folder is read-only, holds a finished run, is in use by a live run (its lock,
  orca/lock.py), or holds checkpoints of another configuration.

With ``-m``, every value of every swept override is checked (each with the first value of
the others), and the sweep folder must be writable.
"""
from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from orca.config_path import CONFIG_DIR
from orca.errors import ConfigError, RunExistsError
from orca.lock import refuse_if_held
from orca.record import RECORD_NAME
from orca.schema import annotation_of, check_options

MULTIRUN_FLAGS = {"-m", "--multirun"}
# Keys that may differ between a run and its resumption: they do not change results.
RESUME_IGNORES = ("paths", "trainer.enable_progress_bar", "logger")
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false"}


def preflight(argv: list[str]) -> None:
    """Raise ConfigError / RunExistsError / RunFolderBusyError for a command line that would fail,
    overwrite, or write into a live run's folder."""
    flags = {a for a in argv if a.startswith("-")}
    if flags - MULTIRUN_FLAGS:  # --help, --cfg job, --config-name ...: Hydra's own business
        return
    cfg = check_overrides([a for a in argv if not a.startswith("-")])
    if flags:
        _check_writable(Path(str(cfg.hydra.sweep.dir)), "hydra.sweep.dir")
    else:
        check_run_folder(Path(str(cfg.hydra.run.dir)), cfg)


def check_overrides(overrides: list[str]) -> DictConfig:
    """Check group options, keys, syntax, types and ranges of every job the overrides make;
    return the first job's config (with its hydra node)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        first = None
        for job in _jobs(_parse(overrides)):
            search_path = [o.input_line for o in job if o.key == "hydra.searchpath"]
            options = _GroupOptions(loader, search_path)
            _check_groups(options, job)
            cfg = _compose([o.input_line for o in job])
            defaults = _compose([o.input_line for o in job if options(o.key)] + search_path)  # groups only
            _check_types(job, cfg, defaults)
            _check_references(cfg)
            check_options(plain(cfg), {o.key: o.input_line.split("=", 1)[1] for o in job if "=" in o.input_line},
                          plain(defaults, strict=False))
            _check_logger_package(cfg)
            first = first or cfg
    return first


def _check_references(cfg: DictConfig) -> None:
    """Every interpolation of the run's options resolves: budget=paper and protocol=reference
    read a task's ORCA hyperparameters (its `reference:` block), which a new task may lack."""
    from omegaconf.errors import InterpolationKeyError

    for node in ("finetune", "align", "embedder", "head", "data"):
        try:
            OmegaConf.to_container(cfg[node], resolve=True)
        except InterpolationKeyError as exc:
            missing = re.search(r"'([^']+)'", str(exc))
            raise ConfigError(
                f"{exc.full_key} refers to {missing.group(1) if missing else 'a key'}, which task "
                f"{cfg.task.name!r} does not set: budget=paper and protocol=reference take ORCA's hyperparameters "
                "from the task's `reference:` block; add one to its config (as configs/task/ecg.yaml has)") from None


def _check_logger_package(cfg: DictConfig) -> None:
    """The trackers' packages are optional extras (configs/logger/: package, install)."""
    import importlib.util

    logger = cfg.get("logger")
    if logger is not None and logger.package and importlib.util.find_spec(logger.package) is None:
        raise ConfigError(f"logger={logger.name} needs the {logger.package} package: {logger.install}")


def _parse(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise ConfigError(f"cannot parse the overrides {' '.join(overrides)!r} ({str(exc).splitlines()[0]}); "
                          "see https://hydra.cc/docs/advanced/override_grammar/basic/") from None


class _Fixed:
    """One override with one value (a swept override's chosen value)."""

    def __init__(self, override, value: str | None = None):
        self.key = override.key_or_group
        self.input_line = override.input_line if value is None else f"{override.get_key_element()}={value}"


def _jobs(parsed: list) -> list[list[_Fixed]]:
    """The override lists to check: every swept value once, the others at their first value.
    Sweeps that cannot be enumerated (Optuna's interval) are left to the sweeper."""
    fixed, sweeps = [], []
    for o in parsed:
        if not o.is_sweep_override():
            fixed.append(_Fixed(o))
            continue
        try:
            sweeps.append([_Fixed(o, v) for v in o.sweep_string_iterator()])
        except Exception:  # an interval or tagged sweep: only the sweeper can draw from it
            continue
    first = [values[0] for values in sweeps if values]
    jobs = [fixed + first]
    for i, values in enumerate(sweeps):
        jobs += [fixed + first[:i] + [v] + first[i + 1:] for v in values[1:]]
    return jobs


class _GroupOptions:
    """group -> its options on this job's search path (ours plus any hydra.searchpath)."""

    def __init__(self, loader, search_path: list[str]):
        self.loader, self.search_path, self.cache = loader, search_path, {}

    def __call__(self, group: str) -> list[str]:
        if group not in self.cache:
            self.cache[group] = self.loader.get_group_options(group, config_name="train", overrides=self.search_path)
        return self.cache[group]


def _check_groups(group_options: _GroupOptions, job: list[_Fixed]) -> None:
    for o in job:
        options = group_options(o.key)
        value = o.input_line.split("=", 1)[-1]
        if options and "=" in o.input_line and value == "null":  # Hydra's own answer: a ValueError traceback
            raise ConfigError(f"{o.input_line}: a config group takes one of its options ({', '.join(options)}); "
                              f"~{o.key} leaves it out where that is allowed (~logger: no logger)")
        if options and "=" in o.input_line and value not in options:
            raise ConfigError(f"unknown {o.key} {value!r}; known {o.key}s: {', '.join(options)} "
                              f"(or add configs/{o.key}/{value}.yaml)")


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose
    from hydra.errors import HydraException

    try:
        return compose("train", overrides, return_hydra_config=True)
    except HydraException as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        unknown = re.match(r"Could not override '(.+)'", lines[0])
        if unknown:
            raise ConfigError(f"no key {unknown.group(1)!r} in the config: check its spelling (python -m orca.train "
                              f"--cfg job lists every key), or add a new key with +{unknown.group(1)}=...") from None
        raise ConfigError("; ".join(lines[:2])) from None


def _check_types(job: list[_Fixed], cfg: DictConfig, defaults: DictConfig) -> None:
    """Each `key=value` override of a key the option schema does not declare (a task's or a
    plugin's own option) has the type of the key's default; the schema checks the rest."""
    for o in job:
        if "=" not in o.input_line or o.input_line.startswith(("~", "hydra.", "trainer.")) or annotation_of(o.key):
            continue  # Lightning checks its own options (devices: 2, "auto" or [0, 1])
        key = o.key
        default = OmegaConf.select(defaults, key, default=None)
        expected = next((t for t in (bool, int, float) if type(default) is t), None)
        if expected is None:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        fits = (isinstance(value, bool) if expected is bool else
                isinstance(value, int) and not isinstance(value, bool) if expected is int else
                isinstance(value, (int, float)) and not isinstance(value, bool))
        if not fits:
            raise ConfigError(f"{o.input_line}: {key} takes {_TYPE_NAMES[expected]}, e.g. {key}={default}")


def plain(cfg: DictConfig, strict: bool = True) -> dict:
    """The run's options as plain values, resolved, without Hydra's node; the run folder,
    which Hydra sets as it starts, is null. `strict=False`: {} for a config that does not
    resolve, else a ConfigError naming the key."""
    from omegaconf.errors import OmegaConfBaseException

    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.pop("hydra", None)
        if "paths" in cfg and "run_dir" in cfg.paths:
            cfg.paths.run_dir = None
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        if not strict:
            return {}
        raise ConfigError(f"{exc.full_key} does not resolve ({str(exc).splitlines()[0]})") from None


def _check_writable(folder: Path, option: str) -> None:
    """The folder, or the nearest of its parents that exists, must take new files."""
    existing = next(p for p in [folder, *folder.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot create the run folder {folder}: {existing} is a file; choose another {option}")
    try:  # a real probe: permission bits do not bind root, and a file system may be read-only
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write the run folder {folder}: {existing} is read-only ({exc.strerror}); "
                          f"choose another {option} or make it writable") from None


def check_run_folder(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse a folder that holds a finished run, that a live run holds, that cannot be
    written, or whose checkpoints were left by another configuration (resuming them would mix
    two runs)."""
    if (run_dir / RECORD_NAME).exists():
        raise RunExistsError(f"{run_dir / RECORD_NAME} exists: that run is finished and is not overwritten; "
                             "choose another hydra.run.dir or remove the folder")
    refuse_if_held(run_dir)
    _check_writable(run_dir, "hydra.run.dir")
    saved = run_dir / "config.yaml"
    if saved.exists() and (run_dir / "checkpoints").exists():
        changed = config_differences(OmegaConf.load(saved), cfg)
        if changed:
            shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise ConfigError(f"{run_dir} holds checkpoints of another configuration ({shown}); resume it with "
                              "its own overrides (its config.yaml), or choose another hydra.run.dir")


def config_differences(saved: DictConfig, current: DictConfig) -> list[str]:
    """'key: saved -> current' for every leaf that differs, outside RESUME_IGNORES and hydra."""
    def leaves(cfg: DictConfig) -> dict[str, object]:
        flat = _flatten(plain(cfg))
        return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in RESUME_IGNORES)}

    old, new = leaves(saved), leaves(current)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


def _flatten(tree, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
