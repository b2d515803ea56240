r"""Layer-wise relevance propagation (LRP; Bach et al. 2015, Montavon et al. 2019) for the project's
sequential networks, with BatchNorm folded into the convolutions.

The relevance of the target logit, :math:`R_L = f_t(x)` on the target unit, is propagated down
layer by layer:

- convolution, linear and pooling layers (linear maps :math:`z = W a + b`), the LRP-ε rule
  :math:`R^{in}_j = a_j \sum_k W_{kj} R_k / (z_k + \varepsilon\,\mathrm{sign}(z_k))`, computed with
  the gradient trick :math:`R^{in} = a \odot \nabla_a \big(z \cdot [R / (z + \varepsilon)]_{\text{const}}\big)`;
  max pooling passes each unit's relevance to its winner (the same trick);
- element-wise activations (ReLU, GELU), flattening and constant scalings pass relevance unchanged
  (the identity rule), so for a bias-free ReLU network :math:`\sum_j R^{0}_j = f_t(x)` up to ε
  (relevance conservation); biases absorb their share otherwise.

captum's LRP cannot take the fast network as it is (GELU, BatchNorm after max pooling, one GELU module
used several times), so the network is first rewritten as a plain layer list
(:func:`airbench_layers`): each BatchNorm is folded into the convolution before it. For
``conv → max-pool → BN`` this is exact because BN is a per-channel increasing affine map when its
scale :math:`\gamma/\sqrt{\sigma^2 + \epsilon}` is positive (the fast network's BN scale is frozen at
1), and such a map commutes with max pooling; :func:`fold_batchnorm` checks the sign.
The input normalisation is an element-wise affine map: relevance passes through it unchanged.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from virolbi.errors import InputError

__all__ = ["fold_batchnorm", "airbench_layers", "lrp", "lrp_maps"]

_LINEAR = (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d)
_IDENTITY = (nn.ReLU, nn.GELU, nn.Identity, nn.Flatten)


class Scale(nn.Module):
    """Multiplication by a constant (the fast network's 1/9 on the logits)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d, *, through_max_pool: bool = False) -> nn.Conv2d:
    """A convolution equal to ``bn(conv(x))`` in eval mode (also ``bn(maxpool(conv(x)))`` moved
    before the pool when ``through_max_pool``, which needs every BN scale > 0).

    Examples
    --------
    >>> conv, bn = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3).eval()
    >>> x = torch.rand(1, 2, 5, 5)
    >>> torch.allclose(fold_batchnorm(conv, bn)(x), bn(conv(x)), atol=1e-6)
    True
    """
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    if through_max_pool and not bool((scale > 0).all()):
        raise InputError("BatchNorm after max pooling folds into the convolution only with a "
                         "positive scale")
    out = copy.deepcopy(conv)
    out.weight = nn.Parameter(conv.weight.detach() * scale.view(-1, 1, 1, 1))
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    out.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
    return out


def airbench_layers(model: nn.Module) -> list[nn.Module]:
    """The fast network (:class:`~virolbi.models.airbench.AirbenchNet`, optionally inside a
    :class:`~virolbi.models.NormalizedModel`) as a plain LRP layer list, BatchNorm folded. The
    normalisation is left out (identity rule)."""
    from virolbi.models.airbench import AirbenchNet

    net = getattr(model, "backbone", model)
    if not isinstance(net, AirbenchNet):
        raise InputError(f"LRP is built for the fast network (airbench), got {type(net).__name__}")
    if net.tv is not None or getattr(net, "cifs", None) is not None:
        raise InputError("LRP does not handle the TV-layer or CIFS variants of the fast network")
    if not isinstance(net.whiten, nn.Conv2d) or any(
            type(m).__name__.startswith("Noisy") for m in net.modules()):
        raise InputError("LRP needs the plain fast network (no CSC stem, no weight noise)")
    layers: list[nn.Module] = [net.whiten, nn.GELU()]
    for g in net.layers:
        layers += [fold_batchnorm(g.conv1, g.norm1, through_max_pool=True), g.pool, nn.GELU(),
                   fold_batchnorm(g.conv2, g.norm2), nn.GELU()]
    layers += [net.pool, nn.Flatten(), net.head, Scale(net.scale)]
    return [m.eval() for m in layers]


def lrp(layers: Sequence[nn.Module], x: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """LRP-ε relevance of the input ``x`` ``(B, C, H, W)`` for the ``target`` logits ``(B,)``
    through ``layers`` (a plain sequence: linear maps, pools, activations, flatten, scalings)."""
    acts = [x.detach()]
    with torch.no_grad():
        for layer in layers:
            if not isinstance(layer, _LINEAR + _IDENTITY + (Scale,)):
                raise InputError(f"LRP has no rule for {type(layer).__name__}")
            acts.append(layer(acts[-1]))
    logits = acts[-1]
    relevance = torch.zeros_like(logits)
    idx = torch.arange(len(target))
    relevance[idx, target] = logits[idx, target]
    for layer, a in zip(reversed(layers), reversed(acts[:-1])):
        if isinstance(layer, nn.Flatten):
            relevance = relevance.reshape(a.shape)
        elif isinstance(layer, _LINEAR):
            a = a.clone().requires_grad_(True)
            z = layer(a)
            s = (relevance / (z + eps * torch.where(z >= 0, 1.0, -1.0))).detach()
            grad, = torch.autograd.grad((z * s).sum(), a)
            relevance = (a * grad).detach()
    return relevance


def lrp_maps(model: nn.Module, x: Tensor, target: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Pixel relevance maps ``(B, H, W)`` (summed over colour channels, signed) of the fast
    network for ``target`` (default: the predicted class)."""
    layers = airbench_layers(model)
    norm = getattr(model, "normalize", None)
    xn = norm(x) if norm is not None else x
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(1)
    return lrp(layers, xn, target, eps).sum(dim=1)
