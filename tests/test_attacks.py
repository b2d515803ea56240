"""Attacks (SPEC §3): FGSM/PGD geometry and closed forms, BPDA backward passes, EOT, threat models,
sanity checks. Tiny seeded models on 3×8×8 images; real CIFAR images only for the smoother test."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from virolbi.attacks import (
    BPDA,
    FGSM,
    PGD,
    SanityCheck,
    ThreatModel,
    attack_with_threat_model,
    bpda,
    check_accuracy_falls,
    check_large_eps_near_zero,
    check_more_steps_not_better,
    eot_loss_and_gradient,
    eval_mode,
    fgsm,
    noise_tolerance,
    pgd,
    predict,
    robust_accuracy,
    run_sanity_checks,
)
from virolbi.errors import InputError

SHAPE = (3, 8, 8)


D = 3 * 8 * 8
K = 5


def linear_model(dtype=torch.float64, device="cpu", seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(D, K)).to(dtype=dtype, device=device)


def conv_model(device="cpu", seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, K)).to(device)


def batch(n=6, dtype=torch.float32, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *SHAPE), generator=g, dtype=torch.float64)
    x[0, 0] = 0.0  # pixels on the box boundary: the clip must keep them inside [0, 1]
    x[1, 1] = 1.0
    y = torch.randint(0, K, (n,), generator=g)
    return x.to(dtype=dtype, device=device), y.to(device)


def loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


ATTACKS = {
    "fgsm": lambda m, x, y, eps: fgsm(m, x, y, eps),
    "pgd": lambda m, x, y, eps: pgd(m, x, y, eps, steps=5, restarts=2,
                                    generator=torch.Generator().manual_seed(0)),
}


# ---------------------------------------------------------------- geometry and loss


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("eps", [0.0, 8 / 255, 0.3, 1.0])
def test_inside_eps_ball_and_unit_box(name, eps, device):
    model = conv_model(device)
    x, y = batch(device=device)
    x_adv = ATTACKS[name](model, x, y, eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    if eps == 0.0:
        assert torch.equal(x_adv, x)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_batch_of_one_and_empty_batch(name):
    model = conv_model()
    x, y = batch(n=3)
    one = ATTACKS[name](model, x[:1], y[:1], 0.05)
    assert one.shape == (1, *SHAPE) and float((one - x[:1]).abs().max()) <= 0.05 + 1e-6
    with pytest.raises(InputError, match="empty batch"):
        ATTACKS[name](model, x[:0], y[:0], 0.05)


def test_fgsm_equals_closed_form_on_linear_model():
    # logits = W x + b  =>  grad_x CE = Wᵀ (softmax(Wx + b) - e_y), computed here in numpy.
    model = linear_model()
    x, y = batch(dtype=torch.float64)
    eps = 8 / 255
    W = model[1].weight.detach().numpy()
    b = model[1].bias.detach().numpy()
    xf = x.reshape(len(x), -1).numpy()
    z = xf @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y.numpy()] -= 1.0
    grad = p @ W
    expected = np.clip(xf + eps * np.sign(grad), 0.0, 1.0).reshape(x.shape)
    got = fgsm(model, x, y, eps)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_fgsm_raises_loss_of_every_image_of_a_linear_model():
    # CE is convex in x for a linear model and every coordinate moves along the gradient's sign:
    # l(x') >= l(x) + g·(x' - x) >= l(x), image by image.
    model = linear_model()
    x, y = batch(n=16, dtype=torch.float64)
    x_adv = fgsm(model, x, y, 4 / 255)
    assert torch.all(loss(model, x_adv, y) > loss(model, x, y))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_raise_the_loss_of_a_conv_net(name):
    model = conv_model()
    x, y = batch(n=16)
    x_adv = ATTACKS[name](model, x, y, 8 / 255)
    clean, adv = loss(model, x, y), loss(model, x_adv, y)
    assert adv.mean() > clean.mean() + 0.01
    assert (adv >= clean).float().mean() >= 0.9


def test_pgd_is_at_least_as_strong_as_fgsm():
    model = conv_model()
    x, y = batch(n=16)
    eps = 8 / 255
    l_fgsm = loss(model, fgsm(model, x, y, eps), y)
    l_pgd = loss(model, pgd(model, x, y, eps, steps=20, generator=torch.Generator().manual_seed(0)), y)
    assert l_pgd.mean() >= l_fgsm.mean()
    assert (l_pgd >= l_fgsm - 1e-6).float().mean() >= 0.8


def test_pgd_step_size_and_no_random_start_is_iterated_fgsm():
    # One step of size eps from x, no random start, is FGSM exactly.
    model = conv_model()
    x, y = batch()
    eps = 0.05
    one = pgd(model, x, y, eps, steps=1, step_size=eps, random_start=False)
    assert torch.equal(one, fgsm(model, x, y, eps))


def test_random_start_is_uniform_in_the_eps_ball():
    # step_size 0 leaves the random start in place: clip(x + U[-eps, eps]).
    model = conv_model()
    x, y = batch(n=16)
    eps = 0.1
    x0 = pgd(model, x, y, eps, steps=1, step_size=0, generator=torch.Generator().manual_seed(0))
    inside = (x > eps) & (x < 1 - eps)  # pixels the clip cannot touch
    d = ((x0 - x)[inside] / eps).double()
    assert d.numel() > 1000
    assert float(d.min()) < -0.95 and float(d.max()) > 0.95 and float(d.abs().max()) <= 1 + 1e-5
    assert abs(float(d.mean())) < 0.06 and abs(float(d.var()) - 1 / 3) < 0.03  # U[-1, 1]: 0, 1/3


def test_more_restarts_never_lower_the_worst_case():
    # The first restart is the same draw in both runs; each image keeps its worst restart
    # (misclassified first, then highest loss).
    model = conv_model()
    x, y = batch(n=16)
    eps = 4 / 255
    runs = {}
    for r in (1, 4):
        x_adv = pgd(model, x, y, eps, steps=3, restarts=r, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            logits = model(x_adv)
        runs[r] = (logits.argmax(1) != y, F.cross_entropy(logits, y, reduction="none"))
    (w1, l1), (w4, l4) = runs[1], runs[4]
    assert torch.all(w4 >= w1)
    same = w4 == w1
    assert torch.all(l4[same] >= l1[same] - 1e-6)


def test_pgd_is_deterministic_with_a_generator():
    model = conv_model()
    x, y = batch()
    a = pgd(model, x, y, 8 / 255, steps=3, generator=torch.Generator().manual_seed(7))
    b = pgd(model, x, y, 8 / 255, steps=3, generator=torch.Generator().manual_seed(7))
    c = pgd(model, x, y, 8 / 255, steps=3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_attack_objects_equal_functions():
    model = conv_model()
    x, y = batch()
    assert torch.equal(FGSM(model, eps=0.1)(x, y), fgsm(model, x, y, 0.1))
    kw = dict(steps=4, step_size=0.01, restarts=2)
    a = PGD(model, 0.1, generator=torch.Generator().manual_seed(0), **kw)(x, y)
    b = pgd(model, x, y, 0.1, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a, b)
    cfg = PGD(None, 8 / 255).config()
    assert cfg["attack"] == "pgd" and cfg["steps"] == 20 and cfg["step_size"] == pytest.approx(2 / 255)
    with pytest.raises(InputError, match="built without a model"):
        PGD(None, 8 / 255)(x, y)


# ---------------------------------------------------------------- train/eval mode


class _Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5),
                                 nn.Flatten(), nn.Linear(4 * 8 * 8, K))

    def forward(self, x):
        self.seen.append([m.training for m in self.net])
        return self.net(x)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_eval_mode_during_attack_and_modes_restored(name):
    torch.manual_seed(0)
    model = _Recorder().train()
    model.net[1].eval()  # a frozen BatchNorm inside a training model: a mixed state to keep
    before = [m.training for m in model.modules()]
    stats = model.net[1].running_mean.clone()
    x, y = batch()
    ATTACKS[name](model, x, y, 8 / 255)
    assert model.seen and all(not any(flags) for flags in model.seen)
    assert [m.training for m in model.modules()] == before
    assert torch.equal(model.net[1].running_mean, stats)
    assert all(p.grad is None for p in model.parameters())


def test_eval_mode_restores_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training and model[1].training


# ---------------------------------------------------------------- BPDA


class BlockAverage(nn.Module):
    """A fixed partition into 2×2 blocks: the output is the per-channel block mean."""

    def __init__(self, block=2):
        super().__init__()
        self.block = block

    def forward_with_labels(self, x):
        b, _, h, w = x.shape
        k = self.block
        out = F.interpolate(F.avg_pool2d(x, k), scale_factor=k, mode="nearest")
        rows = torch.arange(h, device=x.device) // k
        cols = torch.arange(w, device=x.device) // k
        labels = (rows[:, None] * (w // k) + cols[None, :]).expand(b, h, w).to(torch.int64)
        return out, labels

    def forward(self, x):
        return self.forward_with_labels(x)[0]


def _smoother():
    smoother = pytest.importorskip("virolbi.smoother")
    if not hasattr(smoother, "average_over_components") or not hasattr(smoother, "ViRoLBI"):
        pytest.skip("virolbi.smoother.average_over_components / ViRoLBI not available yet")
    return smoother


def _bpda_grad(x, preprocess, backward, upstream):
    x = x.clone().requires_grad_(True)
    out = bpda(x, preprocess, backward)
    (out * upstream).sum().backward()
    return out.detach(), x.grad


def test_bpda_identity_gradient_equals_upstream():
    x, _ = batch(n=2, dtype=torch.float64)
    upstream = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    quantize = lambda t: torch.round(t * 4) / 4  # noqa: E731  (zero gradient almost everywhere)
    out, grad = _bpda_grad(x, quantize, "identity", upstream)
    assert torch.equal(out, quantize(x))
    assert torch.equal(grad, upstream)


def test_bpda_partition_gradient_equals_block_averages():
    _smoother()
    x, _ = batch(n=2, dtype=torch.float64)
    upstream = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out, grad = _bpda_grad(x, BlockAverage(2), "partition", upstream)
    # Reference: mean of the upstream gradient over every 2×2 block, per channel (numpy reshape).
    u = upstream.numpy().reshape(2, 3, 4, 2, 4, 2)
    ref = np.broadcast_to(u.mean(axis=(3, 5), keepdims=True), u.shape).reshape(x.shape)
    np.testing.assert_allclose(grad.numpy(), ref, rtol=0, atol=1e-12)
    xb = x.numpy().reshape(2, 3, 4, 2, 4, 2)
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(xb.mean(axis=(3, 5), keepdims=True),
                                                           xb.shape).reshape(x.shape), atol=1e-12)


def test_bpda_module_equals_function_and_partition_needs_labels():
    _smoother()
    x, _ = batch(n=2)
    layer = BPDA(BlockAverage(), "partition")
    assert torch.equal(layer(x), bpda(x, BlockAverage(), "partition"))
    with pytest.raises(InputError, match="needs a preprocess with forward_with_labels"):
        BPDA(nn.Identity(), "partition")
    with pytest.raises(InputError, match="backward must be one of"):
        bpda(x, nn.Identity(), "straight-through")
    with pytest.raises(InputError, match="keeps the shape"):
        bpda(x, lambda t: t[:, :1], "identity")
    with pytest.raises(InputError, match="preprocess must be a callable"):
        BPDA("smooth")


def test_bpda_gradients_through_virolbi_on_real_images(cifar_batch):
    smoother = _smoother()
    import virolbi

    cls = getattr(virolbi, "ViRoLBI", smoother.ViRoLBI)
    smooth = cls(sparsity=0.6)
    x = cifar_batch[:4].clone()
    model = conv_model()
    # a 32×32 head for the same conv trunk
    model[-1] = nn.Linear(8 * 32 * 32, K)
    y = torch.arange(4) % K
    _, labels = smooth.forward_with_labels(x)
    grads = {}
    for backward in ("identity", "partition"):
        xr = x.clone().requires_grad_(True)
        F.cross_entropy(model(bpda(xr, smooth, backward)), y).backward()
        g = grads[backward] = xr.grad
        assert torch.isfinite(g).all()
        assert (g.flatten(1).abs().sum(1) > 0).all()  # non-zero for every image
    # Same forward, so the partition backward is the identity one averaged over the components of
    # the smoothed image's partition, hence constant on each of them.
    expected = smoother.average_over_components(grads["identity"], labels)
    torch.testing.assert_close(grads["partition"], expected, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(grads["partition"], grads["identity"])


# ---------------------------------------------------------------- EOT


class NoisyModel(nn.Module):
    """A randomised classifier: logits of x times a fresh random mask at every call."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(D, K).double()

    def forward(self, x):
        mask = (torch.rand_like(x) < 0.5).to(x.dtype) * 2
        return self.lin((x * mask).flatten(1))


