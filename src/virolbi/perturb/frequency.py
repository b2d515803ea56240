r"""Low/high frequency split of images (paper §4.4, Table 4).

The centred 2-D spectrum of each channel is cut by a disk of radius :math:`r` around the zero
frequency (r = 6 for 32×32 images, following Wang et al. 2020): the inside gives the low-frequency
image, the outside the high-frequency one, and the two add up to the input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from virolbi.checks import check_positive
from virolbi.errors import InputError
from virolbi.perturb._validate import check_images, work_dtype

__all__ = ["FrequencyFilter", "frequency_split", "low_pass_mask"]

_PARTS = ("low", "high")


def low_pass_mask(height: int, width: int, radius: float, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> Tensor:
    r"""The disk mask of the centred spectrum: 1 where :math:`\|k - k_0\|_2 \le r`, else 0.

    Index :math:`k = (i, j)` of the ``fftshift``-ed spectrum, centre
    :math:`k_0 = (\lfloor H/2 \rfloor, \lfloor W/2 \rfloor)` (the zero frequency).

    Examples
    --------
    >>> low_pass_mask(5, 5, 1).int()
    tensor([[0, 0, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0]], dtype=torch.int32)
    """
    i = torch.arange(height, device=device, dtype=torch.float64) - height // 2
    j = torch.arange(width, device=device, dtype=torch.float64) - width // 2
    d2 = i[:, None] ** 2 + j[None, :] ** 2
    return (d2 <= float(radius) ** 2).to(dtype)


def frequency_split(x: Tensor, radius: float = 6.0) -> tuple[Tensor, Tensor]:
    r"""Split images into low- and high-frequency parts with a disk in the centred 2-D FFT.

    .. math:: x_{\text{low}} = \Re\,\mathcal F^{-1}\big(S^{-1}(M_r \odot S\,\mathcal F x)\big),
              \qquad x_{\text{high}} = x - x_{\text{low}}

    per channel, with :math:`\mathcal F` the 2-D DFT, :math:`S` the ``fftshift`` that centres the
    zero frequency and :math:`M_r` the disk mask of :func:`low_pass_mask`. By linearity
    :math:`x_{\text{high}}` is the same construction with the complementary mask :math:`1 - M_r`.

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in [0, 1].
    radius : float, default 6.0
        Disk radius in frequency bins (> 0); the larger, the more detail the low part keeps.
        6 for 32×32 images (paper, Table 4).

    Returns
    -------
    (Tensor, Tensor)
        ``low`` and ``high``, each with the shape, device and dtype of ``x``. They are not clipped:
        the high part is centred on 0 and the low part can overshoot [0, 1] slightly.

    References
    ----------
    H. Wang, X. Wu, Z. Huang, E. P. Xing, "High-frequency Component Helps Explain the
    Generalization of Convolutional Neural Networks", CVPR 2020.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> low, high = frequency_split(x, radius=6)
    >>> torch.allclose(low + high, x), abs(float(high.mean())) < 1e-6
    (True, True)
    """
    check_images(x)
    r = check_positive(radius, "radius")
    dt = work_dtype(x)
    xw = x.to(dt)
    h, w = x.shape[-2:]
    mask = low_pass_mask(h, w, r, dtype=dt, device=x.device)
    spec = torch.fft.fftshift(torch.fft.fft2(xw), dim=(-2, -1))
    low = torch.fft.ifft2(torch.fft.ifftshift(spec * mask, dim=(-2, -1))).real
    high = xw - low
    return low.to(x.dtype), high.to(x.dtype)


def _check_part(part: object) -> str:
    if part not in _PARTS:
        raise InputError(f"part must be 'low' or 'high', got {part!r}")
    return str(part)


class FrequencyFilter(nn.Module):
    r"""Keep one frequency part of the input (module form of :func:`frequency_split`).

    Parameters
    ----------
    part : {"low", "high"}, default "low"
        Which part to return.
    radius : float, default 6.0
        Disk radius in frequency bins.

    Examples
    --------
    >>> import torch
    >>> x = torch.full((1, 1, 8, 8), 0.5)
    >>> FrequencyFilter("high", 2)(x).abs().max().item() < 1e-6  # a constant has no high part
    True
    """

    def __init__(self, part: str = "low", radius: float = 6.0) -> None:
        super().__init__()
        self.part = _check_part(part)
        self.radius = check_positive(radius, "radius")

    def forward(self, x: Tensor) -> Tensor:
        low, high = frequency_split(x, self.radius)
        return low if self.part == "low" else high

    def extra_repr(self) -> str:
        return f"part={self.part!r}, radius={self.radius}"
