"""Benchmark: what the paper's table costs.

For each of the ten NAS-Bench-360 tasks of the `nb360` suite (scripts/reproduce_table.py
--suite nb360), at ORCA's paper configuration (`budget=paper`, the suite's body: RoBERTa-base
for 1D tasks, Swin-base for 2D tasks), this builds the model a run would train with the
framework's own code (embedder -> body -> head, body with random weights from its
transformers config: nothing is downloaded), and times fine-tuning steps on random inputs of
the paper's micro-batch shape: forward, the task's loss, backward (one timing), then
gradient clipping where configured and the paper's optimizer step (another). From the median
of those it estimates the device-hours of one run and of the suite (4 methods x 3 seeds),
and prints every assumption under the table.

    python scripts/bench_paper.py                                # all ten tasks, CPU (slow; see below)
    python scripts/bench_paper.py --tasks ecg satellite --steps 2
    python scripts/bench_paper.py --tasks ninapro --batch 4       # a quick check, not the paper's shape
    python scripts/bench_paper.py --device cuda                   # on a GPU

fp32 throughout. On a shared or busy machine the times are upper bounds. Memory on a CPU: a
Swin-base step at micro-batch 4 peaked at 3.4 GB resident, so the 2D tasks at micro-batch 32
(cifar100, spherical, ninapro, fsd50k) need roughly 15-20 GB.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from orca.bodies import LoadedBody, wrap_hf_model, wrap_swin_model  # noqa: E402
from orca.methods import MethodConfig  # noqa: E402
from orca.model import OrcaModel, build_model  # noqa: E402
from orca.pipeline import model_architecture, node_options  # noqa: E402
from orca.record import machine, machine_text  # noqa: E402
from orca.stages import FinetuneStage  # noqa: E402
from orca.sweep import SUITES  # noqa: E402
from orca.tasks import Task, create_task  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SUITE = SUITES["nb360"]
METHODS_X_SEEDS = len(SUITE.methods) * len(SUITE.seeds)  # 4 x 3 = 12 runs a task

def roberta_base() -> LoadedBody:
    """RoBERTa-base's architecture (its config.json: 12 layers, hidden 768, 514 positions), random weights."""
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
    return wrap_hf_model(RobertaModel(config), "roberta-base:random")


def swin_base() -> LoadedBody:
    """Swin-base in22k's architecture (patch 4, window 7, 224 px, embed 128, depths 2-2-18-2), random weights."""
    from transformers import SwinConfig, SwinModel

    config = SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=7,
                        image_size=224, patch_size=4)
    return wrap_swin_model(SwinModel(config, add_pooling_layer=False), "swin-base:random")


def roberta_tiny() -> LoadedBody:
    """2 layers of width 32 (--tiny: checks the script, measures nothing)."""
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=514)
    return wrap_hf_model(RobertaModel(config), "roberta-tiny:random")


def swin_tiny() -> LoadedBody:
    """2 stages of width 16 on 32 px images (--tiny)."""
    from transformers import SwinConfig, SwinModel

    config = SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, image_size=32, patch_size=4)
    return wrap_swin_model(SwinModel(config, add_pooling_layer=False), "swin-tiny:random")


BODIES = {"roberta-base": roberta_base, "swin-base": swin_base}
TINY_BODIES = {"roberta-base": roberta_tiny, "swin-base": swin_tiny}


@dataclass
class Result:
    task: str
    body: str
    batch: int
    accumulate: int
    input_shape: tuple[int, ...]
    grid: tuple[int, ...]        # the embedder's token grid
    params_m: float              # parameters of embedder + body + head, millions
    step_s: float                # median s of fwd + bwd + optimizer step, one micro-batch
    fwd_bwd_s: float             # median s of fwd + loss + bwd alone
    opt_s: float                 # median s of clipping + optimizer step alone
    micro_batches: int | None    # per epoch; None: training-set size unknown
    epochs: int
    align_steps: int

    @property
    def run_hours(self) -> float | None:
        """Fine-tuning only: every micro-batch's fwd + bwd, one optimizer step per `accumulate`."""
        if self.micro_batches is None:
            return None
        opt_steps = math.ceil(self.micro_batches / self.accumulate)
        return self.epochs * (self.micro_batches * self.fwd_bwd_s + opt_steps * self.opt_s) / 3600


