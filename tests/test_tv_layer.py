"""The TV-layer baseline's prox (Yeh et al. 2022): exact 1-D prox against a long reference solve and
a closed form, 2-D Dykstra against a long 2-D solve, exact backward (gradcheck)."""

from __future__ import annotations

import pytest
import torch

from virolbi.models.tv_layer import TVLayer, tv1d_prox, tv2d_prox
from virolbi.smoother.operators import adjoint_diff, forward_diff


def _reference_1d(y, lam, iters=4000):
    """Projected gradient on the dual (step 1/4 <= 1/||DDᵀ||), run to convergence."""
    dy = y[..., 1:] - y[..., :-1]
    u = torch.zeros_like(dy)
    for _ in range(iters):
        g = 2 * u
        g[..., 1:] -= u[..., :-1]
        g[..., :-1] -= u[..., 1:]
        u = (u - 0.25 * (g - dy)).clamp(-lam, lam)
    return y - torch.cat([-u[..., :1], u[..., :-1] - u[..., 1:], u[..., -1:]], -1)


def _reference_2d(x, lam, iters=6000):
    uh, uv = torch.zeros_like(x[..., :, 1:]), torch.zeros_like(x[..., 1:, :])
    for _ in range(iters):
        dh, dv = forward_diff(x - adjoint_diff(uh, uv))
        uh, uv = (uh + dh / 8).clamp(-lam, lam), (uv + dv / 8).clamp(-lam, lam)
    return x - adjoint_diff(uh, uv)


@pytest.mark.parametrize("lam", [0.02, 0.3, 1.0, 5.0])
def test_1d_prox_equals_a_long_reference_solve(lam):
    y = torch.randn(6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(tv1d_prox(y, lam), _reference_1d(y, lam), atol=1e-10)


def test_1d_prox_of_a_step_has_the_closed_form():
    """y = 0 on a samples then 1 on b: each plateau moves towards the other by λ/size, until λ
    reaches ab/(a+b), where the signal becomes its mean."""
    a, b, lam = 4, 6, 0.5
    y = torch.cat([torch.zeros(a), torch.ones(b)]).double()
    x = tv1d_prox(y, lam)
    expected = torch.cat([torch.full((a,), lam / a), torch.full((b,), 1 - lam / b)]).double()
    assert torch.allclose(x, expected)
    flat = tv1d_prox(y, a * b / (a + b) + 0.1)
    assert torch.allclose(flat, torch.full_like(y, b / (a + b)))


def test_1d_and_2d_backward_pass_gradcheck():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(3, 9, dtype=torch.float64, generator=g, requires_grad=True)
    lam = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tv1d_prox, (y, lam), eps=1e-6, atol=1e-5)
    x = torch.rand(1, 1, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    lam2 = torch.tensor([0.1], dtype=torch.float64).view(1, 1, 1, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: tv2d_prox(a, b, 2), (x, lam2), eps=1e-6,
                                    atol=1e-5)


def test_2d_dykstra_converges_to_the_2d_prox():
    x = torch.rand(1, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    lam = torch.tensor([0.05, 0.1, 0.2], dtype=torch.float64).view(1, 3, 1, 1)
    ref = _reference_2d(x, lam)
    assert torch.allclose(tv2d_prox(x, lam, 60), ref, atol=1e-4)
    assert (tv2d_prox(x, lam, 4) - ref).abs().max() < 0.05  # the layer's default, four rounds


def test_tv_layer_learns_a_weight_per_channel():
    layer = TVLayer(3, init=0.1)
    x = torch.rand(2, 3, 8, 8)
    out = layer(x)
    assert out.shape == x.shape
    (out - x).pow(2).sum().backward()
    assert layer.theta.grad is not None and layer.theta.grad.shape == (3,)
    assert torch.allclose(torch.nn.functional.softplus(layer.theta), torch.full((3,), 0.1))


def test_airbench_with_a_tv_layer_after_the_stem():
    from virolbi.models import create_model

    net = create_model("airbench", 10, width=0.125, tv_layer=0.1)
    assert any(k.endswith("tv.theta") for k in net.state_dict())
    out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert net.backbone.tv.theta.grad is not None
    assert not hasattr(create_model("airbench", 10, width=0.125).backbone.tv, "theta")


def test_compiled_condat_and_projected_newton_agree(monkeypatch):
    """The two exact 1-D solvers (Condat's direct algorithm on CPU, projected Newton on the dual
    elsewhere) give the same prox on noisy, piecewise-constant and constant rows."""
    import virolbi.models.tv_layer as tv

    if tv.numba is None:
        pytest.skip("numba not installed")
    g = torch.Generator().manual_seed(4)
    rows = torch.cat([torch.randn(20, 33, dtype=torch.float64, generator=g),
                      torch.randn(20, 3, dtype=torch.float64, generator=g).repeat_interleave(11, -1),
                      torch.full((4, 33), 0.3, dtype=torch.float64)])
    lam = torch.logspace(-3, 1.5, rows.shape[0], dtype=torch.float64)[:, None]
    compiled = tv1d_prox(rows, lam)
    monkeypatch.setattr(tv, "numba", None)
    newton = tv1d_prox(rows, lam)
    assert torch.allclose(compiled, newton, atol=1e-10)


def test_compiled_backward_equals_the_tensor_backward():
    """The compiled row scan (CPU) and the tensor-operation backward (other devices) agree."""
    pytest.importorskip("numba")
    from virolbi.models.tv_layer import _backward_compiled, _backward_torch, tv1d_prox

    torch.manual_seed(0)
    y = torch.randn(6, 5, 17, dtype=torch.float64)
    lam = torch.rand(1, 5, 1, dtype=torch.float64) + 0.2
    x = tv1d_prox(y, lam)
    g = torch.randn_like(y)
    for a, b in zip(_backward_compiled(x, g, lam), _backward_torch(x, g, lam)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_threads_give_the_same_prox_and_gradient():
    pytest.importorskip("numba")
    torch.manual_seed(0)
    x = torch.randn(4, 8, 20, 20, dtype=torch.float64, requires_grad=True)
    lam = torch.full((1, 8, 1, 1), 0.3, dtype=torch.float64, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = tv2d_prox(x, lam)
            gx, gl = torch.autograd.grad(out.square().sum(), (x, lam))
            results.append((out.detach(), gx, gl))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
