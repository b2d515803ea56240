"""The smoother on a GPU against the CPU path, on the same images (a script, not a test).

Where CUDA exists, batches of 32 px (CIFAR-10), 224 px and 512 px images (scikit-image's photographs,
resized) are smoothed at the paper's levels (0.6 at 32 px, 0.3 beyond) by ``virolbi.smooth`` on a
CUDA tensor (the batched tensor path) and on the CPU (the compiled path, all cores), timed side by
side (median of interleaved repeats, CUDA synchronised); the two results are compared (iterations,
supports, largest pixel difference) and the table + JSON are written to ``--output-dir``
(default ``benchmarks/results``, ``gpu.json`` / ``gpu.md``).

Usage::

    python benchmarks/bench_gpu.py                       # on a CUDA machine, ~3-5 minutes
    python benchmarks/bench_gpu.py --device cpu --quick  # no GPU: the tensor path on the CPU
                                                         # against the compiled path (seconds; CI)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: (label, side, batch, sparsity): the full run and the quick one.
CASES = [("32 px, CIFAR-10", 32, 256, 0.6), ("224 px", 224, 16, 0.3), ("512 px", 512, 4, 0.3)]
QUICK_CASES = [("32 px, CIFAR-10", 32, 8, 0.6), ("48 px", 48, 2, 0.3)]


def batch_of(side: int, n: int) -> np.ndarray:
    """``n`` float32 RGB images ``(n, 3, side, side)`` in [0, 1]: CIFAR-10 at 32 px, else
    scikit-image's colour photographs (astronaut, coffee, chelsea, rocket, …) resized."""
    if side == 32:
        imgs, _ = common.load_cifar(n + 10)  # the first images of every class
        return np.ascontiguousarray(imgs[:n].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return common.photographs(side, n)


def _smoother(device: str, level: float):
    """``f(x_numpy) -> (images, result)`` on ``device``; on "cpu-tensor" the tensor path on the CPU
    (the compiled path switched off), which is what a CUDA run executes."""
    import torch

    import virolbi
    import virolbi.smoother.fused as fused

    def run(x: np.ndarray):
        t = torch.from_numpy(x)
        if device == "cpu-tensor":
            available, fused.available = fused.available, lambda: False
            try:
                return virolbi.smooth(t, level, return_info=True)
            finally:
                fused.available = available
        y, info = virolbi.smooth(t.to(device), level, return_info=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return y.cpu(), info

    return run


def compare_case(label: str, side: int, n: int, level: float, device: str, repeats: int) -> dict:
    import torch

    x = batch_of(side, n)
    fns = {"device": _smoother(device, level), "cpu": _smoother("cpu", level)}
    outputs = {k: f(x) for k, f in fns.items()}
    times = common.interleaved({k: (lambda f=f: f(x)) for k, f in fns.items()}, repeats,
                               warmup=False)
    (yd, rd), (yc, rc) = outputs["device"], outputs["cpu"]
    same_support = (rd.support().cpu() == rc.support().cpu()).double().mean().item()
    return {"label": label, "side": side, "batch": n, "sparsity": level,
            "device_s": times["device"], "cpu_s": times["cpu"],
            "speedup": times["cpu"]["median"] / times["device"]["median"],
            "iterations_equal": bool(torch.equal(rd.iterations.cpu(), rc.iterations.cpu())),
            "max_iteration_difference": int((rd.iterations.cpu() - rc.iterations.cpu()).abs().max()),
            "support_agreement": same_support,
            "max_abs_difference": float((yd.float() - yc.float()).abs().max())}


def render(results: dict) -> str:
    m = results["machine"]
    md = ["# ViRoLBI on the GPU against the CPU path", "",
          f"Device: {results['device_name']}; CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs "
          f"(torch threads {m['torch_threads']}); commit `{m['commit'][:10]}`, torch {m['torch']}, "
          f"{m['date_utc']}; load average at start "
          f"{', '.join(f'{v:.1f}' for v in m['load_average_at_start'])}.", ""]
    rows = [[r["label"], r["batch"], r["sparsity"], f"{r['device_s']['median']:.3f}",
             f"{r['cpu_s']['median']:.3f}", f"{r['speedup']:.2f}×",
             "yes" if r["iterations_equal"] else f"no (≤ {r['max_iteration_difference']})",
             f"{100 * r['support_agreement']:.3f} %", f"{r['max_abs_difference']:.2g}"]
            for r in results["rows"]]
    md.append(common.markdown_table(["images", "batch", "level", f"{results['device']} (s)",
                                     "CPU compiled (s)", "speedup", "same iterations",
                                     "same support", "max |Δ pixel|"], rows))
    md += ["", "Medians of interleaved repeats; float32 on both sides. A level crossing can move "
           "by one iteration where float32 rounding differs (different FFT libraries).", ""]
    return "\n".join(md)


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda",
                   help="cuda (default), cuda:N, or cpu: the tensor path on the CPU")
    p.add_argument("--quick", action="store_true", help="small batches (seconds)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output-dir", type=Path, default=common.RESULTS)
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"bench_gpu: --device {args.device} requested but CUDA is not available here; "
              "use --device cpu to check the script", file=sys.stderr)
        return 2
    device = "cpu-tensor" if args.device == "cpu" else args.device
    name = (torch.cuda.get_device_name(torch.device(args.device)) if device.startswith("cuda")
            else "CPU, tensor path")
    results = {"machine": common.metadata(), "device": args.device, "device_name": name,
               "rows": []}
    t0 = time.perf_counter()
    for label, side, n, level in (QUICK_CASES if args.quick else CASES):
        print(f"{label}: batch {n} ...", flush=True)
        results["rows"].append(compare_case(label, side, n, level, device,
                                            1 if args.quick else args.repeats))
    results["total_seconds"] = time.perf_counter() - t0
    md = render(results)
    stem = "gpu-quick" if args.quick else "gpu"
    js, mdp = common.write_results(stem, results, md, args.output_dir)
    print(md)
    print(f"wrote {js} and {mdp} ({results['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
