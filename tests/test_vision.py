"""Vision bodies (a tiny random Swin), the image source data, and k-means pseudo-labels."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from orca.align.sources import IMAGENET_MEAN, IMAGENET_STD, load_source
from orca.bodies import load_body
from orca.errors import ConfigError, DataNotFoundError
from orca.pipeline import train
from orca.tasks import kmeans_labels

SWIN = ("body=tiny-random-swin", "budget=smoke")


def write_image_folder(root: Path, classes=("cat", "dog", "ship"), per_class: int = 6, size: int = 20) -> Path:
    """<root>/<class>/<n>.jpg, each class its own colour."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size, 3), 60 * c + 40, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:04d}.jpg")
    return root


@pytest.fixture(scope="module")
def swin():
    return load_body("tiny-random-swin")


def test_swin_body_contract(swin):
    body = swin.body
    assert (body.hidden_size, body.output_size, body.image_size) == (16, 32, 32)
    assert body.position_embeddings is None and body.output_grid((8, 8)) == (4, 4)
    out = body(torch.randn(2, 64, 16), (8, 8))
    assert out.shape == (2, 16, 32)
    assert swin.image_embeddings is not None and body.model.embeddings is None  # the stem lives outside


def test_image_folder_source_is_the_swin_stem_mean_pooled(swin, tmp_path):
    folder = write_image_folder(tmp_path / "images")
    feats, labels, description = load_source("image-folder", swin, 12, 32, str(folder), seed=0,
                                             cache_dir=tmp_path / "cache")
    assert feats.shape == (12, 16) and set(labels.tolist()) <= {0, 1, 2} and "3 classes" in description
    # Recompute one sample by hand: resize to 32, ImageNet normalisation, stem, mean over patches.
    all_files = sorted(folder.glob("*/*.jpg"))
    keep = np.sort(np.random.default_rng(0).permutation(len(all_files))[:12])
    image = torch.tensor(np.asarray(Image.open(all_files[keep[0]]).convert("RGB")), dtype=torch.float32)
    image = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None] / 255, size=(32, 32), mode="bilinear",
                                            antialias=True)
    image = (image - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    tokens, _ = swin.image_embeddings(image)
    assert torch.allclose(feats[0], tokens.mean(1)[0], atol=1e-4)


def test_orca_image_transform_is_cifar_crop_mirror_and_statistics(swin, tmp_path):
    """ORCA's CIFAR-10 source (align.image_transform=orca): a random crop padded by 4 and a mirror
    (seeded), CIFAR-10's statistics; cached apart from the ImageNet features."""
    from orca.align.sources import CIFAR10_ORCA_MEAN, CIFAR10_ORCA_STD, image_transform

    grey = Image.fromarray(np.full((32, 32, 3), 128, np.uint8))
    torch.manual_seed(0)
    out = image_transform("orca", 32)(grey)  # (3, 32, 32): a shift of at most 4 keeps the centre inside
    expected = (128 / 255 - torch.tensor(CIFAR10_ORCA_MEAN)) / torch.tensor(CIFAR10_ORCA_STD)
    assert torch.allclose(out[:, 16, 16], expected, atol=1e-6)
    shifted = [(image_transform("orca", 32)(grey)[0] != out[0, 16, 16]).any() for _ in range(20)]
    assert any(shifted)  # the zero padding shows at a border whenever the crop moves
    folder = write_image_folder(tmp_path / "images")
    kwargs = dict(loaded=swin, num_samples=12, seq_len=32, root=str(folder), cache_dir=tmp_path / "cache")
    plain, _, _ = load_source("image-folder", seed=0, **kwargs)
    orca, _, description = load_source("image-folder", seed=0, image_transform="orca", **kwargs)
    again, _, cached = load_source("image-folder", seed=0, image_transform="orca", **kwargs)
    assert "orca transform" in description and "(cached)" in cached and torch.equal(orca, again)
    assert not torch.allclose(plain, orca)
    with pytest.raises(ConfigError, match="known: imagenet, orca"):
        image_transform("cifar", 32)


def test_image_folder_source_needs_a_folder(swin, tmp_path):
    with pytest.raises(DataNotFoundError, match="source_root"):
        load_source("image-folder", swin, 4, 32, str(tmp_path / "nothing"), seed=0, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("method", ["orca", "finetune", "scratch"])
def test_swin_runs_on_images(make_cfg, tmp_path, method):
    """ORCA aligns the 2D embedder to images through the Swin stem."""
    folder = write_image_folder(tmp_path / "images")
    cfg = make_cfg("task=digits", *SWIN, f"method={method}", f"align.source_root={folder}")
    record = train(cfg)
    assert 0 <= record["metrics"]["test"]["error"] <= 100
    if method == "orca":
        assert "image folder" in record["align"]["source"]
        assert np.isfinite(record["align"]["before"]) and np.isfinite(record["align"]["after"])


def test_swin_refuses_a_grid_too_small_for_its_windows(make_cfg):
    """Linear patches of an 8x8 digit make a 4x4 grid; the tiny Swin needs 8x8."""
    with pytest.raises(ConfigError, match="at least 8x8.*swin_patch"):
        train(make_cfg("task=digits", *SWIN, "embedder=linear_patch"))


def test_fpt_keeps_a_swin_bodys_own_patch_embedder(make_cfg):
    """FPT's linear patch layer cannot give a Swin its grid: FPT trains the Swin's own."""
    record = train(make_cfg("task=digits", *SWIN, "method=fpt", "finetune.max_steps=2"))
    assert record["finetune"]["embedder"] == "swin_patch" and record["method"] == "fpt"


def test_kmeans_pseudo_labels_find_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 20
    truth = np.repeat(np.arange(3), 30)
    targets = torch.tensor(centres[truth] + rng.normal(size=(90, 5)), dtype=torch.float32)
    labels = kmeans_labels(targets, k=3)
    assert labels.dtype == torch.long and set(labels.tolist()) == {0, 1, 2}
    for c in range(3):  # each true cluster maps to one pseudo-label
        assert len(set(labels[truth == c].tolist())) == 1


def test_kmeans_pseudo_labels_on_large_fields_are_pooled_first():
    fields = torch.cat([torch.zeros(10, 64, 64), torch.ones(10, 64, 64)])  # 4096 values > 1024
    labels = kmeans_labels(fields, k=10)
    assert len(labels) == 20 and len(set(labels[:10].tolist())) == 1 and labels[0] != labels[-1]
