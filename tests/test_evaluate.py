"""The evaluation harness: suites, accuracies against closed forms and independent references,
threat models, sanity checks, and the JSON / Markdown / PNG reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from virolbi.errors import InputError
from virolbi.evaluate import (
    ADVERSARIAL_THREAT_MODELS,
    NOISES,
    PerturbationSpec,
    Results,
    evaluate,
    get_suite,
    load_results,
    plot_results,
    save_results,
    to_markdown,
    write_report,
)


class Constant(nn.Module):
    """Always predicts class 0 (zero gradient with respect to the input)."""

    def __init__(self, k: int = 10) -> None:
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.k, device=x.device) + 0 * self.dummy
        logits[:, 0] = 1.0
        return logits + 0 * x.flatten(1)[:, :1]


# ------------------------------------------------------------------------------------------ suites

def test_paper_suite_is_complete():
    specs = get_suite("paper")
    keys = {(s.perturbation, s.level) for s in specs}
    expected = {("clean", "-")}
    expected |= {(n, str(s)) for n in NOISES for s in range(1, 6)}
    expected |= {(a, e) for a in ("fgsm", "pgd") for e in ("8/255", "16/255")}
    expected |= {("low_resolution", "1/4"), ("low_resolution", "1/2"),
                 ("frequency", "low"), ("frequency", "high")}
    assert keys == expected and len(specs) == len(expected)
    for s in specs:
        if s.group == "adversarial":
            assert s.threat_models == ADVERSARIAL_THREAT_MODELS
            assert s.value == pytest.approx(int(s.level.split("/")[0]) / 255)
        if s.perturbation == "frequency":
            assert s.value == 6.0
    assert {s.value for s in specs if s.group == "lowres"} == {0.25, 0.5}


def test_large_images_take_imagenet_settings():
    specs = get_suite("paper", (224, 224))
    assert sorted({int(s.level) for s in specs if s.group == "noise"}) == [1, 2]
    assert [s.level for s in specs if s.group == "lowres"] == ["1/7", "1/4"]
    assert {s.value for s in specs if s.group == "frequency"} == {42.0}


def test_quick_and_small_suites():
    assert [(s.perturbation, s.level) for s in get_suite("quick")] == [
        ("clean", "-"), ("gaussian_noise", "3"), ("fgsm", "8/255"), ("low_resolution", "1/2"),
        ("frequency", "low"), ("frequency", "high")]
    for name, group in (("noise", "noise"), ("adversarial", "adversarial"), ("lowres", "lowres"),
                        ("frequency", "frequency")):
        specs = get_suite(name)
        assert specs[0].perturbation == "clean"
        assert {s.group for s in specs[1:]} == {group}


def test_tisode_suite_adds_gaussian_noise_of_the_stated_sigma():
    """Thesis Table 3.8: additive Gaussian noise of standard deviation 15/255 and 20/255 on [0, 1]
    pixels (clipped), FGSM at 8/255 and 10/255, PGD at 8/255."""
    from virolbi.evaluate.harness import _apply

    specs = get_suite("tisode")
    assert [(s.perturbation, s.level) for s in specs] == [
        ("clean", "-"), ("gaussian", "15/255"), ("gaussian", "20/255"), ("fgsm", "8/255"),
        ("fgsm", "10/255"), ("pgd", "8/255")]
    x = torch.full((64, 3, 32, 32), 0.5)
    for spec, sigma in ((specs[1], 15 / 255), (specs[2], 20 / 255)):
        delta = _apply(spec, x, torch.Generator().manual_seed(0)) - x
        assert float(delta.std()) == pytest.approx(sigma, rel=0.01)
        assert abs(float(delta.mean())) < 1e-3
    dark = _apply(specs[2], torch.zeros(8, 3, 8, 8), torch.Generator().manual_seed(0))
    assert float(dark.min()) == 0.0 and 0 < float(dark.mean()) < 20 / 255


def test_suite_errors():
    with pytest.raises(InputError, match="unknown suite 'papper'; expected one of paper"):
        get_suite("papper")
    with pytest.raises(InputError, match="group must be one of"):
        PerturbationSpec("clean", "-", None, "other")
    with pytest.raises(InputError, match=r"unknown threat model\(s\) \['paper'\]"):
        PerturbationSpec("fgsm", "8/255", 8 / 255, "adversarial", ("paper",))


def test_the_sanity_runs_are_planned_apart_from_the_suite():
    """The checks' extra PGD runs are their own type, not perturbations a suite could list: a
    "sanity" spec is refused, and the plan holds the large-ε run and the step counts."""
    from virolbi.evaluate.sanity_plan import LARGE_EPS, SanityRun, plan_sanity

    with pytest.raises(InputError, match="group must be one of"):
        PerturbationSpec("pgd", "8/255", 8 / 255, "sanity")
    plan = plan_sanity(get_suite("adversarial"), pgd_steps=20)     # has PGD-20 at 8/255 already
    assert plan.runs == (SanityRun("pgd", LARGE_EPS, 20), SanityRun("pgd-10", 8 / 255, 10))
    assert plan.steps == (10, 20) and plan.runs[0].level == "128/255"
    plan = plan_sanity(get_suite("quick"), pgd_steps=1)             # FGSM only: PGD-1 and PGD-2
    assert [(r.perturbation, r.steps) for r in plan.runs] == [("pgd", 1), ("pgd-1", 1), ("pgd-2", 2)]
    assert plan_sanity(get_suite("noise"), 20) is None
    assert plan_sanity(get_suite("square"), 20) is None             # Square needs no PGD runs


# ----------------------------------------------------------------------------------------- harness

def test_perfect_model_is_perfect_on_clean_and_matches_references(cifar_one_per_class,
                                                                  template_classifier):
    x, y, _ = cifar_one_per_class
    model = template_classifier(x)
    res = evaluate(model, (x, y), suite="paper", pgd_steps=10, progress=False)
    assert res.accuracy("clean") == 1.0
    assert all(r.n == 10 for r in res.rows)
    # independent references: block means (area down-sampling) + nearest up-sampling, and a
    # numpy FFT disk split, both classified by the same nearest-template rule
    for scale, level in ((0.25, "1/4"), (0.5, "1/2")):
        f = round(1 / scale)
        blocks = x.reshape(10, 3, 32 // f, f, 32 // f, f).mean(dim=(3, 5))
        low = blocks.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
        ref = (model(low).argmax(1) == y).float().mean().item()
        assert res.accuracy("low_resolution", level) == pytest.approx(ref)
    spec = np.fft.fftshift(np.fft.fft2(x.double().numpy()), axes=(-2, -1))
    i, j = np.meshgrid(np.arange(32) - 16, np.arange(32) - 16, indexing="ij")
    mask = (i**2 + j**2) <= 36
    low = np.fft.ifft2(np.fft.ifftshift(spec * mask, axes=(-2, -1))).real
    for part, img in (("low", low), ("high", x.double().numpy() - low)):
        ref = (model(torch.from_numpy(img).float()).argmax(1) == y).float().mean().item()
        assert res.accuracy("frequency", part) == pytest.approx(ref)
    # the template model is attackable by PGD at 128/255 (accuracy 0): the PGD checks pass. FGSM
    # cannot move it at 16/255, which its check reports as "did not fall".
    assert res.accuracy("pgd", "128/255", "classifier") == 0.0
    checks = {c.name: c for c in res.sanity}
    assert sorted(checks) == ["FGSM: accuracy falls as eps grows", "PGD at 8/255: more PGD steps "
                              "never raise accuracy", "PGD: accuracy falls as eps grows",
                              "PGD: accuracy near zero at very large eps"]
    assert all(c.passed for name, c in checks.items() if name.startswith("PGD"))
    fgsm = [r.accuracy for r in res.select(perturbation="fgsm", threat_model="classifier")]
    assert checks["FGSM: accuracy falls as eps grows"].passed == (min(fgsm) < 1.0)


def test_constant_model_scores_its_class_share_everywhere(cifar_small):
    images, labels = cifar_small
    x = torch.from_numpy(images).permute(0, 3, 1, 2)  # uint8 (N, C, H, W) is accepted too
    res = evaluate(Constant(), (x, labels), suite="quick", pgd_steps=1, progress=False)
    share = float(np.mean(labels == 0))
    assert share == pytest.approx(1 / 10)
    assert all(r.accuracy == pytest.approx(share) for r in res.rows)
    near_zero = [c for c in res.sanity if "near zero" in c.name]
    assert len(near_zero) == 1 and not near_zero[0].passed


class Brightness(nn.Module):
    """Class 1 when the mean pixel exceeds 1/2: images 2/255 from that threshold are fooled by any
    L∞ 8/255 search that shifts the mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 255.0 * (x.flatten(1).mean(dim=1) - 0.5)
        return torch.stack([-m, m], dim=1)


