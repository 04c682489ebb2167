"""Lightning modules for stage 2 (align the embedder) and stage 3 (refine everything).

Each stage gets its own Trainer (see orca/pipeline.py).
"""
from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler

from orca.choices import ALIGN_SCHEDULES, OPTIMIZERS
from orca.errors import ConfigError, NonFiniteLossError
from orca.tasks import Task, predictions


def check_finite(loss: torch.Tensor, stage: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"non-finite loss ({loss.item()}) in stage {stage!r} at step {step}; lower the learning rate "
            "or check the inputs for NaN/inf"
        )


def class_losses(distance, feats: torch.Tensor, y: torch.Tensor) -> dict[int, torch.Tensor]:
    """{c: distance.loss(feats[y == c], y[y == c])} for every class c of y, from the
    distance's own batched `class_losses` where it has one (OTDD does)."""
    if hasattr(distance, "class_losses"):
        return distance.class_losses(feats, y)
    return {c: distance.loss(feats[y == c], y[y == c]) for c in torch.unique(y).tolist()}


class ClassBatchSampler(Sampler[list[int]]):
    """Each step draws up to `per_class` random indices of every class (seeded). With
    `batch`, ORCA's count instead (src/embedder.py: get_tgt_model): a class's shuffled
    batches of `batch` until they hold more than `per_class` samples, i.e.
    batch * (per_class // batch + 1) of them (PSICOV: 65 for 64 at batch 1; ECG: 132)."""

    def __init__(self, labels: torch.Tensor, per_class: int, steps: int, seed: int, batch: int | None = None):
        self.by_class = [np.flatnonzero(labels.numpy() == c) for c in torch.unique(labels).tolist()]
        self.per_class = per_class if batch is None else batch * (per_class // batch + 1)
        self.steps, self.seed = steps, seed

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.steps):
            yield np.concatenate([rng.permutation(idx)[: self.per_class] for idx in self.by_class]).tolist()

    def __len__(self) -> int:
        return self.steps


def step_decay(milestones: list[int], gamma: float, schedule: str):
    """The align stage's learning-rate factor at step s: gamma ** (milestones passed).
    "multistep" (torch's MultiStepLR) counts a milestone m from step m on; "orca" (ORCA's
    StepLR lambda, src/task_configs.py: get_scheduler) from step m + 1 on."""
    if schedule not in ALIGN_SCHEDULES:
        raise ConfigError(f"align.schedule={schedule!r}; known: {', '.join(ALIGN_SCHEDULES)}")
    after = 1 if schedule == "orca" else 0
    return lambda step: gamma ** sum(step >= m + after for m in milestones)


