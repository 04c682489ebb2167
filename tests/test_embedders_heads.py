import math

import pytest
import torch

from orca.bodies import load_body
from orca.embedders import create_embedder, smallest_stride
from orca.errors import ConfigError
from orca.heads import create_head
from orca.registry import EMBEDDERS, HEADS


@pytest.fixture(scope="module")
def body():
    return load_body("tiny-random").body


@pytest.mark.parametrize("length,target,stride", [(1000, 64, 20), (1000, 512, 2), (46, 512, 1)])
def test_orca_1d_stride_rule(length, target, stride):
    assert smallest_stride(length, target) == stride  # ECG, DeepSEA, Satellite in DESIGN.md


def test_conv1d_shapes_and_positions_from_body(body):
    emb = create_embedder("conv1d", (1, 1000), body, target_len=64)
    out = emb(torch.randn(3, 1, 1000))
    assert out.shape == (3, 50, body.hidden_size)
    assert torch.equal(emb.position_embeddings.data, body.position_embeddings[:50])


@pytest.mark.parametrize("name,shape,tokens", [
    ("patch2d", (3, 32, 32), 64), ("linear_patch", (3, 32, 32), 64), ("linear_patch", (4, 1000), 50),
    ("patch2d", (1, 8, 8), 16),
])
def test_patch_embedders_shapes(body, name, shape, tokens):
    emb = create_embedder(name, shape, body, target_len=64 if shape != (1, 8, 8) else 16)
    assert emb(torch.randn(2, *shape)).shape == (2, tokens, body.hidden_size)


@pytest.mark.parametrize("name,shape,stem,kernel,grid", [
    ("patch2d", (3, 32, 32), [8, 16], 3, (2, 2)),  # 32x32 -> 16x16 -> 8x8, patches of 4x4
    ("conv1d", (1, 1000), [8], 3, (50,)),           # 1000 -> 500, stride 10
    ("conv1d", (1, 1000), [8, 8], 9, (50,)),        # wider kernels halve the same: 1000 -> 250, stride 5
    ("conv1d", (1, 46), [8], 3, (23,)),             # an odd side rounds up: 46 -> 23, stride 1
])
def test_conv_stem_runs_before_the_patch_projection(body, name, shape, stem, kernel, grid):
    emb = create_embedder(name, shape, body, target_len=4 if name == "patch2d" else 64, stem=stem,
                          stem_kernel=kernel)
    assert emb.grid == grid and len(emb.stem) == 3 * len(stem)
    assert emb.stem[0].kernel_size[0] == kernel and emb.conv.in_channels == stem[-1]
    x = torch.randn(2, *shape, requires_grad=True)
    out = emb(x)
    assert out.shape == (2, math.prod(grid), body.hidden_size)
    (out * torch.randn_like(out)).sum().backward()  # not out.sum(): the LayerNorm makes that constant
    assert emb.stem[0].weight.grad.abs().sum() > 1e-3  # the stem trains with the rest


def test_conv_stem_refuses_bad_widths(body):
    with pytest.raises(ConfigError, match="stem widths must be positive"):
        create_embedder("patch2d", (3, 32, 32), body, target_len=4, stem=[16, 0])
    with pytest.raises(ConfigError, match="after the stem"):
        create_embedder("patch2d", (3, 32, 32), body, patch_size=3, stem=[8])
    with pytest.raises(ConfigError, match="stem_kernel must be an odd positive width"):
        create_embedder("conv1d", (1, 1000), body, stem=[8], stem_kernel=4)


def test_linear_patch_matches_its_definition(body):
    """Each token is the linear map of one flattened patch, plus its position."""
    emb = create_embedder("linear_patch", (2, 4, 4), body, patch_size=2)
    x = torch.randn(1, 2, 4, 4)
    patch = x[0, :, 2:4, 0:2].flatten()  # token 2: second patch row, first column
    expected = emb.linear(patch) + emb.position_embeddings[2]
    assert torch.allclose(emb(x)[0, 2], expected, atol=1e-6)


