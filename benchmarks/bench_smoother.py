"""Benchmark of the ViRoLBI smoother (a script, not a test): prints a table, writes JSON + Markdown.

Sections (select with --sections, default all):

a. Throughput (images/s) at sparsity 0.6 on CIFAR-10 (JPEG) images, side by side in one process:
   the default solver's whole path (``image_path``, levels 0.2..1.0) and ``smooth`` at 0.6 for every
   solver, scikit-image's ``denoise_tv_chambolle`` (weight 0.1, channel_axis=-1) on the same images,
   and the per-image NumPy Eq. 5 reference (``reference_eq5.py``) on a subset. The fast methods are
   timed batch by batch, interleaved (rotating order), so every ratio is taken on the same images
   at the same moment; the slow ones (Eq. 5 solver, NumPy reference) on a subset, paired with
   chambolle on that subset.
b. The paper's Table 7 setting: one 84x84 grayscale image, 15 000 Eq. 5 iterations with the
   projection at every iteration, graph / LSQR / SVD pseudo-inverse
   (:func:`virolbi.smoother.trace.projection_trace`); the slow ones stop at a time limit and are
   extrapolated linearly (said so in the table).
c. Peak memory per image: one fresh subprocess per method; resident-set growth (``getrusage``
   maxrss after minus before the call, divided by the batch size) for everything, plus
   ``tracemalloc`` peaks for the NumPy-only methods.
d. Batch size: ``smooth`` at 0.6 in batches of 1, 16 and 256 on the same images, each paired with
   chambolle on the same images (interleaved).
e. Under load: ``smooth`` (batch 256, default threads) and chambolle quiet, then with another
   process keeping one core busy (a Python busy loop), side by side; the fraction of the quiet
   throughput each keeps.
f. Profile by phase of the compiled path (one thread): microseconds per image-iteration of the
   exact solve, each edge pass and the adjoint, each timed alone on a real image's state, and the
   mean iterations per image at 0.6 and along the 5-level path.
g. Real sizes (``sizes.py``): 64-512 px RGB and gray at 0.3 against the 32 px cost per
   pixel-iteration and chambolle, peak memory per megapixel, the width-transform crossover, and
   each size under load.

Usage::

    python benchmarks/bench_smoother.py            # full: 1000 images, ~10 minutes on 2 cores
    python benchmarks/bench_smoother.py --quick    # tiny sizes, < 1 minute
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import sizes  # noqa: E402

PAPER_TABLE7 = {"graph": 4.87, "lsqr": 171.79, "pinv": 373.24}
TORCH_THREADS = 2


def _setup_threads():
    import torch

    torch.set_num_threads(TORCH_THREADS)
    common.set_blas_threads(1)


def _images(n):
    imgs, _ = common.load_cifar(n)
    return imgs[: n]


def _methods(n_img_kw=None):
    """name -> (callable on a float32 batch (B,3,H,W) tensor, description)."""
    import torch
    from skimage.restoration import denoise_tv_chambolle

    import virolbi

    def path(x):
        virolbi.image_path(x, levels=(0.2, 0.4, 0.6, 0.8, 1.0))

    def smooth(solver):
        return lambda x: virolbi.smooth(x, 0.6, solver=solver)

    def chambolle(x):
        for img in x.permute(0, 2, 3, 1).numpy():
            denoise_tv_chambolle(img, weight=0.1, channel_axis=-1)

    def reference(x):
        from reference_eq5 import smooth_eq5
        for img in x.double().numpy():
            smooth_eq5(img, 0.6)

    return {
        "virolbi image_path, imex (default), 5 levels": path,
        "virolbi smooth 0.6, imex (default)": smooth("imex"),
        "virolbi smooth 0.6, dct": smooth("dct"),
        "virolbi smooth 0.6, explicit (Eq. 5)": smooth("explicit"),
        "skimage denoise_tv_chambolle (w=0.1)": chambolle,
        "NumPy Eq. 5 reference (per image)": reference,
    }, torch


FAST = ["virolbi image_path, imex (default), 5 levels", "virolbi smooth 0.6, imex (default)",
        "virolbi smooth 0.6, dct", "skimage denoise_tv_chambolle (w=0.1)"]
CHAMB = "skimage denoise_tv_chambolle (w=0.1)"
SLOW = {"virolbi smooth 0.6, explicit (Eq. 5)": "explicit_n",
        "NumPy Eq. 5 reference (per image)": "reference_n"}


def section_a(args) -> dict:
    methods, torch = _methods()
    imgs = _images(args.n)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().float() / 255.0
    for name in FAST + list(SLOW):  # warm-up: numba compilation, DCT matrices, caches
        methods[name](x[:2])
    bs = args.batch_size
    per_batch = {name: [] for name in FAST}
    for bi, start in enumerate(range(0, len(x), bs)):
        xb = x[start:start + bs].contiguous()
        order = FAST[bi % len(FAST):] + FAST[:bi % len(FAST)]
        for name in order:
            t0 = time.perf_counter()
            methods[name](xb)
            per_batch[name].append((len(xb), time.perf_counter() - t0))
        print(f"  batch {bi + 1}: " + ", ".join(f"{n.split(',')[0][:22]} {per_batch[n][-1][1]:.2f}s"
                                              for n in FAST), flush=True)
    rows = {}
    for name in FAST:
        n_img = sum(b for b, _ in per_batch[name])
        secs = [t for _, t in per_batch[name]]
        rates = [b / t for b, t in per_batch[name]]
        rows[name] = {"images": n_img, "seconds_total": sum(secs), "images_per_s": n_img / sum(secs),
                      "images_per_s_batches": common.summarize(rates), "batch_size": bs,
                      "dtype": "float32" if "virolbi" in name else "float32 (HWC)"}
    ch = per_batch[CHAMB]
    for name in FAST:
        ratios = [(b / t) / (bc / tc) for (b, t), (bc, tc) in zip(per_batch[name], ch)]
        rows[name]["ratio_vs_chambolle"] = common.summarize(ratios)
    # The slow ones on a subset, each paired with chambolle on the same subset (interleaved).
    for name, key in SLOW.items():
        n_sub = min(getattr(args, key), len(x))
        xs = x[:n_sub].contiguous()
        res = common.interleaved({name: lambda: methods[name](xs),
                                  CHAMB: lambda: methods[CHAMB](xs)}, 1, warmup=False)
        t, tc = res[name]["median"], res[CHAMB]["median"]
        rows[name] = {"images": n_sub, "seconds_total": t, "images_per_s": n_sub / t,
                      "subset": True, "batch_size": n_sub if "virolbi" in name else 1,
                      "dtype": "float32" if "virolbi" in name else "float64",
                      "ratio_vs_chambolle": {"median": (n_sub / t) / (n_sub / tc)},
                      "chambolle_images_per_s_same_subset": n_sub / tc}
    ref = rows["NumPy Eq. 5 reference (per image)"]
    for name in rows:
        rows[name]["speedup_vs_numpy_reference"] = rows[name]["images_per_s"] / ref["images_per_s"]
    return {"n_images": int(len(x)), "sparsity": 0.6, "levels_path": [0.2, 0.4, 0.6, 0.8, 1.0],
            "rows": rows}


def _table7_image(size):
    from skimage import data
    from skimage.transform import resize

    return resize(data.camera().astype(np.float64) / 255.0, (size, size), anti_aliasing=True)


def _trace_child(method: str, size: int, iterations: int, time_limit) -> dict:
    """Runs in a fresh subprocess (so that a single over-long iteration can be cut off)."""
    _setup_threads()
    from virolbi.smoother.trace import projection_trace

    r = projection_trace(_table7_image(size), iterations, method, time_limit=time_limit)
    r.pop("records")
    return r


def section_b(args) -> dict:
    out = {"image": f"scikit-image camera, resized to {args.table7_size}x{args.table7_size}, gray",
           "iterations": args.table7_iterations, "paper_seconds": PAPER_TABLE7, "rows": {}}
    limits = {"graph": None, "lsqr": args.time_limit_lsqr, "pinv": args.time_limit_pinv}
    for method in ("graph", "lsqr", "pinv"):
        runs = []
        for _ in range(args.repeats if method == "graph" else 1):
            limit = limits[method]
            cmd = [sys.executable, __file__, "--_trace", method,
                   "--table7-size", str(args.table7_size),
                   "--table7-iterations", str(args.table7_iterations)]
            if limit is not None:
                cmd += ["--time-limit-" + method, str(limit)]
            wall = 2 * (limit or 60) + 30  # one iteration may overrun the limit: cut it off here
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=wall)
                r = json.loads(p.stdout.strip().splitlines()[-1])
                print(f"  {method}: {r['iterations_done']} iterations in {r['seconds']:.2f}s",
                      flush=True)
            except subprocess.TimeoutExpired:
                # Not even one iteration within `wall` seconds: report a lower bound.
                r = {"projection": method, "iterations": args.table7_iterations,
                     "iterations_done": 0, "seconds": wall, "seconds_per_iteration": wall,
                     "extrapolated_seconds": wall * args.table7_iterations, "extrapolated": True,
                     "lower_bound": True, "support_changes": 0, "labellings": 0}
                print(f"  {method}: no iteration finished in {wall}s (lower bound)", flush=True)
            runs.append(r)
        mid = runs[int(np.argsort([r["seconds"] for r in runs])[len(runs) // 2])]
        mid["seconds_runs"] = common.summarize([r["seconds"] for r in runs])
        mid["time_limit"] = limits[method]
        out["rows"][method] = mid
    return out


def _memory_child(method: str, n: int, batch: int) -> dict:
    """Runs in a fresh subprocess: peak RSS growth (and tracemalloc peak) of one call."""
    _setup_threads()
    methods, torch = _methods()
    imgs = _images(max(n, 10))
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().float() / 255.0)[:batch].contiguous()
    methods[method](x[:1])  # imports, compilation and caches outside the measurement
    numpy_only = "virolbi" not in method
    peak_tm = None
    if numpy_only:  # tracemalloc sees NumPy allocations (not torch's); on one image
        tracemalloc.start()
        methods[method](x[:1])
        peak_tm = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    before, peak = common.peak_rss_during(lambda: methods[method](x))
    return {"batch": len(x), "rss_before_mib": before, "rss_peak_mib": peak,
            "rss_growth_per_image_mib": (peak - before) / len(x),
            "rss_growth_batch_mib": peak - before,
            "maxrss_mib": common.maxrss_mib(), "tracemalloc_peak_per_image_mib": peak_tm}


def section_c(args) -> dict:
    batches = {name: args.batch_size for name in FAST}
    batches["virolbi smooth 0.6, explicit (Eq. 5)"] = min(args.explicit_n, args.batch_size)
    batches["NumPy Eq. 5 reference (per image)"] = 1
    out = {"method": "fresh subprocess per method, after a 1-image warm-up; RSS growth = peak "
                     "resident set size during the call (sampled every 0.5 ms from "
                     "/proc/self/statm) minus the RSS just before it, for the whole batch and "
                     "divided by the batch size; tracemalloc peak of one image for the "
                     "NumPy-only methods (chambolle and the reference work image by image)",
           "rows": {}}
    for name, batch in batches.items():
        cmd = [sys.executable, __file__, "--_memory", name, "--n", str(args.n),
               "--batch-size", str(batch)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            out["rows"][name] = {"error": p.stderr.strip().splitlines()[-1:]}
            continue
        out["rows"][name] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"  {name}: {out['rows'][name]['rss_growth_per_image_mib']:.3f} MiB/image", flush=True)
    return out


def _smooth_vs_chambolle(x, batch: int, repeats: int = 1) -> dict:
    """Images/s of ``smooth`` at 0.6 in batches of ``batch`` and of chambolle on the same images."""
    methods, _ = _methods()
    smooth, chamb = methods["virolbi smooth 0.6, imex (default)"], methods[CHAMB]

    def batched():
        for i in range(0, len(x), batch):
            smooth(x[i:i + batch].contiguous())

    res = common.interleaved({"smooth": batched, "chambolle": lambda: chamb(x)}, repeats)
    rate = {k: len(x) / v["median"] for k, v in res.items()}
    return {"images": int(len(x)), "batch": batch, "smooth_images_per_s": rate["smooth"],
            "chambolle_images_per_s": rate["chambolle"],
            "ratio_vs_chambolle": rate["smooth"] / rate["chambolle"], "timings": res}


def section_d(args) -> dict:
    import torch

    imgs = _images(args.n_batch)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().float() / 255.0
    rows = {}
    for batch in (1, 16, 256):
        xs = x[: min(len(x), 64)] if batch == 1 else x
        rows[str(batch)] = _smooth_vs_chambolle(xs, batch, args.repeats_batch)
        print(f"  batch {batch}: {rows[str(batch)]['smooth_images_per_s']:.0f} images/s", flush=True)
    per16 = rows["256"]["smooth_images_per_s"] / rows["16"]["smooth_images_per_s"]
    return {"rows": rows, "batch256_over_batch16": per16}


def section_e(args) -> dict:
    import torch

    imgs = _images(args.n_batch)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().float() / 255.0
    quiet = _smooth_vs_chambolle(x, 256, args.repeats_batch)
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        loaded = _smooth_vs_chambolle(x, 256, args.repeats_batch)
    finally:
        load.kill()
        load.wait()
    keep = {k: loaded[f"{k}_images_per_s"] / quiet[f"{k}_images_per_s"] for k in ("smooth", "chambolle")}
    return {"quiet": quiet, "loaded": loaded, "kept_fraction": keep,
            "load": "one Python busy-loop process (one core busy)"}


def _phase_times(repeats: int = 2000) -> dict:
    """Microseconds per call of each phase of one iteration, on a real 32x32 image's state."""
    import torch

    import virolbi.smoother.fused as fused

    x = torch.from_numpy(_images(1)).permute(0, 3, 1, 2).float() / 255.0
    nc, h, w = x.shape[1:]
    n = h * w
    rng = np.random.default_rng(0)
    u = x[0].numpy().reshape(nc, n).copy()
    z = (rng.standard_normal((nc, n)) * 0.6).astype(np.float32)
    act, flat = np.zeros(n, bool), np.zeros(n, bool)
    valid = np.ones(n, np.float32)
    gam, dtg = np.zeros((nc, n), np.float32), np.zeros((nc, n), np.float32)
    consts = np.array([0.4, 2.0, 5.0, 1.0, 0.0], np.float32)
    scratch, spec = np.empty((3, n), np.float32), np.empty((nc * h, w), np.float32)
    solver = fused.width_transform(h, w, 1.0, np.float32)
    u3, dtg3 = u.reshape(nc, h, w), dtg.reshape(nc, h, w)
    calls = {"exact solve (DCT, Thomas, inverse DCT)":
             lambda: fused._solve(dtg3, u3, *solver, spec, u3.copy()),
             "edge pass, horizontal": lambda: fused._edge_pass(u, z, act, flat, valid, gam, 1,
                                                               consts, scratch),
             "edge pass, vertical": lambda: fused._edge_pass(u, z, act, flat, valid, gam, w,
                                                             consts, scratch),
             "adjoint D^T gamma": lambda: fused._adjoint(gam, gam, w, dtg)}
    out = {}
    for name, fn in calls.items():
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[name] = (time.perf_counter() - t0) / repeats * 1e6
    return out


