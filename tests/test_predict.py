"""A finished run predicts: python -m orca.predict gives the run's own test predictions for
the test inputs, and an export loads in one call to the same model."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from orca.errors import ConfigError
from orca.export import export_run, load_model, load_run
from orca.pipeline import train
from orca.predict import score
from orca.tasks import create_task

ROOT = Path(__file__).resolve().parents[1]


def predict_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orca.predict", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


def recorded_test_split(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """The run's test inputs and labels, loaded as the run loaded them."""
    cfg = record["config"]
    task = create_task(cfg["task"]["name"], **{k: v for k, v in cfg["task"].items() if k != "name"})
    splits = task.load(cfg["data"]["root"], max_samples=cfg["data"]["max_samples"], seed=cfg["data"]["subset_seed"])
    return splits.test.tensors[0].numpy(), splits.test.tensors[1].numpy()


@pytest.fixture(scope="module", params=["finetune", "lora", "prompt"])
def finished(request, tmp_path_factory):
    from hydra import compose, initialize_config_dir

    tmp = tmp_path_factory.mktemp(request.param)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", [f"paths.run_dir={tmp / 'run'}", f"paths.cache_dir={tmp / 'cache'}",
                                "trainer.enable_progress_bar=false", "task=digits", "body=tiny-random",
                                "budget=smoke", f"method={request.param}"])
    record = train(cfg)
    np.save(tmp / "test_inputs.npy", recorded_test_split(record)[0])
    return tmp, record


def test_predict_reproduces_the_runs_test_predictions(finished):
    tmp, record = finished
    proc = predict_cli(f"run={tmp / 'run'}", f"input={tmp / 'test_inputs.npy'}", f"output={tmp / 'p.npy'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote class probabilities" in proc.stdout
    ours, runs = np.load(tmp / "p.npy"), np.load(tmp / "run" / "predictions" / "test.npy")
    assert ours.shape == runs.shape == (record["data_sizes"]["test"], 10)
    np.testing.assert_allclose(ours, runs, atol=1e-5)
    accuracy = (runs.argmax(1) == recorded_test_split(record)[1]).mean()
    assert accuracy == pytest.approx(record["metrics"]["test"]["accuracy"], abs=1e-6)  # the recorded metric


def test_export_loads_in_one_call_to_the_same_model(finished):
    tmp, record = finished
    folder = export_run(tmp / "run", tmp / f"export-{record['method']}")
    model = load_model(folder)
    x = torch.from_numpy(np.load(tmp / "test_inputs.npy"))
    with torch.no_grad():
        probabilities = model(x).softmax(-1).numpy()
    np.testing.assert_allclose(probabilities, np.load(tmp / "run" / "predictions" / "test.npy"), atol=1e-5)
    assert model.architecture["run"]["metrics"] == record["metrics"]
    assert (model.architecture["peft"] is not None) == (record["method"] in ("lora", "prompt"))


def test_bad_predict_input_is_one_line_and_writes_nothing(finished, tmp_path):
    tmp, _ = finished
    np.save(tmp_path / "wrong.npy", np.zeros((3, 8, 8), np.float32))
    proc = predict_cli(f"run={tmp / 'run'}", f"input={tmp_path / 'wrong.npy'}")
    assert proc.returncode == 2 and "takes (n, 1, 8, 8)" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp / "run" / "predictions" / "wrong.npy").exists()
    proc = predict_cli(f"run={tmp / 'run'}", f"input={tmp / 'test_inputs.npy'}",
                       f"output={tmp / 'run' / 'predictions' / 'test.npy'}")
    assert proc.returncode == 2 and "is not written over" in proc.stderr
    proc = predict_cli(f"run={tmp_path}", f"input={tmp / 'test_inputs.npy'}")
    assert proc.returncode == 2 and "no finished run" in proc.stderr
    proc = predict_cli(f"run={tmp / 'run'}", "inputs=x.npy")
    assert proc.returncode == 2 and "keys run, input, output, score, export, batch_size, data.root or task.OPTION" \
        in proc.stderr


def test_score_rates_the_selected_model_on_a_whole_split(finished):
    """score=val uses the whole validation split (the smoke budget validated on 64 samples),
    and task options rebuild the split: a larger val_frac gives a larger split."""
    tmp, record = finished
    cfg = record["config"]
    assert record["data_sizes"]["val"] == 64
    val = create_task("digits").load(cfg["data"]["root"]).val
    model, _ = load_run(tmp / "run")
    with torch.no_grad():
        accuracy = (model(val.tensors[0]).argmax(1) == val.tensors[1]).float().mean().item()
    proc = predict_cli(f"run={tmp / 'run'}", "score=val")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"val split ({len(val)} samples): accuracy {accuracy:.4f}" in proc.stdout and len(val) > 64
    assert float(proc.stdout.split("error ")[1]) == pytest.approx(100 * (1 - accuracy), abs=1e-3)  # in percent
    wider = score(tmp / "run", "val", {"val_frac": 0.3})
    assert wider["samples"] == len(create_task("digits", val_frac=0.3).load(cfg["data"]["root"]).val) > len(val)
    with pytest.raises(ConfigError, match="choose one of the splits train, val, test"):
        score(tmp / "run", "valid")
    with pytest.raises(ConfigError, match="takes no option bogus"):
        score(tmp / "run", "val", {"bogus": 1})
