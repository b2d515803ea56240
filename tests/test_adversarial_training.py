"""Adversarial training (fast AT, PGD AT, mixed loss, AWP) and the catastrophic-overfitting monitor
(virolbi.train.adversarial), on real CIFAR-10 crops and small networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virolbi.attacks import pgd
from virolbi.data.dataset import ImageDataset
from virolbi.errors import InputError
from virolbi.train import train
from virolbi.train.adversarial import (AdversarialTraining, RobustnessMonitor,
                                       catastrophic_overfitting, perturbed_weights)
from virolbi.train.config import resolve_config
from virolbi.train.loop import _train_step

from conftest import linear_net16

EPS = 8 / 255



def step_cfg(**compute):
    cfg = resolve_config({"optim": {"label_smoothing": 0.0, "weight_decay": 0.0, "momentum": 0.0}})
    cfg["compute"].update(compute)
    return cfg


# ---------------------------------------------------------------- the training-time attacks
@pytest.mark.parametrize("method", ["fgsm_rs", "pgd"])  # projected onto the eps-ball
def test_examples_stay_in_the_ball_and_raise_the_loss(cifar_crops16, method):
    x, y = cifar_crops16
    net = linear_net16()
    at = AdversarialTraining(method, EPS, steps=5)
    torch.manual_seed(1)
    x_adv = at.examples(net, x, y)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        clean, adv = F.cross_entropy(net(x), y), F.cross_entropy(net(x_adv), y)
    assert adv > clean + 0.05


def test_fgsm_rs_is_one_step_of_one_and_a_quarter_eps_from_a_uniform_start(cifar_crops16):
    """Wong et al. (2020): x' = proj(x + u + 1.25 eps sign(grad at x + u)), u ~ U[-eps, eps]^d, with
    the projection onto the eps-ball around x and [0, 1], recomputed here from the definition."""
    x, y = cifar_crops16
    net = linear_net16()
    at = AdversarialTraining("fgsm_rs", EPS)
    assert at.step == pytest.approx(1.25 * EPS)
    torch.manual_seed(3)
    u = (torch.rand_like(x) * 2 - 1) * EPS
    torch.manual_seed(3)
    x_adv = at.examples(net, x, y)
    start = (x + u).clamp(0, 1)
    xg = start.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(net(xg), y, reduction="sum"), xg)
    expected = torch.minimum(torch.maximum(start + 1.25 * EPS * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)


def test_nfgsm_is_one_step_of_eps_from_a_2eps_start_without_projection(cifar_crops16):
    """de Jorge et al. (2022): x' = clip01(x + u + eps sign(grad at x + u)), u ~ U[-2 eps, 2 eps]^d;
    the perturbation may reach 3 eps (no projection onto the eps-ball)."""
    x, y = cifar_crops16
    net = linear_net16()
    at = AdversarialTraining("nfgsm", EPS)
    assert at.step == pytest.approx(EPS)
    torch.manual_seed(5)
    u = (torch.rand_like(x) * 2 - 1) * 2 * EPS
    torch.manual_seed(5)
    x_adv = at.examples(net, x, y)
    start = (x + u).clamp(0, 1)
    xg = start.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(net(xg), y, reduction="sum"), xg)
    torch.testing.assert_close(x_adv, (start + EPS * g.sign()).clamp(0, 1), atol=1e-6, rtol=0)
    assert (x_adv - x).abs().max() > 2 * EPS


def test_adversarial_step_lowers_the_adversarial_loss_more_than_a_clean_step(cifar_crops16):
    """From the same weights, one PGD-AT step and one clean step of the same learning rate: the
    robust loss (PGD-10 against the updated model) is lower after the adversarial one."""
    x, y = cifar_crops16
    cfg = step_cfg()

    def robust_loss_after(adversary):
        net = linear_net16()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        torch.manual_seed(0)
        _train_step(net, opt, x, y, 1 / len(y), cfg, torch.device("cpu"), adversary)
        x_adv = pgd(net, x, y, EPS, steps=10, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            return float(F.cross_entropy(net(x_adv), y))

    clean, adversarial = robust_loss_after(None), robust_loss_after(AdversarialTraining("pgd", EPS))
    assert adversarial < clean - 0.005     # measured: 2.571 against 2.581


def test_mixed_loss_weights_clean_and_adversarial(cifar_crops16):
    x, y = cifar_crops16
    net = linear_net16()
    x_adv = AdversarialTraining("fgsm_rs", EPS).examples(net, x, y)
    half = AdversarialTraining("pgd", EPS, clean_weight=0.5).loss(net, x, x_adv, y, 0.0)[0]
    with torch.no_grad():
        expected = 0.5 * F.cross_entropy(net(x_adv), y, reduction="sum") + \
            0.5 * F.cross_entropy(net(x), y, reduction="sum")
    assert float(half.detach()) == pytest.approx(float(expected), rel=1e-5)


# ---------------------------------------------------------------- AWP
def test_awp_perturbation_has_relative_size_gamma_and_is_taken_off(cifar_crops16):
    x, y = cifar_crops16
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 14 * 14, 10))
    at = AdversarialTraining("fgsm_rs", EPS, awp_gamma=5e-3)
    v = at.weight_perturbation(net, [(at.examples(net, x, y), y)])
    weights = [p for p in net.parameters() if p.ndim > 1]
    assert set(v) == set(weights)                          # biases are not perturbed
    for p in weights:
        assert float(v[p].norm()) == pytest.approx(5e-3 * float(p.detach().norm()), rel=1e-5)
    before = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        loss0 = F.cross_entropy(net(x), y)
    with perturbed_weights(v):
        with torch.no_grad():
            loss_up = F.cross_entropy(net(x), y)
    assert loss_up > loss0                                  # an ascent direction
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_awp_step_differs_from_the_plain_adversarial_step(cifar_crops16):
    x, y = cifar_crops16
    cfg = step_cfg(micro_batch=10)
    out = []
    for gamma in (0.0, 5e-2):
        net = linear_net16()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        torch.manual_seed(0)
        _train_step(net, opt, x, y, 1 / len(y), cfg, torch.device("cpu"),
                    AdversarialTraining("fgsm_rs", EPS, awp_gamma=gamma))
        out.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert not torch.allclose(out[0], out[1])


# ---------------------------------------------------------------- catastrophic overfitting
def test_detector_fires_on_a_collapse_and_not_on_steady_progress():
    steady = [{"fgsm": 0.40, "pgd": 0.30}, {"fgsm": 0.45, "pgd": 0.34}, {"fgsm": 0.47, "pgd": 0.33}]
    assert not any(catastrophic_overfitting(steady[:i + 1]) for i in range(3))
    collapse = steady[:2] + [{"fgsm": 0.80, "pgd": 0.01}]   # Wong et al.'s signature
    assert catastrophic_overfitting(collapse)
    both_fall = steady[:2] + [{"fgsm": 0.10, "pgd": 0.01}]  # a bad step, not gradient masking
    assert not catastrophic_overfitting(both_fall)


class ScriptedMonitor(RobustnessMonitor):
    """A monitor whose readings are given: the constructed collapse of fast AT."""

    def __init__(self, readings):
        super().__init__(torch.zeros(1, 3, 4, 4), torch.zeros(1, dtype=torch.long), EPS)
        self.readings = iter(readings)

    def measure(self, net):
        return next(self.readings)


def test_monitor_keeps_the_weights_of_the_best_pgd_epoch():
    net = torch.nn.Linear(2, 2)
    mon = ScriptedMonitor([{"fgsm": .4, "pgd": .3}, {"fgsm": .5, "pgd": .35}, {"fgsm": .9, "pgd": .0}])
    flags = []
    for epoch in (1, 2, 3):
        with torch.no_grad():
            net.weight.fill_(epoch)
        flags.append(mon.update(net, epoch)[1])
    assert flags == [False, False, True] and mon.best_epoch == 2
    assert torch.all(mon.best_state["weight"] == 2)


def test_training_reports_the_collapse_and_ships_the_best_weights(cifar_small, tmp_path, capsys,
                                                                   monkeypatch):
    imgs, labels = cifar_small
    data = ImageDataset(np.ascontiguousarray(imgs[:, 8:24, 8:24]), labels)
    readings = iter([{"fgsm": .2, "pgd": .2}, {"fgsm": .3, "pgd": .25}, {"fgsm": .9, "pgd": .01}])
    monkeypatch.setattr(RobustnessMonitor, "measure", lambda self, net: next(readings))
    cfg = {"output_dir": str(tmp_path / "run"), "optim": {"epochs": 3, "batch_size": 8, "lr": 0.05},
           "logging": {"progress": False, "tensorboard": False},
           "adversarial": {"method": "fgsm_rs", "eps": "8/255", "monitor": {"images": 4}}}
    res = train(cfg, model=linear_net16, train_data=data, val_data=data)
    err = capsys.readouterr().err
    assert "catastrophic overfitting at epoch 3" in err and "epoch 2" in err
    assert res.info["train_images"] == len(labels) - 4 and res.info["kept_epoch"] == 2
    assert [r["overfitting"] for r in res.metrics] == [0, 0, 1]
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    best = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["monitor"]["best_state"]
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    assert "monitor_pgd_acc" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]


def test_config_validation_names_the_key():
    cfg = resolve_config({"adversarial": {"method": "fgsm_rs", "eps": "8/255"}})
    assert cfg["adversarial"]["eps"] == pytest.approx(8 / 255)
    for bad, match in [({"method": "madry"}, "adversarial.method"),
                       ({"eps": 8}, "adversarial.eps"), ({"eps": "8/zero"}, "adversarial.eps"),
                       ({"clean_weight": 2}, "adversarial.clean_weight"),
                       ({"monitor": {"images": -1}}, "adversarial.monitor.images"),
                       ({"method": "pgd", "self_adaptive": {}}, "needs adversarial.method: trades"),
                       ({"method": "trades", "self_adaptive": {"momentum": 1.0}},
                        "self_adaptive.momentum must be in"),
                       ({"method": "trades", "self_adaptive": {"start_epoch": -1}},
                        "self_adaptive.start_epoch"),
                       ({"method": "trades", "self_adaptive": {"alpha": 0.9}}, "unknown keys"),
                       ({"method": "trades", "self_adaptive": 0.9}, "must be null or a mapping"),
                       ({"method": "trades", "trades_beta": -1}, "adversarial.trades_beta")]:
        with pytest.raises(InputError, match=match):
            resolve_config({"adversarial": bad})
