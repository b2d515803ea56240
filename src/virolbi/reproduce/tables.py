"""Write one reproduced table (Markdown, JSON, PNG) from the evaluation results of its models.

Columns are procedures (Vanilla, Blur, Fix, Iterative, or the Fix levels of Table 5); models of
the same procedure trained with different seeds are pooled: a cell gives the pooled accuracy, its
95 % Wilson interval, every seed's accuracy (the spread) and the paper's figure. Rows pool over
severities where the paper averages them (Table 1). Every cell names its test-time preprocessing.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

from virolbi.reproduce.paper import PAPER
from virolbi.reproduce.plan import Plan, procedure_key
from virolbi.reproduce.stats import pooled

__all__ = ["write_table", "write_models_table", "table_cells", "PROCEDURE_LABELS"]

THREAT_LABELS = {"classifier": "none (attack and classify f)",
                 "preprocess_after": "paper: attack f, classify f(P(x'))",
                 "adaptive_bpda_identity": "adaptive: BPDA identity through P",
                 "adaptive_bpda_partition": "adaptive: BPDA fixed partition through P",
                 "adaptive_exact": "adaptive: exact gradient through P (differentiable P: Blur)",
                 "gradient_free": "Square on f(P(x)) (no gradients)",
                 "worst_case": "lowest of the adaptive and gradient-free rows"}

PROCEDURE_LABELS = {"vanilla": "Vanilla", "blur": "Blur", "fixed": "Fix 0.6",
                    "iterative": "Iterative", "fast_at": "Fast AT", "pgd_at": "PGD AT",
                    "awp": "AWP", "sat": "SAT", "trades": "TRADES", "pni": "PNI", "tv_layer": "TV layer",
                    "cifs": "Fast AT + CIFS", "plain_stem": "plain stem"}

#: Per suite: the row keys (perturbation, level or None for all levels) in the paper's order.
_ROWS = {
    "noise": [("clean", "-"), ("gaussian_noise", None), ("shot_noise", None), ("impulse_noise", None),
              ("speckle_noise", None)],
    "lowres": [("low_resolution", "1/4"), ("low_resolution", "1/2")],
    "frequency": [("frequency", "high"), ("frequency", "low")],
    "clean": [("clean", "-")],
}


def _label(key: str) -> str:
    """A procedure key's row label; the parts of ``a+b`` keys are labelled one by one."""
    if "+" in key:
        return " + ".join(_label(part) for part in key.split("+"))
    return PROCEDURE_LABELS.get(key, f"Fix {key[len('fixed'):]}" if key.startswith("fixed") else key)


def _counts(results: Any, perturbation: str, level: str | None, with_pre: bool) -> tuple[int, int]:
    rows = [r for r in results.rows if r.perturbation == perturbation
            and (level is None or r.level == level) and r.threat_model == "none"
            and (r.preprocessing != "none") == with_pre]
    return sum(r.correct for r in rows), sum(r.n for r in rows)


def _paper(table: str, row: str, key: str, with_pre: bool) -> float | None:
    if table == "table5" and key == "fixed":
        key = "fixed0.6"                               # Table 5 names every level
    value = PAPER.get(table, {}).get(row, {}).get(key)
    if value is None:
        return None
    if table == "table5":
        return value[0]                                # (mean, std): the mean
    if isinstance(value, tuple):
        return value[1 if with_pre else 0]
    return None if with_pre else value


def _groups(plan: Plan, names: tuple[str, ...]) -> OrderedDict[str, list[str]]:
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for name in names:
        groups.setdefault(procedure_key(plan.models[name]), []).append(name)
    return groups


def _model_images(results: dict[str, Any], names: list[str]) -> dict[str, int | None]:
    """How many images each model's cell was evaluated on (its meta), by model name."""
    return {n: results[n].meta.get("eval_images") for n in names}


