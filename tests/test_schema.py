"""The option schema (orca/schema.py): it knows every key the built-in configs compose to,
accepts them, refuses values out of range in one line, and the README's option reference
is what it generates."""
import copy
import re

import pytest
from hydra import compose, initialize_config_dir

from conftest import ROOT
from orca.config_path import CONFIG_DIR, known_options
from orca.errors import ConfigError
from orca.preflight import check_overrides, plain
from orca.schema import Open, Positive, Run, _hints, _model_in, check_options, reference_table, words

TASKS = known_options("task")


def compositions() -> list[list[str]]:
    """Command lines that between them compose every built-in option of every group: the
    default, each task under budget=paper (its reference block, ORCA's body and recipe), each
    tuned method recipe (with its task's tuned recipe), every other group's options in turn."""
    runs = [[]] + [[f"task={t}", "budget=paper"] for t in TASKS]
    runs += [["budget=" + b, "task=" + t, "method=" + m]
             for b, t, m in (name.split("_", 2) for name in known_options("tuned_method"))]
    others = {g: known_options(g) for g in ("method", "body", "embedder", "head", "align", "trainer", "protocol",
                                             "logger") if known_options(g)}
    for i in range(max(len(v) for v in others.values())):
        runs.append(["budget=smoke", *(f"{g}={v[i % len(v)]}" for g, v in others.items())])
    return runs


def undeclared(config: dict, model=Run, prefix: str = "") -> list[str]:
    """Keys of `config` that the schema does not declare, outside open nodes."""
    found = []
    for key, value in config.items():
        tp = _hints(model).get(key)
        if tp is None:
            if not issubclass(model, Open):
                found.append(prefix + key)
            continue
        inner = _model_in(tp)
        if inner is not None and isinstance(value, dict):
            found += undeclared(value, inner, f"{prefix}{key}.")
    return found


def test_every_built_in_config_is_declared_and_valid():
    problems = []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for overrides in compositions():
            cfg = plain(compose("train", overrides, return_hydra_config=True))
            try:
                check_options(cfg)
            except ConfigError as exc:
                problems.append(f"{' '.join(overrides)}: {exc}")
            problems += [f"{' '.join(overrides)}: {key} is not declared" for key in undeclared(cfg)]
    assert problems == []


def test_the_readme_option_reference_is_the_schema():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- options:begin -->\n(.*?)\n<!-- options:end -->", text, re.S)
    assert block, "README lost its option reference markers"
    assert block.group(1).strip() == reference_table(plain(check_overrides([]))), \
        "the README's option reference differs from the schema: paste `python -m orca.schema` between the markers"


VALID = {"seed": 3, "budget_s": None, "finetune": {"optimizer": {"name": "sgd", "lr": 1, "momentum": 0.0},
                                                    "max_steps": -1, "val_check_interval": 0.5},
         "task": {"name": "mine", "val_frac": 0.2, "my_own_option": "anything"},
         "embedder": {"name": "my_embedder", "width": 7}, "align": {"milestones": [1, 5], "options": {"k": 2}}}


def test_a_valid_config_passes_with_keys_of_open_nodes():
    check_options(VALID)


@pytest.mark.parametrize("key, value, message", [
    ("finetune.optimizer.lr", -1, "finetune.optimizer.lr=-1: must be a number > 0"),
    ("finetune.max_steps", 0, "finetune.max_steps=0: must be an integer >= 1, or -1"),
    ("finetune.val_check_interval", 1.5, "must be an integer >= 1 (training batches) or a number in (0, 1]"),
    ("seed", True, "seed=true: seed takes an integer in [0, 4294967295]"),
    ("align.milestones", [5, 1], "align.milestones=[5,1]: must be a list of integers each >= 1, increasing"),
    ("finetune.optimizer.betas", [0.9], "must be a list of 2 numbers each in [0, 1)"),
    ("finetune.loop", "nope", "finetune.loop=nope: must be one of lightning, orca"),
    ("task.test_frac", 0.8, "task.val_frac=0.2 and task.test_frac=0.8 leave no training split"),
    ("finetune.optimizer.eps", 1e-8, "finetune.optimizer has no option 'eps'; its options: name, lr"),
])
def test_a_bad_value_is_one_line_naming_option_value_and_range(key, value, message):
    config = copy.deepcopy(VALID)
    *path, leaf = key.split(".")
    node = config
    for part in path:
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(ConfigError) as caught:
        check_options(config)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_value_shown_is_the_one_typed_and_the_example_the_default():
    with pytest.raises(ConfigError, match=r"^finetune.new_lr=-1e-3: must be a number > 0 or null, "
                                          r"e.g. finetune.new_lr=0.001$"):
        check_options({"finetune": {"new_lr": -0.001}}, given={"finetune.new_lr": "-1e-3"},
                      defaults={"finetune": {"new_lr": 0.001}})


def test_words_say_type_range_and_null():
    assert words(Positive | None).phrase() == "a number > 0 or null"
