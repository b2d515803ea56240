"""Write results/systems/summary.md: our numbers for SDNet, TisODE, CIFS and ObsAtk/HAT beside the
papers' figures, read from the evaluation files under results/systems/ (written by
``virolbi evaluate``; the commands are in docs/systems.md) and, for the fast network's Vanilla, Fix,
Iterative and fast-AT rows, from results/cifar10_fast/eval/ (the same images and protocol).

    python scripts/systems_tables.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYS = ROOT / "results" / "systems"
FAST = ROOT / "results" / "cifar10_fast" / "eval"
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _ci(correct: int, n: int) -> str:
    from virolbi.reproduce.stats import wilson_interval

    lo, hi = wilson_interval(correct, n)
    return f"{100 * correct / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _rows(results: dict | None) -> dict:
    """{(perturbation, level, threat_model, preprocessing): row} of a results.json."""
    if results is None:
        return {}
    return {(r["perturbation"], r["level"], r["threat_model"], r["preprocessing"]): r
            for r in results["rows"]}


def _cell(rows: dict, key: tuple) -> str:
    r = rows.get(key)
    return "–" if r is None else _ci(r["correct"], r["n"])


def _noise_mean(rows: dict, noise: str, pre: str) -> str:
    got = [rows[(noise, str(s), "none", pre)] for s in range(1, 6) if (noise, str(s), "none", pre) in rows]
    if len(got) != 5:
        return "–"
    return _ci(sum(r["correct"] for r in got), sum(r["n"] for r in got))


SMOOTH = "ViRoLBI(sparsity=0.6)"


def sdnet() -> list[str]:
    table = _load(SYS / "sdnet" / "sdnet.json")
    proto = _rows(_load(SYS / "sdnet" / "noise_table1_protocol" / "results.json"))
    if table is None and not proto:
        return ["SDNet: not run yet."]
    out = ["### SDNet (CSC stem on the fast network) against the same network without it", ""]
    models = {"Vanilla (whitened stem)": _rows(_load(FAST / "noise" / "fast_cifar10_vanilla_s0" / "results.json")),
              "SDNet (CSC stem, λ = 0.1)": proto,
              "Fix 0.6 (ViRoLBI training)": _rows(_load(FAST / "noise" / "fast_cifar10_fixed_s0" / "results.json"))}
    out += ["Table 1 protocol (2 000 validation images, CIFAR-10-C severities 1–5, mean; 95 % CI); "
            "paper (ResNet-18 / SDNet-18, Gaussian mean): 44.43 / 50.58; clean 95.54 / 95.20.", "",
            "| model | test-time smoothing 0.6 | clean | " + " | ".join(NOISES) + " |",
            "|---|---|---|" + "---|" * len(NOISES)]
    for name, rows in models.items():
        for pre in ("none", SMOOTH):
            if ("clean", "-", "none", pre) not in rows:
                continue
            out.append(f"| {name} | {'yes' if pre != 'none' else 'no'} | {_cell(rows, ('clean', '-', 'none', pre))} | "
                       + " | ".join(_noise_mean(rows, n, pre) for n in NOISES) + " |")
    if table is not None:
        out += ["", f"Robust inference (Algorithm 1) on {table['clean']['n']} validation images, λ(r) "
                f"fitted on {table['meta']['fit_images']} corrupted training images per noise; the "
                "oracle picks λ on the test images themselves. Paper (SDNet-18, Gaussian, Table 2): "
                "λ = 0.1 81.78 / 63.50 / 43.86 / 35.84 / 27.92, Algorithm 1 84.76 / 74.87 / 61.38 / "
                "54.77 / 48.84 (severities 1–5; mean 50.58 → 64.92).", "",
                "| noise | severity | λ = 0.1 | oracle (λ) | Algorithm 1 (λ) |", "|---|---|---|---|---|"]
        for r in table["rows"]:
            o, a = r["oracle"], r["algorithm1"]
            out.append(f"| {r['noise']} | {r['severity']} | {_ci(r['lambda0']['correct'], r['n'])} | "
                       f"{_ci(o['correct'], r['n'])} ({o['lambda']:g}) | "
                       f"{_ci(a['correct'], r['n'])} ({a['lambda']:.2f}) |")
    return out


def tisode() -> list[str]:
    names = {"cnn": "CNN", "odenet": "ODEnet", "tisode": "TisODE", "cnn_fixed": "CNN, Fix 0.6 (ViRoLBI)"}
    paper = {"cnn": "70.2 / 57.6 / 24.3 / 18.4", "odenet": "72.6 / 60.6 / 31.2 / 26.0",
             "tisode": "74.3 / 62.0 / 33.6 / 26.8", "cnn_fixed": "–"}
    got = {k: _rows(_load(SYS / "tisode" / k / "results.json")) for k in names}
    if not any(got.values()):
        return ["TisODE: not run yet."]
    keys = [("clean", "-", "none"), ("gaussian", "15/255", "none"), ("gaussian", "20/255", "none"),
            ("fgsm", "8/255", "classifier"), ("fgsm", "10/255", "classifier"), ("pgd", "8/255", "classifier")]
    out = ["### TisODE (thesis Table 3.8): the small CNN, ODEnet and TisODE, clean training", "",
           "1 000 validation images; Gaussian σ on [0, 1] pixels; FGSM and PGD-20 L∞ on pixels, the "
           "classifier alone (gradients through the Euler solver, exact). Thesis: Gaussian 15 / 20, "
           "FGSM 8 / 10.", "",
           "| model | test-time smoothing | clean | Gauss 15/255 | Gauss 20/255 | FGSM 8/255 | FGSM 10/255 | PGD-20 8/255 | thesis |",
           "|---|---|---|---|---|---|---|---|---|"]
    for k, rows in got.items():
        for pre in ("none", SMOOTH):
            if ("clean", "-", "none", pre) not in rows:
                continue
            threat = {"classifier": "classifier" if pre == "none" else "adaptive_bpda_identity"}
            cells = [_cell(rows, (p, lv, threat.get(t, t), pre)) for p, lv, t in keys]
            out.append(f"| {names[k]} | {'0.6' if pre != 'none' else 'no'} | " + " | ".join(cells)
                       + f" | {paper[k] if pre == 'none' else ''} |")
    out += ["", "With smoothing, the adversarial cells are the adaptive BPDA (identity) attack."]
    return out


def cifs() -> list[str]:
    at = _rows(_load(FAST / "adversarial-pixel" / "fast_cifar10_fast_at_s0" / "results.json"))
    cf = _rows(_load(SYS / "cifs" / "eval" / "results.json"))
    if not cf:
        return ["CIFS: not run yet."]
    keys = [("clean", "-", "none"), ("fgsm", "8/255", "classifier"), ("pgd", "8/255", "classifier"),
            ("fgsm", "16/255", "classifier"), ("pgd", "16/255", "classifier")]
    out = ["### CIFS against fast adversarial training alone (same network, recipe and budget)", "",
           "1 000 validation images (the first 1 000 of the Table 8 images), L∞ on [0, 1] pixels, the classifier "
           "alone, PGD-20 with random start. Thesis (ResNet-18, PGD-10 AT, 120 epochs): AT 84.56 / "
           "PGD-20 46.62; CIFS 83.86 / 51.23.", "",
           "| model | clean | FGSM 8/255 | PGD-20 8/255 | FGSM 16/255 | PGD-20 16/255 |", "|---|---|---|---|---|---|"]
    for name, rows in (("fast AT (N-FGSM)", at), ("fast AT + CIFS", cf)):
        out.append(f"| {name} | " + " | ".join(_cell(rows, (p, lv, t, "none")) for p, lv, t in keys) + " |")
    pgd100 = {n: _rows(_load(SYS / "cifs" / "pgd100" / m / "results.json")) for n, m in MODELS.items()}
    if all(pgd100.values()):
        out += ["", "PGD-100 (8/255, random start, the classifier alone, same 1 000 images): "
                + "; ".join(f"{n} {_cell(r, ('pgd', '8/255', 'classifier', 'none'))}"
                            for n, r in pgd100.items()) + "."]
    square = {n: _rows(_load(SYS / "cifs" / "square" / m / "results.json")) for n, m in MODELS.items()}
    if all(square.values()):
        out += ["", "Gradient-free check (`--suite square`: Square, L∞ 8/255, 1 000 queries, the 250 "
                "balanced validation images of Table 8's Square column): "
                + "; ".join(f"{n} {_cell(r, ('square', '8/255', 'gradient_free', 'none'))}"
                            for n, r in square.items())
                + ". A Square accuracy well below the PGD accuracy would mean masked gradients."]
    return out


MODELS = {"fast AT": "fast_cifar10_fast_at_s0", "fast AT + CIFS": "fast_cifar10_cifs_s0"}


#: Thesis figures for DnCNN-B (gray): Table 2.5 (Set12) and Table 2.2 (Set68 = our BSD68), each
#: "Gaussian / Atk-5/255 / Atk-7/255" for NT and HAT at γ̂ = 15/255 and 25/255.
THESIS_PSNR = {
    "set12": {("NT", "25/255"): "30.39 / 24.32 / 22.96", ("NT", "15/255"): "32.78 / 26.91 / 26.25",
              ("HAT", "25/255"): "30.01 / 26.46 / 25.13", ("HAT", "15/255"): "32.47 / 28.45 / 27.20"},
    "bsd68": {("NT", "25/255"): "29.16 / 24.26 / 23.12", ("NT", "15/255"): "31.68 / 26.66 / 26.08",
              ("HAT", "25/255"): "28.88 / 26.40 / 25.32", ("HAT", "15/255"): "31.36 / 28.34 / 27.34"},
}


def _denoise_rows(dataset: str) -> list[str]:
    body = []
    for name, run in {"NT": "nt", "HAT": "hat", "ViRoLBI": "virolbi"}.items():
        rep = _load(SYS / "denoise" / f"{run}_{dataset}" / "psnr.json")
        if rep is None:
            continue
        for gamma in ("15/255", "25/255"):
            by = {r["noise"]: r["psnr"] for r in rep["rows"] if r["gamma"] == gamma}
            den = next((r["denoiser"] for r in rep["rows"] if r["gamma"] == gamma), name)
            label = den if name == "ViRoLBI" else f"DnCNN {name}"
            body.append(f"| {label} | {gamma} | " + " | ".join(
                f"{by[n]:.2f}" if n in by else "–" for n in
                ("gaussian", "uniform", "obsatk-5/255", "obsatk-7/255"))
                + f" | {THESIS_PSNR[dataset].get((name, gamma), '–')} |")
    return body


def denoise() -> list[str]:
    out = []
    for dataset, title, table in (("set12", "Set12, mean over its 12 images", "Table 2.5"),
                                  ("bsd68", "BSD68 (the thesis's gray \"Set68\"), mean over its 68 "
                                   "images", "Table 2.2")):
        body = _denoise_rows(dataset)
        if not body:
            continue
        out += [f"### ObsAtk and HAT: PSNR (dB) of the denoisers on {title}", "",
                f"Thesis: DnCNN-B (17 × 64), {table}: Gaussian / Atk-5/255 / Atk-7/255. Ours: DnCNN "
                "10 × 32, 50 epochs of 6 400 Train400 patches (2 500 Adam steps, bfloat16 autocast); "
                "ObsAtk 5 steps; ViRoLBI through BPDA.", "",
                "| denoiser | γ̂ | Gaussian | uniform | ObsAtk-5/255 | ObsAtk-7/255 | thesis (N / Atk-5 / Atk-7) |",
                "|---|---|---|---|---|---|---|"] + body + [""]
    return out or ["ObsAtk / HAT: not run yet."]


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from virolbi.io import save_text

    parts = ["## The other systems of the papers, measured", ""]
    for section in (sdnet, cifs, tisode, denoise):
        parts += section() + [""]
    path = save_text("\n".join(parts), SYS / "summary.md")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
