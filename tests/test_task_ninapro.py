"""The NinaPro DB5 task on miniature .npy files written in the published format."""
import numpy as np
import pytest
import torch

import tasks.ninapro  # noqa: F401  (registers the task)
from formats.ninapro import SIZES, write
from orca.errors import DataNotFoundError
from orca.tasks import create_task


@pytest.fixture
def root(tmp_path):
    return write(tmp_path / "ninapro")


def test_loader_takes_splits_from_files_and_transposes(root):
    task = create_task("ninapro")
    splits = task.load(root, download=False)
    assert splits.sizes() == SIZES
    for split in ("train", "val", "test"):
        x, y = getattr(splits, split).tensors
        assert x.shape[1:] == (1, 16, 52) and x.dtype == torch.float32 and y.dtype == torch.int64
        published = np.load(root / f"ninapro_{split}.npy")  # (N, 52, 16): time x electrode
        assert float(x[1, 0, 5, 7]) == pytest.approx(float(published[1, 7, 5]))  # electrode 5 at time 7
        np.testing.assert_array_equal(x[:, 0].numpy(), published.transpose(0, 2, 1))  # no normalisation
        assert y.tolist() == np.load(root / f"label_{split}.npy").tolist()
    assert task.num_outputs == 18 and int(splits.train.tensors[1].max()) == 17


def test_missing_file_names_path_and_url(root):
    (root / "label_val.npy").unlink()
    with pytest.raises(DataNotFoundError) as err:
        create_task("ninapro").load(root, download=False)
    assert str(root / "label_val.npy") in str(err.value)
    assert "https://pde-xd.s3.amazonaws.com/ninapro/label_val.npy" in str(err.value)


def test_loss_is_cross_entropy_and_error_is_percent():
    task = create_task("ninapro")
    logits = torch.tensor([[2.0, 0.0] + [0.0] * 16, [0.0, 1.0] + [0.0] * 16, [0.0] * 17 + [3.0]])
    targets = torch.tensor([0, 0, 17])  # ORCA's focal loss with gamma 0 is cross-entropy
    expected = -torch.log_softmax(logits, 1)[[0, 1, 2], targets].mean()
    assert float(task.loss(logits, targets)) == pytest.approx(float(expected))
    metrics = task.metrics()
    metrics.update(logits, targets)  # predicts 0, 1, 17: 2 of 3 right
    assert task.error({k: float(v) for k, v in metrics.compute().items()}) == pytest.approx(100 / 3)
