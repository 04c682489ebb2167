"""Methods as small validated configs (one per ``configs/method/*.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass

from orca.errors import ConfigError

TRAINABLE = ("all", "fpt")
MODELS = ("transformer", "classical")


@dataclass
class MethodConfig:
    """What a method changes about the shared three-stage pipeline.

    name: label in the run record.
    align: run stage 2 (embedder alignment) before fine-tuning.
    pretrained: load the body's pretrained weights (False: random init, same architecture).
    trainable: "all" (embedder, body, head) or "fpt" (embedder, body layer norms, positions,
        head; attention and MLP frozen).
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

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"method.model={self.model!r}; known: {', '.join(MODELS)}")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"method.trainable={self.trainable!r}; known: {', '.join(TRAINABLE)}")
        if self.align and not self.pretrained:
            raise ConfigError(f"method {self.name!r}: aligning to a randomly initialised body is meaningless; "
                              "set method.align=false or method.pretrained=true")
