"""Embedders: raw task input (B, *input_shape) -> token sequence (B, N, D) for the body.

Every embedder is built by ``EMBEDDERS.get(name)(input_shape, body, **options)``, checks
the input shape it is given before any training starts, adds learned position embeddings
initialised from the body's own table (when the body has one), and records the token
grid it produces (`grid`: (N,) for sequences, (h, w) for images) for bodies and heads that
need it.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from orca.bodies import Body
from orca.choices import EMBEDDER_INITS
from orca.errors import ConfigError
from orca.registry import EMBEDDERS


def smallest_stride(length: int, target_len: int) -> int:
    """Smallest s dividing `length` with length / s <= target_len (ORCA's 1D rule)."""
    for s in range(1, length + 1):
        if length % s == 0 and length // s <= target_len:
            return s
    raise AssertionError("unreachable: s = length always qualifies")


def smallest_patch(height: int, width: int, target_len: int) -> int:
    """Smallest p dividing both sides with (H/p)(W/p) <= target_len."""
    for p in range(1, math.gcd(height, width) + 1):
        if height % p == 0 and width % p == 0 and (height // p) * (width // p) <= target_len:
            return p
    raise ConfigError(
        f"no square patch divides a {height}x{width} input into at most {target_len} tokens; "
        "raise embedder.target_len or resize the input"
    )


def check_input_shape(embedder: str, input_shape, ndims: tuple[int, ...], example: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in ndims:
        raise ConfigError(
            f"embedder {embedder!r} takes inputs shaped {example} per sample, but the task gives "
            f"{shape}; choose an embedder for {len(shape)}-D samples (e.g. embedder.name=conv1d for "
            "(C, L), patch2d for (C, H, W))"
        )
    return shape


def conv_stem(channels: int, widths, ndim: int, kernel: int = 3) -> tuple[nn.Module, int]:
    """Early convolutions before the patch projection (Xiao et al. 2021, "Early convolutions
    help transformers see better"): for each width w, a `kernel`-wide stride-2 convolution to
    w channels, GroupNorm(1, w) (no batch statistics, so alignment's class batches change
    nothing) and GELU. Each layer halves every side, rounding up. Returns the stem (identity
    for no widths) and its output channels."""
    if kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"embedder.stem_kernel must be an odd positive width (3, 5, 7, ...), got {kernel}")
    conv = nn.Conv1d if ndim == 1 else nn.Conv2d
    layers: list[nn.Module] = []
    for width in widths or ():
        if width < 1:
            raise ConfigError(f"embedder.stem widths must be positive channel counts, got {list(widths)}")
        layers += [conv(channels, width, kernel_size=kernel, stride=2, padding=kernel // 2), nn.GroupNorm(1, width),
                   nn.GELU()]
        channels = width
    return nn.Sequential(*layers), channels


def after_stem(side: int, widths) -> int:
    """A side's length after :func:`conv_stem` with these widths (each layer: ceil(side / 2))."""
    for _ in widths or ():
        side = (side + 1) // 2
    return side


def takes_stem(name: str) -> bool:
    """Whether the registered embedder `name` has the `stem` option (conv1d and patch2d do)."""
    return "stem" in inspect.signature(EMBEDDERS.get(name)).parameters


class Embedder(nn.Module):
    """Base: the token grid and the position table (N, D) copied from the body (none if
    the body has no absolute positions)."""

    def __init__(self, body: Body, grid: tuple[int, ...]):
        super().__init__()
        num_tokens = math.prod(grid)
        if num_tokens > body.max_positions:
            raise ConfigError(
                f"the embedder makes {num_tokens} tokens but the body has {body.max_positions} positions; "
                "lower embedder.target_len"
            )
        self.grid, self.num_tokens = tuple(grid), num_tokens
        table = body.position_embeddings
        self.position_embeddings = None if table is None else nn.Parameter(table[:num_tokens].clone())

    def add_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens if self.position_embeddings is None else tokens + self.position_embeddings


CONV1D_INITS, SWIN_PATCH_INITS = EMBEDDER_INITS["conv1d"], EMBEDDER_INITS["swin_patch"]


@EMBEDDERS.register("conv1d")
class Conv1dEmbedder(Embedder):
    """ORCA's 1D embedder: (B, C, L) -> Conv1d(C, D, s, stride s) -> LayerNorm -> + positions.

    s is `patch_size`, or else the smallest stride dividing L with L / s <= target_len (ECG
    1000 -> 50 tokens with target 64, DeepSEA 1000 -> 500 with 512, Satellite 46 -> 46).
    `stem` (channel widths, default none) puts early convolutions first (:func:`conv_stem`,
    `stem_kernel` wide); the stride rule then applies to the stem's output length.

    `init`: "default" (PyTorch's own init of the Conv1d and LayerNorm), or "orca" (ORCA's
    `conv_init` and `embedder_init` for a text body: Conv1d weight xavier-uniform with gain
    sqrt(2), bias 0; LayerNorm copied from the body's embedding LayerNorm). The stem keeps
    its default init either way.
    """

    def __init__(self, input_shape, body: Body, target_len: int = 512, patch_size: int | None = None,
                 stem: list[int] | None = None, stem_kernel: int = 3, init: str = "default"):
        if init not in CONV1D_INITS:
            raise ConfigError(f"unknown embedder.init {init!r} for conv1d; known: {', '.join(CONV1D_INITS)}")
        if init == "orca" and body.embedding_norm is None:
            raise ConfigError(f"embedder.init=orca copies the body's embedding LayerNorm, and {type(body).__name__} "
                              "has none (GPT-2, vision bodies): use embedder.init=default or a BERT-family body")
        channels, length = check_input_shape("conv1d", input_shape, (2,), "(C, L)")
        stem_layers, channels = conv_stem(channels, stem, ndim=1, kernel=stem_kernel)
        length = after_stem(length, stem)
        stride = patch_size or smallest_stride(length, target_len)
        if length % stride:
            raise ConfigError(f"stride {stride} does not divide the input length {length}"
                              + (" (after the stem)" if stem else ""))
        super().__init__(body, (length // stride,))
        self.stem = stem_layers
        self.conv = nn.Conv1d(channels, body.hidden_size, kernel_size=stride, stride=stride)
        self.norm = nn.LayerNorm(body.hidden_size)
        if init == "orca":
            with torch.no_grad():
                nn.init.xavier_uniform_(self.conv.weight, gain=math.sqrt(2))  # (D, C, s)
                self.conv.bias.zero_()
                self.norm.weight.copy_(body.embedding_norm["weight"])  # (D,)
                self.norm.bias.copy_(body.embedding_norm["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(self.stem(x)).transpose(1, 2)  # (B, N, D)
        return self.add_positions(self.norm(tokens))


@EMBEDDERS.register("patch2d")
class Patch2dEmbedder(Embedder):
    """An image as a token sequence for a language body: (B, C, H, W) -> p x p patches ->
    Conv2d(C, D, p, stride p) -> (B, HW/p^2, D) -> LayerNorm -> + positions.

    p is `patch_size`, or else the smallest patch giving at most target_len tokens. `stem`
    (channel widths, default none) puts early convolutions first (:func:`conv_stem`,
    `stem_kernel` wide); the patch then divides the stem's output (CIFAR's 32x32 -> 8x8 after
    stem=[32, 64]).
    """

    def __init__(self, input_shape, body: Body, target_len: int = 64, patch_size: int | None = None,
                 stem: list[int] | None = None, stem_kernel: int = 3):
        channels, height, width = check_input_shape("patch2d", input_shape, (3,), "(C, H, W)")
        stem_layers, channels = conv_stem(channels, stem, ndim=2, kernel=stem_kernel)
        height, width = after_stem(height, stem), after_stem(width, stem)
        p = patch_size or smallest_patch(height, width, target_len)
        if height % p or width % p:
            raise ConfigError(f"patch size {p} does not divide the {height}x{width} input"
                              + (" (after the stem)" if stem else ""))
        super().__init__(body, (height // p, width // p))
        self.stem = stem_layers
        self.conv = nn.Conv2d(channels, body.hidden_size, kernel_size=p, stride=p)
        self.norm = nn.LayerNorm(body.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(self.stem(x)).flatten(2).transpose(1, 2)  # (B, N, D)
        return self.add_positions(self.norm(tokens))


@EMBEDDERS.register("linear_patch")
class LinearPatchEmbedder(Embedder):
    """FPT's input layer: non-overlapping patches of a (C, L) or (C, H, W) sample, each
    flattened and mapped by one nn.Linear to D, plus positions (no LayerNorm)."""

    def __init__(self, input_shape, body: Body, target_len: int = 64, patch_size: int | None = None):
        shape = check_input_shape("linear_patch", input_shape, (2, 3), "(C, L) or (C, H, W)")
        if len(shape) == 2:
            p = patch_size or smallest_stride(shape[1], target_len)
            grid = (shape[1] // p,)
        else:
            p = patch_size or smallest_patch(shape[1], shape[2], target_len)
            grid = (shape[1] // p, shape[2] // p)
        if any(side % p for side in shape[1:]):
            raise ConfigError(f"patch size {p} does not divide the input {shape}")
        super().__init__(body, grid)
        self.patch, self.ndim = p, len(grid)
        self.linear = nn.Linear(shape[0] * p ** len(grid), body.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        if self.ndim == 1:  # (B, C, L) -> (B, L/p, C*p)
            patches = x.unfold(2, p, p).permute(0, 2, 1, 3).flatten(2)
        else:  # (B, C, H, W) -> (B, H/p * W/p, C*p*p)
            patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)
        return self.add_positions(self.linear(patches))


@EMBEDDERS.register("swin_patch")
class SwinPatchEmbedder(Embedder):
    """ORCA's 2D embedder for a vision body: resize (B, C, H, W) to the body's image size
    (224 for Swin), Conv2d(C, D, 4, stride 4) -> (B, 56*56, D), LayerNorm; the convolution
    and norm start from the body's own patch projection (when the patch is the body's): its
    bias and LayerNorm copied, and its RGB filters (D, 3, p, p) made into C-channel filters
    by `init`:

    - "mean": the mean of the RGB filters, repeated over the C channels and scaled by 3 / C,
      so that a grey image (every channel equal) embeds exactly as the same grey image in RGB;
    - "orca": ORCA's `embedder_init`: the RGB filters repeated along the channel axis and cut
      to C (C = 1: the R filter; C = 5: R, G, B, R, G).
    """

    def __init__(self, input_shape, body: Body, image_size: int | None = None, target_len: int | None = None,
                 patch_size: int | None = None, init: str = "mean"):
        if init not in SWIN_PATCH_INITS:
            raise ConfigError(f"unknown embedder.init {init!r} for swin_patch; known: {', '.join(SWIN_PATCH_INITS)}")
        channels, _, _ = check_input_shape("swin_patch", input_shape, (3,), "(C, H, W)")
        stem = getattr(body, "patch_stem", None)
        if stem is None:
            raise ConfigError("embedder 'swin_patch' starts from a vision body's patch projection; "
                              f"{type(body).__name__} has none: use embedder.name=patch2d with a language body")
        p = patch_size or body.patch_size
        self.image_size = image_size or body.image_size
        if self.image_size % p:
            raise ConfigError(f"patch size {p} does not divide the image size {self.image_size}")
        super().__init__(body, (self.image_size // p, self.image_size // p))
        self.conv = nn.Conv2d(channels, body.hidden_size, kernel_size=p, stride=p)
        self.norm = nn.LayerNorm(body.hidden_size)
        if p == stem["weight"].shape[-1]:
            with torch.no_grad():
                rgb = stem["weight"]  # (D, 3, p, p)
                if init == "mean":
                    weight = rgb.mean(1, keepdim=True).expand(-1, channels, -1, -1) * rgb.shape[1] / channels
                else:
                    weight = rgb.repeat(1, channels // rgb.shape[1] + 1, 1, 1)[:, :channels]
                self.conv.weight.copy_(weight)  # (D, C, p, p)
                self.conv.bias.copy_(stem["bias"])
                self.norm.weight.copy_(stem["norm_weight"])
                self.norm.bias.copy_(stem["norm_bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                          align_corners=False)
        tokens = self.conv(x).flatten(2).transpose(1, 2)  # (B, (S/p)^2, D)
        return self.add_positions(self.norm(tokens))


DEFAULT_FOR_RANK = {2: "conv1d", 3: "patch2d"}  # (C, L) series; (C, H, W) images and fields


def default_embedder(task_name: str, input_shape) -> str:
    """The embedder of a task that names none (a new modality registered from outside):
    ORCA's conv1d for (C, L) inputs, patch2d for (C, H, W)."""
    name = DEFAULT_FOR_RANK.get(len(input_shape))
    if name is None:
        raise ConfigError(f"task {task_name!r} takes inputs shaped {tuple(input_shape)} and names no embedder, and "
                          f"only (C, L) and (C, H, W) inputs have a default ({', '.join(DEFAULT_FOR_RANK.values())}); "
                          "name one with embedder=NAME (register your own for other shapes)")
    return name


MAX_RULE_VALUES_PER_TOKEN = 65536  # beyond this the rule's patch projection alone is too large


def tokens_for(input_shape, values_per_token: int, max_tokens: int) -> int:
    """The token rule for a task without tuned tokens, as a target_len: each token carries
    at least `values_per_token` input values (C x patch), and there are at most
    `max_tokens`, or, for an image whose sides share no large divisor, the fewest square
    patches there are. With the defaults (16, 8): 1x8x8 digits -> 4 tokens of 4x4;
    1x46 -> 2 tokens of 23; 1x1000 -> 8 tokens of 125; 3x32x32 -> 4 patches of 16x16;
    1x96x102 -> 16x17 patches of 6."""
    if values_per_token < 1 or max_tokens < 1:
        raise ConfigError(f"embedder.values_per_token ({values_per_token}) and embedder.max_tokens ({max_tokens}) "
                          "must be positive")
    fewest = 1
    if len(input_shape) == 3:
        side = math.gcd(input_shape[1], input_shape[2])
        fewest = (input_shape[1] // side) * (input_shape[2] // side)
    return max(fewest, min(max_tokens, math.prod(input_shape) // values_per_token))


def create_embedder(name: str, input_shape, body: Body, target_len: int | None = None,
                    values_per_token: int = 16, max_tokens: int = 64, **options) -> Embedder:
    """EMBEDDERS[name](input_shape, body, target_len=..., **options); a target_len of None
    follows the token rule (:func:`tokens_for`)."""
    if target_len is None:
        target_len = tokens_for(input_shape, values_per_token, max_tokens)
        per_token = math.prod(input_shape) // target_len
        if per_token > MAX_RULE_VALUES_PER_TOKEN:
            raise ConfigError(
                f"the token rule cuts a {tuple(input_shape)} input into {target_len} tokens of about {per_token} "
                f"values, whose projection to the body would take ~{per_token * body.hidden_size / 1e6:.0f}M weights; "
                "set embedder.target_len (e.g. 256) for inputs this large"
            )
    elif target_len < 1:
        raise ConfigError(f"embedder.target_len must be a positive number of tokens, got {target_len}")
    if (options.get("patch_size") or 1) < 1:
        raise ConfigError(f"embedder.patch_size must be a positive number of input steps or pixels, "
                          f"got {options['patch_size']}; or null for the smallest that fits target_len")
    return EMBEDDERS.get(name)(input_shape, body, target_len=target_len, **options)
