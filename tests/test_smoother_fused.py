"""The compiled ``"imex"`` path (virolbi.smoother.fused) against the tensor path and the DCT solver,
on real images; threads and global configuration."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import virolbi.smoother.fused as fused
from virolbi.smoother import lbi_path
from virolbi.smoother.operators import NeumannSolver, dct_matrix

pytestmark = pytest.mark.skipif(not fused.available(), reason="numba not installed")


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 7, 9), (1, 10, 6), (3, 2, 5), (1, 5, 97)])
@pytest.mark.parametrize("nu", [1.0, 0.5])
@pytest.mark.parametrize("fft", [False, True])
def test_compiled_solve_equals_the_dct_solver(shape, nu, fft):
    """DCT along the width (dense product or pocketfft) + Thomas along the height solve
    (I + DᵀD/ν)u = x + r/ν exactly: the same as the 2-D DCT solver (an independent construction)
    for even, odd and prime sizes."""
    g = torch.Generator().manual_seed(0)
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    u0 = torch.rand(shape, generator=g, dtype=torch.float64)
    c, h, w = shape
    u, spec = np.empty(shape), np.empty((c * h, w))
    fused._solve(r.numpy(), u0.numpy(), *fused.width_transform(h, w, nu, np.float64, fft=fft),
                 spec, u)
    expected = u0 + NeumannSolver(h, w, nu, dtype=torch.float64)(r) / nu
    assert np.allclose(u, expected.numpy(), atol=1e-12)


def test_compiled_solve_satisfies_the_normal_equation_at_224_px():
    """At a real size (3 x 224 x 224, the FFT branch) the solve's residual of
    (I + DᵀD/ν)(u - u0) = r/ν, with D applied directly, is at rounding level."""
    from virolbi.smoother.operators import adjoint_diff, forward_diff

    g = torch.Generator().manual_seed(1)
    r = torch.randn(1, 3, 224, 224, generator=g, dtype=torch.float64)
    u0 = torch.zeros_like(r)
    u, spec = np.empty((3, 224, 224)), np.empty((3 * 224, 224))
    assert fused.uses_fft(224)
    fused._solve(r[0].numpy(), u0[0].numpy(), *fused.width_transform(224, 224, 1.0, np.float64),
                 spec, u)
    v = torch.from_numpy(u)[None]
    residual = v + adjoint_diff(*forward_diff(v)) - r
    assert float(residual.abs().max()) < 1e-10 * float(r.abs().max())


def test_width_transform_is_cached_read_only_and_empty_for_the_fft_branch():
    ct, c, piv = fused.width_transform(8, 200, 1.0, np.float32)
    assert ct.shape == c.shape == (0, 0) and piv.shape == (8, 200)  # no W x W matrix
    assert fused.width_transform(8, 200, 1.0, np.float32)[2] is piv and not piv.flags.writeable
    assert fused.width_transform(8, 32, 1.0, np.float32)[1].shape == (32, 32)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
def test_compiled_path_matches_the_tensor_path(cifar_batch, monkeypatch, dtype, atol):
    x = cifar_batch[:6].to(dtype)
    a = lbi_path(x, (0.3, 0.6, 0.8))
    monkeypatch.setattr(fused, "available", lambda: False)
    b = lbi_path(x, (0.3, 0.6, 0.8))
    agree = (a.support() == b.support()).double().mean()
    if dtype == torch.float64:
        assert torch.equal(a.iterations, b.iterations) and torch.equal(a.support(), b.support())
    else:  # float32 rounding may move a crossing by an iteration on a rare image
        assert (a.iterations - b.iterations).abs().max() <= 1 and agree > 0.999
    assert torch.allclose(a.images, b.images, atol=atol if agree == 1 else 0.05)


def test_odd_sized_gray_crop_matches_the_tensor_path(cifar_batch, monkeypatch):
    x = cifar_batch[:3, :1, 3:20, 5:26].double()  # 17 x 21, one channel
    a = lbi_path(x, (0.4, 0.7))
    monkeypatch.setattr(fused, "available", lambda: False)
    b = lbi_path(x, (0.4, 0.7))
    assert torch.equal(a.iterations, b.iterations) and torch.equal(a.support(), b.support())
    assert torch.allclose(a.images, b.images, atol=1e-9)


def test_a_batch_equals_its_images_one_by_one(cifar_batch):
    x = cifar_batch[:8]
    together = lbi_path(x, (0.5, 0.8))
    for i in range(len(x)):
        alone = lbi_path(x[i:i + 1], (0.5, 0.8))
        assert torch.equal(alone.images[:, 0], together.images[:, i])
        assert torch.equal(alone.iterations[:, 0], together.iterations[:, i])


def test_thread_count_does_not_change_the_result(cifar_batch):
    x = cifar_batch[:9]
    st_kw = dict(levels=(0.6,))
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lbi_path(x, **st_kw)
        torch.set_num_threads(3)
        three = lbi_path(x, **st_kw)
    finally:
        torch.set_num_threads(torch_threads)
    assert torch.equal(one.images, three.images)


def test_dct_matrix_hands_out_a_fresh_tensor():
    a = dct_matrix(8)
    a.zero_()
    assert dct_matrix(8).abs().sum() > 0


_IMPORT_CHECK = """
import numba, torch
before = numba.config.THREADING_LAYER
import virolbi
virolbi.smooth(torch.rand(4, 3, 16, 16), 0.6)
assert numba.config.THREADING_LAYER == before, (before, numba.config.THREADING_LAYER)
try:
    layer = numba.threading_layer()
