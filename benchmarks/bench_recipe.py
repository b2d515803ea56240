"""Accuracy against training time of the fast CPU recipe (configs/fast/cifar10_vanilla.yaml).

Trains the recipe at several budgets (epochs; the schedule stretches with them), precisions and
widths, and prints a table of validation accuracy (10 000 held-out CIFAR-10 JPEG images, no
test-time augmentation) against wall-clock training time; writes JSON (accuracy, wall time,
images/s, CPU model, precision, width, load average). Every run is a normal resumable training
folder under --runs, so an interrupted benchmark continues and existing runs are reused; runs
whose time was measured under load are flagged by the load average recorded at their end.

    python benchmarks/bench_recipe.py --budgets 5,10,15,20 --precision bfloat16
    python benchmarks/bench_recipe.py --budgets 10 --precision float32 --width 0.5

Not a timed test: numbers go to benchmarks/results/recipe.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, metadata  # noqa: E402

from virolbi.io import load_json, save_json, save_text  # noqa: E402

CONFIG = ROOT / "configs" / "fast" / "cifar10_vanilla.yaml"


def _run_name(epochs: int, precision: str, width: float, seed: int) -> str:
    return f"e{epochs}_{precision}_w{width:g}_s{seed}"


def _train(run_dir: Path, epochs: int, precision: str, width: float, seed: int) -> dict:
    from virolbi.train import load_config, train

    if not (run_dir / "model.pt").is_file():
        cfg = load_config(CONFIG, [f"optim.epochs={epochs}", f"compute.precision={precision}",
                                   f"model.width={width}", f"seed={seed}", f"output_dir={run_dir}",
                                   "resume=true", "eval.test_time_sparsity=null",
                                   f"eval.every={epochs}"])
        train(cfg)
    rows = load_json(run_dir / "metrics.json")["epochs"]
    seconds = sum(r["epoch_time"] for r in rows)
    steps = load_json(run_dir / "metrics.json")["info"]["steps_per_epoch"]
    images = steps * 1024 * epochs
    return {"epochs": epochs, "precision": precision, "width": width, "seed": seed,
            "val_acc": rows[-1]["val_acc"], "train_seconds": round(seconds, 1),
            "images_per_second": round(images / seconds, 1), "run": str(run_dir),
            "load_average_at_end": list(os.getloadavg())}


def _key(row: dict) -> tuple:
    """Rows of one CPU model compare; a run on another machine is another row."""
    return (row["cpu"], row["precision"], row["width"], row["epochs"], row["seed"])


def _table(rows: list[dict]) -> str:
    lines = ["| CPU | epochs | precision | width | seed | val acc (%) | training time | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=_key):
        units = "+".join(r.get("cpu_bf16_units", ())) or "no bf16 units listed"
        lines.append(f"| {r['cpu']} ({units}) | {r['epochs']} | {r['precision']} | "
                     f"{r['width']:g} | {r['seed']} | {100 * r['val_acc']:.2f} | {r['train_seconds'] / 60:.1f} min | "
                     f"{r['images_per_second']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="5,10,15,20", help="epochs, comma-separated")
    ap.add_argument("--precision", default="bfloat16", choices=("float32", "bfloat16"))
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench_recipe"))
    ap.add_argument("--out", default=str(RESULTS / "recipe.json"))
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    out = Path(args.out)
    previous = load_json(out)["runs"] if out.is_file() else []
    rows = {_key(r): r for r in previous}
    meta = metadata()
    for epochs in budgets:
        run_dir = Path(args.runs) / _run_name(epochs, args.precision, args.width, args.seed)
        row = _train(run_dir, epochs, args.precision, args.width, args.seed)
        row["cpu"] = meta["cpu"]
        row["cpu_bf16_units"] = meta["cpu_bf16_units"]
        rows[_key(row)] = row
        save_json({"meta": meta, "runs": list(rows.values())}, out)
    table = _table(list(rows.values()))
    save_text(f"# Fast recipe: accuracy against training time\n\n{meta['logical_cpus']} logical "
              f"CPUs, torch {meta['torch']}; times compare only between rows of the same CPU.\n\n"
              f"{table}\n",
              out.with_suffix(".md"))
    print(table)


if __name__ == "__main__":
    main()
