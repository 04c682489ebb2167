"""The catalogue of bad inputs, run as a user runs them (``python -m orca.train``).

Each case must exit with status 2, print one line on stderr that names the problem and the
fix, print no traceback, and leave every file that existed before intact (same bytes).
Each runs the CLI's own code, ``orca.train.main``, in this process (:func:`run_main`): a
case that the command-line check (orca/preflight.py) must refuse fails the test if it gets
past it; the others run Hydra and the pipeline until they fail. A few run
``python -m orca.train`` in a subprocess, so that the whole command stays covered (imports,
exit status, stderr of a fresh process): a sweep, a range check, a finished run, missing
data and a run that fails while training.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import orca.pipeline  # noqa: F401  before any test captures stderr: Lightning binds a log handler to it on import
from conftest import ROOT, write_physionet2017
from formats import cifar10, cifar100, darcy, deepsea, fsd50k, ninapro, satellite

BASE = ["body=tiny-random", "budget=smoke", "trainer.enable_progress_bar=false"]


def run_cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ORCA_CACHE_DIR": str(tmp / "cache")}
    return subprocess.run([sys.executable, "-m", "orca.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def run_main(args: list[str], tmp: Path, monkeypatch, capsys, refused: bool) -> tuple[int, str]:
    """`python -m orca.train ARGS` in this process: orca.train.main with sys.argv set; its exit
    status and stderr. `refused`: a command line that passes the command-line check fails the
    test instead of starting the run. Hydra's global state and the root logger's handlers (a
    run's train.log) are put back afterwards, so that the next test starts clean."""
    import logging

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import orca.train

    if refused:
        def run():
            raise AssertionError(f"{args} passed the command-line check")

        monkeypatch.setattr(orca.train, "_run", run)
    monkeypatch.setattr(sys, "argv", [orca.train.__file__, *args])
    monkeypatch.setenv("ORCA_CACHE_DIR", str(tmp / "cache"))
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")  # configs/ beside orca/train.py, as `python -m` finds them
    monkeypatch.chdir(ROOT)
    root, handlers, level = logging.getLogger(), logging.getLogger().handlers[:], logging.getLogger().level
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exited:
            orca.train.main()
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:], root.level = handlers, level
    return exited.value.code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- fixtures of each case: write into tmp, return the overrides that point at them ------
