r"""The CSC layer of SDNet (Li et al., "Revisiting sparse convolutional model for visual recognition",
NeurIPS 2022): a convolutional sparse code of the input instead of a convolution.

.. math:: z_* = \arg\min_{z \ge 0}\ \lambda \|z\|_1 + \tfrac12 \|x - \mathcal A(z)\|_2^2   \qquad (4)

with :math:`\mathcal A(z) = \sum_c d_c * z_c` a transposed convolution by a learnable dictionary of
unit-norm atoms :math:`d_c` (the constraint set :math:`\mathcal N`, kept by normalising the atoms in
every forward pass). The forward pass unrolls ``steps`` iterations of FISTA (Beck & Teboulle 2009)
from :math:`z = 0` with the non-negative soft threshold

.. math:: z \leftarrow \max\!\big(0,\ y - (\mathcal A^\top(\mathcal A(y) - x) + \lambda) / L\big),

:math:`L = \|\mathcal A\|_2^2` the Lipschitz constant of the gradient, estimated by power
iteration (warm-started across training steps, like spectral normalisation; fixed per image size
and dictionary in evaluation, so the layer is deterministic there; made an upper bound by a 2 %
margin). Back-propagation runs through the unrolled iterations (exact for the computed function).
SDNet uses 2 iterations and λ = 0.1 in training; λ can be changed at test time
(:func:`set_csc_lambda`), which is what its robust inference (Algorithm 1,
:mod:`virolbi.evaluate.sdnet`) does from the layer's residual :math:`\|x - \mathcal A(z_*)\|`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from virolbi.checks import check_positive
from virolbi.errors import InputError

__all__ = ["CSCLayer", "csc_layers", "set_csc_lambda", "csc_residual"]


class CSCLayer(nn.Module):
    """Convolutional sparse coding layer (SDNet's Eq. 4), ``(B, in_channels, H, W)`` →
    ``(B, atoms, H, W)``.

    Parameters
    ----------
    in_channels, atoms : int
        Input channels and dictionary atoms (output channels).
    kernel_size : int
        Odd atom size (3).
    lam : float
        λ of Eq. 4 (0.1).
    steps : int
        Unrolled FISTA iterations (2).
    power_iterations : int
        Power-iteration steps per call for the Lipschitz constant (warm-started).

    Attributes
    ----------
    last_residual : Tensor or None
        ``(B,)`` the residual norm per image divided by sqrt(its size) of the last forward pass.

    Examples
    --------
    >>> layer = CSCLayer(3, 8)
    >>> z = layer(torch.rand(2, 3, 8, 8))
    >>> z.shape, bool((z >= 0).all())
    (torch.Size([2, 8, 8, 8]), True)
    """

    def __init__(self, in_channels: int = 3, atoms: int = 64, kernel_size: int = 3, lam: float = 0.1,
                 steps: int = 2, power_iterations: int = 2) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise InputError(f"csc kernel_size must be odd, got {kernel_size}")
        if steps < 1:
            raise InputError(f"csc steps must be >= 1, got {steps}")
        self.weight = nn.Parameter(torch.randn(atoms, in_channels, kernel_size, kernel_size))
        self.lam = check_positive(lam, "csc lam", strict=False)
        self.steps, self.power_iterations = int(steps), int(power_iterations)
        self.padding = kernel_size // 2
        self.register_buffer("power_vector", torch.empty(0), persistent=False)
        self._eval_lipschitz: dict = {}
        self.last_residual: Tensor | None = None

    def dictionary(self) -> Tensor:
        """The atoms scaled to unit Frobenius norm (the set :math:`\\mathcal N`)."""
        w = self.weight
        return w / w.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    def synthesis(self, z: Tensor, d: Tensor | None = None) -> Tensor:
        """:math:`\\mathcal A(z)`: the image the code ``z`` represents."""
        return F.conv_transpose2d(z, self.dictionary() if d is None else d, padding=self.padding)

    def analysis(self, x: Tensor, d: Tensor | None = None) -> Tensor:
        """:math:`\\mathcal A^\\top(x)`, the adjoint of :meth:`synthesis`."""
        return F.conv2d(x, self.dictionary() if d is None else d, padding=self.padding)

    @torch.no_grad()
    def lipschitz(self, d: Tensor, height: int, width: int, iterations: int | None = None) -> float:
        """An upper estimate of :math:`\\|\\mathcal A^\\top \\mathcal A\\|_2` at this image size."""
        shape = (1, d.shape[0], height, width)
        if d.dtype not in (torch.float32, torch.float64):
            d = d.float()  # a bfloat16 estimate is off by ~1 %
        v = self.power_vector
        if v.shape != shape or not torch.isfinite(v).all():
            v = torch.randn(shape, device=d.device, dtype=d.dtype)
        with torch.autocast(d.device.type, enabled=False):
            for _ in range(max(1, self.power_iterations if iterations is None else iterations)):
                v = self.analysis(self.synthesis(v, d), d)
                v = v / v.norm().clamp_min(1e-12)
            norm = float(self.analysis(self.synthesis(v, d), d).norm())
        self.power_vector = v
        return 1.02 * max(norm, 1e-6)

    def _step(self, d: Tensor, height: int, width: int) -> float:
        """1/L: re-estimated (warm-started) at every training step, where the atoms move; fixed per
        image size and dictionary in evaluation, so that the layer is a deterministic function."""
        if self.training:
            return 1.0 / self.lipschitz(d, height, width)
        key = (height, width, self.weight._version, str(d.device), d.dtype)
        if self._eval_lipschitz.get("key") != key:
            lip = self.lipschitz(d, height, width, max(30, self.power_iterations))
            self._eval_lipschitz = {"key": key, "L": lip}
        return 1.0 / self._eval_lipschitz["L"]

    def forward(self, x: Tensor) -> Tensor:
        d = self.dictionary().to(x.dtype)
        step = self._step(d.detach(), x.shape[-2], x.shape[-1])
        z = y = torch.zeros(x.shape[0], d.shape[0], *x.shape[-2:], device=x.device, dtype=x.dtype)
        t = 1.0
        for _ in range(self.steps):
            grad = self.analysis(self.synthesis(y, d) - x, d)
            z_next = torch.relu(y - step * (grad + self.lam))
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            y = z_next + ((t - 1) / t_next) * (z_next - z)
            z, t = z_next, t_next
        residual = (x - self.synthesis(z, d)).flatten(1)
        self.last_residual = residual.norm(dim=1).detach() / math.sqrt(residual.shape[1])
        return z

    def extra_repr(self) -> str:
        a, c, k, _ = self.weight.shape
        return f"{c}, atoms={a}, kernel_size={k}, lam={self.lam}, steps={self.steps}"


def csc_layers(model: nn.Module) -> list[CSCLayer]:
    """The CSC layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, CSCLayer)]


def set_csc_lambda(model: nn.Module, lam: float) -> int:
    """Set λ of every CSC layer of ``model`` (robust inference); the number of layers."""
    lam = check_positive(lam, "lambda", strict=False)
    layers = csc_layers(model)
    for m in layers:
        m.lam = lam
    return len(layers)


def csc_residual(model: nn.Module) -> Tensor:
    """``(B,)`` the residual of the last forward pass averaged over the CSC layers (Algorithm 1)."""
    res = [m.last_residual for m in csc_layers(model) if m.last_residual is not None]
    if not res:
        raise InputError("the model has no CSC layer with a forward pass to read the residual from")
    return torch.stack(res).mean(dim=0)
