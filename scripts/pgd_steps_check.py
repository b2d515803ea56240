"""Is PGD-20 converged? PGD at 8/255 with 20 and with 100 steps on the same images, same seeds.

Table 8's sanity checks show PGD-20 4-6 points below PGD-10 for the models trained without
adversarial examples in the paper's normalised ε convention (the adversarially trained ones do not
move). This script measures how much further 100 steps go, on the first 500 of Table 8's 2 000
class-stratified validation images (the subsets are nested), for the classifier alone and, for
models given with ``--smoothing``, for the pipeline f(ViRoLBI(x)) under BPDA with the fixed
partition (the adaptive attack that was the stronger of the two in Table 8)::

    python scripts/pgd_steps_check.py fast_cifar10_tv_layer_s0 fast_cifar10_vanilla_s0 \\
        --smoothing fast_cifar10_tv_layer_s0 fast_cifar10_vanilla_s0

Writes, per model and step count, the harness's report to
``results/cifar10_fast/eval/pgd_steps_check/<model>/pgd<steps>/``, then ``summary.md`` / ``.json``
beside them. Evaluations already written are read back (and an interrupted one resumes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "cifar10_fast" / "eval" / "pgd_steps_check"
PLAN = ROOT / "configs" / "reproduce" / "cifar10_fast.yaml"
STEPS = (20, 100)


def evaluate_one(plan, name: str, steps: int, smoothing: bool, images: int, convention: str):
    """The harness's results for one model and step count (read back when already written)."""
    from virolbi.evaluate import PerturbationSpec, evaluate, write_report
    from virolbi.evaluate.partial import RESUME_FILE
    from virolbi.evaluate.report import load_results
    from virolbi.reproduce.runner import eval_dataset
    from virolbi.smoother import ViRoLBI
    from virolbi.zoo import load_weights

    out = OUT / name / f"pgd{steps}"
    if (out / "results.json").is_file():
        return load_results(out / "results.json")
    threats = ("classifier", "adaptive_bpda_partition") if smoothing else ("classifier",)
    spec = PerturbationSpec("pgd", "8/255", 8 / 255, "adversarial", threats)
    pre = ViRoLBI(sparsity=plan.test_time_sparsity) if smoothing else None
    meta = {"model": name, "eval_images": images, "eval_seed": plan.eval_seed,
            "purpose": "PGD step-count convergence check (scripts/pgd_steps_check.py)"}
    results = evaluate(load_weights(name)[0], eval_dataset(plan, images), suite=[spec],
                       preprocess=pre, batch_size=250, seed=plan.eval_seed, pgd_steps=steps,
                       sanity=False, eps_convention=convention, meta=meta,
                       resume_file=out / RESUME_FILE)
    write_report(results, out)
    return results


def summarise(rows: list[dict], convention: str, images: int) -> str:
    """The summary table in Markdown."""
    from virolbi.reproduce.stats import wilson_interval

    lines = [f"## PGD step-count check: 8/255 ({convention} convention), {images} images",
             "", "| model | attack on | PGD-20 | PGD-100 | change |", "|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for steps in STEPS:
            lo, hi = wilson_interval(r[f"correct{steps}"], r["n"])
            cells.append(f"{100 * r[f'acc{steps}']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
        change = 100 * (r["acc100"] - r["acc20"])
        lines.append(f"| {r['model']} | {r['threat']} | {cells[0]} | {cells[1]} | {change:+.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="shipped model names")
    parser.add_argument("--smoothing", nargs="*", default=[],
                        help="models also attacked through ViRoLBI smoothing (BPDA, fixed partition)")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--convention", choices=("pixel", "normalized"), default="normalized")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from virolbi.io import save_json, save_text
    from virolbi.reproduce import load_plan

    plan = load_plan(PLAN)
    rows = []
    for name in args.models:
        found = {s: evaluate_one(plan, name, s, name in args.smoothing, args.images, args.convention)
                 for s in STEPS}
        for r20 in found[20].rows:
            if r20.perturbation != "pgd":
                continue
            r100 = next(r for r in found[100].rows if r.threat_model == r20.threat_model)
            rows.append({"model": name, "threat": r20.threat_model, "n": r20.n,
                         "acc20": r20.accuracy, "correct20": r20.correct,
                         "acc100": r100.accuracy, "correct100": r100.correct})
    save_json({"convention": args.convention, "images": args.images, "eps": "8/255",
               "steps": list(STEPS), "rows": rows}, OUT / "summary.json")
    save_text(summarise(rows, args.convention, args.images), OUT / "summary.md")
    print((OUT / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
