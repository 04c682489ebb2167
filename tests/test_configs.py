"""Config composition: tuned recipes apply to their own budget, task and method only."""

import pytest

from conftest import ROOT

TUNED = sorted(p.stem for p in (ROOT / "configs" / "tuned").glob("*.yaml"))
TUNED_METHOD = sorted(p.stem for p in (ROOT / "configs" / "tuned_method").glob("*.yaml"))
TASKS = {p.stem for p in (ROOT / "configs" / "task").glob("*.yaml")}
METHODS = {p.stem for p in (ROOT / "configs" / "method").glob("*.yaml")}
BUDGETS = {p.stem for p in (ROOT / "configs" / "budget").glob("*.yaml")}


@pytest.mark.parametrize("name", TUNED + TUNED_METHOD)
def test_every_tuned_file_names_a_budget_task_and_method_that_exist(name):
    budget, task, *method = name.split("_", 2)
    assert budget in BUDGETS and task in TASKS and (not method or method[0] in METHODS), name
    text = (ROOT / "configs" / ("tuned_method" if method else "tuned") / f"{name}.yaml").read_text()
    assert "search_recipe.py" in text or "python -m orca.train" in text, \
        f"{name}: say which search (a search_recipe.py study, or orca.train runs) chose these values"


def test_tuned_recipe_applies_to_its_budget_only(make_cfg):
    cpu = make_cfg("task=satellite")
    assert cpu.embedder.target_len == 2
    paper = make_cfg("task=satellite", "budget=paper")
    assert paper.embedder.target_len == paper.reference.target_len == 512 and paper.finetune.new_lr is None
    assert make_cfg("task=satellite", "budget=smoke").embedder.target_len is None  # the token rule


def test_the_main_command_gets_the_digits_recipe(make_cfg):
    cfg = make_cfg()
    assert cfg.task.name == "digits" and cfg.method.name == "orca" and cfg.budget_s == 75
    assert cfg.embedder.target_len == 4


def test_a_task_without_a_tuned_recipe_takes_the_defaults(make_cfg):
    cfg = make_cfg("task=ninapro")
    assert cfg.budget_s == 280 and cfg.embedder.target_len is None


def test_token_rule_defaults_give_the_searched_token_counts(make_cfg):
    from orca.bodies import load_body
    from orca.embedders import create_embedder

    cfg = make_cfg("budget=smoke")  # no tuned recipe: the rule
    body = load_body("tiny-random", max_positions=512).body
    rule = {"values_per_token": cfg.embedder.values_per_token, "max_tokens": cfg.embedder.max_tokens}
    searched = {("conv1d", (1, 46)): 2, ("conv1d", (1, 1000)): 8, ("patch2d", (1, 8, 8)): 4,
                ("patch2d", (3, 16, 16)): 4, ("patch2d", (3, 32, 32)): 4}  # configs/tuned/cpu_*.yaml
    for (name, shape), tokens in searched.items():
        assert create_embedder(name, shape, body, **rule).num_tokens == tokens, shape
