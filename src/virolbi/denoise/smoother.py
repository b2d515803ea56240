r"""ViRoLBI as a gray-scale denoiser, beside the DnCNNs of Yan's thesis (chapter 2, Tables 2.1–2.2).

The smoother (paper §3.1) at one sparsity level is applied to the noisy observation clipped to
[0, 1]; nothing is trained. Its sparsity is chosen on **Train400** (never on the test images): the
level of a grid with the best mean PSNR on noisy Train400 images at the evaluation's noise level γ̂.

The smoother is not differentiable, so ObsAtk attacks it through BPDA with the identity backward
(Athalye et al. 2018; :func:`virolbi.attacks.bpda`): the attack's gradient treats the denoiser as
the identity, the strongest simple surrogate for a smoother that keeps the image close to its input.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["SmootherDenoiser", "choose_sparsity", "SPARSITY_GRID"]

#: Sparsity levels tried on Train400 (the best for Gaussian noise of 15–25/255 lies near 0.2–0.35).
SPARSITY_GRID = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


class SmootherDenoiser(nn.Module):
    """``y ↦ ViRoLBI(sparsity)(clip(y, 0, 1))`` with the identity as its backward (BPDA).

    Examples
    --------
    >>> den = SmootherDenoiser(0.3)
    >>> y = torch.rand(1, 1, 16, 16, requires_grad=True)
    >>> out = den(y)
    >>> out.sum().backward()
    >>> out.shape, bool(torch.all(y.grad == 1))
    (torch.Size([1, 1, 16, 16]), True)
    """

    def __init__(self, sparsity: float) -> None:
        super().__init__()
        from virolbi.smoother import ViRoLBI

        self.smoother = ViRoLBI(sparsity=sparsity)
        self.sparsity = float(self.smoother.sparsity)

    def _smooth(self, y: Tensor) -> Tensor:
        import warnings

        from virolbi.errors import UnreachedLevelWarning

        with warnings.catch_warnings():  # noise-free flat images may stop short of the level
            warnings.simplefilter("ignore", UnreachedLevelWarning)
            return self.smoother(y.clamp(0.0, 1.0))

    def forward(self, y: Tensor) -> Tensor:
        from virolbi.attacks import bpda

        return bpda(y, self._smooth)

    def extra_repr(self) -> str:
        return f"sparsity={self.sparsity:g}"


def choose_sparsity(images: Sequence[np.ndarray], gamma: float, grid: Sequence[float] = SPARSITY_GRID,
                    seed: int = 0) -> tuple[float, dict[float, float]]:
    """The level of ``grid`` with the best mean PSNR on ``images`` (Train400) observed with Gaussian
    noise of standard deviation ``gamma``; (that level, {level: mean PSNR})."""
    from virolbi.denoise.data import to_tensor
    from virolbi.denoise.evaluate import psnr

    g = torch.Generator().manual_seed(seed)
    pairs = []
    for img in images:
        x = to_tensor(img)
        pairs.append((x, x + gamma * torch.randn(x.shape, generator=g)))
    scores = {}
    for level in grid:
        den = SmootherDenoiser(level)
        with torch.no_grad():
            scores[float(level)] = float(np.mean([psnr(x, den(y)) for x, y in pairs]))
    return max(scores, key=scores.get), scores
