"""Command line: predictions of a finished run, and its export.

    python -m orca.predict run=RUN_DIR input=FILE.npy [output=OUT.npy] [batch_size=128]
    python -m orca.predict run=RUN_DIR export=FOLDER

`input` holds samples in the task's input layout as the task loads them, (n, *input_shape)
float (or one sample, input_shape); the run's record gives the shape. The output (default
``RUN_DIR/predictions/<input name>.npy``, never written over) holds class probabilities
(n, K), label scores (n, K), or fields (n, H, W). On the test split's inputs it reproduces
the run's own ``predictions/test.npy``. `export` writes the selected model as safetensors
plus its architecture, loadable with ``orca.export.load_model(FOLDER)`` (orca/export.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from orca.errors import ConfigError, OrcaError

KEYS = ("run", "input", "output", "export", "batch_size")


def parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"cannot read {arg!r}: give key=value with keys {', '.join(KEYS)}, e.g. "
                              "python -m orca.predict run=RUN_DIR input=FILE.npy")
        args[key] = value
    if "run" not in args or not ({"input", "export"} & args.keys()):
        raise ConfigError("name a run folder and what to do with it: run=RUN_DIR input=FILE.npy, "
                          "or run=RUN_DIR export=FOLDER")
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
        try:
            batch_size = int(args.get("batch_size", 128))
        except ValueError:
            raise ConfigError(f"batch_size={args['batch_size']}: give a positive integer") from None
        model, record = load_run(run_dir)
        arch = record["model"]
        y = predict(model, read_inputs(source, tuple(arch["input_shape"])), arch["output_kind"], max(1, batch_size))
        output.parent.mkdir(parents=True, exist_ok=True)
        np.save(output, y)
        what = {"classes": "class probabilities", "multilabel": "label scores"}.get(arch["output_kind"], "fields")
        done.append(f"wrote {what} {tuple(y.shape)} to {output}")
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
