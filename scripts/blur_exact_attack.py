"""Table 2, Blur row, attacked honestly: the Blur baseline's preprocessing (a Gaussian blur) is
differentiable, so the adaptive attack takes its exact gradient (the suite's BPDA rows replace it by
the identity, a weaker attack for a differentiable preprocess). Evaluates blur ∘ classifier as one
model, "classifier alone", on Table 2's images; writes the cell beside the others.

    .venv/bin/python scripts/blur_exact_attack.py   # ~3 minutes on 2 cores
"""

from __future__ import annotations

from pathlib import Path

import torch

from virolbi.evaluate import evaluate, write_report
from virolbi.perturb import GaussianBlur, blur_params_for
from virolbi.reproduce import load_plan
from virolbi.reproduce.runner import eval_dataset
from virolbi.zoo import load_weights

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results/cifar10_fast/eval/adversarial-pixel-exact-gradient/fast_cifar10_blur_s0"


def main() -> None:
    plan = load_plan(ROOT / "configs/reproduce/cifar10_fast.yaml")
    data = eval_dataset(plan, plan.images_of("table2"))
    model = load_weights("fast_cifar10_blur_s0")[0]
    pipeline = torch.nn.Sequential(GaussianBlur(*blur_params_for(32)), model).eval()
    results = evaluate(pipeline, data, suite="adversarial", batch_size=250, seed=plan.eval_seed,
                       progress=False, sanity=True, pgd_steps=plan.pgd_steps,
                       meta={"model": "fast_cifar10_blur_s0 with its blur, as one model",
                             "attack": "exact gradient through the blur (end to end)"})
    write_report(results, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
