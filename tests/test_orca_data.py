"""`protocol.data=orca`: each task's splits, preprocessing, augmentation and loss as ORCA's code
has them (ECG's recording split is in test_ecg.py), on fixtures in the published formats."""
import numpy as np
import pytest
import torch

import tasks  # noqa: F401  (registers the tasks)
from formats import cifar100, darcy, satellite
from orca.tasks import create_task
from tasks.cifar100 import MEAN, STD


def test_satellite_feeds_orcas_raw_values_and_ours_z_scores(tmp_path):
    root = satellite.write(tmp_path / "satellite")
    ours = create_task("satellite").load(root, download=False)
    raw = create_task("satellite").load(root, download=False, orca_data=True)
    assert raw.sizes() == ours.sizes()
    published = np.load(root / "satellite_test.npy", allow_pickle=True)[()]["data"]
    np.testing.assert_allclose(raw.test.tensors[0][:, 0].numpy(), published, rtol=1e-6)
    z = ours.test.tensors[0][:, 0]
    assert torch.allclose(z.mean(1), torch.zeros(len(z)), atol=1e-5) and torch.allclose(z.std(1, unbiased=False), torch.ones(len(z)), atol=1e-4)


def test_cifar100_crops_with_black_padding_and_flips_as_orcas_transforms(tmp_path):
    task = create_task("cifar100")
    task.load(cifar100.write(tmp_path / "c100"), download=False)
    x = torch.randn(64, 3, 32, 32)
    torch.manual_seed(0)
    out = task.augment(x)
    black = torch.tensor([-m / s for m, s in zip(MEAN, STD)])[:, None]
    # Some images were shifted: their padded border holds black pixels, never zeros.
    border = torch.cat([out[..., 0, :], out[..., -1, :], out[..., :, 0], out[..., :, -1]], dim=-1)  # (B, 3, 128)
    is_black = torch.isclose(border, black[None].expand_as(border)).all(1)  # (B, 128)
    assert is_black.any() and not torch.isclose(out, torch.zeros(())).all(1).any()
    assert not torch.equal(out, x)
    assert torch.equal(create_task("cifar100", crop_pad=0).augment(x), x)
    # protocol.data=orca crops with ORCA's padding 4 whatever crop_pad says.
    plain = create_task("cifar100", crop_pad=0)
    plain.load(cifar100.write(tmp_path / "c100b"), download=False, orca_data=True)
    assert not torch.equal(plain.augment(x), x)


def test_darcy_loss_is_summed_over_the_batch_under_orcas_data(tmp_path):
    root = darcy.write(tmp_path / "darcy")
    options = dict(n_train=6, n_val=2, n_test=3)
    ours, orcas = create_task("darcy", **options), create_task("darcy", **options)
    splits = ours.load(root, download=False)
    orcas.load(root, download=False, orca_data=True)
    y = splits.train.tensors[1][:4]
    out = y + 0.1 * torch.randn_like(y)
    assert float(orcas.loss(out, y)) == pytest.approx(4 * float(ours.loss(out, y)), rel=1e-5)


def test_psicov_loss_takes_the_whole_map_under_orcas_data():
    ours, orcas = create_task("psicov"), create_task("psicov")
    orcas.orca_data = True  # as load(..., orca_data=True) sets it
    out, y = torch.tensor([[[5.0, 1.0], [0.0, 50.0]]]), torch.tensor([[[4.0, 3.0], [0.0, 100.0]]])
    mask = torch.tensor([[[True, True], [True, False]]])
    assert float(ours.loss(out, y, mask)) == pytest.approx((1 + 4 + 0) / 3)
    assert float(orcas.loss(out, y, mask)) == pytest.approx((1 + 4 + 0 + 2500) / 4)


def test_cosmic_adds_orcas_random_sky_in_training_and_test_only_under_orcas_data(tmp_path):
    from formats import cosmic

    root = cosmic.write(tmp_path / "cosmic")
    ours, orcas = create_task("cosmic"), create_task("cosmic")
    splits = ours.load(root, download=False)
    orcas.load(root, download=False, orca_data=True)
    x, y, mask, sky = splits.test.tensors
    first = sorted((root / "npy_test").glob("*/*/*/[0-9]*.npy"))[0]  # <k>_<j>.npy: sky.npy's entry k - 1
    assert float(sky[0]) == pytest.approx(float(np.load(first.parent / "sky.npy")[int(first.name.split("_")[0]) - 1]))
    assert torch.equal(ours.augment(x, mask=mask, sky=sky), x) and torch.equal(ours.augment_eval(x, sky=sky), x)
    torch.manual_seed(0)
    for shifted in (orcas.augment(x, mask=mask, sky=sky), orcas.augment_eval(x, mask=mask, sky=sky)):
        added = (shifted - x).flatten(1)  # one constant a image: its sky level times U(-0.9, 3)
        assert torch.allclose(added, added[:, :1].expand_as(added), atol=1e-3)
        factor = added[:, 0] / sky
        assert (factor >= -0.9 - 1e-4).all() and (factor <= 3 + 1e-4).all() and factor.std() > 0
