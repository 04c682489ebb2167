"""The Darcy Flow task on miniature files in both published formats (NAS-Bench-360's .mat
and the neuraloperator release)."""
import numpy as np
import pytest
import scipy.io
import torch

import tasks.darcy  # noqa: F401  (registers the task)
from conftest import SHARED
from formats.darcy import OVERRIDES, write, write_neuraloperator
from orca.errors import DataNotFoundError
from orca.tasks import create_task
from tasks.darcy import NB360_FILES, NB360_URL, grid_channels

SIZES = {"n_train": 6, "n_val": 2, "n_test": 3}  # what OVERRIDES sets for the smoke run
REAL = SHARED / "datasets" / "darcy16"  # the real neuraloperator release, where present


def test_overrides_match_sizes():
    assert OVERRIDES == [f"task.{k}={v}" for k, v in SIZES.items()]


@pytest.fixture(scope="module")
def nb360_root(tmp_path_factory):
    return write(tmp_path_factory.mktemp("darcy"))


def test_nb360_subsample_normalise_grid_and_splits(nb360_root):
    task = create_task("darcy", **SIZES)
    splits = task.load(nb360_root, download=False)
    assert splits.sizes() == {"train": 6, "val": 2, "test": 3}
    assert task.input_shape == (3, 85, 85) and task.output_shape == (85, 85)
    smooth1 = scipy.io.loadmat(nb360_root / NB360_FILES[0])
    smooth2 = scipy.io.loadmat(nb360_root / NB360_FILES[1])
    a = smooth1["coeff"][:, ::5, ::5][:, :85, :85]  # r = 5: 421 -> 85
    assert a.shape == (8, 85, 85)
    mean, scale = a[:6].mean(0), a[:6].std(0) + 1e-5  # pointwise, train only
    x, y = splits.train.tensors
    assert x.shape == (6, 3, 85, 85) and x.dtype == torch.float32 and y.shape == (6, 85, 85)
    np.testing.assert_allclose(x[:, 0].numpy(), (a[:6] - mean) / scale, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(splits.val.tensors[0][:, 0].numpy(), (a[6:8] - mean) / scale, rtol=1e-5, atol=1e-5)
    a_test = smooth2["coeff"][:3, ::5, ::5]
    np.testing.assert_allclose(splits.test.tensors[0][:, 0].numpy(), (a_test - mean) / scale, rtol=1e-5, atol=1e-5)
    # grid: channel 1 the column coordinate, channel 2 the row coordinate
    assert float(x[0, 1, 10, 42]) == pytest.approx(42 / 84) and float(x[0, 2, 10, 42]) == pytest.approx(10 / 84)
    np.testing.assert_allclose(x[3, 1:].numpy(), grid_channels(85))
    # targets: normalised with train statistics, decoded back to the published solution
    u = smooth1["sol"][:, ::5, ::5]
    assert abs(float(y.mean())) < 1e-4
    np.testing.assert_allclose(task.decode(y).numpy(), u[:6], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(task.decode(splits.test.tensors[1]).numpy(), smooth2["sol"][:3, ::5, ::5],
                               rtol=1e-4, atol=1e-7)


def test_neuraloperator_format_train_val_carve_out(tmp_path):
    root = write_neuraloperator(tmp_path / "no", n_train=40, n_test=10)
    task = create_task("darcy")
    splits = task.load(root, download=False)
    assert splits.sizes() == {"train": 36, "val": 4, "test": 10}  # 10% of the train file
    assert task.input_shape == (3, 16, 16) and task.output_shape == (16, 16)
    published = torch.load(root / "darcy_train_16.pt", weights_only=True)
    u = published["y"].double().numpy()
    def index_of(field):  # the train-file sample equal to a decoded target
        return int(np.abs(u - field).reshape(len(u), -1).max(1).argmin())

    train_idx = [index_of(f) for f in task.decode(splits.train.tensors[1]).numpy()]
    val_idx = [index_of(f) for f in task.decode(splits.val.tensors[1]).numpy()]
    assert sorted(train_idx + val_idx) == list(range(40))  # each train-file sample once
    np.testing.assert_allclose(task.decode(splits.train.tensors[1]).numpy(), u[train_idx], rtol=1e-4, atol=1e-6)
    a = published["x"].double().numpy()
    mean, scale = a[train_idx].mean(0), a[train_idx].std(0) + 1e-5
    np.testing.assert_allclose(splits.train.tensors[0][:, 0].numpy(), (a[train_idx] - mean) / scale, atol=1e-4)
    again = create_task("darcy").load(root, download=False)
    assert torch.equal(again.val.tensors[1], splits.val.tensors[1])
    other = create_task("darcy", split_seed=1).load(root, download=False)
    assert not torch.equal(other.val.tensors[1], splits.val.tensors[1])


def test_auto_prefers_nb360_and_format_can_be_forced(nb360_root, tmp_path):
    both = write(tmp_path / "both")
    write_neuraloperator(both)
    assert create_task("darcy", **SIZES).load(both, download=False).train.tensors[0].shape[-1] == 85
    forced = create_task("darcy", format="neuraloperator", **SIZES)
    assert forced.load(both, download=False).train.tensors[0].shape[-1] == 16


def test_other_resolution(tmp_path):
    root = write_neuraloperator(tmp_path / "r32", n_train=20, n_test=4, resolution=32)
    task = create_task("darcy", resolution=32)
    splits = task.load(root, download=False)
    assert task.input_shape == (3, 32, 32) and splits.sizes() == {"train": 18, "val": 2, "test": 4}


def test_missing_data_names_folder_both_formats_and_urls(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("darcy").load(tmp_path / "nowhere", download=False)
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message
    for name in (*NB360_FILES, "darcy_train_16.pt", "darcy_test_16.pt"):
        assert name in message
    assert NB360_URL.format(name=NB360_FILES[0]) in message and "zenodo.org" in message
    with pytest.raises(DataNotFoundError, match="smooth1"):
        create_task("darcy", format="nb360").load(tmp_path / "nowhere", download=False)


def test_relative_l2_loss_metric_and_error_by_hand():
    task = create_task("darcy")  # not loaded: targets taken as they are
    target = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])  # norms 5 and 1
    pred = torch.tensor([[[3.0, 5.0]], [[0.0, 0.0]]])  # errors 1 and 1 -> 0.2 and 1.0
    assert float(task.loss(pred, target)) == pytest.approx(0.6)
    metrics = task.metrics()
    metrics.update(pred[:1], target[:1])
    metrics.update(pred[1:], target[1:])  # accumulated over the split, not per batch
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["relative_l2"] == pytest.approx(0.6)
    assert task.error(values) == pytest.approx(0.6)


def test_loss_and_metric_decode_normalised_targets(nb360_root):
    task = create_task("darcy", **SIZES)
    splits = task.load(nb360_root, download=False)
    y = splits.test.tensors[1]
    pred = y + 0.5  # a shift in normalised units is y_scale / 2 in physical units
    true_u, pred_u = task.decode(y).flatten(1), task.decode(pred).flatten(1)
    expected = ((pred_u - true_u).norm(dim=1) / true_u.norm(dim=1)).mean()
    assert float(task.loss(pred, y)) == pytest.approx(float(expected), rel=1e-5)
    metrics = task.metrics()
    metrics.update(pred, y)
    assert float(metrics.compute()["relative_l2"]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.skipif(not (REAL / "darcy_train_16.pt").exists(), reason="real Darcy files not on this machine")
def test_real_neuraloperator_release():
    task = create_task("darcy")
    splits = task.load(REAL, download=False)
    assert splits.sizes() == {"train": 900, "val": 100, "test": 50}
    assert task.input_shape == (3, 16, 16)
    assert abs(float(splits.train.tensors[0][:, 0].mean())) < 1e-4
