"""A plugin for the resume test (``plugins=[kill_switch]``, tests/ on PYTHONPATH): the process
kills itself with SIGKILL, as a scheduler or an out-of-memory killer would, at the point
named in ORCA_KILL_AT: ``data``, ``align:<step>``, ``finetune:<step>`` or ``test``. Without
the variable it kills nothing, so that the resumed and the reference runs share a config.

It also gives every task a random augmentation (Gaussian noise on training batches, from
torch's global generator), so that the test sees the augmentation replayed after a resume."""
import os
import signal

import torch

from orca.stages import AlignStage, FinetuneStage
from orca.tasks import Task


def _noisy(self, x: torch.Tensor) -> torch.Tensor:
    return x + 0.5 * torch.randn_like(x)


Task.augment = _noisy


def _kill_before(cls, method: str, when) -> None:
    original = getattr(cls, method)

    def wrapped(self, *args, **kwargs):
        if when(self):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    setattr(cls, method, wrapped)


stage, _, step = os.environ.get("ORCA_KILL_AT", "").partition(":")
if stage == "data":
    _kill_before(Task, "load", lambda task: True)
elif stage == "align":
    _kill_before(AlignStage, "training_step", lambda module: module.global_step == int(step))
elif stage == "finetune":
    _kill_before(FinetuneStage, "training_step", lambda module: module.global_step == int(step))
elif stage == "test":
    _kill_before(FinetuneStage, "test_step", lambda module: True)
