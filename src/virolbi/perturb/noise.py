r"""The four noise corruptions of CIFAR-10-C / CIFAR-100-C, batched in PyTorch.

Each function reproduces one corruption of Hendrycks & Dietterich's ``make_cifar_c.py`` on a float
batch ``(B, C, H, W)`` in [0, 1], at the five published severities (paper §4.1):

==================  =========================================  ==================================
name                corruption of a pixel :math:`x`            parameter :math:`c`, severity 1-5
==================  =========================================  ==================================
``gaussian_noise``  :math:`\mathrm{clip}(x + c\,n)`               0.04, 0.06, 0.08, 0.09, 0.10
``shot_noise``      :math:`\mathrm{clip}(\mathrm{Poisson}(c x) / c)`  500, 250, 100, 75, 50
``impulse_noise``   salt-and-pepper, a fraction :math:`c`      0.01, 0.02, 0.03, 0.05, 0.07
``speckle_noise``   :math:`\mathrm{clip}(x + x\,c\,n)`            0.06, 0.10, 0.12, 0.16, 0.20
==================  =========================================  ==================================

with :math:`n \sim \mathcal N(0, 1)` drawn independently per pixel and channel and
:math:`\mathrm{clip}` to [0, 1]. Impulse noise is scikit-image's
``random_noise(mode="s&p", amount=c, salt_vs_pepper=0.5)``: every value is flipped with probability
:math:`c`, to 1 or to 0 with equal odds. The release stores the result as ``np.uint8(v * 255)``, a
truncation (floor), so by default the output here is :math:`\lfloor 255\,v \rfloor / 255`; pass
``quantize=False`` for the continuous value. These are *not* the ImageNet-C parameters (the
``imagecorruptions`` package), which are stronger.

Randomness comes from an optional :class:`torch.Generator`; the draws are made on the generator's
device and moved to the input's, so one CPU generator gives the same corruption on CPU and GPU.

References
----------
D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019 (``make_cifar_c.py`` in github.com/hendrycks/robustness).
"""

from __future__ import annotations

import operator
from typing import Callable

import torch
from torch import Tensor, nn

from virolbi.errors import InputError
from virolbi.perturb._validate import check_generator, check_images, work_dtype

__all__ = [
    "CORRUPTIONS",
    "SEVERITY_PARAMS",
    "Corruption",
    "corrupt",
    "gaussian_noise",
    "impulse_noise",
    "quantize_uint8",
    "shot_noise",
    "speckle_noise",
]

#: The parameter ``c`` of each corruption at severities 1..5 (``make_cifar_c.py``).
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
}

# Added to 255 * v before the floor: a float32 image k/255 made by multiplying with 1/255 can come
# back as k - 1.5e-5, which a bare floor would send to k - 1. The shift is far below one grey level.
_FLOOR_TOLERANCE = 1e-4


def _check_severity(severity: object) -> int:
    if isinstance(severity, bool):
        raise InputError(f"severity must be an integer in 1..5, got {severity!r}")
    try:
        s = operator.index(severity)  # int, numpy integer, 0-d integer tensor
    except TypeError:
        raise InputError(f"severity must be an integer in 1..5, got {severity!r}") from None
    if not 1 <= s <= 5:
        raise InputError(f"severity must be an integer in 1..5, got {severity!r}")
    return int(s)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in SEVERITY_PARAMS:
        valid = ", ".join(sorted(SEVERITY_PARAMS))
        raise InputError(f"unknown corruption {name!r}; valid names: {valid}")
    return name


def quantize_uint8(v: Tensor) -> Tensor:
    r"""Clip to [0, 1] and truncate to the 256 grey levels as ``np.uint8(v * 255)`` does.

    .. math:: q(v) = \lfloor 255\,\mathrm{clip}(v, 0, 1) + 10^{-4} \rfloor / 255

    The :math:`10^{-4}` (a ten-thousandth of a grey level) keeps a pixel already on the grid, such
    as ``k * (1 / 255)`` in float32, on its level instead of one below it.

    Parameters
    ----------
    v : Tensor
        Any float tensor.

    Returns
    -------
    Tensor
        Same shape, device and dtype, values in :math:`\{0, 1/255, \dots, 1\}`.

    Examples
    --------
    >>> import torch
    >>> (quantize_uint8(torch.tensor([-0.2, 0.5, 0.999, 1.3])) * 255).tolist()
    [0.0, 127.0, 254.0, 255.0]
    """
    return torch.floor(v.clamp(0.0, 1.0) * 255.0 + _FLOOR_TOLERANCE) / 255.0


