"""AutoAttack from ART's attacks (issue #29): closed-form thresholds, gradient masking, the worst
case over the attacks, EOT for the rand version, the ε convention in reports, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from virolbi.attacks import ThreatModel
from virolbi.attacks.apgd import apgd
from virolbi.attacks.art_estimator import EOTEstimator, art_classifier
from virolbi.attacks.autoattack import (AutoAttackSettings, cumulative, run_components,
                                        worst_case)
from virolbi.cli import main
from virolbi.evaluate import PerturbationSpec, evaluate, to_markdown
from virolbi.evaluate.suites import level_label

pytest.importorskip("art")

THRESHOLD = 0.5     # the classifier below says class 1 once the mean pixel value passes it


class MeanClassifier(nn.Module):
    """Linear 3-class model of the mean pixel value m: z = (-k m, k (m - 1), -100). Class 0 while
    m < 1/2, so the smallest L∞ perturbation that changes the class of an image of mean m0 (pixels
    far from 0 and 1) is exactly 1/2 - m0: every pixel raised by that much."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-20 * m, 20 * (m - 1.0), torch.full_like(m, -100.0)], dim=1)


class Round(nn.Module):
    """8-bit quantisation: its gradient is zero everywhere (a masked gradient)."""

    deterministic = True

    def forward(self, x):
        return torch.round(x * 255) / 255


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.35 + 0.1 * torch.rand(n, 3, 8, 8, generator=g)
    return x, torch.zeros(n, dtype=torch.long), THRESHOLD - x.mean(dim=(1, 2, 3))


def _spec(eps, threats=("classifier",)):
    return PerturbationSpec("autoattack", level_label(eps), eps, "adversarial", threats)


def _rows(res, level, threat="classifier"):
    return {r.perturbation: r.accuracy for r in res.rows
            if r.level == level and r.threat_model == threat}


def test_linear_model_every_attack_succeeds_above_the_closed_form_radius_and_none_below():
    x, y, eps_star = _images()
    below, above = 0.9 * float(eps_star.min()), 1.5 * float(eps_star.max())
    settings = AutoAttackSettings(iterations=10, queries=1000, targets=1, independent=True)
    res = evaluate(MeanClassifier(), (x, y), suite=[_spec(below), _spec(above)], progress=False,
                   autoattack=settings, sanity=False)
    names = {"autoattack", "autoattack:apgd-ce", "autoattack:apgd-t", "autoattack:apgd-t-margin",
             "autoattack:square"}
    assert _rows(res, level_label(below)) == dict.fromkeys(names, 1.0)    # none can
    assert _rows(res, level_label(above)) == dict.fromkeys(names, 0.0)    # each one does alone
    row = res["autoattack", level_label(above), "classifier", "none"]
    assert row.params["eps_convention"] == "pixel" and row.params["breakdown"] == "alone"


def test_apgd_per_channel_radius_is_exact():
    x, y, eps_star = _images(4)
    eps = (0.05, 0.25, 0.2)           # mean shift 1/6 > every image's closed-form radius
    assert float(eps_star.max()) < sum(eps) / 3 and float(eps_star.min()) > max(eps) / 3
    model = MeanClassifier()
    x_adv = apgd(model, x, y, eps, loss="ce", iterations=5)
    assert (model(x_adv).argmax(1) != y).all()
    reached = (x_adv - x).abs().amax(dim=(0, 2, 3))
    assert torch.allclose(reached, torch.tensor(eps), atol=1e-6)     # each channel at its bound


