r"""The small CIFAR-10 networks of the TisODE chapter (Yan et al., ICLR 2020; Yan's thesis, chapter 3,
Table 3.9): a CNN, a neural ODE (ODEnet) and a time-invariant steady neural ODE (TisODE).

All three share the feature extractor (three convolutions with GroupNorm and ReLU, 3 → 16 → 32 → 64
channels, strides 1, 2, 2) and the classifier (average pooling, Linear(64, 10)); they differ in the
middle, built from two 64-channel convolutions with GroupNorm and ReLU:

- ``cnn``: the two layers applied once;
- ``odenet``: the ODE :math:`\dot z = f_\theta(z, t)` on :math:`[0, T]` (Eq. 3.1) with the two
  layers as :math:`f_\theta`, the time entering as an extra constant input channel of each
  convolution (Chen et al. 2018), :math:`z_{out} = z(T)`;
- ``tisode``: the time-invariant :math:`\dot z = f_\theta(z)` (Eq. 3.2), exactly the CNN's
  parameters, trained with the steady-state loss (Eq. 3.5)

  .. math:: L_{ss} = \sum_i \Big\| \int_T^{2T} |f_\theta(z_i(t))|\, dt \Big\|_2

  weighted by ``steady_weight`` (0.1), computed by integrating :math:`|f|` beside :math:`z` to 2T.

The ODE is solved by torchdiffeq (``pip install virolbi[ode]``) with a fixed-step method (Euler by
default, ``steps`` per unit time) so that the cost is predictable, and gradients are taken by
back-propagating through the solver's operations: the exact gradient of the computed function
(no adjoint method), which is also what the attacks see.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from virolbi.errors import InputError

__all__ = ["ODENET_KINDS", "SmallODENet", "ODEFunc", "ODEBlock", "odenet_small"]

ODENET_KINDS = ("cnn", "odenet", "tisode")


def _conv_gn_relu(cin: int, cout: int, stride: int = 1, groups: int = 8) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(min(groups, cout), cout),
                         nn.ReLU())


class _TimeConv(nn.Module):
    """A 3×3 convolution that also sees the time as a constant input channel (Chen et al. 2018)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, channels, 3, 1, 1)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        tt = torch.ones_like(z[:, :1]) * t
        return self.conv(torch.cat([tt, z], dim=1))


class ODEFunc(nn.Module):
    """The dynamics :math:`f_\\theta`: two (conv, GroupNorm, ReLU) layers of ``channels`` channels;
    with ``time_dependent`` each convolution also sees ``t``.

    Counts its evaluations in ``nfe`` (reset by the block before each solve).
    """

    def __init__(self, channels: int = 64, time_dependent: bool = False, groups: int = 8) -> None:
        super().__init__()
        self.time_dependent = bool(time_dependent)
        conv = (lambda: _TimeConv(channels)) if time_dependent else (
            lambda: nn.Conv2d(channels, channels, 3, 1, 1))
        self.conv1, self.conv2 = conv(), conv()
        self.norm1 = nn.GroupNorm(min(groups, channels), channels)
        self.norm2 = nn.GroupNorm(min(groups, channels), channels)
        self.nfe = 0

    def _conv(self, conv: nn.Module, t: Tensor, z: Tensor) -> Tensor:
        return conv(t, z) if self.time_dependent else conv(z)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        self.nfe += 1
        z = torch.relu(self.norm1(self._conv(self.conv1, t, z)))
        return torch.relu(self.norm2(self._conv(self.conv2, t, z)))


class _WithSteadyIntegral(nn.Module):
    """The augmented dynamics of (z, s): :math:`\\dot z = f(z)`, :math:`\\dot s = |f(z)|`."""

    def __init__(self, func: ODEFunc) -> None:
        super().__init__()
        self.func = func

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        dz = self.func(t, state[0])
        return dz, dz.abs()


