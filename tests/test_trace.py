"""Table 7 trace (Eq. 5 with ũ at every iteration): against an independent NumPy Eq. 5 and against
:func:`virolbi.smoother.projection.project` at sampled iterations, for all three projections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virolbi.errors import InputError
from virolbi.smoother.operators import lbi_step_size
from virolbi.smoother.projection import project
from virolbi.smoother.trace import projection_trace

RECORD = (1, 150, 400, 613, 800)
N_ITER = 800


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """OpenBLAS's threads make a small SVD/LSQR ~100x slower on the shared 2-core machines (they
    spin against torch's OpenMP pool): use one thread here, and restore the setting after."""
    import ctypes
    import glob
    import os

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    lib = ctypes.CDLL(libs[0]) if libs else None
    if lib is None or not hasattr(lib, "scipy_openblas_set_num_threads64_"):
        yield
        return
    before = lib.scipy_openblas_get_num_threads64_()
    lib.scipy_openblas_set_num_threads64_(1)
    yield
    lib.scipy_openblas_set_num_threads64_(before)


def _eq5_numpy(x, iterations, record, kappa=5.0, nu=1.0):
    """Eq. 5 on a gray image written out with NumPy (soft-thresholding at 1 per edge)."""
    h, w = x.shape
    alpha = lbi_step_size(h, w, kappa, nu)
    u = np.zeros_like(x)
    zh, zv = np.zeros((h, w - 1)), np.zeros((h - 1, w))
    out = {}
    for k in range(1, iterations + 1):
        gh = kappa * np.sign(zh) * np.maximum(np.abs(zh) - 1.0, 0.0)
        gv = kappa * np.sign(zv) * np.maximum(np.abs(zv) - 1.0, 0.0)
        rh = np.diff(u, axis=1) - gh
        rv = np.diff(u, axis=0) - gv
        dtr = np.zeros_like(u)
        dtr[:, 1:] += rh
        dtr[:, :-1] -= rh
        dtr[1:, :] += rv
        dtr[:-1, :] -= rv
        zh, zv = zh + alpha / nu * rh, zv + alpha / nu * rv
        u = u - kappa * alpha * ((u - x) + dtr / nu)
        if k in record:
            out[k] = (u.copy(), np.abs(zh) > 1.0, np.abs(zv) > 1.0)
    return out


@pytest.fixture(scope="module")
def gray(cifar_small):
    """A real 10x10 gray patch (CIFAR-10 JPEG, luminance), contrast stretched to [0, 1] so that
    edges enter the support within a few hundred iterations."""
    img = cifar_small[0][5].astype(np.float64) / 255.0
    g = img[10:20, 8:18] @ np.array([0.299, 0.587, 0.114])
    return (g - g.min()) / (g.max() - g.min())


@pytest.fixture(scope="module")
def reference(gray):
    return _eq5_numpy(gray, N_ITER, RECORD)


@pytest.mark.parametrize("method", ["graph", "lsqr", "pinv"])
def test_trace_matches_eq5_and_project(gray, reference, method):
    r = projection_trace(gray, iterations=N_ITER, projection=method, record=RECORD)
    assert r["iterations_done"] == N_ITER and not r["extrapolated"]
    assert sorted(r["records"]) == list(RECORD)
    for k, (u_ref, ah_ref, av_ref) in reference.items():
        rec = r["records"][k]
        np.testing.assert_allclose(rec["u"], u_ref, rtol=0, atol=1e-12)
        assert np.array_equal(rec["active_h"], ah_ref) and np.array_equal(rec["active_v"], av_ref)
        expected, _ = project(torch.from_numpy(rec["u"])[None, None],
                              torch.from_numpy(rec["active_h"])[None],
                              torch.from_numpy(rec["active_v"])[None], method=method)
        if method == "graph":  # same arithmetic in the same order: bit-for-bit
            assert np.array_equal(rec["u_tilde"], expected[0, 0].numpy()), k
        else:
            np.testing.assert_allclose(rec["u_tilde"], expected[0, 0].numpy(), rtol=0, atol=1e-10)
            # ... and the linear-algebra projections agree with Prop. 1's component means
            graph, _ = project(torch.from_numpy(rec["u"])[None, None],
                               torch.from_numpy(rec["active_h"])[None],
                               torch.from_numpy(rec["active_v"])[None])
            np.testing.assert_allclose(rec["u_tilde"], graph[0, 0].numpy(), rtol=0, atol=1e-9)
    # the path was not trivial: the support changed and grew, and the projection is not u
    last = r["records"][N_ITER]
    assert r["support_changes"] > 10 and r["sparsity"] > 0.2
    assert not np.allclose(last["u_tilde"], last["u"])


def test_graph_labelling_skips_are_exact(gray):
    """Labellings are skipped when the partition provably did not change: at *every* iteration,
    including those whose support changed without a relabelling, ũ is bit-for-bit the projection
    of a fresh labelling of that iteration's support (scipy's labels, an independent code path)."""
    every = tuple(range(1, N_ITER + 1))
    r = projection_trace(gray, iterations=N_ITER, record=every)
    assert r["labellings"] < r["support_changes"]  # some changes were skipped
    for k in every:
        rec = r["records"][k]
        expected, _ = project(torch.from_numpy(rec["u"])[None, None],
                              torch.from_numpy(rec["active_h"])[None],
                              torch.from_numpy(rec["active_v"])[None])
        assert np.array_equal(rec["u_tilde"], expected[0, 0].numpy()), k


def test_time_limit_stops_early_and_extrapolates(gray):
    r = projection_trace(gray, iterations=100_000, projection="pinv", time_limit=0.05)
    assert 1 <= r["iterations_done"] < 100_000 and r["extrapolated"]
    assert r["extrapolated_seconds"] == pytest.approx(r["seconds"] * 100_000 / r["iterations_done"])
    full = projection_trace(gray, iterations=40, time_limit=60.0)
    assert full["iterations_done"] == 40 and not full["extrapolated"]
    assert full["extrapolated_seconds"] == full["seconds"]


def test_tensor_input_equals_numpy(gray):
    a = projection_trace(gray, iterations=50, record=(50,))["records"][50]["u_tilde"]
    b = projection_trace(torch.from_numpy(gray), iterations=50, record=(50,))["records"][50]["u_tilde"]
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=np.zeros((3, 4, 4))), r"one gray image \(H, W\)"),
    (dict(x=np.zeros((1, 4))), r"H, W >= 2"),
    (dict(x=[[0.0, 1.0], [1.0, 0.0]]), "numpy array or torch tensor"),
    (dict(x=np.full((4, 4), 2.0)), r"values in \[0, 1\]"),
    (dict(x=np.full((4, 4), np.nan)), "finite"),
    (dict(iterations=0), "positive integer"),
    (dict(iterations=2.5), "positive integer"),
    (dict(projection="svd"), "unknown projection 'svd'"),
    (dict(time_limit=0), "time_limit"),
    (dict(record=(0,)), r"record iterations must lie in 1\.\.10"),
])
def test_bad_inputs(kwargs, match):
    args = dict(x=np.zeros((4, 4)), iterations=10)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        projection_trace(args.pop("x"), **args)
