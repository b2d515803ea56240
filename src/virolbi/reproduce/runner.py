"""Run a reproduction plan: obtain every model a table needs (train it, resuming, or load the shipped
weights), evaluate it on the plan's images, and write the table.

Everything is resumable: a training continues from its last epoch (the trainer's ``last.pt``), an
evaluation already written (``<work>/eval/<suite>/<model>/results.json``) is read back, so an
interrupted ``virolbi reproduce`` continues where it stopped; an evaluation interrupted midway
continues from its last finished batch (``<work>/eval/<suite>/<model>/partial-evaluation.json``,
:mod:`virolbi.evaluate.partial`), with the numbers of an uninterrupted run. Test-time smoothing of perturbed
images that do not depend on the model (noise, low resolution, frequency) is computed once and
shared by all models of a run (a :class:`~virolbi.attacks.square.PerImageCache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from virolbi.attacks.square import PerImageCache
from virolbi.errors import InputError
from virolbi.reproduce.plan import Plan, procedure_key

__all__ = ["obtain_model", "eval_dataset", "evaluate_cell", "run_tables"]


def eval_dataset(plan: Plan, n_images: int | None = None, exclude: int | None = None) -> Any:
    """The plan's evaluation images: a class-stratified, seeded subset of its split (``n_images``
    of them; default the plan's number). With ``exclude``, only the images of that subset that are
    not in the (nested) subset of ``exclude`` images: the part that extends a smaller evaluation."""
    from virolbi.data import load_dataset
    from virolbi.data.subset import balanced_subset

    ds = load_dataset(plan.dataset.get("name", "cifar10-jpeg"), plan.dataset.get("split", "val"),
                      data_dir=plan.dataset.get("data_dir"))
    n = n_images or plan.eval_images
    targets = np.asarray(ds.targets)
    idx = balanced_subset(targets, n, plan.eval_seed)
    what = f"{len(idx)} images, stratified, seed {plan.eval_seed}"
    if exclude:
        idx = idx[~np.isin(idx, balanced_subset(targets, exclude, plan.eval_seed))]
        what = f"the {len(idx)} images of the stratified {n} (seed {plan.eval_seed}) not in its {exclude}"
    sub = ds.subset(idx)
    sub.name = f"{getattr(ds, 'name', 'data')} ({what})"
    return sub


def obtain_model(plan: Plan, name: str, work: Path, pretrained: bool,
                 train_fn: Callable[[dict], Any] | None = None) -> nn.Module:
    """The trained model ``name``: the shipped weights (``pretrained``) or the run in
    ``work/runs/name``, trained first (resuming) when it is not finished."""
    if pretrained:
        from virolbi.zoo import load_weights

        return load_weights(name)[0]
    from virolbi.zoo.export import model_from_run

    run_dir = work / "runs" / name
    if not (run_dir / "model.pt").is_file():
        cfg = plan.models[name].resolved(run_dir)
        cfg["resume"] = True
        if train_fn is None:
            from virolbi.train import train as train_fn
        train_fn(cfg)
    return model_from_run(run_dir)[0]


def _preprocess_for(plan: Plan, name: str, suite: str, shared: dict[str, nn.Module]) -> nn.Module:
    """Blur models: their own blur; clean-only tables: smoothing at the model's own training
    level (none for Vanilla); otherwise smoothing at the plan's test-time level (memoized)."""
    from virolbi.perturb import GaussianBlur, blur_params_for
    from virolbi.smoother import ViRoLBI

    key = procedure_key(plan.models[name]).split("+")[0]
    if key == "blur":
        return GaussianBlur(*blur_params_for(32))
    level = plan.test_time_sparsity
    if suite == "clean" and key.startswith("fixed"):   # "fixed" is 0.6, whatever the plan's level
        level = float(plan.models[name].resolved()["procedure"]["sparsity"])
    if suite == "clean" and key == "vanilla":
        return None
    tag = f"smooth{level:g}"
    if tag not in shared:
        shared[tag] = PerImageCache(ViRoLBI(sparsity=level), capacity=1 << 17)
    return shared[tag]


def _suite_specs(suite: str) -> Any:
    from virolbi.evaluate import get_suite

    return get_suite("noise")[:1] if suite == "clean" else suite


def cell_dir(work: Path, suite: str, name: str, convention: str | None = None) -> Path:
    """Where one model's evaluation on one suite (and ε convention) is written."""
    return work / "eval" / (f"{suite}-{convention}" if convention else suite) / name


