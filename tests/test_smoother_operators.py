"""The grid operators: D and its adjoint, the exact Hessian norm, the DCT Neumann solver."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virolbi.smoother.operators import (NeumannSolver, adjoint_diff, dct_matrix, edge_count,
                                        forward_diff, hessian_norm, lbi_step_size)
from virolbi.smoother.projection import difference_matrix


def test_adjoint_is_the_transpose_in_float64():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 3, 7, 5, dtype=torch.float64, generator=g)
    dh = torch.randn(2, 3, 7, 4, dtype=torch.float64, generator=g)
    dv = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=g)
    uh, uv = forward_diff(u)
    lhs = (uh * dh).sum() + (uv * dv).sum()
    rhs = (u * adjoint_diff(dh, dv)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_forward_diff_matches_the_sparse_matrix():
    u = np.random.default_rng(1).random((4, 6))
    dh, dv = forward_diff(torch.from_numpy(u))
    ref = difference_matrix(4, 6) @ u.ravel()
    assert np.allclose(np.concatenate([dh.numpy().ravel(), dv.numpy().ravel()]), ref)
    assert ref.size == edge_count(4, 6) == 4 * 5 + 3 * 6


def _power_iteration_hessian_norm(h: int, w: int, nu: float, iters: int = 3000) -> float:
    d = difference_matrix(h, w).toarray()
    p, e = d.shape[1], d.shape[0]
    hess = np.block([[np.eye(p) + d.T @ d / nu, -d.T / nu], [-d / nu, np.eye(e) / nu]])
    v = np.random.default_rng(0).standard_normal(p + e)
    for _ in range(iters):
        v = hess @ v
        v /= np.linalg.norm(v)
    return float(v @ hess @ v)


@pytest.mark.parametrize("h,w,nu", [(5, 7, 1.0), (8, 8, 1.0), (4, 9, 0.5), (2, 2, 2.0)])
def test_hessian_norm_is_exact(h, w, nu):
    assert hessian_norm(h, w, nu) == pytest.approx(_power_iteration_hessian_norm(h, w, nu), rel=1e-6)


def test_default_step_is_the_papers():
    assert lbi_step_size(32, 32, kappa=5.0, nu=1.0) == pytest.approx(1 / (5 * hessian_norm(32, 32)))
    assert 0.02 < lbi_step_size(32, 32) < 0.0205


def test_dct_matrix_is_orthonormal_and_diagonalises_the_neumann_laplacian():
    c = dct_matrix(9)
    assert torch.allclose(c @ c.T, torch.eye(9, dtype=torch.float64), atol=1e-12)
    d1 = torch.from_numpy(difference_matrix(1, 9).toarray())
    lap = d1.T @ d1
    diag = c @ lap @ c.T
    assert torch.allclose(diag, torch.diag(torch.diagonal(diag)), atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_neumann_solver_inverts_i_plus_dtd(dtype, tol):
    h, w, nu = 6, 5, 0.7
    r = torch.rand(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    u = NeumannSolver(h, w, nu, dtype=dtype)(r.to(dtype)).double()
    d = difference_matrix(h, w).toarray()
    a = np.eye(h * w) + d.T @ d / nu
    ref = np.linalg.solve(a, r.reshape(-1, h * w).numpy().T).T
    assert np.abs(u.reshape(-1, h * w).numpy() - ref).max() < tol


@pytest.mark.parametrize("n", [1, 2, 5, 8, 31, 64, 100])
def test_fft_dct_equals_the_dct_matrix_and_inverts(n):
    from virolbi.smoother.operators import dct_last, idct_last

    x = torch.randn(2, 3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    assert torch.allclose(dct_last(x), x @ dct_matrix(n).T, atol=1e-12)
    assert torch.allclose(idct_last(dct_last(x)), x, atol=1e-12)


def test_neumann_solver_through_ffts_for_large_sides_inverts_i_plus_dtd():
    h, w, nu = 70, 90, 0.7
    solver = NeumannSolver(h, w, nu, dtype=torch.float64)
    assert solver.fft  # a side >= FFT_FROM
    r = torch.randn(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u = solver(r)
    dh, dv = forward_diff(u)
    assert torch.allclose(u + adjoint_diff(dh, dv) / nu, r, atol=1e-10)
