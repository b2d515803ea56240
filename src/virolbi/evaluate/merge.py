"""Merge evaluations of the same model and suite on disjoint image sets into one: every row's
counts are summed, so a merged accuracy is exactly what one run on the union would give wherever
the perturbation is deterministic (and an equally valid draw where it is random: PGD starts and
noise come from per-(perturbation, level) generators, so each part draws its own)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from virolbi.errors import InputError
from virolbi.evaluate.results import Results, Row
from virolbi.evaluate.sanity_plan import plan_sanity, sanity_checks

__all__ = ["merge_results", "MERGE_MUST_AGREE"]

#: The metadata that defines what a row means: parts that differ in any of them are not merged.
MERGE_MUST_AGREE = ("suite", "model", "preprocess", "eps_convention", "attacks", "seed",
                    "image_size", "eval_seed", "procedure")


def _setting(meta: dict[str, Any], key: str) -> Any:
    """``meta[key]``; for ``attacks``, with ``eot_samples: 1`` where it is not recorded (results
    written before EOT existed attacked with one sample)."""
    value = meta.get(key)
    if key == "attacks" and isinstance(value, dict):
        value = {name: {"eot_samples": 1, **spec} if isinstance(spec, dict) else spec
                 for name, spec in value.items()}
    return value


def _check_parts_agree(parts: Sequence[Results]) -> None:
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        for key in MERGE_MUST_AGREE:
            if _setting(first.meta, key) != _setting(part.meta, key):
                raise InputError(f"cannot merge evaluations: part {i} has {key} = "
                                 f"{part.meta.get(key)!r} but part 0 has {first.meta.get(key)!r}")


def _merged_rows(parts: Sequence[Results]) -> list[Row]:
    """Every row of any part, its counts summed over the parts that have it (a row a later
    version of the suite added is on fewer images: its ``n`` says so)."""
    keys = list(dict.fromkeys(r.key for p in parts for r in p.rows))
    rows = []
    for key in keys:
        counts = [p[key] for p in parts if key in p]
        row = counts[0]
        if any(r.params != row.params for r in counts):
            raise InputError(f"cannot merge evaluations: row {row.key} has other parameters "
                             "in another part")
        correct, n = sum(r.correct for r in counts), sum(r.n for r in counts)
        rows.append(dataclasses.replace(row, correct=correct, n=n, accuracy=correct / n))
    return rows


def _merged_meta(parts: Sequence[Results], rows: list[Row], n: int) -> dict[str, Any]:
    meta = dict(parts[0].meta)
    fields = ("dataset", "n", "git_commit", "created", "elapsed_s")
    meta["parts"] = [{k: p.meta.get(k) for k in fields} for p in parts]
    partial = [{"row": list(r.key), "n": r.n} for r in rows if r.n < n and r.group != "sanity"]
    if partial:
        meta["rows_on_fewer_images"] = partial
    meta.update(n=n, dataset_size=n, eval_images=n,
                elapsed_s=round(sum(float(p.meta.get("elapsed_s") or 0) for p in parts), 3),
                dataset=f"{len(parts)} disjoint parts, {n} images: see meta.parts")
    return meta


def merge_results(parts: Sequence[Results]) -> Results:
    """One :class:`Results` for the union of disjoint image sets evaluated separately.

    Rows with the same key (perturbation, level, threat model, preprocessing) add their
    ``correct`` and ``n``; the sanity checks (Carlini et al. 2019, §5) are recomputed from the
    merged rows; ``meta.parts`` records each part's dataset, size, commit and time. Parts must
    agree on every field of :data:`MERGE_MUST_AGREE`, else :class:`InputError`. A row that only
    some parts have (the suite gained a threat model between them) keeps the counts of those
    parts and is listed in ``meta.rows_on_fewer_images``.
    """
    if not parts:
        raise InputError("cannot merge evaluations: no parts given")
    _check_parts_agree(parts)
    rows = _merged_rows(parts)
    n = sum(int(p.meta.get("n", 0)) for p in parts)
    sanity = []
    if any(p.sanity for p in parts):
        pgd_steps = int(parts[0].meta["attacks"]["pgd"]["steps"])
        by_key = {r.key: r for r in rows}
        sanity = sanity_checks(by_key, plan_sanity(rows, pgd_steps), pgd_steps, n)
    return Results(rows=rows, sanity=sanity, meta=_merged_meta(parts, rows, n))
