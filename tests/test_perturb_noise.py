"""CIFAR-10-C noise corruptions: statistics against closed forms, the release's uint8 pipeline,
scikit-image's salt-and-pepper, determinism, devices and every input error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from virolbi.errors import InputError
from virolbi.perturb import (
    CORRUPTIONS,
    SEVERITY_PARAMS,
    Corruption,
    corrupt,
    gaussian_noise,
    impulse_noise,
    quantize_uint8,
    shot_noise,
    speckle_noise,
)

NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
SHAPE = (4, 3, 48, 48)  # 27 648 values per statistic
N = math.prod(SHAPE)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _flat(value: float, dtype=torch.float64) -> torch.Tensor:
    return torch.full(SHAPE, value, dtype=dtype)


def test_registry_and_release_parameters():
    assert set(CORRUPTIONS) == set(NAMES) == set(SEVERITY_PARAMS)
    # make_cifar_c.py (Hendrycks & Dietterich 2019), as listed in SPEC §3
    assert SEVERITY_PARAMS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert SEVERITY_PARAMS["shot_noise"] == (500, 250, 100, 75, 50)
    assert SEVERITY_PARAMS["impulse_noise"] == (0.01, 0.02, 0.03, 0.05, 0.07)
    assert SEVERITY_PARAMS["speckle_noise"] == (0.06, 0.10, 0.12, 0.16, 0.20)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_std_matches_c(severity):
    c = SEVERITY_PARAMS["gaussian_noise"][severity - 1]
    y = gaussian_noise(_flat(0.5), severity, generator=_gen(), quantize=False)
    assert abs(float(y.std()) / c - 1) < 0.03
    assert abs(float(y.mean()) - 0.5) < 4 * c / math.sqrt(N)


def test_gaussian_quantized_is_floor_of_release():
    # With noise much wider than a grey level, floor(255 v) loses 1/2 level on average and adds
    # the variance of a uniform rounding error, 1/12 level^2.
    c = SEVERITY_PARAMS["gaussian_noise"][0]  # 10 grey levels: a 1/2-level shift is 8 standard errors
    y = gaussian_noise(_flat(0.5), 1, generator=_gen())
    lv = y * 255
    assert torch.equal(lv, lv.round())
    assert abs(float(lv.mean()) - (127.5 - 0.5)) < 4 * c * 255 / math.sqrt(N)
    expected_var = (c * 255) ** 2 + 1 / 12
    assert abs(float(lv.var()) / expected_var - 1) < 0.05


@pytest.mark.parametrize("x0", [0.2, 0.5])
@pytest.mark.parametrize("severity", [1, 5])
def test_shot_noise_mean_and_variance(x0, severity):
    c = SEVERITY_PARAMS["shot_noise"][severity - 1]
    y = shot_noise(_flat(x0), severity, generator=_gen(1), quantize=False)
    assert abs(float(y.mean()) - x0) < 4 * math.sqrt(x0 / c / N)
    assert abs(float(y.var()) / (x0 / c) - 1) < 0.05
    # Poisson counts over c: every value is an integer multiple of 1/c
    assert torch.allclose(y * c, (y * c).round(), atol=1e-9)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_impulse_fraction_matches_amount(severity):
    c = SEVERITY_PARAMS["impulse_noise"][severity - 1]
    x = _flat(0.5)
    y = impulse_noise(x, severity, generator=_gen(2), quantize=False)
    changed = y != x
    assert set(y[changed].unique().tolist()) <= {0.0, 1.0}
    tol = 4 * math.sqrt(c * (1 - c) / N)
    assert abs(float(changed.double().mean()) - c) < tol
    assert abs(float((y == 1).double().mean()) - c / 2) < tol
    assert abs(float((y == 0).double().mean()) - c / 2) < tol


def test_impulse_matches_scikit_image_statistics():
    skimage_util = pytest.importorskip("skimage.util")
    c = SEVERITY_PARAMS["impulse_noise"][4]
    x = np.full((SHAPE[0], SHAPE[2], SHAPE[3], SHAPE[1]), 0.5)
    ref = skimage_util.random_noise(x, mode="s&p", amount=c, rng=0)  # the release's call
    ours = impulse_noise(_flat(0.5), 5, generator=_gen(3), quantize=False).numpy()
    tol = 2 * 4 * math.sqrt(c * (1 - c) / N)
    for v in (0.0, 1.0, 0.5):
        assert abs((ours == v).mean() - (ref == v).mean()) < tol


@pytest.mark.parametrize("severity", [1, 5])
def test_speckle_std_proportional_to_brightness(severity):
    c = SEVERITY_PARAMS["speckle_noise"][severity - 1]
    for x0 in (0.25, 0.5):
        y = speckle_noise(_flat(x0), severity, generator=_gen(4), quantize=False)
        assert abs(float(y.std()) / (x0 * c) - 1) < 0.03
    assert torch.equal(speckle_noise(_flat(0.0), severity, generator=_gen()), _flat(0.0))


def _release_uint8(v: np.ndarray) -> np.ndarray:
    """make_cifar_c.py: np.uint8(np.clip(v, 0, 1) * 255) in float64."""
    return np.uint8(np.clip(v, 0, 1) * 255)


@pytest.mark.parametrize("name", ["gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise"])
def test_same_draws_give_the_release_uint8_values(name, cifar_small):
    """Rebuild each corruption with numpy from the same random draws (same generator stream) and
    the release's formula; the result must agree up to the 1e-4 grey-level floor tolerance."""
    imgs = cifar_small[0][:4]
    x64 = imgs.transpose(0, 3, 1, 2) / 255.0
    x = torch.from_numpy(x64)
    c = SEVERITY_PARAMS[name][3]
    ours = np.rint(corrupt(x, name, 4, _gen(5)).numpy() * 255).astype(np.int64)
    g = _gen(5)
    if name == "gaussian_noise":
        ref = _release_uint8(x64 + torch.randn(x.shape, generator=g, dtype=x.dtype).numpy() * c)
    elif name == "speckle_noise":
        ref = _release_uint8(x64 + x64 * torch.randn(x.shape, generator=g, dtype=x.dtype).numpy() * c)
    elif name == "shot_noise":
        ref = _release_uint8(torch.poisson(x * c, generator=g).numpy() / c)
    else:
        flipped = torch.rand(x.shape, generator=g, dtype=x.dtype).numpy() <= c
        salted = torch.rand(x.shape, generator=g, dtype=x.dtype).numpy() <= 0.5
        out = x64.copy()
        out[flipped & salted] = 1
        out[flipped & ~salted] = 0
        ref = _release_uint8(out)
    diff = ours - ref.astype(np.int64)
    assert set(np.unique(diff).tolist()) <= {0, 1}
    assert (diff != 0).mean() < 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_severities_monotone_in_mean_abs_deviation(name, cifar_batch):
    mad = [float((corrupt(cifar_batch, name, s, _gen(s)) - cifar_batch).abs().mean())
           for s in range(1, 6)]
    assert all(a < b for a, b in zip(mad, mad[1:])), mad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_output_is_uint8_exact_and_in_range(name, dtype, cifar_batch):
    x = cifar_batch[:3].to(dtype)
    y = corrupt(x, name, 5, _gen())
    assert y.dtype == dtype and y.shape == x.shape
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    lv = y * 255
    assert torch.equal(lv, lv.round())


