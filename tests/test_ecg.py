"""The ECG task on a miniature PhysioNet/CinC 2017 release written in the published format."""
import numpy as np
import pytest
import scipy.io
import torch

from conftest import write_physionet2017
from orca.errors import DataNotFoundError
from orca.tasks import create_task
from tasks.ecg import URL, read_reference, windows


def test_windows_are_zscored_1000_with_stride_500():
    signal = np.arange(2600, dtype=np.float32)
    w = windows(signal, 1000, 500)
    assert w.shape == (4, 1000)  # starts 0, 500, 1000, 1500 (< 2600 - 1000, NAS-Bench-360's range)
    z = (signal - signal.mean()) / signal.std()
    np.testing.assert_allclose(w[1], z[500:1500], rtol=1e-5)
    assert windows(signal[:2500], 1000, 500).shape == (3, 1000)  # 1500 = T - 1000 is not a start
    assert windows(signal[:800], 1000, 500).shape == (1, 1000)  # short: one zero-padded window


def test_splits_hold_each_recording_once_and_cut_windows_when_read(ecg_root):
    splits = create_task("ecg").load(ecg_root, download=False)
    train = splits.train
    signal = train.windows.signal  # every training recording, end to end
    assert signal.nbytes < len(train) * 1000 * 4 / 2  # the windows overlap: a copy each would take over twice as much
    x, y, groups = train.tensors  # cut on demand, as a TensorDataset holds them
    assert torch.equal(train[5][0], x[5]) and int(train[5][1]) == int(y[5])
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=8)))
    assert torch.equal(batch[0], x[:8]) and torch.equal(batch[2], groups[:8])
    # The same values as cutting each recording's z-scored signal with its stride.
    first = int(groups[0])
    name, label = read_reference(ecg_root / "training2017")[first]
    raw = scipy.io.loadmat(ecg_root / "training2017" / f"{name}.mat")["val"][0].astype(np.float32)
    z, stride = (raw - raw.mean()) / (raw.std() + 1e-8), create_task("ecg").strides[label]
    expected = np.stack([z[s : s + 1000] for s in range(0, len(z) - 1000, stride)])
    assert torch.equal(x[groups == first][:, 0], torch.from_numpy(expected))


def test_training_windows_take_the_published_class_strides():
    assert create_task("ecg").strides == [500, 83, 250, 25]  # N, A, O, ~
    assert create_task("ecg").eval_strides == [500, 83, 250, 25]  # the benchmark's test windows, by default
    assert create_task("ecg", eval_stride=500).eval_strides == [500] * 4


def test_default_cut_is_the_benchmarks_so_normal_windows_are_a_minority(tmp_path):
    # In the published data 59 % of recordings are "N", 9 % "A", 28 % "O", 3 % "~"; the class
    # strides give a rare class's recording 2 to 20 times the windows of a normal one.
    root = write_physionet2017(tmp_path / "ecg", n_per_class=(118, 18, 56, 8))
    for task, most in ((create_task("ecg"), 0.40), (create_task("ecg", eval_stride=500), 1.0)):
        splits = task.load(root, download=False)
        for split in ("val", "test"):
            y = getattr(splits, split).tensors[1]
            share = float((y == 0).float().mean())
            assert share < most, (split, share)
    share_every_500 = float((create_task("ecg", eval_stride=500).load(root, download=False).test.tensors[1] == 0)
                            .float().mean())
    assert share_every_500 > 0.45  # cut alike, normal recordings dominate


def test_orca_data_is_its_90_10_recording_split_without_validation(ecg_root):
    from sklearn.model_selection import train_test_split

    task = create_task("ecg")
    splits = task.load(ecg_root, download=False, orca_data=True)
    records = read_reference(ecg_root / "training2017")
    labels = [label for _, label in records]
    # ORCA's load_ecg: train_test_split(all_data, all_label, test_size=0.1, random_state=0)
    _, _, _, _, train_ids, test_ids = train_test_split(np.zeros(len(records)), labels, np.arange(len(records)),
                                                       test_size=0.1, random_state=0)
    assert set(splits.train.tensors[2].tolist()) == set(train_ids.tolist())
    assert set(splits.test.tensors[2].tolist()) == set(test_ids.tolist())
    assert len(splits.val) == 0
    # Test windows take the class strides, as slide_and_cut cuts them.
    lengths = {i: int((ecg_root / "training2017" / f"{name}.hea").read_text().split()[3])
               for i, (name, _) in enumerate(records)}
    expected = sum(len(range(0, lengths[i] - 1000, task.strides[labels[i]])) for i in test_ids)
    assert len(splits.test) == expected
    # Together, training and test hold every window once: train + validation is ORCA's training set.
    both = splits.selected_on_test()
    assert len(both.train) == len(splits.train) and both.val is splits.test


