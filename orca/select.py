"""Command line: rank pretrained bodies for a task by dataset distance, before fine-tuning.

    python -m orca.select task=satellite bodies=[minilm,minilm:random,gpt2] [steps=20] [out=DIR] [overrides...]

For each body (``NAME:random``: the same architecture, randomly initialised) it builds the
task's embedder on that body, measures the OTDD between the embedded training data and the
body's own source data (the align stage's measure: orca/pipeline.py ``run_align``), aligns
the embedder for `steps` steps, and measures again. Bodies rank by OTDD after alignment,
lowest first. A body that cannot be loaded (a hub name offline) is listed as unavailable,
not fatal. Writes ``select.json`` and ``select.md`` to `out` (default
``selections/<time>_<task>``); each body's aligned embedder is kept in ``out/<body>/``, so
an interrupted selection resumes where it stopped. Other overrides are the train command's
(task, data.root, align.*, seed, ...), checked the same way.

OTDD values of bodies of different widths are distances in different spaces; the table
states each body's width so that a reader can weigh that.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from orca.errors import BodyLoadError, ConfigError, OrcaError, RunExistsError

KEYS = ("bodies", "steps", "out")


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """({bodies, steps, out}, the train overrides)."""
    own, overrides = {"bodies": None, "steps": 20, "out": None}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key not in KEYS:
            overrides.append(arg)
        elif key == "bodies":
            own["bodies"] = [b.strip() for b in value.strip().strip("[]").split(",") if b.strip()]
        elif key == "steps":
            if not value.isdigit():
                raise ConfigError(f"steps={value}: give the number of alignment steps, e.g. steps=20")
            own["steps"] = int(value)
        else:
            own["out"] = value
    if not own["bodies"]:
        raise ConfigError("name the bodies to compare, e.g. bodies=[minilm,minilm:random,gpt2]")
    if any(a.startswith("body=") for a in overrides):
        raise ConfigError("give the bodies as bodies=[...], not body=")
    return own, overrides


def compose_for(body: str, overrides: list[str], steps: int):
    """The run config for one body (checked like python -m orca.train's)."""
    from orca.preflight import check_overrides

    name = body.removesuffix(":random")
    return check_overrides([*overrides, f"body={name}", f"align.steps={steps}", "trainer.enable_progress_bar=false"])


def measure(body: str, cfg, task, splits, folder: Path) -> dict:
    """OTDD before and after aligning the task's embedder on `body`, and the seconds it took."""
    from orca.bodies import load_body
    from orca.methods import MethodConfig
    from orca.model import build_model
    from orca.pipeline import model_architecture, run_align
    from orca.record import StageTimer

    start = time.perf_counter()
    pretrained = not body.endswith(":random")
    try:
        loaded = load_body(cfg.body.name, cfg.body.path, pretrained=pretrained)
    except BodyLoadError as exc:
        return {"body": body, "status": "unavailable", "reason": str(exc).split(". ")[0]}
    _, arch = model_architecture(cfg, task, loaded, MethodConfig(name="select"))  # the task's embedder and head
    embedder = build_model(loaded, arch).embedder
    align = run_align(cfg, task, splits.train, loaded, embedder, folder, StageTimer())
    return {"body": body, "status": "ok", "width": loaded.body.hidden_size, "tokens": list(embedder.grid),
            "otdd_before": align["before"], "otdd_after": align["after"], "steps": align["steps"],
            "source": align["source"], "seconds": round(time.perf_counter() - start, 1)}


def rank(rows: list[dict]) -> list[dict]:
    """Rows with rank_before / rank_after (1 = lowest OTDD) among the bodies that loaded."""
    ok = [r for r in rows if r["status"] == "ok"]
    for key in ("before", "after"):
        for i, r in enumerate(sorted(ok, key=lambda r: r[f"otdd_{key}"]), start=1):
            r[f"rank_{key}"] = i
    return sorted(rows, key=lambda r: (r.get("rank_after") or len(rows) + 1))


def table(rows: list[dict], task: str) -> str:
    lines = [f"Bodies for task {task}, by OTDD to their own source data after alignment (lower first)", "",
             "| rank | body | width | OTDD before | OTDD after | rank before | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "ok":
            lines.append(f"| {r['rank_after']} | {r['body']} | {r['width']} | {r['otdd_before']:.4g} | "
                         f"{r['otdd_after']:.4g} | {r['rank_before']} | {r['seconds']} |")
        else:
            lines.append(f"| - | {r['body']} | - | unavailable: {r['reason']} | | | |")
    return "\n".join(lines) + "\n"


def select(argv: list[str]) -> Path:
    import lightning as L

    from orca.pipeline import node_options
    from orca.plugins import with_plugin_configs
    from orca.tasks import create_task

    own, overrides = parse(argv)
    overrides = with_plugin_configs(overrides)  # task=<a plugin's task>
    configs = {b: compose_for(b, overrides, own["steps"]) for b in own["bodies"]}  # every name checked first
    first = configs[own["bodies"][0]]
    out = Path(own["out"] or f"selections/{datetime.now():%Y-%m-%d_%H-%M-%S}_{first.task.name}")
    if (out / "select.json").exists():
        raise RunExistsError(f"{out / 'select.json'} exists: that selection is finished; choose another out=")
    task = create_task(first.task.name, **node_options(first.task))
    splits = task.load(first.data.root, download=first.data.download,
                       max_samples=node_options(first.data.max_samples, drop=()), seed=first.data.subset_seed)
    rows = []
    for body, cfg in configs.items():
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        print(f"{body}: aligning {cfg.embedder.name} for {own['steps']} steps", flush=True)
        rows.append(measure(body, cfg, task, splits, out / body.replace(":", "-")))
    rows = rank(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "select.json").write_text(json.dumps({"task": task.name, "steps": own["steps"], "bodies": rows}, indent=2))
    (out / "select.md").write_text(table(rows, task.name))
    print("\n" + table(rows, task.name) + f"\nwritten to {out}")
    return out


def main() -> None:
    try:
        select(sys.argv[1:])
    except OrcaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
