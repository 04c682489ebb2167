"""The DeepSEA task on a miniature deepsea_filtered.npz written in the published layout."""
import math

import numpy as np
import pytest
import torch

import tasks.deepsea  # noqa: F401  (registers the task)
from formats.deepsea import SIZES, write
from orca.errors import DataNotFoundError
from orca.tasks import create_task
from tasks.deepsea import URL


def test_loads_the_files_splits_channels_first(tmp_path):
    root = write(tmp_path / "deepsea")
    splits = create_task("deepsea").load(root, download=False)
    assert splits.sizes() == SIZES  # the file's own train / val / test
    raw = np.load(root / "deepsea_filtered.npz")
    for split in ("train", "val", "test"):
        x, y = getattr(splits, split).tensors
        assert x.shape[1:] == (4, 1000) and x.dtype == torch.float32 and y.dtype == torch.float32
        assert x.is_contiguous()
        np.testing.assert_array_equal(x.numpy(), raw[f"x_{split}"].transpose(0, 2, 1))  # (n, 1000, 4) -> (n, 4, 1000)
        np.testing.assert_array_equal(y.numpy(), raw[f"y_{split}"])
    x = splits.train.tensors[0]
    assert torch.equal(x.sum(1), torch.ones(len(x), 1000))  # one-hot over the 4 channels at every position


def test_missing_file_names_path_and_url(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("deepsea").load(tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "deepsea_filtered.npz") in str(err.value) and URL in str(err.value)


def test_missing_key_or_wrong_layout_is_named(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    np.savez(root / "deepsea_filtered.npz", x_train=np.zeros((2, 1000, 4)), y_train=np.zeros((2, 36)))
    with pytest.raises(DataNotFoundError, match="x_val, y_val"):
        create_task("deepsea").load(root, download=False)
    arrays = {f"{a}_{s}": np.zeros((2, 4, 1000) if a == "x" else (2, 36))
              for a in "xy" for s in ("train", "val", "test")}
    np.savez(root / "deepsea_filtered.npz", **arrays)  # channels first: not the published layout
    with pytest.raises(DataNotFoundError, match=r"\(n, 1000, 4\)"):
        create_task("deepsea").load(root, download=False)


def test_loss_weights_positives_by_4():
    task = create_task("deepsea")
    targets = torch.zeros(1, 36)
    targets[0, :18] = 1
    # logit 0: a positive costs 4 log 2, a negative log 2; mean over 36 labels
    assert float(task.loss(torch.zeros(1, 36), targets)) == pytest.approx((18 * 4 + 18) * math.log(2) / 36)


def test_error_is_one_minus_mean_auroc_over_defined_labels():
    task = create_task("deepsea")
    logits = torch.zeros(4, 36)
    targets = torch.zeros(4, 36)  # labels 2..35 have no positive here: skipped
    logits[:, 0], targets[:, 0] = torch.tensor([2.0, -1.0, 0.5, -2.0]), torch.tensor([1.0, 0, 0, 1])
    logits[:, 1], targets[:, 1] = torch.tensor([0.3, 0.1, 0.2, 0.4]), torch.tensor([0.0, 0, 1, 1])
    metrics = task.metrics()
    metrics.update(logits[:2], targets[:2])
    metrics.update(logits[2:], targets[2:])
    values = {k: float(v) for k, v in metrics.compute().items()}
    # label 0: positives {2, -2} beat negatives {-1, 0.5} in 2 of 4 pairs; label 1: {0.2, 0.4} vs {0.3, 0.1}: 3 of 4
    assert values["auroc"] == pytest.approx((0.5 + 0.75) / 2)
    assert task.error(values) == pytest.approx(1 - 0.625)


def test_reference_error_is_orcas_nanmean_auroc_per_chunk():
    from orca.metrics import ChunkedScore, orca_mean_auroc

    logits, targets = torch.zeros(4, 36), torch.zeros(4, 36)
    logits[:, 0], targets[:, 0] = torch.tensor([2.0, -1.0, 0.5, -2.0]), torch.tensor([1.0, 0, 0, 1])
    logits[:, 1], targets[:, 1] = torch.tensor([0.3, 0.1, 0.2, 0.4]), torch.tensor([0.0, 0, 1, 1])
    # One chunk: labels with one class give nan and drop out of the mean, as the split's metric.
    assert orca_mean_auroc(logits.numpy(), targets.numpy()) == pytest.approx((0.5 + 0.75) / 2)
    # Chunks of 2: (samples 0, 1): label 0 has 1 vs 0 -> 1, label 1 has no positive -> nan: 1;
    # (samples 2, 3): label 0: 0.5 (neg) vs -2 (pos) -> 0, label 1: both positive -> nan: 0.
    chunked = ChunkedScore(orca_mean_auroc, chunk=2)
    chunked.update(logits, targets)
    assert float(chunked.compute()) == pytest.approx(0.5)
    task = create_task("deepsea")
    metrics = task.metrics()
    metrics.update(logits, targets)
    values = task.scores({k: float(v) for k, v in metrics.compute().items()})
    assert values["reference_error"] == pytest.approx(1 - 0.625) and values["error"] == pytest.approx(1 - 0.625)
