"""Gaussian blur against scipy.ndimage with a kernel written here, constants, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from virolbi.errors import InputError
from virolbi.perturb import GaussianBlur, blur_params_for, gaussian_blur, gaussian_kernel1d

# torch padding mode -> scipy.ndimage boundary mode with the same extension
SCIPY_MODE = {"reflect": "mirror", "replicate": "nearest", "circular": "wrap"}


def _ref_kernel2d(k: int, sigma: float) -> np.ndarray:
    i = np.arange(k) - k // 2
    g2 = np.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * sigma**2))
    return g2 / g2.sum()


def _ref_blur(x: np.ndarray, k: int, sigma: float, mode: str) -> np.ndarray:
    kern = _ref_kernel2d(k, sigma)
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[b, c] = ndimage.correlate(x[b, c], kern, mode=SCIPY_MODE[mode])
    return out


@pytest.mark.parametrize("k,sigma", [(3, 2.0), (7, 2.0), (5, 0.7), (1, 1.0)])
def test_kernel_sums_to_one_and_matches_reference(k, sigma):
    g = gaussian_kernel1d(k, sigma, dtype=torch.float64)
    assert g.shape == (k,)
    assert abs(float(g.sum()) - 1) < 1e-12
    np.testing.assert_allclose(torch.outer(g, g).numpy(), _ref_kernel2d(k, sigma), rtol=1e-12)
    assert torch.equal(g, g.flip(0))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("k", [3, 7])
def test_blur_matches_scipy(mode, k):
    x = torch.rand(2, 3, 13, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = gaussian_blur(x, k, 2.0, padding_mode=mode)
    np.testing.assert_allclose(y.numpy(), _ref_blur(x.numpy(), k, 2.0, mode), atol=1e-12)


def test_blur_on_real_images_float32(cifar_batch):
    y = gaussian_blur(cifar_batch[:4])
    ref = _ref_blur(cifar_batch[:4].double().numpy(), 3, 2.0, "reflect")
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-6)
    assert y.dtype == torch.float32
    # blur lowers the gradient energy (a smoothing, not a sharpening)
    tv = lambda u: float((u[..., 1:, :] - u[..., :-1, :]).abs().sum() + (u[..., 1:] - u[..., :-1]).abs().sum())  # noqa: E731
    assert tv(y) < tv(cifar_batch[:4])


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_constants_are_preserved(mode, device):
    x = torch.full((2, 3, 9, 9), 0.3, device=device)
    y = gaussian_blur(x, 7, 2.0, padding_mode=mode)
    assert y.device == x.device
    torch.testing.assert_close(y, x)


def test_mean_preserved_with_circular_padding():
    x = torch.rand(1, 3, 10, 10, dtype=torch.float64)
    y = gaussian_blur(x, 5, 1.5, padding_mode="circular")
    torch.testing.assert_close(y.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)))


def test_kernel_one_is_identity():
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(gaussian_blur(x, 1, 3.0), x)


def test_channels_are_independent():
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    full = gaussian_blur(x)
    per = torch.cat([gaussian_blur(x[:, c:c + 1]) for c in range(3)], dim=1)
    torch.testing.assert_close(full, per, rtol=0, atol=0)


def test_gradcheck():
    x = (0.25 + 0.5 * torch.rand(1, 2, 6, 5, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, 3, 2.0), (x,))


def test_module_equals_function():
    x = torch.rand(2, 3, 16, 16)
    m = GaussianBlur(7, 2.0, padding_mode="replicate")
    assert torch.equal(m(x), gaussian_blur(x, 7, 2.0, padding_mode="replicate"))
    assert "kernel_size=7" in repr(m)


def test_blur_params_for():
    assert blur_params_for(32) == (3, 2.0)
    assert blur_params_for((32, 32)) == (3, 2.0)
    assert blur_params_for(224) == (7, 2.0)
    assert blur_params_for((224, 256)) == (7, 2.0)


# ----------------------------------------------------------------------------- input errors

@pytest.mark.parametrize("k", [0, 2, -3, 2.5, "3", True])
def test_bad_kernel_size(k):
    with pytest.raises(InputError, match="kernel_size must be an odd positive integer, got"):
        gaussian_blur(torch.rand(1, 1, 8, 8), k)
    with pytest.raises(InputError, match="kernel_size must be an odd positive integer"):
        GaussianBlur(k)


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan")])
def test_bad_sigma(sigma):
    with pytest.raises(InputError, match="sigma must be a finite number > 0, got"):
        gaussian_blur(torch.rand(1, 1, 8, 8), 3, sigma)
    with pytest.raises(InputError, match="sigma must be a finite number > 0"):
        GaussianBlur(3, sigma)


def test_bad_padding_mode():
    with pytest.raises(InputError, match="padding_mode must be one of reflect, replicate, circular, "
                                         "got 'zeros'"):
        gaussian_blur(torch.rand(1, 1, 8, 8), padding_mode="zeros")
    with pytest.raises(InputError, match="padding_mode must be one of"):
        GaussianBlur(padding_mode="zeros")


def test_reflect_needs_large_enough_image():
    with pytest.raises(InputError, match=r"reflect padding with kernel_size 7 needs images larger "
                                         r"than 3x3, got 3x8"):
        gaussian_blur(torch.rand(1, 1, 3, 8), 7)
    assert gaussian_blur(torch.rand(1, 1, 3, 8), 7, padding_mode="replicate").shape == (1, 1, 3, 8)


def test_bad_images():
    with pytest.raises(InputError, match=r"images must have shape \(B, C, H, W\)"):
        gaussian_blur(torch.rand(8, 8))
    with pytest.raises(InputError, match=r"images must have float values in \[0, 1\]"):
        gaussian_blur(torch.rand(1, 1, 8, 8) + 1)


@pytest.mark.parametrize("size", [0, -4, (32, 32, 3), "32", 32.5])
def test_bad_image_size(size):
    with pytest.raises(InputError, match=r"image_size must be a positive int or \(height, width\)"):
        blur_params_for(size)
