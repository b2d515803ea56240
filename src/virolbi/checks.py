"""Validation helpers used at the public boundary of every module.

Each helper raises :class:`virolbi.errors.InputError` with a message that says what was expected and
what came, e.g. ``"sparsity must be in (0, 1], got 1.5"``.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch

from virolbi.errors import InputError

__all__ = [
    "check_finite",
    "check_image_batch",
    "check_in_range",
    "check_positive",
    "check_unit_interval",
    "check_levels",
    "check_ratio",
]


def check_positive(value: Any, name: str, *, strict: bool = True) -> float:
    """Return ``float(value)`` if it is a finite number ``> 0`` (``>= 0`` when ``strict=False``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or (v <= 0 if strict else v < 0):
        bound = "> 0" if strict else ">= 0"
        raise InputError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def check_positive_int(value: Any, name: str) -> int:
    """Return ``int(value)`` if it is an integer (Python, NumPy or 0-d tensor; not a bool) ``>= 1``."""
    if not isinstance(value, bool):
        try:
            v = operator.index(value)
        except TypeError:
            v = 0
        if v >= 1:
            return int(v)
    raise InputError(f"{name} must be a positive integer, got {value!r}")


def check_in_range(value: Any, name: str, low: float, high: float, *, low_open: bool = False,
                   high_open: bool = False) -> float:
    """Return ``float(value)`` if it lies in the interval given by ``low``/``high`` and openness."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    lo_ok = v > low if low_open else v >= low
    hi_ok = v < high if high_open else v <= high
    if not (math.isfinite(v) and lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise InputError(f"{name} must be in {interval}, got {value!r}")
    return v


def check_ratio(value: Any, name: str) -> float:
    """A finite number ``>= 0`` given as a number or as a fraction string such as ``"8/255"``.

    Examples
    --------
    >>> check_ratio("8/255", "eps") == 8 / 255, check_ratio(0.5, "eps")
    (True, 0.5)
    """
    if isinstance(value, str):
        num, sep, den = value.partition("/")
        try:
            v = float(num) / float(den) if sep else float(num)
        except (ValueError, ZeroDivisionError):
            raise InputError(f"{name} must be a number or a fraction such as 8/255, got "
                             f"{value!r}") from None
        return check_positive(v, name, strict=False)
    return check_positive(value, name, strict=False)


def check_unit_interval(value: Any, name: str = "sparsity") -> float:
    """A sparsity level: a number in (0, 1]."""
    return check_in_range(value, name, 0.0, 1.0, low_open=True)


def check_levels(levels: Any, name: str = "levels") -> tuple[float, ...]:
    """A non-empty sequence of sparsity levels in (0, 1], returned sorted and de-duplicated."""
    if isinstance(levels, (int, float)):
        levels = [levels]
    try:
        items = list(levels)
    except TypeError:
        raise InputError(f"{name} must be a sequence of numbers in (0, 1], got {levels!r}") from None
    if not items:
        raise InputError(f"{name} must not be empty")
    return tuple(sorted({check_unit_interval(v, f"each of {name}") for v in items}))


def check_finite(x: torch.Tensor | np.ndarray, name: str = "input") -> None:
    """Raise if ``x`` holds NaN or Inf."""
    bad = (~torch.isfinite(x)).any().item() if isinstance(x, torch.Tensor) else not np.isfinite(x).all()
    if bad:
        raise InputError(f"{name} contains NaN or Inf values")


def check_image_batch(x: torch.Tensor, name: str = "images", *, min_size: int = 2,
                      value_range: tuple[float, float] | None = (0.0, 1.0)) -> None:
    """Check a float batch ``(B, C, H, W)``: non-empty, finite, at least ``min_size`` pixels a side
    and, when ``value_range`` is given, inside it."""
    if x.ndim != 4:
        raise InputError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InputError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    if x.shape[1] == 0:
        raise InputError(f"{name} has no channels (shape {tuple(x.shape)})")
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise InputError(f"{name} must be at least {min_size}x{min_size} pixels, got "
                         f"{x.shape[-2]}x{x.shape[-1]}")
    check_finite(x, name)
    if value_range is not None and x.is_floating_point():
        lo, hi = value_range
        xmin, xmax = float(x.detach().min()), float(x.detach().max())
        if xmin < lo or xmax > hi:
            raise InputError(f"{name} must have float values in [{lo:g}, {hi:g}], got values in "
                             f"[{xmin:.4g}, {xmax:.4g}] (scale uint8 images by 1/255 or pass uint8)")


def resolve_device(spec: Any, name: str = "device") -> torch.device:
    """The torch device a user asked for: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`. One line naming ``name`` (the option the
    user typed, e.g. ``"--device"``) for an unknown device or CUDA that is not there.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(spec, str) and spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise InputError(f"{name} must be auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{name} {spec} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"{name} {spec}: this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"{name} must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return dev
