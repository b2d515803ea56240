"""Epoch time of Iterative and Fixed training against Vanilla, side by side in one process.

Each procedure trains the same model on the same subset for ``--epochs-measured`` epochs; the
one-time smoothing (Fixed: one level; Iterative: the whole path 0.3..0.8 in one LBI run per image)
is timed separately and amortised over ``--amortise-epochs`` (the full recipe's 200 by default).
Target (issue): Iterative <= 1.15x Vanilla per epoch, smoothing amortised.

    python benchmarks/bench_training.py --images 1000 --out benchmarks/results/training.json
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import virolbi
from virolbi.io import save_json
from virolbi.train import train


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="training subset size")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--epochs-measured", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="the procedures run in turn this many times (interleaved, so machine load "
                         "affects all alike); the median epoch time per procedure is reported")
    ap.add_argument("--amortise-epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default="cifar10-jpeg")
    ap.add_argument("--out", default="benchmarks/results/training.json")
    args = ap.parse_args()

    from virolbi.data import load_dataset
    from virolbi.train.trainer import balanced_subset

    full = load_dataset(args.data, "train")
    data = full.subset(balanced_subset(full.targets, args.images, 0))
    procs = ({"name": "vanilla"}, {"name": "fixed", "sparsity": 0.6}, {"name": "iterative"})
    epochs: dict[str, list[float]] = {p["name"]: [] for p in procs}
    prepare: dict[str, float] = {p["name"]: 0.0 for p in procs}
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(args.rounds):  # interleaved: vanilla, fixed, iterative, vanilla, ...
            for proc in procs:
                cfg = {"name": f"bench_{proc['name']}", "output_dir": None, "device": args.device,
                       "model": {"name": args.model, "width": args.width},
                       "procedure": {**proc, "cache_dir": cache},
                       "optim": {"epochs": args.epochs_measured, "batch_size": args.batch_size},
                       "logging": {"progress": False, "tensorboard": False}}
                res = train(cfg, train_data=data, val_data=None)
                epochs[proc["name"]] += [r["epoch_time"] for r in res.metrics]
                # the one-time smoothing happens in the first round; later rounds hit the cache
                prepare[proc["name"]] = max(prepare[proc["name"]], res.metrics[0]["prepare_time"])
    rows = []
    for name, times in epochs.items():
        epoch = float(np.median(times))
        rows.append({"procedure": name, "epoch_s": epoch, "epoch_times": times,
                     "prepare_s": prepare[name],
                     "amortised_epoch_s": epoch + prepare[name] / args.amortise_epochs})
    base = rows[0]["epoch_s"]
    for r in rows:
        r["ratio_vs_vanilla"] = r["amortised_epoch_s"] / base
    print(f"{'procedure':<10} {'epoch s':>9} {'prepare s':>10} {'amortised s':>12} {'ratio':>7}")
    for r in rows:
        print(f"{r['procedure']:<10} {r['epoch_s']:9.2f} {r['prepare_s']:10.2f} "
              f"{r['amortised_epoch_s']:12.2f} {r['ratio_vs_vanilla']:7.3f}")
    it = rows[2]["ratio_vs_vanilla"]
    print(f"Iterative / Vanilla = {it:.3f} (target <= 1.15: {'met' if it <= 1.15 else 'NOT met'})")
    meta = {"commit": _commit(), "virolbi": virolbi.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "args": vars(args)}
    save_json({"meta": meta, "rows": rows}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
