"""``virolbi path``: the image-path figure of the paper (Fig. 1a / Fig. 6).

Example::

    virolbi path photo.jpg scan.png --levels 0.2,0.4,0.6,0.8,1.0 --output path.png

draws one row per image and one column per sparsity level (labelled with the level): ũ from coarse
to fine, all levels of an image from one LBI run (:func:`virolbi.image_path`). Images of the same
size are run together; the figure is written atomically (PNG, PDF, SVG or JPEG from the suffix).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from virolbi.cli._common import (add_smoother_arguments, announce_dropped_alpha,
                                 announce_large_images, parse_levels,
                                 smoother_options, warn)
from virolbi.imagefiles import load_images, smoothed_batches
from virolbi.errors import InputError
from virolbi.io import check_output_file

COMMAND = "path"
HELP = "draw the image path: each image smoothed at several sparsity levels (paper Fig. 1a/6)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (PNG, JPEG, ...) or .npy float arrays (C, H, W) / (H, W)")
    parser.add_argument("--levels", default="0.2,0.4,0.6,0.8,1.0",
                        help="comma-separated sparsity levels in (0, 1], one column each")
    parser.add_argument("--output", required=True, metavar="FIGURE",
                        help="figure file (.png, .pdf, .svg or .jpg)")
    parser.add_argument("--report", metavar="JSON", default=None,
                        help="also write a JSON report (per image and level: iterations, "
                             "sparsity reached, components, warnings)")
    add_smoother_arguments(parser)


def compute_paths(images, levels, options, batch_size, desc="path"):
    """``image_path`` of every loaded image, batched by size: returns one ``(L, C, H, W)`` tensor
    per image and one JSON record per image."""
    from virolbi import image_path

    paths: list[torch.Tensor] = [None] * len(images)  # type: ignore[list-item]
    records: list[dict] = [{} for _ in images]
    batches = smoothed_batches(images, batch_size, desc,
                               lambda x: image_path(x, levels, return_info=True, **options))
    for batch, out, res, per_image, seconds in batches:
        for b, i in enumerate(batch):
            paths[i] = out[:, b]
            records[i] = {
                "input": str(images[i].path), "size": list(images[i].size),
                "levels": list(res.levels),
                "iterations": [int(v) for v in res.iterations[:, b]],
                "sparsity_reached": [round(float(v), 6) for v in res.sparsity[:, b]],
                "reached": [bool(v) for v in res.reached[:, b]],
                "components": [int(v) for v in res.n_components[:, b]],
                "warnings": per_image[b],
                "seconds": round(seconds / len(batch), 6),
                "batch_size": len(batch),
                "step": res.step,
            }
    return paths, records


def run(args: argparse.Namespace) -> int:
    from virolbi import __version__
    from virolbi.io import save_json
    from virolbi.viz import FIGURE_SUFFIXES, plot_image_path, save_figure

    levels = parse_levels(args.levels)
    options = smoother_options(args)
    if not str(args.output).lower().endswith(FIGURE_SUFFIXES):
        raise InputError(f"--output must end in one of {', '.join(FIGURE_SUFFIXES)}, got "
                         f"{args.output!r}")
    check_output_file(args.output, "--output")
    check_output_file(args.report, "--report")
    images = load_images(args.images)
    announce_large_images(COMMAND, images, options, max(lv for lv in levels if lv < 1.0)
                          if min(levels) < 1.0 else 0.0)
    announce_dropped_alpha(COMMAND, images)
    for im in images:
        if im.size[0] not in (1, 3):
            raise InputError(f"{im.path}: the figure draws gray or RGB images, got "
                             f"{im.size[0]} channels")
    start = time.perf_counter()
    paths, records = compute_paths(images, levels, options, int(args.batch_size))
    for im, rec in zip(images, records):
        for w in rec["warnings"]:
            warn(COMMAND, f"{im.path}: {w}")
    fig = plot_image_path(paths, levels, titles=[im.path.name for im in images])
    save_figure(fig, args.output)
    total = time.perf_counter() - start
    if args.report:
        save_json({"command": COMMAND, "version": __version__, "levels": list(levels),
                   "options": options, "seconds": round(total, 6), "images": records},
                  args.report)
    print(f"image path of {len(images)} image(s) at levels {', '.join(f'{v:g}' for v in levels)} "
          f"written to {args.output} in {total:.2f} s")
    return 0