def test_square_suite_queries_the_whole_pipeline_without_sanity_runs(cifar_one_per_class):
    pytest.importorskip("art")
    y = torch.tensor([0, 1] * 4)
    x = 0.5 + (2 * y.float() - 1).view(-1, 1, 1, 1) * 2 / 255 * torch.ones(8, 3, 32, 32)
    res = evaluate(Brightness(), (x, y), suite="square", preprocess=nn.Identity(),
                   preprocess_name="id", progress=False)
    assert {(r.perturbation, r.threat_model, r.preprocessing) for r in res.rows} == {
        ("clean", "none", "none"), ("clean", "none", "id"), ("square", "gradient_free", "none"),
        ("square", "gradient_free", "id")}
    fooled = res.accuracy("square", "8/255", "gradient_free")
    assert res.accuracy("clean", "-") == 1.0 and fooled < 1.0
    # identity preprocessing, the same seeded search: the pipeline row is the classifier's row
    assert res.accuracy("square", "8/255", "gradient_free", "id") == fooled
    assert res.sanity == [] and not res.select(group="sanity")     # no PGD runs added
    assert "gradient-free" in to_markdown(res)
    # a model whose output ignores the input cannot be moved: Square leaves its accuracy
    x10, y10, _ = cifar_one_per_class
    const = evaluate(Constant(), (x10, y10), suite="square", progress=False)
    assert const.accuracy("square", "8/255", "gradient_free") == const.accuracy("clean", "-") == 0.1
    # the normalised convention: one radius per channel, named in the row
    norm = evaluate(_normalized(Brightness()), (x, y), suite="square", eps_convention="normalized",
                    progress=False)
    row = norm["square", "8/255", "gradient_free", "none"]
    assert row.params["eps_convention"] == "normalized" and len(row.params["radius_pixels"]) == 3


