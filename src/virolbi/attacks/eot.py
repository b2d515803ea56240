r"""Expectation over Transformation (EOT): gradients of randomised models, averaged.

A randomised defence (noise injection such as PNI, random resizing, a stochastic preprocess) has a
different gradient at every call. EOT (Athalye et al., 2018) attacks the *expected* loss and
estimates its gradient by the sample mean over :math:`n` forward/backward passes,

.. math:: \nabla_x \, \mathbb{E}_{\theta}\,\ell(f_\theta(x), y)
          \approx \frac{1}{n} \sum_{i=1}^{n} \nabla_x \ell(f_{\theta_i}(x), y),

each pass drawing its own randomness (from the global torch RNG, as the model does). For a
deterministic model every term is the same and EOT equals the plain gradient, so ``n = 1`` is the
right choice there (the smoother ViRoLBI is deterministic).

References
----------
A. Athalye, L. Engstrom, A. Ilyas, K. Kwok, "Synthesizing Robust Adversarial Examples", ICML 2018.
A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from virolbi.attacks.base import check_eot_samples, per_sample_loss

__all__ = ["eot_loss", "eot_loss_and_gradient"]


def eot_loss_and_gradient(model: Any, x: Tensor, y: Tensor, eot_samples: int = 1
                          ) -> tuple[Tensor, Tensor]:
    r"""Per-sample cross-entropy and its input gradient, each averaged over ``eot_samples`` passes.

    Parameters
    ----------
    model : callable
        Images ``(B, C, H, W)`` to logits ``(B, K)``; may be random at every call.
    x : Tensor
        Images ``(B, C, H, W)``; not modified, its ``requires_grad`` is ignored.
    y : Tensor
        ``int64`` labels ``(B,)`` on ``x``'s device.
    eot_samples : int, default 1
        Number of passes :math:`n` averaged; the larger, the less noisy the gradient of a random
        model (cost grows linearly).

    Returns
    -------
    loss : Tensor
        ``(B,)`` mean loss over the passes (detached).
    grad : Tensor
        ``(B, C, H, W)`` mean of :math:`\nabla_x \ell` over the passes. The loss is summed over the
        batch before differentiating, so each image's gradient does not depend on the batch size.
        Model parameters' ``.grad`` are left untouched.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    >>> loss, grad = eot_loss_and_gradient(model, torch.rand(2, 3, 2, 2), torch.tensor([0, 2]))
    >>> loss.shape, grad.shape
    (torch.Size([2]), torch.Size([2, 3, 2, 2]))
    """
    n = check_eot_samples(eot_samples)
    loss_sum = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    grad_sum = torch.zeros_like(x)
    with torch.enable_grad():
        for _ in range(n):
            xi = x.detach().clone().requires_grad_(True)
            loss = per_sample_loss(model(xi), y)
            (grad,) = torch.autograd.grad(loss.sum(), xi)
            loss_sum += loss.detach().to(x.dtype)
            grad_sum += grad
    if n == 1:
        return loss_sum, grad_sum
    return loss_sum / n, grad_sum / n


def eot_loss(model: Any, x: Tensor, y: Tensor, eot_samples: int = 1) -> tuple[Tensor, Tensor]:
    """Mean per-sample loss over ``eot_samples`` passes and whether the mean prediction is wrong.

    Returns ``(loss (B,), misclassified (B,) bool)``; the prediction is the arg-max of the softmax
    averaged over the passes. No gradient is computed.

    Examples
    --------
    >>> import torch
    >>> model = lambda x: torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> eot_loss(model, torch.zeros(2, 1, 1, 1), torch.tensor([0, 0]))[1]
    tensor([False,  True])
    """
    n = check_eot_samples(eot_samples)
    loss_sum = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    prob_sum = None
    with torch.no_grad():
        for _ in range(n):
            logits = model(x)
            loss_sum += per_sample_loss(logits, y).to(x.dtype)
            p = logits.softmax(dim=1)
            prob_sum = p if prob_sum is None else prob_sum + p
    return loss_sum / n, prob_sum.argmax(dim=1) != y
