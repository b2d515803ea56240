r"""Eq. 5 with the projection of Eq. 6 at *every* iteration: the setting of the paper's Table 7.

The paper times the projection :math:`\tilde u_k` (Eq. 6, Prop. 1) computed at each of 15 000 Eq. 5
iterations on one 84×84 grayscale image, for three ways of computing it: the graph algorithm of
Prop. 1, LSQR and an SVD pseudo-inverse (4.87 s, 171.79 s and 373.24 s in the paper). This module
reproduces that setting; ``benchmarks/bench_smoother.py`` (section b) reports the timings.

The iteration is the paper's Eq. 5 on a gray image (soft-thresholding at 1 per edge), from
:math:`u_0 = z_0 = \gamma_0 = 0`, with :math:`\alpha = 1/(\kappa\|H\|_2)`:

.. math::
    u_{k+1} = u_k - \kappa\alpha\,[(u_k - x) + D^\top(Du_k - \gamma_k)/\nu],\quad
    z_{k+1} = z_k + \alpha\,(Du_k - \gamma_k)/\nu,\quad \gamma_{k+1} = \kappa\,\mathrm{prox}(z_{k+1}),

and after iteration ``k`` the projection :math:`\tilde u_k = \arg\min\{\|u'-u_k\|: D_{S_k^c}u' = 0\}` of
:math:`u_k` onto images constant on the components of the inactive edges :math:`S_k^c` of
:math:`\gamma_k`.

With ``projection="graph"`` everything runs in one compiled (numba) loop: the connected components
are recomputed (union–find) only at iterations where the support changed, and between changes the
projection is the per-component mean of :math:`u_k` with fixed labels (one scatter-add and one
gather, O(p)). ``"lsqr"`` and ``"pinv"`` call :func:`~virolbi.smoother.projection.project_lsqr` and
:func:`~virolbi.smoother.projection.project_pinv` at every iteration.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from virolbi.checks import check_positive
from virolbi.errors import InputError
from virolbi.smoother.components import relabel
from virolbi.smoother.operators import lbi_step_size
from virolbi.smoother.projection import PROJECTIONS, project_lsqr, project_pinv

try:  # numba is a dependency, but keep the package importable without it
    import numba
except ImportError:  # pragma: no cover
    numba = None

__all__ = ["projection_trace"]

#: Iterations per compiled call between two checks of the time limit (graph projection).
CHUNK = 500


def _run(x, u, zh, zv, act_h, act_v, prev_h, prev_v, rh, rv, labels, parent, sums, counts, runs,
         ut, n_iter, a_u, a_z, kappa, nu, graph, state):  # pragma: no cover - compiled
    """``n_iter`` Eq. 5 iterations in place; with ``graph``, ũ of every iterate into ``ut``.

    Eq. 5 is also written in :class:`virolbi.smoother.solvers.ExplicitSolver` (batched torch
    tensors, the reference path). It is spelled again here, on purpose, as one compiled loop over
    one gray image, because Table 7 times the projection at *every* iteration and a per-iteration
    tensor call would dominate that timing; ``tests/test_trace.py`` checks this loop against a NumPy
    Eq. 5 and ``tests/test_smoother_lbi.py`` the torch one.
    ``rh``/``rv`` are zero-padded ``(H, W+1)``/``(H+1, W)`` buffers for ``r = Du - γ``;
    ``prev_h``/``prev_v`` the support at the last labelling. ``state`` = [components, support
    changes, active edges, labellings, runs of equal labels in raster order]."""
    h, w = x.shape
    for _ in range(n_iter):
        changed = False
        n_act = 0
        # Edge pass: r = Du - γ (γ = κ·soft(z, 1) from z before this update), z += α r / ν, new
        # support. Branch-free so that the loops vectorise: soft(z, 1) = z - clip(z, -1, 1).
        # Horizontal and vertical edges are two loops on purpose (same body, other neighbour):
        # one loop per direction keeps unit-stride, vectorisable accesses.
        for i in range(h):
            for j in range(w - 1):
                z = zh[i, j]
                r = (u[i, j + 1] - u[i, j]) - kappa * (z - min(max(z, -1.0), 1.0))
                rh[i, j + 1] = r
                z = z + a_z * r
                zh[i, j] = z
                act = abs(z) > 1.0
                n_act += act
                changed |= act != act_h[i, j]
                act_h[i, j] = act
        for i in range(h - 1):
            for j in range(w):
                z = zv[i, j]
                r = (u[i + 1, j] - u[i, j]) - kappa * (z - min(max(z, -1.0), 1.0))
                rv[i + 1, j] = r
                z = z + a_z * r
                zv[i, j] = z
                act = abs(z) > 1.0
                n_act += act
                changed |= act != act_v[i, j]
                act_v[i, j] = act
        # Pixel pass: u -= κα [(u - x) + Dᵀr / ν]; the padding makes Dᵀr branch-free.
        for i in range(h):
            for j in range(w):
                dtr = rh[i, j] - rh[i, j + 1] + rv[i, j] - rv[i + 1, j]
                u[i, j] = u[i, j] - a_u * ((u[i, j] - x[i, j]) + dtr / nu)
        state[2] = n_act
        if changed:
            state[1] += 1
        if not graph:
            continue
        if state[0] == 0 or (changed and not _same_partition_c(act_h, act_v, prev_h, prev_v)):
            state[0], state[4] = relabel(act_h, act_v, labels, parent, counts, runs)
            state[3] += 1
        if changed or state[3] == 1:
            prev_h[...] = act_h
            prev_v[...] = act_v
        _average_c(u, labels, sums, counts, runs, state[0], state[4], ut)


def _same_partition(act_h, act_v, prev_h, prev_v):  # pragma: no cover - compiled
    """Sufficient test that the components did not change since ``prev``: no edge left the
    support, and every edge that entered it still has its endpoints joined by the three other
    (inactive) edges of one of its two unit squares. Otherwise a full labelling is needed."""
    h, w = act_h.shape[0], act_v.shape[1]
    for i in range(h):
        for j in range(w - 1):
            if act_h[i, j] != prev_h[i, j]:
                if not act_h[i, j]:
                    return False
                up = i > 0 and not (act_v[i - 1, j] or act_h[i - 1, j] or act_v[i - 1, j + 1])
                down = i < h - 1 and not (act_v[i, j] or act_h[i + 1, j] or act_v[i, j + 1])
                if not (up or down):
                    return False
    for i in range(h - 1):
        for j in range(w):
            if act_v[i, j] != prev_v[i, j]:
                if not act_v[i, j]:
                    return False
                left = j > 0 and not (act_h[i, j - 1] or act_v[i, j - 1] or act_h[i + 1, j - 1])
                right = j < w - 1 and not (act_h[i, j] or act_v[i, j + 1] or act_h[i + 1, j])
                if not (left or right):
                    return False
    return True


def _average(u, labels, sums, counts, runs, nc, nr, ut):  # pragma: no cover - compiled
    """ũ = per-component mean of ``u`` with fixed labels, the same arithmetic as
    ``average_over_components`` (sequential sums in raster order, then sums / counts, then a
    gather), walking runs of equal labels so that each run's sum stays in a register."""
    uf = u.reshape(-1)
    lf = labels.reshape(-1)
    out = ut.reshape(-1)
    for c in range(nc):
        sums[c] = 0.0
    for r in range(nr):
        lab = lf[runs[r]]
        acc = sums[lab]
        for p in range(runs[r], runs[r + 1]):
            acc += uf[p]
        sums[lab] = acc
    for c in range(nc):
        sums[c] = sums[c] / counts[c]
    for r in range(nr):
        m = sums[lf[runs[r]]]
        for p in range(runs[r], runs[r + 1]):
            out[p] = m