@pytest.mark.parametrize("make", ["divide", "multiply"])
def test_untouched_pixels_survive_truncation(make, cifar_small):
    """Impulse noise leaves most pixels alone; they must come back on the same grey level, also
    when the float image was made with a product by 1/255 (off the grid by ~1e-5)."""
    k = torch.from_numpy(cifar_small[0][:4]).permute(0, 3, 1, 2).float()
    x = k / 255 if make == "divide" else k * (1 / 255)
    y = impulse_noise(x, 1, generator=_gen())
    lv = (y * 255).round()
    kept = (lv != 0) & (lv != 255)
    assert kept.double().mean() > 0.95
    assert torch.equal(lv[kept], k[kept])
    assert torch.equal(quantize_uint8(x) * 255, k)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_with_generator(name, cifar_batch):
    a = corrupt(cifar_batch, name, 3, _gen(7))
    b = corrupt(cifar_batch, name, 3, _gen(7))
    c = corrupt(cifar_batch, name, 3, _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_device_follows_input_and_cpu_generator_reproduces(name, device, cifar_batch):
    x = cifar_batch[:2].to(device)
    y = corrupt(x, name, 2, _gen(9))
    assert y.device == x.device and y.dtype == x.dtype
    ref = corrupt(cifar_batch[:2], name, 2, _gen(9))
    torch.testing.assert_close(y.cpu(), ref, atol=1 / 255 + 1e-6, rtol=0)
    assert (y.cpu() != ref).double().mean() < 1e-3  # float kernels may differ by one grey level


def test_without_generator_uses_global_seed():
    x = _flat(0.5, torch.float32)[:1]
    torch.manual_seed(0)
    a = corrupt(x, "gaussian_noise", 1)
    torch.manual_seed(0)
    b = corrupt(x, "gaussian_noise", 1)
    assert torch.equal(a, b)


def test_batch_of_one_and_gray_and_odd_size():
    x = torch.rand(1, 1, 7, 5, generator=_gen())
    for name in NAMES:
        assert corrupt(x, name, 1, _gen()).shape == (1, 1, 7, 5)


def test_module_equals_function(cifar_batch):
    m = Corruption("speckle_noise", 4, generator=_gen(11))
    assert torch.equal(m(cifar_batch), corrupt(cifar_batch, "speckle_noise", 4, _gen(11)))
    assert "speckle_noise" in repr(m) and "severity=4" in repr(m)
    assert Corruption("shot_noise", 1, quantize=False).quantize is False


def test_corrupt_equals_named_function(cifar_batch):
    for name, fn in CORRUPTIONS.items():
        assert torch.equal(corrupt(cifar_batch, name, 2, _gen(1)), fn(cifar_batch, 2, generator=_gen(1)))


# ----------------------------------------------------------------------------- input errors

def test_unknown_corruption_lists_valid_names():
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(InputError, match=r"unknown corruption 'fog'; valid names: gaussian_noise, "
                                         r"impulse_noise, shot_noise, speckle_noise"):
        corrupt(x, "fog", 1)
    with pytest.raises(InputError, match="unknown corruption 'fog'"):
        Corruption("fog", 1)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, "3", True, None])
