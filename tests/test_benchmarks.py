"""The benchmark scripts run as documented (no timing is asserted: they measure, tests check)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_bench_gpu_runs_on_the_cpu_and_its_paths_agree(tmp_path):
    """``bench_gpu.py --device cpu --quick``: the tensor path (what CUDA runs) against the compiled
    path on the same images; both agree, and JSON + Markdown are written."""
    out = _run(str(BENCH / "bench_gpu.py"), "--device", "cpu", "--quick", "--output-dir",
               str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "gpu-quick.json").read_text())
    assert [r["side"] for r in res["rows"]] == [32, 48]
    for row in res["rows"]:
        assert row["max_iteration_difference"] <= 1 and row["support_agreement"] > 0.99
        assert row["device_s"]["median"] > 0 and row["cpu_s"]["median"] > 0
    assert "| 32 px, CIFAR-10 | 8 | 0.6 |" in (tmp_path / "gpu-quick.md").read_text()


def test_bench_gpu_without_cuda_says_so_in_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = _run(str(BENCH / "bench_gpu.py"), "--output-dir", str(tmp_path))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == ("bench_gpu: --device cuda requested but CUDA is not available "
                                  "here; use --device cpu to check the script")


def test_size_section_rows_and_crossover():
    """Section (g)'s pieces on small sizes: every row has its iterations and ratios, the 32 px
    reference has ratio 1, and both width transforms of the solve are timed."""
    sys.path.insert(0, str(BENCH))
    try:
        import sizes
    finally:
        sys.path.pop(0)
    rows = sizes.size_rows((40,), repeats=1)
    assert list(rows) == ["32 px (64 CIFAR-10 images, 0.6)", "40 px RGB", "40 px gray"]
    assert rows["32 px (64 CIFAR-10 images, 0.6)"]["cost_vs_32px"] == 1.0
    for r in rows.values():
        assert r["iterations"] > 0 and np.isfinite(r["ns_per_pixel_iteration"])
        assert r["over_chambolle"] > 0
    cross = sizes.solve_crossover((16, 48), repeats=2)
    assert set(cross) == {16, 48} and all(set(v) == {"dense", "fft"} for v in cross.values())