def paper_config(task: str):
    """The composed run config of `task` in the nb360 suite (method orca, budget paper, its body)."""
    overrides = [f"task={task}", "method=orca", f"budget={SUITE.budget}", *SUITE.task_overrides.get(task, ()),
                 "paths.run_dir=unused"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=overrides)


def build(cfg, tiny: bool) -> tuple[Task, OrcaModel, FinetuneStage]:
    """Task, model and fine-tuning module as orca/pipeline.py builds them, with a random body."""
    task = create_task(cfg.task.name, **node_options(cfg.task))
    method = MethodConfig(**node_options(cfg.method, drop=()))
    loaded = (TINY_BODIES if tiny else BODIES)[cfg.body.name]()
    _, arch = model_architecture(cfg, task, loaded, method)
    model = build_model(loaded, arch)
    model.train()
    model.set_trainable(method.trainable)
    f = cfg.finetune
    module = FinetuneStage(model, task, optimizer=f.optimizer, warmup_frac=f.warmup_frac, new_lr=f.new_lr)
    return task, model, module


def random_batch(task: Task, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(inputs (B, *input_shape), targets, [mask]) of the task's kinds, random."""
    x = torch.randn(batch, *task.input_shape)
    if task.output_kind == "classes":
        y = torch.randint(task.num_outputs, (batch,))  # (B,) class indices
    elif task.output_kind == "multilabel":
        y = torch.randint(2, (batch, task.num_outputs)).float()  # (B, K) 0/1
    else:
        y = torch.rand(batch, *task.output_shape)  # (B, H, W) field
    masked = task.output_kind == "dense" and "mask" in task.extra_names
    extras = [torch.ones_like(y, dtype=torch.bool)] if masked else []  # (B, H, W) every entry counts
    return tuple(t.to(device) for t in (x, y, *extras))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(module: FinetuneStage, batch, steps: int, clip: float | None,
               device: torch.device) -> tuple[float, float, float]:
    """Median s of (fwd + bwd + optimizer step), of (fwd + bwd) and of (clip + optimizer step)
    over `steps` micro-batch steps, after one warm-up step (which also allocates the optimizer state)."""
    optimizer = module.make_optimizer()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    totals, fwd_bwds, opts = [], [], []
    for i in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        module.loss(batch).backward()
        sync(device)
        middle = time.perf_counter()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        end = time.perf_counter()
        if i:  # step 0 is the warm-up
            totals.append(end - start)
            fwd_bwds.append(middle - start)
            opts.append(end - middle)
    return statistics.median(totals), statistics.median(fwd_bwds), statistics.median(opts)


def bench_task(name: str, steps: int, batch: int | None, device: torch.device, tiny: bool) -> Result:
    cfg = paper_config(name)
    f = cfg.finetune
    micro = batch or f.batch_size
    torch.manual_seed(0)  # the same random body, inputs and targets on every call
    task, model, module = build(cfg, tiny)
    model.to(device)
    print(f"timing {name}: {cfg.body.name}{' (tiny)' if tiny else ''}, micro-batch {micro}, "
          f"{steps} steps after 1 warm-up ...", flush=True)
    step_s, fwd_bwd_s, opt_s = time_steps(module, random_batch(task, micro, device), steps, f.gradient_clip_val, device)
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB", flush=True)
        torch.cuda.reset_peak_memory_stats(device)
    n = cfg.reference.train_samples  # ORCA's training set (configs/task/<task>.yaml), or None
    return Result(task=name, body=cfg.body.name, batch=micro, accumulate=f.accumulate_grad_batches,
                  input_shape=tuple(task.input_shape), grid=tuple(model.embedder.grid),
                  params_m=model.parameter_counts()["total"] / 1e6, step_s=step_s, fwd_bwd_s=fwd_bwd_s, opt_s=opt_s,
                  micro_batches=None if n is None else math.ceil(n / micro), epochs=int(f.max_epochs),
                  align_steps=int(cfg.align.steps))


def hours_text(hours: float | None) -> str:
    return "unknown" if hours is None else f"{hours:,.1f}"


def table(results: list[Result]) -> str:
    header = ("task", "body", "batch x acc", "input -> tokens", "params M", "s/step", "opt s",
              "micro-b/epoch", "epochs", "h/run", f"h/suite (x{METHODS_X_SEEDS})")
    rows = [header]
    for r in results:
        shape = "x".join(map(str, r.input_shape)) + " -> " + "x".join(map(str, r.grid))
        run = r.run_hours
        rows.append((r.task, r.body, f"{r.batch} x {r.accumulate}", shape, f"{r.params_m:.1f}", f"{r.step_s:.3f}",
                     f"{r.opt_s:.3f}", "unknown" if r.micro_batches is None else f"{r.micro_batches:,}",
                     str(r.epochs), hours_text(run), hours_text(None if run is None else run * METHODS_X_SEEDS)))
    known = [r.run_hours for r in results if r.run_hours is not None]
    rows.append(("total", "", "", "", "", "", "", "", "", f"{sum(known):,.1f}",
                 f"{sum(known) * METHODS_X_SEEDS:,.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def assumptions(results: list[Result], batch: int | None, tiny: bool) -> list[str]:
    unknown = [r.task for r in results if r.micro_batches is None]
    by_steps: dict[int, list[str]] = {}
    for r in results:
        by_steps.setdefault(r.align_steps, []).append(r.task)
    align = "; ".join(f"{steps} steps: {', '.join(names)}" for steps, names in sorted(by_steps.items()))
    notes = [
        "s/step: median wall-clock s of one micro-batch step (forward, task loss, backward, clipping where "
        "configured, optimizer step) on random inputs, after 1 warm-up step; opt s: its clip + optimizer part.",
        "h/run: fine-tuning only = epochs x (micro-batches/epoch x fwd+bwd + ceil(micro-batches/acc) x opt s); "
        "validation and test passes, data loading, checkpoints and Lightning overhead are not timed.",
        "micro-batches/epoch = ceil(train samples / micro-batch); train samples: ORCA's training set "
        "(reference.train_samples in configs/task/<task>.yaml; train + validation, as protocol=reference trains).",
        f"h/suite = h/run x {len(SUITE.methods)} methods ({', '.join(SUITE.methods)}) x {len(SUITE.seeds)} seeds. "
        "finetune and scratch train this same model (same cost per step); fpt is assumed to cost the same "
        "per step (it freezes attention and MLP weights and, on 1D tasks, uses its own linear patch embedder, "
        "so this is an upper bound).",
        f"Not timed, not included: orca's align stage (the embedder alone, one OTDD per class a step; "
        f"align.steps at budget=paper: {align}).",
    ]
    if unknown:
        notes.append(f"Training-set size unknown, hours left out of the totals: {', '.join(unknown)}.")
    if batch:
        notes.append(f"--batch {batch}: micro-batch overridden, NOT the paper's shape; hours assume this micro-batch.")
    if tiny:
        notes.append("--tiny: bodies shrunk to a few layers; these numbers measure nothing.")
    return notes


def machine_line(device: torch.device) -> str:
    where = (f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "this CPU")
    return (f"CPU {machine_text(machine())}; torch {torch.__version__}; fp32; measured on {where}; "
            "GPU figures only where measured (--device cuda)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=SUITE.tasks, default=list(SUITE.tasks))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per task, after 1 warm-up (default 3)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, help="micro-batch in place of the paper's (a quick check)")
    parser.add_argument("--tiny", action="store_true", help="tiny bodies (for tests: measures nothing)")
    args = parser.parse_args(argv)
    if args.steps < 1 or (args.batch is not None and args.batch < 1):
        parser.error("--steps and --batch must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    device = torch.device(args.device)
    results = [bench_task(name, args.steps, args.batch, device, args.tiny) for name in args.tasks]
    print()
    print(table(results))
    for note in assumptions(results, args.batch, args.tiny):
        print(f"- {note}")
    print(machine_line(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
