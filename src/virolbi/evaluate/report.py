"""Report writers for :class:`~virolbi.evaluate.Results`: JSON, Markdown and a PNG figure.

The Markdown follows the paper's tables (Zhou et al. 2024, §4), for one model: Table 1 the noisy
examples (mean over severities, a row without and a row with preprocessing per noise), Table 2 the
adversarial examples (every row labelled with its threat model), Table 3 low resolution, Table 4
the high/low frequency components; then the sanity checks of the adversarial evaluation and the run
metadata. Every file is written atomically (:func:`virolbi.io.atomic_path`).
"""

from __future__ import annotations

import os
from pathlib import Path

from virolbi.evaluate.harness import NO_PREPROCESSING, Results, Row
from virolbi.evaluate.suites import (ADVERSARIAL_THREAT_MODELS, AUTOATTACK, GRADIENT_FREE, NOISES,
                                     THREAT_MODEL_LABELS)
from virolbi.io import atomic_path, load_json, save_json, save_text

__all__ = ["load_results", "plot_results", "save_results", "to_markdown", "write_report"]

_NOISE_NAMES = {"gaussian_noise": "Gaussian", "shot_noise": "Shot", "impulse_noise": "Impulse",
                "speckle_noise": "Speckle", "gaussian": "Gaussian σ"}
_THREAT_ORDER = ADVERSARIAL_THREAT_MODELS + (GRADIENT_FREE,)


def save_results(results: Results, path: str | os.PathLike) -> Path:
    """Write ``results`` as JSON (atomically); :func:`load_results` reads it back."""
    return save_json(results.to_dict(), path)


def load_results(path: str | os.PathLike) -> Results:
    """Read a JSON file written by :func:`save_results`."""
    return Results.from_dict(load_json(path))


def _pct(acc: float | None) -> str:
    return "" if acc is None else f"{100.0 * acc:.2f}"


def _pre_label(pre: str) -> str:
    return "without" if pre == NO_PREPROCESSING else f"with {pre}"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines + [""]


def _mean(rows: list[Row]) -> float | None:
    return sum(r.accuracy for r in rows) / len(rows) if rows else None


def _sorted_levels(rows: list[Row]) -> list[str]:
    out: list[str] = []
    for r in sorted(rows, key=lambda r: (r.value if r.value is not None else 0.0)):
        if r.level not in out:
            out.append(r.level)
    return out


def _radius_text(radius: object) -> str:
    """A pixel radius as multiples of 1/255: ``2/255`` or ``(1.97, 1.94, 2.08)/255``."""
    if isinstance(radius, (list, tuple)):
        return "(" + ", ".join(f"{255 * float(v):.3g}" for v in radius) + ")/255"
    return f"{255 * float(radius):.3g}/255" if isinstance(radius, (int, float)) else "?"


def _convention(results: Results) -> str:
    return str(results.meta.get("eps_convention", "pixel"))


def _eps_cells(row: Row, meta: dict) -> list[str]:
    """The row's ε convention and pixel radius (older results: from the run's convention)."""
    conv = row.params.get("eps_convention", meta.get("eps_convention", "pixel"))
    radius = row.params.get("radius_pixels", meta.get("eps_radius_pixels", {}).get(row.level))
    if radius is None and conv == "pixel" and row.value is not None:
        radius = row.value
    return [str(conv), _radius_text(radius) if radius is not None else "ε·σ_c (not recorded)"]


