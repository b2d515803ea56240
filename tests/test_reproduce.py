"""`virolbi reproduce` end to end on a few real images: real (small) airbench models, the real
smoother, a resumable state, tables with intervals and the paper's figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from virolbi.errors import InputError
from virolbi.reproduce import load_plan, run_tables
from virolbi.reproduce.stats import pooled, wilson_interval

from conftest import CIFAR_CLASSES, load_shared_cifar

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    """A plan over a real-image folder (3 train + 1 val image per class), two tiny models."""
    root = tmp_path_factory.mktemp("repro")
    images, labels = load_shared_cifar(4)
    for i, (img, lab) in enumerate(zip(images, labels)):
        split = "val" if i % 4 == 3 else "train"
        d = root / "data" / split / CIFAR_CLASSES[lab]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:03d}.png")
    configs = root / "configs"
    configs.mkdir()
    (configs / "tiny.yaml").write_text(
        f"defaults: [{ROOT / 'configs/base/fast.yaml'}]\n"
        f"data: {{name: {root / 'data'}, train_split: train, val_split: val}}\n"
        "model: {width: 0.125, data_init_images: 30}\n"
        "optim: {epochs: 1, batch_size: 16, drop_last: false}\n"
        "compute: {micro_batch: 8}\n"
        f"procedure: {{cache_dir: {root / 'cache'}}}\n"
        "eval: {test_time_sparsity: null}\n"
        "logging: {progress: false, tensorboard: false}\n")
    (configs / "plan.yaml").write_text(
        f"name: tiny\ndataset: {{name: {root / 'data'}, split: val}}\neval_images: 10\n"
        "pgd_steps: 2\nsquare: {images: 10, queries: 3, eps: 8/255}\n"
        "models:\n"
        "  t_vanilla: {config: configs/tiny.yaml, overrides: [procedure.name=vanilla]}\n"
        "  t_fixed: {config: configs/tiny.yaml, overrides: [procedure.name=fixed]}\n"
        "tables:\n"
        "  table1: {title: noise, suite: noise, models: [t_vanilla, t_fixed]}\n"
        "  table5: {title: clean, suite: clean, models: [t_vanilla, t_fixed]}\n"
        "  table2: {title: adv, suite: adversarial, models: [t_vanilla, t_fixed],\n"
        "           eps_conventions: [pixel, normalized], square_models: [t_fixed]}\n")
    return root, load_plan(configs / "plan.yaml")


def test_tiny_reproduction_end_to_end_and_resume(tiny_plan):
    root, plan = tiny_plan
    from virolbi.train import train
    calls = []

    def counting_train(cfg):
        calls.append(cfg["name"])
        return train(cfg)
    work, out = root / "work", root / "tables"
    paths = run_tables(plan, ["table1", "table5"], work, out, progress=False,
                       train_fn=counting_train)
    assert sorted(calls) == ["t_fixed", "t_vanilla"]
    cells = json.loads((out / "table1.json").read_text())["cells"]
    gauss = [c for c in cells if c["perturbation"] == "gaussian_noise"]
    assert {c["procedure"] for c in gauss} == {"vanilla", "fixed"}
    for c in gauss:
        assert c["n"] == 10 * 5                      # 10 images x 5 severities, pooled
        lo, hi = c["ci95"]
        assert lo <= c["accuracy"] <= hi
        assert c["paper"] == (75.34 if c["with_preprocessing"] else 23.91) or c["procedure"] != "fixed"
        assert c["preprocessing"] == ("ViRoLBI(sparsity=0.6)" if c["with_preprocessing"] else "none")
    md = paths["table1"].read_text()
    assert "paper 45.90" in md and "paper 72.57" in md and (out / "table1.png").stat().st_size > 0
    models = json.loads((out / "models.json").read_text())["models"]
    assert {m["model"] for m in models} == {"t_vanilla", "t_fixed"}
    assert all(m["n"] == 10 and m["ci95"][0] <= m["val_acc"] <= m["ci95"][1] for m in models)
    t5 = json.loads((out / "table5.json").read_text())["cells"]
    assert {c["procedure"]: c["paper"] for c in t5 if not c["with_preprocessing"]} == {
        "vanilla": 95.29, "fixed": 93.82}
    pre = {c["procedure"]: c["preprocessing"] for c in t5 if c["with_preprocessing"]}
    assert pre == {"fixed": "ViRoLBI(sparsity=0.6)"}   # Vanilla: no smoothing (level 1)
    # resumable: nothing is trained or evaluated again; one lost evaluation is redone alone
    result = work / "eval" / "noise" / "t_fixed" / "results.json"
    stamp = (work / "eval" / "noise" / "t_vanilla" / "results.json").stat().st_mtime_ns
    result.unlink()
    run_tables(plan, ["table1"], work, out, progress=False, train_fn=counting_train)
    assert len(calls) == 2 and result.is_file()
    assert (work / "eval" / "noise" / "t_vanilla" / "results.json").stat().st_mtime_ns == stamp
    assert not list(work.rglob("partial-evaluation.json"))    # resume files go once cells are done


def test_tiny_adversarial_table_with_conventions_and_square(tiny_plan):
    pytest.importorskip("art")
    root, plan = tiny_plan
    work, out = root / "work2", root / "tables2"
    run_tables(plan, ["table2"], work, out, progress=False)
    cells = json.loads((out / "table2.json").read_text())["cells"]
    convs = {(c["convention"], c["threat_model"]) for c in cells if c["attack"] == "pgd"}
    assert ("normalized", "adaptive_bpda_partition") in convs and ("pixel", "classifier") in convs
    square = [c for c in cells if c["threat_model"] == "gradient_free"]
    assert len(square) == 1 and square[0]["procedure"] == "fixed" and square[0]["n"] == 10
    worst = [c for c in cells if c["threat_model"] == "worst_case"]
    adaptive = [c["accuracy"] for c in cells if c["procedure"] == "fixed" and c["attack"] == "pgd"
                and c["level"] == "8/255" and c["convention"] == "pixel"
                and c["threat_model"].startswith("adaptive")]
    assert worst[0]["accuracy"] == min(adaptive + [square[0]["accuracy"]])
    paper = {c["threat_model"]: c["paper"] for c in cells if c["procedure"] == "vanilla"
             and c["row"] == "PGD 8/255 (pixel)"}
    assert paper["classifier"] == 37.95 and paper["preprocess_after"] == 49.45
    assert "Square on f(P(x))" in (out / "table2.md").read_text()
    # an interrupted run: without one model's normalized cell the table names the models it used
    import shutil
    partial = root / "work2_partial"
    shutil.copytree(work, partial)
    shutil.rmtree(partial / "eval" / "adversarial-normalized" / "t_vanilla")
    files_before = sorted(p for p in partial.rglob("*") if p.is_file())
    run_tables(plan, ["table2"], partial, root / "tables_partial", progress=False, write_only=True)
    assert sorted(p for p in partial.rglob("*") if p.is_file()) == files_before  # computed nothing
    cells = json.loads((root / "tables_partial" / "table2.json").read_text())["cells"]
    normalized = {c["procedure"] for c in cells if c["convention"] == "normalized"}
    assert normalized == {"fixed"}


def test_steps_run_the_first_convention_then_square_then_the_rest(tiny_plan):
    from virolbi.reproduce.runner import _steps

    _, plan = tiny_plan
    assert _steps(plan, ["table2"]) == [
        ("table2", "t_vanilla", "pixel"), ("table2", "t_fixed", "pixel"),
        ("table2", "t_fixed", "square"),
        ("table2", "t_vanilla", "normalized"), ("table2", "t_fixed", "normalized")]


def test_a_larger_square_budget_attacks_only_the_new_images(tiny_plan, monkeypatch):
    pytest.importorskip("art")
    import dataclasses

    import torch

    import virolbi.attacks.square as square_module
    from virolbi.data.subset import balanced_subset
    from virolbi.io import load_json
    from virolbi.reproduce.runner import eval_dataset
    from virolbi.reproduce.square_cell import square_cell, square_cell_done

    root, plan = tiny_plan
    work, data = root / "work_square", eval_dataset(plan, 10)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    attacked: list[int] = []
    real = square_module.square_attack

    def counting(model, x, *args, **kwargs):
        attacked.append(len(x))
        return real(model, x, *args, **kwargs)
    monkeypatch.setattr(square_module, "square_attack", counting)
    small = dataclasses.replace(plan, square={**plan.square, "images": 5})
    full = dataclasses.replace(plan, square={**plan.square, "images": 10})
    square_cell(small, "t_fixed", model, data, work, chunk=3)
    assert attacked == [3, 2] and square_cell_done(small, work, "t_fixed", 10)
    assert not square_cell_done(full, work, "t_fixed", 10)
    path = square_cell(full, "t_fixed", model, data, work, chunk=3)
    assert attacked == [3, 2, 3, 2]                 # the 5 finished images are not attacked again
    chunks = [load_json(p) for p in sorted(path.parent.glob("chunk_*.json"))]
    images = [i for c in chunks for i in c["indices"]]
    assert sorted(images) == balanced_subset(np.asarray(data.targets), 10, plan.eval_seed).tolist()
    row = load_json(path)["rows"][0]
    assert row["n"] == 10 and row["correct"] == sum(c["correct"] for c in chunks)
    assert row["params"]["queries"] == plan.square["queries"] and row["preprocessing"] != "none"
    square_cell(full, "t_fixed", model, data, work, chunk=3)
    assert len(attacked) == 4                       # done: nothing runs again
    # drawn from another pool of evaluation images, the positions name other images: redone
    pool9 = eval_dataset(plan, 9)
    assert not square_cell_done(full, work, "t_fixed", 9)
    square_cell(dataclasses.replace(plan, square={**plan.square, "images": 9}), "t_fixed", model,
                pool9, work, chunk=3)
    assert attacked[4:] == [3, 3, 3]
    assert load_json(path)["meta"] == {"model": "t_fixed", "images": 9, "pool": 9}


def test_reproduce_errors(tiny_plan, tmp_path):
    _, plan = tiny_plan
    with pytest.raises(InputError, match="unknown table"):
        run_tables(plan, ["table9"], tmp_path, tmp_path, progress=False)
    with pytest.raises(InputError, match="no shipped weights for t_vanilla"):
        run_tables(plan, ["table1"], tmp_path, tmp_path, pretrained=True, progress=False)
    with pytest.raises(InputError, match="not found"):
        load_plan(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(plan.path.read_text().replace("suite: clean,", "suite: clean, eval_images: 3,"))
    with pytest.raises(InputError, match="table5.eval_images must be an integer >= 10, got 3"):
        load_plan(bad)
    bad.write_text(plan.path.read_text().replace("overrides: [procedure.name=fixed]}",
                                                 "overrides: [procedure.name=fixed], eot_samples: 0}"))
    with pytest.raises(InputError, match="t_fixed.eot_samples must be an integer >= 1, got 0"):
        load_plan(bad)
    bad.write_text(plan.path.read_text().replace("eps: 8/255}", "eps: 8/255, pool: 5}"))
    with pytest.raises(InputError, match=r"square.pool must be an integer >= square.images \(10\), got 5"):
        load_plan(bad)


def test_wilson_interval_against_reference_values():
    # reference: Wilson (1927) interval, values from statsmodels' proportion_confint(method="wilson")
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    from scipy.stats import binomtest          # an independent implementation
    for k, n in [(0, 10), (10, 10), (1789, 2000), (3, 7)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-6)
    assert wilson_interval(0, 1000)[0] == 0.0 and wilson_interval(1000, 1000)[1] == 1.0
    for k in range(0, 31):  # the estimate always lies inside its interval, even after rounding
        lo, hi = wilson_interval(k, 30)
        assert lo <= k / 30 <= hi
    p = pooled([(1800, 2000), (1780, 2000)])
    assert p["accuracy"] == pytest.approx(0.895) and p["n"] == 4000
    assert np.allclose(p["parts"], [0.9, 0.89])


def test_shipped_plan_parses():
    plan = load_plan(ROOT / "configs/reproduce/cifar10_fast.yaml")
    assert set(plan.tables) >= {"table1", "table3", "table4", "table5"}
    assert plan.eval_images >= 2000
    assert all(plan.images_of(t) == plan.eval_images for t in plan.tables)   # the issue: >= 2 000
    assert plan.square["images"] >= 500 and plan.square["pool"] <= plan.eval_images
    seeds = [m for m in plan.models if m.startswith(("fast_cifar10_vanilla", "fast_cifar10_fixed_",
                                                      "fast_cifar10_iterative"))]
    assert len(seeds) == 6                           # two seeds each


def test_baseline_defences_have_their_own_columns_and_paper_figures():
    from virolbi.reproduce.plan import procedure_key
    from virolbi.reproduce.tables import _paper

    plan = load_plan(ROOT / "configs/reproduce/cifar10_fast.yaml")
    keys = {m: procedure_key(plan.models[m]) for m in plan.tables["table8"].models}
    assert keys["fast_cifar10_fast_at_s0"] == "fast_at" and keys["fast_cifar10_awp_s0"] == "awp"
    assert keys["fast_cifar10_pni_s0"] == "pni" and keys["fast_cifar10_fixed_s0"] == "fixed"
    assert keys["fast_cifar10_tv_layer_s0"] == "tv_layer" and keys["fast_cifar10_pgd_at_s0"] == "pgd_at"
    assert "fast_cifar10_tv_layer_s0" in plan.tables["table1"].models  # the paper's Table 1 column
    assert plan.models["fast_cifar10_pni_s0"].eot_samples > 1          # a random model: EOT
    assert plan.images_of("table8") == plan.images_of("table2")         # they share cells
    assert _paper("table8", "8/255", "pni", True) == 51.21
    assert _paper("table8", "8/255", "awp", False) == 55.30
    assert _paper("table8", "8/255", "awp", True) is None
    assert _paper("table1", "gaussian_noise", "tv_layer", False) == 49.97      # the paper's Table 1
    assert _paper("table1", "impulse_noise", "tv_layer", True) == 59.15


def test_a_cell_evaluated_on_other_images_is_not_reused(tiny_plan, tmp_path):
    from virolbi.io import save_json
    from virolbi.reproduce.runner import cell_dir, evaluate_cell

    _, plan = tiny_plan
    out = cell_dir(tmp_path, "noise", "t_vanilla")
    save_json({"rows": [], "sanity": [], "meta": {"eval_images": 1000}}, out / "results.json")
    with pytest.raises(InputError, match="evaluated on 1000 images but this table asks for 10"):
        evaluate_cell(plan, "t_vanilla", "noise", None, list(range(10)), tmp_path, {})


def test_write_only_on_a_work_dir_without_evaluations_is_refused(tmp_path, capsys):
    """Issue #30 item 7: `reproduce table8 --write-only` on an empty work dir wrote a table with
    no column (a malformed Markdown table) and exited 0."""
    from virolbi.cli import main

    work, out = tmp_path / "work", tmp_path / "tables"
    code = main(["reproduce", "table8", "--write-only", "--work-dir", str(work),
                 "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"virolbi reproduce: error: --write-only: --work-dir {work} holds no "
                          "evaluation for table8")
    assert not out.exists() and not work.exists()