except ValueError:
    layer = None
assert layer is None, layer
print("ok")
"""


def test_smoothing_leaves_numba_configuration_and_thread_pool_alone():
    """Importing virolbi and smoothing change no numba setting and start no numba thread pool, whose
    spinning threads starve torch's OpenMP pool (convolutions ~30x slower on 2 cores): the compiled
    loop is serial, and images are spread over GIL-free Python threads instead."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_CHECK], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_blas_is_held_to_one_thread_for_large_images_only():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with fused._single_threaded_blas(3 * 32 * 32 * 32):  # CIFAR: OpenBLAS stays single-threaded
        small = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    with fused._single_threaded_blas(84 * 84 * 84):
        large = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert large and set(large) == {1}
    assert small == [i["num_threads"] for i in threadpoolctl.threadpool_info()
                     if i["user_api"] == "blas"]  # left as it was


def test_wide_images_take_the_compiled_fft_path_with_the_tensor_paths_result(cifar_batch,
                                                                           monkeypatch):
    x = torch.cat(list(cifar_batch[:5]), dim=-1)[None].double()  # one 32 x 160 image
    assert fused.uses_fft(x.shape[-1])
    compiled = lbi_path(x, (0.4, 0.7))
    monkeypatch.setattr(fused, "available", lambda: False)
    tensor_path = lbi_path(x, (0.4, 0.7))
    assert torch.equal(tensor_path.iterations, compiled.iterations)
    assert torch.equal(tensor_path.support(), compiled.support())
    assert torch.allclose(tensor_path.images, compiled.images, atol=1e-9)


@pytest.mark.parametrize("threads", [1, 2])
def test_progress_segments_give_the_uninterrupted_result(cifar_batch, monkeypatch, threads):
    """With progress the compiled loop pauses every few iterations and resumes: the same
    iterations, supports and images as one uninterrupted call (float64, bit for bit)."""
    x = cifar_batch[:5].double()
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        whole = lbi_path(x, (0.3, 0.6, 0.8))
        monkeypatch.setattr(fused, "PROGRESS_EVERY", 3)
        calls = []
        original = fused._path_chunk
        monkeypatch.setattr(fused, "_path_chunk", lambda *a: calls.append(a[13]) or original(*a))
        segmented = lbi_path(x, (0.3, 0.6, 0.8), progress=True)
    finally:
        torch.set_num_threads(torch_threads)
    assert len(set(calls)) > 10  # many segments, each with its own stopping iteration
    assert torch.equal(whole.iterations, segmented.iterations)
    assert torch.equal(whole.support(), segmented.support())
    assert torch.equal(whole.images, segmented.images)
