r"""Auto-PGD (Croce & Hein, ICML 2020), untargeted or targeted, L∞ — ART's implementation.

APGD is PGD with a momentum term and a step size that halves at fixed checkpoints when the loss
stops rising, from :math:`\eta_0 = 2\varepsilon`; :math:`x` is kept in
:math:`\mathcal{B}_\infty(x_0, \varepsilon) \cap [0, 1]^d`. The search is
``art.attacks.evasion.AutoProjectedGradientDescent`` (``pip install 'virolbi[attacks]'``); this
module only chooses the loss and the targets and hands ART the function the threat model names:

- ``loss="ce"``: cross-entropy (AutoAttack's APGD-CE);
- ``loss="dlr"``: ART's difference-of-logits ratio
  :math:`-(z_y - \max_{i \ne y} z_i)/(z_{\pi_1} - z_{\pi_3})` (APGD-DLR; with ``targets``, the
  same loss on the target label, minimised: ART's APGD-T);
- ``loss="margin"``: the Carlini-Wagner margin :math:`\max_{i \ne y} z_i - z_y` (targeted: on
  the target label, minimised), our stand-in for FAB-T, which ART 1.20 does not have.

With ``targets = k``, the attack is run towards the classes of the 2nd … (k+1)-th largest clean
logits, one after the other, each on the images no earlier target has broken (AutoAttack's
APGD-T). ε on [0, 1] pixels, a number or one per channel (the normalised convention:
:mod:`virolbi.attacks.art_estimator` rescales the channels so ART's scalar ball is exact).

References
----------
F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from virolbi.attacks.art_estimator import (EOTEstimator, art_classifier, from_art, import_art,
                                           numpy_seed, scaled_radius, to_art)
from virolbi.attacks.base import (check_count, check_eot_samples, check_eps, check_images,
                                  check_labels, check_model, eval_mode)
from virolbi.errors import InputError

__all__ = ["APGD_LOSSES", "MarginLoss", "apgd"]

#: Our loss names → ART's ``loss_type`` (None: the estimator's own loss, here :class:`MarginLoss`).
APGD_LOSSES = {"ce": "cross_entropy", "dlr": "difference_logits_ratio", "margin": None}


class MarginLoss(nn.Module):
    r"""The CW margin :math:`\max_{i \ne y} z_i - z_y` per image, for ART (one-hot labels; its
    ``reduction`` attribute is set by ART to ``"none"``, ``"mean"`` or ``"sum"``).

    Examples
    --------
    >>> MarginLoss(reduction="none")(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]]))
    tensor([2.])
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: Tensor, y: Tensor) -> Tensor:
        y = torch.as_tensor(y, device=logits.device)
        label = y.argmax(dim=1) if y.ndim == 2 else y.long()
        true = logits.gather(1, label[:, None])[:, 0]
        other = logits.masked_fill(nn.functional.one_hot(label, logits.shape[1]).bool(), -torch.inf)
        margin = other.max(dim=1).values - true
        return {"none": margin, "sum": margin.sum()}.get(self.reduction, margin.mean())


def _check_loss(loss: Any, targets: int, num_classes: int) -> None:
    if loss not in APGD_LOSSES:
        raise InputError(f"loss must be one of {', '.join(APGD_LOSSES)}, got {loss!r}")
    if loss == "dlr" and num_classes < 3:
        raise InputError(f"the DLR loss needs at least 3 classes, the model has {num_classes}")
    if targets > num_classes - 1:
        raise InputError(f"targets must be at most {num_classes - 1} (classes - 1), got {targets}")


