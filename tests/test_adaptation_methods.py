"""Partial fine-tuning, prompt and prefix tuning, IA3 and bottleneck adapters: each trains
what its paper says and leaves the rest of the body bit-identical to the loaded weights."""
import re

import pytest
import torch
from transformers import GPT2Config, GPT2Model

from orca.adapters import add_bottlenecks, add_peft, is_adapter_parameter
from orca.bodies import load_body, wrap_hf_model
from orca.errors import ConfigError
from orca.methods import MethodConfig
from orca.pipeline import train

SMOKE = ("task=digits", "body=tiny-random", "budget=smoke", "finetune.max_steps=6")
HIDDEN = 32  # tiny-random: 2 BERT layers of width 32, MLP 64


def _own_name(key: str) -> str:
    """A body parameter's name as loaded, from its name under an adapter's wrapping (peft's
    base_model and base_layer, our Bottleneck's projection)."""
    return re.sub(r"base_model\.|\.base_layer|\.projection", "", key)


def _selected_body(record) -> dict[str, torch.Tensor]:
    state = torch.load(record["checkpoint"], weights_only=False)["state_dict"]
    return {k.removeprefix("model.body."): v for k, v in state.items() if k.startswith("model.body.")}


# method -> (adapter tensors in the body, their size in numbers)
ADAPTERS = {
    # keys and values (32 each) and the MLP output layer's input (64), in 2 layers
    "ia3": (6, 2 * (32 + 32 + 64)),
    "prompt": (1, 10 * HIDDEN),
    # embedding (10, 32), then 32 -> 32 -> 2 layers x (key, value) x 32
    "prefix": (5, 10 * 32 + (32 * 32 + 32) + (32 * 128 + 128)),
    # 2 layers x 2 projections x (down 32 -> 64, up 64 -> 32)
    "adapter": (16, 4 * (32 * 64 + 64 + 64 * 32 + 32)),
}


@pytest.mark.parametrize("method", ["ia3", "prompt", "prefix", "adapter", "orca_ia3"])
def test_adapters_train_and_the_body_stays_as_loaded(make_cfg, method):
    kind = method.removeprefix("orca_")
    record = train(make_cfg(*SMOKE, f"method={method}"))
    body, loaded = _selected_body(record), load_body("tiny-random").body.state_dict()
    adapters = {k: v for k, v in body.items() if is_adapter_parameter(k)}
    count, numbers = ADAPTERS[kind]
    assert len(adapters) == count and sum(v.numel() for v in adapters.values()) == numbers
    own = {_own_name(k): v for k, v in body.items() if not is_adapter_parameter(k)}
    assert set(own) == set(loaded)
    layer_norms = {k for k in loaded if "LayerNorm" in k and ".layer." in k}  # the adapter's trainable norms
    moved = {k for k, v in loaded.items() if not torch.equal(own[k], v)}
    assert moved <= (layer_norms if kind == "adapter" else set()), sorted(moved)
    trainable_in_body = numbers + (sum(loaded[k].numel() for k in layer_norms) if kind == "adapter" else 0)
    params = record["params"]
    assert params["total"] - params["trainable"] == sum(v.numel() for v in loaded.values()) - (
        trainable_in_body - numbers)
    if kind == "ia3":  # starts at one: it trained
        assert any(not torch.equal(v, torch.ones_like(v)) for v in adapters.values())
    if kind == "adapter":  # up projections start at zero: they trained
        assert any(v.abs().sum() > 0 for k, v in adapters.items() if "bottleneck_up" in k)
    assert (record["align"] is not None) == method.startswith("orca_")
    assert record["model"]["peft"]["name"] == kind


def test_partial_fine_tuning_trains_the_last_blocks_only(make_cfg):
    record = train(make_cfg(*SMOKE, "method=partial", "method.train_last_k=1"))
    body, loaded = _selected_body(record), load_body("tiny-random").body.state_dict()
    first = {k for k in loaded if ".layer.0." in k or ".embeddings." in k}
    assert first and all(torch.equal(body[k], loaded[k]) for k in first)
    assert any(not torch.equal(body[k], loaded[k]) for k in loaded if ".layer.1." in k)
    frozen = sum(v.numel() for k, v in loaded.items() if k in first) + sum(
        v.numel() for k, v in loaded.items() if k.startswith("position") or k.startswith("embedding_norm"))
    assert record["params"]["total"] - record["params"]["trainable"] == frozen


def test_last_blocks_are_the_last_blocks_and_what_follows():
    body = load_body("tiny-random").body
    last = {id(p) for p in body.last_blocks_parameters(1)}
    assert body.model.pooler is None  # else its weights would follow the last block
    assert last == {id(p) for p in body.model.encoder.layer[1].parameters()}
    assert len(body.last_blocks_parameters(2)) > len(body.last_blocks_parameters(1))
    swin = load_body("tiny-random-swin").body
    blocks = swin.blocks()
    assert len(blocks) == sum(len(stage.blocks) for stage in swin.model.encoder.layers)
    assert {id(p) for p in blocks[-1].parameters()} <= {id(p) for p in swin.last_blocks_parameters(1)}
    with pytest.raises(ConfigError, match="the body has 2 blocks; give 1 to 2"):
        body.last_blocks_parameters(3)


