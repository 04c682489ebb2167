"""Heads (ORCA's "predictors"): body output (B, N, D) -> task output.

Every head is built by ``HEADS.get(name)(hidden_size, num_outputs, grid=..., output_shape=...,
**options)``: `grid` is where the body's output tokens sit ((N,) or (h, w)), `output_shape`
the task's dense output grid (H, W) or None for class and multi-label outputs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from orca.choices import DECODERS, POOLS
from orca.errors import ConfigError
from orca.registry import HEADS


@HEADS.register("pooled")
class PooledHead(nn.Module):
    """Pool over tokens (mean: ORCA; last token: FPT), then Linear(D, K) -> (B, K) logits
    (class logits, or one logit per label for multi-label tasks)."""

    def __init__(self, hidden_size: int, num_outputs: int, grid=None, output_shape=None, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"unknown pooling {pool!r}; known: {', '.join(POOLS)}")
        if output_shape is not None:
            raise ConfigError(f"head 'pooled' predicts one vector per sample, but the task wants a "
                              f"{tuple(output_shape)} field: use head.name=dense")
        self.pool = pool
        self.linear = nn.Linear(hidden_size, num_outputs)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        pooled = hidden.mean(1) if self.pool == "mean" else hidden[:, -1]
        return self.linear(pooled)


RGB = 3  # Swin's num_channels: the pixel-shuffle decoder reconstructs RGB images
SWIN_INITIALIZER_RANGE = 0.02  # Swin's config.initializer_range: std of Hugging Face's init of its decoder


@HEADS.register("dense")
class DenseHead(nn.Module):
    """A field on the input grid (H, W) from tokens on an (h, w) grid (row-major), by `decoder`:

    - "linear": each token predicts its own s_h x s_w block (Linear(D, K * s_h * s_w),
      s = ceil(H / h)), blocks are put back in place, and the (h*s_h, w*s_w) result is
      resized (bilinear) to (H, W) when the sides differ;
    - "pixel_shuffle": ORCA's dense predictor for a Swin body (Hugging Face's
      SwinForMaskedImageModeling decoder, then ORCA's poolers): tokens as (B, D, h, w) ->
      Conv2d(D, 3 s^2, 1) -> PixelShuffle(s) -> (B, 3, h*s, w*s) -> mean over the 3
      channels -> AdaptiveAvgPool2d to (H, W). s is `upsample`, or else the smallest with
      h*s >= H and w*s >= W. One-channel fields only (K = 1), as in ORCA.

    Output (B, H, W) for K = 1, else (B, K, H, W).
    """

    def __init__(self, hidden_size: int, num_outputs: int, grid=None, output_shape=None, decoder: str = "linear",
                 upsample: int | None = None):
        super().__init__()
        if output_shape is None or grid is None or len(grid) != 2:
            raise ConfigError(f"head 'dense' needs a dense task and tokens on a 2D grid (got output "
                              f"{output_shape}, token grid {grid}); use head.name=pooled for class outputs")
        if decoder not in DECODERS:
            raise ConfigError(f"unknown head.decoder {decoder!r}; known: {', '.join(DECODERS)}")
        if decoder == "linear" and upsample is not None:
            raise ConfigError(f"head.upsample={upsample} is the pixel-shuffle decoder's factor; the linear decoder "
                              "sizes its blocks itself: set head.upsample=null or head.decoder=pixel_shuffle")
        if decoder == "pixel_shuffle" and num_outputs != 1:
            raise ConfigError(f"head.decoder=pixel_shuffle is ORCA's decoder for one-channel fields, but the task "
                              f"wants {num_outputs} channels: use head.decoder=linear")
        if upsample is not None and upsample < 1:
            raise ConfigError(f"head.upsample must be a positive factor, got {upsample}; or null for the smallest "
                              "that covers the output")
        self.grid, self.output_shape, self.channels = tuple(grid), tuple(output_shape), num_outputs
        self.decoder = decoder
        self.block = tuple(math.ceil(side / g) for side, g in zip(self.output_shape, self.grid))
        if decoder == "linear":
            self.linear = nn.Linear(hidden_size, num_outputs * self.block[0] * self.block[1])
        else:
            self.upsample = upsample or max(self.block)
            self.conv = nn.Conv2d(hidden_size, self.upsample ** 2 * RGB, kernel_size=1)
            nn.init.normal_(self.conv.weight, std=SWIN_INITIALIZER_RANGE)
            nn.init.zeros_(self.conv.bias)
            self.shuffle = nn.PixelShuffle(self.upsample)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        (h, w), (sh, sw), k = self.grid, self.block, self.channels
        if self.decoder == "pixel_shuffle":
            tokens = hidden.transpose(1, 2).reshape(hidden.shape[0], -1, h, w)  # (B, D, h, w)
            image = self.shuffle(self.conv(tokens))  # (B, 3, h*s, w*s)
            return nn.functional.adaptive_avg_pool2d(image.mean(1), self.output_shape)  # (B, H, W)
        blocks = self.linear(hidden).view(-1, h, w, k, sh, sw)  # (B, h, w, K, sh, sw)
        field = blocks.permute(0, 3, 1, 4, 2, 5).reshape(-1, k, h * sh, w * sw)
        if field.shape[-2:] != self.output_shape:
            field = nn.functional.interpolate(field, size=self.output_shape, mode="bilinear", align_corners=False)
        return field[:, 0] if k == 1 else field


def create_head(name: str, hidden_size: int, num_outputs: int, **options) -> nn.Module:
    return HEADS.get(name)(hidden_size, num_outputs, **options)
