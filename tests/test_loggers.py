"""logger=: a run's stage metrics, resolved config and final metrics reach the tracker picked
(configs/logger/), read back with the tool's own reader. One smoke run a tracker, shared by its
tests; nothing leaves the machine."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

OFFLINE = {"HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "WANDB_MODE": "offline"}
RUN_NAME = "digits_orca_tiny-random_s0"  # configs/logger/mlflow.yaml: <task>_<method>_<body>_s<seed>
LOGGERS = sorted(p.stem for p in (ROOT / "configs" / "logger").glob("*.yaml"))


def smoke_run(folder, *overrides):
    """A budget=smoke run of the main command into folder/run, every step logged; (run folder, record)."""
    run_dir = folder / "run"
    env = {**os.environ, **OFFLINE, "ORCA_CACHE_DIR": str(folder / "cache")}
    proc = subprocess.run([sys.executable, "-m", "orca.train", "task=digits", "body=tiny-random", "budget=smoke",
                           "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
                           f"hydra.run.dir={run_dir}", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, record = smoke_run(tmp_path_factory.mktemp("tensorboard"), "logger=tensorboard")
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return events, record


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    run_dir, record = smoke_run(folder, "logger=mlflow", f"logger.lightning.tracking_uri={store}")
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("orca").experiment_id])
    return client, runs, run_dir, record


def test_tensorboard_has_each_stages_metrics_as_they_came(tensorboard_run):
    events, record = tensorboard_run
    assert [e.step for e in events.Scalars("align/loss")] == list(range(record["align"]["steps"]))  # 2 steps
    assert [e.step for e in events.Scalars("train/loss")] == list(range(record["finetune"]["steps_done"]))  # 6
    assert len(events.Scalars("val/error")) >= 2  # the validations during fine-tuning, then the selected weights'


def test_tensorboard_hparams_pair_the_config_with_the_final_metrics(tensorboard_run):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events, record = tensorboard_run
    content = {tag: HParamsPluginData.FromString(raw) for tag, raw in events.PluginTagToContent("hparams").items()}
    hparams = content["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["task.name"].string_value == "digits"
    assert hparams["finetune.max_steps"].number_value == record["config"]["finetune"]["max_steps"] == 6
    assert {m.name.tag for m in content["_hparams_/experiment"].experiment.metric_infos} >= {
        "final/val/error", "final/test/error"}
    [final] = events.Scalars("final/test/error")
    assert final.value == pytest.approx(record["metrics"]["test"]["error"])


def test_mlflow_keeps_one_run_for_both_stages_with_the_config_as_parameters(mlflow_run):
    client, runs, run_dir, record = mlflow_run
    [run] = runs  # fine-tuning and the record reopened the align stage's run by its id, as a resumed attempt does
    assert run.info.run_name == RUN_NAME and run.info.status == "FINISHED"
    assert json.loads((run_dir / "checkpoints" / "tracker.json").read_text())["version"] == run.info.run_id
    params = run.data.params
    assert params["task.name"] == "digits" and params["method.name"] == "orca"
    assert params["finetune.max_steps"] == "6" and params["paths.run_dir"] == str(run_dir)


def test_mlflow_metric_history_follows_each_stage(mlflow_run):
    client, [run], _, record = mlflow_run
    steps = {key: [m.step for m in client.get_metric_history(run.info.run_id, key)]
             for key in ("align/loss", "train/loss", "val/error")}
    assert steps["align/loss"] == list(range(record["align"]["steps"]))
    assert steps["train/loss"] == list(range(record["finetune"]["steps_done"]))
    assert len(steps["val/error"]) >= 2


def test_mlflow_has_the_records_final_metrics(mlflow_run):
    _, [run], _, record = mlflow_run
    for split in ("val", "test"):
        for name, value in record["metrics"][split].items():
            assert run.data.metrics[f"final/{split}/{name}"] == pytest.approx(value)


def test_csv_is_the_default_a_logger_a_stage_in_the_run_folder(make_cfg, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from orca.loggers import stage_logger

    logger = stage_logger(make_cfg(), tmp_path / "run", "align")
    assert isinstance(logger, CSVLogger) and logger.log_dir == str(tmp_path / "run" / "logs" / "align")
    assert stage_logger(make_cfg("~logger"), tmp_path / "run", "align") is False  # no logger at all


def test_wandb_is_offline_unless_its_mode_is_set(make_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    options = make_cfg("logger=wandb").logger.lightning
    assert options._target_ == "lightning.pytorch.loggers.WandbLogger"
    assert options.mode == "offline" and options.name == "digits_orca_minilm_s0"
    monkeypatch.setenv("WANDB_MODE", "online")  # after `wandb login`
    assert make_cfg("logger=wandb").logger.lightning.mode == "online"


@pytest.mark.parametrize("name", LOGGERS)
def test_each_loggers_package_is_the_extra_it_names(make_cfg, name):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    logger = make_cfg(f"logger={name}").logger
    assert logger.name == name
    if logger.package:
        assert logger.install == f'pip install -e ".[{name}]"'
        assert any(requirement.startswith(logger.package) for requirement in extras[name])


@pytest.mark.parametrize("name", [n for n in LOGGERS if n != "csv"])
def test_a_missing_logger_package_is_one_line_naming_its_extra(monkeypatch, tmp_path, name):
    from orca.errors import ConfigError
    from orca.preflight import preflight

    monkeypatch.setitem(sys.modules, name, None)  # import machinery: not installed
    with pytest.raises(ConfigError) as caught:
        preflight([f"logger={name}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert str(caught.value) == f'logger={name} needs the {name} package: pip install -e ".[{name}]"'


def test_the_command_line_stops_before_writing_when_the_package_is_missing(tmp_path):
    run_dir = tmp_path / "run"
    simulate = ("import runpy, sys; sys.modules['mlflow'] = None; "
                f"sys.argv = ['orca.train', 'logger=mlflow', 'hydra.run.dir={run_dir}']; "
                "runpy.run_module('orca.train', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", simulate], cwd=ROOT, env={**os.environ, **OFFLINE},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == 'error: logger=mlflow needs the mlflow package: pip install -e ".[mlflow]"\n'
    assert not run_dir.exists()