def _eps_sentence(results: Results) -> str:
    """The header's sentence naming the ε convention and the pixel radius of every level."""
    m = results.meta
    radii = dict(m.get("eps_radius_pixels") or {})
    for r in results.select(group="adversarial"):
        if "radius_pixels" in r.params:
            radii.setdefault(r.level, r.params["radius_pixels"])
    levels = ", ".join(f"ε = {lv} → {_radius_text(radii[lv])}" for lv in sorted(radii))
    if _convention(results) == "normalized":
        text = ("Attacks L∞, ε convention **normalized**: ε on normalised images (x_c − μ_c)/σ_c, "
                "so the radius on [0, 1] pixels is ε·σ_c per channel (R, G, B)")
        text += f": {levels}." if levels else " (the radii were not recorded in this file)."
    else:
        levels = ", ".join(f"{lv} = {float(radii[lv]):.4f}" for lv in sorted(radii)
                           if isinstance(radii[lv], (int, float)))
        text = "Attacks L∞, ε convention **pixel**: ε on [0, 1] pixels, the same on every channel"
        text += f" (radius {levels})." if levels else "."
    pgd = m.get("attacks", {}).get("pgd", {})
    if any(r.perturbation == "pgd" for r in results.rows):
        text += (f" PGD {pgd.get('steps', '?')} steps of {pgd.get('step_size', '?')}, "
                 "random start.")
    return text


def _is_autoattack(row: Row) -> bool:
    return row.perturbation.split(":")[0] == AUTOATTACK


def _autoattack_section(results: Results) -> list[str]:
    """AutoAttack: per threat model the worst case over the attacks, then each attack's row."""
    from virolbi.reproduce.stats import wilson_interval

    rows = [r for r in results.select(group="adversarial") if _is_autoattack(r)]
    if not rows:
        return []
    aa = results.meta.get("autoattack", {})
    body = []
    for threat in _THREAT_ORDER:
        group = sorted((r for r in rows if r.threat_model == threat),
                       key=lambda r: (r.level, r.params.get("order", -1)))
        for r in group:
            lo, hi = wilson_interval(r.correct, r.n)
            name = ("**worst case over the attacks**" if r.perturbation == AUTOATTACK
                    else r.perturbation.split(":", 1)[1])
            body.append([r.level, THREAT_MODEL_LABELS[threat], _pre_label(r.preprocessing), name,
                         f"{_pct(r.accuracy)} [{100 * lo:.1f}, {100 * hi:.1f}]", f"{r.correct}/{r.n}",
                         *_eps_cells(r, results.meta)])
    parts = "; ".join(f"{k}: {v}" for k, v in aa.get("components", {}).items())
    breakdown = ("each attack's own accuracy (every attack on every image)" if aa.get("independent")
                 else "robust accuracy after this attack and every one above it (AutoAttack's cascade)")
    lines = [f"## AutoAttack (version {aa.get('version', '?')})", "",
             f"Components ({aa.get('implementation', 'ART')}): {parts}. Budget: APGD "
             f"{aa.get('iterations', '?')} iterations, {aa.get('restarts', '?')} restart(s)"
             + (f", {aa.get('targets', '?')} target classes; Square {aa.get('queries', '?')} "
                "queries" if aa.get("version") != "rand" else "")
             + f"; EOT {aa.get('eot_samples', 1)}.",
             f"An image is robust only if every attack fails on it (worst case); each attack's "
             f"row: {breakdown}."]
    if aa.get("transfer_from"):
        lines.append(f"`transfer`: images crafted on the undefended `{aa['transfer_from']}` "
                     "(APGD-CE, then APGD-T, classifier alone), classified by the defence.")
    lines += ["Accuracy in % [95 % Wilson interval].", ""]
    return lines + _table(["Strength", "Threat model", "Preprocessing", "Attack", "Accuracy",
                           "correct / n", "ε convention", "pixel radius"], body)