def _images_note(plan: Plan, table: str, cells: list[dict[str, Any]]) -> list[str]:
    """Sentences naming the models evaluated on another number of images than the table's (a
    cell not yet extended), and the figures on fewer images than their models' (a row the suite
    gained after the first part of an extended cell): each figure counts the images it had."""
    other = {m: k for c in cells for m, k in c.get("model_images", {}).items()
             if k is not None and k != plan.images_of(table)}
    short = Counter(f"{_label(c['procedure'])}, "
                    f"{THREAT_LABELS.get(c.get('threat_model'), c.get('threat_model'))}: {c['n']}"
                    for c in cells if c.get("model_images")
                    and None not in c["model_images"].values()
                    and c["n"] < sum(c["model_images"].values()))
    fewer = [f"{what} images ({k} row{'s' * (k > 1)})" for what, k in short.items()]
    lines = []
    if other:
        lines += ["", "Not yet on the table's images: " + ", ".join(
            f"{m} on {k}" for m, k in sorted(other.items())) + " (each figure counts the images it had)."]
    if fewer:
        lines += ["", "Figures on fewer images (a threat model added after the first images were "
                  "evaluated): " + "; ".join(fewer) + "."]
    return lines


def _threat_counts(results: Any, attack: str, level: str, threat: str) -> tuple[int, int]:
    rows = [r for r in results.rows if r.perturbation == attack and r.level == level
            and r.threat_model == threat]
    return sum(r.correct for r in rows), sum(r.n for r in rows)


def _adversarial_cells(plan: Plan, table: str, work: Path) -> list[dict[str, Any]]:
    """Table 2: attack x ε x convention x threat model, then Square and the pipeline's robustness
    (the lower of adaptive PGD and Square) at Square's ε on pixels."""
    from virolbi.evaluate.report import load_results
    from virolbi.reproduce.runner import cell_dir

    spec = plan.tables[table]
    groups = _groups(plan, spec.models)
    cells = []
    threats = ("classifier", "preprocess_after", "adaptive_bpda_identity", "adaptive_bpda_partition",
               "adaptive_exact")
    for conv in spec.conventions:  # cells not evaluated (yet) are left out, and say so by `models`
        paths = {n: cell_dir(work, "adversarial", n, conv) / "results.json" for n in spec.models}
        res = {n: load_results(p) for n, p in paths.items() if p.is_file()}
        for attack in ("fgsm", "pgd"):
            for level in ("8/255", "16/255"):
                for threat in threats:
                    for key, all_names in groups.items():
                        names = [n for n in all_names if n in res]
                        counts = [_threat_counts(res[n], attack, level, threat) for n in names]
                        if not any(k for _, k in counts):
                            continue
                        paper = None
                        if threat in ("classifier", "preprocess_after"):
                            paper = _paper(table, level, key, threat == "preprocess_after")
                        cells.append({"row": f"{attack.upper()} {level} ({conv})", "attack": attack,
                                      "level": level, "convention": conv, "threat_model": threat,
                                      "with_preprocessing": threat != "classifier",
                                      "procedure": key, "models": names, "paper": paper,
                                      "model_images": _model_images(res, names),
                                      **pooled([c for c in counts if c[1]])})
    return cells + _square_cells(plan, spec, work, cells)


def _square_cells(plan: Plan, spec: Any, work: Path, cells: list[dict]) -> list[dict[str, Any]]:
    from virolbi.evaluate.report import load_results
    from virolbi.evaluate.suites import level_label
    from virolbi.reproduce.runner import cell_dir

    level = level_label(plan.square["eps"])
    out = []
    for key, names in _groups(plan, spec.square_models).items():
        paths = [cell_dir(work, "square", n, "pixel") / "results.json" for n in names]
        if not all(p.is_file() for p in paths):
            continue
        counts = [(r.correct, r.n) for p in paths for r in load_results(p).rows]
        sq = {"row": f"Square {level} (pixel, {plan.square['queries']} queries)", "attack": "square",
              "level": level, "convention": "pixel", "threat_model": "gradient_free",
              "with_preprocessing": True, "procedure": key, "models": names, "paper": None,
              **pooled(counts)}
        out.append(sq)
        adaptive = [c for c in cells if c["procedure"] == key and c["attack"] == "pgd"
                    and c["level"] == level and c["convention"] == "pixel"
                    and c["threat_model"].startswith("adaptive")]
        worst = min(adaptive + [sq], key=lambda c: c["accuracy"])
        out.append({**worst, "row": f"pipeline robustness {level} (pixel): lowest of adaptive "
                                    "PGD and Square", "threat_model": "worst_case",
                    "source": worst["threat_model"]})
    return out


