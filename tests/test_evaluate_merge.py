"""Merging evaluations of disjoint image sets, and extending a reproduction's cell to more images:
the merged counts equal one run on the union wherever the perturbation is deterministic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from virolbi.errors import InputError
from virolbi.evaluate import evaluate
from virolbi.evaluate.merge import merge_results
from virolbi.perturb import GaussianBlur

ROOT = Path(__file__).resolve().parents[1]


def _template_matcher(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """A linear classifier whose weights are the class means of ``x`` (nearest class mean):
    right on many of the images, wrong on some, so that the counts say something."""
    flat = x.flatten(1)
    means = torch.stack([flat[y == c].mean(0) for c in range(10)])
    lin = torch.nn.Linear(flat.shape[1], 10)
    with torch.no_grad():
        lin.weight.copy_(means)
        lin.bias.copy_(-0.5 * (means ** 2).sum(1))
    return torch.nn.Sequential(torch.nn.Flatten(), lin).eval()


@pytest.fixture(scope="module")
def images(cifar_batch, cifar_small):
    return cifar_batch, torch.as_tensor(cifar_small[1], dtype=torch.int64)


def _run(model, x, y, suite, **kw):
    return evaluate(model, (x, y), suite=suite, preprocess=GaussianBlur(3, 1.0),
                    preprocess_name="blur", batch_size=7, progress=False, pgd_steps=2, **kw)


def test_merged_counts_equal_one_run_on_the_union(images):
    x, y = images
    model = _template_matcher(x, y)
    whole = _run(model, x, y, "lowres")
    parts = [_run(model, x[:8], y[:8], "lowres"), _run(model, x[8:], y[8:], "lowres")]
    merged = merge_results(parts)
    assert [(r.key, r.correct, r.n) for r in merged.rows] == [
        (r.key, r.correct, r.n) for r in whole.rows]
    assert all(r.n == 20 and r.accuracy == r.correct / 20 for r in merged.rows)
    assert {r.correct for r in merged.rows} != {0}          # the classifier is right on some
    assert merged.meta["n"] == 20 and [p["n"] for p in merged.meta["parts"]] == [8, 12]


def test_merged_sanity_checks_are_recomputed_from_the_merged_rows(images):
    from virolbi.evaluate.sanity_plan import plan_sanity, sanity_checks

    x, y = images
    model = _template_matcher(x, y)
    parts = [_run(model, x[:10], y[:10], "adversarial"), _run(model, x[10:], y[10:], "adversarial")]
    merged = merge_results(parts)
    assert merged.sanity and [c.name for c in merged.sanity] == [c.name for c in parts[0].sanity]
    by_key = {r.key: r for r in merged.rows}
    expected = sanity_checks(by_key, plan_sanity(merged.rows, 2), 2, 20)
    assert [c.detail for c in merged.sanity] == [c.detail for c in expected]
    pgd = [r for r in merged.rows if r.perturbation == "pgd" and r.level == "8/255"]
    assert pgd and all(r.correct == parts[0][r.key].correct + parts[1][r.key].correct for r in pgd)


def test_parts_that_do_not_mean_the_same_are_refused(images):
    x, y = images
    model = _template_matcher(x, y)
    a = _run(model, x[:8], y[:8], "lowres")
    b = _run(model, x[8:], y[8:], "lowres")
    with pytest.raises(InputError, match="part 1 has eps_convention = 'normalized'"):
        merge_results([a, dataclasses.replace(b, meta={**b.meta, "eps_convention": "normalized"})])
    old = {k: {kk: vv for kk, vv in v.items() if kk != "eot_samples"} for k, v in b.meta["attacks"].items()}
    assert merge_results([a, dataclasses.replace(b, meta={**b.meta, "attacks": old})]).rows  # EOT 1
    eot2 = {k: {**v, "eot_samples": 2} for k, v in b.meta["attacks"].items()}
    with pytest.raises(InputError, match="part 1 has attacks"):
        merge_results([a, dataclasses.replace(b, meta={**b.meta, "attacks": eot2})])
    # a row only some parts have keeps their counts, and says so
    partial = merge_results([a, dataclasses.replace(b, rows=b.rows[1:])])
    assert partial[a.rows[0].key].n == 8 and partial[a.rows[1].key].n == 20
    assert partial.meta["rows_on_fewer_images"] == [{"row": list(a.rows[0].key), "n": 8}]
    with pytest.raises(InputError, match="no parts"):
        merge_results([])


@pytest.fixture
def ten_image_plan(tmp_path, cifar_small):
    """A plan over a folder of 10 real validation images (one per class) and a linear model."""
    from PIL import Image

    from conftest import CIFAR_CLASSES
    from virolbi.reproduce import load_plan

    imgs, labels = cifar_small
    for i in range(0, 20, 2):
        d = tmp_path / "data" / "val" / CIFAR_CLASSES[labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[i]).save(d / f"{i:03d}.png")
    (tmp_path / "plan.yaml").write_text(
        f"name: ten\ndataset: {{name: {tmp_path / 'data'}, split: val}}\neval_images: 10\n"
        f"models:\n  m: {{config: {ROOT / 'configs/fast/cifar10_fixed.yaml'}}}\n"
        "tables:\n  table4: {title: freq, suite: frequency, models: [m]}\n")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    return load_plan(tmp_path / "plan.yaml"), model


def test_a_cell_on_fewer_images_is_extended_with_only_the_others(ten_image_plan, tmp_path):
    from virolbi.evaluate.report import load_results
    from virolbi.reproduce.runner import cell_dir, eval_dataset, evaluate_cell

    plan, model = ten_image_plan
    work, fresh = tmp_path / "work", tmp_path / "fresh"
    evaluate_cell(plan, "m", "frequency", model, eval_dataset(plan, 5), work, {}, progress=False)
    path = evaluate_cell(plan, "m", "frequency", model, eval_dataset(plan, 10), work, {},
                         progress=False)
    parts = cell_dir(work, "frequency", "m") / "parts"
    assert sorted(p.name for p in parts.iterdir()) == ["images-0-5", "images-5-10"]
    assert load_results(parts / "images-5-10" / "results.json").meta["n"] == 5   # only the new 5
    whole = load_results(evaluate_cell(plan, "m", "frequency", model, eval_dataset(plan, 10), fresh,
                                       {}, progress=False))
    merged = load_results(path)
    assert merged.meta["eval_images"] == 10
    assert [(r.key, r.correct, r.n) for r in merged.rows] == [
        (r.key, r.correct, r.n) for r in whole.rows]
    # a stale part that overlaps is never counted twice; a cell on more images is not shrunk
    (parts / "images-0-3").mkdir()
    (parts / "images-0-3" / "results.json").write_text("{}")
    from virolbi.reproduce.runner import _part_chain
    assert [p.parent.name for p in _part_chain(parts, 10)] == ["images-0-5", "images-5-10"]
    with pytest.raises(InputError, match="evaluated on 10 images but this table asks for 5"):
        evaluate_cell(plan, "m", "frequency", model, eval_dataset(plan, 5), work, {})


def test_the_extension_images_are_the_complement_of_the_nested_subset(ten_image_plan):
    from virolbi.reproduce.runner import eval_dataset

    plan, _ = ten_image_plan
    small, big, rest = eval_dataset(plan, 4), eval_dataset(plan, 10), eval_dataset(plan, 10, exclude=4)
    labels = lambda d: sorted(int(d[i][1]) for i in range(len(d)))  # noqa: E731
    assert len(rest) == 6 and sorted(labels(small) + labels(rest)) == labels(big)
    assert "not in its 4" in rest.name
    assert np.unique(labels(small)).size == 4                       # stratified: 4 classes


def test_a_table_names_the_models_not_yet_on_its_images(ten_image_plan):
    from virolbi.reproduce.tables import _images_note

    plan, _ = ten_image_plan
    cells = [{"model_images": {"m": 10}, "n": 10}, {"model_images": {"old": 5, "m": 10}, "n": 15,
              "row": "r", "procedure": "fixed"}]
    assert _images_note(plan, "table4", cells) == [
        "", "Not yet on the table's images: old on 5 (each figure counts the images it had)."]
    assert _images_note(plan, "table4", cells[:1]) == []
    short = [{"row": "PGD 8/255 (pixel)", "threat_model": "adaptive_exact", "procedure": "blur",
              "n": 4, "model_images": {"m": 10}}]
    assert _images_note(plan, "table4", short * 2)[1].endswith(
        "Blur, adaptive: exact gradient through P (differentiable P: Blur): 4 images (2 rows).")
