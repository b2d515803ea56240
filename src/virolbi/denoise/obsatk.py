r"""ObsAtk, the observation-based zero-mean attack on a denoiser (Yan's thesis §2.3, Algorithm 1).

For a clean image :math:`x` and its noisy observation :math:`y`, the worst zero-mean perturbation of
:math:`y` within an ℓ₂ ball (Eq. 2.1):

.. math:: \delta^* = \arg\max_\delta \|f(y + \delta) - x\|_2^2 \quad
          \text{s.t.}\ \|\delta\|_2 \le \rho,\ \tfrac1m \textstyle\sum_i \delta_i = 0,

with :math:`\rho = \varepsilon\sqrt m` (m pixels; "Atk-ε" with ε = 5/255 or 7/255), solved by
projected gradient ascent with the two-step projection of Eq. 2.2 — onto the zero-mean hyperplane,
then a rescaling into the ball — which is the exact projection onto their intersection
(Theorem 2.3.1: the hyperplane passes through the ball's centre). Steps follow the normalised
gradient, :math:`\delta \leftarrow \delta + \eta\, g / \|g\|_2` with :math:`\eta = 2.5\rho/T`
(the usual ℓ₂-PGD step), T = 5 iterations as in the thesis. The observation is not clipped
(the noisy images of the evaluation are not), so the returned δ meets both constraints exactly;
``clip=(0, 1)`` applies the algorithm's optional last line.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from virolbi.checks import check_positive
from virolbi.errors import InputError

__all__ = ["project_zero_mean_l2", "obsatk"]


def project_zero_mean_l2(delta: Tensor, rho: Tensor | float) -> Tensor:
    r"""Eq. 2.2 per image: :math:`\delta' = \delta - \bar\delta` (zero mean), then
    :math:`\delta'' = \min(1, \rho / \|\delta'\|_2)\,\delta'`.

    Examples
    --------
    >>> d = project_zero_mean_l2(torch.tensor([[[[3.0, 1.0]]]]), 0.5)
    >>> d, float(d.sum())
    (tensor([[[[ 0.3536, -0.3536]]]]), 0.0)
    """
    flat = delta.flatten(1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    norm = flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rho_t = torch.as_tensor(rho, dtype=flat.dtype, device=flat.device).reshape(-1, 1)
    return (flat * torch.clamp(rho_t / norm, max=1.0)).view_as(delta)


def obsatk(denoiser: Any, x: Tensor, y: Tensor, eps: float, steps: int = 5,
           step_size: float | None = None, clip: tuple[float, float] | None = None) -> Tensor:
    """The ObsAtk perturbation δ of the noisy batch ``y`` (``(B, C, H, W)``) against ``denoiser``.

    Parameters
    ----------
    denoiser : callable
        Noisy images to denoised images (eval mode is the caller's choice).
    x, y : Tensor
        Clean images and their noisy observations, same shape.
    eps : float
        Per-pixel budget; the ℓ₂ radius is ``rho = eps * sqrt(C*H*W)`` (5/255 → "Atk-5/255").
    steps : int
        PGD iterations (5).
    step_size : float, optional
        η; default ``2.5 * rho / steps``.
    clip : (low, high), optional
        Clip ``y + δ`` to this range at the end (Algorithm 1, line 6); breaks the zero mean.

    Returns
    -------
    Tensor
        δ, detached, with zero mean and ℓ₂ norm ≤ ρ per image (unless clipped).
    """
    if x.shape != y.shape:
        raise InputError(f"clean and noisy images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    eps = check_positive(eps, "eps", strict=False)
    rho = eps * float(y[0].numel()) ** 0.5
    eta = 2.5 * rho / steps if step_size is None else check_positive(step_size, "step_size")
    delta = torch.zeros_like(y)
    for _ in range(int(steps)):
        delta.requires_grad_(True)
        loss = ((denoiser(y + delta) - x) ** 2).sum()
        grad, = torch.autograd.grad(loss, delta)
        g = grad.flatten(1)
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        delta = project_zero_mean_l2(delta.detach() + eta * g.view_as(delta), rho)
    if clip is not None:
        delta = (y + delta).clamp(*clip) - y
    return delta.detach()
