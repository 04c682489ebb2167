"""The Spherical CIFAR-100 task on a miniature s2_cifar100.gz written in the published format."""
import gzip
import pickle

import numpy as np
import pytest
import torch

import tasks.spherical  # noqa: F401  (registers the task)
from formats.spherical import CLASSES, TEST_PER_CLASS, TRAIN_PER_CLASS, write
from orca.errors import DataNotFoundError
from orca.tasks import create_task
from tasks.spherical import URL


@pytest.fixture
def root(tmp_path):
    return write(tmp_path / "spherical")


def test_loader_shapes_splits_and_scaling(root):
    task = create_task("spherical")
    splits = task.load(root, download=False)
    n_val = round(0.2 * TRAIN_PER_CLASS) * len(CLASSES)
    assert splits.sizes() == {"train": TRAIN_PER_CLASS * len(CLASSES) - n_val, "val": n_val,
                              "test": TEST_PER_CLASS * len(CLASSES)}
    for split in ("train", "val", "test"):
        x, y = getattr(splits, split).tensors
        assert x.shape[1:] == (3, 60, 60) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert sorted(y.unique().tolist()) == list(CLASSES)
    with gzip.open(root / "s2_cifar100.gz") as f:
        published = pickle.load(f)["test"]
    x, y = splits.test.tensors
    np.testing.assert_array_equal(x.numpy(), published["images"].astype(np.float32) / 255)  # /255 only
    assert float(x[0, 1, 2, 3]) == pytest.approx(published["images"][0, 1, 2, 3] / 255)
    assert y.tolist() == published["labels"].tolist()
    assert task.num_outputs == 100


def test_validation_is_fixed_by_its_seed(root):
    a = create_task("spherical").load(root, download=False)
    b = create_task("spherical").load(root, download=False)
    c = create_task("spherical", split_seed=1).load(root, download=False)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])


def test_missing_file_names_path_and_url(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("spherical").load(tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "s2_cifar100.gz") in str(err.value) and URL in str(err.value)


def test_file_without_a_split_is_reported(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with gzip.open(tmp_path / "s2_cifar100.gz", "wb") as f:
        pickle.dump({"train": {"images": np.zeros((2, 3, 60, 60), np.uint8), "labels": np.zeros(2)}}, f)
    with pytest.raises(DataNotFoundError, match="test/images"):
        create_task("spherical").load(tmp_path, download=False)


def test_error_is_percent_zero_one_error():
    task = create_task("spherical")
    metrics = task.metrics()
    logits = torch.zeros(4, 100)
    logits[[0, 1, 2, 3], [3, 3, 50, 99]] = 1.0  # predicts 3, 3, 50, 99
    metrics.update(logits, torch.tensor([3, 4, 51, 99]))  # 2 of 4 right
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert task.error(values) == pytest.approx(50.0)
