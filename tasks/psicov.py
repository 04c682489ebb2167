"""PSICOV: protein inter-residue distance prediction (PDNET, Adhikari 2020), as
NAS-Bench-360 publishes it: train on DeepCov proteins, test on the 150 PSICOV proteins.

Files as published (``protein.zip``, unzipped into ``<data.root>/protein/``):
``deepcov.lst`` and ``psicov.lst`` (first token of a line = protein id),
``{deepcov,psicov}/features/<id>.pkl`` (a pickled dict: ``seq`` str of length L, ``ss``
(3, L), ``pssm`` (L, 22), ``sa`` (L,), ``entropy`` (L,), ``ccmpred``, ``freecon``,
``potential`` (L, L)) and ``{deepcov,psicov}/distance/<id>-cb.npy`` (a pickled tuple
(L, sequence, (L, L) C-beta distance map in Angstrom)).

Preprocessing as the reference's: 57 pair channels in its order, each per-residue feature
as two channels (value of residue j, then value of residue i): ss 3x2, pssm 22x2, sa 2,
entropy 2, then ccmpred, freecon, potential. Distances below 1 become 1 and the diagonal
takes its neighbours' mean. The maps are padded by 5 on each side and placed top-left in
a 512x512 canvas (inputs 0, distances 100 outside): inputs (57, 512, 512), targets
(512, 512). Proteins longer than 502 residues do not fit: the reference takes a random
512x512 window; here every split takes the fixed top-left window (residues 0..506), and a
test protein that long is scored on that window only (none of the 150 PSICOV proteins is
that long as far as we know; a warning is logged if one is). The mask of pairs that count
is the protein's own block [5:5+L, 5:5+L] where the true distance is known (distances
missing from the structure are dropped, not scored as 0 as the reference does).

Splits: train = DeepCov less a fixed-seed `val_frac` (10%) held out for validation
(`split_seed`); test = all of psicov.lst (the full 150 proteins; ORCA's variant with
validation took half of them). Train distances are clipped at `train_clip` (16 A, the
reference's label engineering, which focuses the loss on the close pairs the metric
scores); validation and test keep true distances.

Memory: one sample is 57 x 512 x 512 float32 = 60 MB, so all 3,356 proteins need about
200 GB held densely as the task contract does. `max_proteins` caps every split at a
fixed-seed random subset of that many proteins, chosen before any file is read; a load
that would not fit into the free memory stops early and says so.

Loss: mean squared error over the pairs that count (ORCA takes it over the whole 512x512
map, padding included: so does ``protocol.data=orca``). Metric: MAE8 as NAS-Bench-360's ``calculate_mae``: the prediction
is symmetrised and clipped below at 0.01; |true - predicted| is averaged over the pairs
with j - i >= 24 and true distance <= 8 A inside each protein's own length, then over
proteins (ORCA indexes the wrong protein's length; here each protein uses its own mask).
`reference_error` is MAE8 as ORCA's code computes it (`orca_mae8`, orca/metrics.py:
orca_psicov_mae8): every protein scored inside the first PSICOV protein's length, its
prediction averaged with its transpose twice over. One difference stays: a distance missing
from the structure is not scored here (our targets mark it unknown).
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torchmetrics

from orca.errors import ConfigError, DataNotFoundError
from orca.metrics import ContactMAE, OrcaContactMAE
from orca.registry import TASKS
from orca.tasks import DenseTask, fetch_archive, reading

log = logging.getLogger(__name__)
URL = "https://pde-xd.s3.amazonaws.com/protein.zip"
SIDE, PAD, CHANNELS = 512, 5, 57
FAR = 100.0  # target outside the protein, as the reference


def available_memory() -> int:
    """Bytes the system can still hand out (MemAvailable on Linux, else free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def read_list(path: Path) -> list[str]:
    """Protein ids: the first whitespace-separated token of every non-empty line."""
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def pair_features(features: dict) -> np.ndarray:
    """A feature dict -> (57, L, L) float32 in the reference's channel order."""
    length = len(features["seq"])
    per_residue = np.concatenate([
        np.asarray(features["ss"], np.float32).reshape(3, length),
        np.asarray(features["pssm"], np.float32).reshape(length, 22).T,
        np.asarray(features["sa"], np.float32).reshape(1, length),
        np.asarray(features["entropy"], np.float32).reshape(1, length),
    ])  # (27, L)
    x = np.empty((CHANNELS, length, length), np.float32)
    x[0:54:2] = per_residue[:, None, :]  # channel 2k: [i, j] = value of residue j
    x[1:54:2] = per_residue[:, :, None]  # channel 2k+1: [i, j] = value of residue i
    for c, key in zip((54, 55, 56), ("ccmpred", "freecon", "potential")):
        x[c] = np.asarray(features[key], np.float32).reshape(length, length)
    return x


def distance_map(path: Path, length: int) -> np.ndarray:
    """(L, L) float32 C-beta distances: < 1 raised to 1, diagonal from its neighbours, NaN
    where unknown (a map shorter than the sequence is NaN beyond its end)."""
    with reading(path):
        _, _, cb = np.load(path, allow_pickle=True)
    cb = np.asarray(cb, np.float32)
    n = min(len(cb), length)
    y = np.full((length, length), np.nan, np.float32)
    y[:n, :n] = cb[:n, :n]
    y[y < 1] = 1
    if n >= 2:
        q = np.arange(1, n - 1)
        y[q, q] = (y[q, q - 1] + y[q, q + 1]) / 2
        y[0, 0], y[n - 1, n - 1] = y[0, 1], y[n - 1, n - 2]
    return y


def place(x: np.ndarray, y: np.ndarray, out_x: np.ndarray, out_y: np.ndarray, out_mask: np.ndarray) -> None:
    """Write one protein (x (57, L, L), y (L, L)) into 512x512 canvases: padded by 5 and
    placed top-left; a protein longer than 502 keeps its top-left window (residues 0..506).
    out_x must be zeros and out_y FAR; out_mask marks known distances inside the protein."""
    n = min(len(y), SIDE - PAD)
    block = slice(PAD, PAD + n)
    out_x[:, block, block] = x[:, :n, :n]
    known = np.isfinite(y[:n, :n])
    out_y[block, block] = np.where(known, y[:n, :n], FAR)
    out_mask[block, block] = known


@TASKS.register("psicov")
class Psicov(DenseTask):
    name = "psicov"
    input_shape = (CHANNELS, SIDE, SIDE)
    output_shape = (SIDE, SIDE)
    error_name = "MAE8"
    paper = {"Hand-designed": 3.35, "NAS-Bench-360": 2.94, "DASH": 3.30, "Perceiver IO": 8.06,
             "FPT": 4.66, "ORCA": 1.91}

    def __init__(self, val_frac: float = 0.1, split_seed: int = 0, train_clip: float | None = 16.0,
                 max_proteins: int | None = None):
        self.val_frac, self.split_seed = val_frac, split_seed
        self.train_clip, self.max_proteins = train_clip, max_proteins

    def load_arrays(self, root: Path, download: bool):
        folder = root if (root / "deepcov.lst").exists() else root / "protein"
        if folder == root / "protein":
            fetch_archive(URL, folder, "deepcov.lst", download=download)
        for name in ("deepcov.lst", "psicov.lst"):
            if not (folder / name).exists():
                raise DataNotFoundError(f"expected {folder / name} (not found); get {URL} and unzip it into {folder}")
        deepcov = read_list(folder / "deepcov.lst")
        order = np.random.default_rng(self.split_seed).permutation(len(deepcov))
        n_val = int(round(self.val_frac * len(deepcov)))
        ids = {"train": [deepcov[i] for i in np.sort(order[n_val:])],
               "val": [deepcov[i] for i in np.sort(order[:n_val])],
               "test": read_list(folder / "psicov.lst")}
        if self.max_proteins is not None:  # a fixed random subset of each split, before reading
            rng = np.random.default_rng(self.split_seed)
            ids = {s: [v[i] for i in np.sort(rng.permutation(len(v))[: self.max_proteins])] for s, v in ids.items()}
        first = read_list(folder / "psicov.lst")[0]  # ORCA scores every protein with its length
        with reading(folder / "psicov" / "distance" / f"{first}-cb.npy"):
            self.first_test_length = int(np.load(folder / "psicov" / "distance" / f"{first}-cb.npy",
                                                 allow_pickle=True)[0])
        self.check_memory(sum(len(v) for v in ids.values()))
        sets = {"train": "deepcov", "val": "deepcov", "test": "psicov"}
        out = {split: self.read_split(folder / sets[split], ids[split], split) for split in ids}
        if self.train_clip is not None:
            np.minimum(out["train"][1], self.train_clip, out=out["train"][1])
        return out

    def check_memory(self, n: int) -> None:
        need = n * SIDE * SIDE * (CHANNELS * 4 + 4 + 1)
        free = available_memory()
        if need > free:
            raise ConfigError(f"task psicov: {n} proteins need {need / 2**30:.0f} GiB as dense 57x512x512 "
                              f"float32 arrays, more than the {free / 2**30:.0f} GiB free; set task.max_proteins")

    @staticmethod
    def read_split(folder: Path, ids: list[str], split: str):
        """-> x (n, 57, 512, 512) float32, y (n, 512, 512) float32, mask (n, 512, 512) bool."""
        x = np.zeros((len(ids), CHANNELS, SIDE, SIDE), np.float32)
        y = np.full((len(ids), SIDE, SIDE), FAR, np.float32)
        mask = np.zeros((len(ids), SIDE, SIDE), bool)
        for i, pdb in enumerate(ids):
            feat_path, dist_path = folder / "features" / f"{pdb}.pkl", folder / "distance" / f"{pdb}-cb.npy"
            for path in (feat_path, dist_path):
                if not path.exists():
                    raise DataNotFoundError(f"{path} is missing (protein {pdb} is listed); re-download {URL}")
            with reading(feat_path), open(feat_path, "rb") as f:
                features = pickle.load(f, encoding="latin1")  # latin1: pickles written by Python 2 load too
            length = len(features["seq"])
            if split == "test" and length > SIDE - 2 * PAD:
                log.warning("psicov test protein %s has %d residues; it is scored on its first %d only",
                            pdb, length, SIDE - PAD)
            place(pair_features(features), distance_map(dist_path, length), x[i], y[i], mask[i])
        return x, y, mask

    def loss(self, outputs, targets, mask=None):
        if mask is not None and not self.orca_data:  # only the pairs inside the protein (ORCA: the whole map)
            outputs, targets = outputs[mask], targets[mask]
        return torch.nn.functional.mse_loss(outputs, targets)

    reference_error_name = "MAE8 as ORCA's psicov_mae computes it (the first PSICOV protein's length for every protein)"
    first_test_length: int | None = None  # set by load_arrays: the first protein of psicov.lst's length

    def metrics(self):
        metrics = {"mae8": ContactMAE(threshold=8.0, min_separation=24)}
        if self.first_test_length is not None:  # known once the data is read
            metrics["orca_mae8"] = OrcaContactMAE(self.first_test_length)
        return torchmetrics.MetricCollection(metrics)

    def error(self, metrics):
        return metrics["mae8"]

    def reference_error(self, metrics):
        return metrics.get("orca_mae8")
