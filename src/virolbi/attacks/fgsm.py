r"""Fast Gradient Sign Method (FGSM): one signed-gradient step of size ε in L∞.

.. math:: x' = \operatorname{clip}_{[0, 1]}\big(x + \varepsilon \,
          \operatorname{sign}(\nabla_x \ell(f(x), y))\big)

with :math:`\ell` the cross-entropy and :math:`x` in [0, 1] pixels (normalisation inside the model).
It is the first attack of the paper's Table 2 (§4.2), at :math:`\varepsilon = 8/255, 16/255`.

References
----------
I. Goodfellow, J. Shlens, C. Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from virolbi.attacks.base import (
    Attack,
    check_eot_samples,
    as_radius,
    check_eps,
    check_images,
    check_labels,
    check_model,
    eval_mode,
    project_linf,
)
from virolbi.attacks.eot import eot_loss_and_gradient

__all__ = ["FGSM", "fgsm"]


def fgsm(model: Any, x: Tensor, y: Tensor, eps: float, *, eot_samples: int = 1) -> Tensor:
    r"""FGSM adversarial images (Goodfellow et al., 2015).

    .. math:: x' = \operatorname{clip}_{[0, 1]}\big(x + \varepsilon\,
              \operatorname{sign} \nabla_x \ell(f(x), y)\big)

    Parameters
    ----------
    model : nn.Module or callable
        Images ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``. Put in eval mode during the attack;
        every submodule's train/eval flag is restored afterwards.
    x : Tensor
        Clean images ``(B, C, H, W)``, float in [0, 1].
    y : Tensor
        True labels ``(B,)``, integer.
    eps : float or sequence of float
        L∞ radius on [0, 1] pixels, in [0, 1] (8/255 and 16/255 in the paper), or one radius per
        channel; the larger, the stronger. ``eps = 0`` returns ``x``.
    eot_samples : int, default 1
        Gradients averaged over this many forward passes (EOT) for randomised models.

    Returns
    -------
    Tensor
        Adversarial images, shape, dtype and device of ``x``, with
        :math:`\|x' - x\|_\infty \le \varepsilon` and values in [0, 1]; detached.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([3, 7])
    >>> x_adv = fgsm(model, x, y, eps=8 / 255)
    >>> bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
    True
    """
    check_model(model)
    x = check_images(x)
    y = check_labels(y, x)
    radius = as_radius(check_eps(eps), x)
    eot_samples = check_eot_samples(eot_samples)
    with eval_mode(model):
        _, grad = eot_loss_and_gradient(model, x, y, eot_samples)
    return project_linf(x + radius * grad.sign(), x, radius).detach()


class FGSM(Attack):
    """FGSM as an attack object: ``FGSM(model, eps)(x, y)`` equals ``fgsm(model, x, y, eps)``.

    Parameters are those of :func:`fgsm`.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    >>> FGSM(model, eps=8 / 255)(torch.rand(1, 3, 2, 2), torch.tensor([1])).shape
    torch.Size([1, 3, 2, 2])
    """

    name = "fgsm"
    _function = fgsm

    def __init__(self, model: Any, eps: float, *, eot_samples: int = 1) -> None:
        super().__init__(model, eps=check_eps(eps), eot_samples=check_eot_samples(eot_samples))
