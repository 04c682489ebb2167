"""Entropic optimal transport between uniform measures, fast on a CPU.

    OT_eps(a, b) = min_P <P, M> + eps KL(P | a b^T)

Sinkhorn's scaling iterations on a stabilised, truncated Gibbs kernel (Schmitzer 2019):
the dual potentials f (n,), g (m,) are kept in float64 and absorbed into the kernel

    K = exp((f_i + g_j - M_ij) / eps_s)          (n, m), float32

once per eps stage (eps_s shrinks by EPS_SCALING a stage down to eps, warm-started), so a
stage costs one exp pass over the matrix and each iteration two matrix-vector products,
where a log-domain iteration costs two exp passes. At small eps almost every entry of K
is below exp(-TRUNCATE) (the plan is nearly a matching): those are dropped and the
products run on a sparse matrix. The plan is P = diag(u) K diag(v); the row-marginal error
comes free with every iteration and stops a stage as soon as it is below `tol`. The
self-transport OT_eps(a, a) uses the symmetric update u <- sqrt(u a / Ku) (Knopp &
Sinkhorn's averaging, as in Feydy et al. 2019), which converges in a few steps.

The value is primal: for a plan of this Gibbs form, <P, M> + eps KL(P | a b^T) equals
<P 1, f> + <P^T 1, g>, evaluated in float64. Its gradient with respect to M is the plan
(envelope theorem); :func:`entropic_ot` returns it as a differentiable scalar.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

EPS_SCALING = 4.0     # eps shrinks by this factor a stage
ABSORB_LOG = 30.0     # fold the scalings into the potentials when |log(u / a)| grows past this
TRUNCATE = 2 * ABSORB_LOG  # kernel entries below exp(-TRUNCATE) stay negligible until then
SPARSE_BELOW = 0.2    # truncate to a sparse kernel when fewer entries than this fraction remain
PRECISE_TOL = 1e-6    # below this tolerance the kernel is float64 (float32 cannot meet it)
CHECK_EVERY = 10      # iterations between checks of the scalings' growth


class Kernel:
    """K = exp((f_i + g_j - M_ij) / eps) (n, m) for fixed potentials, dense or truncated
    to the entries above exp(-TRUNCATE) (CSR, and its transpose for K^T u)."""

    def __init__(self, M: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float):
        Z = (f.to(M.dtype)[:, None] + g.to(M.dtype)[None, :]).sub_(M).div_(eps)
        keep = Z > -TRUNCATE
        n, m = Z.shape
        self.sparse = int(keep.sum()) < SPARSE_BELOW * n * m
        if not self.sparse:
            self.K = Z.exp_()
            return
        self.rows, self.cols = keep.nonzero(as_tuple=True)  # row-major, as Z[keep]
        self.vals = Z[keep].exp_()
        order = torch.argsort(self.cols, stable=True)
        self.K = _csr(self.rows, self.cols, self.vals, (n, m))
        self.KT = _csr(self.cols[order], self.rows[order], self.vals[order], (m, n))

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """K v (n,)."""
        return self.K @ v

    def rmv(self, u: torch.Tensor) -> torch.Tensor:
        """K^T u (m,)."""
        return self.KT @ u if self.sparse else self.K.T @ u

    def plan_dot(self, u: torch.Tensor, v: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """sum_ij u_i K_ij v_j (M_ij - M_ij.detach()): zero, with the plan as gradient."""
        if self.sparse:
            cost = M[self.rows, self.cols]
            weights = (u[self.rows] * self.vals * v[self.cols]).to(M.dtype)
        else:
            cost, weights = M, (u[:, None] * self.K * v[None, :]).to(M.dtype)
        return (weights * (cost - cost.detach())).sum()

    def plan(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The dense plan diag(u) K diag(v) (n, m)."""
        K = self.K.to_dense() if self.sparse else self.K
        return u[:, None] * K * v[None, :]


