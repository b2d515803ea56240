r"""CIFS: channel-wise importance-based feature selection (Yan et al., ICML 2021; Yan's thesis,
chapter 4), a layer that re-weights the channels of a feature map by their relevance to the
prediction.

For a feature map :math:`z \in \mathbb{R}^{C \times H \times W}` a probe :math:`A` (global average
pooling and a linear layer) makes a raw prediction :math:`p = A(z)`; the relevance of channel
:math:`c` is the gradient of the sum of the top-:math:`k` logits (:math:`k = 2`) with respect to a
shift :math:`\delta_c` of the whole channel (Eq. 4.1),

.. math:: g_c = \frac{\partial}{\partial \delta_c} \sum_{i \in \mathrm{top}_k(p)} A(z + \delta 1^\top)_i
              \Big|_{\delta = 0},

where in training the top-1 class is replaced by the true label; the mask is a softmax of the
relevances, scaled (Eq. 4.2 with the softmax importance-mask function, temperature 1, scale 2 as in
the authors' code), and the layer returns :math:`\bar z = z \otimes m`. The probe's cross-entropy
enters the training loss (Eq. 4.3):

.. math:: \ell_\beta = \frac{1}{1+\beta}\,\ell_{ce}(p, y)
          + \frac{\beta}{(1+\beta)|I|} \sum_{l \in I} \ell_{ce}(p^l, y),\qquad \beta = |I|.

Gradients. In training the relevance is computed from detached features (the authors' choice: the
mask trains the probe, not the backbone). In evaluation mode the mask is differentiated exactly
with respect to its input when gradients are on, so a white-box attack sees the true gradient of
the function it attacks (no masking by a detached branch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from virolbi.errors import InputError

__all__ = ["CIFS", "cifs_layers", "set_cifs_labels", "cifs_loss"]


class CIFS(nn.Module):
    """The CIFS layer for feature maps with ``channels`` channels (Eq. 4.1–4.2).

    Parameters
    ----------
    channels, num_classes : int
    k : int
        The top-k logits whose gradient gives the relevance (2).
    temperature : float
        Softmax temperature of the importance mask (1).
    scale : float
        The mask is ``scale * softmax(g / temperature)`` (2, the authors' code).

    Attributes
    ----------
    probe_logits : Tensor or None
        The raw prediction :math:`p^l` of the last forward pass (for the loss, Eq. 4.3).
    labels : Tensor or None
        True labels of the current training batch (:func:`set_cifs_labels`): in training they
        replace the top-1 class of the relevance.

    Examples
    --------
    >>> layer = CIFS(8, 10).eval()
    >>> z = torch.rand(2, 8, 4, 4)
    >>> out = layer(z)
    >>> out.shape, bool((layer.mask(z) >= 0).all())
    (torch.Size([2, 8, 4, 4]), True)
    """

    def __init__(self, channels: int, num_classes: int, k: int = 2, temperature: float = 1.0,
                 scale: float = 2.0) -> None:
        super().__init__()
        if k < 1 or k > num_classes:
            raise InputError(f"cifs k must be in [1, {num_classes}], got {k}")
        self.probe = nn.Linear(channels, num_classes)
        self.k, self.temperature, self.scale = int(k), float(temperature), float(scale)
        self.probe_logits: Tensor | None = None
        self.labels: Tensor | None = None

    def relevance(self, z: Tensor) -> Tensor:
        """``(B, C)``: Eq. 4.1, the gradient of the top-k probe logits w.r.t. a channel shift."""
        exact = not self.training and torch.is_grad_enabled() and z.requires_grad
        with torch.enable_grad():
            feat = z if exact else z.detach().requires_grad_(True)
            logits = self.probe(feat.mean(dim=(2, 3)))
            top = logits.topk(self.k, dim=1).indices
            if self.training and self.labels is not None:
                top = torch.cat([self.labels.view(-1, 1).to(top.device), top[:, 1:]], dim=1)
            score = logits.gather(1, top).sum()
            grad, = torch.autograd.grad(score, feat, create_graph=self.training or exact)
        return grad.sum(dim=(2, 3))   # a channel-wide shift moves every position of the channel

    def mask(self, z: Tensor) -> Tensor:
        """``(B, C)`` non-negative importance scores (Eq. 4.2, softmax mask)."""
        return self.scale * F.softmax(self.relevance(z) / self.temperature, dim=1)

    def forward(self, z: Tensor) -> Tensor:
        self.probe_logits = self.probe(z.mean(dim=(2, 3)))
        return z * self.mask(z)[:, :, None, None]


def cifs_layers(model: nn.Module) -> list[CIFS]:
    """The CIFS layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, CIFS)]


def set_cifs_labels(model: nn.Module, labels: Tensor | None) -> None:
    """Give every CIFS layer the true labels of the batch about to be trained on (or None)."""
    for m in cifs_layers(model):
        m.labels = labels


def cifs_loss(model: nn.Module, logits: Tensor, y: Tensor, label_smoothing: float = 0.0,
              beta: float | None = None) -> Tensor:
    r"""Summed Eq. 4.3 loss: :math:`\frac{1}{1+\beta}\ell(p) + \frac{\beta}{(1+\beta)|I|}\sum_l
    \ell(p^l)` over the batch, β = |I| by default (the thesis's choice); the plain cross-entropy
    for a model without CIFS layers."""
    main = F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=label_smoothing)
    layers = [m for m in cifs_layers(model) if m.probe_logits is not None]
    if not layers:
        return main
    beta = float(len(layers) if beta is None else beta)
    probes = sum(F.cross_entropy(m.probe_logits.float(), y, reduction="sum",
                                 label_smoothing=label_smoothing) for m in layers)
    return main / (1 + beta) + beta / ((1 + beta) * len(layers)) * probes


def cifs_options(value: Any) -> dict[str, Any] | None:
    """The ``cifs`` model option: None, true, or a mapping of :class:`CIFS`'s keyword arguments."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict) or set(value) - {"k", "temperature", "scale"}:
        raise InputError(f"cifs must be true or a mapping with k, temperature, scale; got {value!r}")
    return dict(value)
