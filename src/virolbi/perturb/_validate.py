"""Input checks shared by the perturbations (one place, one message per mistake)."""

from __future__ import annotations

from typing import Any

import torch

from virolbi.checks import check_image_batch
from virolbi.errors import InputError

__all__ = ["check_images", "check_generator", "work_dtype"]


def check_images(x: Any, name: str = "images", *, min_size: int = 1) -> None:
    """A float tensor ``(B, C, H, W)`` in [0, 1]; raises :class:`InputError` otherwise."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype} "
                         "(convert uint8 images with x.float() / 255)")
    # detached: the shared check reads min/max as Python floats, which warns on tensors needing grad
    check_image_batch(x.detach(), name, min_size=min_size)


def check_generator(generator: Any) -> None:
    """``None`` or a :class:`torch.Generator`."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
