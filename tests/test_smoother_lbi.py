"""The LBI solvers and the path driver: Eq. 5 against an independent NumPy reference, properties
of the path, and the faster solvers against Eq. 5 on real CIFAR-10 (JPEG) images."""

from __future__ import annotations

from collections import deque

import math

import numpy as np
import pytest
import torch

from virolbi.errors import UnreachedLevelWarning
from virolbi.smoother import lbi_path
from virolbi.smoother.operators import hessian_norm


def _reference_eq5(x: np.ndarray, level: float, kappa=5.0, nu=1.0, max_iter=20000):
    """Eq. 5 for one gray image written from the paper, with a BFS projection (Prop. 1)."""
    h, w = x.shape
    alpha = 1.0 / (kappa * hessian_norm(h, w, nu))
    u = np.zeros_like(x)
    zh, zv = np.zeros((h, w - 1)), np.zeros((h - 1, w))
    gh, gv = np.zeros_like(zh), np.zeros_like(zv)
    n_edges = zh.size + zv.size
    for k in range(max_iter):
        if ((gh != 0).sum() + (gv != 0).sum()) / n_edges >= level:
            break
        rh = (u[:, 1:] - u[:, :-1]) - gh
        rv = (u[1:, :] - u[:-1, :]) - gv
        dtr = np.zeros_like(u)
        dtr[:, 1:] += rh
        dtr[:, :-1] -= rh
        dtr[1:, :] += rv
        dtr[:-1, :] -= rv
        u_new = u - kappa * alpha * ((u - x) + dtr / nu)
        zh += alpha * rh / nu
        zv += alpha * rv / nu
        u = u_new
        gh = kappa * np.sign(zh) * np.maximum(np.abs(zh) - 1, 0)
        gv = kappa * np.sign(zv) * np.maximum(np.abs(zv) - 1, 0)
    # Prop. 1 by breadth-first search over inactive edges.
    lab = -np.ones((h, w), int)
    n = 0
    for s in np.ndindex(h, w):
        if lab[s] >= 0:
            continue
        lab[s] = n
        q = deque([s])
        while q:
            i, j = q.popleft()
            for (a, b), inactive in [((i, j + 1), j + 1 < w and gh[i, min(j, w - 2)] == 0),
                                     ((i, j - 1), j > 0 and gh[i, j - 1] == 0),
                                     ((i + 1, j), i + 1 < h and gv[min(i, h - 2), j] == 0),
                                     ((i - 1, j), i > 0 and gv[i - 1, j] == 0)]:
                if inactive and lab[a, b] < 0:
                    lab[a, b] = n
                    q.append((a, b))
        n += 1
    out = np.zeros_like(u)
    for c in range(n):
        out[lab == c] = u[lab == c].mean()
    return out, k, n


@pytest.mark.parametrize("level", [0.3, 0.7])
def test_explicit_solver_is_eq5(cifar_small, level):
    x = cifar_small[0][3, 8:16, 4:14, 1].astype(np.float64) / 255.0
    ref, k, n = _reference_eq5(x, level)
    res = lbi_path(torch.from_numpy(x)[None, None], (level,), solver="explicit")
    assert int(res.iterations[0, 0]) == k
    assert int(res.n_components[0, 0]) == n
    assert np.allclose(res.images[0, 0, 0].numpy(), ref, atol=1e-10)


@pytest.mark.parametrize("solver", ["explicit", "dct", "imex"])
def test_constant_image_is_returned_unchanged(solver):
    x = torch.full((2, 3, 5, 6), 0.37, dtype=torch.float64)
    with pytest.warns(UnreachedLevelWarning):
        res = lbi_path(x, (0.6, 1.0), solver=solver)
    assert torch.equal(res.images[-1], x)
    assert torch.allclose(res.images[0], x, atol=1e-12)
    assert not res.reached[0].any() and len(res.warnings) == 2
    assert [(r.image, r.level, r.sparsity) for r in res.warnings] == [(0, 0.6, 0.0), (1, 0.6, 0.0)]
    assert "not reached" in str(res.warnings[0])


def test_piecewise_constant_image_keeps_its_edges():
    x = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    x[..., 3:] = 0.8
    res = lbi_path(x, (0.1,))
    assert res.reached[0, 0] and float(res.sparsity[0, 0]) == pytest.approx(0.1)  # 6 of 60 edges
    out = res.images[0, 0, 0]
    left, right = out[:, :3], out[:, 3:]
    # two flat halves, the jump kept (inverse scale space: contrast is still being recovered)
    assert torch.allclose(left, left[0, 0]) and torch.allclose(right, right[0, 0])
    assert 0.0 <= left[0, 0] < right[0, 0] <= 0.8
    assert out.mean() == pytest.approx(x.mean())  # u = A^-1(x + Dᵀγ/ν) preserves the mean
    assert int(res.n_components[0, 0]) == 2
    with pytest.warns(UnreachedLevelWarning):  # out of reach: stops once the 6 edges are in
        higher = lbi_path(x, (0.5,))
    assert not higher.reached[0, 0] and higher.warnings[0].sparsity == pytest.approx(0.1)
    assert int(higher.n_components[0, 0]) == 2