def _csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR matrix from entries sorted by row."""
    pointers = torch.cat([rows.new_zeros(1), torch.bincount(rows, minlength=shape[0]).cumsum(0)])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matrix-vector products are all we use
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(pointers, cols, vals, shape, check_invariants=False)


@dataclass
class Solution:
    kernel: Kernel      # the last stage's kernel; the plan is diag(u) K diag(v)
    u: torch.Tensor
    v: torch.Tensor
    f: torch.Tensor     # (n,) float64 dual potential, cost units (absorbed u)
    g: torch.Tensor     # (m,) float64
    value: float        # OT_eps(a, b)
    iterations: int     # scaling iterations over all stages

    @property
    def plan(self) -> torch.Tensor:
        return self.kernel.plan(self.u, self.v)


def _schedule(M: torch.Tensor, eps: float) -> list[float]:
    """From the cost's range (where the plan is nearly the product a b^T) down to eps."""
    start = max(float(M.max() - M.min()), eps)
    stages = max(0, math.ceil(math.log(start / eps, EPS_SCALING)))
    return [eps * EPS_SCALING**k for k in range(stages, 0, -1)] + [eps]


def sinkhorn(M: torch.Tensor, eps: float, tol: float = 1e-4, max_iter: int = 1000,
             symmetric: bool = False) -> Solution:
    """Solve OT_eps between uniform a (n,) and b (m,) for the cost M (n, m), no gradient.

    tol bounds the L2 error of the row marginal (total mass 1); max_iter bounds the
    iterations of each eps stage. symmetric: M is square and symmetric (a
    self-transport), f = g.
    """
    n, m = M.shape
    if not torch.isfinite(M).all():
        raise FloatingPointError(f"the {n}x{m} transport cost holds NaN or inf; check the features for NaN/inf")
    dtype = kernel_dtype(tol)
    M = M.detach().to(dtype)
    a = torch.full((n,), 1.0 / n, dtype=dtype, device=M.device)
    b = torch.full((m,), 1.0 / m, dtype=dtype, device=M.device)
    f, g = (torch.zeros(k, dtype=torch.float64, device=M.device) for k in (n, m))
    solution = _scale(M, f, g, _schedule(M, eps), a, b, tol, max_iter, symmetric)
    if solution is None:
        raise FloatingPointError(f"Sinkhorn broke down (non-finite scalings) at eps={eps} on a {n}x{m} cost")
    return solution


def kernel_dtype(tol: float) -> torch.dtype:
    """float32 kernels, unless the tolerance asks for more than float32 can give."""
    return torch.float64 if tol < PRECISE_TOL else torch.float32


def _scale(M, f, g, schedule, a, b, tol, max_iter, symmetric) -> Solution | None:
    """Scaling iterations over the eps schedule, absorbing into (f, g) between stages.
    None when the scalings turn non-finite."""
    iterations = 0

    def absorb(f, g, u, v, eps_s):
        f = f + eps_s * torch.log(u / a).double()
        return f, (f if symmetric else g + eps_s * torch.log(v / b).double())

    for eps_s in schedule:
        K, u, v = Kernel(M, f, g, eps_s), a, b
        for it in range(max_iter):
            Kv = K.mv(v)
            if torch.linalg.vector_norm(u * Kv - a) < tol:  # row marginal of diag(u) K diag(v)
                break
            iterations += 1
            u = torch.sqrt(u * a / Kv) if symmetric else a / Kv
            v = u if symmetric else b / K.rmv(u)
            if it % CHECK_EVERY == 0:
                grown = max(float(torch.log(u / a).abs().max()), float(torch.log(v / b).abs().max()))
                if not math.isfinite(grown):
                    return None
                if grown > ABSORB_LOG:
                    f, g = absorb(f, g, u, v, eps_s)
                    K, u, v = Kernel(M, f, g, eps_s), a, b
        if not (torch.isfinite(u).all() and torch.isfinite(v).all()):
            return None
        f, g = absorb(f, g, u, v, eps_s)
    value = float(u.double() * K.mv(v).double() @ f + v.double() * K.rmv(u).double() @ g)
    return Solution(K, u, v, f, g, value, iterations)


def differentiable_value(M: torch.Tensor, solution: Solution) -> torch.Tensor:
    """The solution's value as a scalar of M's dtype whose gradient with respect to M is
    the plan."""
    value = torch.tensor(solution.value, dtype=M.dtype, device=M.device)
    return value + solution.kernel.plan_dot(solution.u, solution.v, M) if M.requires_grad else value


def entropic_ot(M: torch.Tensor, eps: float, max_iter: int = 1000, tol: float = 1e-4,
                symmetric: bool = False) -> torch.Tensor:
    """OT_eps(a, b) for uniform a, b, differentiable in M (see differentiable_value)."""
    return differentiable_value(M, sinkhorn(M, eps, tol, max_iter, symmetric))