def test_loader_reads_release_and_splits_by_recording(ecg_root):
    task = create_task("ecg")
    splits = task.load(ecg_root, download=False)
    x, y, groups = splits.train.tensors
    assert x.shape[1:] == (1, 1000) and x.dtype == torch.float32
    assert set(y.unique().tolist()) == {0, 1, 2, 3}
    # Every recording is cut with its class's stride, in whichever split it lands.
    records = read_reference(ecg_root / "training2017")
    lengths = [int((ecg_root / "training2017" / f"{name}.hea").read_text().split()[3]) for name, _ in records]
    n_windows = [len(windows(np.zeros(n), 1000, task.strides[label])) for n, (_, label) in zip(lengths, records)]
    n_eval = [len(windows(np.zeros(n), 1000, task.eval_strides[label])) for n, (_, label) in zip(lengths, records)]
    in_train = set(groups.tolist())
    total = sum(len(getattr(splits, s)) for s in ("train", "val", "test"))
    assert total == sum(n_windows[i] if i in in_train else n_eval[i] for i in range(len(records)))
    # Train/val/test hold disjoint recordings, and the group ids say which recording a window is from.
    split_groups = [set(getattr(splits, s).tensors[2].tolist()) for s in ("train", "val", "test")]
    assert not (split_groups[0] & split_groups[1] or split_groups[0] & split_groups[2] or split_groups[1] & split_groups[2])
    assert sum(len(g) for g in split_groups) == len(records)
    for g in split_groups[0]:
        assert (groups == g).sum() == n_windows[g] and len(set(y[groups == g].tolist())) == 1
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


def test_budget_caps_take_fixed_window_subsets_from_all_recordings(tmp_path):
    root = write_physionet2017(tmp_path / "ecg", n_per_class=(40, 10, 20, 5))
    full = create_task("ecg").load(root, download=False)
    cap = len(full.test) // 4
    capped = create_task("ecg").load(root, download=False, max_samples={"test": cap}, seed=0)
    assert len(capped.test) == cap and len(capped.train) == len(full.train)
    kept, every = capped.test.tensors[2], full.test.tensors[2]
    # Windows, not whole recordings: most recordings are represented, few by all their windows.
    assert len(kept.unique()) > 0.6 * len(every.unique())
    whole = sum(int((kept == g).sum() == (every == g).sum()) for g in kept.unique())
    assert whole < len(kept.unique()) / 2
    again = create_task("ecg").load(root, download=False, max_samples={"test": cap}, seed=0)
    assert torch.equal(capped.test.tensors[0], again.test.tensors[0])


def test_error_is_one_minus_macro_f1():
    task = create_task("ecg")
    metrics = task.metrics()
    logits = torch.eye(4)[[0, 0, 1, 2, 3, 3]]
    targets = torch.tensor([0, 1, 1, 2, 3, 0])
    groups = torch.arange(6)  # one window a recording: the vote is the window's prediction
    metrics.update(logits, targets, groups=groups)
    values = {k: float(v) for k, v in metrics.compute().items()}
    # per-class F1: class 0: p=1/2 r=1/2 -> .5; class 1: p=1 r=1/2 -> 2/3; class 2: 1; class 3: p=1/2 r=1 -> 2/3
    assert values["f1_macro"] == pytest.approx((0.5 + 2 / 3 + 1 + 2 / 3) / 4)
    assert values["record_f1_macro"] == pytest.approx(values["f1_macro"])
    assert task.error(values) == pytest.approx(1 - values["f1_macro"])


def test_record_f1_votes_over_each_recordings_windows():
    metrics = create_task("ecg").metrics()
    # recording 0 (class 1): windows predict 1, 1, 0 -> 1; recording 1 (class 0): 0, 2 -> tie, lowest: 0;
    # recording 2 (class 2): 3 -> 3 (wrong).
    votes = torch.tensor([1, 1, 0, 0, 2, 3])
    metrics.update(torch.eye(4)[votes], torch.tensor([1, 1, 1, 0, 0, 2]), groups=torch.tensor([5, 5, 5, 9, 9, 7]))
    values = {k: float(v) for k, v in metrics.compute().items()}
    # records: predicted (1, 0, 3) against true (1, 0, 2): F1 class 0: 1, class 1: 1, class 2: 0, class 3: 0
    assert values["record_f1_macro"] == pytest.approx(2 / 4)


def test_reference_error_is_orcas_chunked_f1_of_present_classes():
    from orca.metrics import ChunkedScore, orca_ecg_f1

    # ORCA's ecg_f1 on one chunk: labels (0, 0, 1, 1), predictions (0, 1, 1, 1); classes 2 and 3
    # appear in neither, so the mean runs over classes 0 and 1: F1 0 = 2/3, F1 1 = 4/5.
    logits = torch.eye(4)[[0, 1, 1, 1]].double().numpy()
    assert orca_ecg_f1(logits, np.array([0, 0, 1, 1])) == pytest.approx((2 / 3 + 4 / 5) / 2)
    # Chunks of 3 over 7 samples in the metric's fixed order: the mean of three chunk scores.
    preds, target = torch.eye(4)[[0, 1, 2, 3, 0, 2, 1]], torch.tensor([0, 1, 2, 0, 0, 3, 1])
    metric = ChunkedScore(orca_ecg_f1, chunk=3, seed=0)
    metric.update(preds[:4], target[:4])
    metric.update(preds[4:], target[4:])
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0)).numpy()
    by_hand = [orca_ecg_f1(preds[c].double().numpy(), target[c].numpy()) for c in (order[:3], order[3:6], order[6:])]
    assert float(metric.compute()) == pytest.approx(np.mean(by_hand))
    assert float(metric.compute()) != pytest.approx(
        float(create_task("ecg").metrics()["f1_macro"](preds, target)))  # not the split's F1
    task = create_task("ecg")
    metrics = task.metrics()
    metrics.update(preds, target, groups=torch.arange(7))
    values = task.scores({k: float(v) for k, v in metrics.compute().items()})
    assert values["reference_error"] == pytest.approx(1 - values["orca_f1"])
    assert values["error"] == pytest.approx(1 - values["f1_macro"])
