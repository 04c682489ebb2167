"""Every option of ``python -m orca.train``: its type and its range or choices, in one place.

The models below describe the composed config (configs/train.yaml and the groups it
draws in). orca/preflight.py validates every job of a command line against them before
Hydra writes anything, and ``python -m orca.schema`` prints them as the README's option
reference.

Why pydantic models over the composed config rather than Hydra structured configs: the
config tree is assembled from optional groups (paper_body, tuned, tuned_method), tuned
recipes and configs that plugins write, whose keys vary with the task and the component.
Structured configs would turn every YAML group into a dataclass and would still check
types only; one validator over the composed config gives ranges, choices and rules across
options (``task.val_frac + task.test_frac < 1``), and a one-line message naming the option,
its value and what it takes, while the YAML files stay as they are.

A node is closed (every key declared: an unknown key is an error, as the code would
refuse or ignore it) or open (the top level, ``task``, ``body``, ``embedder``, ``head``,
``trainer``, ``align.options``, a task's ``reference`` block, ``logger.lightning``): an
open node also takes keys the schema does not know (a task's own options, a plugin
embedder's), and the keys it declares are checked wherever they appear. Choices come from
the code's own lists (orca/choices.py, orca/methods.py); component names (task, embedder,
head, body, distance, source) are checked by their registries when the run starts.
"""
from dataclasses import dataclass
from functools import cache
from types import UnionType
from typing import Annotated, Any, Callable, Literal, Union, get_args, get_origin, get_type_hints

from annotated_types import Ge, Gt, Le, Len, Lt
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic_core import core_schema

from orca.choices import (ALIGN_SCHEDULES, DECODERS, EMBEDDER_INITS, IMAGE_TRANSFORMS, INNER_METHODS, LOOPS,
                          OPTIMIZERS, PEFT_NAMES, POOLS, PROTOCOL_DATA, SELECT_ON)
from orca.errors import ConfigError
from orca.methods import MODELS, TRAINABLE, MethodConfig


@dataclass(frozen=True)
class Rule:
    """Annotation: a check beyond type and range, and its words (`whole`: the words say
    everything the option takes, in place of the type's). `holds` None: words only, the type
    checks what it can and the option's consumer the rest (Lightning, its trainer options)."""

    words: str
    holds: Callable[[Any], bool] | None = None
    whole: bool = False

    def __get_pydantic_core_schema__(self, source, handler):
        if self.holds is None:
            return handler(source)

        def check(value):
            if not self.holds(value):
                raise ValueError(self.words)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))


# Strict mode: a float option takes an int too, never a bool or a string.
Positive = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]
Fraction = Annotated[float, Gt(0), Lt(1)]  # a share of a split
Decay = Annotated[float, Ge(0), Lt(1)]     # momentum, Adam's betas, dropout
Count = Annotated[int, Ge(1)]
NonNegativeCount = Annotated[int, Ge(0)]
Seed = Annotated[int, Ge(0), Le(2**32 - 1)]  # numpy's seeds
Increasing = Rule("increasing", lambda v: all(a < b for a, b in zip(v, v[1:])))
OddWidth = Rule("an odd integer >= 1", lambda v: v >= 1 and v % 2 == 1, whole=True)
StepsOrAll = Rule("an integer >= 1, or -1 (as many steps as fit in budget_s, else epochs)",
                  lambda v: v == -1 or v >= 1, whole=True)
BatchesOrShare = Rule("an integer >= 1 (training batches) or a number in (0, 1] (a share of an epoch)",
                      lambda v: v >= 1 if isinstance(v, int) else 0 < v <= 1, whole=True)
Lightning = Rule("a value Lightning's Trainer accepts", whole=True)  # Lightning checks it (orca/pipeline.py: _trainer)


