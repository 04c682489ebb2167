"""Benchmark: the memory a task's data takes when loaded as a run loads it.

    python scripts/bench_memory.py task=ecg data.root=../shared/datasets/physionet2017 [budget=...]

Loads the splits through the task (the same call as the pipeline's data stage, with the
budget's caps; `data.max_samples.train=null` etc. lift them) in a fresh process and prints
the samples per split, the bytes the split tensors hold, the seconds it took and the
process's peak resident memory.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from orca.record import peak_rss_mb  # noqa: E402
from orca.tasks import create_task  # noqa: E402


def held_bytes(dataset) -> int:
    """Bytes a split's arrays take, without cutting windows that are cut on read."""
    if hasattr(dataset, "windows"):  # orca.tasks.WindowDataset: the recordings once, the starts, the labels
        arrays = [dataset.windows.signal, dataset.windows.starts, *dataset.others]
    else:
        arrays = dataset.tensors
    return sum(a.nbytes for a in arrays)


def main(overrides: list[str]) -> None:
    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("train", [*overrides, "paths.run_dir=unused"])
    before = peak_rss_mb()
    t0 = time.perf_counter()
    options = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}
    task = create_task(cfg.task.name, **options)
    splits = task.load(cfg.data.root, download=False, seed=cfg.data.subset_seed,
                       max_samples=OmegaConf.to_container(cfg.data.max_samples, resolve=True))
    seconds = time.perf_counter() - t0
    held = sum(held_bytes(getattr(splits, name)) for name in ("train", "val", "test"))
    print(f"task {task.name}: samples {splits.sizes()}, input {task.input_shape}")
    print(f"split tensors: {held / 2**20:.0f} MiB; load: {seconds:.1f} s; "
          f"peak RSS: {peak_rss_mb():.0f} MiB (before loading: {before:.0f} MiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
