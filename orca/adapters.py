"""Parameter-efficient refinement of a body: what trains in it when its own weights do not.

``add_peft(loaded, options)`` adds `method.peft`'s adapter to the body in place and freezes
the body's own weights; only the adapter trains in the body (the embedder and head, built
for the task, still train fully: orca/model.py):

- ``lora`` (Hu et al. 2021): low-rank updates of the attention and MLP projections (peft's
  ``inject_adapter_in_model``).
- ``ia3`` (Liu et al. 2022): learned rescaling of the keys, the values and the MLP's inner
  activations (peft, same injection).
- ``prompt`` (Lester et al. 2021): learned tokens prepended to the body's input sequence and
  dropped from its output (peft's prompt tuning, started from the body's own embeddings of
  randomly drawn vocabulary tokens, as Lester et al.'s best initialisation).
- ``prefix`` (Li and Liang 2021): learned keys and values prepended in every attention layer
  (peft's prefix tuning, reparametrised through an MLP by default, as Li and Liang).
- ``adapter`` (Houlsby et al. 2019): a bottleneck (down, GELU, up) added after each
  attention and MLP output projection, before its residual sum, starting as the identity;
  the body's layer norms train too, as Houlsby et al. peft has no bottleneck adapter, so
  :class:`Bottleneck` is ours.

peft's prompt and prefix tuning wrap the body's transformers model (``body.model`` becomes a
peft model that forwards ``inputs_embeds``); they work on the language bodies, not on a Swin,
whose windowed attention has no place for tokens off its grid.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from orca.bodies import Body, LoadedBody
from orca.choices import PEFT_NAMES, PEFT_OPTIONS
from orca.errors import ConfigError

# The projections LoRA adapts, by transformers' model_type (module names of transformers 5):
# attention (query, key, value and its output) and both MLP layers. GPT-2 fuses q, k, v.
LORA_TARGETS = {
    "bert": ("query", "key", "value", "dense"),
    "roberta": ("query", "key", "value", "dense"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),  # transformers' Conv1D: weights stored (in, out)
    "swin": ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"),
}
# IA3's (targets, of which feed-forward) as regular expressions on module names: the key and
# value projections (their outputs rescaled) and the MLP's second layer (its input, the inner
# activation, rescaled). GPT-2 fuses q, k and v, so its queries are rescaled too.
_BERT_MLP_OUT = r".*layer\.\d+\.output\.dense"
IA3_TARGETS = {
    "bert": (rf".*\.(key|value)|{_BERT_MLP_OUT}", _BERT_MLP_OUT),
    "roberta": (rf".*\.(key|value)|{_BERT_MLP_OUT}", _BERT_MLP_OUT),
    "gpt2": (r".*\.(c_attn|mlp\.c_proj)", r".*\.mlp\.c_proj"),
    "swin": (r".*\.(k_proj|v_proj|fc2)", r".*\.fc2"),
}
# Where bottleneck adapters go: each sublayer's output projection, whose output meets the
# residual stream next (after dropout).
ADAPTER_TARGETS = {
    "bert": r".*layer\.\d+\.(attention\.output|output)\.dense",
    "roberta": r".*layer\.\d+\.(attention\.output|output)\.dense",
    "gpt2": r".*\.(attn|mlp)\.c_proj",
    "swin": r".*\.(attention\.o_proj|mlp\.fc2)",
}
_ADAPTER_NAMES = ("lora_", "ia3_", "prompt_encoder", "bottleneck_")  # parameter names of what the adapters add


def add_peft(loaded: LoadedBody, options: dict) -> None:
    """Add the adapter `options` (`method.peft`) names to `loaded.body`, in place."""
    kind = options.get("name")
    if kind not in PEFT_NAMES:
        raise ConfigError(f"method.peft.name={kind!r}; known: {', '.join(PEFT_NAMES)}")
    kwargs = {k: v for k, v in options.items() if k in PEFT_OPTIONS[kind] and v is not None}
    if kind == "prompt":
        add_prompt(loaded, **kwargs)
    else:
        {"lora": add_lora, "ia3": add_ia3, "prefix": add_prefix, "adapter": add_bottlenecks}[kind](loaded.body, **kwargs)


def is_adapter_parameter(name: str) -> bool:
    """True for the parameters an adapter adds to the body, by their names."""
    return any(part in name for part in _ADAPTER_NAMES)


def _model_type(body: Body) -> str | None:
    return getattr(body.model.config, "model_type", None)


def _defaults(table: dict, body: Body, what: str):
    model_type = _model_type(body)
    if model_type not in table:
        raise ConfigError(f"no default {what} target modules for a {model_type!r} body (known: {', '.join(table)}); "
                          "name its modules in method.peft.target_modules")
    return table[model_type]


def add_lora(body: Body, r: int = 8, alpha: float = 16, dropout: float = 0.0,
             target_modules: list[str] | None = None) -> None:
    """Inject LoRA adapters of rank `r` (scaled by alpha / r) into `body` in place."""
    from peft import LoraConfig

    if r < 1:
        raise ConfigError(f"method.peft.r={r}: the LoRA rank must be a positive integer")
    targets = target_modules or _defaults(LORA_TARGETS, body, "LoRA")
    _inject(body, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                             fan_in_fan_out=_model_type(body) == "gpt2"))


def add_ia3(body: Body, target_modules: list[str] | None = None) -> None:
    """Inject IA3's rescaling vectors (ones at first: the identity) into `body` in place.
    `target_modules` (names) overrides the default targets; those among them named like an
    MLP's second layer (fc2, output.dense, mlp.c_proj) rescale their input."""
    from peft import IA3Config

    if target_modules:
        targets = list(target_modules)
        feedforward = [t for t in targets if re.search(r"fc2$|(^|\.)output\.dense$|mlp\.c_proj$", t)]
    else:
        targets, feedforward = _defaults(IA3_TARGETS, body, "IA3")
    _inject(body, IA3Config(target_modules=targets, feedforward_modules=feedforward,
                            fan_in_fan_out=_model_type(body) == "gpt2"))