class Closed(BaseModel):
    """A node whose keys are all declared."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Open(BaseModel):
    """A node that also takes keys the schema does not know."""

    model_config = ConfigDict(strict=True, extra="allow")


class Optimizer(Closed):
    name: Literal[OPTIMIZERS] = None
    lr: Positive = None
    weight_decay: NonNegative = None
    momentum: Decay = None     # sgd
    betas: Annotated[list[Decay], Len(2, 2)] = None  # adam, adamw


class Body(Open):
    name: str = None
    path: str | None = None


class Embedder(Open):
    name: str | None = None  # null: the default for the task's input rank
    target_len: Count | None = None
    patch_size: Count | None = None
    values_per_token: Count = None
    max_tokens: Count = None
    init: str | None = None
    stem: list[Count] | None = None
    stem_kernel: Annotated[int, OddWidth] = None

    @model_validator(mode="after")
    def _init_of_the_embedder(self):
        known = EMBEDDER_INITS.get(self.name)
        if known and self.init is not None and self.init not in known:
            raise ConfigError(f"embedder.init={self.init}: embedder {self.name} takes one of {', '.join(known)}, "
                              "or null for its own default")
        return self


class Head(Open):
    name: str = None
    pool: Literal[POOLS] = None
    decoder: Literal[DECODERS] | None = None
    upsample: Count | None = None


class DistanceOptions(Open):
    inner: Literal[INNER_METHODS] = None  # otdd
    eps: Positive = None
    debiased: bool = None
    max_iter: Count = None
    tol: Positive = None
    scales: list[Positive] = None          # mmd


class Align(Closed):
    distance: str = None
    options: DistanceOptions = None
    source: str = None
    source_root: str | None = None
    source_samples: Count = None
    seq_len: Count = None
    per_class: Count = None
    steps: NonNegativeCount = None
    lr: Positive = None
    milestones: Annotated[list[Count], Increasing] = None
    gamma: Annotated[float, Gt(0), Le(1)] = None
    eval_samples: Count = None
    eval_source_samples: Count = None
    optimizer: Optimizer | None = None
    schedule: Literal[ALIGN_SCHEDULES] = None
    per_class_batch: Count | None = None
    text_fallback: bool = None
    image_transform: Literal[IMAGE_TRANSFORMS] = None
    from_run: str | None = None


class MaxSamples(Closed):
    train: Count | None = None
    val: Count | None = None
    test: Count | None = None


class Data(Closed):
    root: str | None = None
    download: bool = None
    subset_seed: Seed = None
    max_samples: MaxSamples = None
    train_fraction: Annotated[float, Gt(0), Le(1)] | None = None


class Finetune(Closed):
    optimizer: Optimizer = None
    new_lr: Positive | None = None
    loop: Literal[LOOPS] = None
    warmup_frac: Annotated[float, Ge(0), Le(1)] = None
    warmup_epochs: NonNegative | None = None
    decay_epochs: Positive | None = None
    batch_size: Count = None
    eval_batch_size: Count = None
    accumulate_grad_batches: Count = None
    gradient_clip_val: Positive | None = None
    max_steps: Annotated[int, StepsOrAll] = None
    max_epochs: Count | None = None
    num_validations: Count = None
    stop_on_time: bool = None
    early_stopping_patience: Count | None = None
    val_check_interval: Annotated[int | float, BatchesOrShare] | None = None
    check_val_every_n_epoch: Count | None = None

    @model_validator(mode="after")
    def _orca_schedule(self):
        warmup, decay = self.warmup_epochs, self.decay_epochs
        if self.loop == "orca" and (warmup is None or decay is None):
            raise ConfigError("finetune.loop=orca needs finetune.warmup_epochs and finetune.decay_epochs (ORCA's "
                              "warm-up and decay, in epochs), e.g. finetune.warmup_epochs=5 finetune.decay_epochs=60")
        if warmup is not None and decay is not None and not warmup < decay:
            raise ConfigError(f"finetune.warmup_epochs={warmup:g}: must be below finetune.decay_epochs={decay:g} "
                              "(the learning rate warms up, then decays)")
        return self


class Task(Open):
    name: str = None
    val_frac: Fraction = None
    test_frac: Fraction = None
    split_seed: Seed = None
    crop_pad: NonNegativeCount = None      # cifar10, cifar100
    mean: list[float] = None
    std: list[Positive] = None
    window: Count = None                   # ecg
    stride: Count = None
    eval_stride: Count | None = None
    resolution: Count = None               # darcy
    n_train: Count = None
    n_val: Count = None
    n_test: Count = None
    train_clip: Positive | None = None     # psicov
    max_proteins: Count | None = None

    @model_validator(mode="after")
    def _room_for_training(self):
        if self.val_frac is not None and self.test_frac is not None and self.val_frac + self.test_frac >= 1:
            raise ConfigError(f"task.val_frac={self.val_frac:g} and task.test_frac={self.test_frac:g} leave no training "
                              "split: their sum must be below 1, e.g. task.val_frac=0.1 task.test_frac=0.2")
        return self


class Peft(Closed):
    name: Literal[PEFT_NAMES] = None
    r: Count = None                          # lora
    alpha: Positive = None                   # lora
    dropout: Decay = None                    # lora
    target_modules: list[str] | None = None  # lora, ia3, adapter
    num_tokens: Count = None                 # prompt, prefix
    projection: bool = None                  # prefix
    size: Count = None                       # adapter
    lr: Positive | None = None


class Method(Closed):
    name: str = None
    model: Literal[MODELS] = None
    align: bool = None
    pretrained: bool = None
    trainable: Literal[TRAINABLE] = None
    embedder: str | None = None
    head_pool: Literal[POOLS] | None = None
    probe_frac: Annotated[float, Ge(0), Lt(1)] = None
    train_last_k: Count | None = None
    peft: Peft | None = None

    @model_validator(mode="after")
    def _parts_fit(self):
        MethodConfig(**{"name": self.name, **self.model_dump(exclude_unset=True)})  # its own rules across options
        return self


class Trainer(Open):
    accelerator: Annotated[str, Lightning] = None
    devices: Annotated[int | str | list[int], Lightning] = None
    num_nodes: Count = None
    strategy: Annotated[str, Lightning] = None
    precision: Annotated[str | int, Lightning] = None
    deterministic: Annotated[bool | Literal["warn"], Rule("true, false or warn", whole=True)] = None
    enable_progress_bar: bool = None
    log_every_n_steps: Count = None
    use_distributed_sampler: bool = None


class Protocol(Closed):
    name: str = None
    select_on: Literal[SELECT_ON] = None
    data: Literal[PROTOCOL_DATA] = None  # each task's splits and preprocessing: ours or those of ORCA's code


class Paths(Closed):
    run_dir: str | None = None  # Hydra's run folder: null before Hydra runs
    data_dir: str = None
    cache_dir: str = None


class Reference(Open):
    """ORCA's hyperparameters for a task (its config's `reference:` block), which budget=paper
    and protocol=reference read."""

    target_len: Count | None = None
    optimizer: Optimizer = None
    batch_size: Count = None
    accumulate_grad_batches: Count = None
    max_epochs: Count = None
    gradient_clip_val: Positive | None = None
    align_lr: Positive = None
    warmup_epochs: NonNegative = None
    decay_epochs: Positive = None
    align_epochs: NonNegativeCount = None
    align_samples: Count = None
    train_samples: Count | None = None


class Logger(Closed):
    name: str = None
    package: str | None = None
    install: str | None = None
    per_stage: bool = None
    reopen_with: str | None = None
    lightning: dict[str, Any] = None  # the Lightning logger's own arguments


class Run(Open):
    seed: Seed = None
    budget_s: Positive | None = None
    budget_name: str = None
    plugins: list[str] = None
    body: Body = None
    embedder: Embedder = None
    align: Align = None
    data: Data = None
    finetune: Finetune = None
    task: Task = None
    head: Head = None
    method: Method = None
    trainer: Trainer = None
    protocol: Protocol = None
    paths: Paths = None
    reference: Reference = None
    logger: Logger = None


# --- the schema's words -------------------------------------------------------------------
@dataclass
class Words:
    kind: str      # "integer", "list of numbers", ...
    allowed: str   # "> 0", "in [0, 1)", "one of lightning, orca", "" for any value of the kind
    nullable: bool
    whole: str = ""  # a Rule's words that say it all

    def phrase(self) -> str:
        """'a number > 0 or null', 'one of lightning, orca', ..."""
        if self.whole:
            text = self.whole
        elif self.allowed.startswith("one of"):
            text = self.allowed
        elif self.kind == "bool":
            text = "true or false"
        else:
            text = f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind} {self.allowed}".strip()
        return text + (" or null" if self.nullable else "")


_KINDS = {int: "integer", float: "number", bool: "bool", str: "string"}


def words(tp) -> Words:
    """What a value of annotation `tp` may be, in words."""
    nullable = False
    if get_origin(tp) in (Union, UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        nullable = len(rest) < len(get_args(tp))
        tp = rest[0] if len(rest) == 1 else Union[tuple(rest)]
    tp, *meta = get_args(tp) if get_origin(tp) is Annotated else (tp,)
    rule = next((m for m in meta if isinstance(m, Rule)), None)
    origin = get_origin(tp)
    if origin is Literal:
        kind = _KINDS.get(type(get_args(tp)[0]), "value")
        allowed = "one of " + ", ".join(str(c) for c in get_args(tp))
    elif origin in (Union, UnionType):  # a union says what it takes with a whole Rule
        kind, allowed = " or ".join(words(a).kind for a in get_args(tp)), ""
    elif origin is list:
        item = words(get_args(tp)[0])
        size = next((f"{m.min_length} " for m in meta if isinstance(m, Len)), "")
        kind = f"list of {size}{item.kind}s"
        allowed = ", ".join(filter(None, [f"each {item.allowed}" if item.allowed else "",
                                          rule.words if rule else ""]))
    elif origin is dict:
        kind, allowed = "mapping", ""
    elif isinstance(tp, type) and issubclass(tp, BaseModel):  # a node given a value that is not a mapping
        kind, allowed = "mapping", "of " + ", ".join(_hints(tp))
    else:
        kind, allowed = _KINDS.get(tp, getattr(tp, "__name__", str(tp))), _bounds(meta)
    return Words(kind, "", nullable, whole=rule.words) if rule and rule.whole else Words(kind, allowed, nullable)


def _bounds(meta) -> str:
    low = next((("[", m.ge) for m in meta if isinstance(m, Ge)), None) or next(
        (("(", m.gt) for m in meta if isinstance(m, Gt)), None)
    high = next(((m.le, "]") for m in meta if isinstance(m, Le)), None) or next(
        ((m.lt, ")") for m in meta if isinstance(m, Lt)), None)
    if low and high:
        return f"in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f"{'<=' if high[1] == ']' else '<'} {high[0]}"
    return ""


# --- walking the models ---------------------------------------------------------------------
@cache
def _hints(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields and their full annotations (Annotated metadata included)."""
    return get_type_hints(model, include_extras=True)