def to_markdown(results: Results) -> str:
    """The report as Markdown: the paper's Tables 1-4 for this model, sanity checks, metadata.

    Examples
    --------
    >>> from virolbi.evaluate.harness import Results, Row
    >>> res = Results([Row("clean", "-", "none", "none", 0.9, 9, 10, "clean")], [], {"n": 10})
    >>> print(to_markdown(res).splitlines()[0])
    # Robustness evaluation
    """
    m = results.meta
    pres = results.preprocessings
    lines = ["# Robustness evaluation", ""]
    lines.append(f"Model `{m.get('model', '?')}` on `{m.get('dataset', '?')}`: "
                 f"{m.get('n', '?')} of {m.get('dataset_size', '?')} images "
                 f"(seed {m.get('seed', '?')}), suite `{m.get('suite', '?')}`. Accuracy in %.")
    if results.select(group="adversarial"):
        lines.append(_eps_sentence(results))
    lines.append("")

    clean = {r.preprocessing: r for r in results.select(group="clean")}
    if clean:
        lines += ["## Clean accuracy", ""]
        lines += _table(["Preprocessing", "Accuracy"],
                        [[_pre_label(p), _pct(clean[p].accuracy)] for p in pres if p in clean])

    noise = results.select(group="noise")
    if noise:
        levels = _sorted_levels(noise)
        body = [["Clean", _pre_label(p), _pct(clean[p].accuracy)] + [""] * len(levels)
                for p in pres if p in clean]
        names = [n for n in NOISES if any(r.perturbation == n for r in noise)]
        names += sorted({r.perturbation for r in noise} - set(names))
        for name in names:
            for p in pres:
                rows = [r for r in noise if r.perturbation == name and r.preprocessing == p]
                if not rows:
                    continue
                by_level = {r.level: r.accuracy for r in rows}
                body.append([_NOISE_NAMES.get(name, name), _pre_label(p), _pct(_mean(rows))]
                            + [_pct(by_level.get(lv)) for lv in levels])
        lines += ["## Table 1: noisy examples", "",
                  "Mean over the severities, then each severity; for each noise a row without and "
                  "a row with test-time preprocessing.", ""]
        lines += _table(["Noise", "Preprocessing", "Mean"] + [f"sev. {lv}" for lv in levels], body)

    adv = [r for r in results.select(group="adversarial") if not _is_autoattack(r)]
    if adv:
        body = []
        attacks = [a for a in ("fgsm", "pgd") if any(r.perturbation == a for r in adv)]
        attacks += sorted({r.perturbation for r in adv} - set(attacks))
        for attack in attacks:
            rows = [r for r in adv if r.perturbation == attack]
            for lv in _sorted_levels(rows):
                for threat in _THREAT_ORDER:
                    for r in rows:
                        if r.level == lv and r.threat_model == threat:
                            body.append([attack.upper(), lv, THREAT_MODEL_LABELS[threat],
                                         _pre_label(r.preprocessing), _pct(r.accuracy),
                                         *_eps_cells(r, m)])
        lines += ["## Table 2: adversarial examples", "",
                  "Threat models: *classifier alone* (no preprocessing); *paper* (attack the "
                  "classifier, then preprocess: not adaptive, optimistic); *adaptive* (attack "
                  "preprocessing + classifier end to end with BPDA: the honest numbers).", ""]
        lines += _table(["Attack", "Strength", "Threat model", "Preprocessing", "Accuracy",
                         "ε convention", "pixel radius"], body)
    lines += _autoattack_section(results)

    low = results.select(group="lowres")
    if low:
        levels = _sorted_levels(low)
        body = []
        for p in pres:
            by_level = {r.level: r.accuracy for r in low if r.preprocessing == p}
            if by_level:
                body.append([_pre_label(p)] + [_pct(by_level.get(lv)) for lv in levels])
        lines += ["## Table 3: low-resolution examples", "",
                  "Scale factor = ratio of the reduced size to the original (down-sampling, then "
                  "nearest up-sampling).", ""]
        lines += _table(["Preprocessing"] + [f"scale {lv}" for lv in levels], body)

    freq = results.select(group="frequency")
    if freq:
        radius = freq[0].value
        cols = [p for p in pres if any(r.preprocessing == p for r in freq)]
        body = []
        for part in ("high", "low"):
            by_pre = {r.preprocessing: r.accuracy for r in freq if r.level == part}
            if by_pre:
                body.append([part.capitalize()] + [_pct(by_pre.get(p)) for p in cols])
        lines += [f"## Table 4: high and low frequency components (radius {radius:g})", ""]
        lines += _table(["Component"] + [_pre_label(p) for p in cols], body)

    lines += ["## Sanity checks", ""]
    if results.sanity:
        for check in results.sanity:
            lines.append(f"- **{'PASS' if check.passed else 'FAIL'}** {check.name}: {check.detail}")
        extra = results.select(group="sanity")
        if extra:
            lines += ["", "Extra attack runs (classifier alone, without preprocessing):", ""]
            lines += _table(["Attack", "Strength", "Steps", "Accuracy"],
                            [[r.perturbation.upper(), r.level, str(r.params.get("steps", "")),
                              _pct(r.accuracy)] for r in extra])
        else:
            lines.append("")
    else:
        lines += ["No FGSM/PGD rows: the attack sanity checks were not run.", ""]

    if m.get("skipped"):
        lines += ["Skipped: " + "; ".join(m["skipped"]), ""]
    versions = m.get("versions", {})
    dev = m.get("device", {})
    lines += ["## Run", "",
              f"- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
              f"- git commit: {m.get('git_commit') or 'unknown'}",
              f"- device: {dev.get('type', '?')} ({dev.get('name', '?')})" if isinstance(dev, dict)
              else f"- device: {dev}",
              f"- batch size {m.get('batch_size', '?')}, elapsed {m.get('elapsed_s', '?')} s, "
              f"created {m.get('created', '?')}",
              f"- seeds: {m.get('seeds', m.get('seed', '?'))}", ""]
    return "\n".join(lines)


