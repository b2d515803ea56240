r"""Grad-CAM heat maps (Selvaraju et al. 2017) through captum, and how much of a map falls on the
object: the measured companion of the paper's Fig. 1b and Fig. 5.

Grad-CAM at a convolutional layer with activations :math:`A^c` (channel :math:`c`) weighs each
channel by the spatial mean of the class score's gradient, :math:`\alpha_c = \overline{\partial
y / \partial A^c}`, and keeps :math:`\mathrm{ReLU}(\sum_c \alpha_c A^c)`, upsampled to the image
(bilinear) and normalised to sum 1 per image here, so that maps of different models compare.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from virolbi.errors import InputError

__all__ = ["last_conv", "gradcam", "box_mass", "centre_box", "half_mass_area", "pointing_game",
           "mean_with_ci"]


def last_conv(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` of ``model`` (Grad-CAM's usual layer: the most semantic one that
    still has a spatial map)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InputError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return convs[-1]


def gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
            layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM maps ``(B, H, W)`` of ``model`` on ``x`` (float ``(B, C, H, W)``) for the classes
    ``target`` (default: the predicted ones), at ``layer`` (default :func:`last_conv`); each map is
    non-negative and sums to 1 (uniform where the map is all zero)."""
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(1)
    cam = LayerGradCam(model, layer if layer is not None else last_conv(model))
    maps = cam.attribute(x, target=target, relu_attributions=True)
    maps = LayerAttribution.interpolate(maps, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    maps = maps[:, 0].clamp_min(0).detach()
    total = maps.flatten(1).sum(1).view(-1, 1, 1)
    uniform = torch.full_like(maps, 1.0 / maps[0].numel())
    return torch.where(total > 0, maps / total.clamp_min(1e-30), uniform)


def centre_box(height: int, width: int, fraction: float = 0.5) -> torch.Tensor:
    """Boolean mask of the centred box covering ``fraction`` of each side (0.5: a quarter of the
    image). CIFAR-10 objects are centred by construction of the data set, so the box stands for
    the object when no segmentation exists."""
    bh, bw = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - bh) // 2, (width - bw) // 2
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top:top + bh, left:left + bw] = True
    return mask


def box_mass(maps: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Fraction of each map's mass inside ``box`` (energy ratio), ``(B,)``; uniform maps give the
    box's area fraction."""
    return (maps * box).flatten(1).sum(1) / maps.flatten(1).sum(1)


def half_mass_area(maps: torch.Tensor) -> torch.Tensor:
    """Fraction of the image the map needs (its largest values first) to hold half its mass,
    ``(B,)``: how spread the attention is (a point gives ~0, a uniform map 0.5)."""
    v = maps.flatten(1).sort(dim=1, descending=True).values
    need = (v.cumsum(1) < 0.5 * v.sum(1, keepdim=True)).sum(1) + 1
    return need.double() / v.shape[1]


def pointing_game(maps: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Whether each map's maximum lies inside ``box`` (Zhang et al. 2016), ``(B,)`` bool."""
    flat = maps.flatten(1).argmax(1)
    return box.flatten()[flat]


def mean_with_ci(values: Sequence[float] | np.ndarray, reps: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % bootstrap interval (percentile) over the values."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(reps, v.size))].mean(1)
    return float(v.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
