r"""A fused CPU kernel (numba) for the edge half of the ``"imex"`` solver with grouped channels.

One pass over the edges does, per edge ``e`` and image, what :mod:`virolbi.smoother.lbi` otherwise
spells as a dozen tensor operations:

.. math::
    w_e = z_e + \tfrac{\alpha}{\nu}(Du)_e,\qquad
    z_e \leftarrow w_e\,s(\|w_e\|),\qquad
    \gamma_e = \kappa\,(1 - 1/\|z_e\|)_+\,z_e,

with :math:`s(m) = (m + c)/((1 + c)m)` for :math:`m > 1` and 1 otherwise (:math:`c = \alpha\kappa/\nu`,
the closed-form implicit step of :func:`virolbi.smoother.prox.implicit_update`), accumulating
:math:`D^\top\gamma` and the number of active edges. The result is the same arithmetic as the
tensor path up to floating-point rounding (a test compares them); it only replaces memory traffic.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

try:  # numba is a dependency, but keep the package importable without it
    import numba
except ImportError:  # pragma: no cover
    numba = None

# numba's OpenMP layer spins its threads after each call and starves torch's own OpenMP pool
# (conv layers ~30x slower afterwards on 2 cores); the workqueue layer does not spin. It must be
# chosen before numba starts any thread pool, hence at import (a user's NUMBA_THREADING_LAYER wins).
if numba is not None and "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

__all__ = ["available", "imex_edge_step"]


def available() -> bool:
    """Whether the fused kernel can run (numba importable)."""
    return numba is not None


def _kernel(u, zh, zv, dtg, flat_h, flat_v, a, c, kappa, counts, nonflat):  # pragma: no cover
    n, nc, h, w = u.shape
    for b in numba.prange(n):
        cnt = 0
        cnf = 0
        for ch in range(nc):
            for i in range(h):
                for j in range(w):
                    dtg[b, ch, i, j] = 0.0
        for i in range(h):
            for j in range(w - 1):
                m2 = 0.0
                for ch in range(nc):
                    val = zh[b, ch, i, j] + a * (u[b, ch, i, j + 1] - u[b, ch, i, j])
                    zh[b, ch, i, j] = val
                    m2 += val * val
                m = math.sqrt(m2)
                if m > 1.0:
                    s = (m + c) / ((1.0 + c) * m)
                    g = kappa * (1.0 - (1.0 + c) / (m + c))
                    cnt += 1
                    if not flat_h[b, i, j]:
                        cnf += 1
                    for ch in range(nc):
                        znew = zh[b, ch, i, j] * s
                        zh[b, ch, i, j] = znew
                        gam = g * znew
                        dtg[b, ch, i, j + 1] += gam
                        dtg[b, ch, i, j] -= gam
        for i in range(h - 1):
            for j in range(w):
                m2 = 0.0
                for ch in range(nc):
                    val = zv[b, ch, i, j] + a * (u[b, ch, i + 1, j] - u[b, ch, i, j])
                    zv[b, ch, i, j] = val
                    m2 += val * val
                m = math.sqrt(m2)
                if m > 1.0:
                    s = (m + c) / ((1.0 + c) * m)
                    g = kappa * (1.0 - (1.0 + c) / (m + c))
                    cnt += 1
                    if not flat_v[b, i, j]:
                        cnf += 1
                    for ch in range(nc):
                        znew = zv[b, ch, i, j] * s
                        zv[b, ch, i, j] = znew
                        gam = g * znew
                        dtg[b, ch, i + 1, j] += gam
                        dtg[b, ch, i, j] -= gam
        counts[b] = cnt
        nonflat[b] = cnf


_compiled = None


def imex_edge_step(u: torch.Tensor, zh: torch.Tensor, zv: torch.Tensor, dtg: torch.Tensor,
                   flat_h: torch.Tensor, flat_v: torch.Tensor, a: float, c: float,
                   kappa: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One fused IMEX edge step on contiguous CPU tensors; updates ``zh``, ``zv`` and ``dtg``
    (:math:`D^\top\gamma`) in place and returns (active edges, active edges where ``x`` is not flat)
    per image. ``a = α/ν``; ``flat_h``/``flat_v`` are ``bool`` ``(n, H, W-1)``/``(n, H-1, W)``."""
    global _compiled
    if _compiled is None:
        _compiled = numba.njit(parallel=True, fastmath=False, cache=True)(_kernel)
    n = u.shape[0]
    counts = np.zeros(n, dtype=np.int64)
    nonflat = np.zeros(n, dtype=np.int64)
    _compiled(u.numpy(), zh.numpy(), zv.numpy(), dtg.numpy(), flat_h.numpy(), flat_v.numpy(),
              float(a), float(c), float(kappa), counts, nonflat)
    return torch.from_numpy(counts), torch.from_numpy(nonflat)
