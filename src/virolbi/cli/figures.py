"""``virolbi figures fig1b|fig2a|fig2b|fig2c|fig3|fig5|cam-mass|all``: draw the paper's figures
from the project's own data.

- ``fig1b``: Grad-CAM of the shipped Vanilla model on original, blurred and smoothed images.
- ``fig3``: LRP of the shipped Vanilla, Blur, Fix and Iterative models on the same three variants.
- ``fig2a``: images and smoothed images split into low and high frequencies (radius 6).
- ``fig2c``: where in the spectrum ViRoLBI and the Blur baseline change images, with the table of
  energy changed per frequency ring (:mod:`virolbi.explain.fig2c`).
- ``cam-mass``: how much of the shipped models' Grad-CAM falls on the (centred) object, per
  procedure, with intervals (:mod:`virolbi.explain.cam_mass`): the measured side of Fig. 5.

- ``fig2b`` / ``fig5`` (``--run DIR``): first-layer feature maps / Grad-CAM at each epoch a training
  kept (``logging.keep_checkpoints: [1, 2, 5, 10]``; :mod:`virolbi.explain.snapshots`).
"""

from __future__ import annotations

import argparse

COMMAND = "figures"
HELP = ("draw the paper's figures from the project's own data (fig1b, fig3: Grad-CAM / LRP heat "
        "maps; fig2a, fig2c: spectra; cam-mass: Grad-CAM on the object for the shipped models)")
FIGURES = ("fig1b", "fig2a", "fig2b", "fig2c", "fig3", "fig5", "cam-mass", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("figure", choices=FIGURES,
                        help="fig1b (Grad-CAM on original / blurred / smoothed images), fig2a "
                             "(radius-6 split of images and smoothed images), fig2c (spectra of "
                             "what smoothing changes), fig3 (LRP of the four procedures) or "
                             "cam-mass (Grad-CAM mass on the object, the measured side of Fig. 5); "
                             "fig2b, fig5: over the epochs a training kept (--run); all: every one "
                             "(fig2b and fig5 only with --run)")
    parser.add_argument("--run", default=None, metavar="DIR",
                        help="fig2b, fig5: a training run folder with snapshots (epoch_NNNN.pt, "
                             "from logging.keep_checkpoints)")
    parser.add_argument("--data", default="cifar10-jpeg",
                        help="dataset name or ImageFolder path (images of one size)")
    parser.add_argument("--split", default="val", help="train, val or test")
    parser.add_argument("--data-dir", default=None, help="where the dataset lives")
    parser.add_argument("--images", type=int, default=500,
                        help="how many images, as even as possible over the classes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image subset")
    parser.add_argument("--output-dir", default="results/figures", metavar="DIR",
                        help="folder of the figure, its table (JSON, Markdown) and its caption")


def _draw(figure: str, x, y, out, source: str, run: str | None = None) -> dict:
    """Draw ``figure`` from images ``x`` (float, [0, 1]) and labels ``y``; the files written."""
    import numpy as np

    from virolbi.cli._common import note
    from virolbi.imagefiles import run_catching_unreached

    if figure == "cam-mass":
        from virolbi.explain.cam_mass import cam_mass

        return cam_mass(x, y, out, source=source)
    if figure in ("fig2b", "fig5"):
        from virolbi.errors import InputError
        from virolbi.explain import snapshots

        if run is None:
            raise InputError(f"{figure} needs --run DIR, a training run with snapshots")
        shown = np.linspace(0, len(x) - 1, min(4, len(x))).astype(int)
        where = f"{len(shown)} images of {source}"
        if figure == "fig2b":
            return snapshots.fig2b(run, x[shown], out, source=where)
        return snapshots.fig5(run, x[shown], y[shown], out, source=where)
    if figure in ("fig1b", "fig3"):
        from virolbi.explain import heatmaps

        draw = getattr(heatmaps, figure)
        shown = np.linspace(0, len(x) - 1, min(4, len(x))).astype(int)
        where = f"{len(shown)} images of {source}"
        return run_catching_unreached(lambda t: draw(t, y[shown], out, source=where), x[shown])[0]
    if figure == "fig2a":
        from virolbi.explain.fig2a import fig2a

        shown = x[np.linspace(0, len(x) - 1, min(6, len(x))).astype(int)]
        return run_catching_unreached(lambda t: fig2a(t, out, source=source), shown)[0]
    from virolbi.explain.fig2c import fig2c

    paths, unreached = run_catching_unreached(lambda t: fig2c(t, out, source=source), x)
    if unreached:
        levels = sorted({r.level for r in unreached})
        note(COMMAND, f"{len({r.image for r in unreached})} of {len(x)} images did not reach "
                      f"sparsity {', '.join(f'{lv:g}' for lv in levels)} (flat regions); each was "
                      "recorded where it stopped")
    return paths


def run(args: argparse.Namespace) -> int:
    from virolbi.data import load_dataset
    from virolbi.data.subset import balanced_subset
    from virolbi.errors import InputError
    from virolbi.io import check_output_dir

    if args.images < 2:
        raise InputError(f"--images must be at least 2, got {args.images}")
    out = check_output_dir(args.output_dir, "--output-dir")
    ds = load_dataset(args.data, args.split, data_dir=args.data_dir)
    idx = balanced_subset(ds.targets, args.images, args.seed)
    x, y = ds.get_batch(idx)
    source = (f"{getattr(ds, 'name', args.data)} ({len(idx)} images, class-stratified, "
              f"seed {args.seed})")
    figures = [args.figure] if args.figure != "all" else [
        f for f in FIGURES[:-1] if args.run is not None or f not in ("fig2b", "fig5")]
    for figure in figures:
        paths = _draw(figure, x.float() / 255.0, y, out, source, args.run)
        print(f"virolbi figures: {figure}: " + ", ".join(str(p) for p in paths.values()))
    return 0
