"""The public surface of the smoother: ``virolbi.smooth``, ``image_path`` and ``ViRoLBI``.

Every bad input raises :class:`virolbi.InputError` (a ``ValueError``) with a message naming the
problem; shapes, types and dtypes follow the input; the module equals the function and its output is
constant on the partition it reports; and properties that hold by construction (mean preserved by
the DCT/IMEX solvers, level 1.0 is the identity, a flat region caps the reachable sparsity) are
checked on real CIFAR-10 images and tiny hand-made ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import virolbi
from virolbi import InputError, ViRoLBI, image_path, smooth
from virolbi.errors import UnreachedLevelWarning
from virolbi.smoother import SmoothResult, average_over_components


def _img(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# Bad input: one InputError (a ValueError) naming the problem
# ------------------------------------------------------------------------------------------------

def _nan():
    x = _img(3, 8, 8)
    x[1, 2, 3] = float("nan")
    return x


def _inf():
    x = _img(3, 8, 8)
    x[0, 0, 0] = float("inf")
    return x


BAD_INPUTS = [
    ("nan", _nan, {}, "contains NaN or Inf"),
    ("inf", _inf, {}, "contains NaN or Inf"),
    ("rank1", lambda: _img(8), {}, r"expected an image \(H, W\) or \(C, H, W\) or a batch"),
    ("rank5", lambda: _img(1, 1, 3, 8, 8), {}, r"got shape \(1, 1, 3, 8, 8\)"),
    ("empty batch", lambda: torch.zeros(0, 3, 8, 8), {}, "empty batch"),
    ("1x5 image", lambda: _img(1, 5), {}, "at least 2x2 pixels, got 1x5"),
    ("above 1", lambda: _img(3, 8, 8) + 0.5, {}, r"float values in \[0, 1\]"),
    ("below 0", lambda: _img(3, 8, 8) - 0.5, {}, r"float values in \[0, 1\]"),
    ("int32", lambda: torch.zeros(3, 8, 8, dtype=torch.int32), {}, "got dtype torch.int32"),
    ("int32 numpy", lambda: np.zeros((3, 8, 8), dtype=np.int32), {}, "got dtype torch.int32"),
    ("bool", lambda: torch.zeros(3, 8, 8, dtype=torch.bool), {}, "float in \\[0, 1\\] or uint8"),
    ("list", lambda: [[0.1, 0.2], [0.3, 0.4]], {}, "torch.Tensor or numpy.ndarray image, got list"),
    ("channels-last", lambda: np.zeros((32, 32, 3), np.float32), {}, "looks channels-last"),
    ("batch channels-last", lambda: np.zeros((5, 32, 32, 3), np.uint8), {},
     r"looks channels-last \(B, H, W, C\)"),
    ("sparsity 0", lambda: _img(8, 8), {"sparsity": 0.0}, r"sparsity must be in \(0, 1\], got 0"),
    ("sparsity 1.5", lambda: _img(8, 8), {"sparsity": 1.5},
     r"sparsity must be in \(0, 1\], got 1.5"),
    ("sparsity nan", lambda: _img(8, 8), {"sparsity": math.nan}, r"sparsity must be in \(0, 1\]"),
    ("sparsity text", lambda: _img(8, 8), {"sparsity": "a lot"}, "sparsity must be a number"),
    ("unknown solver", lambda: _img(8, 8), {"solver": "newton"},
     "unknown solver 'newton'; expected one of imex, dct, explicit"),
    ("unstable dct step", lambda: _img(8, 8), {"solver": "dct", "step": 1.0},
     "step 1 is unstable for the 'dct' solver"),
    ("unstable explicit step", lambda: _img(8, 8), {"solver": "explicit", "step": 1.0},
     "unstable for the 'explicit' solver"),
    ("huge imex step", lambda: _img(8, 8), {"step": 1e6},
     r"step 1e\+06 is unstable for the 'imex' solver: it needs step < 4 "),
    ("negative step", lambda: _img(8, 8), {"step": -0.1}, "step must be a finite number > 0"),
    ("unknown projection", lambda: _img(8, 8), {"projection": "svd"},
     "unknown projection 'svd'; expected one of graph, pinv, lsqr"),
    ("kappa 0", lambda: _img(8, 8), {"kappa": 0.0}, "kappa must be a finite number > 0"),
    ("nu inf", lambda: _img(8, 8), {"nu": math.inf}, "nu must be a finite number > 0"),
]


@pytest.mark.parametrize("make, kwargs, message", [b[1:] for b in BAD_INPUTS],
                         ids=[b[0] for b in BAD_INPUTS])
def test_smooth_rejects_bad_input(make, kwargs, message):
    with pytest.raises(InputError, match=message) as info:
        smooth(make(), **kwargs)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)  # one line


@pytest.mark.parametrize("make, kwargs, message",
                         [b[1:] for b in BAD_INPUTS if not b[0].startswith("sparsity")],
                         ids=[b[0] for b in BAD_INPUTS if not b[0].startswith("sparsity")])
def test_image_path_rejects_the_same_bad_input(make, kwargs, message):
    with pytest.raises(InputError, match=message):
        image_path(make(), levels=(0.5, 1.0), **kwargs)


@pytest.mark.parametrize("levels, message", [
    ((), "levels must not be empty"),
    ((0.5, 0.0), r"each of levels must be in \(0, 1\], got 0.0"),
    ((0.5, 1.2), r"each of levels must be in \(0, 1\], got 1.2"),
    ((0.5, math.nan), r"each of levels must be in \(0, 1\]"),
    (None, "levels must be a sequence of numbers"),
])
def test_image_path_rejects_bad_levels(levels, message):
    with pytest.raises(InputError, match=message):
        image_path(_img(8, 8), levels=levels)


@pytest.mark.parametrize("sparsity, message", [(0.0, r"got 0.0"), (1.5, r"got 1.5"),
                                               (math.nan, r"got nan")])
def test_module_rejects_bad_sparsity_at_construction(sparsity, message):
    with pytest.raises(InputError, match=r"sparsity must be in \(0, 1\], " + message):
        ViRoLBI(sparsity)


def test_module_rejects_bad_batches():
    m = ViRoLBI(0.5)
    with pytest.raises(InputError, match=r"must have shape \(B, C, H, W\), got \(3, 8, 8\)"):
        m(_img(3, 8, 8))
    with pytest.raises(InputError, match="empty batch"):
        m(torch.zeros(0, 1, 8, 8))
    with pytest.raises(InputError, match="contains NaN or Inf"):
        m(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(InputError, match="x must be a float tensor, got torch.uint8"):
        m(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))


# ------------------------------------------------------------------------------------------------
# Types, shapes and dtypes follow the input
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(9, 11), (3, 9, 11), (2, 3, 9, 11)])
@pytest.mark.parametrize("family", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_same_type_shape_and_dtype_out(shape, family, dtype):
    rng = np.random.default_rng(1)
    if dtype == "uint8":
        x = rng.integers(0, 256, shape).astype(np.uint8)
    else:
        x = rng.random(shape).astype(dtype)
    if family == "torch":
        x = torch.from_numpy(x)
    y = smooth(x, 0.4)
    assert type(y) is type(x)
    assert tuple(y.shape) == shape
    assert y.dtype == x.dtype
    p = image_path(x, levels=(0.3, 1.0))
    assert type(p) is type(x) and tuple(p.shape) == (2, *shape) and p.dtype == x.dtype


def test_uint8_equals_rounded_float_result(cifar_small):
    """uint8 in: the float result on x/255, rounded back to uint8."""
    x8 = np.ascontiguousarray(cifar_small[0][:3].transpose(0, 3, 1, 2))
    y8 = smooth(x8, 0.6)
    yf = smooth(torch.from_numpy(x8).float() / 255.0, 0.6)
    expected = torch.round(yf.clamp(0, 1) * 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(y8, expected)


def test_one_channel_colour_image_equals_gray():
    x = _img(12, 10, seed=3)
    np.testing.assert_array_equal(smooth(x[None], 0.5).numpy()[0], smooth(x, 0.5).numpy())
    np.testing.assert_array_equal(smooth(x[None, None], 0.5).numpy()[0, 0], smooth(x, 0.5).numpy())


def test_batch_of_one_equals_single_image(cifar_batch):
    x = cifar_batch[:3]
    batch = smooth(x, 0.6)
    for i in range(3):
        torch.testing.assert_close(smooth(x[i], 0.6), batch[i], rtol=0, atol=1e-6)


def test_input_is_not_modified(cifar_batch):
    x = cifar_batch[:2].clone()
    before = x.clone()
    smooth(x, 0.6)
    image_path(x, (0.3, 1.0))
    ViRoLBI(0.6)(x)
    assert torch.equal(x, before)


def test_read_only_numpy_input_gives_no_warning():
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    x.setflags(write=False)
    assert smooth(x, 0.5).shape == (3, 8, 8)


# ------------------------------------------------------------------------------------------------
# image_path
# ------------------------------------------------------------------------------------------------

def test_image_path_shape_order_and_level_one_is_the_input(cifar_batch):
    x = cifar_batch[:2]
    levels = (0.8, 0.2, 1.0, 0.5)  # any order: returned coarse to fine
    p, info = image_path(x, levels, return_info=True)
    assert p.shape == (4, *x.shape)
    assert info.levels == (0.2, 0.5, 0.8, 1.0)
    assert torch.equal(p[-1], x)  # level 1.0 is x itself
    # each level equals smooth() at that level (one run records them all)
    for i, lv in enumerate(info.levels[:-1]):
        torch.testing.assert_close(p[i], smooth(x, lv), rtol=0, atol=1e-6)
    # coarse to fine: fewer components at lower levels
    assert (info.n_components[:-1] <= info.n_components[1:]).all()


def test_image_path_level_one_exact_for_uint8_and_gray():
    x8 = np.random.default_rng(2).integers(0, 256, (7, 9), dtype=np.uint8)
    np.testing.assert_array_equal(image_path(x8, (1.0,))[0], x8)
    xf = np.random.default_rng(2).random((2, 1, 5, 6))
    np.testing.assert_array_equal(image_path(xf, (0.5, 1.0))[1], xf)


def test_smooth_at_level_one_returns_x():
    x = _img(3, 6, 7)
    assert torch.equal(smooth(x, 1.0), x)


# ------------------------------------------------------------------------------------------------
# The module
# ------------------------------------------------------------------------------------------------

def test_module_equals_function_and_is_constant_on_its_components(cifar_batch):
    x = cifar_batch[:4]
    m = ViRoLBI(0.6)
    y, labels = m.forward_with_labels(x)
    torch.testing.assert_close(m(x), smooth(x, 0.6), rtol=0, atol=0)
    torch.testing.assert_close(y, smooth(x, 0.6), rtol=0, atol=0)
    assert labels.dtype == torch.int64 and labels.shape == (4, 32, 32)
    # constant on every component: averaging over the partition changes nothing ...
    torch.testing.assert_close(average_over_components(y, labels), y, rtol=0, atol=1e-5)
    # ... and that check has teeth: x itself is not constant on them
    assert (average_over_components(x, labels) - x).abs().max() > 0.05
    # independent check of one image: pixels sharing a label share a value, per channel
    lab, img = labels[0].reshape(-1), y[0].reshape(3, -1)
    for k in torch.unique(lab)[:50]:
        vals = img[:, lab == k]
        assert (vals.amax(1) - vals.amin(1)).max() <= 1e-6


def test_module_options_and_repr():
    m = ViRoLBI(0.3, solver="dct", kappa=4.0, group=False)
    x = _img(2, 3, 10, 10, seed=5)
    torch.testing.assert_close(m(x), smooth(x, 0.3, solver="dct", kappa=4.0, group=False),
                               rtol=0, atol=0)
    assert "sparsity=0.3" in repr(m) and "solver=dct" in repr(m)
    assert list(m.parameters()) == []


def test_module_output_is_not_differentiable():
    x = _img(1, 1, 8, 8).requires_grad_(True)
    y = ViRoLBI(0.5)(x)
    assert not y.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_runs_on_device_and_follows_dtype(device, dtype, cifar_batch):
    x = cifar_batch[:2].to(device=device, dtype=dtype)
    m = ViRoLBI(0.6).to(device)
    y, labels = m.forward_with_labels(x)
    assert y.device.type == device.type and y.dtype == dtype and y.shape == x.shape
    assert labels.device.type == device.type and labels.dtype == torch.int64
    torch.testing.assert_close(average_over_components(y, labels), y, rtol=0, atol=1e-5)
    ref = smooth(x.cpu(), 0.6)
    # same partition up to a few edges, same image up to float rounding along the path
    assert (y.cpu() - ref).abs().mean() < 1e-3


# ------------------------------------------------------------------------------------------------
# Properties and the result object
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", ["imex", "dct"])
def test_mean_intensity_is_preserved(cifar_batch, solver):
    """u(γ) = (I + DᵀD/ν)⁻¹(x + Dᵀγ/ν) and 1ᵀDᵀ = 0, so 1ᵀu = 1ᵀx; the projection (Eq. 6) keeps
    the sum of every component: each channel's mean is unchanged."""
    x = cifar_batch[:3].double()
    y = smooth(x, 0.4, solver=solver)
    torch.testing.assert_close(y.mean((-1, -2)), x.mean((-1, -2)), rtol=0, atol=1e-10)
    assert y.min() >= -1e-9 and y.max() <= 1 + 1e-9  # averages of values in [0, 1]