def _normalized(model: nn.Module) -> nn.Module:
    from virolbi.models.normalize import Normalize

    return nn.Sequential(Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), model)


def test_preprocessing_rows_and_threat_models(cifar_one_per_class, template_classifier):
    x, y, _ = cifar_one_per_class
    model = template_classifier(x)
    pre = nn.Identity()
    specs = get_suite("quick")
    res = evaluate(model, (x, y), suite=specs, preprocess=pre, preprocess_name="id",
                   progress=False, sanity=False)
    # identity preprocessing: deterministic rows are the same with and without it
    for p, lv in (("clean", "-"), ("low_resolution", "1/2"), ("frequency", "low")):
        assert res.accuracy(p, lv, preprocessing="id") == res.accuracy(p, lv)
    threats = {r.threat_model: r.preprocessing for r in res.select(perturbation="fgsm")}
    assert threats == {"classifier": "none", "preprocess_after": "id",
                       "adaptive_bpda_identity": "id"}
    # identity: attacking f then applying identity is the classifier-alone number
    assert res.accuracy("fgsm", "8/255", "preprocess_after", "id") == res.accuracy(
        "fgsm", "8/255", "classifier")
    assert any("adaptive_bpda_partition" in s for s in res.meta["skipped"])
    assert res.sanity == [] and not res.select(group="sanity")
    # a differentiable preprocess (the Blur baseline's blur) is also attacked with its exact gradient
    from virolbi.perturb import GaussianBlur
    res = evaluate(model, (x, y), suite=specs, preprocess=GaussianBlur(3, 2.0), preprocess_name="blur",
                   progress=False, sanity=False)
    threats = {r.threat_model for r in res.select(perturbation="fgsm")}
    assert "adaptive_exact" in threats and not any("adaptive_exact" in s for s in res.meta["skipped"])


