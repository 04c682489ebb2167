"""Source datasets for the align stage: labelled features of what the body was pretrained on.

For a language body: text windows of ``seq_len`` tokens passed through the body's own
input embeddings (word + position, as pretrained) and mean-pooled over real tokens, each
with a label. Two text sources are built in:

- ``conll2003``: CoNLL-2003 in its standard column format (``train.txt``: ``token POS chunk
  NER`` a line, blank line between sentences), as ORCA uses. One sample per sentence; its
  label is the sentence's most frequent entity type (PER, ORG, LOC, MISC), or O if it names
  none: 5 classes.
- ``pydoc-topics``: offline fallback from text every CPython ships (``pydoc_data.topics``):
  consecutive 20-word chunks of the 10 longest help topics, labelled by topic: 10 classes.

For a vision body (Swin): images resized to the body's input size, normalised with the
ImageNet statistics the body was trained with, passed through the body's own patch
embedding and mean-pooled over patches, each with its class:

- ``cifar10``: CIFAR-10's training images through torchvision (downloaded when online), as
  ORCA uses.
- ``image-folder``: any folder of ``<class>/<image>`` files (torchvision's ImageFolder),
  e.g. ``align.source_root=../shared/datasets/cifar10-subset/train``.

Features are cached on disk per (body, source, size, seed); see :func:`load_source`.
"""
from __future__ import annotations

import inspect
import logging
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from orca.bodies import LoadedBody
from orca.choices import IMAGE_TRANSFORMS
from orca.errors import ConfigError, DataNotFoundError
from orca.registry import SOURCES
from orca.tasks import fetch_archive