def test_path_sparsity_never_falls_and_reaches_targets(cifar_batch):
    levels = (0.2, 0.4, 0.6, 0.8, 1.0)
    res = lbi_path(cifar_batch[:4].double(), levels)
    assert torch.all(res.sparsity[1:] >= res.sparsity[:-1])
    assert torch.all(res.iterations[1:-1] >= res.iterations[:-2])
    for i, lv in enumerate(levels[:-1]):
        assert torch.all(res.sparsity[i][res.reached[i]] >= lv)
    assert torch.equal(res.images[-1], cifar_batch[:4].double())  # level 1.0: the limit u = x
    # every output is constant on its components
    from virolbi.smoother import average_over_components
    for i in range(len(levels)):
        assert torch.allclose(average_over_components(res.images[i], res.labels[i]), res.images[i])


def test_batch_equals_one_by_one(cifar_batch):
    x = cifar_batch[:3].double()
    together = lbi_path(x, (0.3, 0.6))
    for b in range(3):
        alone = lbi_path(x[b:b + 1], (0.3, 0.6))
        assert torch.equal(alone.images[:, 0], together.images[:, b])
        assert torch.equal(alone.iterations[:, 0], together.iterations[:, b])


def test_deterministic(cifar_batch):
    a = lbi_path(cifar_batch[:2], (0.5,))
    b = lbi_path(cifar_batch[:2], (0.5,))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_float32_and_float64_agree(cifar_batch):
    r32 = lbi_path(cifar_batch[:3], (0.6,))
    r64 = lbi_path(cifar_batch[:3].double(), (0.6,))
    agree = (r32.support() == r64.support()).double().mean()
    assert agree > 0.995
    assert (r32.images.double() - r64.images).abs().mean() < 2e-3


def test_one_channel_group_equals_l1():
    x = torch.rand(2, 1, 7, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = lbi_path(x, (0.5,), group=True)
    l1 = lbi_path(x, (0.5,), group=False)
    assert torch.equal(g.images, l1.images)


def test_per_channel_l1_on_colour(cifar_batch):
    res = lbi_path(cifar_batch[:2].double(), (0.5,), group=False)
    assert res.labels.shape == (1, 2, 3, 32, 32)
    assert res.support_h.shape == (1, 2, 3, 32, 31)
    assert torch.all(res.sparsity >= 0.5)


@pytest.mark.parametrize("solver", ["explicit", "dct", "imex"])
def test_group_support_is_shared_by_channels_and_identical_channels_match_gray(solver):
    """Three identical channels y: the group norm is √3|z|, and scaling (u, z, γ, x) by √3 turns
    Eq. 5/8 into the gray iteration on √3·y, exactly. So the colour path of gray/√3 is the gray
    path of gray divided by √3: same iterations, same supports, images within rounding."""
    g = torch.Generator().manual_seed(1)
    gray = torch.rand(2, 1, 6, 7, dtype=torch.float64, generator=g)
    colour = (gray / math.sqrt(3)).expand(2, 3, 6, 7).contiguous()
    c = lbi_path(colour, (0.3, 0.5), solver=solver)
    s = lbi_path(gray, (0.3, 0.5), solver=solver)
    assert c.support_h.shape[2] == 1  # one support shared by the three channels
    assert torch.equal(c.iterations, s.iterations) and torch.equal(c.support(), s.support())
    assert torch.allclose(c.images * math.sqrt(3), s.images.expand_as(c.images), atol=1e-12)


@pytest.mark.parametrize("solver", ["dct", "imex"])
def test_fast_solvers_agree_with_eq5_on_real_images(cifar_batch, solver):
    """SPEC §1 validation criteria, on real CIFAR-10 (JPEG) images (a 6-image sample here; the
    full validation is ``benchmarks/validate_solvers.py``)."""
    x = cifar_batch[::4][:5].double()
    levels = (0.4, 0.6, 0.8)
    ref = lbi_path(x, levels, solver="explicit")
    fast = lbi_path(x, levels, solver=solver)
    agree = (fast.support() == ref.support()).double().mean(-1)
    assert agree.min() >= 0.98, agree
    rms = (fast.images - ref.images).pow(2).mean((2, 3, 4)).sqrt()
    assert rms.median() < 0.01, rms
    assert fast.iterations.double().mean() * 8 < ref.iterations.double().mean()
