r"""Gaussian blur: the paper's "Blur" baseline (§4, Table 1), as a batched depthwise convolution.

The baseline trains and tests on blurred images: kernel 3, :math:`\sigma = 2` for 32×32 data and
kernel 7, :math:`\sigma = 2` for 224×224 data (:func:`blur_params_for`). The kernel and the border
handling are those of ``torchvision.transforms.GaussianBlur`` (sampled Gaussian normalised to sum 1,
reflect padding), the usual way such a baseline is implemented, so numbers stay comparable.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from virolbi.checks import check_positive
from virolbi.errors import InputError
from virolbi.perturb._validate import check_images, work_dtype

__all__ = ["GaussianBlur", "blur_params_for", "gaussian_blur", "gaussian_kernel1d"]

_PADDING_MODES = ("reflect", "replicate", "circular")


def _check_kernel_size(kernel_size: object) -> int:
    try:
        k = operator.index(kernel_size)
    except TypeError:
        k = None
    if k is None or isinstance(kernel_size, bool) or k < 1 or k % 2 == 0:
        raise InputError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    return int(k)


def _check_padding_mode(padding_mode: object) -> str:
    if padding_mode not in _PADDING_MODES:
        raise InputError(f"padding_mode must be one of {', '.join(_PADDING_MODES)}, "
                         f"got {padding_mode!r}")
    return str(padding_mode)


def gaussian_kernel1d(kernel_size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> Tensor:
    r"""The sampled, normalised 1-D Gaussian kernel.

    .. math:: g_i = \frac{\exp(-i^2 / 2\sigma^2)}{\sum_j \exp(-j^2 / 2\sigma^2)},
              \quad i = -\lfloor k/2 \rfloor, \dots, \lfloor k/2 \rfloor

    Parameters
    ----------
    kernel_size : int
        Odd length :math:`k`.
    sigma : float
        Standard deviation in pixels (> 0); the larger, the flatter the kernel.
    dtype, device
        Of the returned tensor.

    Returns
    -------
    Tensor
        ``(kernel_size,)``, symmetric, summing to 1.

    Examples
    --------
    >>> [round(v, 4) for v in gaussian_kernel1d(3, 2.0).tolist()]
    [0.3192, 0.3617, 0.3192]
    """
    k = _check_kernel_size(kernel_size)
    s = check_positive(sigma, "sigma")
    i = torch.arange(k, dtype=torch.float64, device=device) - (k // 2)
    g = torch.exp(-(i**2) / (2.0 * s * s))
    return (g / g.sum()).to(dtype)


def gaussian_blur(x: Tensor, kernel_size: int = 3, sigma: float = 2.0, *,
                  padding_mode: str = "reflect") -> Tensor:
    r"""Blur every channel of a batch with a separable Gaussian kernel.

    .. math:: y_c = G_\sigma * x_c, \qquad G_\sigma = g\,g^\top

    with :math:`g` from :func:`gaussian_kernel1d` (so :math:`\sum G_\sigma = 1` and constants are
    preserved), applied depthwise (each channel on its own) after padding the border.

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in [0, 1].
    kernel_size : int, default 3
        Odd kernel side; 3 for 32×32 images, 7 for 224×224 (paper §4, :func:`blur_params_for`).
    sigma : float, default 2.0
        Standard deviation in pixels; the larger, the stronger the blur.
    padding_mode : {"reflect", "replicate", "circular"}, default "reflect"
        Border extension; "reflect" as torchvision's ``GaussianBlur``. Reflection needs images
        larger than ``kernel_size // 2`` on each side.

    Returns
    -------
    Tensor
        Same shape, device and dtype as ``x``, in [0, 1].

    References
    ----------
    Zhou et al., "Robust Network Learning via Inverse Scale Variational Sparsification", 2024,
    §3.2 (the Blur baseline).

    Examples
    --------
    >>> import torch
    >>> x = torch.full((2, 3, 5, 5), 0.25)
    >>> torch.allclose(gaussian_blur(x), x)
    True
    """
    check_images(x)
    k = _check_kernel_size(kernel_size)
    mode = _check_padding_mode(padding_mode)
    p = k // 2
    if mode == "reflect" and min(x.shape[-2:]) <= p:
        raise InputError(f"reflect padding with kernel_size {k} needs images larger than {p}x{p}, "
                         f"got {x.shape[-2]}x{x.shape[-1]}")
    dt = work_dtype(x)
    g = gaussian_kernel1d(k, sigma, dtype=dt, device=x.device)
    b, c, h, w = x.shape
    y = x.to(dt).reshape(b * c, 1, h, w)
    if p > 0:
        y = F.pad(y, (p, p, p, p), mode=mode)
    y = F.conv2d(y, g.view(1, 1, 1, k))
    y = F.conv2d(y, g.view(1, 1, k, 1))
    return y.reshape(b, c, h, w).clamp(0.0, 1.0).to(x.dtype)


def blur_params_for(image_size: int | tuple[int, int]) -> tuple[int, float]:
    r"""The paper's blur settings for an image size: ``(kernel_size, sigma)``.

    Kernel 3, :math:`\sigma = 2` for small (CIFAR-like) images and kernel 7, :math:`\sigma = 2` for
    ImageNet-sized ones (paper §4). The split is at 128 pixels on the shorter side.

    Parameters
    ----------
    image_size : int or (int, int)
        Side, or (height, width).

    Examples
    --------
    >>> blur_params_for(32), blur_params_for((224, 224))
    ((3, 2.0), (7, 2.0))
    """
    sizes = (image_size,) if not isinstance(image_size, (tuple, list)) else tuple(image_size)
    try:
        sides = [operator.index(s) for s in sizes]
    except TypeError:
        sides = []
    if len(sides) not in (1, 2) or any(s < 1 for s in sides):
        raise InputError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return (3, 2.0) if min(sides) < 128 else (7, 2.0)


class GaussianBlur(nn.Module):
    r"""Module form of :func:`gaussian_blur`.

    Parameters
    ----------
    kernel_size : int, default 3
    sigma : float, default 2.0
    padding_mode : str, default "reflect"

    Examples
    --------
    >>> import torch
    >>> GaussianBlur(7, 2.0)(torch.rand(1, 3, 16, 16)).shape
    torch.Size([1, 3, 16, 16])
    """

    #: The same input gives the same output (attacks may reuse an output under EOT).
    deterministic = True
    #: A convolution: attacks take its exact gradient (threat model ``adaptive_exact``).
    differentiable = True

    def __init__(self, kernel_size: int = 3, sigma: float = 2.0, *,
                 padding_mode: str = "reflect") -> None:
        super().__init__()
        self.kernel_size = _check_kernel_size(kernel_size)
        self.sigma = check_positive(sigma, "sigma")
        self.padding_mode = _check_padding_mode(padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        return gaussian_blur(x, self.kernel_size, self.sigma, padding_mode=self.padding_mode)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, padding_mode={self.padding_mode!r}"
