"""``virolbi explain``: Grad-CAM heat maps of a model on images, original and smoothed or blurred.

Example::

    virolbi explain --model fast_cifar10_fixed_s0 --images cifar10-jpeg:val --limit 8 \\
        --variants original,blur,smooth:0.6 --output-dir explain/

writes ``explain/gradcam.png`` (rows: images; for each variant the image and its heat map) and
``explain/gradcam.npy`` (float32 maps ``(variants, images, H, W)``, each summing to 1) with
``explain/gradcam.json`` saying what is in it. ``--images`` is a folder of image files of one size
or ``DATASET:SPLIT`` (e.g. ``cifar10-jpeg:val``; ``--limit`` images, as even as possible over the
classes). Maps are for the true class when the labels are known, else the predicted one.
``--method lrp`` writes ``lrp.*`` instead: signed LRP-ε relevance per pixel in the .npy (summed over
colour channels), its positive part normalised to sum 1 in the figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "explain"
HELP = "Grad-CAM or LRP heat maps of a model on images, original and smoothed or blurred"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a shipped model (virolbi weights list) or a checkpoint file")
    parser.add_argument("--images", required=True,
                        help="a folder of image files of one size, or DATASET:SPLIT")
    parser.add_argument("--limit", type=int, default=8, help="images from DATASET:SPLIT")
    parser.add_argument("--seed", type=int, default=0, help="seed of the DATASET:SPLIT subset")
    parser.add_argument("--method", choices=("gradcam", "lrp"), default="gradcam",
                        help="gradcam (captum, last convolution) or lrp (LRP-epsilon through the fast "
                             "network with BatchNorm folded; airbench models)")
    parser.add_argument("--variants", default="original,blur,smooth:0.6",
                        help="comma-separated: original, blur, smooth:LEVEL")
    parser.add_argument("--output-dir", default="explain", metavar="DIR",
                        help="folder of METHOD.png, METHOD.npy and METHOD.json")


def parse_variants(text: str) -> list[tuple[str, float | None]]:
    """``"original,blur,smooth:0.6"`` -> ``[("original", None), ("blur", None),
    ("smooth", 0.6)]`` (:func:`virolbi.explain.heatmaps.parse_variants`)."""
    from virolbi.explain.heatmaps import parse_variants as parse

    return parse(text, "--variants")


def _load(args: argparse.Namespace):
    """Images ``(B, C, H, W)`` float in [0, 1], labels or None, and their names."""
    import torch

    from virolbi.errors import InputError

    path = Path(args.images)
    if path.is_dir():
        from virolbi.imagefiles import load_images
        from virolbi.io import IMAGE_SUFFIXES

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images = load_images(files)
        if len({im.size for im in images}) != 1:
            raise InputError(f"--images {path}: the images differ in size; give images of one size")
        return torch.stack([im.image.float() for im in images]), None, [p.name for p in files]
    name, sep, split = str(args.images).partition(":")
    if not sep:
        raise InputError(f"--images must be a folder or DATASET:SPLIT, got {args.images!r}")
    from virolbi.data import load_dataset
    from virolbi.data.subset import balanced_subset

    ds = load_dataset(name, split)
    idx = balanced_subset(ds.targets, args.limit, args.seed)
    x, y = ds.get_batch(idx)
    return x.float() / 255.0, y, [f"{name}:{split}[{i}]" for i in idx.tolist()]


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from virolbi.cli.evaluate import build_model
    from virolbi.errors import InputError
    from virolbi.explain.heatmaps import attribution, overlay_grid, positive_normalised, variant
    from virolbi.imagefiles import run_catching_unreached
    from virolbi.io import atomic_path, check_output_dir, save_json
    from virolbi.viz import save_figure

    if args.limit < 1:
        raise InputError(f"--limit must be a positive integer, got {args.limit}")
    variants = parse_variants(args.variants)
    out = check_output_dir(args.output_dir, "--output-dir")
    model, _ = build_model(args.model)
    x, y, names = _load(args)
    labels, shown, maps = [], [], []
    method = args.method
    for name, level in variants:
        xv, _ = run_catching_unreached(lambda t: variant(t, name, level), x)
        shown.append(xv)
        maps.append(attribution(model, xv, y, method))
        labels.append(name if level is None else f"{name} {level:g}")
    stacked = torch.stack(maps).numpy().astype(np.float32)
    with atomic_path(out / f"{method}.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, stacked)
    what = ("gradcam (captum LayerGradCam, last Conv2d); maps sum to 1" if method == "gradcam" else
            "lrp (LRP-epsilon, eps 1e-6, BatchNorm folded, identity rule for GELU); signed "
            "relevance summed over colour channels; the figure shows the positive part")
    save_json({"model": args.model, "method": what,
               "target": "true class" if y is not None else "predicted class",
               "variants": labels, "images": names,
               "maps": f"{method}.npy (variants, images, H, W)"}, out / f"{method}.json")
    shown_maps = stacked if method == "gradcam" else positive_normalised(stacked)
    fig = overlay_grid(torch.stack(shown), shown_maps, labels, method)
    save_figure(fig, out / f"{method}.png")
    print(f"virolbi explain: {len(names)} image(s) x {len(labels)} variant(s) -> {out}/{method}.png")
    return 0
