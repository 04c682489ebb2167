"""Optimal transport dataset distance (OTDD, Alvarez-Melis & Fusi, NeurIPS 2020).

Points are pairs z = (x, y). Between a source point and a target point the ground cost is

    c(z, z') = ||x - x'||^2 / 2 + W(y, y') / 2                       (p = 2)

where W(y, y') is the squared 2-Wasserstein distance between the feature distributions of
class y and class y' (the "inner" distance: exact OT between the two classes' samples by
POT's network simplex, or the closed form between their Gaussian fits). The OTDD is the
entropic OT value between the two labelled datasets under this cost (regularisation eps,
KL to the product measure), debiased as a Sinkhorn divergence:
OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2 (solver: orca/align/sinkhorn.py).

Label-to-label distances are constants for the gradient, as in ORCA: gradients reach the
target features through the feature term of the cost only. Everything that depends only on
the source (its class-to-class distances, OT(a, a)) is computed once per OTDD object,
where the ORCA reference recomputes it on every call.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import numpy as np
import ot
import torch
from threadpoolctl import ThreadpoolController

from orca.align.sinkhorn import entropic_ot, kernel_dtype, sinkhorn
from orca.choices import INNER_METHODS
from orca.errors import ConfigError
from orca.registry import DISTANCES


def squared_distances(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(n, d), (m, d) -> (n, m) squared Euclidean distances, differentiable everywhere
    (torch.cdist has a NaN gradient at zero distance). a_sq: a's squared norms (n,), if
    kept from an earlier call."""
    a_sq = a.pow(2).sum(1) if a_sq is None else a_sq
    return torch.addmm(a_sq[:, None] + b.pow(2).sum(1)[None, :], a, b.T, alpha=-2).clamp_min(0)


@cache
def _pool() -> ThreadPoolExecutor:
    """Threads for the network-simplex solves (POT releases the GIL while it solves), one
    a core that torch may use."""
    return ThreadPoolExecutor(max_workers=max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))


@cache
def _openmp() -> ThreadpoolController:
    return ThreadpoolController()


@contextmanager
def _one_torch_thread():
    """Run small tensor work on one intra-op thread: on a few cores, torch's parallel
    regions would wait on the cores that the pool's solves hold (measured: a satellite
    align step, 2 cores, 0.38 s with 2 torch threads, 0.32 s with 1).

    The limit is OpenMP's alone (threadpoolctl), not torch.set_num_threads: after a switch
    through that one and back, every later fine-tuning step was slower (satellite, 400
    steps, s a step: 0.057-0.063 without alignment in five runs; after 60 align steps
    0.065-0.069 with torch.set_num_threads in three, 0.057-0.063 with this limit in four)."""
    _pool()  # sized by the threads torch had before
    with _openmp().limit(limits=1, user_api="openmp"):
        yield


def _exact_w2(cost: np.ndarray) -> float:
    """Squared 2-Wasserstein distance between two uniform point clouds, from their (na, nb)
    squared distances (a view of any float dtype; the float64 copy is made in the solving
    thread)."""
    na, nb = cost.shape
    return float(ot.emd2(ot.unif(na), ot.unif(nb), np.asarray(cost, np.float64, order="C"), numItermax=10**6))


def _psd_sqrt(c: torch.Tensor) -> torch.Tensor:
    """Square roots of a batch (..., d, d) of symmetric positive semi-definite matrices."""
    vals, vecs = torch.linalg.eigh((c + c.mT) / 2)
    return (vecs * vals.clamp_min(0).sqrt()[..., None, :]) @ vecs.mT


