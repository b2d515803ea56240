"""The TisODE chapter's networks (virolbi.models.odenet): the ODE block against closed forms, the
steady-state loss (Eq. 3.5), equal parameter counts, exact gradients through the solver."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("torchdiffeq")

from virolbi.models import create_model  # noqa: E402
from virolbi.models.odenet import ODEBlock, SmallODENet  # noqa: E402
from virolbi.train.model_hooks import training_loss  # noqa: E402


class Linear(torch.nn.Module):
    """f(t, z) = a z (+ c): closed-form solutions."""

    def __init__(self, a=-1.0, c=0.0):
        super().__init__()
        self.a, self.c, self.nfe = a, c, 0

    def forward(self, t, z):
        self.nfe += 1
        return self.a * z + self.c


def test_decay_matches_exp_minus_t_and_euler_its_recursion():
    z0 = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 0.5
    rk4 = ODEBlock(Linear(), T=1.0, method="rk4", steps=20)(z0)
    torch.testing.assert_close(rk4, z0 * math.exp(-1), rtol=1e-7, atol=0)
    euler = ODEBlock(Linear(), T=1.0, method="euler", steps=10)
    torch.testing.assert_close(euler(z0), z0 * (1 - 0.1) ** 10, rtol=1e-12, atol=0)
    assert euler.func.nfe == 10


def test_steady_state_loss_is_the_integral_of_abs_f_from_T_to_2T():
    """f = c (constant): the integral over [T, 2T] of |f| is T|c| per element, so the loss is
    T * ||c|| per sample; at a steady state (f = 0) it is exactly zero."""
    z0 = torch.zeros(3, 2, 2, 2, dtype=torch.float64)
    block = ODEBlock(Linear(a=0.0, c=-0.5), T=0.8, method="euler", steps=10, steady=True).train()
    out = block(z0)
    torch.testing.assert_close(out, torch.full_like(z0, -0.5 * 0.8))
    per_sample = 0.8 * 0.5 * math.sqrt(8)
    assert float(block.steady_loss.detach()) == pytest.approx(3 * per_sample, rel=1e-9)
    still = ODEBlock(Linear(a=0.0, c=0.0), steady=True).train()
    still(z0)
    assert float(still.steady_loss.detach()) == 0.0


def test_tisode_at_a_steady_state_has_zero_regulariser_and_it_enters_the_loss():
    net = SmallODENet(10, "tisode").train()
    f = net.middle.func
    with torch.no_grad():
        f.conv2.weight.zero_()
        f.conv2.bias.zero_()                        # f(z) = relu(GN(0)) = 0: every z is steady
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4)
    logits = net(x)
    assert float(net.middle.steady_loss.detach()) == 0.0
    net2 = SmallODENet(10, "tisode", steady_weight=0.1).train()
    logits = net2(x)
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    assert float(net2.middle.steady_loss.detach()) > 0
    torch.testing.assert_close(training_loss(net2, logits, y), ce + 0.1 * net2.middle.steady_loss)
    net2.eval()
    net2(x)
    assert net2.middle.steady_loss is None            # evaluation integrates to T only


def test_parameter_counts():
    count = {k: sum(p.numel() for p in SmallODENet(10, k).parameters())
             for k in ("cnn", "odenet", "tisode")}
    assert count["cnn"] == count["tisode"]
    assert count["odenet"] - count["cnn"] == 2 * 64 * 9   # the time channel of two convolutions


def test_gradient_through_the_solver_is_exact():
    torch.manual_seed(0)
    block = ODEBlock(Linear(a=-0.7, c=0.1), method="rk4", steps=4).double()
    z = torch.rand(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: block(torch.tanh(v)), (z,))
    net = create_model("odenet_small", 10, kind="odenet", steps=2).double().eval()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: net(v).sum(dim=1), (x,), atol=1e-6)


def test_bad_options():
    from virolbi.errors import InputError
    with pytest.raises(InputError, match="kind"):
        SmallODENet(10, "resnet")
    with pytest.raises(InputError, match="fixed steps"):
        ODEBlock(Linear(), method="dopri5")
