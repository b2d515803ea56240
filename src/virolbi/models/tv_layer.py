r"""A learnable total-variation proximal layer (Yeh et al., "Total Variation Optimization Layers for
Computer Vision", CVPR 2022), in pure PyTorch with an exact backward: the TV-layer baseline.

1-D: :func:`tv1d_prox` solves :math:`\min_x \tfrac12\|x - y\|^2 + \lambda\|Dx\|_1` (:math:`D` the
forward difference) exactly: on CPU by Condat's direct algorithm (compiled, O(n) per row), elsewhere
(or without numba) by projected Newton on the dual box-constrained QP
:math:`\min_{|u_i|\le\lambda} \tfrac12 u^\top DD^\top u - u^\top Dy`, :math:`x = y - D^\top u`
(:math:`DD^\top` is tridiagonal: each Newton step is a Thomas solve on the free coordinates, batched
over rows). The solution is piecewise constant; on a constant run :math:`S` it equals
:math:`\bar y_S - \lambda(s_{\text{left}} - s_{\text{right}})/|S|` with :math:`s` the signs of the
jumps at its ends (0 at the ends of the signal), so the exact Jacobian is the run average for
:math:`y` and :math:`-(s_{\text{left}} - s_{\text{right}})/|S|` for :math:`\lambda` — the backward of
:class:`_TV1D`.

2-D (anisotropic): :func:`tv2d_prox` alternates the 1-D prox along rows and along columns with
Dykstra's correction, a few iterations (the layer's forward; its gradient is that of the computed
iterations, exact through each 1-D prox).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["tv1d_prox", "tv2d_prox", "TVLayer"]


def _tridiag_solve(lower: Tensor, diag: Tensor, upper: Tensor, rhs: Tensor) -> Tensor:
    """Thomas algorithm along the last axis, batched over the others (diagonally dominant here)."""
    m = rhs.shape[-1]
    c, d = torch.empty_like(rhs), torch.empty_like(rhs)
    c[..., 0] = upper[..., 0] / diag[..., 0]
    d[..., 0] = rhs[..., 0] / diag[..., 0]
    for i in range(1, m):
        den = diag[..., i] - lower[..., i] * c[..., i - 1]
        c[..., i] = upper[..., i] / den
        d[..., i] = (rhs[..., i] - lower[..., i] * d[..., i - 1]) / den
    x = torch.empty_like(rhs)
    x[..., m - 1] = d[..., m - 1]
    for i in range(m - 2, -1, -1):
        x[..., i] = d[..., i] - c[..., i] * x[..., i + 1]
    return x


def _ddt(u: Tensor) -> Tensor:
    """:math:`DD^\\top u` (tridiagonal: 2 on the diagonal, -1 beside it)."""
    out = 2 * u
    out[..., 1:] -= u[..., :-1]
    out[..., :-1] -= u[..., 1:]
    return out


def _dual_objective(u: Tensor, dy: Tensor) -> Tensor:
    return 0.5 * (u * _ddt(u)).sum(-1) - (u * dy).sum(-1)


def _newton_step(u: Tensor, dy: Tensor, lam: Tensor) -> Tensor:
    """One projected-Newton step with backtracking on the dual; rows move independently."""
    g = _ddt(u) - dy
    fixed = ((u <= -lam) & (g > 0)) | ((u >= lam) & (g < 0))
    free = ~fixed
    both = free[..., 1:] & free[..., :-1]
    lower = torch.zeros_like(u)
    upper = torch.zeros_like(u)
    lower[..., 1:] = torch.where(both, -1.0, 0.0)
    upper[..., :-1] = torch.where(both, -1.0, 0.0)
    step = _tridiag_solve(lower, torch.where(free, 2.0, 1.0).to(u.dtype), upper,
                          torch.where(free, -g, torch.zeros_like(g)))
    f0 = _dual_objective(u, dy)
    t = torch.ones_like(f0)
    best, done = u, torch.zeros_like(f0, dtype=torch.bool)
    for _ in range(40):  # backtracking along the projection arc, each row its own step
        cand = torch.maximum(torch.minimum(u + t[..., None] * step, lam), -lam)
        ok = (_dual_objective(cand, dy) <= f0) & ~done
        best = torch.where(ok[..., None], cand, best)
        done = done | ok
        if bool(done.all()):
            break
        t = torch.where(done, t, t / 2)
    return best


def _solve_dual(y: Tensor, lam: Tensor, max_iter: int = 200) -> Tensor:
    dy = y[..., 1:] - y[..., :-1]
    u = torch.maximum(torch.minimum(dy / 2, lam), -lam)
    for _ in range(max_iter):
        new = _newton_step(u, dy, lam)
        if torch.equal(new, u):
            break
        u = new
    return u


try:  # numba is a dependency, but keep the module importable without it
    import numba
except ImportError:  # pragma: no cover
    numba = None


def _condat(y, lam, x):  # pragma: no cover - compiled
    """Condat's direct algorithm (IEEE SPL 2013) for one row: the exact 1-D TV prox of ``y`` with
    weight ``lam`` into ``x``, in O(n) on most signals. It runs along the signal keeping the range
    [vmin, vmax] the current segment's value can take and the dual values umin/umax at its ends;
    a segment is closed (a jump) when the dual leaves [-lam, lam], and values are fixed back to the
    segment's start."""
    n = y.shape[0]
    k = k0 = kplus = kminus = 0  # k0 <= kminus, kplus <= k always: a closed segment is never empty
    umin, umax = lam, -lam
    vmin, vmax = y[0] - lam, y[0] + lam
    while True:
        if k == n - 1:  # the right end: close the last segment(s)
            if umin < 0.0:  # negative jump after kminus
                x[k0:kminus + 1] = vmin
                k = kminus = k0 = kminus + 1
                if k0 >= n:  # everything written (rounding can put the last jump at the end)
                    return
                vmin = y[k]; umin = lam; umax = vmin + umin - vmax
            elif umax > 0.0:  # positive jump after kplus
                x[k0:kplus + 1] = vmax
                k = kplus = k0 = kplus + 1
                if k0 >= n:
                    return
                vmax = y[k]; umax = -lam; umin = vmax + umax - vmin
            else:
                x[k0:k + 1] = vmin + umin / (k - k0 + 1)
                return
            continue
        umin += y[k + 1] - vmin
        if umin < -lam:  # negative jump: the segment ends at kminus
            x[k0:kminus + 1] = vmin
            k = kplus = kminus = k0 = kminus + 1
            vmin = y[k]; vmax = vmin + 2 * lam
            umin = lam; umax = -lam
            continue
        umax += y[k + 1] - vmax
        if umax > lam:  # positive jump: the segment ends at kplus
            x[k0:kplus + 1] = vmax
            k = kplus = kminus = k0 = kplus + 1
            vmax = y[k]; vmin = vmax - 2 * lam
            umin = lam; umax = -lam
            continue
        k += 1  # no jump: the segment goes on
        if umin >= lam:
            kminus = k
            vmin += (umin - lam) / (k - k0 + 1)
            umin = lam
        if umax <= -lam:
            kplus = k
            vmax += (umax + lam) / (k - k0 + 1)
            umax = -lam


