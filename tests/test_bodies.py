"""Bodies: the bundled pretrained MiniLM offline, the tiny random body, clear load errors."""
import pytest
import torch
from safetensors.torch import load_file

from orca.bodies import load_body, minilm_path
from orca.errors import BodyLoadError


@pytest.fixture(scope="module")
def minilm():
    return load_body("minilm")


def test_bundled_minilm_loads_offline_with_its_pretrained_weights(minilm):
    body = minilm.body
    assert (body.hidden_size, body.max_positions) == (384, 512)
    weights = load_file(str(minilm_path() / "model.safetensors"))
    key = next(k for k in weights if k.endswith("embeddings.position_embeddings.weight"))
    assert torch.equal(body.position_embeddings, weights[key])
    q = next(k for k in weights if k.endswith("layer.0.attention.self.query.weight"))
    assert torch.equal(body.model.encoder.layer[0].attention.self.query.weight, weights[q])


def test_minilm_forward_on_token_embeddings(minilm):
    tokens = torch.randn(2, 50, 384)
    out = minilm.body(tokens)
    assert out.shape == (2, 50, 384) and torch.isfinite(out).all()


def test_minilm_pretrained_representations_are_meaningful(minilm):
    """Through its own text embeddings, the pretrained encoder maps paraphrases closer than
    unrelated sentences (it would not with random weights)."""
    enc = minilm.tokenizer(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."],
                           padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = minilm.body(minilm.text_embeddings(enc["input_ids"]))
    mask = enc["attention_mask"][..., None].float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.2


def test_fpt_trainable_split(minilm):
    lns = minilm.body.layer_norm_parameters()
    assert len(lns) == 2 * 2 * 6  # two LayerNorms (weight, bias) in each of 6 layers


def test_unavailable_hub_body_fails_with_a_clear_message(tmp_path):
    with pytest.raises(BodyLoadError, match="body.path=DIR"):
        load_body("roberta-base", path=str(tmp_path / "no-such-model"))


def test_gpt2_family_is_fed_token_embeddings_without_its_positions():
    """A tiny random GPT-2 wrapped as a Body computes what GPT-2 computes on the same
    input embeddings with a zero position table (positions come from the embedder)."""
    import copy

    from transformers import GPT2Config, GPT2Model

    from orca.bodies import wrap_hf_model

    model = GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, resid_pdrop=0, embd_pdrop=0,
                                 attn_pdrop=0)).eval()
    reference = copy.deepcopy(model)
    reference.wpe.weight.data.zero_()
    positions = model.wpe.weight.detach().clone()
    loaded = wrap_hf_model(model, "tiny-gpt2")
    tokens = torch.randn(2, 10, 32)
    assert torch.allclose(loaded.body(tokens), reference(inputs_embeds=tokens).last_hidden_state, atol=1e-5)
    assert torch.equal(loaded.body.position_embeddings, positions)
    ids = torch.tensor([[1, 2, 3]])  # text for the align source goes through word + position embeddings
    assert torch.allclose(loaded.text_embeddings(ids), model.wte(ids) + positions[:3])
