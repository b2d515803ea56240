r"""Proximal maps of the sparsity penalty on the edge variable :math:`\gamma` (paper Eq. 5 and Eq. 8).

``z`` holds one value per edge and channel with the channel axis at ``dim=1`` (``(B, C, ...)``).

- ``group=True`` (colour, Eq. 8 grouped per edge): :math:`\mathrm{prox}(z)_e = (1 - 1/\|z_e\|_2)_+\, z_e`,
  the norm taken over the C channels of edge ``e``; all channels share one support.
- ``group=False`` (gray, or per-channel ℓ1): soft-thresholding at 1 of every entry.
"""

from __future__ import annotations

import torch

__all__ = ["edge_magnitude", "shrink", "implicit_update"]

_TINY = 1e-30


def edge_magnitude(z: torch.Tensor, group: bool) -> torch.Tensor:
    """``‖z_e‖₂`` over channels (``keepdim``) when ``group`` else ``|z|``."""
    return (z * z).sum(dim=1, keepdim=True).sqrt() if group else z.abs()


def shrink(z: torch.Tensor, group: bool, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    r"""Soft-threshold at 1: :math:`z\,(1 - 1/|z|)_+` with :math:`|z|` the group or entry magnitude."""
    m = edge_magnitude(z, group) if magnitude is None else magnitude
    return z * torch.clamp(1.0 - 1.0 / m.clamp_min(_TINY), min=0.0)


def implicit_update(w: torch.Tensor, c: float, group: bool) -> torch.Tensor:
    r"""Solve :math:`z + c\,\mathrm{prox}(z) = w` for ``z`` in closed form (``c = ακ/ν``).

    ``z`` and ``w`` are parallel, so only the magnitude changes: :math:`|z| = |w|` if :math:`|w| \le 1`,
    else :math:`|z| = (|w| + c)/(1 + c)`. This is the implicit half of the semi-implicit solver
    (see :mod:`virolbi.smoother.lbi`).
    """
    m = edge_magnitude(w, group)
    scale = torch.where(m > 1.0, (m + c) / ((1.0 + c) * m.clamp_min(_TINY)), torch.ones_like(m))
    return w * scale
