"""Command line: predictions of a finished run, its scores, and its export.

    python -m orca.predict run=RUN_DIR input=FILE.npy [output=OUT.npy] [batch_size=128]
    python -m orca.predict run=RUN_DIR score=val [task.OPTION=VALUE ...] [data.root=PATH]
    python -m orca.predict run=RUN_DIR export=FOLDER

`input` holds samples in the task's input layout as the task loads them, (n, *input_shape)
float (or one sample, input_shape); the run's record gives the shape. The output (default
``RUN_DIR/predictions/<input name>.npy``, never written over) holds class probabilities
(n, K), label scores (n, K), or fields (n, H, W). On the test split's inputs it reproduces
the run's own ``predictions/test.npy``. `score` computes the task's metrics of the selected
model over a whole split (train, val or test), without the budget's caps, with the task
built as the run built it except for the `task.` options given (``task.eval_stride=null``
scores ECG on windows cut as the reference code cuts them); it prints them and writes
nothing (``data.root=`` if the data has moved). `export` writes the selected model as
safetensors plus its architecture, loadable with ``orca.export.load_model(FOLDER)``
(orca/export.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from orca.errors import ConfigError, OrcaError

KEYS = ("run", "input", "output", "score", "export", "batch_size", "data.root")


def parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not (key in KEYS or key.startswith("task.") and len(key) > 5):
            raise ConfigError(f"cannot read {arg!r}: give key=value with keys {', '.join(KEYS)} or task.OPTION, "
                              "e.g. python -m orca.predict run=RUN_DIR input=FILE.npy")
        args[key] = value
    if "run" not in args or not ({"input", "score", "export"} & args.keys()):
        raise ConfigError("name a run folder and what to do with it: run=RUN_DIR input=FILE.npy, "
                          "run=RUN_DIR score=val, or run=RUN_DIR export=FOLDER")
    return args


def read_inputs(path: Path, input_shape: tuple[int, ...]):
    """(n, *input_shape) float32 from a .npy file (one sample is taken as n = 1)."""
    import numpy as np

    if not path.is_file():
        raise ConfigError(f"input file {path} does not exist")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot read {path} as a .npy array ({exc}); save the inputs with numpy.save") from None
    if tuple(x.shape) == input_shape:
        x = x[None]
    if tuple(x.shape[1:]) != input_shape:
        raise ConfigError(f"{path} holds an array shaped {tuple(x.shape)}; this run's model takes "
                          f"(n, {', '.join(map(str, input_shape))}) (n samples of {input_shape})")
    if x.dtype.kind not in "fiu" or not np.isfinite(x).all():
        raise ConfigError(f"{path} must hold finite numbers; got dtype {x.dtype} or NaN/inf values")
    return x.astype(np.float32)


def predict(model, x, output_kind: str, batch_size: int = 128):
    """(n, ...) predictions of `model` for inputs x (numpy), in batches."""
    import torch

    from orca.tasks import predictions

    with torch.no_grad():
        out = [predictions(model(torch.from_numpy(x[i : i + batch_size])), output_kind)
               for i in range(0, len(x), batch_size)]
    return torch.cat(out).float().numpy()


def score(run_dir: str | Path, split: str, task_options: dict | None = None, data_root: str | None = None,
          batch_size: int = 128) -> dict[str, float]:
    """The task's metrics and `error` of the run's selected model over the whole `split`, the
    task built with the run's options updated by `task_options`."""
    import torch
    from torch.utils.data import DataLoader

    from orca.export import load_run
    from orca.tasks import SPLITS, create_task

    if split not in SPLITS:
        raise ConfigError(f"score={split}: choose one of the splits {', '.join(SPLITS)}")
    model, record = load_run(run_dir)
    recorded = record["config"]
    options = {k: v for k, v in recorded["task"].items() if k != "name"} | (task_options or {})
    task = create_task(recorded["task"]["name"], **options)
    orca_data = recorded.get("protocol", {}).get("data") == "orca"
    dataset = getattr(task.load(data_root or recorded["data"]["root"], download=False, orca_data=orca_data), split)
    metrics = task.metrics()
    with torch.no_grad():
        for x, y, *rest in DataLoader(dataset, batch_size=batch_size):
            metrics.update(model(x), y, **task.extras(rest))
    values = {name: float(value) for name, value in metrics.compute().items()}
    return {**task.scores(values), "samples": len(dataset)}


def _batch_size(args: dict[str, str]) -> int:
    try:
        return max(1, int(args.get("batch_size", 128)))
    except ValueError:
        raise ConfigError(f"batch_size={args['batch_size']}: give a positive integer") from None


def run(args: dict[str, str]) -> list[str]:
    """Do what the arguments ask; return what was written, one line each."""
    import numpy as np

    from orca.export import export_run, load_run

    run_dir, done = Path(args["run"]), []
    if "input" in args:
        source = Path(args["input"])
        output = Path(args.get("output") or run_dir / "predictions" / f"{source.stem}.npy")
        if output.exists():
            raise ConfigError(f"{output} exists and is not written over; choose another output=")
        model, record = load_run(run_dir)
        arch = record["model"]
        y = predict(model, read_inputs(source, tuple(arch["input_shape"])), arch["output_kind"], _batch_size(args))
        output.parent.mkdir(parents=True, exist_ok=True)
        np.save(output, y)
        what = {"classes": "class probabilities", "multilabel": "label scores"}.get(arch["output_kind"], "fields")
        done.append(f"wrote {what} {tuple(y.shape)} to {output}")
    if "score" in args:
        import yaml

        options = {key.removeprefix("task."): yaml.safe_load(value) for key, value in args.items()
                   if key.startswith("task.")}
        values = score(run_dir, args["score"], options, args.get("data.root"), _batch_size(args))
        given = "".join(f" {key}={value}" for key, value in args.items() if key.startswith("task."))
        done.append(f"{args['score']} split ({values.pop('samples')} samples{given}): "
                    + ", ".join(f"{name} {value:.4f}" for name, value in values.items()))
    if "export" in args:
        done.append(f"exported the model to {export_run(run_dir, args['export'])} "
                    "(load it with orca.export.load_model)")
    return done


def main() -> None:
    try:
        for line in run(parse(sys.argv[1:])):
            print(line)
    except OrcaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
