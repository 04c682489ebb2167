"""Heads (ORCA's "predictors"): body output (B, N, D) -> task output."""
from __future__ import annotations

import torch
from torch import nn

from orca.errors import ConfigError
from orca.registry import HEADS

POOLS = ("mean", "last")


@HEADS.register("pooled")
class PooledHead(nn.Module):
    """Pool over tokens (mean: ORCA; last token: FPT), then Linear(D, K) -> (B, K) logits."""

    def __init__(self, hidden_size: int, num_outputs: int, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"unknown pooling {pool!r}; known: {', '.join(POOLS)}")
        self.pool = pool
        self.linear = nn.Linear(hidden_size, num_outputs)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        pooled = hidden.mean(1) if self.pool == "mean" else hidden[:, -1]
        return self.linear(pooled)


def create_head(name: str, hidden_size: int, num_outputs: int, **options) -> nn.Module:
    return HEADS.get(name)(hidden_size, num_outputs, **options)