log = logging.getLogger(__name__)
CONLL_URL = "https://data.deepai.org/conll2003.zip"
ENTITY_TYPES = ("O", "PER", "ORG", "LOC", "MISC")


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences as (tokens, NER tags) from a CoNLL-2003 column file."""
    sentences, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        tokens.append(parts[0])
        tags.append(parts[-1])
    return sentences


def sentence_label(tags: list[str]) -> int:
    """Index in ENTITY_TYPES of the most frequent entity type; 0 (O) when none."""
    kinds = Counter(re.sub(r"^[BI]-", "", t) for t in tags if t != "O")
    return ENTITY_TYPES.index(kinds.most_common(1)[0][0]) if kinds else 0


@torch.no_grad()
def embed_windows(loaded: LoadedBody, input_ids: torch.Tensor, mask: torch.Tensor,
                  batch_size: int = 256) -> torch.Tensor:
    """(n, T) token ids and (n, T) 0/1 mask -> (n, D) mean over real tokens of the body's
    own input embeddings."""
    out = []
    for start in tqdm(range(0, len(input_ids), batch_size), desc="source features", leave=False):
        ids, m = input_ids[start : start + batch_size], mask[start : start + batch_size].float()
        emb = loaded.text_embeddings(ids)  # (b, T, D)
        out.append((emb * m[..., None]).sum(1) / m.sum(1, keepdim=True))
    return torch.cat(out)


def _tokenize(loaded: LoadedBody, texts: list[str], seq_len: int):
    """Token ids and attention mask, each (n, seq_len): truncated or padded to seq_len."""
    return loaded.tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")


def _require_text_body(loaded: LoadedBody, source: str) -> None:
    if loaded.tokenizer is None or loaded.text_embeddings is None:
        raise ConfigError(f"source {source!r} needs a language body with a tokenizer; {loaded.key!r} has none")


@SOURCES.register("conll2003")
def conll2003(loaded: LoadedBody, num_samples: int, seq_len: int, root: str | None, seed: int, download: bool = True):
    _require_text_body(loaded, "conll2003")
    if root is None:
        raise ConfigError("source conll2003 needs its folder: align.source_root=PATH (holding train.txt)")
    folder = Path(root).expanduser()
    fetch_archive(CONLL_URL, folder, "train.txt", download=download)
    sentences = read_conll(folder / "train.txt")
    rng = np.random.default_rng(seed)
    chosen = [sentences[i] for i in np.sort(rng.permutation(len(sentences))[:num_samples])]
    enc = _tokenize(loaded, [" ".join(toks) for toks, _ in chosen], seq_len)
    labels = torch.tensor([sentence_label(tags) for _, tags in chosen])
    feats = embed_windows(loaded, enc["input_ids"], enc["attention_mask"])
    return feats, labels, f"conll2003 from {folder / 'train.txt'}: {len(chosen)} sentences, {seq_len} tokens"


@SOURCES.register("pydoc-topics")
def pydoc_topics(loaded: LoadedBody, num_samples: int, seq_len: int, root: str | None, seed: int, download: bool = True):
    from pydoc_data.topics import topics

    _require_text_body(loaded, "pydoc-topics")
    longest = sorted(topics, key=lambda k: len(topics[k]), reverse=True)[:10]
    texts, labels = [], []
    for label, topic in enumerate(longest):  # chunks of 20 words, about seq_len word pieces
        words = topics[topic].split()
        for start in range(0, len(words) - 19, 20):
            texts.append(" ".join(words[start : start + 20]))
            labels.append(label)
    keep = np.sort(np.random.default_rng(seed).permutation(len(texts))[:num_samples])
    enc = _tokenize(loaded, [texts[i] for i in keep], seq_len)
    feats = embed_windows(loaded, enc["input_ids"], enc["attention_mask"])
    return (feats, torch.tensor([labels[i] for i in keep]),
            f"pydoc-topics (offline fallback, Python's help text): {len(keep)} windows of {seq_len} tokens, "
            f"{len(longest)} topics")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ORCA's CIFAR-10 statistics (src/data_loaders.py: load_cifar), as its source images use them
CIFAR10_ORCA_MEAN, CIFAR10_ORCA_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def image_transform(name: str, size: int):
    """PIL image -> (3, size, size) float tensor. "imagenet": resized, ImageNet statistics (what
    Swin was trained on). "orca": as ORCA's CIFAR-10 source (src/data_loaders.py: load_cifar,
    its training transforms; src/embedder.py: get_tgt_model resizes): a random crop of the image
    padded by 4, a random mirror, CIFAR-10 statistics, resized."""
    from torchvision.transforms import v2

    if name not in IMAGE_TRANSFORMS:
        raise ConfigError(f"align.image_transform={name!r}; known: {', '.join(IMAGE_TRANSFORMS)}")
    tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if name == "imagenet":
        return v2.Compose([*tensor, v2.Resize((size, size)), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    crop = v2.Lambda(lambda image: v2.RandomCrop(image.size[::-1], padding=4)(image))  # (H, W) of a PIL image
    return v2.Compose([crop, v2.RandomHorizontalFlip(), *tensor, v2.Normalize(CIFAR10_ORCA_MEAN, CIFAR10_ORCA_STD),
                       v2.Resize((size, size))])


@torch.no_grad()
def embed_images(loaded: LoadedBody, dataset, indices: np.ndarray, batch_size: int = 64,
                 transform: str = "imagenet", seed: int = 0) -> torch.Tensor:
    """Images of a torchvision dataset -> (n, D) mean over patches of the body's own patch
    embedding, each image as `transform` (:func:`image_transform`) makes it; a random
    transform draws from `seed`."""
    if loaded.image_embeddings is None:
        raise ConfigError(f"an image source needs a vision body (e.g. body=swin-base); {loaded.key!r} is not one")
    prepare = image_transform(transform, loaded.body.image_size)
    out = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(indices), batch_size), desc="source features", leave=False):
            batch = indices[start : start + batch_size]
            images = torch.stack([prepare(dataset[int(i)][0].convert("RGB")) for i in batch])  # (b, 3, S, S)
            tokens, _ = loaded.image_embeddings(images)  # (b, N, D)
            out.append(tokens.mean(1))
    return torch.cat(out)


def _sample(targets, num_samples: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(len(targets))[:num_samples])


@SOURCES.register("cifar10")
def cifar10(loaded: LoadedBody, num_samples: int, seq_len: int, root: str | None, seed: int, download: bool = True,
            transform: str = "imagenet"):
    from torchvision.datasets import CIFAR10

    folder = Path(root or "data/cifar10").expanduser()
    try:
        dataset = CIFAR10(str(folder), train=True, download=download)
    except (RuntimeError, OSError) as exc:
        raise DataNotFoundError(
            f"CIFAR-10 not found in {folder} and not downloadable ({str(exc).splitlines()[0]}); get "
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into that folder, or give any image "
            "folder: align.source=image-folder align.source_root=PATH"
        ) from None
    keep = _sample(dataset.targets, num_samples, seed)
    feats = embed_images(loaded, dataset, keep, transform=transform, seed=seed)
    return (feats, torch.tensor(dataset.targets)[keep],
            f"cifar10 from {folder}: {len(keep)} training images, {transform} transform")


@SOURCES.register("image-folder")
def image_folder(loaded: LoadedBody, num_samples: int, seq_len: int, root: str | None, seed: int,
                 download: bool = True, transform: str = "imagenet"):
    from torchvision.datasets import ImageFolder

    if root is None or not Path(root).expanduser().is_dir():
        raise DataNotFoundError(f"source image-folder needs align.source_root=PATH, a folder of <class>/<image> "
                                f"files (got {root!r})")
    dataset = ImageFolder(str(Path(root).expanduser()))
    keep = _sample(dataset.targets, num_samples, seed)
    feats = embed_images(loaded, dataset, keep, transform=transform, seed=seed)
    return (feats, torch.tensor(dataset.targets)[keep],
            f"image folder {root}: {len(keep)} images, {len(dataset.classes)} classes, {transform} transform")


def choose_source(source: str, root: str | None, text_fallback: bool, images: bool) -> str:
    """align.source "auto": what the body was pretrained on. A vision body: an image folder
    given as align.source_root, else CIFAR-10. A text body: CoNLL-2003 at align.source_root,
    else (align.text_fallback) Python's help text; without the fallback (budget=paper, as
    ORCA), CoNLL-2003 or an error naming align.source_root."""
    if source != "auto":
        return source
    if images:
        return "image-folder" if root else "cifar10"
    if root:
        return "conll2003"
    if not text_fallback:
        raise ConfigError("this run aligns a text body to CoNLL-2003, as ORCA does (budget=paper): give its "
                          "folder as align.source_root=PATH (train.txt there, downloaded into it when online), "
                          "or align.text_fallback=true for Python's help text instead")
    return "pydoc-topics"


def load_source(name: str, loaded: LoadedBody, num_samples: int, seq_len: int, root: str | None,
                seed: int, cache_dir: str | Path, download: bool = True, image_transform: str = "imagenet"):
    """(features (n, D) float32, labels (n,) int64, description), cached on disk per
    (body, source, root, size, seed, and an image source's transform when not "imagenet")."""
    source = SOURCES.get(name)
    images = "transform" in inspect.signature(source).parameters  # an image source
    options = {"transform": image_transform} if images else {}
    variant = f"_{image_transform}" if images and image_transform != "imagenet" else ""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_",
                  f"{loaded.key}__{name}__{root or ''}__{num_samples}x{seq_len}_s{seed}{variant}")
    path = Path(cache_dir).expanduser() / "sources" / f"{safe}.pt"
    if path.exists():
        try:
            cached = torch.load(path, weights_only=True)
            log.info("source features from cache %s", path)
            return cached["features"], cached["labels"], cached["description"] + " (cached)"
        except Exception as exc:  # a truncated or foreign file: a cache is rebuilt, never trusted
            log.warning("source-feature cache %s is unreadable (%s: %s); rebuilding it", path, type(exc).__name__, exc)
    feats, labels, description = source(loaded, num_samples, seq_len, root, seed, download=download, **options)
    if len(torch.unique(labels)) < 2:
        raise DataNotFoundError(f"source {name!r} gave fewer than 2 classes ({description})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # processes that write at once (DDP ranks) do not collide
    torch.save({"features": feats.float(), "labels": labels.long(), "description": description}, tmp)
    tmp.replace(path)
    return feats.float(), labels.long(), description
