"""Low resolution: identity at scale 1, block structure and block means (numpy reference), errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virolbi.errors import InputError
from virolbi.perturb import LowResolution, low_resolution


def _block_mean_ref(x: np.ndarray, f: int) -> np.ndarray:
    """Average f×f blocks and repeat each mean over its block (numpy only)."""
    b, c, h, w = x.shape
    m = x.reshape(b, c, h // f, f, w // f, f).mean(axis=(3, 5))
    return np.repeat(np.repeat(m, f, axis=2), f, axis=3)


def test_scale_one_is_identity(cifar_batch):
    for mode in ("area", "bilinear", "bicubic"):
        assert torch.equal(low_resolution(cifar_batch, 1.0, mode=mode), cifar_batch)


@pytest.mark.parametrize("scale,f", [(0.5, 2), (0.25, 4)])
def test_area_equals_block_means(scale, f, cifar_batch):
    x = cifar_batch[:5].double()
    y = low_resolution(x, scale)
    np.testing.assert_allclose(y.numpy(), _block_mean_ref(x.numpy(), f), atol=1e-12)
    torch.testing.assert_close(y.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)))  # area keeps the mean


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_piecewise_constant_blocks_for_half_scale(mode, cifar_batch):
    y = low_resolution(cifar_batch[:3], 0.5, mode=mode)
    blocks = y.unfold(2, 2, 2).unfold(3, 2, 2)  # (B, C, 16, 16, 2, 2)
    assert torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert y.shape == (3, 3, 32, 32)


def test_imagenet_scale_one_seventh():
    """224 at 1/7 gives 32×32 blocks of 7; tested at 28 → 4×4 blocks of 7 (same factor)."""
    x = torch.rand(1, 3, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = low_resolution(x, 1 / 7)
    np.testing.assert_allclose(y.numpy(), _block_mean_ref(x.numpy(), 7), atol=1e-12)


def test_rounding_and_at_least_one_pixel():
    x = torch.rand(1, 1, 10, 6)
    y = low_resolution(x, 0.01)  # one pixel: the image mean everywhere
    torch.testing.assert_close(y, x.mean().expand_as(x))
    # round(10 * 0.3) = 3 rows, round(6 * 0.3) = 2 columns of distinct values
    y = low_resolution(torch.arange(60.).reshape(1, 1, 10, 6) / 59, 0.3)
    assert y[0, 0].unique(dim=0).shape[0] == 3 and y[0, 0].unique(dim=1).shape[1] == 2


def test_dtype_and_device_follow(device):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, device=device)
    y = low_resolution(x, 0.5)
    assert y.dtype == torch.float64 and y.device == x.device


def test_module_equals_function(cifar_batch):
    m = LowResolution(0.25, mode="bilinear")
    assert torch.equal(m(cifar_batch), low_resolution(cifar_batch, 0.25, mode="bilinear"))
    assert "scale=0.25" in repr(m)


@pytest.mark.parametrize("scale", [0, -0.5, 1.5, float("nan"), "half"])
def test_bad_scale(scale):
    with pytest.raises(InputError, match=r"scale must be (in \(0, 1\]|a number), got"):
        low_resolution(torch.rand(1, 1, 8, 8), scale)
    with pytest.raises(InputError, match=r"scale must be"):
        LowResolution(scale)


def test_bad_mode():
    with pytest.raises(InputError, match="mode must be one of area, bilinear, bicubic, got 'nearest'"):
        low_resolution(torch.rand(1, 1, 8, 8), 0.5, mode="nearest")
    with pytest.raises(InputError, match="mode must be one of"):
        LowResolution(0.5, mode="nearest")


def test_bad_images():
    with pytest.raises(InputError, match=r"images must have shape \(B, C, H, W\), got \(1, 8, 8\)"):
        low_resolution(torch.rand(1, 8, 8), 0.5)
    with pytest.raises(InputError, match=r"images must have float values in \[0, 1\]"):
        low_resolution(-torch.rand(1, 1, 8, 8) - 0.1, 0.5)
