"""Time budgets: how many fine-tuning steps fit in what is left of a run's wall clock.

``budget=cpu`` gives a whole run (data, alignment, fine-tuning, evaluation) ``budget_s``
seconds. Before fine-tuning starts, :func:`calibrate` times a few real optimiser steps and
evaluation batches on a copy of the training state (the model's weights and every random
generator are restored afterwards, so a calibrated run and a run given the same
``finetune.max_steps`` train identically), and :func:`plan_steps` turns the seconds left
into a step count. The learning-rate schedule is then defined over exactly those steps.

A plan must not rest on one noisy moment. The calibration keeps the fastest of a few
rounds (:func:`best_of_rounds`); :class:`PlanCheck` times the first real steps of the fit
and, when they are slower or faster than the plan allows (REPLAN_BAND),
stops the fit before any validation and gives a plan for the time actually left
(:func:`check_plan`), which the caller trains from the start (the same weights and random
state): a re-planned run is again the run ``finetune.max_steps=N`` gives. A plan the first
steps supported is kept for the next run of the same command (orca/plan_cache.py).
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

from orca.errors import ConfigError

CALIBRATION_ROUNDS = 3  # rounds of STEPS_PER_ROUND steps after one warm-up step; the fastest round's median counts
STEPS_PER_ROUND = 3
STEP_OVERHEAD = 1.3  # a plan allows this x the calibrated step: Lightning's own work (logging, closures, hooks)
# and the machine's drift. The README's main command (digits, MiniLM, 2-core AMD EPYC) fitted at
# 0.131-0.151 s a step against a best-of-rounds calibration of 0.103 s (1.27-1.46x); with 1.1 its first
# run was cut off at the deadline after 413 of 515 steps
CHECKPOINT_S = 1.5  # saving the best and last checkpoints after a validation (MiniLM: 2 x 90 MB)
MARGIN_S = 5.0  # slack for a noisy machine; Lightning's max_time stops a run that overruns anyway
CHECK_STEPS = 8  # the fit's first optimiser steps timed against the plan (the first is a warm-up: 7 intervals)
MIN_CHECK_STEPS = 3  # the fewest steps a check times (2 intervals); a plan validating sooner goes unchecked, uncached
# Re-plan when the first real steps' median, over the step time the plan allows (calibrated x
# STEP_OVERHEAD), leaves the band of where the plan came from. A plan calibrated in this run is
# held to a narrow band above (a plan 15 % too slow overruns its deadline by that share of its
# steps, when the learning rate is still above zero) and a wider one below, as the first steps
# run faster than the fit's average: on a quiet 2-core AMD EPYC, scripts/bench_plan_noise.py
# (MiniLM, 6 repeats) read 0.73-0.86 (median 0.78), so 0.6 leaves them be while a calibration
# slowed by a burst (0.15-15.6 in the same script on a shared machine) is re-planned. A cached
# plan is the one the same command followed before: it is held to a wide band, so that the
# ordinary drift of a step's time between runs (the README's main command: 1.03 and 1.33 in two
# runs a minute apart) leaves the second run with the first one's steps.
REPLAN_BAND = {"calibrated": (0.6, 1.15), "cached": (0.5, 1.5)}


@dataclass
class Calibration:
    step_s: float  # one optimiser step (all accumulated batches), data loading included
    eval_sample_s: float  # one sample through the model without gradients

    @property
    def fit_step_s(self) -> float:
        """Seconds the plan allows a step of the fit."""
        return self.step_s * STEP_OVERHEAD


@dataclass
class StepPlan:
    max_steps: int
    val_every: int  # optimiser steps between validations
    calibration: Calibration | None
    seconds_left: float | None
    source: str = "finetune.max_steps"  # where the plan came from: calibrated, cached (...), re-planned at step k ...
    check: dict | None = None  # the first real steps against this plan (check_plan); None: not checked

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "StepPlan":
        calibration = saved.get("calibration")
        return cls(**{**saved, "calibration": Calibration(**calibration) if calibration else None})


def best_of_rounds(times: list[float], rounds: int) -> float:
    """The step time that repeated rounds agree the machine can give: `times` (s, in the
    order measured) cut into `rounds` equal rounds, the smallest of their medians. Another
    process's burst slows the round it falls in; it can only lengthen, never shorten, a step."""
    size = len(times) // rounds
    return min(statistics.median(times[i * size:(i + 1) * size]) for i in range(rounds))


def time_steps(module, loader: DataLoader, accumulate: int, steps: int) -> list[float]:
    """Seconds of each of `steps` optimiser steps of `module` (a FinetuneStage: its ``loss``
    and a fresh optimiser), data loading included; the weights change."""
    optimizer = module.make_optimizer()
    times = []
    batches = iter(loader)
    for _ in range(steps):
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
    return times


def calibrate(module, loader: DataLoader, accumulate: int, eval_batch: torch.Tensor) -> Calibration:
    """Time real steps of `module`: one warm-up, then CALIBRATION_ROUNDS rounds of
    STEPS_PER_ROUND (the best round counts), and two evaluation batches; the module's
    weights and all random state are restored afterwards."""
    state = copy.deepcopy(module.state_dict())
    with torch.random.fork_rng():
        times = time_steps(module, loader, accumulate, 1 + CALIBRATION_ROUNDS * STEPS_PER_ROUND)
        eval_times = []
        with torch.no_grad():
            for _ in range(2):
                t0 = time.perf_counter()
                module.model(eval_batch)
                eval_times.append(time.perf_counter() - t0)
    module.load_state_dict(state)
    return Calibration(step_s=best_of_rounds(times[1:], CALIBRATION_ROUNDS),
                       eval_sample_s=min(eval_times) / len(eval_batch))


