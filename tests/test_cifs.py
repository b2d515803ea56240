"""CIFS (virolbi.models.cifs): relevance = gradient of the top-k probe logits w.r.t. a channel shift
(Eq. 4.1), non-negative mask that changes with the input (Eq. 4.2), the Eq. 4.3 loss, and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virolbi.models import create_model
from virolbi.models.cifs import CIFS, cifs_layers, cifs_loss, set_cifs_labels


def layer(seed=0, **kw):
    torch.manual_seed(seed)
    return CIFS(6, 5, **kw)


def test_relevance_is_the_sum_of_the_top_k_probe_rows():
    """For a linear probe on pooled features, d/d delta_c of sum_{i in top-k} p_i is
    sum_{i in top-k} W[i, c] (closed form); in training the top-1 class is the true label."""
    cifs = layer().eval()
    z = torch.randn(3, 6, 4, 4)
    logits = cifs.probe(z.mean(dim=(2, 3)))
    top = logits.topk(2, dim=1).indices
    expected = cifs.probe.weight[top].sum(dim=1)
    torch.testing.assert_close(cifs.relevance(z), expected.detach())
    cifs.train()
    labels = torch.tensor([4, 0, 2])
    set_cifs_labels(cifs, labels)
    rows = torch.stack([labels, top[:, 1]], dim=1)
    torch.testing.assert_close(cifs.relevance(z).detach(), cifs.probe.weight[rows].sum(dim=1).detach())


def test_mask_is_non_negative_scaled_and_changes_with_the_input():
    cifs = layer().eval()
    z1, z2 = torch.randn(8, 6, 4, 4), torch.randn(8, 6, 4, 4)
    m1, m2 = cifs.mask(z1), cifs.mask(z2)
    assert (m1 >= 0).all() and torch.allclose(m1.sum(1), torch.full((8,), 2.0))
    assert not torch.allclose(m1, m2)                  # a different top-k, a different selection
    out = cifs(z1)
    torch.testing.assert_close(out, z1 * m1[:, :, None, None])


def test_loss_is_eq_4_3():
    net = create_model("airbench", 5, width=0.125, cifs=True).train()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    set_cifs_labels(net, y)
    logits = net(x)
    probe = cifs_layers(net)[0].probe_logits
    beta = 1.0                                          # |I| = 1
    expected = (F.cross_entropy(logits, y, reduction="sum") / (1 + beta)
                + beta / (1 + beta) * F.cross_entropy(probe, y, reduction="sum"))
    torch.testing.assert_close(cifs_loss(net, logits, y), expected)
    plain = create_model("airbench", 5, width=0.125)
    out = plain(x)
    torch.testing.assert_close(cifs_loss(plain, out, y), F.cross_entropy(out, y, reduction="sum"))


def test_probe_and_backbone_train_and_the_attack_gradient_reaches_the_input(cifar_small):
    from virolbi.data.dataset import ImageDataset
    from virolbi.train import train

    imgs, labels = cifar_small
    data = ImageDataset(np.ascontiguousarray(imgs), labels)
    torch.manual_seed(0)
    before = create_model("airbench", 10, width=0.125, cifs=True)
    res = train({"output_dir": None, "model": {"name": "airbench", "width": 0.125,
                                               "kwargs": {"cifs": True}, "data_init_images": 20},
                 "optim": {"epochs": 1, "batch_size": 10, "lr": 0.05},
                 "adversarial": {"method": "fgsm_rs", "monitor": {"images": 0}},
                 "logging": {"progress": False, "tensorboard": False}},
                train_data=data, val_data=data)
    trained = cifs_layers(res.model)[0].probe.weight
    assert not torch.allclose(trained, cifs_layers(before)[0].probe.weight)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    res.model.eval()(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_bad_options():
    from virolbi.errors import InputError
    with pytest.raises(InputError, match="cifs"):
        create_model("airbench", 10, cifs={"beta": 2})
    with pytest.raises(InputError, match="k must be"):
        CIFS(4, 3, k=5)


def test_resnet18_variants_sdnet_stem_and_cifs_on_both_last_blocks():
    """SDNet-18: the CIFAR stem's convolution is a CSC layer with as many atoms as stem channels;
    CIFS-ResNet-18: one CIFS layer after each of layer4's two blocks, both probes in Eq. 4.3
    (beta = |I| = 2), and the output equals the blocks and masks applied by hand."""
    from virolbi.errors import InputError
    from virolbi.models.csc import CSCLayer

    torch.manual_seed(0)
    sd = create_model("resnet18", 10, width=0.125, csc=True, normalize=None).eval()
    assert isinstance(sd.conv1, CSCLayer) and sd.conv1.weight.shape == (8, 3, 3, 3)
    x = torch.rand(2, 3, 32, 32)
    assert sd(x).shape == (2, 10)
    with pytest.raises(InputError, match="stem='cifar'"):
        create_model("resnet18", 10, width=0.125, csc=True, stem="imagenet")
    net = create_model("resnet18", 10, width=0.125, cifs=True, normalize=None).eval()
    layers = cifs_layers(net)
    assert len(layers) == 2 and all(m.scale == 2.0 for m in layers)
    with torch.no_grad():
        h = net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))
    for block, sel in zip(net.layer4, layers):
        h = block(h)
        h = h * sel.mask(h)[:, :, None, None]
    torch.testing.assert_close(net.forward_features(x), h)
    y = torch.tensor([1, 2])
    logits = net(x)
    main = F.cross_entropy(logits, y, reduction="sum")
    probes = sum(F.cross_entropy(m.probe_logits, y, reduction="sum") for m in layers)
    torch.testing.assert_close(cifs_loss(net, logits, y), main / 3 + 2 / (3 * 2) * probes)


def test_resnet18_configs_of_sdnet_and_cifs_build_their_models():
    from pathlib import Path

    from virolbi.models.csc import csc_layers
    from virolbi.train.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs" / "cifar10"
    sd = load_config(root / "sdnet_resnet18.yaml")["model"]
    cf = load_config(root / "cifs_resnet18.yaml")
    assert cf["adversarial"]["method"] == "pgd" and cf["adversarial"]["steps"] == 10
    assert len(csc_layers(create_model(sd["name"], 10, width=0.125, **sd["kwargs"]))) == 1
    assert len(cifs_layers(create_model("resnet18", 10, width=0.125, **cf["model"]["kwargs"]))) == 2
