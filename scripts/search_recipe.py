"""Choose a task's tokens and learning rates on validation (an Optuna study, resumable).

    python scripts/search_recipe.py --task satellite --method finetune --trials 12 \\
        --data-root ../shared/datasets/satellite-crop
    python scripts/search_recipe.py --task satellite --method fpt --trials 8 --data-root ...
    python scripts/search_recipe.py --task satellite --method finetune --summary   # the table so far

Each trial is one ``python -m orca.train`` run at ``budget=cpu`` with ``budget_s`` seconds
(--budget-s, default 120: shorter than a table run, so that a search fits in an afternoon)
in ``<out>/trials/NNN``; the study is ``<out>/study.db`` (default out:
``results/search/<task>-<method>``). Run it again to continue an interrupted search. The
first trial is the current default. Searched: ``embedder.target_len`` (every distinct
token count up to 64), the body's learning rate and the embedder's and head's (FPT: its
one learning rate). The objective is the validation error; the test split chooses
nothing, so trials score only 256 test samples, to spend their time on training.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import optuna  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from orca.embedders import tokens_for  # noqa: E402
from orca.errors import OrcaError  # noqa: E402
from orca.search import METHOD_SPACES, Search, summary, token_choices  # noqa: E402
from orca.tasks import create_task  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRIAL_TEST_SAMPLES = 256


def current_defaults(task: str, method: str, overrides: list[str], input_shape) -> dict:
    """The recipe a run gets today, in the search's parameter names."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"task={task}", f"method={method}", *overrides])
    e = cfg.embedder
    target_len = e.target_len or tokens_for(input_shape, e.values_per_token, e.max_tokens)
    choices = token_choices(input_shape)
    target_len = max([c for c in choices if c <= target_len] or [choices[0]])  # same tokens, canonical value
    values = {"embedder.target_len": target_len}
    for key in METHOD_SPACES[method]:
        values[key] = OmegaConf.select(cfg, key)
    return {k: v for k, v in values.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--method", default="finetune", choices=sorted(METHOD_SPACES))
    parser.add_argument("--trials", type=int, default=12, help="finished trials the study should hold")
    parser.add_argument("--budget", default="cpu", help="budget config of each trial")
    parser.add_argument("--budget-s", type=float, default=120, help="wall clock of each trial run, s (0: the budget's)")
    parser.add_argument("--data-root", help="the task's data folder")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for every trial; repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", action="store_true", help="print the study's table and run nothing")
    args = parser.parse_args(argv)
    out = args.out or Path("results") / "search" / f"{args.task}-{args.method}"
    overrides = [f"budget={args.budget}", *([f"budget_s={args.budget_s}"] if args.budget_s else []),
                 f"data.max_samples.test={TRIAL_TEST_SAMPLES}",  # the test split chooses nothing: spend little on it
                 *([f"data.root={args.data_root}"] if args.data_root else []), *args.override]
    try:
        task = create_task(args.task)
        if args.data_root:  # some tasks learn their input shape from the files (darcy's resolution)
            task.load(args.data_root, download=False, max_samples={"train": 1, "val": 1, "test": 1})
        search = Search(args.task, args.method, out, tuple(task.input_shape), tuple(overrides), args.seed)
        search.defaults = current_defaults(args.task, args.method, overrides, search.input_shape)
    except OrcaError as exc:
        parser.error(str(exc))
    if args.summary:
        study = optuna.load_study(study_name=f"{args.task}-{args.method}", storage=f"sqlite:///{out.resolve() / 'study.db'}")
    else:
        study = search.run(args.trials)
    print(summary(study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
