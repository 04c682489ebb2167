"""Maximum mean discrepancy between source and target features (labels unused), an
alternative alignment distance to OTDD: MMD^2 with a sum of Gaussian kernels whose
bandwidths are multiples of the source's median pairwise distance."""
from __future__ import annotations

import torch

from orca.align.otdd import squared_distances
from orca.registry import DISTANCES


@DISTANCES.register("mmd")
class MMD:
    def __init__(self, xs, ys=None, scales=(0.5, 1.0, 2.0)):
        self.xs = torch.as_tensor(xs, dtype=torch.float64)
        median_sq = squared_distances(self.xs, self.xs).median().clamp_min(1e-12)
        self.bandwidths = [float(median_sq) * s for s in scales]  # squared lengths
        self._k_ss = float(self._kernel(self.xs, self.xs).mean())  # constant, computed once

    def _kernel(self, a, b):
        d = squared_distances(a, b)
        return sum(torch.exp(-d / h) for h in self.bandwidths)

    def __call__(self, xt: torch.Tensor, yt=None) -> torch.Tensor:
        xt64 = xt.double()
        value = self._k_ss + self._kernel(xt64, xt64).mean() - 2 * self._kernel(self.xs, xt64).mean()
        return value.to(xt.dtype)

    loss = __call__
