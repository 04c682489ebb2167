"""What a fine-tuning checkpoint holds beyond Lightning's own state, so that a run killed at
any point and restarted in its folder ends with the same record as an uninterrupted one.

Lightning restores weights, optimiser, schedule, step counters and callbacks. Two things it
leaves to us:

- the data order: :class:`EpochSampler` draws each epoch's order from (seed, epoch) alone,
  and after a resume skips the batches the interrupted run had trained on;
- the random state of dropout and of a task's augmentation (``Task.augment``):
  :class:`ExactResume` saves the torch generator's state with every checkpoint and restores
  it with the checkpoint. The training loader has its own generator, so that starting its
  pass again after a resume draws nothing from torch's.

The align stage needs neither: it is restarted from its beginning with the same seed (its
checkpoint is written when it ends), and the pipeline reseeds before each stage.
:class:`SaveTimes` keeps the run's stage times on disk as it trains, so that the record can
sum them over attempts. Under DDP, :meth:`EpochSampler.shard` gives each process its share.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """A random order of n samples per epoch, drawn from (seed, epoch): Lightning calls
    set_epoch before each epoch, as for a DistributedSampler.

    With `shard(rank, world)`, a process takes every world-th sample of the order (the tail
    cut to a multiple of world), in batches of batch_size / world: the processes' batches of
    a step together are the single process's batch of that step.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed  # batch_size: over all processes
        self.epoch, self.rank, self.world = 0, 0, 1
        self.resume_at: int | None = None  # batches trained before the resume, over all epochs

    def shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self) / (self.batch_size // self.world))

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        if self.resume_at is not None:  # skip what this epoch had trained on (all of it, for an earlier epoch)
            done = self.resume_at - self.epoch * self.batches_per_epoch()
            order = order[max(0, done) * self.batch_size:]
            if done < self.batches_per_epoch():
                self.resume_at = None
        if self.world > 1:
            order = order[: len(order) - len(order) % self.world][self.rank::self.world]
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.n // self.world


class ExactResume(L.Callback):
    """Saves the torch random state and the number of training batches done with each
    checkpoint and, when a checkpoint is loaded, restores the one and tells the sampler the
    other (ORCA's loop, finetune.loop=orca, drops an epoch's last incomplete accumulation,
    so optimizer steps x accumulation need not be it)."""

    KEY = "orca_exact_resume"

    def __init__(self, sampler: EpochSampler):
        self.sampler = sampler
        self.start_step = 0  # the step this attempt started from
        self.batches = 0  # training batches done, over all attempts

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[self.KEY] = {"torch_rng_state": torch.get_rng_state(), "batches": self.batches}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint[self.KEY]
        torch.set_rng_state(state["torch_rng_state"])
        self.batches = self.sampler.resume_at = state["batches"]


class SaveTimes(L.Callback):
    """Writes the run's stage times (orca/record.py: StageTimer) every `every_s` seconds of
    training, so that an attempt killed mid-stage still counts, to within that."""

    def __init__(self, save: Callable[[], None], every_s: float = 5.0):
        self.save, self.every_s, self.last = save, every_s, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if time.perf_counter() - self.last >= self.every_s:
            self.save()
            self.last = time.perf_counter()
