r"""Per-channel normalisation as the first layer of every model.

Models in virolbi take float images in :math:`[0, 1]` and normalise them themselves, so that
perturbations, smoothing and adversarial attacks (paper §4) all work in pixel space, the way
torchattacks and RobustBench expect:

.. math:: \hat x_{b,c,h,w} = \frac{x_{b,c,h,w} - \mu_c}{\sigma_c}

:data:`DATASET_STATS` holds the usual channel means and standard deviations of CIFAR-10, CIFAR-100
and ImageNet. :class:`NormalizedModel` puts a :class:`Normalize` in front of any backbone; its
statistics are non-persistent buffers, so checkpoints hold only the backbone's weights and stay
interchangeable with torchvision / timm files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from virolbi.errors import InputError

__all__ = ["DATASET_STATS", "Normalize", "NormalizedModel", "normalize", "resolve_stats"]

#: Channel ``(mean, std)`` of the RGB training images, values in [0, 1].
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _as_floats(values: object, name: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    try:
        out = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a sequence of numbers (one per channel), "
                         f"got {values!r}") from None
    if not out:
        raise InputError(f"{name} must not be empty")
    if not all(math.isfinite(v) for v in out):
        raise InputError(f"{name} must be finite, got {values!r}")
    return out


def resolve_stats(stats: str | tuple[Sequence[float], Sequence[float]]
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Turn a dataset name of :data:`DATASET_STATS` or a ``(mean, std)`` pair into float tuples.

    Parameters
    ----------
    stats : str or (sequence, sequence)
        ``"cifar10"``, ``"cifar100"``, ``"imagenet"`` or explicit per-channel ``(mean, std)``.

    Returns
    -------
    (tuple of float, tuple of float)
        Means and standard deviations, of equal length, all standard deviations > 0.

    Examples
    --------
    >>> resolve_stats("imagenet")[0]
    (0.485, 0.456, 0.406)
    >>> resolve_stats(([0.5], [0.25]))
    ((0.5,), (0.25,))
    """
    if isinstance(stats, str):
        key = stats.lower().replace("-", "").replace("_", "")
        if key not in DATASET_STATS:
            raise InputError(f"unknown normalisation statistics {stats!r}; expected one of "
                             f"{', '.join(DATASET_STATS)} or a (mean, std) pair")
        return DATASET_STATS[key]
    try:
        mean, std = stats
    except (TypeError, ValueError):
        raise InputError(f"normalisation statistics must be a dataset name or a (mean, std) pair, "
                         f"got {stats!r}") from None
    m, s = _as_floats(mean, "mean"), _as_floats(std, "std")
    if len(m) != len(s):
        raise InputError(f"mean and std must have the same length, got {len(m)} and {len(s)}")
    if min(s) <= 0:
        raise InputError(f"std must be > 0 for every channel, got {s}")
    return m, s


def _check_channels(x: Tensor, channels: int) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"model input must be a float tensor (B, C, H, W), got {shape}")
    if x.shape[1] != channels:
        raise InputError(f"model input must have {channels} channels, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"model input must be float in [0, 1], got dtype {x.dtype} "
                         f"(divide uint8 images by 255)")


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    r"""Normalise each channel: :math:`(x_c - \mu_c) / \sigma_c`.

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)``, values in [0, 1].
    mean, std : sequence of float or Tensor
        ``C`` channel means and (positive) standard deviations.

    Returns
    -------
    Tensor
        Same shape, device and dtype as ``x``; differentiable in ``x``.

    Examples
    --------
    >>> x = torch.full((1, 3, 2, 2), 0.5)
    >>> normalize(x, (0.5, 0.25, 0.0), (1.0, 0.5, 2.0))[0, :, 0, 0].tolist()
    [0.0, 0.5, 0.25]
    """
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    _check_channels(x, mean_t.numel())
    if std_t.numel() != mean_t.numel():
        raise InputError(f"mean and std must have the same length, got {mean_t.numel()} and "
                         f"{std_t.numel()}")
    return (x - mean_t.view(1, -1, 1, 1)) / std_t.view(1, -1, 1, 1)


class Normalize(nn.Module):
    r"""Module form of :func:`normalize`: :math:`(x_c - \mu_c) / \sigma_c`.

    The statistics are non-persistent buffers: they follow ``.to(device, dtype)`` but are not written
    to the state dict (they are configuration, not weights).

    Parameters
    ----------
    mean, std : sequence of float
        Per-channel means and standard deviations (> 0) in pixel units of [0, 1] images.

    Examples
    --------
    >>> norm = Normalize(*DATASET_STATS["cifar10"])
    >>> y = norm(torch.rand(2, 3, 8, 8))
    >>> tuple(y.shape), list(norm.state_dict())
    ((2, 3, 8, 8), [])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        m, s = resolve_stats((mean, std))
        self.register_buffer("mean", torch.tensor(m, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(s, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(x, self.mean.numel())
        mean = self.mean.to(device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = self.std.to(device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def extra_repr(self) -> str:
        fmt = lambda t: "(" + ", ".join(f"{v:.4g}" for v in t.tolist()) + ")"  # noqa: E731
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"


class NormalizedModel(nn.Module):
    """A backbone with :class:`Normalize` in front: ``backbone(normalize(x))`` for ``x`` in [0, 1].

    Parameters
    ----------
    backbone : nn.Module
        Classifier taking normalised images ``(B, C, H, W)``.
    mean, std : sequence of float
        Per-channel statistics of the training data (see :data:`DATASET_STATS`).

    Examples
    --------
    >>> model = NormalizedModel(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), *DATASET_STATS["imagenet"])
    >>> model(torch.rand(5, 3, 2, 2)).shape
    torch.Size([5, 2])
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(self.normalize(x))
