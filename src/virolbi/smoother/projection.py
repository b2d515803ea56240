r"""The projection of Eq. 6 / Prop. 1: given the support ``S`` of :math:`\gamma`, the smoothed image is

.. math:: \tilde u = \arg\min_{u'} \|u' - u\|_2 \quad\text{s.t.}\quad D_{S^c} u' = 0,

i.e. ``u`` with every connected component of the graph of *inactive* edges (:math:`\gamma_e = 0`)
replaced by its mean (per channel). Three ways to compute it are provided:

- ``"graph"`` (default, Prop. 1): connected components + averaging, O(p). Components come from a
  compiled union-find on CPU (or :func:`scipy.sparse.csgraph.connected_components`) and from label
  propagation with pointer jumping on CUDA (labels stay ``int64`` throughout).
- ``"pinv"``: the closed form :math:`\tilde u = (I - D_{S^c}^{+} D_{S^c})u` with an SVD pseudo-inverse.
- ``"lsqr"``: the same correction solved iteratively by LSQR.

Supports are boolean masks ``active_h`` ``(P, H, W-1)`` and ``active_v`` ``(P, H-1, W)`` over ``P``
planes (an image with grouped channels is one plane; per-channel ℓ1 makes one plane per channel).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch

from virolbi.errors import InputError
from virolbi.smoother.components import available as _compiled_available
from virolbi.smoother.components import plane_labels

__all__ = ["component_labels", "average_over_components", "project", "difference_matrix",
           "project_pinv", "project_lsqr", "PROJECTIONS"]

PROJECTIONS = ("graph", "pinv", "lsqr")


def _edge_nodes(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    node = np.arange(h * w).reshape(h, w)
    return node[:, :-1].ravel(), node[:, 1:].ravel(), node[:-1, :].ravel(), node[1:, :].ravel()


def _labels_scipy(inactive_h: torch.Tensor, inactive_v: torch.Tensor) -> torch.Tensor:
    p, h, w = inactive_h.shape[0], inactive_h.shape[1], inactive_v.shape[2]
    n = h * w
    hi, hj, vi, vj = _edge_nodes(h, w)
    ih = inactive_h.reshape(p, -1).cpu().numpy()
    iv = inactive_v.reshape(p, -1).cpu().numpy()
    offs = (np.arange(p) * n)[:, None]
    rows = np.concatenate([(offs + hi)[ih], (offs + vi)[iv]])
    cols = np.concatenate([(offs + hj)[ih], (offs + vj)[iv]])
    graph = scipy.sparse.coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)),
                                    shape=(p * n, p * n)).tocsr()
    _, glob = scipy.sparse.csgraph.connected_components(graph, directed=False)
    glob = glob.reshape(p, n)
    # Components never cross planes; renumber each plane's labels 0..n_p-1 in order of first pixel.
    local = np.empty_like(glob)
    for i in range(p):
        _, first, inverse = np.unique(glob[i], return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        local[i] = order[inverse]
    return torch.from_numpy(local.astype(np.int64)).reshape(p, h, w)


def _labels_compiled(active_h: torch.Tensor, active_v: torch.Tensor) -> torch.Tensor:
    p, h, w = active_h.shape[0], active_h.shape[1], active_v.shape[2]
    out = np.empty((p, h, w), dtype=np.int64)
    plane_labels(np.ascontiguousarray(active_h.cpu().numpy()),
                 np.ascontiguousarray(active_v.cpu().numpy()), out)
    return torch.from_numpy(out)


def _labels_propagation(inactive_h: torch.Tensor, inactive_v: torch.Tensor) -> torch.Tensor:
    """Label propagation with pointer jumping: each pixel converges to the smallest pixel index of
    its component. Runs on any device with integer labels only."""
    p, h, w = inactive_h.shape[0], inactive_h.shape[1], inactive_v.shape[2]
    device = inactive_h.device
    lab = torch.arange(p * h * w, device=device, dtype=torch.int64).reshape(p, h, w)
    big = torch.iinfo(torch.int64).max
    while True:
        new = lab.clone()
        left, right = lab[:, :, :-1], lab[:, :, 1:]
        new[:, :, :-1] = torch.minimum(new[:, :, :-1], torch.where(inactive_h, right, big))
        new[:, :, 1:] = torch.minimum(new[:, :, 1:], torch.where(inactive_h, left, big))
        up, down = lab[:, :-1, :], lab[:, 1:, :]
        new[:, :-1, :] = torch.minimum(new[:, :-1, :], torch.where(inactive_v, down, big))
        new[:, 1:, :] = torch.minimum(new[:, 1:, :], torch.where(inactive_v, up, big))
        flat = new.reshape(-1)
        for _ in range(4):  # pointer jumping: follow labels to their roots
            flat = flat[flat]
        new = flat.reshape(p, h, w)
        if torch.equal(new, lab):
            break
        lab = new
    # Renumber 0..n_p-1 per plane, in order of each component's smallest pixel (= its label).
    roots = lab.reshape(p, -1)
    is_root = roots == torch.arange(h * w, device=device)[None, :] + (torch.arange(p, device=device)
                                                                       * h * w)[:, None]
    rank = torch.cumsum(is_root.to(torch.int64), dim=1) - 1
    local = torch.gather(rank, 1, roots - (torch.arange(p, device=device) * h * w)[:, None])
    return local.reshape(p, h, w)


def component_labels(active_h: torch.Tensor, active_v: torch.Tensor, *,
                     method: str | None = None) -> torch.Tensor:
    r"""Connected components of the graph of inactive edges (Prop. 1).

    Parameters
    ----------
    active_h, active_v : torch.Tensor
        Boolean supports ``(P, H, W-1)`` and ``(P, H-1, W)``: ``True`` where :math:`\gamma_e \neq 0`.
    method : {"compiled", "scipy", "propagation"}, optional
        ``"compiled"``: union-find in one compiled pass (numba); ``"scipy"``:
        :func:`scipy.sparse.csgraph.connected_components`; ``"propagation"``: label propagation
        on the tensors' device. Defaults to ``"compiled"`` on CPU (``"scipy"`` without numba) and
        ``"propagation"`` on other devices. All give the same labels.

    Returns
    -------
    torch.Tensor
        ``int64`` labels ``(P, H, W)``, numbered ``0..n_p-1`` within each plane in order of each
        component's first pixel (row-major), on the device of the input.

    Examples
    --------
    >>> ah = torch.tensor([[[False, True], [False, True]]])  # 2x3 image, cut between columns 1, 2
    >>> av = torch.zeros(1, 1, 3, dtype=torch.bool)
    >>> component_labels(ah, av)
    tensor([[[0, 0, 1],
             [0, 0, 1]]])
    """
    if method is None:
        method = (("compiled" if _compiled_available() else "scipy") if active_h.device.type == "cpu"
                  else "propagation")
    if method == "compiled":
        return _labels_compiled(active_h, active_v).to(active_h.device)
    if method == "scipy":
        return _labels_scipy(~active_h, ~active_v).to(active_h.device)
    if method == "propagation":
        return _labels_propagation(~active_h, ~active_v)
    raise InputError(f"unknown component method {method!r}; expected 'compiled', 'scipy' or "
                     "'propagation'")


def average_over_components(u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Replace ``u`` on every component by its per-channel mean (Prop. 1).

    ``u`` is ``(B, C, H, W)``; ``labels`` is ``(B, H, W)`` (one partition for all channels) or
    ``(B, C, H, W)`` (one per channel), ``int64`` numbered from 0 within each image. The map is
    linear, idempotent and self-adjoint (an orthogonal projection), and differentiable with autograd,
    so it is also the exact backward pass of the smoother at a fixed partition (BPDA).

    Examples
    --------
    >>> u = torch.tensor([[[[1.0, 3.0, 5.0]]]])
    >>> average_over_components(u, torch.tensor([[[0, 0, 1]]]))
    tensor([[[[2., 2., 5.]]]])
    """
    if labels.dtype not in (torch.int64, torch.int32):
        raise InputError(f"labels must be an integer tensor, got {labels.dtype}")
    b, c, h, w = u.shape
    if labels.shape == (b, h, w):
        lab = labels.reshape(b, 1, h * w).expand(b, c, h * w)
        per = labels.reshape(b, -1).amax(dim=1) + 1  # components per image
        offs = (torch.cumsum(per, 0) - per)[:, None, None]
        glob = (lab + offs) * c + torch.arange(c, device=u.device)[None, :, None]
        total = int(per.sum()) * c
    elif labels.shape == (b, c, h, w):
        lab = labels.reshape(b * c, h * w)
        per = lab.amax(dim=1) + 1
        offs = (torch.cumsum(per, 0) - per)[:, None]
        glob = (lab + offs).reshape(b, c, h * w)
        total = int(per.sum())
    else:
        raise InputError(f"labels must have shape (B, H, W) or (B, C, H, W) matching u "
                         f"{tuple(u.shape)}, got {tuple(labels.shape)}")
    glob = glob.reshape(-1)
    flat = u.reshape(-1)
    sums = flat.new_zeros(total).index_add(0, glob, flat)
    counts = torch.bincount(glob, minlength=total).to(u.dtype)
    return (sums / counts)[glob].reshape(b, c, h, w)


