"""The Cosmic task on a miniature deepCR ACS-WFC release written in NAS-Bench-360's layout."""
import numpy as np
import pytest
import torch

import tasks.cosmic  # noqa: F401  (registers the task)
from formats.cosmic import write
from orca.errors import DataNotFoundError
from orca.tasks import create_task
from tasks.cosmic import URLS, image_files


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write(tmp_path_factory.mktemp("cosmic"))


def test_loader_crops_every_filter_and_masks_ignored_pixels(root):
    train_files = image_files(root / "npy_train")
    assert len(train_files) == 18 and {p.parts[-4] for p in train_files} == {"f435w", "f606w", "f814w"}
    assert all(p.name != "sky.npy" for p in train_files)
    task = create_task("cosmic")
    splits = task.load(root, download=False)
    assert splits.sizes() == {"train": 16, "val": 2, "test": 4}  # 10% of the train files for validation
    x, y, mask, _ = splits.test.tensors  # and each image's sky level
    assert x.shape == (4, 1, 128, 128) and x.dtype == torch.float32
    assert y.shape == (4, 128, 128) and y.dtype == torch.float32 and mask.dtype == torch.bool
    test_files = image_files(root / "npy_test")
    for i, path in enumerate(test_files):
        data = np.load(path)
        np.testing.assert_array_equal(x[i, 0].numpy(), data[0, 64:192, 64:192])  # no sky added, no scaling
        np.testing.assert_array_equal(y[i].numpy(), data[1, 64:192, 64:192])
        ignore = data[2, 64:192, 64:192] if data.shape[0] == 3 else np.zeros((128, 128))
        np.testing.assert_array_equal(mask[i].numpy(), ignore == 0)
    assert not mask[0].all() and mask[2].all()  # file 2 of the visit has no ignore layer
    assert set(torch.unique(y).tolist()) == {0.0, 1.0}


def test_validation_is_a_fixed_seed_part_of_train(root):
    a = create_task("cosmic").load(root, download=False)
    b = create_task("cosmic").load(root, download=False)
    c = create_task("cosmic", split_seed=3).load(root, download=False)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    train_sums = {float(t.sum()) for t in a.train.tensors[0]}
    assert not {float(t.sum()) for t in a.val.tensors[0]} & train_sums


def test_missing_data_names_path_and_url(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("cosmic").load(tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "npy_train") in str(err.value) and URLS["npy_train"] in str(err.value)


def test_loss_is_bce_over_counted_pixels():
    task = create_task("cosmic")
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 30.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[[True, True], [True, False]]])  # the confident wrong pixel is ignored
    expected = (np.log(2) + np.log(1 + np.exp(2.0)) + np.log(1 + np.exp(-1.0))) / 3
    assert float(task.loss(logits, target, mask)) == pytest.approx(expected, rel=1e-5)


def test_error_is_one_minus_auroc_over_counted_pixels():
    task = create_task("cosmic")
    metrics = task.metrics()
    scores = torch.tensor([[[0.1, 0.4], [0.35, 0.8]], [[-5.0, 4.0], [0.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[[True, True], [True, True]], [[False, False], [False, False]]])
    metrics.update(scores[:1], target[:1], mask=mask[:1])
    metrics.update(scores[1:], target[1:], mask=mask[1:])  # an all-ignored image adds nothing
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["auroc"] == pytest.approx(0.75)  # 3 of the 4 positive/negative pairs ranked right
    assert task.error(values) == pytest.approx(0.25)


def test_reference_error_is_orcas_thresholded_auroc_per_chunk_over_every_pixel():
    from orca.metrics import ChunkedScore, orca_thresholded_auroc

    task = create_task("cosmic")
    metrics = task.metrics()
    scores = torch.tensor([[[0.1, -0.4], [0.35, -0.8]], [[-5.0, 4.0], [0.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    mask = torch.ones(2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = False  # ignored pixels count in ORCA's number all the same
    metrics.update(scores, target, mask=mask)
    values = task.scores({k: float(v) for k, v in metrics.compute().items()})
    # Predictions > 0 over all 8 pixels: positives (0.35, -0.8, -5) -> 1, 0, 0: TPR 1/3; negatives
    # (0.1, -0.4, 4, 0, 0) -> 1, 0, 1, 0, 0: TNR 3/5. A 0/1 score's AUROC is (TPR + TNR) / 2.
    assert values["reference_error"] == pytest.approx(1 - (1 / 3 + 3 / 5) / 2)
    # In chunks (of one image here), the mean of each chunk's value.
    chunked = ChunkedScore(orca_thresholded_auroc, chunk=1)
    chunked.update(scores, target)
    first = (1 / 2 + 1 / 2) / 2  # image 0: positives 0.35, -0.8 -> TPR 1/2; negatives 0.1, -0.4 -> TNR 1/2
    second = (0 + 2 / 3) / 2  # image 1: positive -5 missed; negatives 4, 0, 0 -> TNR 2/3
    assert float(chunked.compute()) == pytest.approx((first + second) / 2)
