"""The image-folder task (cifar10) on miniature train/<class>/ and test/<class>/ folders."""
import numpy as np
import pytest
import torch
from PIL import Image

import tasks.cifar10  # noqa: F401  (registers the task)
from formats.cifar10 import CLASSES, TEST_PER_CLASS, TRAIN_PER_CLASS, write
from orca.errors import ConfigError, DataNotFoundError
from orca.tasks import create_task

MEAN = np.array([0.4914, 0.4822, 0.4465])
STD = np.array([0.2470, 0.2435, 0.2616])


@pytest.fixture
def root(tmp_path):
    return write(tmp_path / "images")


def save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


def test_classes_shapes_and_splits_come_from_the_folders(root):
    task = create_task("cifar10")
    splits = task.load(root, download=False)
    n_val = round(0.1 * TRAIN_PER_CLASS) * len(CLASSES)
    assert splits.sizes() == {"train": TRAIN_PER_CLASS * len(CLASSES) - n_val, "val": n_val,
                              "test": TEST_PER_CLASS * len(CLASSES)}
    assert task.classes == sorted(CLASSES) and task.num_outputs == len(CLASSES)
    assert task.input_shape == (3, 32, 32)
    for split in ("train", "val", "test"):
        x, y = getattr(splits, split).tensors
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert sorted(y.unique().tolist()) == [0, 1, 2]
    # test = the test folder, in sorted order: class "bird" (0) first, file 0000.jpg first
    x, y = splits.test.tensors
    pixels = np.asarray(Image.open(root / "test" / "bird" / "0000.jpg")).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(x[0].numpy(), (pixels - MEAN[:, None, None]) / STD[:, None, None], atol=0.05)
    assert y.tolist() == [0] * TEST_PER_CLASS + [1] * TEST_PER_CLASS + [2] * TEST_PER_CLASS


def test_normalisation_by_hand_and_other_image_sizes(tmp_path):
    # lossless PNGs of 8x12 images, one grey: every value checked exactly
    for split in ("train", "test"):
        save(tmp_path / split / "a" / "0.png", np.full((8, 12, 3), (255, 0, 128)))
        save(tmp_path / split / "b" / "0.png", np.full((8, 12), 51))  # grey -> RGB
    task = create_task("cifar10", val_frac=0.0)
    splits = task.load(tmp_path, download=False)
    assert task.input_shape == (3, 8, 12) and task.num_outputs == 2
    x, y = splits.test.tensors
    assert y.tolist() == [0, 1]
    assert x[0, :, 3, 4].tolist() == pytest.approx([(1 - 0.4914) / 0.2470, (0 - 0.4822) / 0.2435,
                                                    (128 / 255 - 0.4465) / 0.2616], abs=1e-5)
    assert x[1, :, 0, 0].tolist() == pytest.approx(((0.2 - MEAN) / STD).tolist(), abs=1e-5)


def test_validation_is_stratified_and_fixed_by_its_seed(root):
    a = create_task("cifar10").load(root, download=False)
    b = create_task("cifar10").load(root, download=False)
    c = create_task("cifar10", split_seed=1).load(root, download=False)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    assert sorted(a.val.tensors[1].tolist()) == [0, 1, 2]  # one image of each class
    train = {row.tobytes() for row in a.train.tensors[0].numpy()}
    assert not any(row.tobytes() in train for row in a.val.tensors[0].numpy())


def test_missing_folder_names_path_and_layout(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("cifar10").load(tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "train") in str(err.value)
    assert "train/<class>/" in str(err.value) and "test/<class>/" in str(err.value)


def test_folders_without_images_are_reported(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(DataNotFoundError, match="no images"):
        create_task("cifar10").load(tmp_path, download=False)
    save(tmp_path / "train" / "dog" / "0.png", np.zeros((4, 4, 3)))  # the class "cat" still has none
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "train" / "cat")):
        create_task("cifar10").load(tmp_path, download=False)


def test_unknown_test_class_and_mixed_sizes_are_reported(tmp_path):
    save(tmp_path / "train" / "a" / "0.png", np.zeros((4, 4, 3)))
    save(tmp_path / "test" / "z" / "0.png", np.zeros((4, 4, 3)))
    with pytest.raises(ConfigError, match="'z'"):
        create_task("cifar10").load(tmp_path, download=False)
    (tmp_path / "test" / "z" / "0.png").unlink()
    (tmp_path / "test" / "z").rmdir()
    save(tmp_path / "test" / "a" / "0.png", np.zeros((4, 4, 3)))
    save(tmp_path / "train" / "a" / "1.png", np.zeros((5, 4, 3)))
    with pytest.raises(ConfigError, match="resize"):
        create_task("cifar10").load(tmp_path, download=False)


def test_error_is_percent_zero_one_error_and_no_paper_column():
    task = create_task("cifar10")
    metrics = task.metrics()
    metrics.update(torch.eye(10)[[1, 2, 3, 4]], torch.tensor([1, 2, 0, 0]))  # 2 of 4 right
    assert task.error({k: float(v) for k, v in metrics.compute().items()}) == pytest.approx(50.0)
    assert task.paper == {}


def test_crop_and_flip_gives_shifted_or_mirrored_copies_of_each_image():
    from tasks.images import crop_and_flip

    torch.manual_seed(0)
    x = torch.randn(64, 3, 6, 6)
    out = crop_and_flip(x, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):  # each output is one of the 5 x 5 crops of its padded image, or its mirror
        crops = [padded[i, :, t : t + 6, l : l + 6] for t in range(5) for l in range(5)]
        same = any(torch.equal(out[i], c) for c in crops)
        mirrored = any(torch.equal(out[i], c.flip(-1)) for c in crops)
        assert same or mirrored
        flips += mirrored and not same
    assert 10 < flips < 54  # about half are mirrored
    assert not torch.equal(out, x)


def test_only_training_batches_are_augmented(root, make_cfg):
    from orca.pipeline import train

    task = create_task("cifar10", crop_pad=4)
    x = torch.randn(8, 3, 32, 32)
    assert not torch.equal(task.augment(x), x)
    assert torch.equal(create_task("cifar10").augment(x), x)  # crop_pad=0: none
    with pytest.raises(ConfigError, match="crop_pad"):
        create_task("cifar10", crop_pad=-1)
    seen = []
    original = tasks.cifar10.ImageFolder.augment

    def spy(self, batch):
        seen.append(batch.shape[0])
        return original(self, batch)

    tasks.cifar10.ImageFolder.augment = spy
    try:
        train(make_cfg("task=cifar10", f"data.root={root}", "data.download=false", "body=tiny-random",
                       "budget=smoke", "task.crop_pad=4", "task.val_frac=0.2", "method=finetune"))
    finally:
        tasks.cifar10.ImageFolder.augment = original
    assert seen and set(seen) == {8}  # 24 training images in batches of 8, never the 6 val or 9 test images
