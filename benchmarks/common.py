"""Shared helpers of the benchmarks: run metadata, interleaved timing with median and spread, output.

Timings on the shared 2-core machines are noisy, so the benchmarks compare methods side by side in
one process on the same images with interleaved repeats (round-robin, rotating which method goes
first) and report the median and the spread (min, max) of each; ratios are taken per repeat.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _openblas():
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    return lib if hasattr(lib, "scipy_openblas_set_num_threads64_") else None


def set_blas_threads(n: int) -> int | None:
    """Set NumPy's OpenBLAS thread count at run time (returns the previous one, None if not found).

    On the shared 2-core machines OpenBLAS's threads spin against other processes and torch's OpenMP
    pool: a 264x144 SVD takes 1.7 s with 2 threads and 0.01 s with 1. Benchmarks use 1 and say so.
    """
    lib = _openblas()
    if lib is None:
        return None
    before = lib.scipy_openblas_get_num_threads64_()
    lib.scipy_openblas_set_num_threads64_(int(n))
    return before


def blas_threads() -> int | None:
    lib = _openblas()
    return None if lib is None else int(lib.scipy_openblas_get_num_threads64_())


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of /proc/cpuinfo (None where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_bf16_units() -> list[str]:
    """The CPU's bfloat16 matrix/vector units (``amx_bf16``, ``avx512_bf16``): bfloat16 autocast is
    fast only with one of them."""
    flags = set((_cpuinfo("flags") or "").split())
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def metadata() -> dict:
    """Run metadata: commit, versions, CPU, threads, device, load, time."""
    import numba
    import scipy
    import torch

    try:
        import skimage
        skv = skimage.__version__
    except ImportError:  # pragma: no cover
        skv = None
    import virolbi

    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "virolbi": getattr(virolbi, "__version__", None), "torch": torch.__version__,
        "numpy": np.__version__, "scipy": scipy.__version__, "numba": numba.__version__,
        "scikit-image": skv,
        "cpu": _cpu_model(), "cpu_bf16_units": _cpu_bf16_units(), "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "blas_threads": blas_threads(),
        # numba.get_num_threads() would launch numba's threads with its default (OpenMP) layer
        # before virolbi selects "workqueue", slowing the fused kernel ~10x: read the config only.
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "device": "cpu", "cuda_available": torch.cuda.is_available(),
        "load_average_at_start": list(os.getloadavg()),
    }


def numba_threading_layer() -> str | None:
    """The threading layer numba actually launched (call after the work; None if never launched)."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return None


def summarize(times: list[float]) -> dict:
    """Median and spread of repeated timings (seconds)."""
    t = np.asarray(times, dtype=np.float64)
    return {"median": float(np.median(t)), "min": float(t.min()), "max": float(t.max()),
            "repeats": int(t.size), "times": [float(v) for v in t]}


def interleaved(fns: dict, repeats: int, *, warmup: bool = True) -> dict:
    """Time every callable ``repeats`` times, round-robin with a rotating start, after one untimed
    warm-up call each; returns ``{name: summarize(times)}``."""
    names = list(fns)
    if warmup:
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: summarize(ts) for name, ts in times.items()}


def maxrss_mib() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    """Resident set size of this process now (MiB), from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_during(fn) -> tuple[float, float]:
    """Run ``fn()`` while a thread samples the resident set size every 0.5 ms; returns
    (RSS just before, peak RSS during) in MiB. Unlike ``ru_maxrss`` (a high-water mark of the whole
    process, often set by imports), this sees the call's own working set; glibc returns large
    freed blocks (tensors, arrays > 128 KiB are mmapped) to the system, so RSS falls back after."""
    import threading

    before = current_rss_mib()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], current_rss_mib())
            done.wait(0.0005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    peak[0] = max(peak[0], current_rss_mib())
    return before, peak[0]


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict, markdown: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """``<out_dir>/<name>.json`` and ``<name>.md``, written atomically."""
    from virolbi.io import save_json, save_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_json(data, out_dir / f"{name}.json"), save_text(markdown, out_dir / f"{name}.md")


def load_cifar(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n // 10`` images of every class of the shared CIFAR-10 JPEG copy (uint8
    ``(N, 32, 32, 3)``, labels), through the test suite's cached reader."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from conftest import load_shared_cifar
    finally:
        sys.path.pop(0)
    return load_shared_cifar(max(1, n // 10))


#: scikit-image's colour photographs (loaded by name from ``skimage.data``).
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket")


def photographs(side: int, n: int) -> np.ndarray:
    """``n`` float32 RGB photographs ``(n, 3, side, side)`` in [0, 1]: scikit-image's astronaut,
    coffee, chelsea and rocket in turn, area-resized (anti-aliased) to ``side``²."""
    from skimage import data, transform

    out = [transform.resize(getattr(data, PHOTOGRAPHS[i % len(PHOTOGRAPHS)])(), (side, side),
                            anti_aliasing=True) for i in range(n)]
    return np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2).astype(np.float32))