def _art_apgd(model: Any, x: Tensor, scale: Tensor | None, radius: float, num_classes: int,
              loss: str, targeted: bool, iterations: int, restarts: int, eot_samples: int) -> Any:
    art = import_art()
    estimator = art_classifier(model, x, scale, num_classes,
                               MarginLoss() if loss == "margin" else None)
    attack = art.attacks.evasion.AutoProjectedGradientDescent(
        estimator, norm=np.inf, eps=radius, eps_step=2 * radius, max_iter=iterations,
        targeted=targeted, nb_random_init=restarts, batch_size=max(1, x.shape[0]),
        loss_type=APGD_LOSSES[loss], verbose=False)
    if eot_samples > 1:
        attack._estimator = EOTEstimator(attack.estimator, eot_samples)
    return attack


def _predict(model: Any, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x)


def apgd(model: Any, x: Tensor, y: Tensor, eps: Any, *, loss: str = "ce", targets: int = 0,
         iterations: int = 100, restarts: int = 1, eot_samples: int = 1, seed: int = 0) -> Tensor:
    r"""L∞ APGD adversarial images (ART's ``AutoProjectedGradientDescent``).

    Parameters
    ----------
    model : nn.Module or callable
        The attacked function, images ``(B, C, H, W)`` in [0, 1] to logits (the classifier, or the
        pipeline a threat model builds); eval mode during the attack, flags restored.
    x, y : Tensor
        Clean images in [0, 1] and integer labels ``(B,)``.
    eps : float or sequence of float
        L∞ radius on [0, 1] pixels, or one per channel (ε·σ_c in the normalised convention).
    loss : {"ce", "dlr", "margin"}
        Cross-entropy, ART's DLR, or the CW margin (see the module docstring).
    targets : int, default 0
        0: untargeted. k ≥ 1: targeted runs towards the k most likely wrong classes in turn.
    iterations : int, default 100
        APGD iterations per run (AutoAttack: 100).
    restarts : int, default 1
        Random starts per run (ART ``nb_random_init``).
    eot_samples : int, default 1
        Loss and gradient averaged over this many forward passes (EOT), for random models.
    seed : int, default 0
        Seeds ART's NumPy draws (the global NumPy state is restored).

    Returns
    -------
    Tensor
        :math:`\|x' - x\|_\infty \le \varepsilon` (per channel), values in [0, 1]; an image no
        run broke is returned as ART returns it (unchanged).
    """
    check_model(model)
    x = check_images(x)
    y = check_labels(y, x)
    eps = check_eps(eps)
    iterations, restarts = check_count(iterations, "iterations"), check_count(restarts, "restarts")
    eot_samples = check_eot_samples(eot_samples)
    targets = int(targets)
    radius, scale = scaled_radius(eps, x)
    if radius == 0 or x.shape[0] == 0:
        return x.clone()
    with eval_mode(model), numpy_seed(seed):
        logits = _predict(model, x)
        _check_loss(loss, targets, logits.shape[1])
        attack = _art_apgd(model, x, scale, radius, logits.shape[1], loss, targets > 0, iterations,
                           restarts, eot_samples)
        if targets == 0:
            return from_art(attack.generate(to_art(x, scale), y=y.cpu().numpy()), x, scale, eps)
        return _targeted(model, attack, x, y, logits, targets, scale, eps)


def _targeted(model: Any, attack: Any, x: Tensor, y: Tensor, logits: Tensor, targets: int,
              scale: Tensor | None, eps: Any) -> Tensor:
    """Run ``attack`` towards each of the ``targets`` most likely wrong classes, each on the images
    still classified correctly."""
    order = logits.argsort(dim=1, descending=True)
    out, left = x.clone(), torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for rank in range(targets):
        idx = left.nonzero()[:, 0]
        if idx.numel() == 0:
            break
        wrong = order[idx][order[idx] != y[idx, None]].view(len(idx), -1)
        z = attack.generate(to_art(x[idx], scale), y=wrong[:, rank].cpu().numpy())
        x_adv = from_art(z, x[idx], scale, eps)
        broken = _predict(model, x_adv).argmax(dim=1) != y[idx]
        out[idx[broken]] = x_adv[broken]
        left[idx[broken]] = False
    return out
