"""Multi-label means over the labels where AUROC / AP are defined, pinned by hand."""
import math

import pytest
import torch
import torchmetrics
from torchmetrics.classification import MultilabelAUROC

from orca.metrics import MultilabelMeanAUROC, MultilabelMeanAveragePrecision

# 4 samples x 4 labels. Label 2 has no positive, label 3 no negative.
LOGITS = torch.tensor([[2.0, 0.3, 0.1, 0.5], [-1.0, 0.1, 0.7, -0.2], [0.5, 0.2, -0.4, 0.9], [-2.0, 0.4, 0.3, 0.0]])
TARGETS = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 1], [0, 1, 0, 1], [1, 1, 0, 1]])
# label 0: positives {2, -2}, negatives {-1, 0.5}: 2 of 4 pairs ordered -> AUROC 1/2
#          ranking 2(+) 0.5 -1 -2(+): AP = (1/1 + 2/4) / 2 = 3/4
# label 1: positives {0.2, 0.4}, negatives {0.3, 0.1}: 3 of 4 pairs -> AUROC 3/4
#          ranking 0.4(+) 0.3 0.2(+) 0.1: AP = (1/1 + 2/3) / 2 = 5/6
# label 2: no positive: AUROC and AP undefined; label 3: all positive: AUROC undefined, AP 1
MEAN_AUROC = (1 / 2 + 3 / 4) / 2
MEAN_AP = (3 / 4 + 5 / 6 + 1) / 3


def test_mean_auroc_skips_labels_without_both_classes():
    metric = MultilabelMeanAUROC(4)
    metric.update(LOGITS[:2], TARGETS[:2])
    metric.update(LOGITS[2:], TARGETS[2:])
    assert float(metric.compute()) == pytest.approx(MEAN_AUROC)
    # torchmetrics' own macro average counts the two undefined labels as 0
    plain = MultilabelAUROC(4, average="macro")
    plain.update(LOGITS, TARGETS)
    with pytest.warns(UserWarning):
        assert float(plain.compute()) == pytest.approx(MEAN_AUROC / 2)


def test_mean_average_precision_skips_labels_without_positives():
    metric = MultilabelMeanAveragePrecision(4)
    metric.update(LOGITS, TARGETS.float())  # float 0/1 targets, as multi-label tasks give them
    assert float(metric.compute()) == pytest.approx(MEAN_AP)


def test_logits_are_ranked_as_logits_whatever_the_batch_range():
    # The second batch lies inside [0, 1], where torchmetrics would skip its own sigmoid and
    # rank 0.99 and 0.97 above the first batch's logit 3. (Label 1 repeats label 0.)
    batches = [(torch.tensor([[3.0], [-3.0]]), torch.tensor([[1], [0]])),
               (torch.tensor([[0.99], [0.97]]), torch.tensor([[0], [1]]))]
    ours, plain = MultilabelMeanAUROC(2), MultilabelAUROC(2, average="none")
    for logits, targets in batches:
        ours.update(logits.repeat(1, 2), targets.repeat(1, 2))
        plain.update(logits.repeat(1, 2), targets.repeat(1, 2))
    # ranking 3(+) 0.99 0.97(+) -3: positives beat negatives in 3 of 4 pairs
    assert float(ours.compute()) == pytest.approx(3 / 4)
    assert plain.compute().tolist() == pytest.approx([2 / 4, 2 / 4])


def test_no_defined_label_gives_nan():
    metric = MultilabelMeanAUROC(2)
    metric.update(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long))
    assert math.isnan(float(metric.compute()))


def test_collection_groups_the_two_metrics_and_resets():
    metrics = torchmetrics.MetricCollection({"auroc": MultilabelMeanAUROC(4),
                                             "map": MultilabelMeanAveragePrecision(4)}).clone(prefix="val/")
    metrics.update(LOGITS, TARGETS.float())
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values == pytest.approx({"val/auroc": MEAN_AUROC, "val/map": MEAN_AP})
    metrics.reset()
    metrics.update(-LOGITS, TARGETS.float())  # reversed ranking: AUROC 1 - 1/2 and 1 - 3/4
    assert float(metrics.compute()["val/auroc"]) == pytest.approx((1 / 2 + 1 / 4) / 2)
