"""Connected components of a pixel grid's inactive edges by union-find, compiled (numba): the
graph algorithm of Prop. 1 (paper §3.1, Eq. 6). One home for both users: the batched projection
(:func:`virolbi.smoother.projection.component_labels`) and the Table 7 trace
(:mod:`virolbi.smoother.trace`), which relabels only when the support changed."""

from __future__ import annotations

import numpy as np

try:  # numba is a dependency, but keep the package importable without it
    import numba
except ImportError:  # pragma: no cover
    numba = None

__all__ = ["available", "relabel", "plane_labels"]


def available() -> bool:
    """Whether the compiled labelling can run (numba importable)."""
    return numba is not None


def _find(parent, a):  # pragma: no cover - compiled
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def relabel(act_h, act_v, labels, parent, counts, runs):  # pragma: no cover - compiled
    """Components of the inactive edges by union-find (raster scan, link to the smaller root);
    labels ``0..n-1`` in order of each component's first pixel, sizes into ``counts``, and the
    runs of equal labels in raster order into ``runs`` (start pixel; the label is ``labels``
    there). Returns (components, runs)."""
    h, w = labels.shape
    for p in range(h * w):
        parent[p] = p
    for i in range(h):
        for j in range(w):
            p = i * w + j
            if j > 0 and not act_h[i, j - 1]:
                ra = _find(parent, p - 1)
                rb = _find(parent, p)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if i > 0 and not act_v[i - 1, j]:
                ra = _find(parent, p - w)
                rb = _find(parent, p)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    nc = 0
    nr = 0
    flat = labels.reshape(-1)
    for p in range(h * w):
        root = _find(parent, p)
        if root == p:  # a root is its component's smallest pixel, so first in raster order
            lab = nc
            counts[nc] = 0
            nc += 1
        else:
            lab = flat[root]  # root < p: already labelled
        flat[p] = lab
        counts[lab] += 1
        if p == 0 or flat[p - 1] != lab:
            runs[nr] = p
            nr += 1
    runs[nr] = h * w
    return nc, nr


def plane_labels(active_h, active_v, out):  # pragma: no cover - compiled
    """:func:`relabel` of every plane ``(P, H, W-1)`` / ``(P, H-1, W)`` into ``out`` ``(P, H, W)``."""
    p, h, w = out.shape
    parent = np.empty(h * w, dtype=np.int64)
    counts = np.empty(h * w, dtype=np.int64)
    runs = np.empty(h * w + 1, dtype=np.int64)
    for i in range(p):
        relabel(active_h[i], active_v[i], out[i], parent, counts, runs)


if numba is not None:
    _find = numba.njit(cache=True, nogil=True)(_find)
    relabel = numba.njit(cache=True, nogil=True)(relabel)
    plane_labels = numba.njit(cache=True, nogil=True)(plane_labels)
