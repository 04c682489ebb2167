"""Model merging in weight space: a new run folder made from finished runs.

    python -m orca.merge runs=[DIR,...] how=HOW out=DIR [alpha=A] [fisher_samples=256] [data.root=PATH]

`how`:
- ``wise`` (WiSE-FT, Wortsman et al. 2022): one run; its body's weights become
  (1 - alpha) * pretrained + alpha * fine-tuned. The embedder and head stay the run's: the
  pretrained body has none for this task, so alpha = 0 is the pretrained body under the
  fine-tuned embedder and head, alpha = 1 the run itself.
- ``uniform`` (a uniform model soup, Wortsman et al. 2022): every weight averaged over the runs.
- ``greedy`` (the greedy soup, same paper): the runs in order of their own validation error;
  each joins the soup (a uniform average) unless the soup's validation error rises.
- ``fisher`` (Matena and Raffel 2022): every weight averaged with each run's diagonal Fisher
  information as its weight, estimated from `fisher_samples` training samples, one
  gradient each (classes: of log p(y | x) at a class drawn from the model's own p(. | x);
  other outputs: of the task's loss at the true target, the empirical Fisher).
- ``task_arithmetic`` (Ilharco et al. 2023): the pretrained body plus alpha times the sum of
  the runs' task vectors (fine-tuned minus pretrained body); the embedders and heads averaged.

A coefficient not given (`alpha`) is chosen on validation from 0, 0.1, ..., 1 (the lowest
validation error, the first on a tie). The chosen model's test error is computed once.
The out folder gets what a training run leaves (``results.json`` with a ``merge`` entry
naming the runs and coefficients, the weights under ``checkpoints/finetune/``, the test
predictions), so ``orca.predict``, ``export`` and the table take it as any run.

Soups need runs that share an initialisation: fine-tune several runs from one aligned
embedder with ``align.from_run=DIR`` (orca/pipeline.py) and different learning rates or
seeds. Runs of different architectures, tasks or data are refused.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from orca.errors import ConfigError, OrcaError
from orca.record import RECORD_NAME, machine, package_versions, peak_rss_mb, summary, write_record

HOWS = ("wise", "uniform", "greedy", "fisher", "task_arithmetic")
METHOD_NAMES = {"wise": "wise_ft", "uniform": "soup_uniform", "greedy": "soup_greedy", "fisher": "fisher_merge",
                "task_arithmetic": "task_arithmetic"}  # the record's method
GRID = tuple(i / 10 for i in range(11))  # coefficients tried on validation
KEYS = ("runs", "how", "out", "alpha", "fisher_samples", "data.root")
State = dict[str, torch.Tensor]


def average(states: list[State], weights: list[float] | None = None) -> State:
    """The weighted average of state dicts (uniform without `weights`); tensors that are
    not floating point (step counters, index buffers) are taken from the first."""
    weights = weights or [1.0 / len(states)] * len(states)
    return {k: sum(w * s[k] for w, s in zip(weights, states)) if v.is_floating_point() else v
            for k, v in states[0].items()}


def is_body_weight(key: str) -> bool:
    return key.startswith("body.")


def wise(finetuned: State, pretrained: State, alpha: float) -> State:
    """WiSE-FT: the body interpolated, (1 - alpha) * pretrained + alpha * fine-tuned."""
    return {k: (1 - alpha) * pretrained[k] + alpha * v if is_body_weight(k) and v.is_floating_point() else v
            for k, v in finetuned.items()}


def task_arithmetic(finetuned: list[State], pretrained: State, alpha: float) -> State:
    """The pretrained body plus alpha times the sum of the task vectors; the rest averaged."""
    merged = average(finetuned)
    for k, v in merged.items():
        if is_body_weight(k) and v.is_floating_point():
            merged[k] = pretrained[k] + alpha * sum(s[k] - pretrained[k] for s in finetuned)
    return merged


def greedy_soup(states: list[State], own_val_errors: list[float], val_error) -> tuple[list[int], list[dict]]:
    """The greedy soup's ingredients (indices into `states`) and its steps: the runs in order
    of their own validation error, each kept if the soup's validation error (`val_error` of
    a state) does not rise with it."""
    order = sorted(range(len(states)), key=lambda i: own_val_errors[i])
    soup, best, steps = [order[0]], val_error(states[order[0]]), []
    for i in order[1:]:
        error = val_error(average([states[j] for j in soup + [i]]))
        steps.append({"run": i, "soup_val_error": error, "added": error <= best})
        if error <= best:
            soup, best = soup + [i], error
    return soup, steps


def fisher_average(states: list[State], fishers: list[State], floor: float = 1e-8) -> State:
    """Each weight averaged with the runs' Fisher information as weights (each floored, so
    a weight no sample moves in any run is averaged uniformly)."""
    merged = dict(states[0])
    for k, v in states[0].items():
        if v.is_floating_point() and k in fishers[0]:
            total = sum(f[k] + floor for f in fishers)
            merged[k] = sum((f[k] + floor) * s[k] for f, s in zip(fishers, states)) / total
        elif v.is_floating_point():
            merged[k] = average([s[k] for s in states])  # buffers: no Fisher
    return merged


def diagonal_fisher(model, task, train, samples: int, seed: int = 0) -> State:
    """The diagonal Fisher information of every parameter (name -> tensor like it), averaged
    over `samples` training samples drawn with `seed`, one squared gradient each."""
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(train), generator=generator)[:samples].tolist()
    params = dict(model.named_parameters())
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    model.eval()  # no dropout: the model as it predicts
    with torch.enable_grad():
        for p in params.values():
            p.requires_grad_(True)
        for x, y, *rest in DataLoader(Subset(train, picked), batch_size=1):
            extras = task.extras(rest)
            out = model(task.augment_eval(x, **extras))
            if task.output_kind == "classes":
                log_p = out.log_softmax(-1)[0]
                loss = -log_p[torch.multinomial(log_p.exp().detach(), 1, generator=generator)[0]]
            else:
                loss = task.loss(out, y, extras.get("mask"))
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads):
                if g is not None:
                    fisher[name] += g.detach() ** 2
    return {n: f / len(picked) for n, f in fisher.items()}


@torch.no_grad()
def evaluate(model, task, dataset, batch_size: int = 128, keep: bool = False):
    """The task's scores (with ``error``) of `model` over a split, as the fine-tuning stage
    computes them; with `keep`, also its predictions (n, ...)."""
    from orca.tasks import predictions

    model.eval()
    metrics, kept = task.metrics(), []
    for x, y, *rest in DataLoader(dataset, batch_size=batch_size):
        extras = task.extras(rest)
        outputs = model(task.augment_eval(x, **extras))
        metrics.update(outputs, y, **extras)
        if keep:
            kept.append(predictions(outputs, task.output_kind).float())
    scores = task.scores({name: float(value) for name, value in metrics.compute().items()})
    return (scores, torch.cat(kept).numpy()) if keep else scores


def load_runs(folders: list[str]) -> list[tuple]:
    """(model, record) of each finished run; refuses runs that cannot be merged, in one line."""
    from orca.export import load_run

    if not folders:
        raise ConfigError("runs=[]: name at least one finished run folder")
    loaded = [load_run(folder) for folder in folders]
    first = loaded[0][1]
    for folder, (_, record) in zip(folders[1:], loaded[1:]):
        for what, get in (("architecture", lambda r: r["model"]), ("task options", lambda r: r["config"]["task"]),
                          ("data", lambda r: r["config"]["data"])):
            if json.dumps(get(record), sort_keys=True) != json.dumps(get(first), sort_keys=True):
                raise ConfigError(f"{folder} and {folders[0]} differ in their {what}; only runs of one "
                                  "architecture on one task and split can be merged")
    for folder, (_, record) in zip(folders, loaded):
        if (record.get("protocol") or {}).get("select_on") == "test":
            raise ConfigError(f"{folder} was selected on test (protocol=reference); merging chooses on validation, "
                              "so it needs runs with a validation split (protocol=clean)")
    return loaded


def pretrained_state(record: dict, model) -> State:
    """The model's state with the body's pretrained weights (the run's embedder and head)."""
    from orca.bodies import load_body
    from orca.model import build_model

    body = record["config"]["body"]
    loaded = load_body(body["name"], body.get("path"), pretrained=True)
    if loaded.key != record["model"]["body"]["key"]:
        raise ConfigError(f"the run's body {record['model']['body']['key']!r} is not the pretrained {loaded.key!r} "
                          "(a scratch run?): wise and task_arithmetic need a pretrained body to start from")
    state = build_model(loaded, record["model"]).state_dict()
    return {k: state[k] if is_body_weight(k) else v for k, v in model.state_dict().items()}


def recorded_splits(record: dict, data_root: str | None = None):
    """The task and the splits exactly as the run loaded them."""
    from orca.tasks import create_task

    cfg = record["config"]
    task = create_task(cfg["task"]["name"], **{k: v for k, v in cfg["task"].items() if k != "name"})
    data = cfg["data"]
    splits = task.load(data_root or data["root"], download=False, max_samples=data["max_samples"],
                       seed=data["subset_seed"], orca_data=cfg["protocol"]["data"] == "orca",
                       train_fraction=data.get("train_fraction"))
    return task, splits


def merge(folders: list[str], how: str, out: str, alpha: float | None = None, fisher_samples: int = 256,
          data_root: str | None = None) -> dict:
    """Merge the finished runs in `folders` as `how` says; write the out run folder; return its record."""
    if how not in HOWS:
        raise ConfigError(f"how={how!r}; known: {', '.join(HOWS)}")
    if alpha is not None and how not in ("wise", "task_arithmetic"):
        raise ConfigError(f"alpha applies to how=wise and how=task_arithmetic, not to how={how}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; merging never writes over a folder: choose another out=")
    if how == "wise" and len(folders) != 1:
        raise ConfigError(f"how=wise interpolates one run with its pretrained body; {len(folders)} runs were given")
    start = time.perf_counter()
    loaded = load_runs(folders)
    model, first = loaded[0]
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m, _ in loaded]
    task, splits = recorded_splits(first, data_root)
    batch = first["config"]["finetune"]["eval_batch_size"]

    def val_error(state: State) -> float:
        model.load_state_dict(state)
        return evaluate(model, task, splits.val, batch)["error"]

    details: dict = {"how": how, "runs": [str(Path(f)) for f in folders],
                     "runs_val_error": [r["metrics"]["val"]["error"] for _, r in loaded]}
    if how in ("wise", "task_arithmetic"):
        if first["model"].get("peft"):
            raise ConfigError(f"how={how} moves the body's own weights, which a {first['model']['peft']['name']} run "
                              "left as loaded; merge runs that fine-tuned the body")
        pretrained = pretrained_state(first, model)
        combine = {"wise": lambda a: wise(states[0], pretrained, a),
                   "task_arithmetic": lambda a: task_arithmetic(states, pretrained, a)}[how]
        grid = [alpha] if alpha is not None else list(GRID)
        errors = [val_error(combine(a)) for a in grid]
        chosen = grid[errors.index(min(errors))]
        details.update(alpha=chosen, val_error_by_alpha=dict(zip(map(str, grid), errors)))
        merged = combine(chosen)
    elif how == "uniform":
        merged = average(states)
    elif how == "greedy":
        soup, steps = greedy_soup(states, details["runs_val_error"], val_error)
        details.update(ingredients=[details["runs"][i] for i in soup],
                       steps=[{**step, "run": details["runs"][step["run"]]} for step in steps])
        merged = average([states[i] for i in soup])
    else:  # fisher
        fishers = []
        for (run_model, record), folder in zip(loaded, folders):
            print(f"Fisher information of {folder} on {min(fisher_samples, len(splits.train))} training samples",
                  file=sys.stderr)
            fishers.append(diagonal_fisher(run_model, task, splits.train, fisher_samples, seed=int(record["seed"])))
        details["fisher_samples"] = min(fisher_samples, len(splits.train))
        merged = fisher_average(states, fishers)

    model.load_state_dict(merged)
    val_scores = evaluate(model, task, splits.val, batch)
    test_scores, test_predictions = evaluate(model, task, splits.test, batch, keep=True)
    return _write_run(out, model, first, how, details, val_scores, test_scores, test_predictions,
                      time.perf_counter() - start)


