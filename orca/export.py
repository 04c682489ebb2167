"""A finished run as a model to use: its selected weights and its architecture.

- ``load_run(run_dir)``: the model of a finished run folder (its record's architecture and
  the checkpoint it selected on validation), with the task's output transform.
- ``export_run(run_dir, folder)``: writes ``model.safetensors`` (embedder, body and head
  weights, adapters included) and ``model.json`` (the architecture, orca/model.py).
- ``load_model(folder)``: rebuilds an export in one call, without Hydra, the run folder or
  the hub: the body comes from the transformers config kept in ``model.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from orca.bodies import LoadedBody, wrap_hf_model, wrap_swin_model
from orca.errors import ConfigError
from orca.model import OrcaModel, build_model
from orca.record import RECORD_NAME
from orca.registry import import_plugin

WEIGHTS, ARCHITECTURE = "model.safetensors", "model.json"


def body_from_config(body: dict) -> LoadedBody:
    """A randomly initialised body of the recorded transformers config (the weights follow)."""
    from transformers import AutoConfig, AutoModel

    options = dict(body["config"])
    config = AutoConfig.for_model(options.pop("model_type"), **options)
    model = AutoModel.from_config(config)
    if config.model_type == "swin":
        return wrap_swin_model(model, body["key"])
    return wrap_hf_model(model, body["key"])


def _record(run_dir: Path) -> dict:
    path = run_dir / RECORD_NAME
    if not path.exists():
        raise ConfigError(f"no finished run in {run_dir}: {RECORD_NAME} is missing; point run= at a run folder "
                          "that python -m orca.train finished")
    record = json.loads(path.read_text())
    if record.get("model") is None:
        why = ("a classical baseline has no embedder, body and head" if record.get("classical") else
               "its record predates recorded architectures; train it again")
        raise ConfigError(f"the run in {run_dir} cannot be loaded as a model: {why}")
    return record


def _import_plugins(record: dict) -> None:
    for module in record["config"].get("plugins") or []:  # the run's own components register on import
        import_plugin(module)


def load_run(run_dir: str | Path) -> tuple[OrcaModel, dict]:
    """(model with the selected weights, in eval mode; the run's record)."""
    run_dir = Path(run_dir)
    record = _record(run_dir)
    _import_plugins(record)
    arch = record["model"]
    model = build_model(body_from_config(arch["body"]), arch)
    checkpoint = run_dir / "checkpoints" / "finetune" / Path(record["checkpoint"]).name  # wherever the run moved
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model.eval(), record


def export_run(run_dir: str | Path, folder: str | Path) -> Path:
    """Write the run's selected model to `folder` (model.safetensors, model.json); refuses to
    write over an earlier export."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if (folder / WEIGHTS).exists() or (folder / ARCHITECTURE).exists():
        raise ConfigError(f"{folder} already holds an export; choose another export= folder")
    model, record = load_run(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    arch = {**record["model"], "plugins": record["config"].get("plugins") or [],
            "run": {"task": record["task"], "method": record["method"], "seed": record["seed"],
                    "metrics": record["metrics"], "error_name": record["error_name"]}}
    (folder / ARCHITECTURE).write_text(json.dumps(arch, indent=2))
    return folder


def load_model(folder: str | Path) -> OrcaModel:
    """The exported model, in eval mode; ``model.architecture`` holds model.json."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / WEIGHTS).exists() or not (folder / ARCHITECTURE).exists():
        raise ConfigError(f"{folder} holds no export ({WEIGHTS} and {ARCHITECTURE}); write one with "
                          "python -m orca.predict run=RUN_DIR export=FOLDER")
    arch = json.loads((folder / ARCHITECTURE).read_text())
    _import_plugins({"config": {"plugins": arch.get("plugins")}})
    model = build_model(body_from_config(arch["body"]), arch)
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    model.architecture = arch
    return model.eval()