def test_limit_seed_batch_size_and_mode(cifar_small, template_classifier):
    images, labels = cifar_small
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    model = template_classifier(x[::3])
    model.train()
    a = evaluate(model, (x, labels), suite="noise", limit=7, seed=3, progress=False)
    b = evaluate(model, (x, labels), suite="noise", limit=7, seed=3, progress=False)
    assert model.training  # the harness restores the mode
    assert all(r.n == 7 for r in a.rows) and a.meta["n"] == 7 and a.meta["dataset_size"] == 20
    assert [r.accuracy for r in a.rows] == [r.accuracy for r in b.rows]
    c = evaluate(model, (x, labels), suite="lowres", batch_size=3, progress=False)
    d = evaluate(model, (x, labels), suite="lowres", batch_size=128, progress=False)
    assert [r.correct for r in c.rows] == [r.correct for r in d.rows]
    for key in ("versions", "git_commit", "device", "elapsed_s", "seed", "suite"):
        assert key in a.meta
    assert a.meta["versions"]["torch"] == torch.__version__


def test_dataset_forms_agree(cifar_one_per_class, template_classifier):
    from virolbi.data import ImageDataset

    x, y, raw = cifar_one_per_class
    model = template_classifier(x)
    ds = ImageDataset(raw, y.numpy())

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.from_numpy(raw[i]).permute(2, 0, 1), int(y[i])

    accs = [[r.correct for r in evaluate(model, d, suite="lowres", progress=False).rows]
            for d in (ds, Items(), (x, y))]
    assert accs[0] == accs[1] == accs[2]


def test_evaluate_input_errors(cifar_one_per_class, template_classifier):
    x, y, _ = cifar_one_per_class
    model = template_classifier(x)
    with pytest.raises(InputError, match="model must be a torch.nn.Module, got function"):
        evaluate(lambda t: t, (x, y))
    with pytest.raises(InputError, match="limit must be a positive integer, got 0"):
        evaluate(model, (x, y), limit=0)
    with pytest.raises(InputError, match="batch_size must be a positive integer, got 'a'"):
        evaluate(model, (x, y), batch_size="a")
    with pytest.raises(InputError, match="pgd_steps must be a positive integer, got True"):
        evaluate(model, (x, y), pgd_steps=True)
    with pytest.raises(InputError, match="preprocess must be callable"):
        evaluate(model, (x, y), preprocess=3)
    with pytest.raises(InputError, match="dataset is empty"):
        evaluate(model, (x[:0], y[:0]))
    with pytest.raises(InputError, match=r"must hold images \(N, C, H, W\) and labels \(N,\)"):
        evaluate(model, (x[0], y))
    with pytest.raises(InputError, match="dataset must be a torch Dataset"):
        evaluate(model, 42)
    with pytest.raises(InputError, match="suite must be a suite name or a non-empty sequence"):
        evaluate(model, (x, y), suite=[])
    with pytest.raises(InputError, match="unknown suite"):
        evaluate(model, (x, y), suite="everything")
    with pytest.raises(InputError, match="dataset images must be uint8 or float"):
        evaluate(model, (x.long(), y))
    with pytest.raises(InputError, match="device must be auto, cpu, cuda or cuda:N, got 'toaster'"):
        evaluate(model, (x, y), device="toaster")

    class Ragged(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3, 8 + i, 8, dtype=torch.uint8), 0

    with pytest.raises(InputError, match="dataset images differ in shape"):
        evaluate(model, Ragged(), batch_size=2)


