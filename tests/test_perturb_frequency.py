"""Frequency split against a numpy FFT reference; projection properties; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virolbi.errors import InputError
from virolbi.perturb import FrequencyFilter, frequency_split, low_pass_mask


def _ref_split(x: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray, float]:
    """numpy: centred spectrum, disk and complement masks built with loops, inverse transforms.
    Returns low, high and the largest imaginary part that was dropped."""
    h, w = x.shape[-2:]
    mask = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            if (i - h // 2) ** 2 + (j - w // 2) ** 2 <= r * r:
                mask[i, j] = 1.0
    spec = np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))
    low = np.fft.ifft2(np.fft.ifftshift(spec * mask, axes=(-2, -1)))
    high = np.fft.ifft2(np.fft.ifftshift(spec * (1 - mask), axes=(-2, -1)))
    return low.real, high.real, float(max(np.abs(low.imag).max(), np.abs(high.imag).max()))


@pytest.mark.parametrize("shape,r", [((2, 3, 32, 32), 6), ((1, 2, 9, 8), 2.5), ((1, 1, 7, 7), 1)])
def test_matches_numpy_reference(shape, r):
    x = torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    low, high = frequency_split(x, r)
    ref_low, ref_high, imag = _ref_split(x.numpy(), r)
    np.testing.assert_allclose(low.numpy(), ref_low, atol=1e-12)
    np.testing.assert_allclose(high.numpy(), ref_high, atol=1e-12)
    assert imag < 1e-12  # the disk is symmetric under k -> -k: nothing is lost by taking Re


def test_low_plus_high_is_x(cifar_batch):
    low, high = frequency_split(cifar_batch, 6)
    assert low.dtype == high.dtype == torch.float32
    torch.testing.assert_close(low + high, cifar_batch, atol=1e-6, rtol=0)
    x64 = cifar_batch.double()
    low, high = frequency_split(x64, 6)
    torch.testing.assert_close(low + high, x64, atol=1e-15, rtol=0)


def test_constant_is_all_low():
    x = torch.full((2, 3, 8, 10), 0.7, dtype=torch.float64)
    low, high = frequency_split(x, 0.5)  # only the zero frequency is inside
    torch.testing.assert_close(low, x)
    assert float(high.abs().max()) < 1e-14


def test_orthogonal_idempotent_projection(cifar_batch):
    x = cifar_batch[:4].double()
    low, high = frequency_split(x, 6)
    # <low, high> = 0 per image and channel: the disk mask is an orthogonal projection
    assert float((low * high).sum(dim=(-2, -1)).abs().max()) < 1e-9
    # idempotent: a low-frequency image is its own low part (shrunk affinely into [0, 1] so that
    # it is a valid input; constants are low frequency, so the affine map commutes with the split)
    z = 0.5 + 0.2 * (low - 0.5)
    z_low, z_high = frequency_split(z, 6)
    torch.testing.assert_close(z_low, z)
    assert float(z_high.abs().max()) < 1e-12
    # the low part is smoother: less energy in its finite differences
    assert float(low.diff(dim=-1).pow(2).sum()) < float(x.diff(dim=-1).pow(2).sum())


def test_radius_covering_the_spectrum_keeps_everything():
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    low, high = frequency_split(x, 100)
    torch.testing.assert_close(low, x)
    assert float(high.abs().max()) < 1e-14


def test_mask_is_disk():
    m = low_pass_mask(32, 32, 6)
    assert m[16, 16] == 1 and m[16, 22] == 1 and m[16, 23] == 0 and m[20, 20] == 1 and m[21, 21] == 0
    assert int(m.sum()) == sum(1 for i in range(-16, 16) for j in range(-16, 16) if i * i + j * j <= 36)


def test_gradcheck():
    x = (0.25 + 0.5 * torch.rand(1, 1, 6, 5, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: frequency_split(t, 2), (x,))


def test_device_follows(device):
    x = torch.rand(1, 3, 8, 8, device=device)
    low, high = frequency_split(x)
    assert low.device == high.device == x.device


def test_module(cifar_batch):
    low, high = frequency_split(cifar_batch, 4)
    assert torch.equal(FrequencyFilter("low", 4)(cifar_batch), low)
    assert torch.equal(FrequencyFilter("high", 4)(cifar_batch), high)
    assert "part='high'" in repr(FrequencyFilter("high"))


@pytest.mark.parametrize("radius", [0, -2, float("inf"), "six"])
def test_bad_radius(radius):
    with pytest.raises(InputError, match="radius must be (a finite number > 0|a number), got"):
        frequency_split(torch.rand(1, 1, 8, 8), radius)
    with pytest.raises(InputError, match="radius must be"):
        FrequencyFilter("low", radius)


def test_bad_part():
    with pytest.raises(InputError, match="part must be 'low' or 'high', got 'mid'"):
        FrequencyFilter("mid")


def test_bad_images():
    with pytest.raises(InputError, match=r"images must have shape \(B, C, H, W\), got \(8, 8\)"):
        frequency_split(torch.rand(8, 8))
    with pytest.raises(InputError, match=r"images must have float values in \[0, 1\]"):
        frequency_split(torch.rand(1, 1, 8, 8) * 2)