def data_of(writer: Callable[[Path], Path], task: str, spoil: Callable[[Path], None] | None = None,
            *extra: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        root = writer(tmp / "data")
        if spoil is not None:
            spoil(root)
        return [f"task={task}", f"data.root={root}", "data.download=false", *extra]

    return setup


def ucr(rows: Callable[[list[str]], list[str]], test_class: int | None = None) -> Callable[[Path], Path]:
    """The UCR Crop fixture with its training rows rewritten (and a test file of one row of
    class `test_class`)."""
    def write(root: Path) -> Path:
        satellite.write_ucr(root)
        path = root / "Crop_TRAIN.tsv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join(rows(lines)) + "\n")
        if test_class is not None:
            (root / "Crop_TEST.tsv").write_text("\t".join([str(test_class), *lines[0].split("\t")[1:]]) + "\n")
        return root

    return write


def first_value(rows: list[str], value: str) -> list[str]:
    cells = rows[3].split("\t")
    return rows[:3] + ["\t".join([cells[0], value, *cells[2:]])] + rows[4:]


def darcy_pt(y_value: float | None = None, corrupt: bool = False) -> Callable[[Path], Path]:
    def write(root: Path) -> Path:
        darcy.write_neuraloperator(root)
        path = root / "darcy_train_16.pt"
        if corrupt:
            truncate(path)
        if y_value is not None:
            d = torch.load(path, weights_only=True)
            d["y"][2, 3, 4] = y_value
            torch.save(d, path)
        return root

    return write


def read_only(tmp: Path) -> list[str]:
    folder = tmp / "locked"
    folder.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits; an immutable folder binds it too
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a read-only folder")
    else:
        folder.chmod(0o555)
    return [f"hydra.run.dir={folder / 'run'}"]


def under_a_file(tmp: Path) -> list[str]:
    (tmp / "plain").write_text("not a folder")
    return [f"hydra.run.dir={tmp / 'plain' / 'run'}"]


def finished_run(tmp: Path) -> list[str]:
    run = tmp / "run"
    run.mkdir()
    (run / "results.json").write_text('{"metrics": {}}')
    return []


def other_config_checkpoints(tmp: Path) -> list[str]:
    """A run folder holding the checkpoints of the same command with seed 0."""
    run = tmp / "run"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", [*BASE, f"paths.run_dir={run}", f"paths.cache_dir={tmp / 'cache'}", "seed=0"])
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.save({"embedder": {}, "record": {}}, run / "checkpoints" / "align.pt")
    return ["seed=1"]


def empty_folder(tmp: Path) -> list[str]:
    (tmp / "not-a-model").mkdir()
    (tmp / "not-a-model" / "notes.txt").write_text("no config.json here")
    return ["body=minilm", f"body.path={tmp / 'not-a-model'}"]


def a_file(tmp: Path) -> list[str]:
    (tmp / "data.txt").write_text("a file, not a folder")
    return ["task=satellite", f"data.root={tmp / 'data.txt'}"]


@dataclass
class Case:
    id: str
    args: list[str]
    expect: list[str]  # substrings of the one line, which must name the problem and the fix
    setup: Callable[[Path], list[str]] = field(default=lambda tmp: [])
    preflight: bool = False  # refused by the command-line check
    process: bool = False  # run as `python -m orca.train` in a subprocess


def refused(id: str, args: list[str], expect: list[str], setup: Callable[[Path], list[str]] | None = None) -> Case:
    """A case that the command-line check refuses before Hydra runs."""
    return Case(id, args, expect, setup or (lambda tmp: []), preflight=True)


CASES = [
    # unknown names
    refused("unknown-task", ["task=nope"], ["unknown task 'nope'", "digits, ecg"]),
    refused("unknown-body", ["body=nope"], ["unknown body 'nope'", "minilm"]),
    refused("unknown-method", ["method=nope"], ["unknown method 'nope'", "finetune, fpt, fpt_random, ia3, linear_probe, lora"]),
    Case("unknown-embedder", ["embedder.name=nope"], ["unknown embedder 'nope'", "patch2d"]),
    refused("unknown-embedder-config", ["embedder=nope"], ["unknown embedder 'nope'", "conv1d, linear_patch, patch2d"]),
    refused("unknown-head-config", ["head=nope"], ["unknown head 'nope'", "dense, pooled"]),
    Case("unknown-head-name", ["head.name=nope"], ["unknown head 'nope'", "pooled"]),
    refused("unknown-align-config", ["align=nope"], ["unknown align 'nope'", "mmd", "otdd"]),
    Case("unknown-distance", ["align.distance=nope"], ["unknown alignment distance 'nope'", "otdd"]),
    Case("unknown-in-a-sweep", ["-m", "method=orca,nope"], ["unknown method 'nope'"], process=True),
    refused("unknown-key", ["finetune.max_stepz=3"], ["no key 'finetune.max_stepz'", "+finetune.max_stepz="]),
    # wrong types and values
    refused("seed-not-a-number", ["seed=abc"], ["seed=abc", "takes an integer"]),
    refused("steps-not-a-number", ["finetune.max_steps=ten"], ["finetune.max_steps=ten", "takes an integer"]),
    refused("lr-not-a-number", ["finetune.optimizer.lr=fast"], ["finetune.optimizer.lr", "takes a number"]),
    refused("override-syntax", ["seed=[1"], ["cannot parse", "override_grammar"]),
    refused("target-len-zero", ["embedder.target_len=0"], ["embedder.target_len=0: must be an integer >= 1 or null"]),
    refused("target-len-negative", ["embedder.target_len=-3"], ["embedder.target_len=-3: must be an integer >= 1"]),
    Case("trainer-option", ["trainer.accelerator=abacus"], ["the trainer options do not work", "abacus"]),
    # values out of range or not among the choices (orca/schema.py)
    Case("lr-negative", ["finetune.optimizer.lr=-1"],
         ["finetune.optimizer.lr=-1: must be a number > 0", "e.g. finetune.optimizer.lr=0.0001"], process=True),
    refused("group-set-to-null", ["logger=null"], ["logger=null: a config group takes one of its options",
                                                  "csv, mlflow, tensorboard, wandb", "~logger"]),
    refused("batch-size-zero", ["finetune.batch_size=0"], ["finetune.batch_size=0: must be an integer >= 1"]),
    refused("val-frac-above-one", ["task=cifar10", "task.val_frac=1.5"],
            ["task.val_frac=1.5: must be a number in (0, 1)"]),
    refused("align-steps-negative", ["align.steps=-5"], ["align.steps=-5: must be an integer >= 0"]),
    refused("seed-a-list", ["seed=[1,2]"], ["seed=[1,2]: seed takes an integer"]),
    refused("seed-negative", ["seed=-1"], ["seed=-1: must be an integer in [0, 4294967295]"]),
    refused("budget-negative", ["budget_s=-10"], ["budget_s=-10: must be a number > 0 or null"]),
    refused("budget-zero", ["budget_s=0"], ["budget_s=0: must be a number > 0 or null"]),
    refused("eval-batch-size-zero", ["finetune.eval_batch_size=0"],
            ["finetune.eval_batch_size=0: must be an integer >= 1"]),
    refused("accumulation-zero", ["finetune.accumulate_grad_batches=0"],
            ["finetune.accumulate_grad_batches=0: must be an integer >= 1"]),
    refused("warmup-frac-above-one", ["finetune.warmup_frac=1.5"],
            ["finetune.warmup_frac=1.5: must be a number in [0, 1]"]),
    refused("no-validations", ["finetune.num_validations=0"], ["finetune.num_validations=0: must be an integer >= 1"]),
    refused("max-steps-zero", ["finetune.max_steps=0"], ["finetune.max_steps=0: must be an integer >= 1, or -1"]),
    refused("clip-zero", ["finetune.gradient_clip_val=0"],
            ["finetune.gradient_clip_val=0: must be a number > 0 or null"]),
    refused("unknown-loop", ["finetune.loop=nope"], ["finetune.loop=nope: must be one of lightning, orca"]),
    refused("orca-loop-without-epochs", ["finetune.loop=orca"],
            ["finetune.loop=orca needs finetune.warmup_epochs and finetune.decay_epochs"]),
    refused("warmup-past-decay", ["finetune.loop=orca", "finetune.warmup_epochs=5", "finetune.decay_epochs=2"],
            ["finetune.warmup_epochs=5: must be below finetune.decay_epochs=2"]),
    refused("unknown-optimizer", ["finetune.optimizer.name=nope"],
            ["finetune.optimizer.name=nope: must be one of adamw, adam, sgd"]),
    refused("weight-decay-negative", ["finetune.optimizer.weight_decay=-0.1"],
            ["finetune.optimizer.weight_decay=-0.1: must be a number >= 0"]),
    refused("beta-out-of-range", ["finetune.optimizer.betas=[0.9,1.0]"],
            ["finetune.optimizer.betas=[0.9,1.0]: must be a list of 2 numbers each in [0, 1)"]),
    refused("unknown-optimizer-option", ["+finetune.optimizer.eps=1e-8"],
            ["finetune.optimizer has no option 'eps'", "name, lr, weight_decay, momentum, betas"]),
    refused("bad-value-in-a-sweep", ["-m", "finetune.optimizer.lr=1e-3,-1"], ["finetune.optimizer.lr=-1: must be"]),
    refused("max-samples-zero", ["data.max_samples.train=0"],
            ["data.max_samples.train=0: must be an integer >= 1 or null"]),
    refused("align-per-class-zero", ["align.per_class=0"], ["align.per_class=0: must be an integer >= 1"]),
    refused("align-lr-zero", ["align.lr=0"], ["align.lr=0: must be a number > 0"]),
    refused("align-gamma-above-one", ["align.gamma=1.5"], ["align.gamma=1.5: must be a number in (0, 1]"]),
    refused("milestones-not-increasing", ["align.milestones=[40,20]"], ["align.milestones=[40,20]", "increasing"]),
    refused("unknown-align-schedule", ["align.schedule=nope"], ["align.schedule=nope: must be one of multistep, orca"]),
    refused("unknown-image-transform", ["align.image_transform=nope"],
            ["align.image_transform=nope: must be one of imagenet, orca"]),
    refused("unknown-select-on", ["protocol.select_on=nope"], ["protocol.select_on=nope: must be one of val, test"]),
    refused("unknown-trainable", ["method.trainable=nope"], ["method.trainable=nope: must be one of all, fpt, probe"]),
    refused("probe-frac-above-one", ["method=lp_ft", "method.probe_frac=1.5"],
            ["method.probe_frac=1.5: must be a number in [0, 1)"]),
    refused("lora-rank-zero", ["method=lora", "method.peft.r=0"], ["method.peft.r=0: must be an integer >= 1"]),
    refused("no-training-split", ["task.val_frac=0.5", "task.test_frac=0.6"],
            ["task.val_frac=0.5 and task.test_frac=0.6 leave no training split"]),
    refused("values-per-token-zero", ["embedder.values_per_token=0"],
            ["embedder.values_per_token=0: must be an integer >= 1"]),
    refused("max-tokens-zero", ["embedder.max_tokens=0"], ["embedder.max_tokens=0: must be an integer >= 1"]),
    refused("stem-kernel-even", ["+embedder.stem=[32,64]", "+embedder.stem_kernel=4"],
            ["embedder.stem_kernel=4: must be an odd integer >= 1"]),
    refused("init-of-another-embedder", ["task=ecg", "embedder.init=mean"],
            ["embedder.init=mean: embedder conv1d takes one of default, orca"]),
    Case("shape-does-not-fit-embedder", ["embedder.name=conv1d"], ["takes inputs shaped (C, L)"]),
    # data
    Case("data-root-missing", [], ["absent", "training2017", "physionet.org"],
         lambda tmp: ["task=ecg", f"data.root={tmp / 'absent'}", "data.download=false"], process=True),
    Case("data-root-is-a-file", [], ["data.root", "is a file", "point data.root at the folder"], a_file),
    Case("corrupt-mat", [], ["could not read", "A00002.mat", "download it again"],
         data_of(write_physionet2017, "ecg", lambda r: truncate(r / "training2017" / "A00002.mat", 0.1))),
    Case("truncated-npy", [], ["could not read", "ninapro_train.npy", "corrupt or truncated"],
         data_of(ninapro.write, "ninapro", lambda r: truncate(r / "ninapro_train.npy"))),
    Case("truncated-npz", [], ["deepsea_filtered.npz", "re-download"],
         data_of(deepsea.write, "deepsea", lambda r: truncate(r / "deepsea_filtered.npz"), *deepsea.OVERRIDES)),
    Case("corrupt-pt", [], ["could not read", "darcy_train_16.pt"],
         data_of(darcy_pt(corrupt=True), "darcy", None, "task.format=neuraloperator")),
    Case("corrupt-tsv", [], ["could not read", "Crop_TRAIN.tsv"],
         data_of(ucr(lambda rows: first_value(rows, "twelve")), "satellite")),
    Case("corrupt-image", [], ["could not read", "0000.jpg"],
         data_of(cifar10.write, "cifar10", lambda r: (r / "train" / "cat" / "0000.jpg").write_bytes(b"\xff\xd8 no jpeg"))),
    Case("truncated-wav", [], ["could not read", ".wav"],
         data_of(fsd50k.write, "fsd50k", lambda r: truncate(sorted((r / "dev_chunks").glob("*.wav"))[0], 0.01))),
    Case("truncated-pickle", [], ["could not read", "train"],
         data_of(cifar100.write, "cifar100", lambda r: truncate(next(r.rglob("train"))))),
    Case("nan-input", [], ["NaN or inf inputs", "clean or drop"],
         data_of(ucr(lambda rows: first_value(rows, "nan")), "satellite")),
    Case("inf-target", [], ["NaN or inf targets"],
         data_of(darcy_pt(y_value=float("inf")), "darcy", None, "task.format=neuraloperator")),
    Case("class-without-training-samples", [], ["class 23 of the test split has no training samples"],
         data_of(ucr(lambda rows: [r for r in rows if not r.startswith("24\t")], test_class=24), "satellite")),
    # the code and the environment
    Case("plugin-does-not-import", ["plugins=[no_such_orca_plugin]"],
         ["plugin module 'no_such_orca_plugin' could not be imported", "installed"]),
    Case("body-path-not-a-model", [], ["could not load body", "not a complete Hugging Face model"], empty_folder),
    Case("offline-hub-body", ["body=roberta-base"], ["could not load body 'roberta-base'", "body.path=DIR"]),
    Case("text-source-required", ["align.text_fallback=false"], ["CoNLL-2003", "align.source_root=PATH"]),
    Case("accumulation-past-the-epoch", ["finetune.loop=orca", "finetune.warmup_epochs=1", "finetune.decay_epochs=2",
                                         "finetune.accumulate_grad_batches=1000"],
         ["would never step", "lower the accumulation"]),
    Case("non-finite-loss", ["method=finetune", "finetune.optimizer.lr=1e30", "finetune.new_lr=1e30"],
         ["non-finite loss", "lower the learning rate"], process=True),
    # the run folder
    refused("read-only-output", [], ["read-only", "choose another hydra.run.dir"], read_only),
    refused("run-folder-under-a-file", [], ["is a file", "choose another hydra.run.dir"], under_a_file),
    Case("finished-run", [], ["results.json exists", "not overwritten"], finished_run, process=True),
    refused("checkpoints-of-another-config", [], ["checkpoints of another configuration", "seed: 0 -> 1"],
         other_config_checkpoints),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_in_one_line_and_keeps_files(case, tmp_path, monkeypatch, capsys):
    args = [*BASE, f"hydra.run.dir={tmp_path / 'run'}", *case.setup(tmp_path), *case.args]
    if "-m" in args:  # a sweep writes under hydra.sweep.dir
        args = [a.replace("hydra.run.dir", "hydra.sweep.dir") for a in args]
    before = snapshot(tmp_path)
    try:
        if case.process:
            proc = run_cli(args, tmp_path)
            returncode, stderr = proc.returncode, proc.stderr
        else:
            returncode, stderr = run_main(args, tmp_path, monkeypatch, capsys, refused=case.preflight)
    finally:
        if case.id == "read-only-output" and os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(tmp_path / "locked")])
    assert returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    # One error line, the last; before it only what the run printed as it went (progress bars,
    # Lightning's device summary), which a run that fails late has printed too.
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert errors == lines[-1:] and lines[-1].startswith("error: "), stderr[-3000:]
    for text in case.expect:
        assert text in lines[-1], f"{text!r} not in {lines[-1]!r}"
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before  # nothing that was there is changed or gone


def test_the_catalogue_is_complete():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_a_corrupt_source_cache_is_rebuilt(tmp_path, caplog):
    from orca.align.sources import load_source
    from orca.bodies import load_body

    loaded = load_body("tiny-random")
    args = dict(name="pydoc-topics", loaded=loaded, num_samples=32, seq_len=16, root=None, seed=0,
                cache_dir=tmp_path, download=False)
    feats, labels, _ = load_source(**args)
    cache = next((tmp_path / "sources").glob("*.pt"))
    truncate(cache)
    again, labels_again, description = load_source(**args)
    assert "cached" not in description and "rebuilding" in caplog.text
    assert torch.equal(again, feats) and torch.equal(labels_again, labels)
    assert torch.equal(load_source(**args)[0], feats)  # and the rebuilt cache reads back
