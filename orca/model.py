"""The task model: embedder -> body -> head, and its architecture as plain data.

An architecture (``architecture(...)``, kept in every run's record as ``model``) is all it
takes to rebuild the model without Hydra or the hub: the body's transformers config, the
embedder's and head's names and options, any adapter, and the task's input and output
shapes. ``build_model(loaded_body, arch)`` assembles the model; with the weights of a run's
checkpoint or an export (orca/export.py) it is the trained model.
"""
from __future__ import annotations

import torch
from torch import nn

from orca.adapters import add_peft, is_adapter_parameter
from orca.bodies import Body, LoadedBody
from orca.embedders import create_embedder
from orca.heads import create_head


class OrcaModel(nn.Module):
    def __init__(self, embedder: nn.Module, body: Body, head: nn.Module):
        super().__init__()
        self.embedder, self.body, self.head = embedder, body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embedder(x)  # (B, *input) -> (B, N, D)
        return self.head(self.body(tokens, self.embedder.grid))  # -> (B, N', D') -> task output

    def set_trainable(self, mode: str, train_last_k: int | None = None) -> None:
        """"all": everything trains. "fpt": embedder (input layer, positions), the body's
        layer norms and the head train; attention and MLP weights stay frozen. "probe":
        the body is frozen. `train_last_k` (with "all"): of the body, only its last k
        blocks and what runs after them train (partial fine-tuning)."""
        self.requires_grad_(True)
        if mode in ("fpt", "probe") or train_last_k:
            self.body.requires_grad_(False)
        if mode == "fpt":
            for p in self.body.layer_norm_parameters():
                p.requires_grad_(True)
        if train_last_k:
            for p in self.body.last_blocks_parameters(train_last_k):
                p.requires_grad_(True)

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """{"pretrained": the body's own weights, "new": embedder and head, "adapters": any
        adapters in the body}, trainable or not (a frozen body may be unfrozen later: LP-FT)."""
        adapters = [p for n, p in self.body.named_parameters() if is_adapter_parameter(n)]
        pretrained = [p for n, p in self.body.named_parameters() if not is_adapter_parameter(n)]
        return {"pretrained": pretrained, "new": [*self.embedder.parameters(), *self.head.parameters()],
                "adapters": adapters}

    def parameter_counts(self) -> dict[str, int]:
        return {"total": sum(p.numel() for p in self.parameters()),
                "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad)}


def architecture(task, loaded: LoadedBody, embedder: tuple[str, dict], head: tuple[str, dict],
                 peft: dict | None = None) -> dict:
    """The model's architecture as JSON-able data (see the module docstring)."""
    output_shape = getattr(task, "output_shape", None)
    return {"input_shape": list(task.input_shape), "num_outputs": int(task.num_outputs),
            "output_kind": task.output_kind, "output_shape": list(output_shape) if output_shape else None,
            "task": task.name, "embedder": {"name": embedder[0], **embedder[1]},
            "head": {"name": head[0], **head[1]}, "peft": peft,
            "body": {"key": loaded.key, "config": loaded.body.model.config.to_dict()}}


def build_model(loaded: LoadedBody, arch: dict) -> OrcaModel:
    """embedder -> `loaded`'s body -> head as `arch` describes them (adapters included)."""
    embedder_options = {k: v for k, v in arch["embedder"].items() if k != "name"}
    embedder = create_embedder(arch["embedder"]["name"], tuple(arch["input_shape"]), loaded.body, **embedder_options)
    head_options = {k: v for k, v in arch["head"].items() if k != "name"}
    output_shape = tuple(arch["output_shape"]) if arch["output_shape"] else None
    head = create_head(arch["head"]["name"], loaded.body.output_size, arch["num_outputs"],
                       grid=loaded.body.output_grid(embedder.grid), output_shape=output_shape, **head_options)
    model = OrcaModel(embedder, loaded.body, head)
    if arch.get("peft"):
        add_peft(loaded, arch["peft"])
    return model