def test_return_info_is_per_image(cifar_batch):
    x = cifar_batch[:3]
    y, info = smooth(x, 0.6, return_info=True)
    assert isinstance(info, SmoothResult)
    assert info.levels == (0.6,)
    assert info.iterations.shape == info.sparsity.shape == info.n_components.shape == (1, 3)
    assert info.reached.all() and not info.warnings
    assert (info.sparsity >= 0.6).all() and (info.sparsity < 0.7).all()
    assert (info.iterations > 0).all()
    torch.testing.assert_close(info.images[0], y, rtol=0, atol=0)
    # the component count is the number of distinct labels
    for b in range(3):
        assert int(info.n_components[0, b]) == len(torch.unique(info.labels[0, b]))


def test_unreachable_target_is_a_warning_not_an_error():
    """A flat half can never enter the support: the reachable sparsity is the fraction of edges
    along which the image changes (60 of the 112 edges of this 8×8 image)."""
    x = _img(2, 1, 8, 8, seed=4)
    x[1, :, :, :4] = 0.5  # image 1: left half flat
    with pytest.warns(UnreachedLevelWarning, match="did not reach sparsity level 0.9") as caught:
        y, info = smooth(x, 0.9, return_info=True)
    assert [r.image for r in caught[0].message.records] == [1]  # the warning carries the records
    assert caught[0].filename == __file__  # attributed to the caller's line, not the library's
    flat_h, flat_v = 8 * 3, 7 * 4
    ceiling = 1 - (flat_h + flat_v) / 112
    assert info.reached.tolist() == [[True, False]]
    assert float(info.sparsity[0, 1]) <= ceiling + 1e-12
    assert len(info.warnings) == 1
    rec = info.warnings[0]
    assert (rec.image, rec.level, rec.sparsity) == (1, 0.9, float(info.sparsity[0, 1]))
    assert str(rec).startswith("image 1: sparsity 0.9 not reached")
    # the flat half stays one flat piece of the output
    assert torch.unique(y[1, 0, :, :4]).numel() == 1
    assert y.shape == x.shape


