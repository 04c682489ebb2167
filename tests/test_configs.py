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
    assert "search_recipe.py" in (ROOT / "configs" / ("tuned_method" if method else "tuned") / f"{name}.yaml").read_text(), \
        f"{name}: say which search chose these values"


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