def cell_images(path: Path) -> int | None:
    """How many images the cell at ``path`` (its results.json) was evaluated on; None if unknown."""
    from virolbi.io import load_json

    seen = load_json(path).get("meta", {}).get("eval_images")
    return None if seen is None else int(seen)


def cell_done(path: Path, n_images: int) -> bool:
    """Whether the cell at ``path`` is evaluated on exactly ``n_images`` images."""
    return path.is_file() and cell_images(path) in (None, n_images)


def _check_cell_images(path: Path, seen: int | None, n_images: int) -> None:
    """A cell already evaluated (on ``seen`` images) is reused only when it saw the same number of
    images (cells are shared between tables, e.g. Table 2 and Table 8); one on fewer images is
    extended instead."""
    if seen is not None and seen > n_images:
        raise InputError(f"{path} was evaluated on {seen} images but this table asks for "
                         f"{n_images}: give the tables that share a model the same eval_images, "
                         "or move the old cell away")


def _evaluate_images(plan: Plan, name: str, suite: str, model: nn.Module, data: Any, out: Path,
                     shared: dict[str, nn.Module], progress: bool, convention: str | None) -> Any:
    """Run the suite on ``data`` and write the report to ``out``; the Results."""
    from virolbi.evaluate import evaluate, write_report
    from virolbi.evaluate.harness import _preprocess_name
    from virolbi.evaluate.partial import RESUME_FILE

    pre = _preprocess_for(plan, name, suite, shared)
    inner = pre.inner if isinstance(pre, PerImageCache) else pre
    if suite == "adversarial":
        pre = inner
    meta = {"model": name, "plan": str(plan.path.name), "procedure": procedure_key(plan.models[name]),
            "eval_images": len(data), "eval_seed": plan.eval_seed}
    results = evaluate(model, data, suite=_suite_specs(suite), preprocess=pre,
                       preprocess_name=_preprocess_name(inner) if inner is not None else None,
                       batch_size=250, seed=plan.eval_seed, progress=progress, sanity=True,
                       meta=meta, eps_convention=convention or "pixel", pgd_steps=plan.pgd_steps,
                       eot_samples=plan.models[name].eot_samples,
                       resume_file=out / RESUME_FILE)
    write_report(results, out)
    return results


def _part_chain(parts: Path, n_images: int) -> list[Path]:
    """The parts ``images-<a>-<b>`` that tile the images 0..``n_images`` (each starting where the
    previous ends, the longest that fits), so that a stale part can never be counted twice."""
    by_start: dict[int, dict[int, Path]] = {}
    for path in parts.glob("images-*-*/results.json"):
        try:
            a, b = (int(v) for v in path.parent.name.split("-")[1:])
        except ValueError:
            continue
        by_start.setdefault(a, {})[b] = path
    chain, at = [], 0
    while at < n_images:
        ends = [b for b in by_start.get(at, {}) if at < b <= n_images]
        if not ends:
            raise InputError(f"{parts}: no evaluated part starts at image {at} of {n_images}")
        chain.append(by_start[at][max(ends)])
        at = max(ends)
    return chain


def _extend_cell(plan: Plan, name: str, suite: str, model: nn.Module, seen: int, n_images: int,
                 out: Path, shared: dict[str, nn.Module], progress: bool,
                 convention: str | None) -> None:
    """Extend a cell evaluated on fewer images to ``n_images``: the stratified subsets are nested,
    so only the images not yet evaluated are, as a part in ``out/parts/images-<a>-<b>``; the
    parts are then merged (:func:`~virolbi.evaluate.merge.merge_results`) into ``out``. The
    cell's results.json stays valid until the merged one replaces it; finished parts are reused."""
    import shutil

    from virolbi.evaluate import write_report
    from virolbi.evaluate.merge import merge_results
    from virolbi.evaluate.report import load_results
    from virolbi.io import load_json

    meta = load_json(out / "results.json").get("meta", {})
    if meta.get("eval_seed") != plan.eval_seed:
        raise InputError(f"{out / 'results.json'} does not record the images it was evaluated on "
                         f"(eval_images, eval_seed {plan.eval_seed}): move it away to evaluate "
                         f"{n_images} images afresh")
    parts = out / "parts"
    first = parts / f"images-0-{seen}"
    if "parts" not in meta and not (first / "results.json").is_file():
        first.mkdir(parents=True, exist_ok=True)      # the unmerged cell becomes the first part
        shutil.copy2(out / "results.json", first / "results.json")
    part = parts / f"images-{seen}-{n_images}"
    if not (part / "results.json").is_file():
        data = eval_dataset(plan, n_images, exclude=seen)
        _evaluate_images(plan, name, suite, model, data, part, shared, progress, convention)
    write_report(merge_results([load_results(p) for p in _part_chain(parts, n_images)]), out)


