"""Choose a task's recipe on validation: an Optuna study over tokens and learning rates,
each trial one ``python -m orca.train`` run whose validation error is the objective.

Each trial runs in ``<out>/trials/NNN`` and keeps its record and logs (its checkpoints are
deleted once its record is read). The study lives in ``<out>/study.db`` (SQLite); calling the search again with the same
folder continues it until it holds the requested number of finished trials, so a search
stopped at the end of a day resumes the next morning. A trial whose process was killed is
marked failed through Optuna's heartbeat and replaced. The first trial is the task's
current default, so a search can only confirm it or beat it on validation. The test split
is never read for choosing anything: each trial's test error is in its own record, and
:func:`summary` leaves it out.

Hydra's own Optuna sweeper (hydra-optuna-sweeper) pins optuna < 3, whose SQLite storage
does not work with SQLAlchemy 2; this module uses current Optuna directly.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from orca.embedders import smallest_patch, smallest_stride
from orca.errors import ConfigError
from orca.record import RECORD_NAME

METHOD_SPACES = {  # (low, high) of log-uniform learning rates; None: not searched
    "finetune": {"finetune.optimizer.lr": (1e-5, 1e-3), "finetune.new_lr": (1e-4, 3e-2)},
    "scratch": {"finetune.optimizer.lr": (1e-5, 1e-3), "finetune.new_lr": (1e-4, 3e-2)},
    "orca": {"finetune.optimizer.lr": (1e-5, 1e-3), "finetune.new_lr": (1e-4, 3e-2)},
    "fpt": {"finetune.optimizer.lr": (1e-4, 1e-2)},  # FPT's one learning rate
}


def token_choices(input_shape: tuple[int, ...], max_tokens: int = 64) -> list[int]:
    """The distinct token counts a 1D (C, L) or 2D (C, H, W) input can be cut into, at most
    `max_tokens`, each as the smallest `target_len` that gives it."""
    choices = {}
    for target_len in range(1, max_tokens + 1):
        if len(input_shape) == 2:
            tokens = input_shape[1] // smallest_stride(input_shape[1], target_len)
        else:
            try:
                p = smallest_patch(input_shape[1], input_shape[2], target_len)
            except ConfigError:
                continue
            tokens = (input_shape[1] // p) * (input_shape[2] // p)
        choices.setdefault(tokens, target_len)
    return sorted(choices.values())


@dataclass
class Search:
    task: str
    method: str
    out: Path
    input_shape: tuple[int, ...]
    overrides: tuple[str, ...] = ()  # every trial: data.root=..., budget_s=..., ...
    seed: int = 0
    defaults: dict | None = None  # the first trial's values (the current recipe)

    def space(self, trial: optuna.Trial) -> dict:
        params = {"embedder.target_len": trial.suggest_categorical("embedder.target_len",
                                                                     token_choices(self.input_shape))}
        for key, (low, high) in METHOD_SPACES[self.method].items():
            params[key] = trial.suggest_float(key, low, high, log=True)
        return params

    def command(self, params: dict, folder: Path) -> list[str]:
        return [sys.executable, "-m", "orca.train", f"task={self.task}", f"method={self.method}",
                f"seed={self.seed}", *self.overrides, *(f"{k}={v}" for k, v in params.items()),
                "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}"]

    def objective(self, trial: optuna.Trial) -> float:
        params = self.space(trial)
        folder = self.out / "trials" / f"{trial.number:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "stdout.log", "w") as stdout:
            proc = subprocess.run(self.command(params, folder), stdout=stdout, stderr=subprocess.STDOUT)
        record_path = folder / RECORD_NAME
        if proc.returncode != 0 or not record_path.exists():  # recorded as pruned; the study goes on
            raise optuna.TrialPruned(f"trial {trial.number} failed (exit {proc.returncode}); see {folder}/stdout.log")
        record = json.loads(record_path.read_text())
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # 2 x 90 MB a trial; the record is what counts
        finetune = record.get("finetune") or {}
        trial.set_user_attr("steps", finetune.get("steps_done"))
        trial.set_user_attr("seconds_per_step", finetune.get("seconds_per_step"))
        return float(record["metrics"]["val"]["error"])

    def run(self, trials: int, log=print) -> optuna.Study:
        self.out.mkdir(parents=True, exist_ok=True)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
        storage = optuna.storages.RDBStorage(f"sqlite:///{self.out.resolve() / 'study.db'}",
                                             heartbeat_interval=30, grace_period=120)
        study = optuna.create_study(study_name=f"{self.task}-{self.method}", storage=storage, direction="minimize",
                                    sampler=optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=6),
                                    load_if_exists=True)
        optuna.storages.fail_stale_trials(study)  # trials of a killed search
        if not study.trials and self.defaults:
            study.enqueue_trial(self.defaults)

        def finished() -> int:
            return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

        log(f"study {study.study_name}: {finished()} of {trials} trials finished")
        attempts = 0
        while finished() < trials and attempts < 2 * trials:  # a failed trial is replaced, within reason
            study.optimize(self.objective, n_trials=1)
            attempts += 1
            last = study.trials[-1]
            log(f"trial {last.number}: {last.state.name} {last.value if last.value is not None else ''} {last.params}")
        return study


def summary(study: optuna.Study) -> str:
    """Trials by validation error (the test error is not shown: it chooses nothing)."""
    done = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    keys = sorted({k for t in done for k in t.params})
    rows = ["| trial | val error | " + " | ".join(keys) + " | steps | s/step |",
            "|---|---|" + "---|" * len(keys) + "---|---|"]
    for t in done:
        values = [f"{t.params[k]:.3g}" if isinstance(t.params[k], float) else str(t.params[k]) for k in keys]
        rows.append(f"| {t.number} | {t.value:.4g} | " + " | ".join(values)
                    + f" | {t.user_attrs.get('steps')} | {t.user_attrs.get('seconds_per_step')} |")
    failed = sum(t.state != optuna.trial.TrialState.COMPLETE for t in study.trials)
    return "\n".join(rows) + (f"\n\n{failed} trial(s) failed or pruned" if failed else "")
