r"""SDNet's robust inference (Li et al. 2022, Algorithm 1): choose λ of the CSC layers for a corrupted
test set from the residual the corruption leaves in them.

1. On **training** images corrupted with the known noise type at each level :math:`c` of a set
   :math:`\mathcal C` (CIFAR-10-C severities 1–5), measure the averaged CSC residual :math:`r_c`
   with the training λ₀, and the accuracy for every λ of a grid Λ; :math:`\lambda_c` is the best.
2. Fit :math:`\lambda(r) = a r + b` to :math:`\{(r_c, \lambda_c)\}` by linear least squares.
3. On the test set, measure its averaged residual :math:`r_{test}` with λ₀ and classify with
   :math:`\lambda(r_{test})` (clipped to the grid's range) — applied, not only fitted.

:func:`lambda_sweep` is the λ curve of Fig. 2 (accuracy against λ for each noise and severity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from virolbi.errors import InputError
from virolbi.models.csc import csc_layers, csc_residual, set_csc_lambda

__all__ = ["LambdaFit", "lambda_sweep", "mean_residual", "fit_lambda", "robust_inference"]

#: The λ grid of Fig. 2 (SDNet: [0.1, 1.5]).
LAMBDAS = tuple(np.round(np.arange(0.1, 1.51, 0.1), 2))


def _corrupt(x: Tensor, noise: str | None, severity: int, seed: int) -> Tensor:
    if noise is None or severity == 0:
        return x
    from virolbi.perturb.noise import corrupt

    return corrupt(x, noise, severity, torch.Generator().manual_seed(seed))


def _chunks(images: Tensor, batch_size: int):
    return images.split(batch_size)


@torch.no_grad()
def mean_residual(model: nn.Module, images: Tensor, batch_size: int = 500) -> float:
    """The CSC residual averaged over images and CSC layers, at the layers' current λ."""
    total, n = 0.0, 0
    for x in _chunks(images, batch_size):
        model(x)
        total += float(csc_residual(model).sum())
        n += len(x)
    return total / max(n, 1)


@torch.no_grad()
def _accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int) -> float:
    right = sum(int((model(x).argmax(1) == y).sum())
                for x, y in zip(_chunks(images, batch_size), labels.split(batch_size)))
    return right / max(len(labels), 1)


def lambda_sweep(model: nn.Module, images: Tensor, labels: Tensor, lambdas: Sequence[float] = LAMBDAS,
                 batch_size: int = 500) -> dict[float, float]:
    """Accuracy for every λ of ``lambdas`` (Fig. 2); the layers' λ is restored afterwards."""
    layers = csc_layers(model)
    if not layers:
        raise InputError("the model has no CSC layer (train SDNet: model.kwargs.csc)")
    lam0 = layers[0].lam
    try:
        out = {}
        for lam in lambdas:
            set_csc_lambda(model, float(lam))
            out[float(lam)] = _accuracy(model, images, labels, batch_size)
        return out
    finally:
        set_csc_lambda(model, lam0)


@dataclass
class LambdaFit:
    """λ(r) = slope · r + intercept, from ``points`` [(severity, r_c, λ_c)], clipped to [lo, hi]."""

    slope: float
    intercept: float
    lo: float
    hi: float
    points: list = field(default_factory=list)

    def __call__(self, residual: float) -> float:
        return float(np.clip(self.slope * residual + self.intercept, self.lo, self.hi))


def fit_lambda(model: nn.Module, images: Tensor, labels: Tensor, noise: str,
               severities: Sequence[int] = (1, 2, 3, 4, 5), lambdas: Sequence[float] = LAMBDAS,
               seed: int = 0, batch_size: int = 500) -> LambdaFit:
    """Steps 4–12 of Algorithm 1 on (clean) **training** ``images``: per severity the residual at
    the current λ₀ and the best λ of the grid; the least-squares line through them."""
    model.eval()
    points = []
    for sev in severities:
        x = _corrupt(images, noise, sev, seed + sev)
        r = mean_residual(model, x, batch_size)
        acc = lambda_sweep(model, x, labels, lambdas, batch_size)
        best = max(acc, key=lambda lam: (acc[lam], -lam))
        points.append((int(sev), r, best))
    r = np.array([p[1] for p in points])
    lam = np.array([p[2] for p in points])
    if len(points) < 2 or np.ptp(r) == 0:
        slope, intercept = 0.0, float(lam.mean())
    else:
        slope, intercept = np.polyfit(r, lam, 1)
    return LambdaFit(float(slope), float(intercept), float(min(lambdas)), float(max(lambdas)), points)


def robust_inference(model: nn.Module, images: Tensor, fit: LambdaFit,
                     batch_size: int = 500) -> tuple[Tensor, float]:
    """Step 14 of Algorithm 1: predictions on the test ``images`` with λ = fit(r_test), r_test their
    averaged residual at the layers' current λ₀; (predicted classes, the λ applied). The layers'
    λ₀ is restored afterwards."""
    model.eval()
    lam0 = csc_layers(model)[0].lam
    lam = fit(mean_residual(model, images, batch_size))
    set_csc_lambda(model, lam)
    try:
        with torch.no_grad():
            pred = torch.cat([model(x).argmax(1) for x in _chunks(images, batch_size)])
    finally:
        set_csc_lambda(model, lam0)
    return pred, lam
