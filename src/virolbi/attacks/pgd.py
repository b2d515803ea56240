r"""Projected Gradient Descent (PGD) in L∞ with random start and restarts (Madry et al., 2018).

From :math:`x^0 = \operatorname{clip}_{[0,1]}(x + \delta),\ \delta \sim U[-\varepsilon, \varepsilon]^d`
(or :math:`x^0 = x` without random start), each of the ``steps`` iterations is

.. math:: x^{t+1} = \Pi_{\mathcal{B}_\infty(x, \varepsilon) \cap [0, 1]^d}
          \big(x^t + \eta \, \operatorname{sign} \nabla_x \ell(f(x^t), y)\big)

with step size :math:`\eta` (default :math:`\varepsilon / 4`) and :math:`\ell` the cross-entropy.
With several restarts, each image keeps the worst of its final iterates: a misclassified one
before a correctly classified one, then the highest loss. The paper's Table 2 (§4.2) uses PGD at
:math:`\varepsilon = 8/255, 16/255`; SPEC §3 fixes the reported setting to 20 steps of
:math:`\varepsilon/4` unless stated.

References
----------
A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from virolbi.attacks.base import (
    as_radius,
    Attack,
    check_count,
    check_eot_samples,
    check_eps,
    check_images,
    check_labels,
    check_model,
    eval_mode,
    project_linf,
)
from virolbi.attacks.eot import eot_loss, eot_loss_and_gradient
from virolbi.checks import check_positive
from virolbi.errors import InputError

__all__ = ["PGD", "pgd"]


def _check_step_size(step_size: Any, eps: float | tuple[float, ...]) -> float | tuple[float, ...]:
    if step_size is None:
        return tuple(e / 4 for e in eps) if isinstance(eps, tuple) else eps / 4
    if isinstance(step_size, (tuple, list)):
        return tuple(check_positive(v, "step_size", strict=False) for v in step_size)
    return check_positive(step_size, "step_size", strict=False)


def _check_generator(generator: Any) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _random_start(x: Tensor, eps: float | Tensor, generator: torch.Generator | None) -> Tensor:
    """``clip(x + U[-eps, eps])``; drawn on the generator's device so a seed gives the same start
    on every device."""
    dev = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
    return (x + (2 * u - 1) * eps).clamp(0.0, 1.0)


def pgd(model: Any, x: Tensor, y: Tensor, eps: float, steps: int = 20, step_size: float | None = None,
        restarts: int = 1, random_start: bool = True, generator: torch.Generator | None = None, *,
        eot_samples: int = 1) -> Tensor:
    r"""L∞ PGD adversarial images with random start and restarts (Madry et al., 2018).

    .. math:: x^{t+1} = \Pi_{\mathcal{B}_\infty(x, \varepsilon) \cap [0, 1]^d}
              \big(x^t + \eta \, \operatorname{sign} \nabla_x \ell(f(x^t), y)\big)

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
        L∞ radius on [0, 1] pixels, in [0, 1], or one radius per channel; the larger, the
        stronger.
    steps : int, default 20
        Iterations per restart (>= 1); more steps, a stronger attack.
    step_size : float, optional
        :math:`\eta` (>= 0) on [0, 1] pixels; default ``eps / 4`` (per channel when ``eps`` is).
    restarts : int, default 1
        Independent runs (>= 1); per image the worst final iterate is kept (misclassified first,
        then highest loss), so more restarts never make the attack weaker on a deterministic model.
    random_start : bool, default True
        Start from a uniform point of the ε-ball (clipped to [0, 1]) instead of ``x``.
    generator : torch.Generator, optional
        Source of the random starts; a seeded generator makes the attack reproducible. Default:
        the global torch RNG.
    eot_samples : int, default 1
        Gradients (and the final loss used to pick a restart) averaged over this many forward
        passes (EOT), for randomised models.

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
    >>> g = torch.Generator().manual_seed(0)
    >>> x_adv = pgd(model, x, y, eps=8 / 255, steps=10, restarts=2, generator=g)
    >>> bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6), bool(x_adv.min() >= 0)
    (True, True)
    """
    check_model(model)
    x = check_images(x)
    y = check_labels(y, x)
    eps = check_eps(eps)
    steps = check_count(steps, "steps")
    step_size = _check_step_size(step_size, eps)
    restarts = check_count(restarts, "restarts")
    generator = _check_generator(generator)
    eot_samples = check_eot_samples(eot_samples)
    radius, step = as_radius(eps, x), as_radius(step_size, x)

    best = best_loss = best_wrong = None
    with eval_mode(model):
        for _ in range(restarts):
            x_adv = _random_start(x, radius, generator) if random_start else x.clone()
            for _ in range(steps):
                _, grad = eot_loss_and_gradient(model, x_adv, y, eot_samples)
                x_adv = project_linf(x_adv + step * grad.sign(), x, radius)
            loss, wrong = eot_loss(model, x_adv, y, eot_samples)
            if best is None:
                best, best_loss, best_wrong = x_adv, loss, wrong
                continue
            better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
            best = torch.where(better[:, None, None, None], x_adv, best)
            best_loss = torch.where(better, loss, best_loss)
            best_wrong = best_wrong | wrong
    return best.detach()


class PGD(Attack):
    """PGD as an attack object: ``PGD(model, eps, ...)(x, y)`` equals ``pgd(model, x, y, eps, ...)``.

    Parameters are those of :func:`pgd`. A generator passed here is shared by every call, so
    successive calls draw successive random starts (reseed it to repeat a run).

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    >>> attack = PGD(model, eps=8 / 255, steps=5)
    >>> attack.config()["step_size"] == 2 / 255
    True
    >>> attack(torch.rand(1, 3, 2, 2), torch.tensor([1])).shape
    torch.Size([1, 3, 2, 2])
    """

    name = "pgd"
    _function = pgd

    def __init__(self, model: Any, eps: float, steps: int = 20, step_size: float | None = None,
                 restarts: int = 1, random_start: bool = True,
                 generator: torch.Generator | None = None, *, eot_samples: int = 1) -> None:
        eps = check_eps(eps)
        super().__init__(model, eps=eps, steps=check_count(steps, "steps"),
                         step_size=_check_step_size(step_size, eps),
                         restarts=check_count(restarts, "restarts"),
                         random_start=bool(random_start), generator=_check_generator(generator),
                         eot_samples=check_eot_samples(eot_samples))
