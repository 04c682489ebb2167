"""The PSICOV task on a miniature protein/ folder written in NAS-Bench-360's layout."""
import pickle

import numpy as np
import pytest
import torch

import tasks.psicov  # noqa: F401  (registers the task)
from formats.psicov import PROTEINS, write
from orca.errors import ConfigError, DataNotFoundError
from orca.tasks import create_task
from tasks.psicov import FAR, URL, distance_map, pair_features, place

LENGTHS = {pdb: n for group in PROTEINS.values() for pdb, n in group}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write(tmp_path_factory.mktemp("psicov"))


@pytest.fixture(scope="module")
def splits(root):
    return create_task("psicov").load(root, download=False)


def test_pair_features_follow_the_reference_channel_order():
    L = 3
    feats = {"seq": "ACD", "ss": np.arange(9.0).reshape(3, L), "pssm": np.arange(66.0).reshape(L, 22) / 100,
             "sa": np.array([7.0, 8.0, 9.0]), "entropy": np.array([-1.0, -2.0, -3.0]),
             "ccmpred": np.full((L, L), 0.5), "freecon": np.eye(L), "potential": np.arange(9.0).reshape(L, L)}
    x = pair_features(feats)
    assert x.shape == (57, L, L) and x.dtype == np.float32
    i, j = 0, 2
    assert x[0, i, j] == feats["ss"][0, j] and x[1, i, j] == feats["ss"][0, i]  # ss row 0: (residue j, residue i)
    assert x[4, i, j] == feats["ss"][2, j] and x[5, i, j] == feats["ss"][2, i]
    assert x[6, i, j] == pytest.approx(feats["pssm"][j, 0]) and x[7, i, j] == pytest.approx(feats["pssm"][i, 0])
    assert x[49, i, j] == pytest.approx(feats["pssm"][i, 21])
    assert x[50, i, j] == 9.0 and x[51, i, j] == 7.0  # sa
    assert x[52, i, j] == -3.0 and x[53, i, j] == -1.0  # entropy
    assert x[54, i, j] == 0.5 and x[55, 1, 1] == 1.0 and x[56, i, j] == 2.0


def test_distance_map_cleanup(tmp_path):
    cb = np.array([[0.0, 3.8, 6.0], [3.8, 0.0, 0.5], [6.0, 0.5, 0.0]])
    record = np.empty(3, dtype=object)
    record[:] = [3, "ACD", cb]
    np.save(tmp_path / "x-cb.npy", record, allow_pickle=True)
    y = distance_map(tmp_path / "x-cb.npy", 4)  # the sequence is one residue longer than the map
    assert y[0, 2] == 6.0 and y[1, 2] == 1.0  # below 1 A raised to 1
    assert y[0, 0] == 3.8 and y[1, 1] == pytest.approx((3.8 + 1.0) / 2) and y[2, 2] == 1.0  # diagonal
    assert np.isnan(y[3]).all() and np.isnan(y[:, 3]).all()


def test_place_pads_by_5_top_left_and_crops_long_proteins():
    x = np.ones((57, 4, 4), np.float32)
    y = np.full((4, 4), 6.0, np.float32)
    y[0, 3] = np.nan
    out_x, out_y = np.zeros((57, 512, 512), np.float32), np.full((512, 512), FAR, np.float32)
    out_mask = np.zeros((512, 512), bool)
    place(x, y, out_x, out_y, out_mask)
    assert out_x[:, 5:9, 5:9].all() and out_x.sum() == 57 * 16
    assert out_y[5, 5] == 6.0 and out_y[4, 4] == FAR and out_y[5, 8] == FAR  # unknown distance: masked, FAR
    assert out_mask.sum() == 15 and not out_mask[5, 8]
    long_y = np.arange(520.0, dtype=np.float32)[None].repeat(520, 0)  # a 520-residue protein
    out_x[:], out_y[:], out_mask[:] = 0, FAR, False
    place(np.zeros((57, 520, 520), np.float32), long_y, out_x, out_y, out_mask)
    assert out_mask[5:, 5:].all() and out_mask.sum() == 507 * 507  # residues 0..506 kept
    assert out_y[5, 511] == 506.0


def test_loader_splits_shapes_clip_and_masks(root, splits):
    assert splits.sizes() == {"train": 5, "val": 1, "test": 2}  # 10% of DeepCov for validation
    x, y, mask = splits.test.tensors
    assert x.shape == (2, 57, 512, 512) and x.dtype == torch.float32
    assert y.shape == (2, 512, 512) and mask.shape == (2, 512, 512) and mask.dtype == torch.bool
    for k, (pdb, length) in enumerate(PROTEINS["psicov"]):  # psicov.lst order
        assert int(mask[k].sum()) == length**2 and mask[k, 5:5 + length, 5:5 + length].all()
        _, _, cb = np.load(root / "protein" / "psicov" / "distance" / f"{pdb}-cb.npy", allow_pickle=True)
        assert float(y[k, 5 + 2, 5 + 30]) == pytest.approx(cb[2, 30], rel=1e-6)  # true distances, unclipped
        with open(root / "protein" / "psicov" / "features" / f"{pdb}.pkl", "rb") as f:
            feats = pickle.load(f)
        assert float(x[k, 56, 5 + 2, 5 + 30]) == pytest.approx(feats["potential"][2, 30], rel=1e-6)
        assert float(x[k, 7, 5 + 2, 5 + 30]) == pytest.approx(feats["pssm"][2, 0], rel=1e-6)
        assert float(x[k].abs().sum()) == pytest.approx(float(x[k, :, 5:5 + length, 5:5 + length].abs().sum()))
    assert float(y[:, 0, 0].min()) == FAR and float(y.max()) > 16
    train_y, train_mask = splits.train.tensors[1], splits.train.tensors[2]
    assert float(train_y.max()) == 16.0  # train clipped at 16 A, padding included
    train_lengths = sorted(int(m.sum()) for m in train_mask)
    val_length = int(splits.val.tensors[2].sum())
    assert sorted(train_lengths + [val_length]) == sorted(n * n for _, n in PROTEINS["deepcov"])


