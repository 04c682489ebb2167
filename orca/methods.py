"""Methods as small validated configs (one per ``configs/method/*.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass

from orca.choices import PEFT_NAMES, PEFT_OPTIONS
from orca.errors import ConfigError

TRAINABLE = ("all", "fpt", "probe")
MODELS = ("transformer", "classical")
_PEFT_COMMON = ("name", "lr")  # options of every adapter (lr: the optimiser's, orca/stages.py)


@dataclass
class MethodConfig:
    """What a method changes about the shared three-stage pipeline.

    name: label in the run record.
    align: run stage 2 (embedder alignment) before fine-tuning.
    pretrained: load the body's pretrained weights (False: random init, same architecture).
    trainable: "all" (embedder, body, head), "fpt" (embedder, body layer norms, positions,
        head; attention and MLP frozen) or "probe" (embedder and head; the body frozen).
    probe_frac: LP-FT (Kumar et al. 2022): the body stays frozen for this fraction of the
        fine-tuning steps, then everything trains (0: from the start).
    train_last_k: partial fine-tuning: only the body's last k blocks (and what runs after
        them) train with the embedder and head; None: trainable decides.
    peft: a parameter-efficient adapter on the body, e.g. {name: lora, r: 8, alpha: 16,
        dropout: 0.0, target_modules: null}; names and options in orca/adapters.py
        (lora, ia3, prompt, prefix, adapter). The body's own weights freeze.
    embedder: embedder name overriding the task's (FPT's linear patch layer), or None.
    head_pool: pooling overriding the head's ("last" for FPT), or None.
    model: "transformer" (embedder, body, head), or "classical" (scikit-learn on the
        flattened inputs, see orca/classical.py; the other fields do not apply).
    """

    name: str
    align: bool = False
    pretrained: bool = True
    trainable: str = "all"
    embedder: str | None = None
    head_pool: str | None = None
    model: str = "transformer"
    probe_frac: float = 0.0
    train_last_k: int | None = None
    peft: dict | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"method.model={self.model!r}; known: {', '.join(MODELS)}")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"method.trainable={self.trainable!r}; known: {', '.join(TRAINABLE)}")
        if not 0.0 <= self.probe_frac < 1.0:
            raise ConfigError(f"method.probe_frac={self.probe_frac}: the frozen-body share of the steps must be in [0, 1)")
        if self.probe_frac and (self.trainable != "all" or self.peft):
            raise ConfigError(f"method {self.name!r}: method.probe_frac unfreezes the whole body, so it needs "
                              "method.trainable=all and no method.peft")
        if self.train_last_k is not None:
            if self.train_last_k < 1:
                raise ConfigError(f"method.train_last_k={self.train_last_k}: give at least one block, or null")
            if self.trainable != "all" or self.peft or self.probe_frac:
                raise ConfigError(f"method {self.name!r}: method.train_last_k decides what trains in the body, so it "
                                  "needs method.trainable=all, no method.peft and no method.probe_frac")
        if self.peft is not None:
            self._check_peft()
        if self.align and not self.pretrained:
            raise ConfigError(f"method {self.name!r}: aligning to a randomly initialised body is meaningless; "
                              "set method.align=false or method.pretrained=true")

    def _check_peft(self):
        name = self.peft.get("name")
        if name not in PEFT_NAMES:
            raise ConfigError(f"method.peft.name={name!r}; known: {', '.join(PEFT_NAMES)}")
        own = PEFT_OPTIONS[name]
        for option, value in self.peft.items():
            if value is not None and option not in own + _PEFT_COMMON:
                users = [n for n, options in PEFT_OPTIONS.items() if option in options]
                raise ConfigError(f"method.peft.{option}={value!r} is an option of {' and '.join(users) or 'no adapter'}, "
                                  f"not of {name} (its options: {', '.join(own)}); remove it or set it to null")
        lr = self.peft.get("lr")
        if lr is not None and not lr > 0:
            raise ConfigError(f"method.peft.lr={lr}: the adapters' learning rate must be positive, "
                              "or null for finetune.new_lr")
        if self.trainable != "all":
            raise ConfigError(f"method {self.name!r}: an adapter (method.peft) decides what trains in the body; "
                              "set method.trainable=all")
