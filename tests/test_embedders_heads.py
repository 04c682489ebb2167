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


@pytest.mark.parametrize("name", EMBEDDERS.names())
def test_every_registered_embedder_builds(body, name):
    shape = (1, 16, 16) if name == "patch2d" else (1, 256)
    emb = create_embedder(name, shape, body, target_len=64)
    out = emb(torch.randn(2, *shape))
    assert out.shape[0] == 2 and out.shape[2] == body.hidden_size and torch.isfinite(out).all()


@pytest.mark.parametrize("name", HEADS.names())
def test_every_registered_head_builds(name):
    head = create_head(name, 32, 5)
    assert head(torch.randn(2, 7, 32)).shape == (2, 5)


def test_pooled_head_pools(body):
    hidden = torch.randn(2, 4, 32)
    mean, last = create_head("pooled", 32, 3), create_head("pooled", 32, 3, pool="last")
    last.load_state_dict(mean.state_dict())
    assert torch.allclose(mean(hidden), mean.linear(hidden.mean(1)))
    assert torch.allclose(last(hidden), mean.linear(hidden[:, -1]))
    with pytest.raises(ConfigError, match="known: mean, last"):
        create_head("pooled", 32, 3, pool="max")