class ODEBlock(nn.Module):
    """:math:`z(T)` from :math:`z(0) = z_{in}` under ``func``; for a TisODE in training also the
    steady-state loss of the batch (:attr:`steady_loss`, summed over the samples, Eq. 3.5).

    Parameters
    ----------
    func : ODEFunc
    T : float
        Integration time (1).
    method : str
        A fixed-step torchdiffeq method: ``"euler"`` (default), ``"midpoint"``, ``"rk4"``.
    steps : int
        Steps per unit time (step size 1/steps).
    steady : bool
        Compute the steady-state integral from T to 2T in training.
    """

    def __init__(self, func: ODEFunc, T: float = 1.0, method: str = "euler", steps: int = 10,
                 steady: bool = False) -> None:
        super().__init__()
        if method not in ("euler", "midpoint", "rk4"):
            raise InputError(f"ode method must be euler, midpoint or rk4 (fixed steps), got {method!r}")
        self.func, self.T, self.method, self.steps = func, float(T), method, int(steps)
        self.steady = bool(steady)
        self.steady_loss: Tensor | None = None

    def _odeint(self) -> Any:
        try:
            from torchdiffeq import odeint
        except ImportError:
            raise InputError("the ODE networks need torchdiffeq: pip install virolbi[ode]") from None
        return odeint

    def forward(self, z: Tensor) -> Tensor:
        odeint = self._odeint()
        self.func.nfe = 0
        options = {"step_size": 1.0 / self.steps}
        if self.steady and self.training:
            times = torch.tensor([0.0, self.T, 2 * self.T], dtype=z.dtype, device=z.device)
            zs, ss = odeint(_WithSteadyIntegral(self.func), (z, torch.zeros_like(z)), times,
                            method=self.method, options=options)
            self.steady_loss = (ss[2] - ss[1]).flatten(1).norm(dim=1).sum()
            return zs[1]
        times = torch.tensor([0.0, self.T], dtype=z.dtype, device=z.device)
        self.steady_loss = None
        return odeint(self.func, z, times, method=self.method, options=options)[1]


class SmallODENet(nn.Module):
    """The thesis's CIFAR-10 network (Table 3.9) as a CNN, an ODEnet or a TisODE (see the module).

    Parameters
    ----------
    num_classes : int
    kind : {"cnn", "odenet", "tisode"}
    T, method, steps : see :class:`ODEBlock`
    steady_weight : float
        Weight of the steady-state loss of a TisODE in training (0.1).

    Examples
    --------
    >>> net = SmallODENet(10, "cnn")
    >>> net(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, kind: str = "tisode", T: float = 1.0,
                 method: str = "euler", steps: int = 10, steady_weight: float = 0.1) -> None:
        super().__init__()
        if kind not in ODENET_KINDS:
            raise InputError(f"kind must be one of {', '.join(ODENET_KINDS)}, got {kind!r}")
        self.kind, self.steady_weight = kind, float(steady_weight)
        self.features = nn.Sequential(_conv_gn_relu(3, 16), _conv_gn_relu(16, 32, 2),
                                      _conv_gn_relu(32, 64, 2))
        if kind == "cnn":
            self.middle: nn.Module = nn.Sequential(_conv_gn_relu(64, 64), _conv_gn_relu(64, 64))
        else:
            func = ODEFunc(64, time_dependent=kind == "odenet")
            self.middle = ODEBlock(func, T, method, steps, steady=kind == "tisode")
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.middle(self.features(x)))

    def auxiliary_loss(self) -> Tensor | None:
        """``steady_weight`` × the steady-state loss of the last training batch (summed), or None."""
        loss = getattr(self.middle, "steady_loss", None)
        return None if loss is None or self.steady_weight == 0 else self.steady_weight * loss


def odenet_small(num_classes: int = 10, *, kind: str = "tisode", T: float = 1.0,
                 method: str = "euler", steps: int = 10, steady_weight: float = 0.1) -> SmallODENet:
    """A :class:`SmallODENet` (registry name ``"odenet_small"``)."""
    return SmallODENet(num_classes, kind, T, method, steps, steady_weight)
