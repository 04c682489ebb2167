"""Hand-computed cases for the metrics torchmetrics lacks (orca/metrics.py)."""
import math

import pytest
import torch

from orca.metrics import ContactMAE, MaskedBinaryAUROC, RelativeL2


def test_relative_l2_two_samples():
    metric = RelativeL2()
    target = torch.tensor([[[3.0, 4.0]], [[0.0, 2.0]]])  # norms 5 and 2
    pred = torch.tensor([[[3.0, 4.0 + 1.0]], [[0.0, 0.0]]])  # error norms 1 and 2
    metric.update(pred[:1], target[:1])
    metric.update(pred[1:], target[1:])
    assert float(metric.compute()) == pytest.approx((1 / 5 + 2 / 2) / 2)


def test_relative_l2_decodes_before_measuring():
    # normalised values v mean physical v * 2 + 1: target (1, 1.5) -> (3, 4); pred (1, 2) -> (3, 5)
    metric = RelativeL2(scale=torch.tensor(2.0), shift=torch.tensor(1.0))
    metric.update(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 1.5]]))
    assert float(metric.compute()) == pytest.approx(1 / 5)


def test_contact_mae_mask_separation_threshold_symmetry_clip():
    metric = ContactMAE(threshold=8.0, min_separation=3)
    # protein 1: length 5 inside a 6x6 map (mask [0:5, 0:5]); pairs i < j with j - i >= 3:
    # (0,3) true 5, (0,4) true 10 (> 8, dropped), (1,4) true 7; (2,5) lies outside the protein.
    target = torch.full((2, 6, 6), 100.0)
    pred = torch.zeros(2, 6, 6)
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[0, :5, :5] = True
    for i, j, d in ((0, 3, 5.0), (0, 4, 10.0), (1, 4, 7.0), (2, 5, 3.0)):
        target[0, i, j] = target[0, j, i] = d
    pred[0, 0, 3], pred[0, 3, 0] = 6.0, 4.0  # symmetrised 5 -> error 0
    pred[0, 1, 4], pred[0, 4, 1] = -3.0, -3.0  # symmetrised -3, clipped to 0.01 -> error 6.99
    pred[0, 2, 5] = pred[0, 5, 2] = 50.0  # outside the protein: ignored
    # protein 2: the whole map; one long-range close pair (0,5) true 4, predicted 5 -> error 1
    mask[1] = True
    target[1, 0, 5] = target[1, 5, 0] = 4.0
    pred[1] = 100.0
    pred[1, 0, 5] = pred[1, 5, 0] = 5.0
    metric.update(pred, target, mask=mask)
    assert float(metric.compute()) == pytest.approx(((0 + 6.99) / 2 + 1.0) / 2, rel=1e-5)


def test_contact_mae_skips_proteins_without_pairs_and_ignores_nan_outside():
    metric = ContactMAE(min_separation=2)
    target = torch.full((2, 4, 4), 20.0)
    target[0, 0, 3] = 6.0
    target[0, 3, 3] = float("nan")  # unknown, outside the pairs
    pred = torch.full((2, 4, 4), 7.0)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    metric.update(pred, target, mask=mask)  # protein 2 has no pair <= 8 A: skipped
    assert float(metric.compute()) == pytest.approx(1.0)
    empty = ContactMAE()
    empty.update(pred, target, mask=torch.zeros_like(mask))
    assert math.isnan(float(empty.compute()))  # nothing scored: NaN, never a perfect 0


def test_masked_auroc_drops_ignored_pixels_and_uses_scores():
    metric = MaskedBinaryAUROC()
    preds = torch.tensor([[0.1, 0.4], [0.35, 0.8], [-5.0, 9.0]])
    target = torch.tensor([[0, 0], [1, 1], [1, 0]])
    mask = torch.tensor([[True, True], [True, True], [False, False]])  # last row ignored
    metric.update(preds, target, mask=mask)
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of 4 pairs ranked right
    assert float(metric.compute()) == pytest.approx(0.75)
    # ORCA's thresholding (logit > 0) would turn every kept score into 1: AUROC 0.5
    thresholded = MaskedBinaryAUROC()
    thresholded.update((preds > 0).float(), target, mask=mask)
    assert float(thresholded.compute()) == pytest.approx(0.5)


def test_masked_auroc_ranks_batches_on_one_scale():
    metric = MaskedBinaryAUROC()
    metric.update(torch.tensor([0.2, 0.9]), torch.tensor([0, 1]))  # logits that happen to lie in [0, 1]
    metric.update(torch.tensor([-0.5, 2.0]), torch.tensor([1, 0]))
    # as logits: positives 0.9, -0.5; negatives 0.2, 2.0 -> only 0.9 > 0.2 is right: 1 of 4
    assert float(metric.compute()) == pytest.approx(0.25)
