r"""A straightforward per-image NumPy implementation of the paper's Eq. 5 + Eq. 6 (the reference).

Written independently of :mod:`virolbi.smoother` (same equations, no shared code): for one image
``x`` ``(C, H, W)`` in [0, 1], from :math:`u_0 = z_0 = \gamma_0 = 0`,

.. math::
    u \leftarrow u - \kappa\alpha[(u - x) + D^\top(Du - \gamma)/\nu],\quad
    z \leftarrow z + \alpha(Du - \gamma)/\nu,\quad \gamma = \kappa\,(1 - 1/\|z_e\|)_+ z_e

(group soft-thresholding per edge over the channels, Eq. 8), :math:`\alpha = 1/(\kappa\|H\|_2)` with
the closed-form Hessian norm, until the fraction of active edges reaches the target; then ũ is ``u``
averaged over the connected components of the inactive edges (Prop. 1), found with
:func:`scipy.sparse.csgraph.connected_components`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph


def hessian_norm(h: int, w: int, nu: float) -> float:
    """‖H‖₂ of L(u, γ) in (u, γ): the largest root of λ² − Tλ + 1/ν with T = 1 + (1 + σ²)/ν at the
    largest eigenvalue σ² of the Neumann Laplacian of the grid."""
    s2 = 4 * math.sin(math.pi * (h - 1) / (2 * h)) ** 2 + 4 * math.sin(math.pi * (w - 1) / (2 * w)) ** 2
    t = 1 + (1 + s2) / nu
    return (t + math.sqrt(t * t - 4 / nu)) / 2


def components(inactive_h: np.ndarray, inactive_v: np.ndarray) -> np.ndarray:
    """Labels ``(H, W)`` of the connected components of the graph of inactive edges."""
    h, w = inactive_h.shape[0], inactive_v.shape[1]
    node = np.arange(h * w).reshape(h, w)
    rows = np.concatenate([node[:, :-1][inactive_h], node[:-1, :][inactive_v]])
    cols = np.concatenate([node[:, 1:][inactive_h], node[1:, :][inactive_v]])
    graph = scipy.sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(h * w, h * w))
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[1].reshape(h, w)


def smooth_eq5(x: np.ndarray, sparsity: float = 0.6, *, kappa: float = 5.0, nu: float = 1.0,
               max_iter: int = 200_000) -> tuple[np.ndarray, dict]:
    """ũ of one image ``(C, H, W)`` (float64) at the first iteration whose sparsity ≥ ``sparsity``.

    Stops early when every edge along which ``x`` changes is active (higher levels unreachable).
    Returns ``(u_tilde, info)`` with the iteration count, the sparsity reached and the support.
    """
    x = np.asarray(x, dtype=np.float64)
    c, h, w = x.shape
    alpha = 1.0 / (kappa * hessian_norm(h, w, nu))
    n_edges = h * (w - 1) + (h - 1) * w
    nonflat = (np.abs(np.diff(x, axis=2)).sum(0) > 0).sum() + (np.abs(np.diff(x, axis=1)).sum(0) > 0).sum()
    u = np.zeros_like(x)
    zh, zv = np.zeros((c, h, w - 1)), np.zeros((c, h - 1, w))
    gh, gv = np.zeros_like(zh), np.zeros_like(zv)
    k = 0
    while True:
        mh = np.sqrt((zh ** 2).sum(0))
        mv = np.sqrt((zv ** 2).sum(0))
        act_h, act_v = mh > 1.0, mv > 1.0
        n_act = int(act_h.sum() + act_v.sum())
        if n_act / n_edges >= sparsity or n_act >= nonflat or k >= max_iter:
            break
        rh = np.diff(u, axis=2) - gh
        rv = np.diff(u, axis=1) - gv
        dtr = np.zeros_like(u)
        dtr[:, :, 1:] += rh
        dtr[:, :, :-1] -= rh
        dtr[:, 1:, :] += rv
        dtr[:, :-1, :] -= rv
        u = u - kappa * alpha * ((u - x) + dtr / nu)
        zh = zh + alpha / nu * rh
        zv = zv + alpha / nu * rv
        mh = np.sqrt((zh ** 2).sum(0))
        mv = np.sqrt((zv ** 2).sum(0))
        gh = kappa * zh * np.maximum(1.0 - 1.0 / np.maximum(mh, 1e-300), 0.0)
        gv = kappa * zv * np.maximum(1.0 - 1.0 / np.maximum(mv, 1e-300), 0.0)
        k += 1
    labels = components(~act_h, ~act_v).ravel()
    counts = np.bincount(labels)
    out = np.stack([(np.bincount(labels, weights=ch.ravel()) / counts)[labels].reshape(h, w)
                    for ch in u])
    return out, {"iterations": k, "sparsity": n_act / n_edges, "active_h": act_h, "active_v": act_v}