def _write_run(out: Path, model, first: dict, how: str, details: dict, val: dict, test: dict, test_predictions,
               seconds: float) -> dict:
    import numpy as np

    checkpoint = out / "checkpoints" / "finetune" / "merged.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    (out / "predictions").mkdir(exist_ok=True)
    np.save(out / "predictions" / "test.npy", test_predictions)
    kept = ("task", "body", "seed", "budget", "protocol", "error_name", "reference_error_name", "paper",
            "data_sizes", "params", "model", "config")
    record = {**{k: first.get(k) for k in kept}, "method": METHOD_NAMES[how], "metrics": {"val": val, "test": test},
              "merge": details, "align": None, "finetune": None, "classical": None,
              "time_s": {"merge": round(seconds, 2), "total": round(seconds, 2)}, "attempts": 1,
              "peak_rss_mb": round(peak_rss_mb(), 1), "checkpoint": str(checkpoint),
              "versions": package_versions(), "machine": machine()}
    write_record(out, record)
    return record


def parse(argv: list[str]) -> dict:
    import yaml

    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"cannot read {arg!r}: give key=value with keys {', '.join(KEYS)}, e.g. "
                              "python -m orca.merge runs=[RUN_A,RUN_B] how=uniform out=DIR")
        args[key] = value
    missing = [k for k in ("runs", "how", "out") if k not in args]
    if missing:
        raise ConfigError(f"give {', '.join(f'{k}=' for k in missing)}: python -m orca.merge runs=[RUN_A,RUN_B] "
                          f"how={'|'.join(HOWS)} out=DIR")
    runs = yaml.safe_load(args["runs"]) if args["runs"].startswith("[") else args["runs"].split(",")
    try:
        alpha = float(args["alpha"]) if "alpha" in args else None
        samples = int(args.get("fisher_samples", 256))
    except ValueError:
        raise ConfigError("alpha must be a number and fisher_samples a positive integer") from None
    if samples < 1:
        raise ConfigError(f"fisher_samples={samples}: give a positive integer")
    return {"folders": [str(r) for r in runs], "how": args["how"], "out": args["out"], "alpha": alpha,
            "fisher_samples": samples, "data_root": args.get("data.root")}


def main() -> None:
    try:
        record = merge(**parse(sys.argv[1:]))
    except OrcaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summary(record))
    print(f"wrote {Path(record['checkpoint']).parents[2] / RECORD_NAME}")


if __name__ == "__main__":
    main()
