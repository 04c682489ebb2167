"""Benchmark: how far a time-budgeted run's first real steps stray from its calibration on
this machine, as it is now (quiet or shared), to size orca/budget.py's REPLAN_BAND.

    python scripts/bench_plan_noise.py [--body minilm] [--repeats 8]

Each repeat, on digits (4 tokens, batch 32, as the README's main command): calibrate
(orca/budget.py: one warm-up step, then rounds whose fastest median counts), then a real
Lightning fit of CHECK_STEPS steps timed as PlanCheck times them. Prints, per repeat, the
calibrated step, the single median the calibration used before rounds (all its steps), the
real steps' median and their ratio to the step the plan allows (x STEP_OVERHEAD); then the
spread (max / min) of each over the repeats and the ratio's range.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import lightning as L  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from orca import budget  # noqa: E402
from orca.bodies import load_body  # noqa: E402
from orca.embedders import create_embedder  # noqa: E402
from orca.heads import create_head  # noqa: E402
from orca.model import OrcaModel  # noqa: E402
from orca.stages import FinetuneStage  # noqa: E402
from orca.tasks import create_task  # noqa: E402


class StepTimes(L.Callback):
    """perf_counter at the end of each optimiser step."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--body", default="minilm")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    task = create_task("digits")
    splits = task.load("unused", max_samples={"train": None, "val": 1000, "test": 5000})
    body = load_body(args.body).body
    model = OrcaModel(create_embedder("patch2d", task.input_shape, body, target_len=4), body,
                      create_head("pooled", body.output_size, task.num_outputs))
    module = FinetuneStage(model, task, {"name": "adamw", "lr": 1e-4}, warmup_frac=0.1, new_lr=1e-3)
    loader = DataLoader(splits.train, batch_size=32, shuffle=True)
    rows, time_steps = [], budget.time_steps
    for repeat in range(args.repeats):
        times: list[float] = []  # the calibration's own step times, for the single-median column

        def recorded(*args):
            times.extend(time_steps(*args))
            return times

        budget.time_steps = recorded
        try:
            calibration = budget.calibrate(module, loader, 1, splits.val.tensors[0][:128])
        finally:
            budget.time_steps = time_steps
        steps = StepTimes()
        L.Trainer(max_steps=budget.CHECK_STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                  callbacks=[steps]).fit(module, loader)
        real = statistics.median(b - a for a, b in zip(steps.ends, steps.ends[1:]))
        rows.append((calibration.step_s, statistics.median(times[1:]), real, real / calibration.fit_step_s))
        print(f"repeat {repeat}: calibrated {rows[-1][0]:.4f} s (one median: {rows[-1][1]:.4f}), "
              f"real steps {real:.4f} s, real / plan {rows[-1][3]:.3f}", flush=True)
    for i, name in enumerate(("calibrated (best round)", "calibrated (one median)", "real steps")):
        values = [r[i] for r in rows]
        print(f"{name}: spread max/min {max(values) / min(values):.3f}")
    ratios = [r[3] for r in rows]
    print(f"real / plan: {min(ratios):.3f} .. {max(ratios):.3f}, median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