def test_eot_gradient_is_the_mean_of_single_pass_gradients():
    model = NoisyModel()
    x, y = batch(n=3, dtype=torch.float64)
    n = 5
    torch.manual_seed(11)
    grads, losses = [], []
    for _ in range(n):
        xi = x.clone().requires_grad_(True)
        li = F.cross_entropy(model(xi), y, reduction="none")
        grads.append(torch.autograd.grad(li.sum(), xi)[0])
        losses.append(li.detach())
    torch.manual_seed(11)
    loss_eot, grad_eot = eot_loss_and_gradient(model, x, y, n)
    torch.testing.assert_close(grad_eot, torch.stack(grads).mean(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(loss_eot, torch.stack(losses).mean(0), rtol=1e-12, atol=1e-14)


def test_eot_with_deterministic_model_equals_plain():
    model = conv_model()
    x, y = batch()
    assert torch.equal(fgsm(model, x, y, 0.05, eot_samples=4), fgsm(model, x, y, 0.05))
    a = pgd(model, x, y, 0.05, steps=3, generator=torch.Generator().manual_seed(0), eot_samples=3)
    b = pgd(model, x, y, 0.05, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    # ... and through a deterministic preprocess under the adaptive threat model
    kw = dict(model=model, preprocess=BlockAverage(), x=x, y=y, attack=FGSM(None, 0.05),
              threat="adaptive_bpda_identity")
    assert torch.equal(attack_with_threat_model(**kw, eot_samples=3), attack_with_threat_model(**kw))


# ---------------------------------------------------------------- threat models


def test_threat_models_parse_and_label():
    assert ThreatModel.parse("classifier") is ThreatModel.CLASSIFIER
    assert ThreatModel.parse("ADAPTIVE_BPDA_PARTITION") is ThreatModel.ADAPTIVE_BPDA_PARTITION
    labels = {t.label for t in ThreatModel}
    assert len(labels) == 5 and "classifier alone" in labels
    assert ThreatModel.PREPROCESS_AFTER.label.startswith("paper:")
    assert "EOT over 8 samples" in ThreatModel.ADAPTIVE_BPDA_IDENTITY.describe(8)
    assert not ThreatModel.CLASSIFIER.uses_preprocess and ThreatModel.PREPROCESS_AFTER.uses_preprocess
    assert [t.bpda_backward for t in ThreatModel] == [None, None, "identity", "partition", None]
    assert [t.adaptive for t in ThreatModel] == [False, False, True, True, True]
    with pytest.raises(InputError, match="threat model must be one of"):
        ThreatModel.parse("white-box")


def test_adaptive_exact_differentiates_through_a_differentiable_preprocess():
    """For the Blur baseline's blur the exact threat model is PGD on f(blur(x)) by autograd, and
    it is at least as strong as BPDA's identity surrogate; a non-differentiable preprocess is
    refused with one line."""
    from virolbi.attacks import PGD, pgd
    from virolbi.perturb import GaussianBlur

    model = conv_model()
    x, y = batch()
    blur = GaussianBlur(3, 2.0)
    attack = PGD(None, eps=8 / 255, steps=10, generator=torch.Generator().manual_seed(0))
    got = attack_with_threat_model(model, blur, x, y, attack, "adaptive_exact")
    ref = pgd(nn.Sequential(blur, model), x, y, 8 / 255, steps=10,
              generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, ref)
    with pytest.raises(InputError, match="needs a differentiable preprocess"):
        attack_with_threat_model(model, nn.Identity(), x, y, attack, "adaptive_exact")


def test_attack_with_threat_model_targets():
    model = conv_model()
    x, y = batch()
    attack = PGD(None, 0.05, steps=3, random_start=False)
    direct = pgd(model, x, y, 0.05, steps=3, random_start=False)
    # classifier alone and the paper's setting attack the classifier only
    for threat in ("classifier", "preprocess_after"):
        got = attack_with_threat_model(model, BlockAverage(), x, y, attack, threat)
        assert torch.equal(got, direct)
    # adaptive through an exact identity preprocess is the plain attack
    assert torch.equal(attack_with_threat_model(model, nn.Identity(), x, y, attack,
                                                ThreatModel.ADAPTIVE_BPDA_IDENTITY), direct)
    # a plain callable works as the attack too
    fn = functools.partial(pgd, eps=0.05, steps=3, random_start=False)
    assert torch.equal(attack_with_threat_model(model, None, x, y, fn, "classifier"), direct)
    # adaptive partition attacks model ∘ block-average with the exact (linear) Jacobian: it equals
    # the attack on the differentiable composition
    _smoother()
    composed = nn.Sequential(BlockAverage(), model)
    got = attack_with_threat_model(model, BlockAverage(), x, y, attack, "adaptive_bpda_partition")
    torch.testing.assert_close(got, pgd(composed, x, y, 0.05, steps=3, random_start=False))


def test_adaptive_attack_beats_the_paper_setting_against_a_preprocess():
    # Against a block-averaging defence the adaptive attack (exact partition backward) must do at
    # least as well as attacking the classifier alone and then preprocessing.
    _smoother()
    model = conv_model()
    x, y = batch(n=16)
    attack = PGD(None, 8 / 255, steps=10, random_start=False)
    pre = BlockAverage()
    paper = robust_accuracy(model, pre, x, y, attack, "preprocess_after")
    adaptive = robust_accuracy(model, pre, x, y, attack, "adaptive_bpda_partition")
    assert adaptive <= paper


def test_robust_accuracy_applies_the_preprocess_when_the_threat_includes_it():
    model = conv_model()
    x, y = batch(n=8)
    gray = lambda t: torch.full_like(t, 0.5)  # noqa: E731  every input becomes the same image
    y_gray = model(torch.full_like(x[:1], 0.5)).argmax(1).expand(len(x))
    attack = FGSM(None, 0.05)
    acc_pre = robust_accuracy(model, gray, x, y, attack, "preprocess_after")
    assert acc_pre == pytest.approx(float((y_gray == y).double().mean()))
    x_adv = attack_with_threat_model(model, gray, x, y, attack, "classifier")
    acc_plain = robust_accuracy(model, gray, x, y, attack, "classifier")
    assert acc_plain == pytest.approx(float((model(x_adv).argmax(1) == y).double().mean()))
    assert torch.equal(predict(model, gray, x_adv, "preprocess_after"), y_gray)


def test_threat_model_input_errors():
    model = conv_model()
    x, y = batch(n=2)
    with pytest.raises(InputError, match="needs a preprocess"):
        attack_with_threat_model(model, None, x, y, FGSM(None, 0.1), "preprocess_after")
    with pytest.raises(InputError, match="threat model must be one of"):
        robust_accuracy(model, None, x, y, FGSM(None, 0.1), "bogus")
    with pytest.raises(InputError, match="attack must be an Attack"):
        attack_with_threat_model(model, None, x, y, "pgd", "classifier")
    with pytest.raises(InputError, match="needs a preprocess with forward_with_labels"):
        attack_with_threat_model(model, nn.Identity(), x, y, FGSM(None, 0.1), "adaptive_bpda_partition")
    with pytest.raises(InputError, match="preprocess must be a callable"):
        predict(model, 3, x, "preprocess_after")


# ---------------------------------------------------------------- input errors


@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: fgsm(m, x, y, -0.1), r"eps must be a number in \[0, 1\]"),
    (lambda m, x, y: fgsm(m, x, y, 8), r"did you mean 8/255"),
    (lambda m, x, y: fgsm(m, x, y, "big"), r"eps must be a number"),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), r"steps must be an integer >= 1, got 0"),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=2.5), r"steps must be an integer >= 1"),
    (lambda m, x, y: pgd(m, x, y, 0.1, restarts=0), r"restarts must be an integer >= 1"),
    (lambda m, x, y: pgd(m, x, y, 0.1, step_size=-1), r"step_size must be a finite number >= 0"),
    (lambda m, x, y: pgd(m, x, y, 0.1, generator=0), r"generator must be a torch.Generator"),
    (lambda m, x, y: fgsm(m, x, y, 0.1, eot_samples=0), r"eot_samples must be an integer >= 1"),
    (lambda m, x, y: fgsm(m, (x * 255).to(torch.uint8), y, 0.1), r"must be float in \[0, 1\]"),
    (lambda m, x, y: fgsm(m, x * 2, y, 0.1), r"float values in \[0, 1\]"),
    (lambda m, x, y: fgsm(m, x[0], y, 0.1), r"shape \(B, C, H, W\)"),
    (lambda m, x, y: fgsm(m, x.numpy(), y, 0.1), r"must be a torch tensor"),
    (lambda m, x, y: fgsm(m, x, y.float(), 0.1), r"labels must be an integer tensor"),
    (lambda m, x, y: fgsm(m, x, y[:1], 0.1), r"labels must have shape \(2,\)"),
    (lambda m, x, y: fgsm(m, x, y + 10, 0.1), r"labels must be < the model's 5 classes"),
    (lambda m, x, y: fgsm(m, x, y - 10, 0.1), r"labels must be >= 0"),
    (lambda m, x, y: fgsm(None, x, y, 0.1), r"model must be a callable"),
    (lambda m, x, y: fgsm(lambda t: t, x, y, 0.1), r"model must return logits of shape \(2, K\)"),
    (lambda m, x, y: PGD(m, 0.1, steps=0), r"steps must be an integer >= 1"),
    (lambda m, x, y: FGSM(m, -1), r"eps must be a number in \[0, 1\]"),
])
def test_input_errors(call, match):
    x, y = batch(n=2)
    with pytest.raises(InputError, match=match):
        call(conv_model(), x, y)


