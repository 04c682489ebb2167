"""The Satellite task on miniature NAS-Bench-360 and UCR-archive files written in their published formats."""
import numpy as np
import pytest
import torch

import tasks.satellite  # noqa: F401  (registers the task)
from conftest import SHARED
from formats.satellite import write, write_ucr
from orca.errors import DataNotFoundError
from orca.tasks import create_task
from tasks.satellite import UCR_URL, URLS, zscore


def test_zscore_by_hand():
    x = np.array([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    # row 0: mean 3, std sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5); a constant row becomes zeros
    expected = np.array([[-2, -1, 0, 3], [0, 0, 0, 0]]) / np.array([[np.sqrt(3.5)], [1.0]])
    np.testing.assert_allclose(zscore(x), expected, rtol=1e-6)
    assert zscore(x).dtype == np.float32


def test_nb360_files_and_validation_rows(tmp_path):
    root = write(tmp_path / "satellite")  # train file 120 rows, test file 24
    splits = create_task("satellite").load(root, download=False)
    assert splits.sizes() == {"train": 96, "val": 24, "test": 24}  # val: len(test) rows of the train file
    x, y = splits.train.tensors
    assert x.shape[1:] == (1, 46) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw = np.load(root / "satellite_train.npy", allow_pickle=True)[()]
    assert set(torch.cat([y, splits.val.tensors[1]]).tolist()) == set(range(24))  # 1..24 -> 0..23
    # train and val partition the train file's rows, each z-scored on its own
    expected = {tuple(np.round(r, 4)) for r in zscore(raw["data"])}
    train_rows = {tuple(np.round(r, 4)) for r in x[:, 0].numpy()}
    val_rows = {tuple(np.round(r, 4)) for r in splits.val.tensors[0][:, 0].numpy()}
    assert train_rows | val_rows == expected and not train_rows & val_rows
    test = np.load(root / "satellite_test.npy", allow_pickle=True)[()]
    np.testing.assert_allclose(splits.test.tensors[0][:, 0].numpy(), zscore(test["data"]), rtol=1e-5)
    assert splits.test.tensors[1].tolist() == (test["label"] - 1).tolist()


def test_nb360_validation_draw_is_fixed_by_its_seed(tmp_path):
    root = write(tmp_path / "satellite")
    a, b = (create_task("satellite").load(root, download=False) for _ in range(2))
    c = create_task("satellite", split_seed=1).load(root, download=False)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    assert torch.equal(a.test.tensors[0], c.test.tensors[0])  # the test file is never resampled


def test_ucr_train_only_is_split_stratified_70_10_20(tmp_path):
    root = write_ucr(tmp_path / "crop", train_per_class=10)
    splits = create_task("satellite").load(root, download=False)
    assert splits.sizes() == {"train": 168, "val": 24, "test": 48}
    for split, per_class in (("train", 7), ("val", 1), ("test", 2)):
        assert np.bincount(getattr(splits, split).tensors[1].numpy(), minlength=24).tolist() == [per_class] * 24
    first = np.array([float(v) for v in (root / "Crop_TRAIN.tsv").read_text().splitlines()[0].split("\t")])
    assert first[0] == 1  # the first row of class 1 (label 0) is in one split, z-scored
    rows = torch.cat([s.tensors[0][:, 0] for s in (splits.train, splits.val, splits.test)])
    assert torch.isclose(rows, torch.as_tensor(zscore(first[None, 1:])), atol=1e-5).all(dim=1).any()


def test_ucr_test_file_is_the_test_split(tmp_path):
    root = write_ucr(tmp_path / "crop", train_per_class=8, test_per_class=2)
    splits = create_task("satellite").load(root, download=False)
    assert splits.sizes() == {"train": 168, "val": 24, "test": 48}  # TRAIN 7:1, TEST as given
    table = np.loadtxt(root / "Crop_TEST.tsv", delimiter="\t")
    np.testing.assert_allclose(splits.test.tensors[0][:, 0].numpy(), zscore(table[:, 1:]), rtol=1e-5, atol=1e-6)
    assert splits.test.tensors[1].tolist() == (table[:, 0].astype(int) - 1).tolist()


def test_auto_prefers_nb360_and_format_forces_one(tmp_path):
    root = write(tmp_path / "both")
    write_ucr(root, train_per_class=10)
    assert len(create_task("satellite").load(root, download=False).test) == 24  # NB360's test file
    assert len(create_task("satellite", format="ucr").load(root, download=False).test) == 48


def test_missing_data_names_both_formats(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("satellite").load(tmp_path / "nowhere", download=False)
    message = str(err.value)
    for part in ("satellite_train.npy", "satellite_test.npy", "Crop_TRAIN.tsv", "Crop_TEST.tsv", UCR_URL,
                 str(tmp_path / "nowhere"), *URLS.values()):
        assert part in message
    with pytest.raises(DataNotFoundError, match="Crop_TRAIN.tsv"):
        create_task("satellite", format="ucr").load(tmp_path / "nowhere", download=False)
    with pytest.raises(DataNotFoundError, match="satellite_train.npy"):
        create_task("satellite", format="nb360").load(tmp_path / "nowhere", download=False)


def test_classes_outside_1_to_24_are_rejected(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "Crop_TRAIN.tsv").write_text("0\t" + "\t".join(["0.5"] * 46) + "\n")
    with pytest.raises(DataNotFoundError, match="1..24"):
        create_task("satellite").load(root, download=False)


@pytest.mark.skipif(not (SHARED / "datasets/satellite-crop/Crop_TRAIN.tsv").exists(), reason="no real Crop set here")
def test_real_crop_train_file():
    splits = create_task("satellite").load(SHARED / "datasets/satellite-crop", download=False)
    assert splits.sizes() == {"train": 5040, "val": 720, "test": 1440}  # 7,200 series, 300 a class
    assert np.bincount(splits.test.tensors[1].numpy()).tolist() == [60] * 24


def test_error_is_the_0_1_error_in_percent():
    task = create_task("satellite")
    metrics = task.metrics()
    metrics.update(torch.eye(24)[[0, 1, 2, 5]], torch.tensor([0, 1, 2, 3]))  # 3 of 4 right
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["accuracy"] == pytest.approx(0.75)
    assert task.error(values) == pytest.approx(25.0)