def _evaluation_s(calibration: Calibration, val_samples: int, test_samples: int, num_validations: int) -> float:
    return calibration.eval_sample_s * (val_samples * (num_validations + 1) + test_samples)


def steps_that_fit(calibration: Calibration, seconds_left: float, val_samples: int, test_samples: int,
                   num_validations: int) -> int:
    """The most steps, a multiple of `num_validations` (possibly 0), whose training,
    validations (with their checkpoints), final validation and test fit in `seconds_left`."""
    evaluation = _evaluation_s(calibration, val_samples, test_samples, num_validations)
    train_s = seconds_left - evaluation - num_validations * CHECKPOINT_S - MARGIN_S
    return max(0, int(train_s / calibration.fit_step_s) // num_validations * num_validations)


def plan_steps(calibration: Calibration, seconds_left: float, val_samples: int, test_samples: int,
               num_validations: int) -> StepPlan:
    """The plan of :func:`steps_that_fit`, validated every max_steps / num_validations steps."""
    steps = steps_that_fit(calibration, seconds_left, val_samples, test_samples, num_validations)
    if steps < num_validations:
        evaluation = _evaluation_s(calibration, val_samples, test_samples, num_validations)
        raise ConfigError(
            f"the time budget leaves {seconds_left:.0f} s for fine-tuning, too little for {num_validations} "
            f"steps at {calibration.step_s:.2f} s a step plus evaluation ({evaluation:.0f} s); raise budget_s, "
            "lower data.max_samples or embedder.target_len, or set finetune.max_steps"
        )
    return StepPlan(steps, steps // num_validations, calibration, round(seconds_left, 1), source="calibrated")


def fixed_plan(max_steps: int, num_validations: int) -> StepPlan:
    """A user-given step count, validated `num_validations` times (the last time at the end
    when they divide it)."""
    return StepPlan(max_steps, max(1, math.ceil(max_steps / num_validations)), None, None)


def check_step(plan: StepPlan) -> int | None:
    """The optimiser step at which :class:`PlanCheck` compares the plan with the real steps:
    CHECK_STEPS, or earlier for a plan that validates sooner (the check must come before
    any validation, so that a re-plan leaves no checkpoint); None: too soon to time."""
    step = min(CHECK_STEPS, plan.val_every - 1)
    return step if step >= MIN_CHECK_STEPS else None


def check_plan(plan: StepPlan, measured_step_s: float, at_step: int, seconds_left: float, val_samples: int,
               test_samples: int, num_validations: int) -> StepPlan:
    """`plan`, marked confirmed, when the real steps' time `measured_step_s` is between
    the REPLAN_BAND of the plan's source times what the plan allows; else a new plan from the real
    steps (measured as a calibration would be, with the same headroom) for `seconds_left`
    (the time left now, all of it for the new plan: the fit starts again from step 0), with
    what it replaces."""
    planned = plan.calibration.fit_step_s
    ratio = measured_step_s / planned
    check = {"at_step": at_step, "measured_step_s": round(measured_step_s, 5), "planned_step_s": round(planned, 5),
             "ratio": round(ratio, 3)}
    below, above = REPLAN_BAND["cached" if plan.source.startswith("cached") else "calibrated"]
    if below <= ratio <= above:
        return replace(plan, check={**check, "confirmed": True})
    measured = Calibration(step_s=measured_step_s, eval_sample_s=plan.calibration.eval_sample_s)
    steps = max(num_validations, steps_that_fit(measured, seconds_left, val_samples, test_samples, num_validations))
    replaced = {k: v for k, v in plan.to_dict().items() if k in ("max_steps", "val_every", "source", "calibration")}
    return StepPlan(steps, steps // num_validations, measured, round(seconds_left, 1),
                    source=f"re-planned at step {at_step}: measured {measured_step_s:.4g} s/step against {planned:.4g}",
                    check={**check, "confirmed": False, "replaced": replaced})


class PlanCheck(L.Callback):
    """Times the first `at_step` optimiser steps of a budgeted fit that starts at step 0 (end
    of one step to end of the next: data loading included, no validation yet) and takes
    the plan to follow from `decide(median step time, at_step)` (:func:`check_plan` for the
    time left); the first process's decision holds for all, and `keep(plan)` is called with
    it. A re-plan ends the fit at that step, before any validation or checkpoint: the caller
    trains again from the start with `plan`. `clock`: seconds (tests give their own)."""

    def __init__(self, at_step: int, decide: Callable[[float, int], StepPlan], keep: Callable[[StepPlan], None],
                 clock: Callable[[], float] = time.perf_counter):
        self.at_step, self.decide, self.keep, self.clock = at_step, decide, keep, clock
        self.ends: list[float] = []  # perf_counter (s) at the end of each optimiser step so far
        self.plan: StepPlan | None = None  # the decision, once made

    @property
    def replanned(self) -> bool:
        return self.plan is not None and not self.plan.check["confirmed"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.plan is not None or trainer.global_step == len(self.ends):
            return  # decided, or a micro-batch that ended no optimiser step
        self.ends.append(self.clock())
        if len(self.ends) < self.at_step:
            return
        step_s = statistics.median([b - a for a, b in zip(self.ends, self.ends[1:])])
        self.plan = trainer.strategy.broadcast(self.decide(step_s, trainer.global_step))
        self.keep(self.plan)
        if self.replanned:
            trainer.fit_loop.epoch_loop.max_steps = trainer.global_step  # stop here: no validation has run
            for checkpoint in trainer.checkpoint_callbacks:  # nor may a last.ckpt of this fit be resumed
                checkpoint.save_last = False