def test_masked_gradient_is_still_broken_by_square_and_by_bpda():
    x, y, eps_star = _images()
    eps = 1.5 * float(eps_star.max())
    settings = AutoAttackSettings(iterations=10, queries=1000, targets=1, independent=True)
    masked = nn.Sequential(Round(), MeanClassifier())            # zero gradient end to end
    res = evaluate(masked, (x, y), suite=[_spec(eps)], progress=False, autoattack=settings,
                   sanity=False)
    rows = _rows(res, level_label(eps))
    assert rows["autoattack:apgd-ce"] == 1.0 and rows["autoattack:apgd-t"] == 1.0   # masked
    assert rows["autoattack:square"] == 0.0 and rows["autoattack"] == 0.0         # not fooled
    bpda = ThreatModel.ADAPTIVE_BPDA_IDENTITY.value
    res = evaluate(MeanClassifier(), (x, y), suite=[_spec(eps, (bpda,))], preprocess=Round(),
                   progress=False, autoattack=settings, sanity=False)
    assert _rows(res, level_label(eps), bpda)["autoattack:apgd-ce"] == 0.0        # BPDA breaks it


def test_worst_case_over_attacks_on_a_constructed_table():
    t = torch.tensor
    # image:        0      1      2      3      (3 is a clean error)
    table = {"a": t([True, False, True, False]), "b": t([True, True, False, False]),
             "c": t([False, True, True, False])}
    assert worst_case(table).tolist() == [False, False, False, False]
    assert worst_case({"a": table["a"], "b": table["b"]}).tolist() == [True, False, False, False]
    assert [v.tolist() for v in cumulative(table).values()] == [
        [True, False, True, False], [True, False, False, False], [False, False, False, False]]
    # the cascade attacks only what survived, and its rows are the cumulative ones
    x, y = torch.arange(4.0).view(4, 1, 1, 1), torch.zeros(4, dtype=torch.long)
    seen = []

    def attack(name, xs, ys):
        seen.append((name, xs.flatten().long().tolist()))
        return xs + 10 * (~table[name][xs.flatten().long()]).view(-1, 1, 1, 1)   # +10: broken

    def judge(xs, ys):
        return (xs.flatten() < 3)                                   # 3 is wrong, +10 is wrong

    cascade, _ = run_components("abc", attack, judge, x, y)
    assert seen == [("a", [0, 1, 2]), ("b", [0, 2]), ("c", [0])]
    assert {k: v.tolist() for k, v in cascade.items()} == {
        k: v.tolist() for k, v in cumulative(table).items()}
    seen.clear()
    alone, _ = run_components("abc", attack, judge, x, y, independent=True)
    assert seen == [(n, [0, 1, 2]) for n in "abc"]
    assert worst_case(alone).tolist() == worst_case(cascade).tolist()


