r"""Parametric Noise Injection on the weights (PNI-W; He, Rakin, Fan, CVPR 2019), for any model.

Every trainable convolution computes with noisy weights, in training *and* at test time:

.. math:: \tilde W = W + \alpha\,\eta, \qquad \eta \sim \mathcal N(0, \sigma_W^2),

where :math:`\sigma_W` is the standard deviation of the layer's weights (not differentiated, as in
the paper) and :math:`\alpha` a trainable scale, one per layer (initial 0.25) or one per output
channel (``channelwise``). Trained with adversarial training (the paper: PGD, loss
0.5 clean + 0.5 adversarial; :mod:`virolbi.train.adversarial`), α settles where the noise helps
against the attack. Since the model is random, attacks must average gradients over the noise
(EOT); the evaluation reports the EOT sample count.

``create_model(..., weight_noise={"alpha": 0.25, "channelwise": False})`` (config:
``model.kwargs.weight_noise``) builds such a model; :func:`set_weight_noise` switches the noise
off and on (off: the deterministic network with the learnt W).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from virolbi.checks import check_positive
from virolbi.errors import InputError

__all__ = ["NoisyWeights", "add_weight_noise", "set_weight_noise", "weight_noise_layers",
           "default_eot_samples", "EOT_SAMPLES"]

#: Forward passes averaged per attack gradient (EOT) for a model with weight noise, by default.
EOT_SAMPLES = 8


class NoisyWeights:
    """Mixin that makes an ``nn.Conv2d`` (or subclass) compute with PNI weights.

    The class of each converted convolution becomes a subclass of its own class and this mixin, so
    padding, stride and initialisation are untouched; it gains the parameter ``alpha`` and the flag
    ``noise`` (True: noisy weights in training and at test time).
    """

    alpha: nn.Parameter
    noise: bool

    def noisy_weight(self) -> Tensor:
        w = self.weight  # type: ignore[attr-defined]
        if not self.noise:
            return w
        sigma = w.detach().std()
        return w + self.alpha * sigma * torch.randn_like(w)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.noisy_weight(), self.bias)  # type: ignore[attr-defined]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", weight_noise={'on' if self.noise else 'off'}"  # type: ignore[misc]


_NOISY_CLASSES: dict[type, type] = {}


def _noisy_class(cls: type) -> type:
    if cls not in _NOISY_CLASSES:
        _NOISY_CLASSES[cls] = type(f"Noisy{cls.__name__}", (NoisyWeights, cls), {})
    return _NOISY_CLASSES[cls]


def add_weight_noise(model: nn.Module, alpha: float = 0.25, channelwise: bool = False) -> int:
    """Convert every trainable ``nn.Conv2d`` of ``model`` to PNI (in place); the number converted.

    Frozen convolutions (``requires_grad`` off, e.g. the fast network's patch whitening, fitted to
    the data) are left as they are.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    >>> add_weight_noise(net), [tuple(m.alpha.shape) for m in weight_noise_layers(net)]
    (2, [(1,), (1,)])
    """
    alpha = check_positive(alpha, "weight_noise.alpha", strict=False)
    count = 0
    for module in model.modules():
        if (isinstance(module, nn.Conv2d) and not isinstance(module, NoisyWeights)
                and module.weight.requires_grad):
            module.__class__ = _noisy_class(type(module))
            shape = (module.out_channels, 1, 1, 1) if channelwise else (1,)
            module.alpha = nn.Parameter(torch.full(shape, alpha, device=module.weight.device))
            module.noise = True
            count += 1
    return count


def weight_noise_layers(model: nn.Module) -> list[nn.Module]:
    """The PNI convolutions of ``model``."""
    return [m for m in model.modules() if isinstance(m, NoisyWeights)]


def set_weight_noise(model: nn.Module, enabled: bool) -> int:
    """Switch the weight noise of every PNI layer on or off; the number of layers switched."""
    layers = weight_noise_layers(model)
    for m in layers:
        m.noise = bool(enabled)
    return len(layers)


def default_eot_samples(model: nn.Module) -> int:
    """:data:`EOT_SAMPLES` for a model with active weight noise (a randomised model), else 1."""
    return EOT_SAMPLES if any(m.noise for m in weight_noise_layers(model)) else 1


def weight_noise_options(value: Any) -> dict[str, Any] | None:
    """The ``weight_noise`` model option: None, or ``{"alpha": float, "channelwise": bool}``."""
    if value is None or value is False:
        return None
    if value is True:
        return {"alpha": 0.25, "channelwise": False}
    if not isinstance(value, Mapping) or set(value) - {"alpha", "channelwise"}:
        raise InputError(f"weight_noise must be true or a mapping with alpha and channelwise, got "
                         f"{value!r}")
    return {"alpha": float(value.get("alpha", 0.25)), "channelwise": bool(value.get("channelwise",
                                                                                     False))}