def bures_matrix(ma: torch.Tensor, ca: torch.Tensor, mb: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """Means (A, d), (B, d) and covariances (A, d, d), (B, d, d) -> (A, B) squared
    2-Wasserstein distances between the Gaussians:
    ||m1 - m2||^2 + tr(c1 + c2 - 2 (c1^1/2 c2 c1^1/2)^1/2), batched."""
    sa = _psd_sqrt(ca)[:, None]  # (A, 1, d, d)
    cross = sa @ cb[None] @ sa  # (A, B, d, d)
    tr_sqrt = torch.linalg.eigvalsh((cross + cross.mT) / 2).clamp_min(0).sqrt().sum(-1)
    trace = lambda c: c.diagonal(dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    return ((ma[:, None] - mb[None]) ** 2).sum(-1) + trace(ca)[:, None] + trace(cb)[None] - 2 * tr_sqrt


def bures_wasserstein(m1, c1, m2, c2) -> float:
    """Squared 2-Wasserstein distance between N(m1, c1) and N(m2, c2)."""
    t = lambda v: torch.as_tensor(np.asarray(v, np.float64))[None]  # noqa: E731
    return float(bures_matrix(t(m1), t(np.atleast_2d(c1)), t(m2), t(np.atleast_2d(c2)))[0, 0])


def by_class(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, d), y (n,) reordered by label (stable): each class a contiguous range. The
    OTDD does not depend on the order of the points; gradients reach x through the index."""
    y = torch.as_tensor(y, dtype=torch.long, device=x.device)
    if bool((y[1:] >= y[:-1]).all()):
        return x, y
    order = torch.argsort(y, stable=True)
    return x[order], y[order]


class Classes:
    """The classes of a dataset sorted by label (see by_class): labels 0..count-1, the
    (start, stop) range of each present class, and its Gaussian fit on demand."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        labels = np.asarray(y.cpu())
        if (np.diff(labels) < 0).any():
            raise ValueError("Classes needs points sorted by label (orca.align.otdd.by_class)")
        self.x, self.count = x, int(labels.max()) + 1
        bounds = np.searchsorted(labels, np.arange(self.count + 1))
        self.ranges = {c: (int(bounds[c]), int(bounds[c + 1])) for c in range(self.count) if bounds[c + 1] > bounds[c]}
        self.present = list(self.ranges)
        self._fits = None

    def size(self, c: int) -> int:
        start, stop = self.ranges[c]
        return stop - start

    def gaussian_fits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (C', d) and covariances (C', d, d), n - 1 denominator, of the present
        classes, float64."""
        if self._fits is None:
            x = self.x.detach().cpu().double()
            points = [x[start:stop] for start, stop in self.ranges.values()]
            self._fits = (torch.stack([p.mean(0) for p in points]),
                          torch.stack([torch.atleast_2d(torch.cov(p.T)) for p in points]))
        return self._fits


def class_distances(xa, ya, xb, yb, inner: str = "exact") -> np.ndarray:
    """(Ca, Cb) squared 2-Wasserstein distances between the classes of dataset a and of b.

    xa (na, d), ya (na,) with labels 0..Ca-1 (likewise b). float64, no gradient. A label
    absent from a dataset gives NaN entries (never indexed).
    """
    symmetric = xa is xb and ya is yb
    xa, ya = by_class(torch.as_tensor(xa).double(), ya)
    a = Classes(xa, ya)
    b = a if symmetric else Classes(*by_class(torch.as_tensor(xb).double(), yb))
    return start_class_distances(a, b, inner)()


def start_class_distances(a: Classes, b: Classes, inner: str = "exact", D: torch.Tensor | None = None
                          ) -> Callable[[], np.ndarray]:
    """class_distances, started: the exact inner method's network-simplex solves (one a
    class pair, its cost a block of D, the (na, nb) squared distances of a's and b's points,
    computed here if not given) go to the thread pool at once, the largest first; the
    returned function waits for them and gives the matrix. a is b: a dataset's classes to
    each other (each pair solved once)."""
    if inner not in INNER_METHODS:
        raise ConfigError(f"unknown OTDD inner method {inner!r}; known: {', '.join(INNER_METHODS)}")
    symmetric = a is b
    W = np.full((a.count, b.count), np.nan)
    if symmetric:
        W[a.present, a.present] = 0.0
    if inner == "gaussian":
        W[np.ix_(a.present, b.present)] = bures_matrix(*a.gaussian_fits(), *b.gaussian_fits()).numpy()
        return lambda: W
    D = (squared_distances(a.x.double(), b.x.double()) if D is None else D).detach().cpu().numpy()
    pairs = sorted(((i, j) for i in a.present for j in b.present if not symmetric or i < j),
                   key=lambda p: -a.size(p[0]) * b.size(p[1]))
    solves = [_pool().submit(_exact_w2, D[slice(*a.ranges[i]), slice(*b.ranges[j])]) for i, j in pairs]

    def collect() -> np.ndarray:
        for (i, j), solve in zip(pairs, solves):
            W[i, j] = solve.result()
            if symmetric:
                W[j, i] = W[i, j]
        return W
    return collect


def ground_cost(D: torch.Tensor, W: np.ndarray, ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """(na, nb) ground cost ||x - x'||^2 / 2 + W(y, y') / 2 from squared distances D (na, nb)
    and label distances W (Ca, Cb), in one pass over (na, nb): the label term is the
    product of W's rows of ya (na, Cb) with the one-hot yb (Cb, nb), one nonzero term a
    sum, so exact."""
    W = torch.as_tensor(np.nan_to_num(W), dtype=D.dtype, device=D.device)  # NaN: absent labels, never indexed
    onehot_b = torch.nn.functional.one_hot(yb, W.shape[1]).to(D.dtype)
    return torch.addmm(D, W[ya], onehot_b.T, beta=0.5, alpha=0.5)


class OTDD:
    """Distance from a fixed labelled source dataset to labelled target batches.

    xs (ns, d), ys (ns,) int labels 0..Cs-1. Call with target features xt (nt, d) and labels
    yt (nt,); the result is a scalar tensor that carries gradients to xt.
    """

    def __init__(self, xs, ys, inner: str = "exact", eps: float = 0.1, debiased: bool = True,
                 max_iter: int = 1000, tol: float = 1e-4):
        self.xs, self.ys = by_class(torch.as_tensor(xs, dtype=torch.float64), ys)
        self.inner, self.eps, self.debiased = inner, eps, debiased
        self.max_iter, self.tol = max_iter, tol
        self.source_classes = Classes(self.xs, self.ys)
        self.W_ss = start_class_distances(self.source_classes, self.source_classes, inner)()
        self._source_self: float | None = None
        self._source_as: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def source_as(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The source features (ns, d) in `dtype` and their squared norms (ns,), kept."""
        if dtype not in self._source_as:
            xs = self.xs.to(dtype)
            self._source_as[dtype] = xs, xs.pow(2).sum(1)
        return self._source_as[dtype]

    def source_self_term(self) -> float:
        """OT(a, a) of the source with itself: a constant, computed on first use."""
        if self._source_self is None:  # the cost in the kernel's precision: the value is float64 anyway
            xs, xs_sq = self.source_as(kernel_dtype(self.tol))
            M = ground_cost(squared_distances(xs, xs, xs_sq), self.W_ss, self.ys, self.ys)
            self._source_self = sinkhorn(M, self.eps, self.tol, self.max_iter, symmetric=True).value
        return self._source_self

    def __call__(self, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        """The OTDD between the source and (xt, yt)."""
        value = self.loss(xt, yt)
        return value - 0.5 * self.source_self_term() if self.debiased else value

    def loss(self, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        """The OTDD less its constant source term OT(a, a) / 2: the same gradient, without
        an (ns, ns) problem. This is what the align stage minimises. Costs are in xt's
        dtype (float32 features train in float32), label distances in float64."""
        return self._solve(self._start(xt, yt))

    def class_losses(self, xt: torch.Tensor, yt: torch.Tensor) -> dict[int, torch.Tensor]:
        """{c: loss(xt[yt == c], yt[yt == c])} for every class c of yt (ORCA's per-class
        objective). The label distances of all classes are started first, so that the
        thread pool solves later classes' while Sinkhorn runs on earlier ones."""
        yt = torch.as_tensor(yt, dtype=torch.long, device=xt.device)
        with _one_torch_thread():
            started = {c: self._start(xt[yt == c], yt[yt == c]) for c in torch.unique(yt).tolist()}
            return {c: self._solve(problem) for c, problem in started.items()}

    def _start(self, xt: torch.Tensor, yt: torch.Tensor) -> _Started:
        xt, yt = by_class(xt, yt)
        xs, xs_sq = self.source_as(xt.dtype)
        D_st = squared_distances(xs, xt, xs_sq)
        target = Classes(xt, yt)
        problem = _Started(xt, yt, D_st, start_class_distances(self.source_classes, target, self.inner, D_st))
        if self.debiased:
            problem.D_tt = squared_distances(xt, xt)
            problem.W_tt = start_class_distances(target, target, self.inner, problem.D_tt)
        return problem

    def _solve(self, p: _Started) -> torch.Tensor:
        value = entropic_ot(ground_cost(p.D_st, p.W_st(), self.ys, p.yt), self.eps, self.max_iter, self.tol)
        if self.debiased:
            M_tt = ground_cost(p.D_tt, p.W_tt(), p.yt, p.yt)
            value = value - 0.5 * entropic_ot(M_tt, self.eps, self.max_iter, self.tol, symmetric=True)
        return value.to(p.xt.dtype)


@dataclass
class _Started:
    """One target batch's OTDD terms, with their label distances on the way."""
    xt: torch.Tensor                       # (nt, d)
    yt: torch.Tensor                       # (nt,)
    D_st: torch.Tensor                     # (ns, nt) squared distances, differentiable in xt
    W_st: Callable[[], np.ndarray]         # waits for the (Cs, Ct) label distances
    D_tt: torch.Tensor | None = None       # (nt, nt), debiased only
    W_tt: Callable[[], np.ndarray] | None = None


DISTANCES.register("otdd")(OTDD)
