"""Multi-process training: the sharded training order, trainer=ddp_sim (two CPU processes
over gloo) against one process, and the SLURM launcher config."""
import json
import math
import os
import subprocess
import sys

import numpy as np
from hydra import compose, initialize_config_dir

from conftest import ROOT
from orca.resume import EpochSampler


def batches(sampler: EpochSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    order, size = list(sampler), sampler.batch_size // sampler.world
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_shards_of_a_step_make_the_single_process_batch():
    n, batch = 103, 8
    single = batches(EpochSampler(n, batch, seed=3), epoch=1)
    shards = []
    for rank in range(2):
        sampler = EpochSampler(n, batch, seed=3)
        sampler.shard(rank, 2)
        shards.append(batches(sampler, epoch=1))
    assert len(shards[0]) == len(shards[1]) == math.ceil((n // 2) / (batch // 2))
    for step, (a, b) in enumerate(zip(*shards)):
        assert sorted(a + b) == sorted(single[step][: len(a) + len(b)])


def test_a_resumed_order_continues_where_the_run_stopped():
    n, batch = 50, 8
    whole = [b for epoch in range(3) for b in batches(EpochSampler(n, batch, seed=0), epoch)]
    sampler = EpochSampler(n, batch, seed=0)
    sampler.resume_at = 9  # 7 batches an epoch: epoch 1, after its second batch
    resumed = batches(sampler, 0) + batches(sampler, 1) + batches(sampler, 2)
    assert resumed == whole[9:]


def run(tmp_path, name, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ORCA_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "orca.train", "task=digits", "body=tiny-random", "budget=smoke",
                           "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / name}", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / name / "results.json").read_text())


def test_two_processes_match_one(tmp_path):
    """Both stages under DDP; the same batches a step, split over the processes. Tolerance:
    float32 sums in another order, 1e-4 relative on OTDD and at most one test sample of the
    64 on the error."""
    one = run(tmp_path, "one")
    two = run(tmp_path, "two", "trainer=ddp_sim")
    assert two["config"]["trainer"]["devices"] == 2 and two["finetune"]["steps_done"] == one["finetune"]["steps_done"]
    np.testing.assert_allclose([two["align"]["before"], two["align"]["after"]],
                               [one["align"]["before"], one["align"]["after"]], rtol=1e-4)
    assert abs(two["metrics"]["test"]["error"] - one["metrics"]["test"]["error"]) <= 100 / 64 + 1e-9
    written = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert written.count("results.json") == 1 and "config.yaml" in written


def test_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.use_distributed_sampler is False
