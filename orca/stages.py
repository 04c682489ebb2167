"""Lightning modules for stage 2 (align the embedder) and stage 3 (refine everything).

Each stage gets its own Trainer (see orca/pipeline.py).
"""
from __future__ import annotations

import time

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler

from orca.errors import ConfigError, NonFiniteLossError
from orca.tasks import Task, predictions

OPTIMIZERS = ("adamw", "adam", "sgd")


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
    """Each step draws up to `per_class` random indices of every class (seeded)."""

    def __init__(self, labels: torch.Tensor, per_class: int, steps: int, seed: int):
        self.by_class = [np.flatnonzero(labels.numpy() == c) for c in torch.unique(labels).tolist()]
        self.per_class, self.steps, self.seed = per_class, steps, seed

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.steps):
            yield np.concatenate([rng.permutation(idx)[: self.per_class] for idx in self.by_class]).tolist()

    def __len__(self) -> int:
        return self.steps


class AlignStage(L.LightningModule):
    """Trains only the embedder to bring mean-pooled embedded target data (with labels)
    close to the source data under `distance`: per step, one distance per target class on
    its sampled points, weighted by the class's frequency in the training split.
    `distance_seconds` collects each step's wall-clock seconds in the distance."""

    def __init__(self, embedder: torch.nn.Module, distance, class_weights: torch.Tensor,
                 lr: float, milestones: list[int], gamma: float = 0.2):
        super().__init__()
        self.embedder, self.distance = embedder, distance
        self.class_weights = class_weights  # (C,) sums to 1
        self.lr, self.milestones, self.gamma = lr, list(milestones), gamma
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
        opt = torch.optim.Adam(self.embedder.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, self.milestones, self.gamma)
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


class FinetuneStage(L.LightningModule):
    """Trains the model on the task loss; validation and test metrics over whole splits,
    logged as ``val/<metric>`` and ``test/<metric>`` plus ``val/error`` (the paper's number).

    Parameter groups: the pretrained body at ``optimizer["lr"]``, the newly initialised
    embedder and head at `new_lr` (None: the same lr), and any adapters in the body at
    `adapter_lr` (None: new_lr). The learning rate warms up linearly over `warmup_frac` of
    the steps, then decays linearly to 0 at the last step.
    """

    def __init__(self, model: torch.nn.Module, task: Task, optimizer: dict, warmup_frac: float,
                 new_lr: float | None = None, unfreezes_body: bool = False, adapter_lr: float | None = None):
        super().__init__()
        self.model, self.task, self.unfreezes_body = model, task, unfreezes_body
        self.optimizer_options, self.warmup_frac = dict(optimizer), warmup_frac
        self.new_lr, self.adapter_lr = new_lr, adapter_lr
        self.val_metrics = task.metrics().clone(prefix="val/")
        self.test_metrics = task.metrics().clone(prefix="test/")
        for metric in (*self.val_metrics.values(), *self.test_metrics.values()):
            metric.sync_on_compute = False  # under DDP every process evaluates the whole split

    def forward(self, x):
        return self.model(x)

    def loss(self, batch) -> torch.Tensor:
        """Training loss of a batch, on the task's augmented inputs (an image's random crop and flip)."""
        x, y, *rest = batch  # then the task's extras: a dense task's mask, ECG's recording ids
        return self.task.loss(self.model(self.task.augment(x)), y, self.task.extras(rest).get("mask"))

    def training_step(self, batch, _):
        loss = self.loss(batch)
        check_finite(loss, "finetune", self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _update(self, metrics, batch) -> torch.Tensor:
        x, y, *rest = batch  # each metric receives the extras it names (mask=..., groups=...)
        outputs = self.model(x)
        metrics.update(outputs, y, **self.task.extras(rest))
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
        values["error"] = self.task.error(values)
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
