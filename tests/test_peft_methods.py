"""Parameter-efficient methods: LoRA (through peft), linear probe, LP-FT, and ORCA + LoRA.
Each trains what it says and leaves the rest of the body as loaded."""
from types import SimpleNamespace

import pytest
import torch

from orca.adapters import add_lora, is_adapter_parameter
from orca.bodies import load_body, wrap_hf_model
from orca.errors import ConfigError
from orca.methods import MethodConfig
from orca.pipeline import train
from orca.stages import LinearProbeFirst

SMOKE = ("task=digits", "body=tiny-random", "budget=smoke", "finetune.max_steps=6")


def _selected_body(record) -> dict[str, torch.Tensor]:
    state = torch.load(record["checkpoint"], weights_only=False)["state_dict"]
    return {k.removeprefix("model.body."): v for k, v in state.items() if k.startswith("model.body.")}


def _loaded_body() -> dict[str, torch.Tensor]:
    return load_body("tiny-random").body.state_dict()  # the same seeded weights every time


@pytest.mark.parametrize("method", ["lora", "orca_lora"])
def test_lora_trains_adapters_embedder_and_head_only(make_cfg, method):
    record = train(make_cfg(*SMOKE, f"method={method}", "method.peft.r=2"))
    body, loaded = _selected_body(record), _loaded_body()
    adapters = {k: v for k, v in body.items() if is_adapter_parameter(k)}
    # 2 layers x (query, key, value, attention output, intermediate, output) x (A, B)
    assert len(adapters) == 24
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)  # B starts at 0: it trained
    for name, value in loaded.items():  # every own weight of the body as loaded (peft renames to base_layer)
        key = name if name in body else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(body[key], value), name
    adapter_count = sum(v.numel() for v in adapters.values())
    params = record["params"]
    assert params["total"] - params["trainable"] == sum(v.numel() for v in loaded.values())
    assert params["trainable"] > adapter_count  # plus embedder and head
    assert record["finetune"]["seconds_per_step"] > 0
    assert (record["align"] is not None) == (method == "orca_lora")


def test_linear_probe_keeps_the_body_and_trains_the_embedder(make_cfg):
    record = train(make_cfg(*SMOKE, "method=linear_probe"))
    body, loaded = _selected_body(record), _loaded_body()
    assert all(torch.equal(body[k], v) for k, v in loaded.items())
    assert record["params"]["trainable"] == record["params"]["total"] - sum(v.numel() for v in loaded.values())


def test_lp_ft_unfreezes_the_body_after_the_probe_steps(make_cfg):
    record = train(make_cfg(*SMOKE, "method=lp_ft", "method.probe_frac=0.5", "finetune.num_validations=1"))
    body, loaded = _selected_body(record), _loaded_body()
    assert any(not torch.equal(body[k], v) for k, v in loaded.items())  # the body trained after the probe
    assert record["params"]["trainable"] == record["params"]["total"]


def test_probe_phase_follows_the_step_counter():
    body = torch.nn.Linear(2, 2)
    callback = LinearProbeFirst(body, frac=0.25)
    trainer = SimpleNamespace(world_size=1, estimated_stepping_batches=8, global_step=0)
    callback.on_train_start(trainer, None)
    for step, trains in [(0, False), (1, False), (2, True), (7, True)]:
        trainer.global_step = step  # a resumed run starts at its saved step: the phase follows
        callback.on_train_batch_start(trainer, None, None, 0)
        assert all(p.requires_grad == trains for p in body.parameters()), step


@pytest.mark.parametrize("adapter_lr,expected", [(None, 3e-3), (5e-4, 5e-4)])
def test_adapters_train_at_their_own_learning_rate(adapter_lr, expected):
    """method.peft.lr sets the adapters' group; unset, they train at new_lr with the embedder."""
    from orca.embedders import create_embedder
    from orca.heads import create_head
    from orca.model import OrcaModel
    from orca.stages import FinetuneStage
    from orca.tasks import create_task

    task, body = create_task("digits"), load_body("tiny-random").body
    model = OrcaModel(create_embedder("patch2d", task.input_shape, body, target_len=4), body,
                      create_head("pooled", body.output_size, 10))
    add_lora(body, r=2)
    stage = FinetuneStage(model, task, {"name": "adamw", "lr": 1e-4}, 0.1, new_lr=3e-3, adapter_lr=adapter_lr)
    groups = {g["name"]: g for g in stage.make_optimizer().param_groups}
    assert set(groups) == {"embedder+head", "adapters"}  # the body's own weights are frozen
    assert groups["adapters"]["lr"] == expected and groups["embedder+head"]["lr"] == 3e-3
    assert all(is_adapter_parameter(n) for n, p in body.named_parameters() if p.requires_grad)
    assert sum(p.numel() for p in groups["adapters"]["params"]) == sum(
        p.numel() for n, p in body.named_parameters() if is_adapter_parameter(n))


def test_lora_defaults_cover_gpt2_and_swin():
    from transformers import GPT2Config, GPT2Model

    gpt2 = wrap_hf_model(GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32)), "tiny-gpt2").body
    swin = load_body("tiny-random-swin").body
    # per block: GPT-2 c_attn, two c_proj, c_fc; Swin q, k, v, o, fc1, fc2; each with lora_A and lora_B
    for body, grid, expected in [(gpt2, (5,), 4 * 2), (swin, (8, 8), 2 * 6 * 2)]:
        add_lora(body, r=2)
        trainable = [n for n, p in body.named_parameters() if p.requires_grad]
        assert len(trainable) == expected and all(is_adapter_parameter(n) for n in trainable)
        tokens = torch.randn(2, grid[0] * (grid[1] if len(grid) > 1 else 1), body.hidden_size)
        body(tokens, grid).sum().backward()
        assert all(p.grad is not None for n, p in body.named_parameters() if "lora_A" in n)


def test_method_options_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="needs method.trainable=all and no method.peft"):
        MethodConfig("x", probe_frac=0.5, peft={"name": "lora"})
    with pytest.raises(ConfigError, match="method.peft.name='dora'; known: lora, ia3, prompt, prefix, adapter"):
        MethodConfig("x", peft={"name": "dora"})
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        MethodConfig("x", probe_frac=1.0)
    with pytest.raises(ConfigError, match="adapters' learning rate must be positive"):
        MethodConfig("x", peft={"name": "lora", "lr": 0.0})
    body = load_body("tiny-random").body
    with pytest.raises(ConfigError, match="method.peft.target_modules"):
        add_lora(body, target_modules=["no_such_projection"])
