"""Metrics that torchmetrics lacks, each accumulated over a whole split.

Every ``update`` takes ``(preds, target, mask=None)``; ``mask`` marks the entries that
count (a :class:`torchmetrics.MetricCollection` passes it only to metrics that accept it).
"""
from __future__ import annotations

import torch
import torchmetrics
from torchmetrics.classification import BinaryAUROC


class RelativeL2(torchmetrics.Metric):
    """Mean over samples of ||pred - target||_2 / ||target||_2 (each sample's field flattened)."""

    higher_is_better = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        diff = (preds - target).flatten(1).norm(dim=1)  # (B,)
        self.total += (diff / target.flatten(1).norm(dim=1).clamp_min(1e-12)).double().sum()
        self.count += preds.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


class ContactMAE(torchmetrics.Metric):
    """PSICOV's MAE8 (as NAS-Bench-360's ``calculate_mae``): per protein, the predicted map
    is symmetrised ((P + P^T) / 2) and clipped below at 0.01; the error is the mean of
    |true - predicted| over the pairs i < j inside the protein's own length (``mask``,
    (B, L, L)) with sequence separation j - i >= `min_separation` (24) and true distance
    <= `threshold` (8 Angstrom); the score is the mean over proteins that have such pairs."""

    higher_is_better = False

    def __init__(self, threshold: float = 8.0, min_separation: int = 24, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.min_separation = threshold, min_separation
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        preds = ((preds + preds.transpose(-1, -2)) / 2).clamp_min(0.01)
        length = target.shape[-1]
        i, j = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
        long_range = (j - i >= self.min_separation).to(target.device)
        pairs = mask.bool() & long_range & (target <= self.threshold)  # (B, L, L)
        counts = pairs.flatten(1).sum(1)
        errors = ((preds - target).abs() * pairs).flatten(1).sum(1)
        has_pairs = counts > 0  # a protein with no such pair has no MAE8 and is skipped
        self.total += (errors[has_pairs] / counts[has_pairs]).double().sum()
        self.count += int(has_pairs.sum())

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()


class MaskedBinaryAUROC(BinaryAUROC):
    """AUROC over every pixel whose mask is set, from scores (logits or probabilities),
    never thresholded predictions: Cosmic's metric, with its ignore mask."""

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        keep = torch.ones_like(target, dtype=torch.bool) if mask is None else mask.bool()
        super().update(preds[keep].float(), target[keep].long())