class AlignStage(L.LightningModule):
    """Trains only the embedder to bring mean-pooled embedded target data (with labels)
    close to the source data under `distance`: per step, one distance per target class on
    its sampled points, weighted by the class's frequency in the training split.
    `distance_seconds` collects each step's wall-clock seconds in the distance.

    The optimiser is Adam at `lr`, or `optimizer` ({name, weight_decay, momentum, betas};
    ORCA aligns with the task's own) at `lr`; the rate decays by `gamma` at the milestones
    (:func:`step_decay`)."""

    def __init__(self, embedder: torch.nn.Module, distance, class_weights: torch.Tensor,
                 lr: float, milestones: list[int], gamma: float = 0.2, optimizer: dict | None = None,
                 schedule: str = "multistep"):
        super().__init__()
        self.embedder, self.distance = embedder, distance
        self.class_weights = class_weights  # (C,) sums to 1
        self.lr, self.gamma = lr, gamma
        self.optimizer_options = None if optimizer is None else {k: v for k, v in optimizer.items() if k != "lr"}
        self.lr_factor = step_decay(list(milestones), gamma, schedule)
        self.distance_seconds: list[float] = []

    def training_step(self, batch, _):
        x, y = batch
        feats = self.embedder(x).mean(1)  # (B, D)
        start = time.perf_counter()
        loss = sum(self.class_weights[c] * value for c, value in class_losses(self.distance, feats, y).items())
        self.distance_seconds.append(time.perf_counter() - start)
        check_finite(loss, "align", self.global_step)
        self.log("align/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        params = self.embedder.parameters()
        opt = (torch.optim.Adam(params, lr=self.lr) if self.optimizer_options is None else
               build_optimizer(params, lr=self.lr, **self.optimizer_options))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def build_optimizer(params, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                    betas=(0.9, 0.98)) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ConfigError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


@dataclass
class OrcaLoop:
    """ORCA's fine-tuning loop (src/main.py: train_one_epoch; src/task_configs.py:
    get_scheduler "WarmupLR"), finetune.loop=orca (budget=paper, protocol=reference):

    - every micro-batch's loss is backpropagated as it is, so the gradients of `accumulate`
      micro-batches are summed (Lightning's accumulation divides each loss by it: averaged);
    - after every micro-batch the summed gradients are clipped to norm `clip` (if given);
    - the optimiser steps after every `accumulate`-th micro-batch of an epoch, and the
      gradients of an epoch's last incomplete accumulation are dropped;
    - the learning rate is stepped after every micro-batch: at micro-batch i (counted over
      the whole run) it is lr * i / W during the warm-up (W = warmup_epochs x micro-batches
      per epoch; 0 at the first), then lr * (T - i) / (T - W) (T = decay_epochs x
      micro-batches per epoch), which need not reach 0 before training ends.
    """

    accumulate: int
    batches_per_epoch: int  # micro-batches of one process
    warmup_epochs: float
    decay_epochs: float
    clip: float | None = None

    def __post_init__(self):
        if self.warmup_epochs is None or self.decay_epochs is None:
            raise ConfigError("finetune.loop=orca needs finetune.warmup_epochs and finetune.decay_epochs "
                              "(budget=paper and protocol=reference take them from the task's reference block)")
        if self.batches_per_epoch < self.accumulate:
            raise ConfigError(f"an epoch holds {self.batches_per_epoch} micro-batches, fewer than "
                              f"finetune.accumulate_grad_batches={self.accumulate}, so ORCA's loop (which drops an "
                              "epoch's incomplete accumulation) would never step: lower the accumulation or "
                              "finetune.batch_size")
        if not 0 <= self.warmup_epochs < self.decay_epochs:
            raise ConfigError(f"finetune.warmup_epochs={self.warmup_epochs} must be >= 0 and below "
                              f"finetune.decay_epochs={self.decay_epochs}")

    def lr_factor(self, i: int) -> float:
        warmup = int(self.warmup_epochs * self.batches_per_epoch)
        total = int(self.decay_epochs * self.batches_per_epoch)
        if warmup > 0 and i < warmup:
            return i / max(1.0, warmup)
        return (total - i) / (total - warmup)

    def step(self, module: L.LightningModule, loss: torch.Tensor) -> None:
        """One micro-batch of manual optimisation."""
        optimizer, scheduler = module.optimizers(), module.lr_schedulers()
        done = scheduler.last_epoch  # micro-batches before this one, over the run (restored on resume)
        module.manual_backward(loss)
        if self.clip:
            torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.grad is not None], self.clip)
        if (done % self.batches_per_epoch + 1) % self.accumulate == 0:
            optimizer.step()
            optimizer.zero_grad()
        with warnings.catch_warnings():  # ORCA steps the rate before the first accumulation is complete
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
            scheduler.step()


