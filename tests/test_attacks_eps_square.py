"""Per-channel ε (the "ε on normalised images" convention) and the gradient-free Square attack."""

from __future__ import annotations

import pytest
import torch

from virolbi.attacks import fgsm, pgd
from virolbi.attacks.base import eps_for_convention
from virolbi.attacks.square import PerImageCache, square_attack
from virolbi.errors import InputError
from virolbi.models import DATASET_STATS


def test_normalized_convention_is_eps_times_std():
    std = DATASET_STATS["cifar10"][1]
    got = eps_for_convention(8 / 255, "normalized", std)
    assert got == pytest.approx(tuple(8 / 255 * s for s in std))
    assert max(got) < 8 / 255 / 3.5                # ~4x smaller than on pixels
    assert eps_for_convention(8 / 255, "pixel") == 8 / 255
    with pytest.raises(InputError, match="convention"):
        eps_for_convention(8 / 255, "logit", std)


def test_per_channel_radius_is_exact_for_fgsm_and_respected_by_pgd(cifar_batch, template_classifier):
    x = cifar_batch[:6].clamp(0.1, 0.9)             # no pixel at the box: the radius is reached
    y = torch.arange(6)
    model = template_classifier(torch.roll(cifar_batch[:10], 1, 0))
    eps = (0.01, 0.02, 0.04)
    delta = (fgsm(model, x, y, eps) - x).abs()
    for c, e in enumerate(eps):
        moved = delta[:, c][delta[:, c] > 0]
        assert torch.allclose(moved, torch.full_like(moved, e), atol=1e-6)
    d = (pgd(model, x, y, eps, steps=5, generator=torch.Generator().manual_seed(0)) - x).abs()
    for c, e in enumerate(eps):
        assert float(d[:, c].max()) <= e + 1e-6 and float(d[:, c].max()) > 0.5 * e
    with pytest.raises(InputError, match="3 channels"):
        fgsm(model, x, y, (0.1, 0.1))


def test_evaluate_normalized_convention_is_weaker_and_recorded(cifar_one_per_class):
    from virolbi.evaluate import evaluate
    from virolbi.models import create_model
    x, y, _ = cifar_one_per_class
    torch.manual_seed(0)
    model = create_model("airbench", 10, width=0.125)
    from virolbi.train.model_hooks import init_from_data
    init_from_data(model, x)
    specs = [s for s in __import__("virolbi.evaluate", fromlist=["get_suite"]).get_suite("adversarial")
             if s.perturbation == "pgd" and s.level == "16/255"]
    specs = [type(specs[0])(**{**specs[0].__dict__, "threat_models": ("classifier",)})]
    res = {c: evaluate(model, (x, y), suite=specs, sanity=False, progress=False, eps_convention=c)
           for c in ("pixel", "normalized")}
    row = {c: r.select(perturbation="pgd")[0] for c, r in res.items()}
    assert row["normalized"].accuracy >= row["pixel"].accuracy
    assert res["normalized"].meta["eps_convention"] == "normalized"
    assert row["normalized"].params["eps"] == pytest.approx(
        [16 / 255 * s for s in DATASET_STATS["cifar10"][1]])
    with pytest.raises(InputError, match="Normalize layer"):
        evaluate(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)), (x, y),
                 suite=specs, sanity=False, progress=False, eps_convention="normalized")


def test_per_image_cache_equals_inner_and_counts_hits(cifar_batch):
    calls = []

    class Halve(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x / 2
    cache = PerImageCache(Halve(), capacity=8)
    x = cifar_batch[:5]
    assert torch.equal(cache(x), x / 2)
    assert torch.equal(cache(x.flip(0)), (x / 2).flip(0))     # all hits, order kept
    assert calls == [5] and cache.hits == 5 and cache.misses == 5
    cache(cifar_batch[5:15])                                  # 10 new > capacity 8: oldest dropped
    assert len(cache._cache) == 8


def test_square_attack_finds_adversarials_within_the_ball(cifar_batch, template_classifier):
    pytest.importorskip("art")
    x, y = cifar_batch[:10], torch.arange(10)
    model = template_classifier(x)                  # perfect on x
    eps = 16 / 255
    x_adv = square_attack(model, x, y, eps, queries=60, seed=1)
    assert float((x_adv - x).abs().max()) <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        loss_clean = torch.nn.functional.cross_entropy(model(x), y)
        loss_adv = torch.nn.functional.cross_entropy(model(x_adv), y)
    assert clean == 1.0 and loss_adv > loss_clean           # the search raised the loss
    again = square_attack(model, x, y, eps, queries=60, seed=1)
    assert torch.equal(x_adv, again)                        # seeded
    with_pre = square_attack(model, x, y, eps, queries=60, seed=1, preprocess=torch.nn.Identity())
    assert torch.equal(with_pre, x_adv)                      # identity preprocessing changes nothing
    cached = square_attack(model, x, y, eps, queries=60, seed=1, cache_logits=True)
    assert torch.equal(cached, x_adv)                        # logits cached per image: same search
    # one radius per channel (the normalised convention): equal radii are the scalar search
    assert torch.equal(square_attack(model, x, y, (eps,) * 3, queries=60, seed=1), x_adv)
    per_channel = square_attack(model, x, y, (eps / 4, eps, eps / 2), queries=60, seed=1)
    reached = (per_channel - x).abs().amax(dim=(0, 2, 3))
    assert (reached <= torch.tensor([eps / 4, eps, eps / 2]) + 1e-6).all()
    with pytest.raises(InputError, match="at least 8x8"):
        square_attack(model, x[:, :, :4, :4], y, 0.1)