def table_cells(plan: Plan, table: str, work: Path) -> list[dict[str, Any]]:
    """One dict per (row, preprocessing, procedure) with the pooled statistics and the paper figure."""
    from virolbi.evaluate.report import load_results

    spec = plan.tables[table]
    if spec.suite == "adversarial":
        return _adversarial_cells(plan, table, work)
    groups = _groups(plan, spec.models)
    paths = {n: work / "eval" / spec.suite / n / "results.json" for n in spec.models}
    results = {n: load_results(p) for n, p in paths.items() if p.is_file()}  # evaluated ones only
    cells = []
    for perturbation, level in _ROWS[spec.suite]:
        row = level if spec.suite in ("lowres", "frequency") else perturbation
        for with_pre in (False, True):
            for key, all_names in groups.items():
                names = [n for n in all_names if n in results]
                counts = [_counts(results[n], perturbation, level, with_pre) for n in names]
                if not any(n for _, n in counts):
                    continue
                pres = {r.preprocessing for n in names for r in results[n].rows
                        if (r.preprocessing != "none") == with_pre}
                stats = pooled([c for c in counts if c[1]])
                cells.append({"row": row, "perturbation": perturbation, "level": level or "1-5",
                              "model_images": _model_images(results, names),
                              "preprocessing": sorted(pres)[0] if pres else "none",
                              "with_preprocessing": with_pre, "procedure": key, "models": names,
                              "paper": _paper(table, row if spec.suite != "clean" else "clean",
                                              key, with_pre), **stats})
    return cells


def tables_without_cells(plan: Plan, tables: list[str], work: Path) -> list[str]:
    """The tables of ``tables`` (names in the plan) that ``work`` holds no evaluation for: written,
    they would be a header without a column."""
    return [t for t in tables if t in plan.tables and not table_cells(plan, t, work)]


def _fmt(cell: dict[str, Any]) -> str:
    lo, hi = cell["ci95"]
    seeds = "/".join(f"{100 * p:.1f}" for p in cell["parts"])
    text = f"**{100 * cell['accuracy']:.1f}** [{100 * lo:.1f}, {100 * hi:.1f}]"
    if len(cell["parts"]) > 1:
        text += f" (seeds {seeds})"
    paper = cell["paper"]
    return text + (f"; paper {paper:.2f}" if paper is not None else "")