def test_wrong_input_shape_is_a_clear_error(body):
    with pytest.raises(ConfigError, match=r"takes inputs shaped \(C, L\).*gives \(1, 8, 8\)"):
        create_embedder("conv1d", (1, 8, 8), body)
    with pytest.raises(ConfigError, match="positions"):
        create_embedder("conv1d", (1, 1000), body, target_len=1000)  # 1000 tokens > 128 positions


@pytest.fixture(scope="module")
def swin():
    return load_body("tiny-random-swin").body


@pytest.mark.parametrize("name", EMBEDDERS.names())
def test_every_registered_embedder_builds(body, swin, name):
    """Each embedder on the body kind it is for, through that body: (B, N, D) on its grid."""
    host = swin if name == "swin_patch" else body
    shape = (1, 256) if name == "conv1d" else (1, 16, 16)
    emb = create_embedder(name, shape, host, target_len=64)
    out = emb(torch.randn(2, *shape))
    assert out.shape == (2, math.prod(emb.grid), host.hidden_size) and torch.isfinite(out).all()
    assert host(out, emb.grid).shape[-1] == host.output_size


@pytest.mark.parametrize("name", HEADS.names())
def test_every_registered_head_builds(name):
    dense = name == "dense"
    head = create_head(name, 32, 5 if not dense else 1, grid=(3, 4), output_shape=(12, 16) if dense else None)
    assert head(torch.randn(2, 12, 32)).shape == ((2, 12, 16) if dense else (2, 5))


def test_dense_head_puts_blocks_back_in_place():
    """Token (r, c) of the grid predicts pixels [r*s:(r+1)*s, c*s:(c+1)*s] of the field."""
    head = create_head("dense", 8, 1, grid=(2, 3), output_shape=(4, 6))
    hidden = torch.zeros(1, 6, 8)
    hidden[0, 4] = torch.randn(8)  # token 4 = row 1, column 1
    with torch.no_grad():
        head.linear.bias.zero_()
    field = head(hidden)[0]
    block = head.linear(hidden[0, 4]).view(2, 2)
    assert torch.allclose(field[2:4, 2:4], block)
    assert field[:2].abs().sum() == 0 and field[:, :2].abs().sum() == 0


def test_dense_head_resizes_to_an_odd_grid():
    head = create_head("dense", 8, 1, grid=(7, 7), output_shape=(85, 85))  # Swin's 7x7 -> Darcy's 85x85
    assert head(torch.randn(2, 49, 8)).shape == (2, 85, 85)


def test_heads_refuse_the_wrong_task_kind():
    with pytest.raises(ConfigError, match="head.name=dense"):
        create_head("pooled", 8, 1, grid=(2, 2), output_shape=(4, 4))
    with pytest.raises(ConfigError, match="head.name=pooled"):
        create_head("dense", 8, 3, grid=(4,), output_shape=None)


def test_swin_embedder_starts_from_the_body_patch_projection(swin):
    """A grey image embeds as the same grey image through the body's own RGB stem."""
    emb = create_embedder("swin_patch", (1, 32, 32), swin)
    grey = torch.rand(2, 1, 32, 32)
    stem = swin.patch_stem
    rgb = torch.nn.functional.conv2d(grey.expand(-1, 3, -1, -1), stem["weight"], stem["bias"], stride=4)
    rgb = torch.nn.functional.layer_norm(rgb.flatten(2).transpose(1, 2), (swin.hidden_size,),
                                         stem["norm_weight"], stem["norm_bias"])
    assert torch.allclose(emb(grey), rgb, atol=1e-5)
    assert emb.position_embeddings is None and emb.grid == (8, 8)


def test_swin_embedder_needs_a_vision_body(body):
    with pytest.raises(ConfigError, match="patch2d"):
        create_embedder("swin_patch", (1, 32, 32), body)


def test_pooled_head_pools():
    hidden = torch.randn(2, 4, 32)
    mean, last = create_head("pooled", 32, 3), create_head("pooled", 32, 3, pool="last")
    last.load_state_dict(mean.state_dict())
    assert torch.allclose(mean(hidden), mean.linear(hidden.mean(1)))
    assert torch.allclose(last(hidden), mean.linear(hidden[:, -1]))
    with pytest.raises(ConfigError, match="known: mean, last"):
        create_head("pooled", 32, 3, pool="max")


