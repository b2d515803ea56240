"""The result object of the smoother: images along the path and what it took to reach them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["SmoothResult"]


@dataclass
class SmoothResult:
    """ũ at each requested sparsity level, from one LBI run per image.

    Attributes
    ----------
    levels : tuple of float
        The requested sparsity levels, increasing (``L`` of them).
    images : torch.Tensor
        ``(L, B, C, H, W)``: the smoothed images ũ (Eq. 6), one per level and image.
    labels : torch.Tensor
        ``int64`` component labels of the partition behind each ũ: ``(L, B, H, W)`` (grouped channels)
        or ``(L, B, C, H, W)`` (per-channel ℓ1), numbered from 0 within each image.
    iterations : torch.Tensor
        ``(L, B)`` ``int64``: the iteration ``k`` at which the level was recorded.
    sparsity : torch.Tensor
        ``(L, B)``: the sparsity level reached there (fraction of edges with γ_e ≠ 0; ≥ the target
        unless the target was unreachable).
    n_components : torch.Tensor
        ``(L, B)`` ``int64``: number of components of the partition (mean over channels if per-channel).
    reached : torch.Tensor
        ``(L, B)`` ``bool``: whether the target level was reached.
    support_h, support_v : torch.Tensor
        ``bool`` supports of γ behind each ũ (``True`` where γ_e ≠ 0) on horizontal edges
        ``(L, B, G, H, W-1)`` and vertical edges ``(L, B, G, H-1, W)``; ``G`` is 1 for grouped
        channels, ``C`` for per-channel ℓ1. At level 1.0 the support of the limit ``Dx``.
    warnings : list of str
        One line per image and level whose target could not be reached.
    solver, step : str, float
        The solver used and its step α.
    """

    levels: tuple[float, ...]
    images: torch.Tensor
    labels: torch.Tensor
    iterations: torch.Tensor
    sparsity: torch.Tensor
    n_components: torch.Tensor
    reached: torch.Tensor
    support_h: torch.Tensor | None = None
    support_v: torch.Tensor | None = None
    warnings: list[str] = field(default_factory=list)
    solver: str = ""
    step: float = 0.0

    def at(self, level: float) -> torch.Tensor:
        """The images ``(B, C, H, W)`` at one of the recorded levels."""
        for i, lv in enumerate(self.levels):
            if abs(lv - level) < 1e-9:
                return self.images[i]
        raise KeyError(f"level {level} not recorded; recorded levels: {self.levels}")

    def support(self) -> torch.Tensor:
        """All edge supports flattened to ``(L, B, G*E)`` (horizontal edges first), for comparisons."""
        l, b = self.support_h.shape[:2]
        return torch.cat([self.support_h.reshape(l, b, -1), self.support_v.reshape(l, b, -1)], dim=2)

    def summary(self) -> list[dict]:
        """Per-image, per-level records (JSON-friendly) for reports."""
        rows = []
        for li, lv in enumerate(self.levels):
            for b in range(self.images.shape[1]):
                rows.append({"image": b, "level": lv,
                             "iterations": int(self.iterations[li, b]),
                             "sparsity": round(float(self.sparsity[li, b]), 6),
                             "n_components": int(self.n_components[li, b]),
                             "reached": bool(self.reached[li, b])})
        return rows
