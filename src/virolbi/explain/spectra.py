r"""Where in the spectrum a preprocessing changes images: the statistics behind the paper's Fig. 2c.

For images :math:`X` and their processed versions :math:`\hat X` (ViRoLBI at a sparsity level, or
the Blur baseline), the centred 2-D spectrum of the difference, :math:`\mathcal F(X) - \mathcal
F(\hat X) = \mathcal F(X - \hat X)`, is split into rings around the zero frequency (the paper's
Fig. 2a uses a disk of radius 6 on 32×32 images, the split of Table 4; we add a middle ring):

- low: :math:`0 < \|k - k_0\| \le r_1` (:math:`r_1 = 6`; the zero frequency, the mean, is left
  out: it holds most of an image's energy and neither ViRoLBI nor a blur changes it),
- middle: :math:`r_1 < \|k - k_0\| \le r_2` (:math:`r_2 = 11`),
- high: the rest (up to the corners, :math:`\approx 22.6`).

Per ring we report the **fraction of the image's energy there that the processing removed or
changed**, :math:`\sum_{k\in\text{ring}} |\mathcal F(X - \hat X)_k|^2 / \sum_{k\in\text{ring}}
|\mathcal F(X)_k|^2`, pooled over images and channels, with a bootstrap interval over images. A
low-pass filter changes little inside the low ring and most of the high one; the paper's claim is
that ViRoLBI "is not a low-pass filter": it keeps large-scale structure while changing every ring.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from virolbi.checks import check_image_batch
from virolbi.perturb.frequency import low_pass_mask

__all__ = ["RINGS", "ring_masks", "ring_energy", "removed_energy_table", "difference_spectrum"]

#: Ring edges (radii in frequency bins) for 32×32 images: low <= 6 < middle <= 11 < high.
RINGS = (6.0, 11.0)


def ring_masks(height: int, width: int, edges: Sequence[float] = RINGS) -> dict[str, Tensor]:
    """Boolean masks of the centred spectrum: ``low``, ``middle``, ``high``; with the zero frequency
    they partition it.

    >>> m = ring_masks(32, 32)
    >>> [int(v.sum()) for v in m.values()], int(sum(v.int() for v in m.values()).sum())
    ([112, 264, 647], 1023)
    """
    r1, r2 = edges
    inner1 = low_pass_mask(height, width, r1, dtype=torch.bool)
    inner2 = low_pass_mask(height, width, r2, dtype=torch.bool)
    low = inner1.clone()
    low[height // 2, width // 2] = False  # the zero frequency (the mean) is left out
    return {"low": low, "middle": inner2 & ~inner1, "high": ~inner2}


def _power(x: Tensor) -> Tensor:
    """Centred power spectrum ``|F x|^2`` per image and channel, float64."""
    spec = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))
    return spec.real ** 2 + spec.imag ** 2


def ring_energy(x: Tensor, edges: Sequence[float] = RINGS) -> dict[str, Tensor]:
    """Energy of each ring per image (summed over channels and the ring's frequencies), ``(B,)``."""
    p = _power(x).sum(1)  # (B, H, W)
    return {name: p[:, m].sum(-1) for name, m in ring_masks(*x.shape[-2:], edges).items()}


def difference_spectrum(x: Tensor, x_hat: Tensor) -> Tensor:
    r"""Mean over images and channels of :math:`|\mathcal F(X) - \mathcal F(\hat X)|^2`, centred,
    ``(H, W)`` (the map of the paper's Fig. 2c)."""
    return _power(x - x_hat).mean((0, 1))


def _bootstrap(num: np.ndarray, den: np.ndarray, reps: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(reps, num.size))
    ratios = num[idx].sum(1) / den[idx].sum(1)
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def removed_energy_table(x: Tensor, variants: dict[str, Tensor], *, edges: Sequence[float] = RINGS,
                         reps: int = 1000, seed: int = 0) -> list[dict]:
    """One row per variant: per ring, the pooled fraction of ``x``'s energy changed by the variant
    (``fraction``) and a 95 % bootstrap interval over images (``low``/``high`` keys per ring)."""
    check_image_batch(x, "x")
    ref = {k: v.numpy() for k, v in ring_energy(x, edges).items()}
    rows = []
    for name, x_hat in variants.items():
        if x_hat.shape != x.shape:
            raise ValueError(f"variant {name!r} has shape {tuple(x_hat.shape)}, "
                             f"expected {tuple(x.shape)}")
        diff = {k: v.numpy() for k, v in ring_energy(x - x_hat.to(x.dtype), edges).items()}
        row: dict = {"variant": name}
        for ring in ref:
            lo, hi = _bootstrap(diff[ring], ref[ring], reps, seed)
            row[ring] = {"fraction": float(diff[ring].sum() / ref[ring].sum()), "ci95": [lo, hi]}
        rows.append(row)
    return rows
