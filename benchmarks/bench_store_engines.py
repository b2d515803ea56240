"""Throughput of ``virolbi smooth-dataset``'s engines, and the seconds per image of the cost model
(issue #31; docs/smoothing_at_scale.md).

Both engines smooth the same CIFAR-10 (JPEG) images along the Iterative path (levels 0.3 … 0.9,
one image-path run per image) in shards, with ``--workers`` processes of one thread each: the
``local`` engine's process pool and a local Ray instance of as many CPUs. Each engine runs
``--rounds`` times, alternating which goes first. Per run: the wall time of the engine alone
(tasks in, arrays back, nothing written), the steady-state throughput (images finished after
the first round of shards, over the time since), the start-up (time to the first result minus
that shard's own compute), and the core-seconds not spent smoothing; then the wall time of a whole
``build_store`` (shards written and checksummed). The load average is recorded before and after:
on a shared machine the absolute numbers are lowered by other jobs; the engine ratio is what
counts.

``--photos N`` also times the path 0.3 … 0.9 on N of scikit-image's photographs resized and
centre-cropped to 224 px (ImageNet's evaluation transform), one thread: the seconds per image
of the ImageNet cost model.

    nice -n 10 python benchmarks/bench_store_engines.py --images 1024 --rounds 2 --photos 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

import numpy as np
import torch

from common import load_cifar, markdown_table, metadata, write_results
import virolbi
from virolbi.store import build_store
from virolbi.store.engines import run_local
from virolbi.store.ray_engine import run_ray
from virolbi.store.worker import ShardTask

LEVELS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def engine_run(engine: str, images: np.ndarray, shard_size: int, workers: int) -> dict:
    """One run of ``engine`` over ``images`` (nothing written): wall, steady rate, start-up."""
    tasks = [ShardTask(i, s, min(s + shard_size, len(images)), images[s:s + shard_size], LEVELS,
                       {}, None, 16) for i, s in enumerate(range(0, len(images), shard_size))]
    stamps: list[tuple[float, float, int]] = []
    t0 = time.perf_counter()

    def on_done(result):
        stamps.append((time.perf_counter() - t0, result[2], result[1].shape[1]))
    (run_ray if engine == "ray" else run_local)(tasks, on_done, workers)
    wall = time.perf_counter() - t0
    stamps.sort()
    k = min(workers, len(stamps) - 1)             # the first round of shards is the warm-up
    steady = sum(n for _, _, n in stamps[k:]) / (stamps[-1][0] - stamps[k - 1][0])
    compute = sum(sec for _, sec, _ in stamps)
    return {"wall_s": wall, "images_per_s": len(images) / wall, "steady_images_per_s": steady,
            "startup_s": stamps[0][0] - stamps[0][1], "compute_core_s": compute,
            "idle_core_s": wall * workers - compute}


def store_run(engine: str, images: np.ndarray, shard_size: int, workers: int) -> float:
    """Wall seconds of a whole build_store (shards written and checksummed)."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        build_store(images, os.path.join(d, "s"), LEVELS, engine=engine, workers=workers,
                    shard_size=shard_size, progress=False)
        return time.perf_counter() - t0


def photo_seconds(n: int) -> list[float]:
    """Seconds of the path 0.3 … 0.9 per 224-px photograph, one thread."""
    from PIL import Image
    from skimage import data

    from virolbi.data.dataset import resize_center_crop

    names = ("astronaut", "coffee", "chelsea", "rocket")
    out = []
    torch.set_num_threads(1)
    for i in range(n):
        img = np.asarray(resize_center_crop(Image.fromarray(getattr(data, names[i % 4])()), 224))
        t0 = time.perf_counter()
        virolbi.image_path(np.ascontiguousarray(img.transpose(2, 0, 1)), LEVELS)
        out.append(time.perf_counter() - t0)
    return out


def _markdown(res: dict) -> str:
    rows = [[e, f"{r['wall_s']:.1f}", f"{r['images_per_s']:.1f}", f"{r['steady_images_per_s']:.1f}",
             f"{r['startup_s']:.1f}", f"{r['idle_core_s']:.1f}", f"{r['build_store_s']:.1f}"]
            for e, r in res["median"].items()]
    table = markdown_table(["engine", "wall s", "images/s", "steady images/s", "start-up s",
                            "idle core-s", "build_store s"], rows)
    photos = (f"\n\nPath 0.3 … 0.9 of a 224-px photograph, one thread: median "
              f"{np.median(res['photo_seconds']):.2f} s (each: "
              f"{', '.join(f'{s:.2f}' for s in res['photo_seconds'])})." if res["photo_seconds"]
              else "")
    return (f"# smooth-dataset engines\n\n{res['images']} CIFAR-10 (JPEG) images, levels "
            f"{', '.join(map(str, LEVELS))} (one path run each), shards of {res['shard_size']}, "
            f"{res['workers']} workers of one thread; median of {res['rounds']} alternating rounds. "
            f"Load before: `{res['uptime_before']}`; after: `{res['uptime_after']}` (a training "
            f"job shares these cores: absolute numbers are lowered, the ratio is what counts).\n\n"
            f"{table}\n\nSteady-state ratio ray/local: {res['steady_ratio_ray_over_local']:.2f}; "
            f"end-to-end ratio: {res['wall_ratio_ray_over_local']:.2f}.{photos}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--photos", type=int, default=4)
    p.add_argument("--name", default="store_engines")
    a = p.parse_args()
    images = load_cifar(a.images)[0][:a.images]
    res = {"meta": metadata(), "uptime_before": _uptime(), "images": len(images),
           "levels": LEVELS, "shard_size": a.shard_size, "workers": a.workers, "rounds": a.rounds,
           "runs": {"local": [], "ray": []}}
    for r in range(a.rounds):
        for engine in (("local", "ray") if r % 2 == 0 else ("ray", "local")):
            run = engine_run(engine, images, a.shard_size, a.workers)
            run["build_store_s"] = store_run(engine, images, a.shard_size, a.workers)
            res["runs"][engine].append(run)
            print(engine, {k: round(v, 2) for k, v in run.items()}, flush=True)
    res["median"] = {e: {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
                     for e, runs in res["runs"].items()}
    med = res["median"]
    res["steady_ratio_ray_over_local"] = med["ray"]["steady_images_per_s"] / med["local"]["steady_images_per_s"]
    res["wall_ratio_ray_over_local"] = med["ray"]["images_per_s"] / med["local"]["images_per_s"]
    res["photo_seconds"] = photo_seconds(a.photos)
    res["uptime_after"] = _uptime()
    for path in write_results(a.name, res, _markdown(res)):
        print(path)


if __name__ == "__main__":
    main()