def _condat_rows(y, lam, x):  # pragma: no cover - compiled
    for r in range(y.shape[0]):
        _condat(y[r], lam[r], x[r])


def _run_average_rows(x, g, tol, grad_y, grad_lam):  # pragma: no cover - compiled
    """Per row: the gradient averaged over each constant run of the prox ``x``, and the row's
    derivative with respect to λ (the compiled form of :meth:`_TV1D.backward`)."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        start, total = 0, 0.0
        for i in range(1, n + 1):
            if i < n and abs(x[r, i] - x[r, i - 1]) <= tol[r]:
                continue
            size = i - start
            s = 0.0
            for j in range(start, i):
                s += g[r, j]
            for j in range(start, i):
                grad_y[r, j] = s / size
            left = 0.0 if start == 0 else np.sign(x[r, start] - x[r, start - 1])
            right = 0.0 if i == n else np.sign(x[r, i] - x[r, i - 1])
            total += s * (-(left - right) / size)
            start = i
        grad_lam[r] = total


if numba is not None:
    _condat = numba.njit(nogil=True, cache=True)(_condat)
    _condat_rows = numba.njit(nogil=True, cache=True)(_condat_rows)
    _run_average_rows = numba.njit(nogil=True, cache=True)(_run_average_rows)


def _in_threads(fn, *arrays) -> None:
    """``fn(*arrays)`` over contiguous blocks of rows in ``torch.get_num_threads()`` Python threads
    (the compiled row functions release the GIL); every array is split along its first axis."""
    rows = arrays[0].shape[0]
    threads = max(1, min(torch.get_num_threads(), rows // 64))
    if threads == 1:
        fn(*arrays)
        return
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, rows, threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: fn(*(a[bounds[i]:bounds[i + 1]] for a in arrays)), range(threads)))


def _prox_rows(y: Tensor, lam_b: Tensor) -> Tensor:
    """The exact prox of every row: Condat's algorithm compiled (CPU), else projected Newton."""
    if numba is not None and y.device.type == "cpu":
        y2 = y.detach().double().reshape(-1, y.shape[-1]).numpy()
        out = np.empty_like(y2)
        _in_threads(_condat_rows, y2, np.ascontiguousarray(lam_b.detach().double().reshape(-1).numpy()),
                    out)
        return torch.from_numpy(out).reshape(y.shape).to(y.dtype)
    u = _solve_dual(y.detach(), lam_b.detach())
    return y.detach() - torch.cat([-u[..., :1], u[..., :-1] - u[..., 1:], u[..., -1:]], -1)  # Dᵀu


