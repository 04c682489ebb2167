"""The task model: embedder -> body -> head."""
from __future__ import annotations

import torch
from torch import nn

from orca.adapters import is_adapter_parameter
from orca.bodies import Body


class OrcaModel(nn.Module):
    def __init__(self, embedder: nn.Module, body: Body, head: nn.Module):
        super().__init__()
        self.embedder, self.body, self.head = embedder, body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embedder(x)  # (B, *input) -> (B, N, D)
        return self.head(self.body(tokens, self.embedder.grid))  # -> (B, N', D') -> task output

    def set_trainable(self, mode: str) -> None:
        """"all": everything trains. "fpt": embedder (input layer, positions), the body's
        layer norms and the head train; attention and MLP weights stay frozen. "probe":
        the body is frozen."""
        self.requires_grad_(True)
        if mode in ("fpt", "probe"):
            self.body.requires_grad_(False)
        if mode == "fpt":
            for p in self.body.layer_norm_parameters():
                p.requires_grad_(True)

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """{"pretrained": the body's own weights, "new": embedder, head and any adapters in
        the body}, trainable or not (a frozen body may be unfrozen later: LP-FT)."""
        adapters = [p for n, p in self.body.named_parameters() if is_adapter_parameter(n)]
        pretrained = [p for n, p in self.body.named_parameters() if not is_adapter_parameter(n)]
        return {"pretrained": pretrained,
                "new": [*self.embedder.parameters(), *self.head.parameters(), *adapters]}

    def parameter_counts(self) -> dict[str, int]:
        return {"total": sum(p.numel() for p in self.parameters()),
                "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad)}
