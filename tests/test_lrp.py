"""LRP (virolbi.explain.lrp): conservation on a bias-free ReLU network, the closed form of a linear
model, BatchNorm folding (also through max pooling) leaves the fast network's outputs unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from virolbi.explain.lrp import airbench_layers, fold_batchnorm, lrp, lrp_maps
from virolbi.models import create_model


def test_relevance_is_conserved_in_a_bias_free_relu_network():
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 6, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(6, 8, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
              nn.Linear(8, 4, bias=False)]
    x = torch.rand(5, 3, 12, 12)
    with torch.no_grad():
        logits = nn.Sequential(*layers)(x)
    target = logits.argmax(1)
    r = lrp(layers, x, target, eps=1e-9)
    torch.testing.assert_close(r.sum(dim=(1, 2, 3)), logits[torch.arange(5), target],
                               rtol=1e-4, atol=1e-6)


def test_a_linear_model_gets_input_times_weight():
    torch.manual_seed(0)
    lin = nn.Linear(12, 3, bias=False)
    x = torch.rand(2, 3, 2, 2)
    r = lrp([nn.Flatten(), lin], x, torch.tensor([1, 2]), eps=1e-12)
    expected = x.flatten(1) * lin.weight.detach()[[1, 2]]
    torch.testing.assert_close(r.flatten(1), expected, rtol=1e-5, atol=1e-7)


def _randomised_bn(net):
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


def test_folding_batchnorm_leaves_the_fast_network_unchanged():
    net = _randomised_bn(create_model("airbench", 10, width=0.25))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = net(x)
        folded = nn.Sequential(*airbench_layers(net))(net.normalize(x))
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-5)
    conv, bn = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.weight[1] = -1.0
    from virolbi.errors import InputError
    with pytest.raises(InputError, match="positive scale"):
        fold_batchnorm(conv, bn, through_max_pool=True)


def test_lrp_maps_of_the_fast_network(cifar_batch):
    net = _randomised_bn(create_model("airbench", 10, width=0.25))
    maps = lrp_maps(net, cifar_batch[:3])
    assert maps.shape == (3, 32, 32) and torch.isfinite(maps).all() and maps.abs().sum() > 0
    from virolbi.errors import InputError
    with pytest.raises(InputError, match="fast network"):
        lrp_maps(create_model("resnet18", 10, width=0.125), cifar_batch[:1])