class _TV1D(torch.autograd.Function):
    """Exact 1-D TV prox with the run-average backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, y: Tensor, lam: Tensor) -> Tensor:
        x = _prox_rows(y, lam.expand(*y.shape[:-1], 1).to(y.dtype))
        ctx.save_for_backward(x, lam)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, lam = ctx.saved_tensors
        if numba is not None and grad.device.type == "cpu":
            return _backward_compiled(x, grad, lam)
        return _backward_torch(x, grad, lam)


def _backward_torch(x: Tensor, grad: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """:meth:`_TV1D.backward` in tensor operations (any device): the gradient averaged over each
    constant run of ``x``, and the derivative with respect to λ."""
    dx = x[..., 1:] - x[..., :-1]
    scale = x.abs().amax(-1, keepdim=True).clamp_min(1.0)
    jump = dx.abs() > 1e-9 * scale  # constant runs are separated by jumps
    sign = torch.where(jump, torch.sign(dx), torch.zeros_like(dx))
    run = torch.cat([torch.zeros_like(jump[..., :1], dtype=torch.long),
                     jump.long().cumsum(-1)], -1)  # run index of each sample
    rows = grad.reshape(-1, grad.shape[-1])
    run2 = run.reshape(rows.shape)
    n_runs = int(run2.max()) + 1
    flat = run2 + torch.arange(rows.shape[0], device=grad.device)[:, None] * n_runs
    size = torch.zeros(rows.shape[0] * n_runs, dtype=grad.dtype, device=grad.device)
    size.index_add_(0, flat.flatten(), torch.ones_like(rows).flatten())
    gsum = torch.zeros_like(size).index_add_(0, flat.flatten(), rows.flatten())
    grad_y = (gsum / size.clamp_min(1))[flat].reshape(grad.shape)
    # dx/dλ on a run: -(s_left - s_right)/|S|, s the sign of the jump at each end (0 at ends)
    zero = torch.zeros_like(sign[..., :1])
    into = torch.cat([zero, sign], -1) * _is_run_start(run)   # jump into the run, at its start
    out_of = torch.cat([sign, zero], -1) * _is_run_end(run)   # jump out of it, at its end
    s_left = torch.zeros_like(size).index_add_(0, flat.flatten(), into.reshape(-1))
    s_right = torch.zeros_like(size).index_add_(0, flat.flatten(), out_of.reshape(-1))
    dxdlam = (-(s_left - s_right) / size.clamp_min(1))[flat].reshape(grad.shape)
    grad_lam = (grad * dxdlam).sum(-1, keepdim=True)
    return grad_y, grad_lam.sum_to_size(lam.shape)


def _backward_compiled(x: Tensor, grad: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """:meth:`_TV1D.backward` by the compiled row scan (same runs, same formulas)."""
    x2 = x.detach().double().reshape(-1, x.shape[-1]).numpy()
    g2 = grad.detach().double().reshape(-1, grad.shape[-1]).numpy()
    tol = 1e-9 * np.maximum(np.abs(x2).max(axis=1), 1.0)
    grad_y, grad_lam = np.empty_like(g2), np.empty(g2.shape[0])
    _in_threads(_run_average_rows, x2, g2, tol, grad_y, grad_lam)
    gy = torch.from_numpy(grad_y).reshape(grad.shape).to(grad.dtype)
    gl = torch.from_numpy(grad_lam).reshape(*grad.shape[:-1], 1).to(grad.dtype)
    return gy, gl.sum_to_size(lam.shape)


def _is_run_start(run: Tensor) -> Tensor:
    return torch.cat([torch.ones_like(run[..., :1], dtype=torch.bool),
                      run[..., 1:] != run[..., :-1]], -1)


def _is_run_end(run: Tensor) -> Tensor:
    return torch.cat([run[..., 1:] != run[..., :-1],
                      torch.ones_like(run[..., :1], dtype=torch.bool)], -1)


def tv1d_prox(y: Tensor, lam: Tensor | float) -> Tensor:
    r"""The exact 1-D TV prox along the last axis of ``y``, with weight ``lam`` (> 0; a tensor
    broadcastable to ``y.shape[:-1] + (1,)``, differentiable)."""
    lam = torch.as_tensor(lam, dtype=y.dtype, device=y.device)
    if lam.dim() == 0:
        lam = lam.reshape(1)
    if y.shape[-1] < 2:
        return y
    return _TV1D.apply(y, lam)


def tv2d_prox(x: Tensor, lam: Tensor, iterations: int = 4) -> Tensor:
    r"""Anisotropic 2-D TV prox of images ``(..., H, W)`` with weight ``lam`` (broadcastable to
    ``(..., 1, 1)``, e.g. ``(1, C, 1, 1)`` per channel) by Dykstra's alternation of the exact 1-D
    proxes along rows and columns (``iterations`` rounds; it converges to the 2-D prox)."""
    lam_row = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    p = torch.zeros_like(x)
    q = torch.zeros_like(x)
    z = x
    for _ in range(iterations):
        a = tv1d_prox(z + p, lam_row)  # along rows (last axis)
        p = z + p - a
        b = tv1d_prox((a + q).transpose(-1, -2), lam_row).transpose(-1, -2)  # along columns
        q = a + q - b
        z = b
    return z


class TVLayer(nn.Module):
    """The TV layer: per-channel weight :math:`\\lambda_c = \\mathrm{softplus}(\\theta_c)`, applied to
    ``(B, C, H, W)`` feature maps by :func:`tv2d_prox`."""

    def __init__(self, channels: int, init: float = 0.1, iterations: int = 4) -> None:
        super().__init__()
        theta = torch.log(torch.expm1(torch.tensor(float(init))))
        self.theta = nn.Parameter(theta.repeat(channels))
        self.iterations = iterations

    def forward(self, x: Tensor) -> Tensor:
        lam = nn.functional.softplus(self.theta).to(x.dtype).view(1, -1, 1, 1)
        return tv2d_prox(x, lam, self.iterations)