def project(u: torch.Tensor, active_h: torch.Tensor, active_v: torch.Tensor, *,
            method: str = "graph") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Project ``u`` ``(B, C, H, W)`` onto images constant on the inactive-edge components (Eq. 6).

    ``active_h``/``active_v`` are ``(B, H, W-1)``/``(B, H-1, W)`` (grouped) or carry a channel axis
    ``(B, C, ...)`` (per-channel). Returns ``(u_tilde, labels)`` with labels ``(B, H, W)`` or
    ``(B, C, H, W)``; ``"pinv"`` and ``"lsqr"`` compute ``u_tilde`` by linear algebra (for validation
    and timing) and still return the graph labels.
    """
    if method not in PROJECTIONS:
        raise InputError(f"unknown projection {method!r}; expected one of {', '.join(PROJECTIONS)}")
    b, c, h, w = u.shape
    per_channel = active_h.ndim == 4
    planes_h = active_h.reshape(-1, h, w - 1)
    planes_v = active_v.reshape(-1, h - 1, w)
    labels = component_labels(planes_h, planes_v)
    labels = labels.reshape(b, c, h, w) if per_channel else labels.reshape(b, h, w)
    if method == "graph":
        return average_over_components(u, labels), labels
    fn = project_pinv if method == "pinv" else project_lsqr
    out = torch.empty_like(u)
    for i in range(b):
        for ch in range(c):
            k = i * c + ch if per_channel else i
            out[i, ch] = torch.from_numpy(
                fn(u[i, ch].detach().cpu().double().numpy(), planes_h[k].cpu().numpy(),
                   planes_v[k].cpu().numpy())).to(u)
    return out, labels


def difference_matrix(height: int, width: int) -> scipy.sparse.csr_matrix:
    """The sparse edge-difference matrix ``D`` (horizontal edges first, row-major) of the grid."""
    hi, hj, vi, vj = _edge_nodes(height, width)
    src = np.concatenate([hi, vi])
    dst = np.concatenate([hj, vj])
    e = src.size
    rows = np.concatenate([np.arange(e), np.arange(e)])
    cols = np.concatenate([dst, src])
    vals = np.concatenate([np.ones(e), -np.ones(e)])
    return scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(e, height * width))


def _inactive_rows(active_h: np.ndarray, active_v: np.ndarray) -> np.ndarray:
    return ~np.concatenate([np.asarray(active_h).ravel(), np.asarray(active_v).ravel()])


def project_pinv(u: np.ndarray, active_h: np.ndarray, active_v: np.ndarray) -> np.ndarray:
    r"""Eq. 6 in closed form, :math:`\tilde u = (I - D_{S^c}^{+}D_{S^c})u`, with an SVD pseudo-inverse,
    for one ``(H, W)`` plane."""
    h, w = u.shape
    d = difference_matrix(h, w)[_inactive_rows(active_h, active_v)].toarray()
    flat = u.reshape(-1)
    if d.shape[0] == 0:
        return u.copy()
    return (flat - np.linalg.pinv(d) @ (d @ flat)).reshape(h, w)


def project_lsqr(u: np.ndarray, active_h: np.ndarray, active_v: np.ndarray, *,
                 tol: float = 1e-12) -> np.ndarray:
    r"""Eq. 6 by LSQR: the minimum-norm ``v`` with :math:`D_{S^c}v = D_{S^c}u` (LSQR from 0 converges
    to it), then :math:`\tilde u = u - v`, for one ``(H, W)`` plane."""
    h, w = u.shape
    d = difference_matrix(h, w)[_inactive_rows(active_h, active_v)]
    flat = u.reshape(-1)
    if d.shape[0] == 0:
        return u.copy()
    v = scipy.sparse.linalg.lsqr(d, d @ flat, atol=tol, btol=tol, iter_lim=20 * h * w)[0]
    return (flat - v).reshape(h, w)