def _inject(body: Body, config) -> None:
    from peft import inject_adapter_in_model

    try:
        inject_adapter_in_model(config, body.model)
    except ValueError as exc:  # no module matched the target names
        raise ConfigError(f"{config.peft_type.value} could not be added to the body: {exc}; "
                          "check method.peft.target_modules") from None
    for name, p in body.model.named_parameters():
        p.requires_grad_(is_adapter_parameter(name))


def _check_language_body(body: Body, what: str) -> None:
    if not hasattr(body, "prompt_tokens"):
        raise ConfigError(f"{what} needs a language body (BERT family, GPT-2); a {_model_type(body)!r} body has no "
                          "place for tokens off its grid: use method=lora, ia3 or adapter")


def _wrap_language_body(body: Body, config, what: str) -> None:
    from peft import get_peft_model

    _check_language_body(body, what)
    body.model = get_peft_model(body.model, config)  # freezes the model's own weights


def _check_tokens(num_tokens: int) -> None:
    if num_tokens < 1:
        raise ConfigError(f"method.peft.num_tokens={num_tokens}: give at least one token")


def add_prompt(loaded: LoadedBody, num_tokens: int = 10) -> None:
    """Prepend `num_tokens` learned tokens (B, num_tokens, D) to the body's input; the body
    drops them from its output. They start as the body's own input embeddings (what its
    encoder was pretrained on: words, positions, layer norm) of randomly drawn vocabulary
    tokens, drawn first from torch's global generator (the run's seed)."""
    from peft import PromptTuningConfig

    body = loaded.body
    _check_tokens(num_tokens)
    _check_language_body(body, "prompt tuning")
    vocabulary = loaded.tokenizer.vocab_size if loaded.tokenizer is not None else body.model.config.vocab_size
    ids = torch.randint(0, vocabulary, (1, num_tokens))
    _wrap_language_body(body, PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=num_tokens),
                        "prompt tuning")
    body.prompt_tokens = num_tokens
    if loaded.text_embeddings is not None:  # else peft's random start
        with torch.no_grad():
            body.model.prompt_encoder["default"].embedding.weight.copy_(loaded.text_embeddings(ids)[0])


def add_prefix(body: Body, num_tokens: int = 10, projection: bool = True) -> None:
    """Prepend `num_tokens` learned keys and values in every attention layer of the body;
    `projection`: make them with a two-layer MLP from `num_tokens` embeddings (Li and Liang's
    reparametrisation; the MLP's hidden width is the body's)."""
    from peft import PrefixTuningConfig

    _check_tokens(num_tokens)
    _wrap_language_body(body, PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=num_tokens,
                                                 prefix_projection=projection,
                                                 encoder_hidden_size=body.hidden_size), "prefix tuning")


class Bottleneck(nn.Module):
    """A projection followed by Houlsby et al.'s adapter: h -> h + up(gelu(down(h))), with
    h = projection(x) of width D and a bottleneck of `size`; `up` starts at zero, so the
    module starts as the projection alone."""

    def __init__(self, projection: nn.Module, width: int, size: int):
        super().__init__()
        self.projection = projection
        self.bottleneck_down = nn.Linear(width, size)
        self.bottleneck_up = nn.Linear(size, width)
        nn.init.zeros_(self.bottleneck_up.weight)
        nn.init.zeros_(self.bottleneck_up.bias)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        h = self.projection(*args, **kwargs)
        return h + self.bottleneck_up(nn.functional.gelu(self.bottleneck_down(h)))


def add_bottlenecks(body: Body, size: int = 64, target_modules: list[str] | None = None) -> None:
    """Put a :class:`Bottleneck` of width `size` after each module of `body` whose name
    matches `target_modules` (regular expressions; by default each attention and MLP output
    projection); the body's own weights freeze except its layer norms."""
    if size < 1:
        raise ConfigError(f"method.peft.size={size}: the bottleneck needs at least one unit")
    patterns = list(target_modules) if target_modules else [_defaults(ADAPTER_TARGETS, body, "adapter")]
    targets = [name for name, _ in body.model.named_modules() if any(re.fullmatch(p, name) for p in patterns)]
    if not targets:
        raise ConfigError(f"no module of the body matches {patterns}; check method.peft.target_modules")
    layer_norms = {id(p) for p in body.layer_norm_parameters()}
    for p in body.model.parameters():
        p.requires_grad_(id(p) in layer_norms)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = body.model.get_submodule(parent_name)
        projection = getattr(parent, child)
        width = getattr(projection, "out_features", None) or getattr(projection, "nf")  # nn.Linear, GPT-2's Conv1D
        setattr(parent, child, Bottleneck(projection, width, size))