def section_f(args) -> dict:
    import torch

    import virolbi.smoother.fused as fused
    from virolbi.smoother import lbi_path

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        phases = _phase_times()
        imgs = _images(args.n_batch)
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().float() / 255.0
        spent = {}
        for key, levels in (("smooth 0.6", (0.6,)), ("path 0.2..0.8", (0.2, 0.4, 0.6, 0.8))):
            t0 = time.perf_counter()
            r = lbi_path(x, levels)
            spent[key] = {"seconds": time.perf_counter() - t0,
                          "iterations_per_image": float(r.iterations[-1].double().mean())}
            spent[key]["us_per_image_iteration"] = (spent[key]["seconds"] / len(x) * 1e6
                                                    / spent[key]["iterations_per_image"])
    finally:
        torch.set_num_threads(threads)
    return {"phases_us": phases, "runs": spent, "threads": 1, "compiled": fused.available()}


def render(results: dict) -> str:
    md = ["# ViRoLBI smoother benchmark", ""]
    m = results["machine"]
    md.append(f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch threads "
              f"{m['torch_threads']}, OpenBLAS threads {m['blas_threads']}, numba threads "
              f"{m['numba_threads']} ({m.get('numba_threading_layer')} layer), device "
              f"{m['device']}; load average at start "
              f"{', '.join(f'{v:.1f}' for v in m['load_average_at_start'])} (shared machine: "
              f"timings are noisy, ratios are taken side by side). Commit `{m['commit'][:10]}`"
              f"{' (dirty)' if m['dirty'] else ''}, torch {m['torch']}, numpy {m['numpy']}, "
              f"scikit-image {m['scikit-image']}, numba {m['numba']}, {m['date_utc']}.")
    md.append("")
    if "a" in results:
        a = results["a"]
        md += [f"## (a) Throughput at sparsity 0.6, CIFAR-10 (JPEG), {a['n_images']} images", ""]
        rows = []
        for name, r in a["rows"].items():
            spread = r.get("images_per_s_batches")
            sp = f"{spread['min']:.1f}–{spread['max']:.1f}" if spread else "one run"
            ratio = r["ratio_vs_chambolle"]
            rows.append([name, r["images"] if not r.get("subset") else f"{r['images']} (subset)",
                         r["batch_size"], round(r["images_per_s"], 2), sp,
                         f"{ratio['median']:.3f}×", f"{r['speedup_vs_numpy_reference']:.1f}×"])
        md.append(common.markdown_table(
            ["method", "images timed", "batch", "images/s", "spread over batches",
             "vs chambolle (median of per-batch ratios)", "vs NumPy Eq. 5 reference"], rows))
        md += ["", "Float32 batches for virolbi; chambolle gets the same float32 images (H, W, C). "
               "The Eq. 5 solver and the NumPy reference are timed on a subset (first images), "
               "each paired with chambolle on the same subset for its ratio.", ""]
    if "b" in results:
        b = results["b"]
        md += [f"## (b) Table 7 setting: {b['image']}, {b['iterations']} Eq. 5 iterations, "
               "projection at every iteration", ""]
        rows = []
        for method, r in b["rows"].items():
            note = (f"lower bound: not one iteration finished in {r['seconds']:.0f} s"
                    if r.get("lower_bound") else
                    f"extrapolated from {r['iterations_done']} iterations (time limit "
                    f"{r['time_limit']} s)" if r["extrapolated"] else
                    f"measured (median of {r['seconds_runs']['repeats']})")
            secs = round(r["extrapolated_seconds"], 3)
            rows.append([method, f"> {secs:,.0f}" if r.get("lower_bound") else secs, note,
                         r["support_changes"], r["labellings"] if method == "graph" else "-",
                         b["paper_seconds"][method]])
        md.append(common.markdown_table(["projection", "seconds (15 000 it.)", "how",
                                         "support changes", "labellings", "paper (s)"], rows))
        md += ["", "Linear extrapolation assumes every iteration costs what the first ones did. "
               "The early iterations (empty or small support: nearly all edges inactive, the "
               "largest systems) are likely the most expensive for LSQR and the SVD, so the "
               "LSQR figure is probably an overestimate; the pinv figure is a lower bound (its "
               "first iteration, a dense SVD of the whole difference matrix, was cut off). "
               "OpenBLAS runs on 1 thread (2 threads are ~100x slower on this shared machine).",
               ""]
    for rerun in results.get("partial_reruns", []):
        mm = rerun["machine"]
        md += [f"Section(s) {rerun['sections']} re-run at {mm['date_utc']} on {mm['cpu']} "
               f"(commit `{mm['commit'][:10]}`, load average {mm['load_average_at_start'][0]:.1f}).",
               ""]
    if "c" in results:
        c = results["c"]
        md += ["## (c) Peak memory per image", "", c["method"] + ".", ""]
        rows = []
        for name, r in c["rows"].items():
            if "error" in r:
                rows.append([name, "error", "", ""])
                continue
            tm = r["tracemalloc_peak_per_image_mib"]
            rows.append([name, r["batch"], round(r["rss_growth_batch_mib"], 1),
                         round(r["rss_growth_per_image_mib"], 3),
                         "-" if tm is None else round(tm, 3)])
        md.append(common.markdown_table(["method", "batch", "RSS growth, batch (MiB)",
                                         "per image (MiB)", "tracemalloc peak, one image (MiB)"],
                                        rows))
        md.append("")
    if "d" in results:
        d = results["d"]
        md += ["## (d) Batch size: `smooth` at 0.6 against chambolle on the same images", ""]
        rows = [[b, r["images"], round(r["smooth_images_per_s"], 1),
                 round(r["chambolle_images_per_s"], 1), f"{r['ratio_vs_chambolle']:.2f}×"]
                for b, r in d["rows"].items()]
        md.append(common.markdown_table(["batch", "images", "smooth images/s", "chambolle images/s",
                                         "ratio"], rows))
        md += ["", f"Per image, a batch of 256 is {d['batch256_over_batch16']:.2f}× as fast as a "
               "batch of 16.", ""]
    if "e" in results:
        e = results["e"]
        md += ["## (e) Under load: " + e["load"], ""]
        rows = [[k, round(e["quiet"][f"{k}_images_per_s"], 1), round(e["loaded"][f"{k}_images_per_s"], 1),
                 f"{100 * e['kept_fraction'][k]:.0f} %"] for k in ("smooth", "chambolle")]
        md.append(common.markdown_table(["method", "quiet images/s", "loaded images/s",
                                         "kept"], rows))
        md.append("")
    if "f" in results:
        f = results["f"]
        md += ["## (f) Where the time goes (compiled path, one thread)", ""]
        total = sum(f["phases_us"].values())
        rows = [[k, round(v, 2), f"{100 * v / total:.0f} %"] for k, v in f["phases_us"].items()]
        md.append(common.markdown_table(["phase (one image, one iteration)", "µs", "share"], rows))
        md.append("")
        rows = [[k, round(v["iterations_per_image"], 1), round(v["us_per_image_iteration"], 2)]
                for k, v in f["runs"].items()]
        md.append(common.markdown_table(["run", "iterations per image (mean, counted from 0)",
                                         "µs per image-iteration, everything included"], rows))
        md.append("")
    if "g" in results:
        md += sizes.render_g(results["g"])
    return "\n".join(md)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (< 1 minute)")
    p.add_argument("--sections", default="abcdefg", help="any of a ... g (default all)")
    p.add_argument("--size-repeats", type=int, default=3, help="interleaved repeats in (g)")
    p.add_argument("--load-procs", type=int, default=3, help="busy processes in (g)'s load rows")
    p.add_argument("--n-batch", type=int, default=256, help="images for (d) and (e)")
    p.add_argument("--repeats-batch", type=int, default=2, help="repeats in (d) and (e)")
    p.add_argument("--n", type=int, default=1000, help="images for (a): first n/10 per class")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--explicit-n", type=int, default=100, help="subset for the Eq. 5 solver")
    p.add_argument("--reference-n", type=int, default=20, help="subset for the NumPy reference")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the graph trace in (b)")
    p.add_argument("--table7-size", type=int, default=84)
    p.add_argument("--table7-iterations", type=int, default=15000)
    p.add_argument("--time-limit-lsqr", type=float, default=30.0)
    p.add_argument("--time-limit-pinv", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=common.RESULTS)
    p.add_argument("--name", default=None, help="output name (default smoother, smoother-quick)")
    p.add_argument("--_memory", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_trace", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._trace:
        limit = {"lsqr": args.time_limit_lsqr, "pinv": args.time_limit_pinv}.get(args._trace)
        print(json.dumps(_trace_child(args._trace, args.table7_size, args.table7_iterations,
                                      limit)))
        return 0
    if args._memory:
        print(json.dumps(_memory_child(args._memory, args.n, args.batch_size)))
        return 0
    if args.quick:
        args.n, args.batch_size, args.explicit_n, args.reference_n = 10, 10, 2, 1
        args.repeats, args.table7_size, args.table7_iterations = 1, 16, 500
        args.time_limit_lsqr = args.time_limit_pinv = 1.0
        args.n_batch, args.repeats_batch = 20, 1
    _setup_threads()
    name = args.name or ("smoother-quick" if args.quick else "smoother")
    results = {}
    previous = args.out / f"{name}.json"
    if set(args.sections) != set("abcdefg") and previous.exists():  # re-run of some sections
        from virolbi.io import load_json
        results = load_json(previous)
        results.setdefault("partial_reruns", []).append(
            {"sections": args.sections, "machine": common.metadata(),
             "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}})
    else:
        results["machine"] = common.metadata()
        results["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    t0 = time.perf_counter()
    for sec, fn in (("a", section_a), ("b", section_b), ("c", section_c), ("d", section_d),
                    ("e", section_e), ("f", section_f), ("g", sizes.section_g)):
        if sec in args.sections:
            print(f"section ({sec}) ...", flush=True)
            results[sec] = fn(args)
    results["total_seconds"] = time.perf_counter() - t0
    if not results["machine"].get("numba_threading_layer"):
        results["machine"]["numba_threading_layer"] = common.numba_threading_layer()
    md = render(results)
    js, mdp = common.write_results(name, results, md, args.out)
    print(md)
    print(f"wrote {js} and {mdp} ({results['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