# Compiled lazily on first call (numba.njit only wraps here).
_average_c = numba.njit(cache=True)(_average) if numba is not None else None
_same_partition_c = numba.njit(cache=True)(_same_partition) if numba is not None else None
_run_c = numba.njit(cache=True)(_run) if numba is not None else None


def _compiled():
    if _run_c is None:  # pragma: no cover
        raise InputError("projection_trace needs numba (pip install numba)")
    return _run_c


def projection_trace(x, iterations: int = 15000, projection: str = "graph", *,
                     time_limit: float | None = None, kappa: float = 5.0, nu: float = 1.0,
                     record=()) -> dict:
    r"""Run Eq. 5 on one gray image and compute ũ (Eq. 6) at every iteration, timed (Table 7).

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        One gray image ``(H, W)`` in [0, 1], ``H, W >= 2``; computed in float64.
    iterations : int
        Number of Eq. 5 iterations (default 15 000, the paper's Table 7).
    projection : {"graph", "lsqr", "pinv"}
        How ũ is computed at every iteration: Prop. 1 (components + means, labels recomputed only
        when the support changes), LSQR, or the SVD pseudo-inverse.
    time_limit : float, optional
        Stop after the iteration during which this many seconds have passed (checked every
        iteration for "lsqr"/"pinv", every :data:`CHUNK` iterations for "graph"); the result then
        reports the iterations done and a linear extrapolation to ``iterations``.
    kappa, nu : float
        κ and ν of Eq. 2/5 (defaults 5 and 1); the step is :math:`\alpha = 1/(\kappa\|H\|_2)`.
    record : sequence of int
        Iterations ``k`` (1-based) at which to keep ``u_k``, its support and ũ_k.

    Returns
    -------
    dict
        ``projection``, ``shape``, ``iterations`` (requested), ``iterations_done``, ``seconds``
        (wall time of the iterations done, compilation excluded), ``seconds_per_iteration``,
        ``extrapolated_seconds`` (``seconds`` scaled linearly to ``iterations``; equal to
        ``seconds`` when complete), ``extrapolated`` (bool), ``support_changes`` (iterations whose
        support differed from the previous one), ``labellings`` (graph: connected-component
        computations; a change that provably keeps the partition is skipped),
        ``sparsity`` (final fraction of active edges),
        ``step``, and ``records``: ``{k: {"u", "active_h", "active_v", "u_tilde"}}`` (NumPy).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((8, 8)); x[:, 4:] = 1.0
    >>> r = projection_trace(x, iterations=200, record=(200,))
    >>> r["iterations_done"], r["support_changes"] > 0
    (200, True)
    >>> np.unique(np.round(r["records"][200]["u_tilde"], 4))   # two flat halves
    array([0.0047, 0.9953])
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise InputError(f"x must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim != 2 or min(x.shape) < 2:
        raise InputError(f"x must be one gray image (H, W) with H, W >= 2, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise InputError("x must be finite with values in [0, 1]")
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
        raise InputError(f"iterations must be a positive integer, got {iterations!r}")
    iterations = int(iterations)
    if projection not in PROJECTIONS:
        raise InputError(f"unknown projection {projection!r}; expected one of {', '.join(PROJECTIONS)}")
    if time_limit is not None:
        time_limit = check_positive(time_limit, "time_limit")
    kappa = check_positive(kappa, "kappa")
    nu = check_positive(nu, "nu")
    rec = sorted({int(k) for k in record})
    if rec and (rec[0] < 1 or rec[-1] > iterations):
        raise InputError(f"record iterations must lie in 1..{iterations}, got {tuple(record)}")

    run = _compiled()
    h, w = x.shape
    alpha = lbi_step_size(h, w, kappa, nu)
    graph = projection == "graph"
    # Compile (or load from numba's cache) outside the clock, on a throw-away 2x2 problem.
    run(*_buffers(np.zeros((2, 2))), 1, 0.1, 0.1, 1.0, 1.0, True, np.zeros(5, np.int64))
    buf = _buffers(x)
    u, act_h, act_v, ut = buf[1], buf[4], buf[5], buf[15]
    state = np.zeros(5, dtype=np.int64)  # components, changes, active edges, labellings, runs
    fn = project_lsqr if projection == "lsqr" else project_pinv

    records: dict[int, dict] = {}
    done = 0
    start = time.perf_counter()
    while done < iterations:
        if graph:
            stop = min(iterations, done + CHUNK)
            nxt = [k for k in rec if k > done]
            if nxt:
                stop = min(stop, nxt[0])
            run(*buf, stop - done, kappa * alpha, alpha / nu, kappa, nu, True, state)
            done = stop
        else:
            run(*buf, 1, kappa * alpha, alpha / nu, kappa, nu, False, state)
            done += 1
            ut = fn(u, act_h, act_v)
        if done in rec:
            records[done] = {"u": u.copy(), "active_h": act_h.copy(), "active_v": act_v.copy(),
                             "u_tilde": ut.copy()}
        if time_limit is not None and time.perf_counter() - start >= time_limit:
            break
    seconds = time.perf_counter() - start
    n_edges = h * (w - 1) + (h - 1) * w
    return {"projection": projection, "shape": [h, w], "iterations": iterations,
            "iterations_done": done, "seconds": seconds,
            "seconds_per_iteration": seconds / done,
            "extrapolated_seconds": seconds * iterations / done,
            "extrapolated": done < iterations, "support_changes": int(state[1]),
            "labellings": int(state[3]), "sparsity": int(state[2]) / n_edges, "step": alpha,
            "records": records}


def _buffers(x: np.ndarray) -> tuple:
    """The state and scratch arrays of :func:`_run` for an image ``x`` (in its argument order)."""
    h, w = x.shape
    return (x, np.zeros_like(x), np.zeros((h, w - 1)), np.zeros((h - 1, w)),
            np.zeros((h, w - 1), np.bool_), np.zeros((h - 1, w), np.bool_),
            np.zeros((h, w - 1), np.bool_), np.zeros((h - 1, w), np.bool_),
            np.zeros((h, w + 1)), np.zeros((h + 1, w)), np.zeros((h, w), np.int64),
            np.zeros(h * w, np.int64), np.zeros(h * w), np.zeros(h * w, np.int64),
            np.zeros(h * w + 1, np.int64), np.zeros_like(x))
