"""Metrics that torchmetrics lacks, each accumulated over a whole split (and
:class:`ChunkedScore`, ORCA's mean over chunks of a split, for ``reference_error``).

Every ``update`` takes ``(preds, target, mask=None)``; ``mask`` marks the entries that
count (a :class:`torchmetrics.MetricCollection` passes it only to metrics that accept it).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torchmetrics
from torchmetrics.classification import BinaryAUROC


class RelativeL2(torchmetrics.Metric):
    """Mean over samples of ||pred - target||_2 / ||target||_2 (each sample's field flattened).

    `scale` and `shift` (broadcastable to one sample's field, e.g. (H, W)) undo a target
    normalisation first: both pred and target are mapped to ``x * scale + shift``, so the
    error is measured in physical units (Darcy's targets are normalised pointwise)."""

    higher_is_better = False

    def __init__(self, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("scale", torch.as_tensor(1.0 if scale is None else scale, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("shift", torch.as_tensor(0.0 if shift is None else shift, dtype=torch.float32),
                             persistent=False)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = preds * self.scale + self.shift, target * self.scale + self.shift
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
        errors = torch.where(pairs, (preds - target).abs(), 0.0).flatten(1).sum(1)  # NaN-safe off the pairs
        has_pairs = counts > 0  # a protein with no such pair has no MAE8 and is skipped
        self.total += (errors[has_pairs] / counts[has_pairs]).double().sum()
        self.count += int(has_pairs.sum())

    def compute(self) -> torch.Tensor:  # NaN when no protein had a pair, as the reference's nanmean
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


class MaskedBinaryAUROC(BinaryAUROC):
    """AUROC over every pixel whose mask is set, from scores (logits or probabilities),
    never thresholded predictions: Cosmic's metric, with its ignore mask (masked pixels are
    dropped, not counted as negatives).

    Scores pass through a sigmoid in float64 on every update: it is monotone, so the AUROC
    is unchanged, and it stops torchmetrics from guessing per batch whether the scores are
    logits (a batch whose logits all fall in [0, 1] would otherwise stay unsquashed and be
    ranked against squashed batches)."""

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        keep = torch.ones_like(target, dtype=torch.bool) if mask is None else mask.bool()
        super().update(preds[keep].double().sigmoid(), target[keep].long())


class _MeanOverDefinedLabels:
    """Mixin for torchmetrics' multi-label curve metrics: the per-label scores averaged over
    the labels on which the score is defined in the split (as the reference's ``nanmean``
    over labels). torchmetrics' own ``average="macro"`` counts an undefined label as 0.

    Inputs are logits (any range): they are mapped through a float64 sigmoid once, so that
    torchmetrics never decides per batch whether to apply one (it does when a batch holds
    values outside [0, 1]) and large logits keep distinct scores."""

    needs_negatives: bool  # AUROC needs both classes in a label; AP only positives

    def __init__(self, num_labels: int, **kwargs):
        super().__init__(num_labels, average="none", **kwargs)
        self.add_state("positives", torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("negatives", torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        target = target.long()  # 0/1 targets may arrive as floats (the multi-label contract)
        super().update(preds.double().sigmoid(), target)  # (B, K) scores, (B, K) 0/1
        self.positives += (target == 1).sum(0)
        self.negatives += (target == 0).sum(0)

    def compute(self) -> torch.Tensor:
        defined = self.positives > 0
        if self.needs_negatives:
            defined &= self.negatives > 0
        if not defined.any():
            return torch.tensor(float("nan"))
        with warnings.catch_warnings():  # torchmetrics warns about the undefined labels dropped here
            warnings.simplefilter("ignore", UserWarning)
            scores = super().compute()  # (K,)
        return scores[defined].float().mean()


class MultilabelMeanAUROC(_MeanOverDefinedLabels, torchmetrics.classification.MultilabelAUROC):
    """Mean over labels of the AUROC from scores, skipping labels whose split holds no
    positive or no negative (DeepSEA's metric, as the reference's nanmean of per-label AUC)."""

    needs_negatives = True


class MultilabelMeanAveragePrecision(_MeanOverDefinedLabels, torchmetrics.classification.MultilabelAveragePrecision):
    """Mean over labels of the average precision from scores (mAP), skipping labels with no
    positive in the split (AP is undefined there); FSD50K's metric."""

    needs_negatives = False


class GroupVoteF1(torchmetrics.Metric):
    """Macro-F1 over groups (ECG: recordings) instead of samples (windows): each group's
    prediction is the majority vote of its samples' predicted classes (a tie goes to the
    lowest class index), its label the majority of its samples' labels; NAS-Bench-360's
    per-recording evaluation. ``update(preds (B, K) scores, target (B,), groups (B,))``."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        for name in ("votes", "labels", "groups"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> None:
        self.votes.append(preds.argmax(-1))
        self.labels.append(target.long())
        self.groups.append(groups.long())

    def compute(self) -> torch.Tensor:
        cat = torchmetrics.utilities.dim_zero_cat
        votes, labels, groups = cat(self.votes), cat(self.labels), cat(self.groups)
        _, group = torch.unique(groups, return_inverse=True)  # (n,) 0..G-1
        k, g = self.num_classes, int(group.max()) + 1
        vote_counts = torch.zeros(g, k, dtype=torch.long, device=votes.device).index_put_((group, votes), torch.ones_like(votes), accumulate=True)
        label_counts = torch.zeros(g, k, dtype=torch.long, device=votes.device).index_put_((group, labels), torch.ones_like(labels), accumulate=True)
        return torchmetrics.functional.classification.multiclass_f1_score(
            vote_counts.argmax(1), label_counts.argmax(1), k, average="macro")


class ChunkedScore(torchmetrics.Metric):
    """A score as ORCA's ``evaluate`` (src/main.py) computes it: the split in a fixed random
    order (ORCA's test loaders are shuffled once, unseeded; here with `seed`), cut into
    consecutive chunks of `chunk` samples (the last may be shorter), ``score(preds, target)``
    of each chunk, averaged over the chunks.

    For F1, AUROC and mAP a mean over chunks is not the split's score; records keep it beside
    the split's (``reference_error``) as the number ORCA's code would print.
    ``update(preds (B, ...), target (B, ...))``; `score` takes float64 numpy arrays."""

    full_state_update = False

    def __init__(self, score, chunk: int = 1000, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.score, self.chunk, self.seed = score, chunk, seed
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().double())
        self.target.append(target.detach().double())

    def compute(self) -> torch.Tensor:
        cat = torchmetrics.utilities.dim_zero_cat
        preds, target = cat(self.preds).cpu().numpy(), cat(self.target).cpu().numpy()
        order = torch.randperm(len(preds), generator=torch.Generator().manual_seed(self.seed)).numpy()
        chunks = [order[i:i + self.chunk] for i in range(0, len(order), self.chunk)]
        return torch.tensor(float(np.mean([self.score(preds[c], target[c]) for c in chunks])))


def orca_ecg_f1(logits: np.ndarray, target: np.ndarray) -> float:
    """ORCA's ``ecg_f1`` (src/utils.py): the mean F1 of the classes present in the chunk's
    labels or predictions (scikit-learn's classification report), not of all four."""
    from sklearn.metrics import f1_score

    return float(f1_score(target.astype(int), logits.argmax(1), average="macro", zero_division=0))