class NoisyScale(nn.Module):
    """A random model: logits s · W x with a fresh s per call from its own generator."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 3)
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x):
        return (0.5 + torch.rand(1, generator=self.gen)) * self.lin(x.flatten(1))


def test_rand_version_averages_gradients_over_eot_draws():
    torch.manual_seed(0)
    model = NoisyScale()
    x, y = torch.rand(2, 3, 2, 2), torch.tensor([0, 2])
    est = art_classifier(model, x, None, 3)
    z, labels = x.numpy(), np.eye(3, dtype=np.float32)[y.numpy()]
    model.gen.manual_seed(1)
    draws = [est.loss_gradient(z, labels) for _ in range(4)]
    assert not np.allclose(draws[0], draws[1])                      # the model is random
    model.gen.manual_seed(1)
    np.testing.assert_allclose(EOTEstimator(est, 4).loss_gradient(z, labels), np.mean(draws, 0),
                               rtol=1e-5, atol=1e-7)
    rand = AutoAttackSettings(version="rand")
    assert [c.name for c in rand.components] == ["apgd-ce", "apgd-dlr"]
    assert not any(c.targeted for c in rand.components)
    assert rand.eot_for(1) == 20 and rand.eot_for(4) == 4 and AutoAttackSettings().eot_for(1) == 1


def test_normalized_report_names_the_convention_and_the_pixel_radius(cifar_one_per_class):
    from virolbi.models import create_model

    x, y, _ = cifar_one_per_class
    torch.manual_seed(0)
    model = create_model("airbench", 10, width=0.25, normalize="cifar10")
    spec = PerturbationSpec("fgsm", "8/255", 8 / 255, "adversarial", ("classifier",))
    res = evaluate(model, (x[:4], y[:4]), suite=[spec], eps_convention="normalized", sanity=False,
                   progress=False)
    md = to_markdown(res)
    assert "ε convention **normalized**" in md and "on [0, 1] pixels, the same" not in md
    row = res["fgsm", "8/255", "classifier", "none"]
    std = (0.2470, 0.2435, 0.2616)
    assert row.params["eps_convention"] == "normalized"
    assert row.params["radius_pixels"] == pytest.approx([8 / 255 * s for s in std], rel=1e-2)
    assert "| normalized | (1.98, 1.95, 2.09)/255 |" in md
    assert "ε = 8/255 → (1.98, 1.95, 2.09)/255" in md


def test_cli_autoattack_on_a_shipped_model(cifar_image_tree, tmp_path, capsys):
    out = tmp_path / "aa"
    code = main(["evaluate", "--checkpoint", "fast_cifar10_fast_at_s0", "--data",
                 str(cifar_image_tree), "--suite", "autoattack", "--limit", "20",
                 "--aa-iterations", "2", "--aa-queries", "5", "--aa-targets", "1",
                 "--eps-convention", "normalized", "--transfer-from", "fast_cifar10_vanilla_s0",
                 "--device", "cpu", "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    rows = {r["perturbation"]: r for r in res["rows"] if r["threat_model"] == "classifier"}
    assert set(rows) == {"autoattack", "autoattack:apgd-ce", "autoattack:apgd-t",
                         "autoattack:apgd-t-margin", "autoattack:square", "autoattack:transfer"}
    worst = rows.pop("autoattack")
    assert worst["n"] == 20 and all(worst["correct"] <= r["correct"] for r in rows.values())
    assert worst["params"]["eps_convention"] == "normalized"
    assert res["meta"]["autoattack"]["transfer_from"] == "fast_cifar10_vanilla_s0"
    md = (out / "results.md").read_text()
    assert "ε convention **normalized**" in md and "## AutoAttack (version standard)" in md
    assert "in place of FAB-T" in md
    # errors: one line, before any work
    for argv, match in ((["--suite", "quick", "--transfer-from", "x"], "--transfer-from needs"),
                        (["--suite", "autoattack", "--aa-iterations", "0"], "--aa-iterations")):
        assert main(["evaluate", "--checkpoint", "fast_cifar10_fast_at_s0", "--data",
                     str(cifar_image_tree), "--output-dir", str(tmp_path / "e"), *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and match in err, err


def test_an_interrupted_autoattack_run_resumes_with_its_breakdown_rows(tmp_path, monkeypatch):
    import virolbi.evaluate.harness as harness

    x, y, eps_star = _images(8)
    suite = [_spec(1.5 * float(eps_star.max()))]
    settings = AutoAttackSettings(iterations=3, queries=50, targets=1)
    kwargs = dict(suite=suite, progress=False, autoattack=settings, sanity=False, batch_size=4)
    reference = evaluate(MeanClassifier(), (x, y), **kwargs)
    real, calls = harness.evaluate_autoattack, []

    def dies_on_the_second_batch(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(harness, "evaluate_autoattack", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(MeanClassifier(), (x, y), resume_file=tmp_path / "partial.json", **kwargs)
    monkeypatch.setattr(harness, "evaluate_autoattack", real)
    resumed = evaluate(MeanClassifier(), (x, y), resume_file=tmp_path / "partial.json", **kwargs)
    assert resumed.meta["resumed_at_batch"] == 1
    assert {r.key: (r.correct, r.n) for r in resumed.rows} == {
        r.key: (r.correct, r.n) for r in reference.rows}