def test_exported_names():
    """The top level exports exactly the documented API, and each name is its implementation."""
    import virolbi.errors
    import virolbi.smoother.api
    import virolbi.store

    assert set(virolbi.__all__) == {"InputError", "UnreachedLevelWarning", "ViRoLBI", "image_path",
                                    "smooth", "open_smoothed", "__version__"}
    namespace: dict = {}
    exec("from virolbi import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(virolbi.__all__)
    assert namespace["smooth"] is virolbi.smoother.api.smooth
    assert namespace["image_path"] is virolbi.smoother.api.image_path
    assert namespace["ViRoLBI"] is virolbi.smoother.api.ViRoLBI
    assert namespace["open_smoothed"] is virolbi.store.open_smoothed
    assert namespace["UnreachedLevelWarning"] is virolbi.errors.UnreachedLevelWarning
    assert issubclass(namespace["InputError"], ValueError)
    assert issubclass(namespace["UnreachedLevelWarning"], UserWarning)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input_is_smoothed_in_float32_and_returned_in_its_dtype(cifar_batch, dtype):
    """bfloat16's 8-bit mantissa cannot resolve the path (it ran to max_iter, wrong result):
    the work is done in float32 on the rounded input, the output comes back in the caller's dtype."""
    x = cifar_batch[:4].to(dtype)
    y, info = smooth(x, 0.6, return_info=True)
    ref, ref_info = smooth(x.float(), 0.6, return_info=True)
    assert y.dtype == dtype
    assert torch.equal(info.iterations, ref_info.iterations) and bool(info.reached.all())
    assert torch.equal(y, ref.to(dtype))



def test_a_level_jumped_over_by_a_large_step_is_not_reached(cifar_batch):
    """At the default step every first iterate past 0.1 overshoots it by little (at most 0.02 on
    CIFAR-10 images) and counts as reached; at a step just below the imex limit the path jumps
    over the level on some images: they say 'overshot', with the sparsity they reached."""
    x = cifar_batch[:12]
    _, fine = smooth(x, 0.1, return_info=True)
    assert fine.reached.all() and float(fine.sparsity.max()) <= 0.1 + 0.05
    with pytest.warns(UnreachedLevelWarning) as caught:
        _, coarse = smooth(x, 0.1, step=3.9, return_info=True)
    jumped = coarse.sparsity[0] > 0.15
    assert jumped.any() and torch.equal(coarse.reached[0], ~jumped)
    records = caught[0].message.records
    assert [r.image for r in records] == torch.nonzero(jumped).flatten().tolist()
    assert all(r.reason.startswith("overshot: the first iterate past the level has sparsity")
               for r in records)