# ---------------------------------------------------------------- sanity checks


def test_sanity_checks_on_synthetic_curves():
    good = [(0.0, 0.9), (8 / 255, 0.5), (16 / 255, 0.2), (0.5, 0.0)]
    assert all(c.passed for c in run_sanity_checks(good, [(5, 0.3), (20, 0.25), (50, 0.26)]))
    rising = check_accuracy_falls([(0.0, 0.9), (8 / 255, 0.5), (16 / 255, 0.6)])
    assert not rising.passed and "largest rise 0.100" in rising.detail
    assert check_accuracy_falls([(16 / 255, 0.2), (0.0, 0.9)]).passed  # order does not matter
    assert not check_accuracy_falls([(0.0, 0.5), (0.1, 0.5)]).passed  # flat: did not fall
    assert check_accuracy_falls([(0.0, 0.0), (0.1, 0.0)]).passed  # already zero
    assert not check_accuracy_falls([(0.0, 0.5)]).passed
    assert check_accuracy_falls([(0.0, 0.9), (0.1, 0.5), (0.2, 0.55)], n=100).passed  # within noise
    masked = check_large_eps_near_zero([(0.0, 0.9), (1.0, 0.4)])
    assert not masked.passed and "accuracy too high" in masked.detail
    small = check_large_eps_near_zero([(0.0, 0.9), (16 / 255, 0.0)])
    assert not small.passed and "not very large" in small.detail
    assert check_large_eps_near_zero([(1.0, 0.1)], max_accuracy=0.1).passed
    steps = check_more_steps_not_better([(20, 0.3), (5, 0.2)])
    assert not steps.passed and steps.name == "more PGD steps never raise accuracy"
    assert check_more_steps_not_better([(5, 0.2), (20, 0.21)]).passed
    rec = run_sanity_checks(good)[0]
    assert isinstance(rec, SanityCheck) and set(rec.to_dict()) == {"name", "passed", "detail"}
    assert noise_tolerance(400) == pytest.approx(0.05)