def test_token_rule_gives_rich_tokens_for_tasks_without_tuned_ones():
    from orca.embedders import tokens_for

    assert tokens_for((1, 8, 8), 16, 64) == 4  # digits: 4 tokens of 4x4
    assert tokens_for((1, 46), 16, 64) == 2  # satellite: 2 tokens of 23
    assert tokens_for((1, 1000), 16, 64) == 62  # ECG: stride 20 -> 50 tokens
    assert tokens_for((3, 32, 32), 16, 64) == 64  # capped
    assert tokens_for((1, 96, 102), 16, 64) == 272  # no square patch gives fewer than 16 x 17
    body = load_body("tiny-random").body
    assert create_embedder("patch2d", (1, 8, 8), body).num_tokens == 4  # target_len None: the rule
    assert create_embedder("conv1d", (1, 46), body).num_tokens == 2


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_target_len_is_refused(bad):
    with pytest.raises(ConfigError, match="target_len must be a positive"):
        create_embedder("conv1d", (1, 46), load_body("tiny-random").body, target_len=bad)


def test_token_rule_refuses_tokens_too_large_to_project():
    with pytest.raises(ConfigError, match="set embedder.target_len"):
        create_embedder("patch2d", (57, 512, 512), load_body("tiny-random").body)  # PSICOV's inputs


def tiny_text_body(kind: str):
    """A tiny random RoBERTa or GPT-2 (LoadedBody); RoBERTa's embedding LayerNorm made non-trivial."""
    from transformers import GPT2Config, GPT2Model, RobertaConfig, RobertaModel

    from orca.bodies import wrap_hf_model

    torch.manual_seed(0)
    if kind == "gpt2":
        return wrap_hf_model(GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=64)), "gpt2")
    model = RobertaModel(RobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=66))
    with torch.no_grad():
        model.embeddings.LayerNorm.weight.normal_(), model.embeddings.LayerNorm.bias.normal_()
    return wrap_hf_model(model, "roberta")


