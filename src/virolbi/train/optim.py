r"""The optimiser of the trainer and the lookahead of the weights.

:func:`build_optimizer` makes SGD (optionally Nesterov) or AdamW; with ``norm_bias_lr_scale`` = s
the biases of the normalisation layers get the learning rate ``s · lr`` and the weight decay
``wd / s``, so their absolute decay per step (``lr · wd``) is unchanged (airbench's "bias scaler" 64).

:class:`Lookahead` keeps a slow copy :math:`\bar\theta` of every floating-point entry of the state
dict (weights and BatchNorm statistics); every ``every`` steps

.. math:: \bar\theta \leftarrow \alpha_k \bar\theta + (1-\alpha_k)\theta,\qquad \theta \leftarrow \bar\theta,
          \qquad \alpha_k = \text{decay}\cdot (k/K)^{\text{power}}

(``k`` the step, ``K`` the total; airbench94: every 5, decay 0.95⁵, power 3), and after the last step
the weights become :math:`\bar\theta`.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["build_optimizer", "Lookahead"]


def build_optimizer(optim: Mapping[str, Any], net: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters, with the normalisation biases in their own group
    (learning rate × ``norm_bias_lr_scale``, weight decay ÷ it) and PNI's noise scales in another
    (no weight decay, which would pull them towards 0 whatever their use).

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    >>> opt = build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
    ...                        "weight_decay": 1e-3, "norm_bias_lr_scale": 64.0}, net)
    >>> [(round(g["lr"], 6), round(g["weight_decay"], 9), len(g["params"])) for g in opt.param_groups]
    [(0.1, 0.001, 3), (6.4, 1.5625e-05, 1)]
    """
    from virolbi.models.pni import weight_noise_layers

    scale = float(optim.get("norm_bias_lr_scale") or 1.0)
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    norm_biases = {id(m.bias) for m in net.modules()
                   if isinstance(m, norm_types) and getattr(m, "bias", None) is not None}
    noise_scales = {id(m.alpha) for m in weight_noise_layers(net)}  # PNI: no decay towards 0
    params = [p for p in net.parameters() if p.requires_grad]
    lr, wd = optim["lr"], optim["weight_decay"]
    special = norm_biases | noise_scales if scale != 1.0 else noise_scales
    groups = [{"params": [p for p in params if id(p) not in special], "lr": lr, "weight_decay": wd}]
    if scale != 1.0:
        groups.append({"params": [p for p in params if id(p) in norm_biases], "lr": lr * scale,
                       "weight_decay": wd / scale})
    groups.append({"params": [p for p in params if id(p) in noise_scales], "lr": lr,
                   "weight_decay": 0.0})
    groups = [g for g in groups if g["params"]]
    if optim["name"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim["momentum"],
                               nesterov=optim["nesterov"], weight_decay=wd)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)


class Lookahead:
    """Slow weights pulled towards the fast ones every ``every`` steps (see the module docstring).

    Examples
    --------
    >>> net = nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad(): _ = net.weight.fill_(0.0)
    >>> la = Lookahead(net, every=1, decay=0.5, power=0.0, total_steps=2)
    >>> with torch.no_grad(): _ = net.weight.fill_(1.0)
    >>> la.after_step(net, 1); net.weight.item()     # 0.5·0 + 0.5·1
    0.5
    """

    def __init__(self, net: nn.Module, every: int, decay: float, power: float,
                 total_steps: int) -> None:
        self.every, self.decay, self.power, self.total = int(every), float(decay), float(power), int(total_steps)
        self.slow = {k: v.detach().clone() for k, v in net.state_dict().items()
                     if v.is_floating_point()}

    def alpha(self, step: int) -> float:
        """The weight of the slow copy at step ``step`` (1-based count of optimiser steps)."""
        return self.decay * (step / self.total) ** self.power

    @torch.no_grad()
    def after_step(self, net: nn.Module, step: int) -> None:
        """Call after optimiser step number ``step`` (1-based)."""
        state = net.state_dict()
        if step % self.every == 0:
            a = self.alpha(step)
            for k, slow in self.slow.items():
                slow.lerp_(state[k], 1.0 - a)
                state[k].copy_(slow)
        if step >= self.total:
            for k, slow in self.slow.items():
                state[k].copy_(slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.slow.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for k in self.slow:
            self.slow[k].copy_(state[k])
