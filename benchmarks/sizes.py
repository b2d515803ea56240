"""Section (g) of ``bench_smoother.py``: the smoother at real image sizes, one thread.

For each size (64, 128, 224, 512 px; RGB and gray: scikit-image's astronaut resized) at sparsity
0.3 (the paper's ImageNet100 level), side by side in one process with a batch of 64 CIFAR-10 images
at 0.6 (the 32 px reference) and ``denoise_tv_chambolle`` (weight 0.1) on the same image, timed
interleaved (round robin with a rotating start):

- time, iterations and cost per pixel-iteration (everything included: start, path, projection),
  and its ratio to the 32 px cost;
- ViRoLBI's time over chambolle's;
- peak memory: resident-set growth of one ``smooth`` call in a fresh subprocess, per megapixel;
- the width DCT of the compiled solve, dense product against pocketfft, per width (the crossover
  behind ``virolbi.smoother.fused.DENSE_MAX_WIDTH``);
- under load: each size with default threads, quiet and with ``--load-procs`` busy processes
  (Python busy loops), the measuring process under ``nice -n 10`` as a user's job would be, with
  chambolle beside it as the yardstick (a niced process gets a small share whatever it does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SIZES = (64, 128, 224, 512)
QUICK_SIZES = (48, 80)
SPARSITY = 0.3
REFERENCE_SPARSITY = 0.6


def photo(size: int, gray: bool) -> np.ndarray:
    """scikit-image's astronaut (:func:`common.photographs`' first), area-resized to ``size``²,
    float32 ``(C, H, W)`` in [0, 1]; gray: the mean of its channels."""
    img = common.photographs(size, 1)[0]
    return np.ascontiguousarray(img.mean(0, keepdims=True) if gray else img)


def _cifar_reference(n: int = 64) -> np.ndarray:
    imgs, _ = common.load_cifar(n + 10)  # stratified: the first images of every class
    return np.ascontiguousarray(imgs[:n].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def _timed_cases(sizes) -> dict:
    """name -> (image, sparsity, pixels, smooth callable, chambolle callable or None)."""
    import virolbi
    from skimage.restoration import denoise_tv_chambolle

    ref = _cifar_reference()
    cases = {"32 px (64 CIFAR-10 images, 0.6)": (ref, REFERENCE_SPARSITY, ref.shape[0] * 32 * 32)}
    for size in sizes:
        for gray in (False, True):
            cases[f"{size} px {'gray' if gray else 'RGB'}"] = (photo(size, gray), SPARSITY, size * size)
    out = {}
    for name, (img, level, pixels) in cases.items():
        hwc = np.moveaxis(img, -3, -1)
        out[name] = (img, level, pixels, lambda img=img, level=level: virolbi.smooth(img, level),
                     lambda hwc=hwc: denoise_tv_chambolle(hwc, weight=0.1, channel_axis=-1))
    return out


def _iterations(img: np.ndarray, level: float) -> float:
    import warnings

    import virolbi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = virolbi.smooth(img, level, return_info=True)
    return float(info.iterations.double().mean())


def size_rows(sizes, repeats: int) -> dict:
    """Time, iterations, cost per pixel-iteration and the ratios, one thread, interleaved."""
    import torch

    torch.set_num_threads(1)
    cases = _timed_cases(sizes)
    fns = {}
    for name, (_, _, _, smooth_fn, chambolle_fn) in cases.items():
        fns[name] = smooth_fn
        fns[f"{name} | chambolle"] = chambolle_fn
    times = common.interleaved(fns, repeats)
    rows = {}
    for name, (img, level, pixels, _, _) in cases.items():
        it = _iterations(img, level)
        t = times[name]["median"]
        rows[name] = {"sparsity": level, "seconds": times[name], "iterations": it,
                      "ns_per_pixel_iteration": t / (pixels * it) * 1e9,
                      "chambolle_seconds": times[f"{name} | chambolle"],
                      "over_chambolle": t / times[f"{name} | chambolle"]["median"]}
    ref = rows[next(iter(rows))]["ns_per_pixel_iteration"]
    for r in rows.values():
        r["cost_vs_32px"] = r["ns_per_pixel_iteration"] / ref
    return rows


def solve_crossover(widths=(16, 32, 48, 64, 96, 128, 224), repeats: int = 200) -> dict:
    """Microseconds of one compiled solve (3 channels, square image) with each width transform."""
    import virolbi.smoother.fused as fused

    out = {}
    for w in widths:
        dtg = np.random.default_rng(0).standard_normal((3, w, w)).astype(np.float32)
        u0, u, spec = np.zeros_like(dtg), np.empty_like(dtg), np.empty((3 * w, w), np.float32)
        fns = {}
        for fft in (False, True):
            tr = fused.width_transform(w, w, 1.0, np.float32, fft=fft)
            fns["fft" if fft else "dense"] = (lambda tr=tr: [fused._solve(dtg, u0, *tr, spec, u)
                                                            for _ in range(repeats)])
        t = common.interleaved(fns, 3)
        out[w] = {k: v["median"] / repeats * 1e6 for k, v in t.items()}
    return out


def memory_child(size: int, gray: bool) -> dict:
    """Peak resident-set growth during one ``smooth`` call (run in a fresh process; RSS sampled
    every 0.5 ms, :func:`common.peak_rss_during`)."""
    import torch

    import virolbi

    torch.set_num_threads(1)
    img = photo(size, gray)
    virolbi.smooth(photo(16, gray), SPARSITY)  # compile and import outside the measurement
    before, peak = common.peak_rss_during(lambda: virolbi.smooth(img, SPARSITY))
    growth = peak - before
    return {"size": size, "gray": gray, "rss_growth_mib": growth,
            "mib_per_megapixel": growth / (size * size / 1e6)}


def memory_rows(sizes) -> dict:
    out = {}
    for size in sizes:
        for gray in (False, True):
            cmd = [sys.executable, __file__, "--memory-child", str(size), "--gray" if gray else "--rgb"]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            key = f"{size} px {'gray' if gray else 'RGB'}"
            out[key] = (json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0
                        else {"error": res.stderr[-500:]})
    return out


def _busy() -> None:  # pragma: no cover - a load generator
    while True:
        pass


def loaded_rows(shapes, procs: int) -> dict:
    """``virolbi.smooth`` (default threads) and chambolle on the same image, quiet and with
    ``procs`` busy processes while this process runs under ``nice -n 10`` (a user's background
    job): a niced process gets a small share of the cores whatever it does, so what tells whether
    the smoother's threads spin is its slowdown against chambolle's (one thread, no pool)."""
    import multiprocessing as mp

    cases = {s: _loaded_case(s) for s in shapes}
    quiet = {s: [_timed(f) for f in fns] for s, fns in cases.items()}
    workers = [mp.Process(target=_busy, daemon=True) for _ in range(procs)]
    for w in workers:  # at the caller's priority; the measured process is niced after the fork
        w.start()
    try:
        os.nice(10)
        loaded = {s: [_timed(f) for f in fns] for s, fns in cases.items()}
    finally:
        for w in workers:
            w.terminate()
    out = {}
    for s in shapes:
        (qs, qc), (ls, lc) = quiet[s], loaded[s]
        out[f"{s[0]}x{s[1]} RGB"] = {"quiet_s": qs, "loaded_s": ls, "slowdown": ls / qs,
                                    "chambolle_quiet_s": qc, "chambolle_loaded_s": lc,
                                    "chambolle_slowdown": lc / qc,
                                    "relative_slowdown": (ls / qs) / (lc / qc)}
    return out


def _loaded_case(shape: tuple[int, int]):
    """(smooth, chambolle) on the astronaut resized to ``shape``, torch with all cores."""
    import torch

    import virolbi
    from skimage import transform
    from skimage.restoration import denoise_tv_chambolle

    torch.set_num_threads(os.cpu_count() or 1)
    hwc = transform.resize(np.moveaxis(photo(max(shape), False), 0, -1), shape,
                           anti_aliasing=True).astype(np.float32)
    chw = np.ascontiguousarray(np.moveaxis(hwc, -1, 0))
    virolbi.smooth(chw, SPARSITY)
    return (lambda: virolbi.smooth(chw, SPARSITY),
            lambda: denoise_tv_chambolle(hwc, weight=0.1, channel_axis=-1))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def section_g(args) -> dict:
    quick = getattr(args, "quick", False)
    sizes = QUICK_SIZES if quick else SIZES
    threads = __import__("torch").get_num_threads()
    try:
        rows = size_rows(sizes, 1 if quick else args.size_repeats)
        crossover = solve_crossover((16, 48) if quick else (16, 32, 48, 64, 96, 128, 224),
                                    repeats=5 if quick else 200)
    finally:
        __import__("torch").set_num_threads(threads)
    memory = memory_rows(sizes[-1:] if quick else sizes)
    load_shapes = ((48, 49),) if quick else ((128, 129), (224, 224), (512, 512))
    loaded = loaded_rows_subprocess(load_shapes, args.load_procs)
    return {"rows": rows, "solve_crossover_us": crossover, "memory": memory, "loaded": loaded,
            "load_procs": args.load_procs, "threads": 1}


def loaded_rows_subprocess(shapes, procs: int) -> dict:
    """:func:`loaded_rows` in a child process (it renices itself)."""
    arg = ";".join(f"{h}x{w}" for h, w in shapes)
    res = subprocess.run([sys.executable, __file__, "--loaded-child", arg, str(procs)],
                         capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        return {"error": res.stderr[-500:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def render_g(g: dict) -> list[str]:
    md = ["## (g) Real sizes, one thread (sparsity 0.3; the 32 px reference: 64 CIFAR-10 images at 0.6)",
          ""]
    rows = [[name, f"{r['seconds']['median']:.4f}", round(r["iterations"], 1),
             round(r["ns_per_pixel_iteration"], 2), f"{r['cost_vs_32px']:.2f}×",
             f"{r['chambolle_seconds']['median'] * 1e3:.2f}", f"{r['over_chambolle']:.1f}×"]
            for name, r in g["rows"].items()]
    md.append(common.markdown_table(["image", "smooth (s, median)", "iterations",
                                     "ns per pixel-iteration", "vs 32 px", "chambolle (ms)",
                                     "smooth / chambolle"], rows))
    md += ["", "Everything included (start, compiled path, projection); a pixel is a spatial "
           "position (RGB has three values per pixel).", "",
           "Peak memory (resident-set growth of one `smooth` call in a fresh process):", ""]
    rows = [[k, round(v.get("rss_growth_mib", float("nan")), 1),
             round(v.get("mib_per_megapixel", float("nan")), 1)] for k, v in g["memory"].items()]
    md.append(common.markdown_table(["image", "MiB", "MiB per megapixel"], rows))
    md += ["", "Width transform of the compiled solve (3 channels, µs per solve):", ""]
    rows = [[w, round(v["dense"], 1), round(v["fft"], 1), f"{v['fft'] / v['dense']:.2f}"]
            for w, v in g["solve_crossover_us"].items()]
    md.append(common.markdown_table(["width", "dense product", "pocketfft DCT", "fft / dense"], rows))
    md += ["", f"Under load ({g['load_procs']} busy processes; the measuring process niced by 10, "
           "default threads; chambolle in the same process as the yardstick):", ""]
    loaded = g["loaded"]
    rows = ([[k, f"{v['quiet_s']:.3f}", f"{v['loaded_s']:.3f}", f"{v['slowdown']:.1f}×",
              f"{v['chambolle_slowdown']:.1f}×", f"{v['relative_slowdown']:.2f}"]
             for k, v in loaded.items()] if "error" not in loaded else [["error", "", "", "", "", ""]])
    md.append(common.markdown_table(["image", "smooth quiet (s)", "smooth loaded (s)",
                                     "smooth slowdown", "chambolle slowdown",
                                     "smooth / chambolle slowdown"], rows))
    md.append("")
    return md


def _child(argv: list[str]) -> int:
    if argv[0] == "--memory-child":
        print(json.dumps(memory_child(int(argv[1]), argv[2] == "--gray")))
    else:
        shapes = [tuple(int(v) for v in s.split("x")) for s in argv[1].split(";")]
        print(json.dumps(loaded_rows(shapes, int(argv[2]))))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
