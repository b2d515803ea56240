"""``virolbi smooth``: smooth image files with ViRoLBI at one sparsity level.

Example::

    virolbi smooth photo.jpg scan.png --sparsity 0.6 --output-dir smoothed --report report.json

writes ``smoothed/photo_s0.60.png`` and ``smoothed/scan_s0.60.png`` (PNG, lossless; gray stays
gray, RGBA and palette images become RGB) and, with ``--report``, a JSON record per image
(iterations, sparsity reached, number of components, warnings, seconds). Float arrays saved with
NumPy (``.npy``, ``(C, H, W)`` or ``(H, W)`` in [0, 1]) are read too and written back as ``.npy``.

Every input is read and checked before anything is smoothed, and every file is written atomically,
so a bad input leaves no output behind. Images of the same size are smoothed together in batches;
the others one size at a time.

The file handling lives in :mod:`virolbi.imagefiles`; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from virolbi.checks import check_unit_interval
from virolbi.cli._common import (add_smoother_arguments, announce_dropped_alpha,
                                 announce_large_images, smoother_options,
                                 warn)
from virolbi.errors import InputError
from virolbi.imagefiles import load_images, output_name, smoothed_batches, write_output
from virolbi.io import check_output_dir, check_output_file

COMMAND = "smooth"
HELP = "smooth images with ViRoLBI at one sparsity level (writes <stem>_s<level>.png)"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (PNG, JPEG, ...; gray or colour) or .npy float arrays "
                             "(C, H, W) or (H, W) in [0, 1]")
    parser.add_argument("--sparsity", type=float, default=0.6,
                        help="target sparsity level in (0, 1]: the fraction of edges kept; lower "
                             "is smoother (paper: 0.6 for CIFAR, 0.3 for ImageNet100)")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="folder for the smoothed images <stem>_s<level>.png")
    parser.add_argument("--report", metavar="JSON", default=None,
                        help="also write a JSON report (per image: iterations, sparsity reached, "
                             "components, warnings, seconds)")
    add_smoother_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from virolbi import __version__, smooth
    from virolbi.io import save_json

    sparsity = check_unit_interval(args.sparsity, "--sparsity")
    options = smoother_options(args)
    out_dir = check_output_dir(args.output_dir, "--output-dir")
    check_output_file(args.report, "--report")
    images = load_images(args.images)
    announce_large_images(COMMAND, images, options, sparsity)
    announce_dropped_alpha(COMMAND, images)
    names = [output_name(im, sparsity) for im in images]
    seen: dict[str, Path] = {}
    for im, name in zip(images, names):
        if name in seen:
            raise InputError(f"{seen[name]} and {im.path} would both be written to "
                             f"{out_dir / name}; rename one of them")
        seen[name] = im.path

    records: list[dict] = [{} for _ in images]
    start = time.perf_counter()
    batches = smoothed_batches(images, int(args.batch_size), "smooth",
                               lambda x: smooth(x, sparsity, return_info=True, **options))
    for batch, out, res, per_image, seconds in batches:
        for b, i in enumerate(batch):
            target = out_dir / names[i]
            write_output(images[i], out[b], target)
            records[i] = {
                "input": str(images[i].path), "output": str(target),
                "size": list(images[i].size),
                "iterations": int(res.iterations[0, b]),
                "sparsity_reached": round(float(res.sparsity[0, b]), 6),
                "reached": bool(res.reached[0, b]),
                "components": int(res.n_components[0, b]),
                "warnings": per_image[b],
                "seconds": round(seconds / len(batch), 6),
                "batch_size": len(batch),
                "step": res.step,
            }
            for w in per_image[b]:
                warn(COMMAND, f"{images[i].path}: {w}")
    total = time.perf_counter() - start
    if args.report:
        save_json({"command": COMMAND, "version": __version__, "sparsity": sparsity,
                   "options": options, "seconds": round(total, 6),
                   "images": records}, args.report)
    print(f"smoothed {len(images)} image(s) at sparsity {sparsity:g} into {out_dir} "
          f"in {total:.2f} s")
    return 0
