"""The ECG task on a miniature PhysioNet/CinC 2017 release written in the published format."""
import numpy as np
import pytest
import torch

from conftest import write_physionet2017
from orca.errors import DataNotFoundError
from orca.tasks import create_task
from tasks.ecg import URL, read_reference, windows


def test_windows_are_zscored_1000_with_stride_500():
    signal = np.arange(2600, dtype=np.float32)
    w = windows(signal, 1000, 500)
    assert w.shape == (4, 1000)  # starts 0, 500, 1000, 1500
    z = (signal - signal.mean()) / signal.std()
    np.testing.assert_allclose(w[1], z[500:1500], rtol=1e-5)


def test_loader_reads_release_and_splits_by_recording(ecg_root):
    task = create_task("ecg")
    splits = task.load(ecg_root, download=False)
    x, y = splits.train.tensors
    assert x.shape[1:] == (1, 1000) and x.dtype == torch.float32
    assert set(y.unique().tolist()) == {0, 1, 2, 3}
    # Each recording's windows all land in one split: recover recordings by re-windowing.
    records = read_reference(ecg_root / "training2017")
    n_windows = {name: len(windows(np.zeros(int((ecg_root / "training2017" / f"{name}.hea").read_text().split()[3])),
                                    1000, 500)) for name, _ in records}
    total = sum(len(getattr(splits, s)) for s in ("train", "val", "test"))
    assert total == sum(n_windows.values())
    # Train/val/test hold disjoint recordings: every window of a split matches a recording of it.
    train_vectors = {tuple(row[:20].tolist()) for row in x[:, 0]}
    test_vectors = {tuple(row[:20].tolist()) for row in splits.test.tensors[0][:, 0]}
    assert not train_vectors & test_vectors


def test_split_is_fixed_by_its_seed(ecg_root):
    a = create_task("ecg").load(ecg_root, download=False)
    b = create_task("ecg").load(ecg_root, download=False)
    c = create_task("ecg", split_seed=1).load(ecg_root, download=False)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert a.sizes() != c.sizes() or not torch.equal(a.test.tensors[0], c.test.tensors[0])


def test_reference_with_header_line(tmp_path):
    root = write_physionet2017(tmp_path / "p")
    ref = root / "training2017" / "REFERENCE.csv"
    ref.write_text("data_source,class\n" + ref.read_text())
    assert len(read_reference(root / "training2017")) == 21


def test_missing_data_names_path_and_url(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("ecg").load(tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "training2017" / "REFERENCE.csv") in str(err.value)
    assert URL in str(err.value)


def test_budget_caps_take_fixed_subsets(ecg_root):
    full = create_task("ecg").load(ecg_root, download=False)
    capped = create_task("ecg").load(ecg_root, download=False, max_samples={"test": 5}, seed=0)
    assert len(capped.test) == 5 and len(capped.train) == len(full.train)
    again = create_task("ecg").load(ecg_root, download=False, max_samples={"test": 5}, seed=0)
    assert torch.equal(capped.test.tensors[0], again.test.tensors[0])


def test_error_is_one_minus_macro_f1():
    task = create_task("ecg")
    metrics = task.metrics()
    logits = torch.eye(4)[[0, 0, 1, 2, 3, 3]]
    targets = torch.tensor([0, 1, 1, 2, 3, 0])
    metrics.update(logits, targets)
    values = {k: float(v) for k, v in metrics.compute().items()}
    # per-class F1: class 0: p=1/2 r=1/2 -> .5; class 1: p=1 r=1/2 -> 2/3; class 2: 1; class 3: p=1/2 r=1 -> 2/3
    assert values["f1_macro"] == pytest.approx((0.5 + 2 / 3 + 1 + 2 / 3) / 4)
    assert task.error(values) == pytest.approx(1 - values["f1_macro"])
