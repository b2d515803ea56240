"""Hooks by which a model takes part in its training: fitted to data before the first step, told
when an epoch starts.

- A module with ``fit_to_data(x)`` (e.g. :class:`virolbi.models.PatchWhitening`) is fitted by
  :func:`init_from_data` on the input it receives when the model sees a batch of training images.
- A module with ``on_epoch_start(epoch, epochs)`` is called by :func:`start_epoch` (e.g. to freeze a
  parameter after some epochs).
- A module with ``auxiliary_loss()`` adds it to the training loss (TisODE's steady-state loss).
- A model with CIFS layers (:mod:`virolbi.models.cifs`) is told the labels of each training batch
  (:func:`before_training_forward`) and trained on its own objective (:func:`training_loss`, Eq. 4.3
  of the CIFS chapter); every other model on the cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["init_from_data", "start_epoch", "data_fitted_modules", "before_training_forward",
           "training_loss"]


class _Stop(Exception):
    """Raised by the last hook: nothing after the fitted modules needs to run."""


def data_fitted_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that have ``fit_to_data``, in registration order."""
    return [m for m in model.modules() if callable(getattr(m, "fit_to_data", None))]


def init_from_data(model: nn.Module, x: torch.Tensor) -> int:
    """Fit every data-fitted module of ``model`` on its input for the batch ``x``; return their count.

    The model runs forward on ``x`` (no gradient, eval mode) with pre-hooks that fit each module on
    what it receives, so a module sees the output of the already-fitted modules before it
    (e.g. after the normalisation layer). The forward stops after the last one.

    Examples
    --------
    >>> from virolbi.models import create_model
    >>> net = create_model("airbench", width=0.25)
    >>> init_from_data(net, torch.rand(8, 3, 32, 32))
    1
    """
    targets = data_fitted_modules(model)
    if not targets:
        return 0
    last = targets[-1]

    def hook(module: nn.Module, args: tuple) -> None:
        module.fit_to_data(args[0])
        if module is last:
            raise _Stop

    handles = [m.register_forward_pre_hook(hook) for m in targets]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return len(targets)


def start_epoch(model: nn.Module, epoch: int, epochs: int) -> None:
    """Tell every module with ``on_epoch_start`` that epoch ``epoch`` (0-based) of ``epochs`` starts."""
    for m in model.modules():
        hook = getattr(m, "on_epoch_start", None)
        if callable(hook):
            hook(epoch, epochs)


def before_training_forward(model: nn.Module, y: torch.Tensor) -> None:
    """Give the model the true labels of the batch it is about to be trained (or attacked) on."""
    from virolbi.models.cifs import set_cifs_labels

    set_cifs_labels(model, y)


def training_loss(model: nn.Module, logits: torch.Tensor, y: torch.Tensor,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """The summed training loss of a batch: the model's own objective where it has one (CIFS:
    final and probe cross-entropies, Eq. 4.3), else the cross-entropy; plus the ``auxiliary_loss()``
    of every module that has one (TisODE's steady-state loss, Eq. 3.5 of its chapter)."""
    from virolbi.models.cifs import cifs_loss

    loss = cifs_loss(model, logits, y, label_smoothing)
    for m in model.modules():
        extra = m.auxiliary_loss() if callable(getattr(m, "auxiliary_loss", None)) else None
        if extra is not None:
            loss = loss + extra
    return loss
