"""Eq. 6 / Prop. 1: the graph projection against the pseudo-inverse, LSQR and a BFS reference."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from virolbi.errors import InputError
from virolbi.smoother.projection import (average_over_components, component_labels, project,
                                         project_lsqr, project_pinv)


def _random_support(rng, p, h, w, density):
    return (torch.from_numpy(rng.random((p, h, w - 1)) < density),
            torch.from_numpy(rng.random((p, h - 1, w)) < density))


def _bfs_labels(active_h: np.ndarray, active_v: np.ndarray) -> np.ndarray:
    """Independent reference: breadth-first search over inactive edges, numbered by first pixel."""
    h, w = active_h.shape[0], active_v.shape[1]
    lab = -np.ones((h, w), dtype=np.int64)
    n = 0
    for i0 in range(h):
        for j0 in range(w):
            if lab[i0, j0] >= 0:
                continue
            lab[i0, j0] = n
            queue = deque([(i0, j0)])
            while queue:
                i, j = queue.popleft()
                nbrs = []
                if j + 1 < w and not active_h[i, j]:
                    nbrs.append((i, j + 1))
                if j > 0 and not active_h[i, j - 1]:
                    nbrs.append((i, j - 1))
                if i + 1 < h and not active_v[i, j]:
                    nbrs.append((i + 1, j))
                if i > 0 and not active_v[i - 1, j]:
                    nbrs.append((i - 1, j))
                for a in nbrs:
                    if lab[a] < 0:
                        lab[a] = n
                        queue.append(a)
            n += 1
    return lab


@pytest.mark.parametrize("density", [0.0, 0.3, 0.6, 0.9, 1.0])
@pytest.mark.parametrize("method", ["compiled", "scipy", "propagation"])
def test_component_labels_match_bfs(density, method):
    rng = np.random.default_rng(int(density * 10))
    ah, av = _random_support(rng, 3, 7, 9, density)
    labels = component_labels(ah, av, method=method)
    assert labels.dtype == torch.int64
    for p in range(3):
        assert np.array_equal(labels[p].numpy(), _bfs_labels(ah[p].numpy(), av[p].numpy()))


def test_compiled_labels_equal_scipys_on_real_supports(cifar_batch):
    """On the supports of a real path (30 CIFAR-10 images at several levels, plus odd crops and
    a 1-pixel-high strip), the compiled union-find and SciPy's components give the same labels."""
    from virolbi.smoother import lbi_path

    r = lbi_path(cifar_batch[:10], (0.2, 0.5, 0.9))
    ah, av = r.support_h.reshape(-1, 32, 31), r.support_v.reshape(-1, 31, 32)
    cases = [(ah, av), (ah[:, 3:20, 2:17], av[:, 3:19, 2:18]), (ah[:, :1], av[:, :0])]
    for h_, v_ in cases:
        assert torch.equal(component_labels(h_, v_, method="compiled"),
                           component_labels(h_, v_, method="scipy"))


@pytest.mark.parametrize("density", [0.2, 0.5, 0.8])
def test_graph_equals_pinv_and_lsqr(density):
    rng = np.random.default_rng(3)
    u = torch.from_numpy(rng.random((2, 2, 6, 7)))
    ah, av = _random_support(rng, 2, 6, 7, density)
    graph, _ = project(u, ah, av, method="graph")
    pinv, _ = project(u, ah, av, method="pinv")
    lsqr, _ = project(u, ah, av, method="lsqr")
    assert torch.allclose(graph, pinv, atol=1e-10)
    assert torch.allclose(graph, lsqr, atol=1e-8)


def test_pinv_and_lsqr_with_no_inactive_edge_return_u():
    u = np.random.default_rng(0).random((3, 4))
    ones_h, ones_v = np.ones((3, 3), bool), np.ones((2, 4), bool)
    assert np.array_equal(project_pinv(u, ones_h, ones_v), u)
    assert np.array_equal(project_lsqr(u, ones_h, ones_v), u)


def test_average_preserves_component_sums_and_is_an_orthogonal_projection():
    rng = np.random.default_rng(4)
    ah, av = _random_support(rng, 2, 5, 6, 0.5)
    labels = component_labels(ah, av)
    u = torch.from_numpy(rng.random((2, 3, 5, 6)))
    v = torch.from_numpy(rng.random((2, 3, 5, 6)))
    pu = average_over_components(u, labels)
    for b in range(2):
        for k in range(int(labels[b].max()) + 1):
            m = labels[b] == k
            assert torch.allclose(pu[b][:, m].sum(1), u[b][:, m].sum(1))
            assert torch.allclose(pu[b][:, m], pu[b][:, m][:, :1].expand_as(pu[b][:, m]))
    assert torch.allclose(average_over_components(pu, labels), pu)  # idempotent
    assert torch.allclose((pu * v).sum(), (u * average_over_components(v, labels)).sum())  # symmetric


def test_average_gradient_is_the_projection_of_the_upstream_gradient():
    rng = np.random.default_rng(5)
    ah, av = _random_support(rng, 1, 4, 5, 0.5)
    labels = component_labels(ah, av)
    u = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    upstream = torch.rand(1, 2, 4, 5, dtype=torch.float64)
    (average_over_components(u, labels) * upstream).sum().backward()
    assert torch.allclose(u.grad, average_over_components(upstream, labels))
    assert torch.autograd.gradcheck(lambda t: average_over_components(t, labels), (u,))


def test_per_channel_labels():
    rng = np.random.default_rng(6)
    ah, av = _random_support(rng, 2 * 3, 4, 4, 0.5)  # 2 images x 3 channels
    labels = component_labels(ah, av).reshape(2, 3, 4, 4)
    u = torch.from_numpy(rng.random((2, 3, 4, 4)))
    out = average_over_components(u, labels)
    for c in range(3):
        assert torch.allclose(out[:, c:c + 1], average_over_components(u[:, c:c + 1], labels[:, c]))


def test_average_rejects_bad_labels():
    u = torch.zeros(1, 1, 2, 2)
    with pytest.raises(InputError, match="integer tensor"):
        average_over_components(u, torch.zeros(1, 2, 2))
    with pytest.raises(InputError, match="labels must have shape"):
        average_over_components(u, torch.zeros(1, 3, 3, dtype=torch.int64))
    with pytest.raises(InputError, match="unknown projection"):
        project(u, torch.zeros(1, 2, 1, dtype=torch.bool), torch.zeros(1, 1, 2, dtype=torch.bool),
                method="qr")
    with pytest.raises(InputError, match="unknown component method"):
        component_labels(torch.zeros(1, 2, 1, dtype=torch.bool),
                         torch.zeros(1, 1, 2, dtype=torch.bool), method="dfs")
