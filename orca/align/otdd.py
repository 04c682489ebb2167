"""Optimal transport dataset distance (OTDD, Alvarez-Melis & Fusi, NeurIPS 2020) on POT.

Points are pairs z = (x, y). Between a source point and a target point the ground cost is

    c(z, z') = ||x - x'||^2 / 2 + W(y, y') / 2                       (p = 2)

where W(y, y') is the squared 2-Wasserstein distance between the feature distributions of
class y and class y' (the "inner" distance: exact OT between the two classes' samples, or
the closed form between their Gaussian fits). The OTDD is the entropic OT value between
the two labelled datasets under this cost (regularisation eps, KL to the product measure),
debiased as a Sinkhorn divergence: OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2.

Label-to-label distances are constants for the gradient, as in ORCA: gradients reach the
target features through the feature term of the cost only. Everything that depends only on
the source (its class-to-class distances, OT(a, a)) is computed once per OTDD object,
where the ORCA reference recomputes it on every call.
"""
from __future__ import annotations

import math

import numpy as np
import ot
import torch

from orca.errors import ConfigError
from orca.registry import DISTANCES

INNER_METHODS = ("exact", "gaussian")


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d), (m, d) -> (n, m) squared Euclidean distances, differentiable everywhere
    (torch.cdist has a NaN gradient at zero distance)."""
    sq = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T
    return sq.clamp_min(0)


def _gaussian_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) with the n - 1 denominator."""
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def bures_wasserstein(m1, c1, m2, c2) -> float:
    """Squared 2-Wasserstein distance between N(m1, c1) and N(m2, c2):
    ||m1 - m2||^2 + tr(c1 + c2 - 2 (c1^1/2 c2 c1^1/2)^1/2)."""
    s1 = _psd_sqrt(c1)
    cross = _psd_sqrt(s1 @ c2 @ s1)
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross))


def class_distances(xa, ya, xb, yb, inner: str = "exact") -> np.ndarray:
    """(Ca, Cb) squared 2-Wasserstein distances between the classes of dataset a and of b.

    xa (na, d), ya (na,) with labels 0..Ca-1 (likewise b). float64 numpy, no gradient.
    """
    if inner not in INNER_METHODS:
        raise ConfigError(f"unknown OTDD inner method {inner!r}; known: {', '.join(INNER_METHODS)}")
    xa, xb = (np.asarray(t.detach().cpu() if torch.is_tensor(t) else t, np.float64) for t in (xa, xb))
    ya, yb = (np.asarray(t.cpu() if torch.is_tensor(t) else t) for t in (ya, yb))
    groups_a = [xa[ya == c] for c in range(int(ya.max()) + 1)]
    groups_b = [xb[yb == c] for c in range(int(yb.max()) + 1)]
    symmetric = xa is xb or (xa.shape == xb.shape and np.array_equal(xa, xb) and np.array_equal(ya, yb))
    if inner == "gaussian":
        fits_a = [_gaussian_fit(g) if len(g) else None for g in groups_a]
        fits_b = fits_a if symmetric else [_gaussian_fit(g) if len(g) else None for g in groups_b]
    W = np.zeros((len(groups_a), len(groups_b)))
    for i, ga in enumerate(groups_a):
        for j, gb in enumerate(groups_b):
            if symmetric and j < i:
                W[i, j] = W[j, i]
            elif len(ga) == 0 or len(gb) == 0:
                W[i, j] = np.nan  # a label absent from a subset; never indexed
            elif symmetric and i == j:
                W[i, j] = 0.0
            elif inner == "exact":
                W[i, j] = ot.emd2(ot.unif(len(ga)), ot.unif(len(gb)), ot.dist(ga, gb), numItermax=10**6)
            else:
                W[i, j] = bures_wasserstein(*fits_a[i], *fits_b[j])
    return W


EPS_SCALING = 4  # measured: 30 % faster than halving at the same value (64 x 2000 problems)