def test_conv1d_orca_init_follows_orca():
    """ORCA's conv_init (xavier-uniform, gain sqrt(2), bias 0) and the body's embedding LayerNorm."""
    loaded = tiny_text_body("roberta")
    norm = loaded.text_embeddings.LayerNorm  # the body's own, kept for the align stage
    torch.manual_seed(0)
    emb = create_embedder("conv1d", (4, 1000), loaded.body, patch_size=20, init="orca")
    assert torch.equal(emb.norm.weight.data, norm.weight.data) and torch.equal(emb.norm.bias.data, norm.bias.data)
    assert emb.conv.bias.abs().sum() == 0
    fan_in, fan_out = 4 * 20, 32 * 20  # weight (D=32, C=4, s=20)
    bound = math.sqrt(2) * math.sqrt(6 / (fan_in + fan_out))
    weight = emb.conv.weight.detach()
    assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound  # PyTorch's default: 1/sqrt(80)
    assert abs(weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.05  # uniform(-b, b): std b / sqrt(3)


def test_conv1d_default_init_is_unchanged(body):
    torch.manual_seed(0)
    default = create_embedder("conv1d", (4, 1000), body, patch_size=20)
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(4, body.hidden_size, 20, stride=20)
    assert torch.equal(default.conv.weight, conv.weight) and torch.equal(default.conv.bias, conv.bias)
    assert torch.equal(default.norm.weight.data, torch.ones(body.hidden_size))


def test_conv1d_orca_init_needs_an_embedding_norm():
    with pytest.raises(ConfigError, match="embedding LayerNorm.*init=default"):
        create_embedder("conv1d", (1, 64), tiny_text_body("gpt2").body, patch_size=2, init="orca")


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_swin_orca_init_tiles_the_rgb_filters(channels):
    """ORCA's embedder_init for Swin: RGB filters repeated along the channel axis, cut to C."""
    swin = load_body("tiny-random-swin").body
    stem = swin.patch_stem
    torch.manual_seed(0)
    for key in stem:  # make bias and norm non-trivial, so that copying them is seen
        stem[key] = torch.randn_like(stem[key])
    emb = create_embedder("swin_patch", (channels, 32, 32), swin, init="orca")
    expected = stem["weight"][:, [c % 3 for c in range(channels)]]  # R, G, B, R, G, ...
    assert torch.equal(emb.conv.weight.data, expected)
    assert torch.equal(emb.conv.bias.data, stem["bias"])
    assert torch.equal(emb.norm.weight.data, stem["norm_weight"]) and torch.equal(emb.norm.bias.data, stem["norm_bias"])


@pytest.mark.parametrize("grid,upsample,output_shape", [((7, 7), 32, (85, 85)), ((2, 3), None, (8, 12))])
def test_dense_pixel_shuffle_follows_orca(grid, upsample, output_shape):
    """Token (r, c) (row-major) gives pixels [r*s:(r+1)*s, c*s:(c+1)*s] of a 3-channel image:
    channel ch, row i, column j from conv output ch*s*s + i*s + j; then the channel mean and
    an adaptive average pool to the output."""
    (h, w), dim = grid, 8
    head = create_head("dense", dim, 1, grid=grid, output_shape=output_shape, decoder="pixel_shuffle",
                       upsample=upsample)
    s = upsample or 4  # (2, 3) -> (8, 12): s = 4
    assert head.upsample == s
    with torch.no_grad():
        head.conv.bias.normal_()
    hidden = torch.randn(2, h * w, dim)
    out = head(hidden)
    assert out.shape == (2, *output_shape)
    weight, bias = head.conv.weight.detach()[:, :, 0, 0], head.conv.bias.detach()  # (3 s^2, D), (3 s^2,)
    image = torch.zeros(2, 3, h * s, w * s)
    for r in range(h):
        for c in range(w):
            pixels = hidden[:, r * w + c] @ weight.T + bias  # (B, 3 s^2)
            image[:, :, r * s:(r + 1) * s, c * s:(c + 1) * s] = pixels.view(2, 3, s, s)
    expected = torch.nn.AdaptiveAvgPool2d(output_shape)(image.mean(1))
    assert torch.allclose(out, expected, atol=1e-5)


def test_dense_pixel_shuffle_starts_as_hugging_face_swin_decoder():
    torch.manual_seed(0)
    head = create_head("dense", 64, 1, grid=(7, 7), output_shape=(85, 85), decoder="pixel_shuffle", upsample=32)
    assert head.conv.out_channels == 32 * 32 * 3 and head.conv.kernel_size == (1, 1)
    assert abs(head.conv.weight.std().item() - 0.02) < 0.001 and abs(head.conv.weight.mean().item()) < 0.001
    assert head.conv.bias.abs().sum() == 0


def test_unknown_init_and_decoder_names_are_refused(body, swin):
    with pytest.raises(ConfigError, match="known: default, orca"):
        create_embedder("conv1d", (1, 64), body, init="xavier")
    with pytest.raises(ConfigError, match="known: mean, orca"):
        create_embedder("swin_patch", (1, 32, 32), swin, init="tile")
    with pytest.raises(ConfigError, match="known: linear, pixel_shuffle"):
        create_head("dense", 8, 1, grid=(2, 2), output_shape=(4, 4), decoder="conv")
    with pytest.raises(ConfigError, match="one-channel fields"):
        create_head("dense", 8, 2, grid=(2, 2), output_shape=(4, 4), decoder="pixel_shuffle")
    with pytest.raises(ConfigError, match="head.upsample=null"):
        create_head("dense", 8, 1, grid=(2, 2), output_shape=(4, 4), upsample=2)
    with pytest.raises(ConfigError, match="positive factor"):
        create_head("dense", 8, 1, grid=(2, 2), output_shape=(4, 4), decoder="pixel_shuffle", upsample=0)