def plot_results(results: Results, path: str | os.PathLike) -> Path:
    """A PNG figure: accuracy against severity per noise, and against ε per attack and threat model
    (ε = 0 is the clean accuracy); without preprocessing solid, with it dashed. Falls back to a bar
    chart of every row when the results have neither noise nor adversarial rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    noise = results.select(group="noise")
    adv = [r for r in results.select(group="adversarial") if ":" not in r.perturbation]  # no breakdown
    panels = [p for p, rows in (("noise", noise), ("adversarial", adv)) if rows] or ["all"]
    fig = Figure(figsize=(5.0 * len(panels), 4.0))
    FigureCanvasAgg(fig)
    clean = {r.preprocessing: r.accuracy for r in results.select(group="clean")}
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if panel == "noise":
            for name in sorted({r.perturbation for r in noise}):
                for pre in results.preprocessings:
                    rows = sorted((r for r in noise if r.perturbation == name and r.preprocessing == pre),
                                  key=lambda r: r.value)
                    if rows:
                        ax.plot([r.value for r in rows], [100 * r.accuracy for r in rows], marker="o",
                                linestyle="-" if pre == NO_PREPROCESSING else "--",
                                label=f"{_NOISE_NAMES.get(name, name)}, {_pre_label(pre)}")
            ax.set_xticks(sorted({r.value for r in noise}))
            ax.set_xlabel("severity")
            ax.set_title("Noise")
        elif panel == "adversarial":
            for attack in sorted({r.perturbation for r in adv}):
                for threat in _THREAT_ORDER:
                    rows = sorted((r for r in adv if r.perturbation == attack and r.threat_model == threat),
                                  key=lambda r: r.value)
                    if not rows:
                        continue
                    pre = rows[0].preprocessing
                    xs = [255 * r.value for r in rows]
                    ys = [100 * r.accuracy for r in rows]
                    if pre in clean:
                        xs, ys = [0.0] + xs, [100 * clean[pre]] + ys
                    ax.plot(xs, ys, marker="o", linestyle="-" if pre == NO_PREPROCESSING else "--",
                            label=f"{attack.upper()}, {THREAT_MODEL_LABELS[threat]}")
            ax.set_xlabel("ε × 255")
            ax.set_title("Adversarial (L∞)")
        else:
            labels = [" ".join(x for x in (r.perturbation, r.level if r.level != "-" else "",
                                           "" if r.preprocessing == NO_PREPROCESSING else "+pre") if x)
                      for r in results.rows]
            ax.bar(range(len(labels)), [100 * r.accuracy for r in results.rows])
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
            ax.set_title("Accuracy")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def write_report(results: Results, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out_dir`` (created if
    missing), each atomically. Returns their paths keyed ``json``, ``markdown``, ``figure``."""
    out = Path(out_dir)
    paths = {"json": save_results(results, out / "results.json"),
             "markdown": save_text(to_markdown(results), out / "results.md"),
             "figure": plot_results(results, out / "results.png")}
    return paths
