"""A miniature ``protein/`` folder as in NAS-Bench-360's protein.zip: ``deepcov.lst``
(6 proteins), ``psicov.lst`` (2), ``{deepcov,psicov}/features/<id>.pkl`` (pickled dict:
seq, ss (3, L), pssm (L, 22), sa (L,), entropy (L,), ccmpred, freecon, potential (L, L))
and ``{deepcov,psicov}/distance/<id>-cb.npy`` (pickled tuple (L, seq, (L, L) map)).

Each chain is a coil that comes back close to itself every 26-34 residues, so long-range
pairs closer than 8 A exist (MAE8 has pairs to score); the coupling channels carry a noisy
function of the true distance, so the maps are learnable from the inputs.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

PROTEINS = {"deepcov": [("1a0tP", 40), ("1a3aA", 52), ("1b9oA", 35), ("1c44A", 60), ("1d0qA", 44), ("1e6uA", 30)],
            "psicov": [("1aapA", 48), ("1bebA", 56)]}
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def coil(length: int, rng: np.random.Generator) -> np.ndarray:
    """(L, 3) C-beta coordinates: a circle of `period` residues 3.8 A apart, rising 0.2 A a residue."""
    period = int(rng.integers(26, 35))
    radius = 3.8 / (2 * np.sin(np.pi / period))
    t = 2 * np.pi * np.arange(length) / period
    xyz = np.stack([radius * np.cos(t), radius * np.sin(t), 0.2 * np.arange(length)], axis=1)
    return xyz + rng.normal(0, 0.5, xyz.shape)


def write(root: Path) -> Path:
    folder = root / "protein"
    rng = np.random.default_rng(0)
    for group, proteins in PROTEINS.items():
        (folder / group / "features").mkdir(parents=True, exist_ok=True)
        (folder / group / "distance").mkdir(parents=True, exist_ok=True)
        (folder / f"{group}.lst").write_text("".join(f"{pdb}\n" for pdb, _ in proteins))
        for pdb, length in proteins:
            xyz = coil(length, rng)
            dist = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
            seq = "".join(rng.choice(list(AMINO), length))
            noise = lambda: rng.normal(0, 0.05, (length, length))  # noqa: E731
            features = {
                "seq": seq,
                "ss": rng.dirichlet(np.ones(3), length).T,
                "pssm": rng.random((length, 22)),
                "sa": rng.random(length),
                "entropy": rng.random(length),
                "ccmpred": np.exp(-dist / 8) + noise(),
                "freecon": np.exp(-dist / 8) + noise(),
                "potential": dist / 20 + noise(),
            }
            with open(folder / group / "features" / f"{pdb}.pkl", "wb") as f:
                pickle.dump(features, f)
            record = np.empty(3, dtype=object)
            record[:] = [length, seq, dist]
            np.save(folder / group / "distance" / f"{pdb}-cb.npy", record, allow_pickle=True)
    return root