def _model_in(tp) -> type[BaseModel] | None:
    """The model class an annotation holds (Optimizer | None -> Optimizer), if any."""
    for candidate in (tp, *get_args(tp)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def options(model: type[BaseModel] = Run, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, annotation) of every declared option, in declaration order; an open
    node also gets a '<node>.*' row (annotation None) for the keys it does not declare."""
    rows = []
    for name, tp in _hints(model).items():
        key = f"{prefix}{name}"
        inner = _model_in(tp)
        if inner is not None:
            rows += options(inner, key + ".")
        else:
            rows.append((key, tp))
    if model.model_config.get("extra") == "allow" and prefix:
        rows.append((prefix + "*", None))
    return rows


def _walk(key: str) -> tuple[Any, type[BaseModel] | None]:
    """(annotation, model) of a dotted key: (None, None) where the schema does not declare it;
    the model for a node ('finetune.optimizer'), else None."""
    model, tp = Run, None
    for part in key.split(".") if key else ():
        tp = _hints(model).get(part) if model is not None else None
        if tp is None:
            return None, None
        model = _model_in(tp)
    return tp, model


def annotation_of(key: str):
    """The annotation that declares option `key` ('finetune.optimizer.lr'), or None for a key
    the schema does not know (one of an open node's own) and for a node."""
    tp, model = _walk(key)
    return None if model is not None else tp


# --- checking a config ---------------------------------------------------------------------
def show(value) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _select(config: dict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


_EXAMPLES = (1.0, 0.1, 8, 3, 1, 0, [20, 40], [0.9, 0.98], "auto")


def _example(tp, default) -> str | None:
    """A value of `tp` to show: the default config's where it fits, else a plain one."""
    adapter = TypeAdapter(tp)
    for candidate in ([] if default is None else [default]) + list(_EXAMPLES):
        try:
            adapter.validate_python(candidate, strict=True)
        except (ValidationError, ConfigError):
            continue
        return show(candidate)
    return None


def _key_of(loc: tuple) -> tuple[str, bool]:
    """The dotted option of a pydantic error location, and whether it names a declared option
    (the rest of the location is a list index or a union member)."""
    model, parts = Run, []
    for part in loc:
        if model is None or not isinstance(part, str):
            break
        parts.append(part)
        tp = _hints(model).get(part)
        if tp is None:
            return ".".join(parts), False
        model = _model_in(tp)
    return ".".join(parts), True


def check_options(config: dict, given: dict[str, str] | None = None, defaults: dict | None = None) -> None:
    """Raise ConfigError, one line, for the first option of the composed, resolved `config`
    (a plain dict, without Hydra's node) that the schema refuses; one given on the command
    line (`given`: key -> the text after '=') first. Examples come from `defaults`."""
    given, defaults = given or {}, defaults or {}
    try:
        Run.model_validate(config)
    except ValidationError as exc:
        errors = [(*_key_of(e["loc"]), e) for e in exc.errors()]
        key, declared, error = next((x for x in errors if x[0] in given), errors[0])
        value = given.get(key, show(_select(config, key)))
        if not declared:
            node, _, name = key.rpartition(".")
            known = ", ".join(_hints(_walk(node)[1]))
            raise ConfigError(f"{key}={value}: {node} has no option {name!r}; its options: {known}") from None
        tp = _walk(key)[0]
        said = words(tp).phrase()
        example = None if said.startswith("one of") or "true or false" in said else _example(tp, _select(defaults, key))
        tail = f", e.g. {key}={example}" if example is not None else ""
        if error["type"].endswith("_type"):  # int_type, bool_type, model_type, ...
            raise ConfigError(f"{key}={value}: {key} takes {said}{tail}") from None
        raise ConfigError(f"{key}={value}: must be {said}{tail}") from None


# --- the README's option reference ------------------------------------------------------------
def reference_table(defaults: dict) -> str:
    """The markdown table of every option: type, what it takes, the default command's value."""
    lines = ["| option | type | allowed | default |", "|---|---|---|---|"]
    for key, tp in options():
        if tp is None:
            node = key.removesuffix(".*")
            lines.append(f"| `{key}` | any | other keys: {_OPEN[node]} | |")
            continue
        w = words(tp)
        allowed = w.whole or w.allowed.removeprefix("one of ")
        value = f"`{show(_select(defaults, key))}`" if _present(defaults, key) else ""
        lines.append(f"| `{key}` | {w.kind}{' or null' if w.nullable else ''} | {allowed} | {value} |")
    return "\n".join(lines)


def _present(config: dict, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = _select(config, parent) if parent else config
    return isinstance(node, dict) and leaf in node


_OPEN = {
    "body": "a plugin body's own options",
    "embedder": "a plugin embedder's own options",
    "head": "a plugin head's own options",
    "align.options": "the distance's own options",
    "task": "the task's own options (its constructor checks them)",
    "trainer": "Lightning Trainer options",
    "reference": "more of ORCA's hyperparameters",
}


def main() -> None:
    """Print the option reference (the README holds it between its options markers)."""
    from orca.preflight import check_overrides, plain

    print(reference_table(plain(check_overrides([]))))


if __name__ == "__main__":
    main()
