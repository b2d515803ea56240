"""Training throughput of candidate 64-px fast networks against airbench at 32 px (issue #27).

Each candidate trains on random images of its size (the cost of a step does not depend on the
pixels) with the fast recipe's compute settings: micro-batches of 256, channels_last, Nesterov SGD,
bfloat16 autocast (and float32 for comparison). Candidates run in turn for ``--seconds`` each,
``--rounds`` times (interleaved, so the load of other processes affects all alike); the median
images/s is reported with the load average (``os.getloadavg``) before and after.

airbench at 32 px is the calibration: its measured training throughput on other machines
(RESULTS.md, "Fast recipe") scaled by the measured ratio gives a candidate's throughput there.

``--smoothing N`` times instead the smoother on N real images of each data set, one thread:
Tiny-ImageNet-100 (64 px) at the levels of its plan (0.3; the path 0.3..0.8) against CIFAR-10
(JPEG, 32 px) at those of the CIFAR-10 plan (0.6; the path 0.3..0.9), whose cost is measured.

    python benchmarks/bench_tinyimagenet.py --seconds 20 --rounds 2
    python benchmarks/bench_tinyimagenet.py --smoothing 100
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from common import markdown_table, metadata, write_results
import virolbi
from virolbi.data import load_dataset, to_float
from virolbi.data.subset import balanced_subset
from virolbi.models import create_model

#: name -> (registry name, model options, image side)
CANDIDATES = {
    "airbench @32 (reference)": ("airbench", {}, 32),
    "airbench64: 4 groups 64/128/256/256 @64": ("airbench64", {}, 64),
    "4 groups 64/256/256/256 @64": ("airbench64", {"widths": (64, 256, 256, 256)}, 64),
    "stride-2 stem, 3 groups 64/256/256, pool 4 @64": (
        "airbench", {"stem_stride": 2, "final_pool": 4}, 64),
}


def _step_fn(name: str, opts: dict, side: int, precision: str, micro: int):
    torch.manual_seed(0)
    model = create_model(name, 100, **opts).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                          momentum=0.85, nesterov=True)
    x = torch.rand(micro, 3, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (micro,))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.2)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _images_per_second(step, micro: int, seconds: float) -> float:
    step()  # warm-up (allocations, kernel choice)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += micro
    return n / (time.perf_counter() - t0)


def _throughput(precisions: list[str], rounds: int, micro: int, seconds: float
                ) -> tuple[list[dict], list[list[str]]]:
    """Median images/s of every candidate per precision, and its cost relative to the first."""
    rows, data = [], []
    for precision in precisions:
        steps = {k: _step_fn(*v, precision, micro) for k, v in CANDIDATES.items()}
        rates: dict[str, list[float]] = {k: [] for k in CANDIDATES}
        for r in range(rounds):
            order = list(CANDIDATES)[r % len(CANDIDATES):] + list(CANDIDATES)[:r % len(CANDIDATES)]
            for k in order:
                rates[k].append(_images_per_second(steps[k], micro, seconds))
                print(f"{precision} round {r}: {k}: {rates[k][-1]:.1f} images/s, load "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
        ref = float(np.median(rates[next(iter(CANDIDATES))]))
        for k, v in rates.items():
            med = float(np.median(v))
            data.append({"candidate": k, "precision": precision, "images_per_s": round(med, 1),
                         "all": [round(a, 1) for a in v], "relative_cost": round(ref / med, 2)})
            rows.append([k, precision, f"{med:.0f}", f"{ref / med:.2f}"])
    return data, rows


def _smoothing(n: int) -> tuple[list[dict], str]:
    """Seconds per image of one level and of the whole path, 64 px against 32 px."""
    torch.set_num_threads(1)
    sets = {"tinyimagenet100 (64 px)": ("tinyimagenet100", 0.3, (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)),
            "cifar10-jpeg (32 px)": ("cifar10-jpeg", 0.6, (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))}
    data, rows = [], []
    for label, (name, level, levels) in sets.items():
        ds = load_dataset(name, "val", progress=False)
        x = to_float(ds.get_batch(balanced_subset(ds.targets, n))[0])
        virolbi.smooth(x[:2], level)                         # compile once, untimed
        t0 = time.perf_counter()
        virolbi.smooth(x, level)
        one = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        virolbi.image_path(x, levels=levels)
        path = (time.perf_counter() - t0) / n
        data.append({"data": label, "level": level, "levels": list(levels),
                     "smooth_ms_per_image": round(1e3 * one, 2),
                     "path_ms_per_image": round(1e3 * path, 2)})
        rows.append([label, f"{level:g}", f"{1e3 * one:.1f}",
                     f"{levels[0]:g}..{levels[-1]:g}", f"{1e3 * path:.1f}"])
    return data, markdown_table(["data", "level", "ms/image", "path", "path ms/image"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per candidate and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=256)
    ap.add_argument("--precisions", default="bfloat16,float32")
    ap.add_argument("--out-name", default="tinyimagenet_throughput")
    ap.add_argument("--smoothing", type=int, default=0, metavar="N",
                    help="time the smoother on N images of each set instead")
    args = ap.parse_args()
    load_before = list(os.getloadavg())
    if args.smoothing:
        data, md = _smoothing(args.smoothing)
        md = f"Load average before {load_before}, after {list(os.getloadavg())}.\n\n{md}"
        print(md)
        write_results("tinyimagenet_smoothing", {"meta": metadata(), "images": args.smoothing,
                                                  "rows": data}, md)
        return
    data, rows = _throughput(args.precisions.split(","), args.rounds, args.micro_batch,
                             args.seconds)
    load_after = list(os.getloadavg())
    md = (f"Load average before {load_before}, after {load_after} (another training ran beside "
          "this benchmark: absolute rates are lowered, ratios less so).\n\n"
          + markdown_table(["candidate", "precision", "images/s (median)", "cost vs airbench@32"],
                           rows))
    print(md)
    write_results(args.out_name, {"meta": metadata(), "load_before": load_before,
                                  "load_after": load_after, "seconds": args.seconds,
                                  "rounds": args.rounds, "rows": data}, md)


if __name__ == "__main__":
    main()