def evaluate_cell(plan: Plan, name: str, suite: str, model: nn.Module, data: Any, work: Path,
                  shared: dict[str, nn.Module], progress: bool = True,
                  convention: str | None = None) -> Path:
    """Evaluate one model on one suite (skipped when its results exist); the results.json path.

    ``data`` is the plan's ``eval_dataset`` of ``len(data)`` images. A cell already evaluated on
    fewer of them is extended with the others (:func:`_extend_cell`), not redone. Adversarial
    suites run in the given ε convention with the plain (uncached) preprocessor: their inputs
    depend on the model, so nothing can be shared.
    """
    out = cell_dir(work, suite, name, convention)
    if (out / "results.json").is_file():
        seen = cell_images(out / "results.json")
        _check_cell_images(out / "results.json", seen, len(data))
        if seen is not None and seen < len(data):
            _extend_cell(plan, name, suite, model, seen, len(data), out, shared, progress,
                         convention)
        return out / "results.json"
    _evaluate_images(plan, name, suite, model, data, out, shared, progress, convention)
    return out / "results.json"


def _steps(plan: Plan, tables: list[str]) -> list[tuple[str, str, str | None]]:
    """(table, model, convention or "square") in the order they run: per table its first ε
    convention for every model, then Square, then the other conventions, so that an interrupted
    Table 2 has the honest (pixel) numbers and the gradient-free check first."""
    steps = []
    for t in tables:
        spec = plan.tables[t]
        convs = spec.conventions or (None,)
        steps += [(t, m, convs[0]) for m in spec.models]
        steps += [(t, m, "square") for m in spec.square_models]
        steps += [(t, m, c) for c in convs[1:] for m in spec.models]
    return steps


def run_tables(plan: Plan, tables: list[str], work: Path, out_dir: Path, *,
               pretrained: bool = False, progress: bool = True,
               train_fn: Callable[[dict], Any] | None = None,
               write_only: bool = False) -> dict[str, Path]:
    """Do every step the tables need, then write them; returns table name -> Markdown path.
    With ``write_only``, compute nothing: write the tables from the evaluations present (cells not
    evaluated are left out of the table, which names the models behind every figure)."""
    from tqdm.auto import tqdm

    from virolbi.reproduce.square_cell import square_cell, square_cell_done, square_pool
    from virolbi.reproduce.tables import write_models_table, write_table

    unknown = [t for t in tables if t not in plan.tables]
    if unknown:
        raise InputError(f"unknown table(s) {', '.join(unknown)}; the plan {plan.path.name} has "
                         f"{', '.join(plan.tables)}")
    if pretrained and not write_only:
        from virolbi.zoo import list_weights

        missing = [m for m in plan.models_of(tables) if m not in list_weights()]
        if missing:
            raise InputError(f"--pretrained: no shipped weights for {', '.join(missing)}; run "
                             "without --pretrained to train them")
    steps = [] if write_only else _steps(plan, tables)
    data, shared, models = {}, {}, {}
    bar = tqdm(steps, desc="reproduce", unit="step", disable=None if progress else True)
    for table, name, conv in bar:
        suite = plan.tables[table].suite
        bar.set_postfix_str(f"{table} {name} {conv or ''}", refresh=True)
        n_img = plan.images_of(table)
        if conv == "square":
            n_img = square_pool(plan, n_img)
        done = (square_cell_done(plan, work, name, n_img) if conv == "square"
                else cell_done(cell_dir(work, suite, name, conv) / "results.json", n_img))
        if done:
            continue
        if name not in models:
            models[name] = obtain_model(plan, name, work, pretrained, train_fn)
        data[n_img] = data[n_img] if n_img in data else eval_dataset(plan, n_img)
        if conv == "square":
            square_cell(plan, name, models[name], data[n_img], work)
        else:
            evaluate_cell(plan, name, suite, models[name], data[n_img], work, shared,
                          progress=False, convention=conv)
    bar.close()
    written = {t: write_table(plan, t, work, out_dir) for t in tables}
    written["models"] = write_models_table(plan, work, out_dir)
    return written
