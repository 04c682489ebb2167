"""FSD50K: sound-event tagging with 200 labels of the AudioSet ontology (Freesound clips),
the NAS-Bench-360 task; multi-label, from log-mel spectrograms of 1 s audio chunks.

Files as published (NAS-Bench-360's ``audio.zip``, unpacked into data.root):

- ``chunks/tr.csv``, ``chunks/val.csv``, ``chunks/eval.csv``: columns ``files`` (path of a
  wav chunk), ``labels`` (the clip's label names, comma-separated), ``ext`` (the clip id).
  tr / val follow the ``split`` column of FSD50K's dev set; eval is FSD50K's eval set.
- ``chunks/lbl_map.json``: label name -> index 0..199 (FSD50K's vocabulary).
- the chunks: mono wav, 22,050 Hz, 1 s each (``<clip>_<k>.wav``: clips cut every 0.5 s,
  shorter ones tiled). The paths in the csvs were written on the publisher's machine (the
  reference swaps in its own absolute prefix): a path is used as written when that file
  exists, else under data.root by its longest trailing part that exists there
  (``data/dev_chunks/64760_0000.wav`` -> ``<root>/dev_chunks/64760_0000.wav``).

Features (as the reference: torchaudio's MelSpectrogram, librosa's power_to_db), computed
here with torch.stft and our own mel filterbank: audio tiled to at least 1 s; power STFT
with n_fft 1920, a periodic Hann window of 661 samples, hop 220, centred with reflection;
96 triangular HTK mel bands over 0..11,025 Hz (no area normalisation); dB = 10 log10(max(
power, 1e-10)), floored at 80 dB below the chunk's maximum; minus the chunk's mean (the
reference's +75 dB offset before that subtraction cancels out, so it is left out); the
middle 101 frames (a 1 s chunk has exactly 101); one zero column appended -> (1, 96, 102).

Samples: one sample is one chunk, labelled with its clip's labels, and carrying its clip's
index (``groups``; a budget's cap keeps whole clips). Training takes one chunk per clip
drawn once with a fixed seed, as ORCA does (``train_chunks: one``; ``all`` takes every
chunk). Validation and test take every chunk.

Deviation from the reference, stated plainly: no SpecAugment, random padding or cropping,
and no background-noise mixing (the tensors are deterministic).

Loss: BCE with logits, positives weighted 10 (ORCA). Metrics: per clip, as FSD50K's
benchmark and ORCA's evaluation score it (`clip_map`): a clip's logits are the mean of its
chunks' logits, then average precision per label over the clips, averaged over the labels
with a positive clip; the paper's number is 1 - that mAP. `map` is the same over chunks.
"""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import torch
from tqdm import tqdm

from orca.errors import ConfigError, DataNotFoundError
from orca.metrics import ClipMeanAP
from orca.registry import TASKS
from orca.tasks import MultiLabelTask, fetch_archive, reading, require_files

URL = "https://pde-xd.s3.amazonaws.com/audio/audio.zip"
MANIFESTS = {"train": "tr.csv", "val": "val.csv", "test": "eval.csv"}
SAMPLE_RATE, N_FFT, WIN, HOP, N_MELS, FRAMES = 22050, 1920, 661, 220, 96, 101
LABELS = 200