def _markdown(plan: Plan, table: str, cells: list[dict[str, Any]]) -> str:
    spec = plan.tables[table]
    keys = list(OrderedDict.fromkeys(c["procedure"] for c in cells))
    lines = [f"## {spec.title}", "",
             f"{plan.images_of(table)} validation images of {plan.dataset.get('name')} (class-"
             f"stratified, seed {plan.eval_seed}); accuracy in %, **pooled over seeds** "
             "[95 % Wilson interval] (each seed), then the paper's ResNet18 figure. "
             "Test-time preprocessing: smoothing at "
             f"{plan.test_time_sparsity:g} (Blur: its own blur; Table 5: each Fix model's own level).",
             *_images_note(plan, table, cells), "", "| row | test-time preprocessing | " + " | ".join(_label(k) for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    by_row: OrderedDict[tuple, dict[str, dict]] = OrderedDict()
    for c in cells:
        key = (c["row"], c.get("threat_model") or c["with_preprocessing"])
        by_row.setdefault(key, {})[c["procedure"]] = c
    for (row, how), group in by_row.items():
        pre = THREAT_LABELS.get(how, how) if isinstance(how, str) else ("yes" if how else "no")
        lines.append(f"| {row} | {pre} | " + " | ".join(
            _fmt(group[k]) if k in group else "–" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _figure(cells: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(OrderedDict.fromkeys((c["row"], c["with_preprocessing"]) for c in cells))
    keys = list(OrderedDict.fromkeys(c["procedure"] for c in cells))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) * len(keys) / 2), 4))
    width = 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        xs, ys, errs = [], [], []
        for i, r in enumerate(rows):
            c = next((c for c in cells if (c["row"], c["with_preprocessing"]) == r
                      and c["procedure"] == key), None)
            if c is None or math.isnan(c["accuracy"]):
                continue
            xs.append(i + j * width)
            ys.append(100 * c["accuracy"])
            errs.append([[max(0.0, 100 * (c["accuracy"] - c["ci95"][0]))],  # rounding can go
                         [max(0.0, 100 * (c["ci95"][1] - c["accuracy"]))]])   # below 0 at 0 %
        if xs:
            yerr = [[e[0][0] for e in errs], [e[1][0] for e in errs]]
            ax.bar(xs, ys, width, yerr=yerr, capsize=2, label=_label(key))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([f"{r}\n{'pre' if p else 'no pre'}" for r, p in rows], fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    from virolbi.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_table(plan: Plan, table: str, work: Path, out_dir: Path) -> Path:
    """Write ``<out_dir>/<table>.md``, ``.json`` and ``.png``; return the Markdown path."""
    from virolbi.io import save_json, save_text

    cells = table_cells(plan, table, work)
    out_dir = Path(out_dir)
    md = out_dir / f"{table}.md"
    save_text(_markdown(plan, table, cells), md)
    save_json({"table": table, "title": plan.tables[table].title, "plan": plan.path.name,
               "eval_images": plan.images_of(table), "cells": cells}, out_dir / f"{table}.json")
    _figure(cells, plan.tables[table].title, out_dir / f"{table}.png")
    return md


def _model_row(plan: Plan, name: str, work: Path) -> dict[str, Any] | None:
    """Validation accuracy and cost of one model: from its run folder, else the weights manifest."""
    from virolbi.io import load_json
    from virolbi.zoo import read_manifest

    metrics = work / "runs" / name / "metrics.json"
    if metrics.is_file():
        data = load_json(metrics)
        rows = data["epochs"]
        last = rows[-1]
        n = data["info"].get("val_images", 0)
        cfg = plan.models[name].resolved()
        return {"model": name, "procedure": procedure_key(plan.models[name]), "seed": cfg["seed"],
                "precision": cfg["compute"]["precision"], "val_acc": last["val_acc"], "n": n,
                "val_acc_pre": last.get("val_acc_pre"),
                "train_minutes": sum(r["epoch_time"] for r in rows) / 60,
                "prepare_minutes": sum(r.get("prepare_time") or 0 for r in rows) / 60}
    entry = read_manifest().get(name)
    if entry is None:
        return None
    return {"model": name, "procedure": procedure_key(plan.models[name]), "seed": entry["seed"],
            "precision": entry["precision"], "val_acc": entry["val_acc_float32"],
            "n": entry["data"]["val_images"], "val_acc_pre": entry.get("val_acc_pre"),
            "train_minutes": entry["train_seconds"] / 60,
            "prepare_minutes": entry["prepare_seconds"] / 60}


def write_models_table(plan: Plan, work: Path, out_dir: Path) -> Path:
    """``models.md``/``.json``: every model's clean validation accuracy (all held-out images) with
    its Wilson interval, test-time-smoothed accuracy, precision and training time."""
    from virolbi.io import save_json, save_text
    from virolbi.reproduce.stats import wilson_interval

    rows = [r for r in (_model_row(plan, n, work) for n in plan.models) if r is not None]
    lines = ["| model | procedure | seed | precision | clean val acc (%) [95 % CI] | with test-time "
             "smoothing 0.6 (Blur: blur) | training (min) | one-time smoothing (min) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = wilson_interval(round(r["val_acc"] * r["n"]), r["n"])
        r["ci95"] = [lo, hi]
        pre = "–" if r["val_acc_pre"] is None else f"{100 * r['val_acc_pre']:.2f}"
        lines.append(f"| {r['model']} | {_label(r['procedure'])} | {r['seed']} | {r['precision']} | "
                     f"{100 * r['val_acc']:.2f} [{100 * lo:.1f}, {100 * hi:.1f}] | {pre} | "
                     f"{r['train_minutes']:.1f} | {r['prepare_minutes']:.1f} |")
    out = Path(out_dir) / "models.md"
    save_text("\n".join(lines) + "\n", out)
    save_json({"plan": plan.path.name, "models": rows}, out.with_suffix(".json"))
    return out
