"""Time budgets: the step plan, calibration that leaves no trace, and a budgeted run that
`finetune.max_steps` repeats step for step."""
import pytest
import torch

from orca.budget import Calibration, StepPlan, calibrate, fixed_plan, plan_steps
from orca.errors import ConfigError
from orca.pipeline import train


def test_plan_fits_training_and_evaluation_in_the_seconds_left():
    calib = Calibration(step_s=0.1, eval_sample_s=0.001)
    plan = plan_steps(calib, seconds_left=100, val_samples=1000, test_samples=2000, num_validations=5)
    # evaluation 0.001 * (1000 * 6 + 2000) = 8 s, checkpoints 7.5 s, margin 5 s: 79.5 s of steps at 0.11 s
    assert plan.max_steps == 720 and plan.val_every == 144
    assert plan.max_steps % 5 == 0


def test_too_little_time_says_what_to_change():
    with pytest.raises(ConfigError, match="raise budget_s"):
        plan_steps(Calibration(step_s=1.0, eval_sample_s=0.01), 20, 1000, 1000, 5)


def test_fixed_plan_validates_at_the_end():
    assert fixed_plan(100, 5) == StepPlan(100, 20, None, None)
    assert fixed_plan(7, 2).val_every == 4


def test_calibration_restores_weights_and_random_state(make_cfg):
    from orca.bodies import load_body
    from orca.embedders import create_embedder
    from orca.heads import create_head
    from orca.model import OrcaModel
    from orca.stages import FinetuneStage
    from orca.tasks import create_task
    from torch.utils.data import DataLoader

    task = create_task("digits")
    splits = task.load("unused", max_samples={"train": 64})
    body = load_body("tiny-random").body
    model = OrcaModel(create_embedder("patch2d", task.input_shape, body, target_len=4), body,
                      create_head("pooled", body.output_size, 10))
    module = FinetuneStage(model, task, {"name": "adamw", "lr": 1e-2}, warmup_frac=0.1, new_lr=1e-1)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    calib = calibrate(module, DataLoader(splits.train, batch_size=16, shuffle=True), 1, splits.val.tensors[0][:32])
    assert torch.equal(torch.rand(3), expected)  # the global generator is where it was
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert calib.step_s > 0 and calib.eval_sample_s > 0


def test_parameter_groups_take_their_own_learning_rates(make_cfg):
    from orca.bodies import load_body
    from orca.embedders import create_embedder
    from orca.heads import create_head
    from orca.model import OrcaModel
    from orca.stages import FinetuneStage
    from orca.tasks import create_task

    task = create_task("digits")
    body = load_body("tiny-random").body
    model = OrcaModel(create_embedder("patch2d", task.input_shape, body, target_len=4), body,
                      create_head("pooled", body.output_size, 10))
    groups = FinetuneStage(model, task, {"name": "adamw", "lr": 1e-4}, 0.1, new_lr=3e-3).make_optimizer().param_groups
    by_name = {g["name"]: g for g in groups}
    assert by_name["body"]["lr"] == 1e-4 and by_name["embedder+head"]["lr"] == 3e-3
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_budgeted_run_is_repeated_step_for_step_by_max_steps(make_cfg, tmp_path):
    base = ("task=digits", "body=tiny-random", "budget=cpu", "method=finetune", "budget_s=20",
            "data.max_samples.test=200", "finetune.stop_on_time=false")  # the plan, not a busy machine, sets the steps
    budgeted = train(make_cfg(*base, run_dir=tmp_path / "budgeted"))
    ft = budgeted["finetune"]
    assert ft["steps_planned"] >= 5 and ft["steps_planned"] % 5 == 0 and ft["plan"]["calibration"]["step_s"] > 0
    assert ft["steps_done"] == ft["steps_planned"] and not ft["stopped_on_time"]
    assert "calibrate" in budgeted["time_s"]
    repeat = train(make_cfg(*base, f"finetune.max_steps={ft['steps_done']}", run_dir=tmp_path / "repeat"))
    assert repeat["finetune"]["plan"]["calibration"] is None
    assert repeat["finetune"]["selected_step"] == ft["selected_step"]
    assert repeat["metrics"] == budgeted["metrics"]