def test_max_proteins_caps_each_split(root):
    splits = create_task("psicov", max_proteins=1, val_frac=0.5).load(root, download=False)
    assert splits.sizes() == {"train": 1, "val": 1, "test": 1}


def test_missing_data_names_path_and_url(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("psicov").load(tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "protein" / "deepcov.lst") in str(err.value) and URL in str(err.value)


def test_loss_is_mse_over_the_protein():
    task = create_task("psicov")
    out = torch.tensor([[[5.0, 1.0], [0.0, 50.0]]])
    y = torch.tensor([[[4.0, 3.0], [0.0, 100.0]]])
    mask = torch.tensor([[[True, True], [True, False]]])
    assert float(task.loss(out, y, mask)) == pytest.approx((1 + 4 + 0) / 3)


def test_error_is_mae8_per_protein_length(splits):
    task = create_task("psicov")
    x, y, mask = splits.test.tensors
    metrics = task.metrics()
    metrics.update(y.clone(), y, mask=mask)
    assert float(metrics.compute()["mae8"]) == pytest.approx(0.0)
    metrics = task.metrics()
    metrics.update(y + 2.0, y, mask=mask)  # off by 2 A on every pair
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["mae8"] == pytest.approx(2.0) and task.error(values) == pytest.approx(2.0)


def test_a_load_too_big_for_memory_stops_early(root, monkeypatch):
    import tasks.psicov as module

    monkeypatch.setattr(module, "available_memory", lambda: 100 * 2**20)  # 100 MiB free: not even 2 proteins
    with pytest.raises(ConfigError, match="task.max_proteins"):
        create_task("psicov").load(root, download=False)


def orca_mae8_by_loops(pred, target, length, pad=5):
    """ORCA's psicov_mae for one protein, step by step with its loops (on a small canvas)."""
    side = len(pred)
    P, Y = pred.astype(float).copy(), target.astype(float).copy()
    for j in range(side):  # in place: the upper triangle takes the mean with the lower
        for k in range(j, side):
            P[j, k] = (P[k, j] + P[j, k]) / 2.0
    P[P < 0.01] = 0.01
    P[: side - pad * 2, : side - pad * 2] = P[pad : side - pad, pad : side - pad].copy()
    Y[: side - pad * 2, : side - pad * 2] = Y[pad : side - pad, pad : side - pad].copy()
    PAVG = np.full((length, length), 100.0)
    for j in range(length):
        for k in range(j, length):
            PAVG[j, k] = (P[k, j] + P[j, k]) / 2.0
    Yc, Pc = Y[:length, :length].copy(), PAVG.copy()
    for p in range(length):
        for q in range(length):
            if q - p < 24 or Yc[p, q] > 8:
                Yc[p, q] = Pc[p, q] = np.nan
    return np.nanmean(np.abs(Yc - Pc)) if not np.isnan(np.abs(Yc - Pc)).all() else np.inf


def test_reference_error_is_orcas_mae8_with_the_first_proteins_length(root, splits):
    from orca.metrics import orca_psicov_mae8

    rng = np.random.default_rng(0)
    target = rng.uniform(2, 14, (50, 50))
    pred = target + rng.normal(0, 2, (50, 50))  # not symmetric
    pred[3, 40] = -1.0  # clipped to 0.01
    for length in (30, 40):
        assert orca_psicov_mae8(pred, target, length) == pytest.approx(orca_mae8_by_loops(pred, target, length))
    assert orca_psicov_mae8(pred, np.full((50, 50), 20.0), 30) == np.inf  # no pair within 8 A
    # The task scores every test protein inside psicov.lst's first protein's length.
    task = create_task("psicov")
    task.load(root, download=False)
    first = PROTEINS["psicov"][0]
    assert task.first_test_length == first[1]
    x, y, mask = splits.test.tensors
    outputs = y + torch.linspace(0, 3, 512)  # errors that grow along the columns
    metrics = task.metrics()
    metrics.update(outputs, y, mask=mask)
    values = task.scores({k: float(v) for k, v in metrics.compute().items()})
    expected = np.mean([orca_psicov_mae8(o, t, first[1]) for o, t in zip(outputs.numpy(), y.numpy())])
    assert values["reference_error"] == pytest.approx(expected)
    assert values["reference_error"] != pytest.approx(values["error"])