@pytest.mark.parametrize("kind", ["ia3", "adapter"])
def test_ia3_and_adapters_start_as_the_identity(kind):
    loaded = load_body("tiny-random")
    tokens = torch.randn(3, 5, HIDDEN)
    loaded.body.eval()
    with torch.no_grad():
        before = loaded.body(tokens)
        add_peft(loaded, {"name": kind})
        after = loaded.body(tokens)
    assert torch.equal(before, after)


def test_bottleneck_is_houlsbys_adapter():
    body = load_body("tiny-random").body
    add_bottlenecks(body, size=4)
    module = body.model.encoder.layer[0].output.dense  # the MLP's output projection, now adapted
    with torch.no_grad():
        module.bottleneck_up.weight.normal_()
        x = torch.randn(2, 2 * HIDDEN)
        h = module.projection(x)
        expected = h + module.bottleneck_up(torch.nn.functional.gelu(module.bottleneck_down(h)))
        assert torch.equal(module(x), expected)
    assert module.bottleneck_down.out_features == 4


def test_prefix_tuning_adds_keys_and_values_in_every_layer():
    loaded = load_body("tiny-random")
    loaded.body.model.config._attn_implementation = "eager"  # attention weights are returned
    tokens = torch.randn(2, 5, HIDDEN)
    plain = loaded.body.model(inputs_embeds=tokens).last_hidden_state
    add_peft(loaded, {"name": "prefix", "num_tokens": 3})
    out = loaded.body.model(inputs_embeds=tokens, output_attentions=True)
    # each layer: 5 queries attend over 3 prefix keys and 5 token keys
    assert [tuple(a.shape) for a in out.attentions] == [(2, 2, 5, 8)] * 2
    assert all(a[..., :3].sum() > 0 for a in out.attentions)  # the prefix gets attention
    assert out.last_hidden_state.shape == plain.shape and not torch.allclose(out.last_hidden_state, plain)


def test_prompt_tokens_start_as_vocabulary_embeddings_and_leave_the_output():
    loaded = load_body("tiny-random")
    torch.manual_seed(3)
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (1, 4))  # the draw add_prompt makes after this seed
    with torch.no_grad():
        expected = loaded.text_embeddings(ids)[0]
    torch.manual_seed(3)
    add_peft(loaded, {"name": "prompt", "num_tokens": 4})
    prompt = loaded.body.model.prompt_encoder["default"].embedding.weight
    assert torch.equal(prompt.detach(), expected)
    tokens = torch.randn(2, 5, HIDDEN)
    out = loaded.body(tokens)
    assert out.shape == (2, 5, HIDDEN) and loaded.body.prompt_tokens == 4
    out.sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert [n for n, p in loaded.body.named_parameters() if p.requires_grad] == [
        "model.prompt_encoder.default.embedding.weight"]


@pytest.mark.parametrize("kind", ["ia3", "prompt", "prefix", "adapter"])
def test_every_adapter_serves_gpt2(kind):
    loaded = wrap_hf_model(GPT2Model(GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=32)), "tiny-gpt2")
    add_peft(loaded, {"name": kind})
    out = loaded.body(torch.randn(2, 5, 16))
    assert out.shape == (2, 5, 16)
    out.sum().backward()
    trainable = [(n, p) for n, p in loaded.body.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable)
    assert all(is_adapter_parameter(n) or (kind == "adapter" and ".ln_" in n) for n, _ in trainable)


def test_adaptation_options_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match=r"method.peft.r=8 is an option of lora, not of ia3 \(its options: target_modules\)"):
        MethodConfig("x", peft={"name": "ia3", "r": 8})
    with pytest.raises(ConfigError, match="num_tokens=10 is an option of prompt and prefix, not of adapter"):
        MethodConfig("x", peft={"name": "adapter", "num_tokens": 10})
    with pytest.raises(ConfigError, match="train_last_k decides what trains in the body"):
        MethodConfig("x", train_last_k=2, peft={"name": "lora"})
    with pytest.raises(ConfigError, match="train_last_k decides"):
        MethodConfig("x", train_last_k=2, trainable="fpt")
    with pytest.raises(ConfigError, match="needs a language body"):
        add_peft(load_body("tiny-random-swin"), {"name": "prompt"})
    with pytest.raises(ConfigError, match="num_tokens=0: give at least one token"):
        add_peft(load_body("tiny-random"), {"name": "prefix", "num_tokens": 0})
    with pytest.raises(ConfigError, match="no module of the body matches"):
        add_peft(load_body("tiny-random"), {"name": "adapter", "target_modules": ["nothing"]})
    with pytest.raises(ConfigError, match="and 10 prompt tokens exceed the body's 128 positions"):
        loaded = load_body("tiny-random")
        add_peft(loaded, {"name": "prompt"})
        loaded.body(torch.randn(1, 125, HIDDEN))
