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
    """A score as ORCA's ``evaluate`` (src/main.py) computes it: the split cut into
    consecutive chunks of `chunk` samples (the last may be shorter), ``score(preds, target)``
    of each chunk, averaged over the chunks. With `seed` the split is first put in a fixed
    random order (ORCA shuffles ECG's test windows once, unseeded); without, it keeps its own.

    For F1, AUROC and mAP a mean over chunks is not the split's score; records keep it beside
    the split's (``reference_error``) as the number ORCA's code would print.
    ``update(preds (B, ...), target (B, ...))``; `score` takes float32 numpy arrays."""

    full_state_update = False

    def __init__(self, score, chunk: int = 1000, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.score, self.chunk, self.seed = score, chunk, seed
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())

    def compute(self) -> torch.Tensor:
        cat = torchmetrics.utilities.dim_zero_cat
        preds, target = cat(self.preds).cpu().numpy(), cat(self.target).cpu().numpy()
        order = (np.arange(len(preds)) if self.seed is None else
                 torch.randperm(len(preds), generator=torch.Generator().manual_seed(self.seed)).numpy())
        chunks = [order[i:i + self.chunk] for i in range(0, len(order), self.chunk)]
        return torch.tensor(float(np.mean([self.score(preds[c], target[c]) for c in chunks])))


def orca_ecg_f1(logits: np.ndarray, target: np.ndarray) -> float:
    """ORCA's ``ecg_f1`` (src/utils.py): the mean F1 of the classes present in the chunk's
    labels or predictions (scikit-learn's classification report), not of all four."""
    from sklearn.metrics import f1_score

    return float(f1_score(target.astype(int), logits.argmax(1), average="macro", zero_division=0))


def orca_mean_auroc(logits: np.ndarray, target: np.ndarray) -> float:
    """ORCA's ``auroc`` (src/utils.py, DeepSEA): per label, the area under scikit-learn's ROC
    curve of the sigmoid scores; the nan-mean over labels (a label with one class in the
    chunk gives nan)."""
    from sklearn.metrics import auc, roc_curve

    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns for a label with one class; its area is nan
        areas = [auc(*roc_curve(target[:, k], scores[:, k])[:2]) for k in range(target.shape[1])]
    return float(np.nanmean(areas))


def orca_thresholded_auroc(logits: np.ndarray, target: np.ndarray) -> float:
    """ORCA's ``inv_auroc`` (src/utils.py, Cosmic) as 1 - its value: scikit-learn's AUROC of
    the 0/1 predictions ``logits > 0`` against the targets, over every pixel of the chunk
    (the ignore mask is not applied). A thresholded AUROC is the mean of the true-positive
    and true-negative rates, not an AUROC."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(target.reshape(-1) > 0.5, (logits > 0).reshape(-1)))


class ClipMeanAP(torchmetrics.Metric):
    """Mean average precision over clips instead of chunks (FSD50K, as its benchmark and ORCA's
    evaluation score it): a clip's logits are the mean of its chunks' logits, its labels its
    chunks' labels; average precision per label from the clips' scores, averaged over the
    labels with a positive clip. ``update(preds (B, K), target (B, K), groups (B,))``."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("preds", "target", "groups"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())
        self.groups.append(groups.long())

    def compute(self) -> torch.Tensor:
        cat = torchmetrics.utilities.dim_zero_cat
        preds, target, groups = cat(self.preds), cat(self.target), cat(self.groups)
        _, clip = torch.unique(groups, return_inverse=True)  # (n,) 0..G-1
        g = int(clip.max()) + 1
        sums = torch.zeros(g, preds.shape[1], dtype=preds.dtype, device=preds.device).index_add_(0, clip, preds)
        counts = torch.zeros(g, dtype=preds.dtype, device=preds.device).index_add_(0, clip, torch.ones_like(clip, dtype=preds.dtype))
        labels = torch.zeros_like(sums).index_reduce_(0, clip, target, "amax", include_self=False)
        ap = MultilabelMeanAveragePrecision(preds.shape[1]).to(preds.device)
        return ap(sums / counts[:, None], labels.long())  # mean logits; it takes the sigmoid


def orca_psicov_mae8(pred: np.ndarray, target: np.ndarray, length: int, pad: int = 5) -> float:
    """MAE8 of one protein as ORCA's ``psicov_mae`` (src/utils.py) computes it, defects kept:
    `pred` and `target` (S, S) with the protein padded by `pad` and placed top-left.

    Its upper triangle is averaged with the lower, clipped below at 0.01 and shifted up-left
    by `pad`; then averaged with the lower triangle a second time (so the upper triangle
    weighs 1/4, the lower 3/4) inside `length` x `length`, where `length` is the first PSICOV
    protein's, whichever protein is scored (ORCA indexes its length table with the index
    within the batch, always 0 at its evaluation batch of 1); the mean of |true - predicted|
    over pairs q - p >= 24 with true distance <= 8 inside that square; inf where none."""
    side = len(pred)
    p = pred.astype(np.float64)
    upper = np.triu_indices(side)
    p[upper] = (p.T[upper] + p[upper]) / 2
    p = np.maximum(p, 0.01)
    y = target.astype(np.float64)
    p[: side - 2 * pad, : side - 2 * pad] = p[pad : side - pad, pad : side - pad].copy()
    y[: side - 2 * pad, : side - 2 * pad] = y[pad : side - pad, pad : side - pad].copy()
    p, y = p[:length, :length], y[:length, :length]
    averaged = (p.T + p) / 2  # PAVG's upper triangle; its lower one never counts (separation >= 24)
    rows, cols = np.indices(y.shape)
    scored = (cols - rows >= 24) & (y <= 8)
    return float(np.abs(y - averaged)[scored].mean()) if scored.any() else float("inf")


class OrcaContactMAE(torchmetrics.Metric):
    """PSICOV's MAE8 as ORCA's code prints it: :func:`orca_psicov_mae8` of each protein
    (its evaluation batch of 1 makes each protein a chunk), averaged over proteins.
    ``update(preds (B, S, S), target (B, S, S))``."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        for p, t in zip(preds.detach().cpu().numpy(), target.cpu().numpy()):
            self.total += orca_psicov_mae8(p, t, self.length)
            self.count += 1

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()
