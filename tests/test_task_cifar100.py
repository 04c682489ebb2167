"""The CIFAR-100 task on a miniature cifar-100-python/ folder written in the published format."""
import pickle

import numpy as np
import pytest
import torch
import torchvision

import tasks.cifar100  # noqa: F401  (registers the task)
from formats.cifar100 import CLASSES, TEST_PER_CLASS, TRAIN_PER_CLASS, write
from orca.errors import DataNotFoundError
from orca.tasks import create_task
from tasks.cifar100 import MEAN, STD, URL


@pytest.fixture
def root(tmp_path):
    return write(tmp_path / "cifar100")


def raw(root, name):
    with open(root / "cifar-100-python" / name, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    return entry[b"data"], np.array(entry[b"fine_labels"])


def test_loader_shapes_splits_and_labels(root):
    task = create_task("cifar100")
    splits = task.load(root, download=False)
    n_val = round(0.2 * TRAIN_PER_CLASS) * len(CLASSES)
    assert splits.sizes() == {"train": TRAIN_PER_CLASS * len(CLASSES) - n_val, "val": n_val,
                              "test": TEST_PER_CLASS * len(CLASSES)}
    for split in ("train", "val", "test"):
        x, y = getattr(splits, split).tensors
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert sorted(y.unique().tolist()) == list(CLASSES)  # stratified: every class in every split
    assert task.num_outputs == 100


def test_pixels_are_normalised_with_the_published_constants(root):
    x, y = create_task("cifar100").load(root, download=False).test.tensors
    data, labels = raw(root, "test")
    r, g, b = data[0, :1024], data[0, 1024:2048], data[0, 2048:]  # R, G, B planes, row-major 32x32
    assert float(x[0, 0, 0, 0]) == pytest.approx((r[0] / 255 - 0.5071) / 0.2675, abs=1e-5)
    assert float(x[0, 1, 0, 1]) == pytest.approx((g[1] / 255 - 0.4867) / 0.2565, abs=1e-5)
    assert float(x[0, 2, 1, 0]) == pytest.approx((b[32] / 255 - 0.4408) / 0.2761, abs=1e-5)
    assert y.tolist() == labels.tolist()  # the published test set, in order


def test_reading_matches_torchvision(root, monkeypatch):
    # torchvision checks the md5 of the real files on every load, so it refuses a copy like this one...
    with pytest.raises(RuntimeError):
        torchvision.datasets.CIFAR100(str(root), train=False, download=False)
    # ...which is why the pickles are read here; with the check bypassed it reads the same images.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    reference = torchvision.datasets.CIFAR100(str(root), train=False, download=False)
    x, y = create_task("cifar100").load(root, download=False).test.tensors
    mean, std = np.array(MEAN)[:, None, None], np.array(STD)[:, None, None]
    expected = (reference.data.transpose(0, 3, 1, 2) / 255.0 - mean) / std
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)
    assert y.tolist() == reference.targets


def test_validation_is_a_fixed_disjoint_part_of_train(root):
    a = create_task("cifar100").load(root, download=False)
    b = create_task("cifar100").load(root, download=False)
    c = create_task("cifar100", split_seed=1).load(root, download=False)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    train = {row.tobytes() for row in a.train.tensors[0].numpy()}
    assert not any(row.tobytes() in train for row in a.val.tensors[0].numpy())
    assert len(a.train) + len(a.val) == len(raw(root, "train")[1])


def test_missing_data_names_path_and_url(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("cifar100").load(tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "cifar-100-python" / "train") in str(err.value)
    assert URL in str(err.value)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    def fake(root, train, download):  # stands for the md5-checked download and unpacking
        calls.append(download)
        write(tmp_path / "dl")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", fake)
    splits = create_task("cifar100").load(tmp_path / "dl", download=True)
    assert calls == [True] and len(splits.test) == TEST_PER_CLASS * len(CLASSES)

    def offline(root, train, download):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DataNotFoundError, match="no network") as err:
        create_task("cifar100").load(tmp_path / "offline", download=True)
    assert URL in str(err.value)


def test_error_is_percent_zero_one_error():
    task = create_task("cifar100")
    metrics = task.metrics()
    logits = torch.zeros(3, 100)
    logits[0, 5] = logits[1, 7] = logits[2, 99] = 1.0  # predicts 5, 7, 99
    metrics.update(logits, torch.tensor([5, 7, 42]))  # 2 of 3 right
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["accuracy"] == pytest.approx(2 / 3)
    assert task.error(values) == pytest.approx(100 / 3)
    assert task.error_name == "0-1 error %" and task.paper["ORCA"] == 6.53