class FinetuneStage(L.LightningModule):
    """Trains the model on the task loss; validation and test metrics over whole splits,
    logged as ``val/<metric>`` and ``test/<metric>`` plus ``val/error`` (the paper's number).

    Parameter groups: the pretrained body at ``optimizer["lr"]``, the newly initialised
    embedder and head at `new_lr` (None: the same lr), and any adapters in the body at
    `adapter_lr` (None: new_lr).

    Two training loops. "lightning" (default): Lightning's automatic optimisation, micro-
    batch gradients averaged over the accumulation; the learning rate warms up linearly over
    `warmup_frac` of the steps, then decays linearly to 0 at the last step. "orca": ORCA's
    (:class:`OrcaLoop`), which sums them.
    """

    def __init__(self, model: torch.nn.Module, task: Task, optimizer: dict, warmup_frac: float,
                 new_lr: float | None = None, unfreezes_body: bool = False, adapter_lr: float | None = None):
        super().__init__()
        self.model, self.task, self.unfreezes_body = model, task, unfreezes_body
        self.optimizer_options, self.warmup_frac = dict(optimizer), warmup_frac
        self.new_lr, self.adapter_lr = new_lr, adapter_lr
        self.orca_loop: OrcaLoop | None = None
        self.val_metrics = task.metrics().clone(prefix="val/")
        self.test_metrics = task.metrics().clone(prefix="test/")
        for metric in (*self.val_metrics.values(), *self.test_metrics.values()):
            metric.sync_on_compute = False  # under DDP every process evaluates the whole split

    def use_loop(self, loop: OrcaLoop) -> None:
        """Train with ORCA's loop (set before fit, once the micro-batches per epoch are known)."""
        self.orca_loop, self.automatic_optimization = loop, False

    def forward(self, x):
        return self.model(x)

    def loss(self, batch) -> torch.Tensor:
        """Training loss of a batch, on the task's augmented inputs (an image's random crop and flip)."""
        x, y, *rest = batch  # then the task's extras: a dense task's mask, ECG's recording ids
        extras = self.task.extras(rest)
        return self.task.loss(self.model(self.task.augment(x, **extras)), y, extras.get("mask"))

    def training_step(self, batch, _):
        loss = self.loss(batch)
        check_finite(loss, "finetune", self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        if self.orca_loop is None:
            return loss
        self.orca_loop.step(self, loss)

    def on_train_epoch_start(self):
        if self.orca_loop is not None:  # ORCA drops the gradients of an epoch's last, incomplete accumulation
            self.optimizers().zero_grad()

    def _update(self, metrics, batch) -> torch.Tensor:
        x, y, *rest = batch  # each metric receives the extras it names (mask=..., groups=...)
        extras = self.task.extras(rest)
        outputs = self.model(self.task.augment_eval(x, **extras))
        metrics.update(outputs, y, **extras)
        return outputs

    def validation_step(self, batch, _):
        self._update(self.val_metrics, batch)

    def on_test_epoch_start(self):
        self.test_predictions: list[torch.Tensor] = []

    def test_step(self, batch, _):  # the test split's predictions are kept (predictions/test.npy)
        outputs = self._update(self.test_metrics, batch)
        self.test_predictions.append(predictions(outputs, self.task.output_kind).float().cpu())

    def _log_split(self, metrics, prefix: str) -> None:
        values = {k.removeprefix(prefix): float(v) for k, v in metrics.compute().items()}
        metrics.reset()
        values = self.task.scores(values)
        self.log_dict({f"{prefix}{k}": v for k, v in values.items()}, prog_bar=prefix == "val/")

    def on_validation_epoch_end(self):
        self._log_split(self.val_metrics, "val/")

    def on_test_epoch_end(self):
        self._log_split(self.test_metrics, "test/")

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The body's own weights at lr; the embedder and head at new_lr; adapters at
        adapter_lr. Frozen parameters join only if they may train later (LP-FT unfreezes the body)."""
        options = dict(self.optimizer_options)
        lr = options.pop("lr")
        groups = self.model.parameter_groups()
        body = [p for p in groups["pretrained"] if p.requires_grad or self.unfreezes_body]
        new = [p for p in groups["new"] if p.requires_grad]
        adapters = [p for p in groups["adapters"] if p.requires_grad]
        new_lr = self.new_lr or lr
        groups = [{"params": body, "lr": lr, "name": "body"},
                  {"params": new, "lr": new_lr, "name": "embedder+head"},
                  {"params": adapters, "lr": self.adapter_lr or new_lr, "name": "adapters"}]
        return build_optimizer([g for g in groups if g["params"]], lr=lr, **options)

    def configure_optimizers(self):
        opt = self.make_optimizer()
        if self.orca_loop is not None:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, self.orca_loop.lr_factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_frac * total)

        def linear_warmup_decay(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class LinearProbeFirst(L.Callback):
    """LP-FT: the body stays frozen for the first `frac` of the optimizer steps (a linear
    probe of embedder and head), then everything trains. Set from the step counter before
    every batch, so a resumed run is in the same phase."""

    def __init__(self, body: torch.nn.Module, frac: float):
        self.body, self.frac, self.probe_steps = body, frac, 0

    def on_train_start(self, trainer, pl_module):
        if trainer.world_size > 1:
            raise ConfigError("LP-FT (method.probe_frac) changes what trains mid-run, which DDP does not "
                              "allow yet; run it in one process")
        self.probe_steps = int(self.frac * trainer.estimated_stepping_batches)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.body.requires_grad_(trainer.global_step >= self.probe_steps)