# ----------------------------------------------------------------------------------------- reports

@pytest.fixture(scope="module")
def paper_results(cifar_one_per_class, template_classifier):
    x, y, _ = cifar_one_per_class
    return evaluate(template_classifier(x), (x[:6], y[:6]), suite="paper",
                    preprocess=nn.Identity(), preprocess_name="P", pgd_steps=1, progress=False)


def test_json_round_trip(paper_results, tmp_path):
    path = save_results(paper_results, tmp_path / "r.json")
    back = load_results(path)
    assert back.to_dict() == json.loads(json.dumps(paper_results.to_dict()))
    assert back.accuracy("clean") == paper_results.accuracy("clean")
    assert [c.passed for c in back.sanity] == [c.passed for c in paper_results.sanity]
    with pytest.raises(InputError, match="results must be a dict with keys 'meta', 'rows'"):
        Results.from_dict({"rows": []})
    with pytest.raises(InputError, match="malformed results row"):
        Results.from_dict({"meta": {}, "rows": [{"x": 1}], "sanity": []})


def test_markdown_has_the_paper_tables(paper_results):
    md = to_markdown(paper_results)
    for heading in ("## Table 1: noisy examples", "## Table 2: adversarial examples",
                    "## Table 3: low-resolution examples",
                    "## Table 4: high and low frequency components (radius 6)", "## Sanity checks"):
        assert heading in md
    for noise in ("Gaussian", "Shot", "Impulse", "Speckle"):
        assert f"| {noise} | without |" in md and f"| {noise} | with P |" in md
    gauss = paper_results.select(perturbation="gaussian_noise", preprocessing="none")
    mean = 100 * sum(r.accuracy for r in gauss) / 5
    assert f"| Gaussian | without | {mean:.2f} |" in md
    for attack in ("FGSM", "PGD"):
        for eps in ("8/255", "16/255"):
            assert f"| {attack} | {eps} | classifier alone | without |" in md
            assert f"| {attack} | {eps} | paper: attack the classifier, then preprocess | with P |" in md
            assert f"| {attack} | {eps} | adaptive: end to end through the preprocess, BPDA identity" in md
    assert "| Preprocessing | scale 1/4 | scale 1/2 |" in md
    assert "| High |" in md and "| Low |" in md
    assert md.count("**PASS**") + md.count("**FAIL**") == len(paper_results.sanity) == 4
    # every adversarial table row carries a threat-model label
    table2 = md.split("## Table 2")[1].split("## Table 3")[0]
    rows = [ln for ln in table2.splitlines() if ln.startswith(("| FGSM", "| PGD"))]
    assert len(rows) == 2 * 2 * 3 and all(ln.split(" | ")[2] != "-" for ln in rows)


def test_write_report_files(paper_results, tmp_path):
    paths = write_report(paper_results, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "results.json", "results.md", "results.png"]
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_results(paths["json"]).to_dict()["rows"] == json.loads(
        json.dumps(paper_results.to_dict()))["rows"]
    # a results set without noise or attacks still gets a figure
    small = Results([r for r in paper_results.rows if r.group == "lowres"], [], {})
    assert plot_results(small, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_limit_is_a_class_stratified_subset():
    """--limit means the same everywhere: as even as possible over the classes (seeded)."""
    n, classes = 60, 3
    labels = torch.tensor([0] * 40 + [1] * 15 + [2] * 5)  # unbalanced, sorted by class
    x = (torch.arange(n, dtype=torch.float32) / 255.0).view(n, 1, 1, 1).expand(n, 3, 4, 4)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, inp):
            seen.extend(torch.round(inp[:, 0, 0, 0] * 255).long().tolist())
            return torch.zeros(inp.shape[0], classes)

    evaluate(Spy(), (x.contiguous(), labels), suite="lowres", limit=12, progress=False,
             sanity=False)
    picked = sorted(set(seen))
    assert len(picked) == 12
    assert torch.bincount(labels[picked], minlength=classes).tolist() == [4, 4, 4]
