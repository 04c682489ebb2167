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
COLD_START_ITER = 20  # a self-transport first tries eps at once, for at most this many iterations


class Kernel:
    """K = exp((f_i + g_j - M_ij) / eps) (n, m) for fixed potentials, dense or truncated
    to the entries above exp(-TRUNCATE) (CSR, and its transpose for K^T u).

    `previous`, a truncated kernel of the same cost: where the new potentials and eps keep
    every entry it dropped below the threshold (checked by a bound on the potentials'
    growth), the new kernel is built from its entries alone, not from the whole (n, m) cost.
    """

    def __init__(self, M: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float,
                 previous: Kernel | None = None):
        self.f, self.g, self.eps, self.shape = f, g, eps, M.shape
        if previous is not None and previous.sparse and self._within(previous):
            self.sparse = True
            self._truncate(previous.rows, previous.cols, previous.costs)
            return
        fe, ge = (f / eps).to(M.dtype), (g / eps).to(M.dtype)
        Z = torch.sub(fe[:, None], M, alpha=1 / eps).add_(ge[None, :])  # two passes over (n, m)
        n, m = Z.shape
        self.sparse = False
        if float(fe.min() + ge.min() - M.max() / eps) <= -TRUNCATE:  # else every entry is kept
            keep = Z > -TRUNCATE
            self.sparse = int(keep.sum()) < SPARSE_BELOW * n * m
        if not self.sparse:
            self.K = Z.exp_()
            return
        rows, cols = keep.nonzero(as_tuple=True)  # row-major
        self._truncate(rows, cols, M[keep])

    def _within(self, previous: Kernel) -> bool:
        """Every entry `previous` dropped, (f + g - M) / eps' <= -TRUNCATE there, stays
        below the threshold under the new (f, g, eps)."""
        growth = float((self.f - previous.f).max() + (self.g - previous.g).max())
        return growth <= TRUNCATE * (previous.eps - self.eps)

    def _truncate(self, rows: torch.Tensor, cols: torch.Tensor, costs: torch.Tensor):
        """Keep the entries (rows, cols) of cost `costs` that are above the threshold."""
        Z = (self.f[rows] + self.g[cols]).to(costs.dtype).sub_(costs).div_(self.eps)
        keep = Z > -TRUNCATE
        self.rows, self.cols, self.costs = rows[keep], cols[keep], costs[keep]
        self.vals = Z[keep].exp_()
        order = torch.argsort(self.cols, stable=True)
        n, m = self.shape
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
    converged: bool     # the last stage met the tolerance within max_iter

    @property
    def plan(self) -> torch.Tensor:
        return self.kernel.plan(self.u, self.v)


def _schedule(M: torch.Tensor, eps: float) -> list[float]:
    """From a sixteenth of the cost's range (the first kernel's entries all above e^-16:
    a cold start that converges in tens of iterations) down to eps."""
    start = max(float(M.max() - M.min()) / EPS_SCALING**2, eps)
    stages = max(0, math.ceil(math.log(start / eps, EPS_SCALING)))
    return [eps * EPS_SCALING**k for k in range(stages, 0, -1)] + [eps]


def sinkhorn(M: torch.Tensor, eps: float, tol: float = 1e-4, max_iter: int = 1000,
             symmetric: bool = False) -> Solution:
    """Solve OT_eps between uniform a (n,) and b (m,) for the cost M (n, m), no gradient.

    tol bounds the L2 error of the row marginal (total mass 1); max_iter bounds the
    iterations of each eps stage. symmetric: M is square and symmetric (a
    self-transport), f = g. Its plan is close to the identity, so the symmetric update
    usually converges from a cold start at eps itself in a few iterations; where it does
    not, the eps-scaling schedule runs as for any other cost.
    """
    n, m = M.shape
    if not torch.isfinite(M).all():
        raise FloatingPointError(f"the {n}x{m} transport cost holds NaN or inf; check the features for NaN/inf")
    dtype = kernel_dtype(tol)
    M = M.detach().to(dtype)
    a = torch.full((n,), 1.0 / n, dtype=dtype, device=M.device)
    b = torch.full((m,), 1.0 / m, dtype=dtype, device=M.device)
    # start from potentials that put the kernel's largest entry at exp(0): a cost far from
    # zero (min(M) many eps above 0) would otherwise underflow the whole first kernel
    f, g = (torch.full((k,), float(M.min()) / 2, dtype=torch.float64, device=M.device) for k in (n, m))
    solution = _scale(M, f, g, [eps], a, b, tol, COLD_START_ITER, symmetric) if symmetric else None
    if solution is None or not solution.converged:
        solution = _scale(M, f, g, _schedule(M, eps), a, b, tol, max_iter, symmetric)
    if solution is None:
        raise FloatingPointError(f"Sinkhorn broke down (non-finite scalings) at eps={eps} on a {n}x{m} cost")
    if not solution.converged:
        warnings.warn(f"Sinkhorn on a {n}x{m} cost stopped at max_iter={max_iter} with the marginal error above "
                      f"tol={tol}: the value is approximate (raise max_iter or eps)", stacklevel=2)
    return solution


def kernel_dtype(tol: float) -> torch.dtype:
    """float32 kernels, unless the tolerance asks for more than float32 can give."""
    return torch.float64 if tol < PRECISE_TOL else torch.float32


def _scale(M, f, g, schedule, a, b, tol, max_iter, symmetric) -> Solution | None:
    """Scaling iterations over the eps schedule, absorbing into (f, g) between stages.
    None when the scalings turn non-finite."""
    iterations, K = 0, None

    def absorb(f, g, u, v, eps_s):
        f = f + eps_s * torch.log(u / a).double()
        return f, (f if symmetric else g + eps_s * torch.log(v / b).double())

    for eps_s in schedule:
        K, u, v = Kernel(M, f, g, eps_s, previous=K), a, b
        converged = False
        for it in range(max_iter):
            Kv = K.mv(v)
            converged = bool(torch.linalg.vector_norm(u * Kv - a) < tol)  # row marginal of diag(u) K diag(v)
            if converged:
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
                    K, u, v = Kernel(M, f, g, eps_s, previous=K), a, b
        if not (torch.isfinite(u).all() and torch.isfinite(v).all()):
            return None
        f, g = absorb(f, g, u, v, eps_s)
    value = float(u.double() * K.mv(v).double() @ f + v.double() * K.rmv(u).double() @ g)
    return Solution(K, u, v, f, g, value, iterations, converged)


def differentiable_value(M: torch.Tensor, solution: Solution) -> torch.Tensor:
    """The solution's value as a scalar of M's dtype whose gradient with respect to M is
    the plan."""
    value = torch.tensor(solution.value, dtype=M.dtype, device=M.device)
    return value + solution.kernel.plan_dot(solution.u, solution.v, M) if M.requires_grad else value


def entropic_ot(M: torch.Tensor, eps: float, max_iter: int = 1000, tol: float = 1e-4,
                symmetric: bool = False) -> torch.Tensor:
    """OT_eps(a, b) for uniform a, b, differentiable in M (see differentiable_value)."""
    return differentiable_value(M, sinkhorn(M, eps, tol, max_iter, symmetric))
