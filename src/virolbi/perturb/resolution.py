r"""Low-resolution perturbation (paper §4.3, Table 3): downsample by a scale factor, upsample back with nearest.

The paper tests at scales 1/4 and 1/2 for 32×32 images and 1/7 and 1/4 for 224×224 images; the
image keeps its size but carries only :math:`\mathrm{round}(sH) \times \mathrm{round}(sW)` distinct
blocks.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from virolbi.checks import check_in_range
from virolbi.errors import InputError
from virolbi.perturb._validate import check_images, work_dtype

__all__ = ["LowResolution", "low_resolution"]

_DOWN_MODES = ("area", "bilinear", "bicubic")


def _check_scale(scale: object) -> float:
    return check_in_range(scale, "scale", 0.0, 1.0, low_open=True)


def _check_mode(mode: object) -> str:
    if mode not in _DOWN_MODES:
        raise InputError(f"mode must be one of {', '.join(_DOWN_MODES)}, got {mode!r}")
    return str(mode)


def low_resolution(x: Tensor, scale: float, *, mode: str = "area") -> Tensor:
    r"""Downsample to :math:`\mathrm{round}(sH) \times \mathrm{round}(sW)`, then nearest-upsample.

    .. math:: y = U_{\text{nearest}}\big(D_s(x)\big)

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in [0, 1].
    scale : float
        Factor :math:`s \in (0, 1]`; the smaller, the coarser (e.g. 0.25). 1 returns ``x``. Each side
        keeps at least one pixel.
    mode : {"area", "bilinear", "bicubic"}, default "area"
        Downsampling filter: "area" averages the input pixels under each output pixel (the block
        mean for integer factors); "bilinear" and "bicubic" use PyTorch's antialiased kernels.

    Returns
    -------
    Tensor
        Same shape, device and dtype as ``x``, in [0, 1]; for an integer factor :math:`1/s` it is
        constant on :math:`(1/s) \times (1/s)` blocks. Upsampling is ``"nearest-exact"``, which
        equals ``"nearest"`` for integer factors and is centred for the others.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4) / 15
    >>> (low_resolution(x, 0.5) * 15)[0, 0]
    tensor([[ 2.5000,  2.5000,  4.5000,  4.5000],
            [ 2.5000,  2.5000,  4.5000,  4.5000],
            [10.5000, 10.5000, 12.5000, 12.5000],
            [10.5000, 10.5000, 12.5000, 12.5000]])
    """
    check_images(x)
    s = _check_scale(scale)
    m = _check_mode(mode)
    h, w = x.shape[-2:]
    small = (max(1, round(h * s)), max(1, round(w * s)))
    if small == (h, w):
        return x.clone()
    xw = x.to(work_dtype(x))
    if m == "area":
        lo = F.adaptive_avg_pool2d(xw, small)
    else:
        lo = F.interpolate(xw, size=small, mode=m, align_corners=False, antialias=True)
    y = F.interpolate(lo, size=(h, w), mode="nearest-exact")
    return y.clamp(0.0, 1.0).to(x.dtype)


class LowResolution(nn.Module):
    r"""Module form of :func:`low_resolution`.

    Parameters
    ----------
    scale : float
        Factor in (0, 1].
    mode : str, default "area"
        Downsampling filter.

    Examples
    --------
    >>> import torch
    >>> LowResolution(0.25)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(self, scale: float, *, mode: str = "area") -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.mode = _check_mode(mode)

    def forward(self, x: Tensor) -> Tensor:
        return low_resolution(x, self.scale, mode=self.mode)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode!r}"