def mel_filterbank(n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE):
    """(n_freqs, n_mels) triangular filters, equally spaced on the HTK mel scale from 0 Hz
    to sample_rate // 2, peak 1 (torchaudio's ``melscale_fbanks`` with norm=None, htk)."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    top = 2595.0 * np.log10(1.0 + (sample_rate // 2) / 700.0)
    edges = 700.0 * (10.0 ** (torch.linspace(0, top, n_mels + 2, dtype=torch.float64) / 2595.0) - 1.0)  # (M + 2,)
    rise = (freqs[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])  # (F, M), 0 -> 1 up to the centre
    fall = (edges[None, 2:] - freqs[:, None]) / (edges[2:] - edges[1:-1])  # 1 -> 0 after it
    return torch.minimum(rise, fall).clamp_min(0).float()


FILTERBANK = mel_filterbank()  # (961, 96)


def log_mel(audio: torch.Tensor) -> torch.Tensor:
    """(B, T) waveforms at 22,050 Hz -> (B, 96, 1 + T // 220) log-mel in dB, floored 80 dB
    below each sample's maximum, each sample's mean removed."""
    window = torch.hann_window(WIN, dtype=audio.dtype)  # periodic, centred inside n_fft by stft
    spec = torch.stft(audio, N_FFT, HOP, WIN, window, center=True, pad_mode="reflect",
                      return_complex=True).abs() ** 2  # (B, 961, frames)
    mel = FILTERBANK.T.to(audio.dtype) @ spec  # (B, 96, frames)
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80.0)
    return db - db.mean(dim=(1, 2), keepdim=True)


def chunk_features(audio: np.ndarray) -> np.ndarray:
    """One chunk (T,) float in [-1, 1] -> (1, 96, 102) float32 (see the module docstring)."""
    if len(audio) < SAMPLE_RATE:  # tile short audio to 1 s
        audio = np.tile(audio, SAMPLE_RATE // len(audio) + 1)[:SAMPLE_RATE]
    db = log_mel(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None])[0]  # (96, >= 101)
    start = (db.shape[1] - FRAMES) // 2
    db = torch.nn.functional.pad(db[:, start : start + FRAMES], (0, 1))  # (96, 102)
    return db[None].numpy()


def read_wav(path: Path) -> np.ndarray:
    """A wav file -> (T,) float32 in [-1, 1] (integer PCM scaled as soundfile does; channels averaged)."""
    with reading(path), warnings.catch_warnings():
        warnings.simplefilter("error", scipy.io.wavfile.WavFileWarning)  # a truncated file only warns
        rate, data = scipy.io.wavfile.read(path)
    if rate != SAMPLE_RATE:
        raise DataNotFoundError(f"{path} is sampled at {rate} Hz; the task's chunks are {SAMPLE_RATE} Hz")
    if data.dtype == np.uint8:
        data = (data - 128.0) / 128.0
    elif data.dtype.kind == "i":
        data = data / float(2 ** (8 * data.itemsize - 1))
    data = data.astype(np.float32)
    data = data.mean(axis=1) if data.ndim == 2 else data
    if len(data) == 0:
        raise DataNotFoundError(f"{path} holds no samples")
    return data


class ChunkPaths:
    """Resolves a path as written in a manifest to a file: as written if it exists, else
    under `root` by its longest trailing part that exists there (remembering how many
    leading parts the last file needed dropped, so that a manifest costs one lookup a row)."""

    def __init__(self, root: Path):
        self.root, self.drop = root, 0

    def __call__(self, listed: str, manifest: Path) -> Path:
        path = Path(listed)
        if path.is_absolute() and path.is_file():
            return path
        parts = path.parts[1:] if path.is_absolute() else path.parts
        for drop in dict.fromkeys([self.drop, *range(len(parts))]):
            candidate = self.root.joinpath(*parts[drop:])
            if candidate.is_file():
                self.drop = drop
                return candidate
        raise DataNotFoundError(f"{manifest} lists {listed}, found neither there nor under {self.root}; "
                                f"re-download {URL} or point data.root at the folder that holds the chunks")


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"files", "labels", "ext"} <= set(rows[0]):
        raise DataNotFoundError(f"{path} should be a csv with columns files, labels, ext and one row a chunk")
    return rows


@TASKS.register("fsd50k")
class FSD50K(MultiLabelTask):
    name = "fsd50k"
    input_shape = (1, N_MELS, FRAMES + 1)
    num_outputs = LABELS
    pos_weight = 10.0
    extra_names = ("groups",)  # the clip each chunk was cut from
    error_name = "1 - mAP"
    paper = {"Hand-designed": 0.62, "NAS-Bench-360": 0.60, "DASH": 0.60, "Perceiver IO": 0.72,
             "FPT": 0.67, "ORCA": 0.56}

    def __init__(self, train_chunks: str = "one", split_seed: int = 0):
        if train_chunks not in ("one", "all"):
            raise ConfigError(f"task.train_chunks must be one or all, not {train_chunks!r}")
        self.train_chunks, self.split_seed = train_chunks, split_seed

    def load_arrays(self, root: Path, download: bool):
        fetch_archive(URL, root, "chunks/tr.csv", download=download)
        folder = root / "chunks"
        require_files(folder, [*MANIFESTS.values(), "lbl_map.json"], URL)
        label_index = json.loads((folder / "lbl_map.json").read_text())  # name -> 0..199
        if sorted(label_index.values()) != list(range(LABELS)):
            raise DataNotFoundError(f"{folder / 'lbl_map.json'} should map {LABELS} label names to 0..{LABELS - 1}")
        resolve = ChunkPaths(root)
        out = {}
        for split, name in MANIFESTS.items():
            rows = read_manifest(folder / name)
            if split == "train" and self.train_chunks == "one":
                rows = self._one_chunk_per_clip(rows)
            x = np.empty((len(rows), *self.input_shape), dtype=np.float32)
            y = np.zeros((len(rows), LABELS), dtype=np.float32)
            _, clips = np.unique([row["ext"] for row in rows], return_inverse=True)  # (n,) clip index
            for i, row in enumerate(tqdm(rows, desc=f"fsd50k {split}", leave=False)):
                x[i] = chunk_features(read_wav(resolve(row["files"], folder / name)))
                for label in row["labels"].split(","):
                    if label not in label_index:
                        raise DataNotFoundError(f"{folder / name}: label {label!r} is not in lbl_map.json")
                    y[i, label_index[label]] = 1.0
            out[split] = (x, y, clips.astype(np.int64))
        return out

    def _one_chunk_per_clip(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        """One row per clip (clips in sorted order), drawn once with the seed."""
        rng = np.random.default_rng(self.split_seed)
        by_clip: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            by_clip.setdefault(row["ext"], []).append(row)
        return [chunks[rng.integers(len(chunks))] for _, chunks in sorted(by_clip.items())]

    def metrics(self):
        metrics = super().metrics()
        metrics.add_metrics({"clip_map": ClipMeanAP()})
        return metrics

    def error(self, metrics):
        return 1.0 - metrics["clip_map"]
