"""TRADES and self-adaptive training (SAT; virolbi.train.adversarial, virolbi.train.self_adaptive):
the loss against its formula computed by hand, the targets' moving average, the KL attack, and a
training run whose targets are saved and resumed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virolbi.data.dataset import ImageDataset
from virolbi.train import train
from virolbi.train.adversarial import AdversarialTraining
from virolbi.train.self_adaptive import SelfAdaptiveTargets

from conftest import linear_net16

EPS = 8 / 255



def test_sat_is_the_cross_entropy_before_its_start_and_leaves_the_targets():
    sat = SelfAdaptiveTargets([2, 0, 1], 3, momentum=0.9, start_epoch=2)
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    y = torch.tensor([2, 0])
    loss = sat.loss(logits, y, torch.tensor([0, 1]), epoch=1)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y, reduction="sum").item())
    assert torch.equal(sat.targets, torch.eye(3)[[2, 0, 1]])


def test_sat_moves_the_targets_and_weights_by_confidence_as_the_paper_writes():
    sat = SelfAdaptiveTargets([0, 1, 1], 2, momentum=0.6, start_epoch=0)
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    index = torch.tensor([0, 2])
    loss = sat.loss(logits, torch.tensor([0, 1]), index, epoch=3)
    # by hand: p = softmax(logits); t = 0.6 * onehot + 0.4 * p; w = max t, rescaled to sum 2
    p0 = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    t0 = 0.6 * np.array([1.0, 0.0]) + 0.4 * p0
    t2 = 0.6 * np.array([0.0, 1.0]) + 0.4 * np.array([0.5, 0.5])
    w = np.array([t0.max(), t2.max()])
    w = w * 2 / w.sum()
    ce = [-(t0 * np.log(p0)).sum(), -(t2 * np.log([0.5, 0.5])).sum()]
    assert loss.item() == pytest.approx(float((w * ce).sum()), rel=1e-6)
    assert np.allclose(sat.targets[0].numpy(), t0) and np.allclose(sat.targets[2].numpy(), t2)
    assert torch.equal(sat.targets[1], torch.tensor([0.0, 1.0]))        # not in the batch
    restored = SelfAdaptiveTargets([0, 1, 1], 2)
    restored.load_state_dict(sat.state_dict())
    assert torch.equal(restored.targets, sat.targets)
    with pytest.raises(ValueError, match="do not fit"):
        SelfAdaptiveTargets([0, 1], 2).load_state_dict(sat.state_dict())


def test_trades_examples_stay_in_the_ball_and_raise_the_kl(cifar_crops16):
    x, y = cifar_crops16
    net = linear_net16()
    at = AdversarialTraining("trades", EPS, steps=5)
    torch.manual_seed(0)
    x_adv = at.examples(net, x, y)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        p = torch.softmax(net(x), 1)
        kl = F.kl_div(torch.log_softmax(net(x_adv), 1), p, reduction="sum")
        start = F.kl_div(torch.log_softmax(net((x + 0.001 * torch.randn_like(x)).clamp(0, 1)), 1),
                         p, reduction="sum")
    assert kl > 100 * start


def test_trades_loss_is_the_natural_loss_plus_beta_kl(cifar_crops16):
    x, y = cifar_crops16
    net = linear_net16()
    at = AdversarialTraining("trades", EPS, steps=2, trades_beta=3.0)
    same, _ = at.loss(net, x, x, y, 0.0)                  # x' = x: no KL term
    assert same.item() == pytest.approx(F.cross_entropy(net(x), y, reduction="sum").item(), rel=1e-5)
    x_adv = at.examples(net, x, y)
    total, logits = at.loss(net, x, x_adv, y, 0.0)
    kl = F.kl_div(torch.log_softmax(net(x_adv), 1), torch.softmax(net(x), 1), reduction="sum")
    assert total.item() == pytest.approx(same.item() + 3.0 * kl.item(), rel=1e-5)
    assert torch.allclose(logits, net(x_adv))
    sat = SelfAdaptiveTargets(y.numpy(), 10, momentum=0.9, start_epoch=0)
    with_sat = AdversarialTraining("trades", EPS, trades_beta=3.0, self_adaptive=sat, epoch=1)
    index = np.arange(len(y))
    total_sat, _ = with_sat.loss(net, x, x_adv, y, 0.0, index=index)
    reference = SelfAdaptiveTargets(y.numpy(), 10, momentum=0.9, start_epoch=0)
    natural = reference.loss(net(x), y, index, epoch=1)
    assert total_sat.item() == pytest.approx(natural.item() + 3.0 * kl.item(), rel=1e-5)
    assert torch.allclose(sat.targets, reference.targets)
    with pytest.raises(ValueError, match="training positions"):
        with_sat.loss(net, x, x_adv, y, 0.0)


def test_sat_training_moves_the_targets_from_its_start_epoch_and_resumes(cifar_small, tmp_path):
    imgs, labels = cifar_small
    data = ImageDataset(np.ascontiguousarray(imgs[:, 8:24, 8:24]), labels)
    cfg = {"output_dir": str(tmp_path / "run"), "optim": {"epochs": 2, "batch_size": 8, "lr": 0.05},
           "logging": {"progress": False, "tensorboard": False},
           "adversarial": {"method": "trades", "eps": "8/255", "steps": 2,
                           "self_adaptive": {"momentum": 0.9, "start_epoch": 1},
                           "monitor": {"images": 0}}}

    class Interrupted(Exception):
        pass

    def stop_after_first(epoch, row):
        raise Interrupted
    with pytest.raises(Interrupted):
        train(cfg, model=linear_net16, train_data=data, val_data=data, callbacks=[stop_after_first])
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["self_adaptive"]["targets"]
    assert torch.equal(first, torch.eye(10)[np.asarray(labels)])      # epoch 0 < start: unmoved
    res = train({**cfg, "resume": True}, model=linear_net16, train_data=data, val_data=data)
    assert res.resumed_from == 1
    moved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["self_adaptive"]["targets"]
    assert moved.shape == first.shape and not torch.equal(moved, first)
    assert torch.allclose(moved.sum(1), torch.ones(len(labels)))       # still distributions
    assert (moved.argmax(1) == torch.as_tensor(labels)).float().mean() > 0.9