def _prepare(x: Tensor, name: str, severity: object, generator: torch.Generator | None):
    check_images(x)
    check_generator(generator)
    s = _check_severity(severity)
    return x.to(work_dtype(x)), SEVERITY_PARAMS[name][s - 1]


def _draw_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x.device


def _randn(like: Tensor, generator: torch.Generator | None) -> Tensor:
    dev = _draw_device(like, generator)
    return torch.randn(like.shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def _rand(like: Tensor, generator: torch.Generator | None) -> Tensor:
    dev = _draw_device(like, generator)
    return torch.rand(like.shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def _finish(v: Tensor, x: Tensor, quantize: bool) -> Tensor:
    v = quantize_uint8(v) if quantize else v.clamp(0.0, 1.0)
    return v.to(x.dtype)


def gaussian_noise(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
                   quantize: bool = True) -> Tensor:
    r"""Additive Gaussian noise, CIFAR-10-C ``gaussian_noise``.

    .. math:: y = q\big(\mathrm{clip}(x + c\,n)\big), \quad n \sim \mathcal N(0, I),
              \quad c \in (0.04, 0.06, 0.08, 0.09, 0.10)

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in [0, 1].
    severity : int, default 1
        1 to 5; the higher, the larger the standard deviation :math:`c`.
    generator : torch.Generator, optional
        Source of randomness (seed it for reproducible corruptions).
    quantize : bool, default True
        Truncate to 8 bits as the released files do (:func:`quantize_uint8`).

    Returns
    -------
    Tensor
        Same shape, device and dtype as ``x``, in [0, 1].

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = gaussian_noise(torch.full((1, 3, 8, 8), 0.5), 5, generator=g)
    >>> y.shape, bool(((y * 255) == (y * 255).round()).all())
    (torch.Size([1, 3, 8, 8]), True)
    """
    xw, c = _prepare(x, "gaussian_noise", severity, generator)
    return _finish(xw + c * _randn(xw, generator), x, quantize)


def shot_noise(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
               quantize: bool = True) -> Tensor:
    r"""Poisson (shot) noise, CIFAR-10-C ``shot_noise``.

    .. math:: y = q\big(\mathrm{clip}(N / c)\big), \quad N \sim \mathrm{Poisson}(c\,x),
              \quad c \in (500, 250, 100, 75, 50)

    so that :math:`\mathbb E[N/c] = x` and :math:`\mathrm{Var}[N/c] = x / c`: a photon count of
    :math:`c` at full brightness, fewer photons (more noise) at higher severity.

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in [0, 1].
    severity : int, default 1
        1 to 5; the higher, the smaller :math:`c` and the stronger the noise.
    generator : torch.Generator, optional
        Source of randomness.
    quantize : bool, default True
        Truncate to 8 bits as the released files do.

    Returns
    -------
    Tensor
        Same shape, device and dtype as ``x``, in [0, 1].

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> shot_noise(torch.zeros(1, 1, 2, 2), 3, generator=g).sum().item()  # no light, no photons
    0.0
    """
    xw, c = _prepare(x, "shot_noise", severity, generator)
    dev = _draw_device(xw, generator)
    counts = torch.poisson((xw * c).to(dev), generator=generator).to(xw.device)
    return _finish(counts / c, x, quantize)


def impulse_noise(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
                  quantize: bool = True) -> Tensor:
    r"""Salt-and-pepper noise, CIFAR-10-C ``impulse_noise``.

    Each value (every pixel of every channel independently) is replaced with probability :math:`c`,
    by 1 (salt) or 0 (pepper) with equal odds, as scikit-image's
    ``random_noise(x, mode="s&p", amount=c, salt_vs_pepper=0.5)``;
    :math:`c \in (0.01, 0.02, 0.03, 0.05, 0.07)`.

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in [0, 1].
    severity : int, default 1
        1 to 5; the higher, the larger the flipped fraction :math:`c`.
    generator : torch.Generator, optional
        Source of randomness.
    quantize : bool, default True
        Truncate to 8 bits as the released files do (untouched 8-bit pixels stay as they were).

    Returns
    -------
    Tensor
        Same shape, device and dtype as ``x``, in [0, 1].

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = impulse_noise(torch.full((1, 3, 32, 32), 0.5), 5, generator=g)
    >>> (y * 255).unique().tolist()  # 0.5 truncates to 127; flipped values are 0 or 255
    [0.0, 127.0, 255.0]
    """
    xw, c = _prepare(x, "impulse_noise", severity, generator)
    flipped = _rand(xw, generator) <= c
    salted = _rand(xw, generator) <= 0.5
    y = torch.where(flipped, salted.to(xw.dtype), xw)
    return _finish(y, x, quantize)


def speckle_noise(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
                  quantize: bool = True) -> Tensor:
    r"""Multiplicative (speckle) noise, CIFAR-10-C ``speckle_noise``.

    .. math:: y = q\big(\mathrm{clip}(x + x\,c\,n)\big), \quad n \sim \mathcal N(0, I),
              \quad c \in (0.06, 0.10, 0.12, 0.16, 0.20)

    The noise standard deviation is proportional to the brightness: black stays black.

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in [0, 1].
    severity : int, default 1
        1 to 5; the higher, the larger :math:`c`.
    generator : torch.Generator, optional
        Source of randomness.
    quantize : bool, default True
        Truncate to 8 bits as the released files do.

    Returns
    -------
    Tensor
        Same shape, device and dtype as ``x``, in [0, 1].

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> speckle_noise(torch.zeros(2, 3, 4, 4), 5, generator=g).abs().max().item()
    0.0
    """
    xw, c = _prepare(x, "speckle_noise", severity, generator)
    return _finish(xw + xw * c * _randn(xw, generator), x, quantize)


#: Name -> function ``f(x, severity, *, generator=None, quantize=True)``.
CORRUPTIONS: dict[str, Callable[..., Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
}


def corrupt(x: Tensor, name: str, severity: int, generator: torch.Generator | None = None, *,
            quantize: bool = True) -> Tensor:
    r"""Apply the CIFAR-10-C corruption ``name`` at ``severity`` to a batch.

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in [0, 1].
    name : str
        One of :data:`CORRUPTIONS`: ``gaussian_noise``, ``shot_noise``, ``impulse_noise``,
        ``speckle_noise``.
    severity : int
        1 to 5 (parameters in :data:`SEVERITY_PARAMS`).
    generator : torch.Generator, optional
        Source of randomness.
    quantize : bool, default True
        Truncate to 8 bits like the released CIFAR-10-C files: ``output * 255`` is an integer.

    Returns
    -------
    Tensor
        Same shape, device and dtype as ``x``, in [0, 1].

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    >>> a = corrupt(x, "shot_noise", 2, torch.Generator().manual_seed(0))
    >>> b = corrupt(x, "shot_noise", 2, torch.Generator().manual_seed(0))
    >>> torch.equal(a, b)
    True
    """
    return CORRUPTIONS[_check_name(name)](x, severity, generator=generator, quantize=quantize)


class Corruption(nn.Module):
    r"""Module form of :func:`corrupt`: a fixed CIFAR-10-C corruption and severity.

    Parameters
    ----------
    name : str
        Corruption name (see :data:`CORRUPTIONS`).
    severity : int
        1 to 5.
    generator : torch.Generator, optional
        Source of randomness, shared by every call (successive calls draw fresh noise).
    quantize : bool, default True
        Truncate to 8 bits.

    Examples
    --------
    >>> import torch
    >>> m = Corruption("impulse_noise", 3, generator=torch.Generator().manual_seed(0))
    >>> m(torch.rand(2, 3, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    """

    def __init__(self, name: str, severity: int, generator: torch.Generator | None = None, *,
                 quantize: bool = True) -> None:
        super().__init__()
        self.name = _check_name(name)
        self.severity = _check_severity(severity)
        check_generator(generator)
        self.generator = generator
        self.quantize = bool(quantize)

    def forward(self, x: Tensor) -> Tensor:
        return corrupt(x, self.name, self.severity, self.generator, quantize=self.quantize)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, severity={self.severity}, quantize={self.quantize}"
