"""The gradient-free cell of a reproduction (Tables 2 and 8): the Square attack on the whole
pipeline, smoothing + classifier (Blur models: their blur), at the plan's ``square`` settings.

The attack runs chunk by chunk of images; every chunk is a file that names its images, its seed
and its count of images still classified correctly. An interrupted cell continues with the
chunks it lacks, and a larger image budget (``square.images``) reuses every finished chunk: the
class-stratified subsets of :func:`~virolbi.data.subset.balanced_subset` are nested (the images of
a budget of 250 are among those of 500, for the same seed), so only the new images are attacked.
Chunk indices are positions in the pool of evaluation images the Square images are drawn from
(``square.pool``, default the table's images); every chunk and the cell record that pool, and
chunks of another pool are never reused (their positions would name other images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from virolbi.reproduce.plan import Plan

__all__ = ["square_cell", "square_cell_done", "square_pool"]


def square_pool(plan: Plan, table_images: int) -> int:
    """How many evaluation images the Square images are drawn from (``square.pool`` or the
    table's number)."""
    return int(plan.square.get("pool") or table_images)


def square_cell_done(plan: Plan, work: Path, name: str, table_images: int) -> bool:
    """Whether the model's Square cell exists for the plan's current image budget and pool."""
    from virolbi.io import load_json
    from virolbi.reproduce.runner import cell_dir

    path = cell_dir(work, "square", name, "pixel") / "results.json"
    if not path.is_file():
        return False
    meta = load_json(path)["meta"]
    return (meta.get("images") == plan.square["images"]
            and meta.get("pool") == square_pool(plan, table_images))


def _finished_chunks(out: Path, wanted: set[int], pool: int) -> list[dict[str, Any]]:
    """The chunk files in ``out`` drawn from ``pool`` images whose images are all wanted,
    pairwise disjoint (a chunk that overlaps one already taken is ignored and its images are
    attacked again)."""
    from virolbi.io import load_json

    taken: list[dict[str, Any]] = []
    covered: set[int] = set()
    for path in sorted(out.glob("chunk_*.json")):
        chunk = load_json(path)
        images = set(chunk.get("indices", ()))
        if chunk.get("pool") == pool and images and images <= wanted and not images & covered:
            taken.append(chunk)
            covered |= images
    return taken


def _attack_chunk(model: nn.Module, pre: Any, data: Any, images: np.ndarray, cfg: dict,
                  out: Path) -> dict[str, Any]:
    """Square on the pipeline for one chunk of dataset positions; the chunk record (written)."""
    from virolbi.attacks.square import square_attack
    from virolbi.io import save_json

    seed = int(images[0])
    x, y = data.get_batch(images)
    x = x.float() / 255.0
    x_adv = square_attack(model, x, y, cfg["eps"], cfg["queries"], seed=seed, preprocess=pre)
    with torch.no_grad():
        pred = model(pre(x_adv) if pre is not None else x_adv).argmax(1)
    chunk = {"indices": [int(i) for i in images], "pool": len(data), "seed": seed,
             "correct": int((pred == y).sum()), "n": int(y.numel())}
    save_json(chunk, out / f"chunk_{seed:05d}_{len(images):03d}.json")
    return chunk


def square_cell(plan: Plan, name: str, model: nn.Module, data: Any, work: Path,
                chunk: int = 100) -> Path:
    """Square (L∞, ``plan.square``: images, queries, ε on [0, 1] pixels) on the model's pipeline,
    resumable by chunks of ``chunk`` images; the path of the cell's results.json. ``data`` is the
    pool: the plan's first :func:`square_pool` evaluation images."""
    from virolbi.attacks.square import PerImageCache, square_params
    from virolbi.data.subset import balanced_subset
    from virolbi.evaluate.harness import Results, Row, _preprocess_name
    from virolbi.evaluate.report import save_results
    from virolbi.evaluate.suites import GRADIENT_FREE, level_label
    from virolbi.reproduce.runner import _preprocess_for, cell_dir

    cfg = plan.square
    out = cell_dir(work, "square", name, "pixel")
    if square_cell_done(plan, work, name, len(data)):
        return out / "results.json"
    out.mkdir(parents=True, exist_ok=True)
    pre = _preprocess_for(plan, name, "adversarial", {})
    pre = pre.inner if isinstance(pre, PerImageCache) else pre
    idx = balanced_subset(np.asarray(data.targets), cfg["images"], plan.eval_seed)
    chunks = _finished_chunks(out, set(idx.tolist()), len(data))
    covered = {i for c in chunks for i in c["indices"]}
    todo = np.asarray([i for i in idx if int(i) not in covered], dtype=np.int64)
    for start in range(0, len(todo), chunk):
        chunks.append(_attack_chunk(model, pre, data, todo[start:start + chunk], cfg, out))
    correct = sum(c["correct"] for c in chunks)
    row = Row("square", level_label(cfg["eps"]), GRADIENT_FREE,
              _preprocess_name(pre) if pre is not None else "none", correct / len(idx), correct,
              len(idx), "adversarial", cfg["eps"],
              {**square_params(cfg["queries"]), "eps_convention": "pixel"})
    save_results(Results(rows=[row], sanity=[], meta={"model": name, "images": len(idx),
                                                              "pool": len(data)}),
                 out / "results.json")
    return out / "results.json"
