"""Time budgets: how many fine-tuning steps fit in what is left of a run's wall clock.

``budget=cpu`` gives a whole run (data, alignment, fine-tuning, evaluation) ``budget_s``
seconds. Before fine-tuning starts, :func:`calibrate` times a few real optimiser steps and
evaluation batches on a copy of the training state (the model's weights and every random
generator are restored afterwards, so a calibrated run and a run given the same
``finetune.max_steps`` train identically), and :func:`plan_steps` turns the seconds left
into a step count. The learning-rate schedule is then defined over exactly those steps.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import DataLoader

from orca.errors import ConfigError

CALIBRATION_STEPS = 6  # the first is a warm-up and not counted
STEP_OVERHEAD = 1.1  # margin for Lightning's own work per step (logging, closures); digits: fit took 1.02x the calibrated steps
CHECKPOINT_S = 1.5  # saving the best and last checkpoints after a validation (MiniLM: 2 x 90 MB)
MARGIN_S = 5.0  # slack for a noisy machine; Lightning's max_time stops a run that overruns anyway


@dataclass
class Calibration:
    step_s: float  # one optimiser step (all accumulated batches), data loading included
    eval_sample_s: float  # one sample through the model without gradients


@dataclass
class StepPlan:
    max_steps: int
    val_every: int  # optimiser steps between validations
    calibration: Calibration | None
    seconds_left: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(module, loader: DataLoader, accumulate: int, eval_batch: torch.Tensor) -> Calibration:
    """Time CALIBRATION_STEPS real steps of `module` (a FinetuneStage: its ``loss`` and its
    optimiser) and two evaluation batches; the module's weights and all random state are
    restored afterwards."""
    state = copy.deepcopy(module.state_dict())
    optimizer = module.make_optimizer()
    times = []
    with torch.random.fork_rng():
        batches = iter(loader)
        for _ in range(CALIBRATION_STEPS):
            t0 = time.perf_counter()
            for _ in range(accumulate):
                try:
                    batch = next(batches)
                except StopIteration:
                    batches = iter(loader)
                    batch = next(batches)
                module.loss(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        eval_times = []
        with torch.no_grad():
            for _ in range(2):
                t0 = time.perf_counter()
                module.model(eval_batch)
                eval_times.append(time.perf_counter() - t0)
    module.load_state_dict(state)
    return Calibration(step_s=statistics.median(times[1:]), eval_sample_s=min(eval_times) / len(eval_batch))


def plan_steps(calibration: Calibration, seconds_left: float, val_samples: int, test_samples: int,
               num_validations: int) -> StepPlan:
    """The most steps, a multiple of `num_validations`, whose training, validations (with
    their checkpoints), final validation and test fit in `seconds_left`."""
    evaluation = calibration.eval_sample_s * (val_samples * (num_validations + 1) + test_samples)
    train_s = seconds_left - evaluation - num_validations * CHECKPOINT_S - MARGIN_S
    steps = int(train_s / (calibration.step_s * STEP_OVERHEAD)) // num_validations * num_validations
    if steps < num_validations:
        raise ConfigError(
            f"the time budget leaves {seconds_left:.0f} s for fine-tuning, too little for {num_validations} "
            f"steps at {calibration.step_s:.2f} s a step plus evaluation ({evaluation:.0f} s); raise budget_s, "
            "lower data.max_samples or embedder.target_len, or set finetune.max_steps"
        )
    return StepPlan(steps, steps // num_validations, calibration, round(seconds_left, 1))


def fixed_plan(max_steps: int, num_validations: int) -> StepPlan:
    """A user-given step count, validated `num_validations` times (the last time at the end
    when they divide it)."""
    return StepPlan(max_steps, max(1, math.ceil(max_steps / num_validations)), None, None)
