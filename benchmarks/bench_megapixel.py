"""Time and peak memory of one megapixel photograph (a script, not a test): the figures behind the
CLI's estimate for large images (``virolbi.cli._common.SECONDS_PER_MEGAPIXEL``) and README's "Large
images". One thread; scikit-image's astronaut resized to 1024 x 1024 (RGB at levels 0.3, 0.6, 0.9;
gray at 0.6); peak resident-set growth sampled during the call (``common.peak_rss_during``).

Usage::

    python benchmarks/bench_megapixel.py           # ~4 minutes on one core
    python benchmarks/bench_megapixel.py --side 256 --name megapixel-quick
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import sizes  # noqa: E402

CASES = ((False, 0.3), (False, 0.6), (False, 0.9), (True, 0.6))


def measure(side: int) -> dict:
    import torch

    import virolbi

    torch.set_num_threads(1)
    virolbi.smooth(sizes.photo(32, False), 0.3)  # compile outside the measurement
    rows = {}
    for gray, level in CASES:
        img = sizes.photo(side, gray)
        kept = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            before, peak = common.peak_rss_during(
                lambda: kept.setdefault("r", virolbi.smooth(img, level, return_info=True)))
            secs = time.perf_counter() - t0
        info = kept["r"][1]
        mp = side * side / 1e6
        rows[f"{'gray' if gray else 'RGB'} {level:g}"] = {
            "gray": gray, "level": level, "seconds": secs, "seconds_per_megapixel": secs / mp,
            "iterations": int(info.iterations[0, 0]), "reached": bool(info.reached.all()),
            "peak_growth_mib": peak - before, "gb_per_megapixel": (peak - before) / 1024 / mp}
    return rows


def render(res: dict) -> str:
    m = res["machine"]
    md = [f"# One {res['side']}x{res['side']} photograph, one thread", "",
          f"{m['cpu']}; load average at start {m['load_average_at_start'][0]:.1f}; commit "
          f"`{m['commit'][:10]}`, {m['date_utc']}.", ""]
    rows = [[k, r["iterations"], "yes" if r["reached"] else "no (max_iter)", f"{r['seconds']:.1f}",
             f"{r['seconds_per_megapixel']:.1f}", f"{r['peak_growth_mib']:.0f}",
             f"{r['gb_per_megapixel']:.2f}"] for k, r in res["rows"].items()]
    md.append(common.markdown_table(["image, level", "iterations", "reached", "seconds",
                                     "s per MP", "peak growth (MiB)", "GB per MP"], rows))
    return "\n".join(md + [""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--name", default="megapixel")
    p.add_argument("--out", type=Path, default=common.RESULTS)
    args = p.parse_args(argv)
    res = {"machine": common.metadata(), "side": args.side, "rows": measure(args.side)}
    md = render(res)
    js, mdp = common.write_results(args.name, res, md, args.out)
    print(md)
    print(f"wrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