@pytest.mark.parametrize("call, match", [
    (lambda: check_accuracy_falls([]), "must not be empty"),
    (lambda: check_accuracy_falls(3), r"sequence of \(eps, accuracy\) pairs"),
    (lambda: check_accuracy_falls([(0.1, 0.5, 1)]), r"sequence of \(eps, accuracy\) pairs"),
    (lambda: check_accuracy_falls([(-0.1, 0.5)]), r"eps must be in \[0, inf\]"),
    (lambda: check_accuracy_falls([(0.1, 1.5)]), r"accuracy must be in \[0, 1\]"),
    (lambda: check_accuracy_falls([(0.1, 0.5)], tolerance=2), r"tolerance must be in \[0, 1\]"),
    (lambda: check_more_steps_not_better([(0, 0.5)]), "steps must be integers >= 1"),
    (lambda: check_more_steps_not_better([(2.5, 0.5)]), "steps must be integers >= 1"),
    (lambda: check_large_eps_near_zero([(0.5, 0.1)], max_accuracy=-1), r"max_accuracy must be in"),
    (lambda: noise_tolerance(0), "n must be an integer >= 1"),
])
def test_sanity_input_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_sanity_checks_pass_for_pgd_on_a_real_attack():
    # The suite's own sanity curves on a linear classifier that is right on every image of its batch.
    model = linear_model(dtype=torch.float32)
    x, _ = batch(n=32)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps_curve = []
    for eps in (0.0, 2 / 255, 8 / 255, 0.1, 1.0):
        attack = PGD(None, eps, steps=10, generator=torch.Generator().manual_seed(0))
        eps_curve.append((eps, robust_accuracy(model, None, x, y, attack, "classifier")))
    steps_curve = []
    for steps in (1, 5, 20):
        attack = PGD(None, 2 / 255, steps=steps, generator=torch.Generator().manual_seed(0))
        steps_curve.append((steps, robust_accuracy(model, None, x, y, attack, "classifier")))
    assert eps_curve[0][1] == 1.0 and eps_curve[-1][1] == 0.0
    checks = run_sanity_checks(eps_curve, steps_curve, n=len(x))
    assert [c.passed for c in checks] == [True, True, True], [c.detail for c in checks]


def test_adaptive_fgsm_through_virolbi_end_to_end(cifar_batch):
    # The whole adaptive path on real images: BPDA(ViRoLBI) -> classifier, then the defended
    # prediction model(ViRoLBI(x_adv)).
    smoother = _smoother()
    import virolbi

    smooth = getattr(virolbi, "ViRoLBI", smoother.ViRoLBI)(sparsity=0.6)
    model = conv_model()
    model[-1] = nn.Linear(8 * 32 * 32, K)
    x = cifar_batch[:2].clone()
    y = torch.tensor([0, 1])
    eps = 8 / 255
    x_adv = attack_with_threat_model(model, smooth, x, y, FGSM(None, eps), "adaptive_bpda_partition")
    assert float((x_adv - x).abs().max()) <= eps + 1e-6 and not torch.equal(x_adv, x)
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    pred = predict(model, smooth, x_adv, "adaptive_bpda_partition")
    with torch.no_grad():
        assert torch.equal(pred, model(smooth(x_adv)).argmax(1))