def test_bad_severity(severity):
    with pytest.raises(InputError, match=r"severity must be an integer in 1\.\.5, got"):
        corrupt(torch.rand(1, 3, 4, 4), "gaussian_noise", severity)
    with pytest.raises(InputError, match=r"severity must be an integer in 1\.\.5"):
        Corruption("gaussian_noise", severity)


def test_numpy_integer_severity_is_accepted():
    assert corrupt(torch.rand(1, 3, 4, 4), "gaussian_noise", np.int64(2), _gen()).shape == (1, 3, 4, 4)


def test_bad_shape():
    with pytest.raises(InputError, match=r"images must have shape \(B, C, H, W\), got \(3, 4, 4\)"):
        corrupt(torch.rand(3, 4, 4), "gaussian_noise", 1)


def test_empty_batch():
    with pytest.raises(InputError, match="images is an empty batch"):
        corrupt(torch.rand(0, 3, 4, 4), "gaussian_noise", 1)


def test_values_outside_unit_interval():
    with pytest.raises(InputError, match=r"images must have float values in \[0, 1\], got values in"):
        corrupt(torch.rand(1, 3, 4, 4) * 255, "shot_noise", 1)


def test_nan_input():
    x = torch.rand(1, 3, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="images contains NaN or Inf values"):
        corrupt(x, "impulse_noise", 1)


def test_integer_tensor_is_rejected():
    with pytest.raises(InputError, match=r"images must be a float tensor in \[0, 1\], got dtype "
                                         r"torch.uint8"):
        corrupt(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "gaussian_noise", 1)


def test_numpy_input_is_rejected():
    with pytest.raises(InputError, match=r"images must be a torch.Tensor of shape \(B, C, H, W\), "
                                         r"got ndarray"):
        corrupt(np.zeros((1, 3, 4, 4)), "gaussian_noise", 1)


def test_bad_generator():
    with pytest.raises(InputError, match="generator must be a torch.Generator or None, got int"):
        corrupt(torch.rand(1, 3, 4, 4), "gaussian_noise", 1, generator=0)
    with pytest.raises(InputError, match="generator must be a torch.Generator or None"):
        Corruption("gaussian_noise", 1, generator=np.random.default_rng(0))