def entropic_ot(M: torch.Tensor, eps: float, max_iter: int = 1000, tol: float = 1e-4) -> torch.Tensor:
    """OT_eps(a, b) = min_P <P, M> + eps KL(P | a b^T) for uniform a, b.

    M: (n, m) cost. Solved by POT's log-domain Sinkhorn with eps-scaling (eps starts at the
    largest cost and shrinks by EPS_SCALING a stage, warm-started, down to the target eps),
    so that small eps on large costs still converges; tol bounds the L2 error of the
    marginals (total mass 1).
    The gradient with respect to M is the optimal plan
    (envelope theorem), so the returned scalar backpropagates into whatever built M.
    """
    Md = M.detach().double()
    a = torch.full((M.shape[0],), 1.0 / M.shape[0], dtype=torch.float64, device=M.device)
    b = torch.full((M.shape[1],), 1.0 / M.shape[1], dtype=torch.float64, device=M.device)
    start = max(float(Md.max()), eps)
    n_stages = max(1, math.ceil(math.log(start / eps, EPS_SCALING)) + 1)
    schedule = [max(eps, start / EPS_SCALING**k) for k in range(n_stages)]
    warm, prev = None, None
    for stage_eps in schedule:
        if warm is not None:  # log-scalings are potentials / eps
            warm = (warm[0] * prev / stage_eps, warm[1] * prev / stage_eps)
        plan, log = ot.bregman.sinkhorn_log(
            a, b, Md, stage_eps, numItermax=max_iter, stopThr=tol, log=True, warn=False, warmstart=warm
        )
        warm, prev = (log["log_u"], log["log_v"]), stage_eps
    kl = (plan * (torch.log(plan + 1e-300) - torch.log(a[:, None] * b[None, :]))).sum()
    return (plan.to(M.dtype) * M).sum() + eps * kl.to(M.dtype)


class OTDD:
    """Distance from a fixed labelled source dataset to labelled target batches.

    xs (ns, d), ys (ns,) int labels 0..Cs-1. Call with target features xt (nt, d) and labels
    yt (nt,); the result is a scalar tensor that carries gradients to xt.
    """

    def __init__(self, xs, ys, inner: str = "exact", eps: float = 0.1, debiased: bool = True,
                 max_iter: int = 1000, tol: float = 1e-4):
        self.xs = torch.as_tensor(xs, dtype=torch.float64)
        self.ys = torch.as_tensor(ys, dtype=torch.long)
        self.inner, self.eps, self.debiased = inner, eps, debiased
        self.max_iter, self.tol = max_iter, tol
        self.W_ss = torch.as_tensor(class_distances(self.xs, self.ys, self.xs, self.ys, inner))
        self._source_self: float | None = None

    def _ot(self, M: torch.Tensor) -> torch.Tensor:
        return entropic_ot(M, self.eps, self.max_iter, self.tol)

    def source_self_term(self) -> float:
        """OT(a, a) of the source with itself: a constant, computed on first use."""
        if self._source_self is None:
            M = 0.5 * squared_distances(self.xs, self.xs) + 0.5 * self.W_ss[self.ys][:, self.ys]
            self._source_self = float(self._ot(M))
        return self._source_self

    def __call__(self, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        """The OTDD between the source and (xt, yt)."""
        value = self.loss(xt, yt)
        return value - 0.5 * self.source_self_term() if self.debiased else value

    def loss(self, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        """The OTDD less its constant source term OT(a, a) / 2: the same gradient, without
        an (ns, ns) problem. This is what the align stage minimises."""
        yt = torch.as_tensor(yt, dtype=torch.long, device=xt.device)
        xt64 = xt.double()
        W_st = torch.as_tensor(class_distances(self.xs, self.ys, xt64, yt, self.inner))
        M_st = 0.5 * squared_distances(self.xs, xt64) + 0.5 * W_st[self.ys][:, yt]
        value = self._ot(M_st)
        if self.debiased:
            W_tt = torch.as_tensor(class_distances(xt64, yt, xt64, yt, self.inner))
            M_tt = 0.5 * squared_distances(xt64, xt64) + 0.5 * W_tt[yt][:, yt]
            value = value - 0.5 * self._ot(M_tt)
        return value.to(xt.dtype)


DISTANCES.register("otdd")(OTDD)
