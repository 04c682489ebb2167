"""Parameter-efficient refinement of a body with peft: LoRA adapters on its projections.

``add_lora`` injects low-rank adapters (Hu et al. 2021) into the body's attention and MLP
projections in place (peft's ``inject_adapter_in_model``) and freezes the body's own
weights; only the adapters train in the body. The embedder and head, built for the task,
still train fully (orca/model.py).
"""
from __future__ import annotations

from orca.bodies import Body
from orca.errors import ConfigError

# The projections LoRA adapts, by transformers' model_type (module names of transformers 5):
# attention (query, key, value and its output) and both MLP layers. GPT-2 fuses q, k, v.
LORA_TARGETS = {
    "bert": ("query", "key", "value", "dense"),
    "roberta": ("query", "key", "value", "dense"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),  # transformers' Conv1D: weights stored (in, out)
    "swin": ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"),
}


def add_lora(body: Body, r: int = 8, alpha: float = 16, dropout: float = 0.0,
             target_modules: list[str] | None = None, name: str = "lora") -> None:
    """Inject LoRA adapters of rank `r` (scaled by alpha / r) into `body` in place."""
    from peft import LoraConfig, inject_adapter_in_model

    model_type = getattr(body.model.config, "model_type", None)
    targets = target_modules or LORA_TARGETS.get(model_type)
    if not targets:
        raise ConfigError(f"no default LoRA target modules for a {model_type!r} body (known: "
                          f"{', '.join(LORA_TARGETS)}); name its projections in method.peft.target_modules")
    if r < 1:
        raise ConfigError(f"method.peft.r={r}: the LoRA rank must be a positive integer")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                        fan_in_fan_out=model_type == "gpt2")
    try:
        inject_adapter_in_model(config, body.model)
    except ValueError as exc:  # no module matched the target names
        raise ConfigError(f"LoRA could not be added to the body: {exc}; check method.peft.target_modules") from None


def lora_options(peft: dict) -> dict:
    """`method.peft` as :func:`add_lora`'s keywords: without its name and its learning rate
    (the optimiser's business: orca/stages.py)."""
    return {k: v for k, v in peft.items() if k not in ("name", "lr")}


def is_adapter_parameter(name: str) -> bool:
    """True for the parameters peft's LoRA adds (lora_A / lora_B), by their names."""
    return "lora_" in name
