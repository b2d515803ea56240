"""Argument groups shared by several ``virolbi`` commands (not a command itself: the leading
underscore keeps the dispatcher from listing it)."""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

from virolbi.checks import check_levels, check_positive
from virolbi.errors import InputError

__all__ = ["add_dataset_arguments", "load_dataset_from_args", "add_smoother_arguments",
           "smoother_options", "parse_levels", "progress", "warn", "note", "announce_large_images",
           "announce_dropped_alpha", "as_typed", "SPLITS"]

#: The splits --split takes.
SPLITS = ("train", "val", "test")


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--data``, ``--split``, ``--data-dir``, ``--download`` and ``--image-size``, the
    arguments of :func:`virolbi.data.load_dataset`.

    >>> p = argparse.ArgumentParser()
    >>> add_dataset_arguments(p)
    >>> a = p.parse_args(["--data", "cifar10"])
    >>> a.data, a.split, a.data_dir, a.image_size
    ('cifar10', 'test', None, None)
    """
    parser.add_argument("--data", required=True,
                        help="dataset name (cifar10, cifar100, cifar100-coarse, cifar10-jpeg, "
                             "imagenet100, tinyimagenet100) or the path of an ImageFolder "
                             "directory / tar archive")
    parser.add_argument("--split", default="test", help=", ".join(SPLITS[:-1]) + " or " + SPLITS[-1])
    parser.add_argument("--data-dir", default=None, help="where the dataset lives")
    parser.add_argument("--download", action="store_true",
                        help="download the official CIFAR-10/100 release or Tiny ImageNet archive "
                             "into --data-dir when it is not there (md5-verified, resumable; needs "
                             "the internet)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize and centre-crop folder images to this side")


def load_dataset_from_args(args: argparse.Namespace, split: str | None = None):
    """The dataset named by the arguments of :func:`add_dataset_arguments` (``split`` instead of
    ``--split`` when given); the library's messages name the options as the user typed them."""
    from virolbi.data import load_dataset

    split = args.split if split is None else split
    if split not in SPLITS:
        raise InputError(f"--split must be {', '.join(SPLITS[:-1])} or {SPLITS[-1]}, got {split!r}")
    try:
        return load_dataset(args.data, split, data_dir=args.data_dir, image_size=args.image_size,
                            download=args.download)
    except InputError as err:
        raise InputError(as_typed(str(err))) from None


def as_typed(message: str) -> str:
    """A library message with its keyword arguments as the options the user typed: ``split='val'``
    becomes ``--split val``.

    >>> as_typed("cifar10 has no validation split: ... or use split='test'")
    'cifar10 has no validation split: ... or use --split test'
    """
    return re.sub(r"\bsplit='(\w+)'", r"--split \1", message)


# Options of the smoother, shared by smooth, path and demo.

def add_smoother_arguments(parser: argparse.ArgumentParser) -> None:
    """The smoother's options (``--kappa --nu --solver --step --max-iter --projection
    --per-channel``), shared by ``smooth``, ``path`` and ``demo``."""
    from virolbi.smoother import DEFAULT_SOLVER, PROJECTIONS, SOLVERS

    g = parser.add_argument_group("smoother options (paper §3.1)")
    g.add_argument("--kappa", type=float, default=5.0,
                   help="κ of Eq. 5: the larger, the closer LBI follows the inverse scale space")
    g.add_argument("--nu", type=float, default=1.0,
                   help="ν of Eq. 2: coupling between Du and γ")
    g.add_argument("--solver", default=DEFAULT_SOLVER,
                   help=f"LBI solver, one of {', '.join(SOLVERS)} ('explicit' is Eq. 5 itself)")
    g.add_argument("--step", type=float, default=None,
                   help="step α (default: the solver's own, stable and validated)")
    g.add_argument("--max-iter", type=int, default=None,
                   help="iteration cap per image (default: from a fixed time horizon)")
    g.add_argument("--projection", default="graph",
                   help=f"how Eq. 6 is computed, one of {', '.join(PROJECTIONS)} (same result)")
    g.add_argument("--per-channel", action="store_true",
                   help="per-channel ℓ1 sparsity instead of one support shared by all colour "
                        "channels (group sparsity, Eq. 8)")
    g.add_argument("--batch-size", type=int, default=16,
                   help="images of the same size smoothed together")


def smoother_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for :func:`virolbi.smooth` / :func:`virolbi.image_path` from ``args``,
    each checked here under the option's own name (``--kappa``, ``--solver``...); the library
    checks what needs the image size (an unstable ``--step``)."""
    from virolbi.smoother import PROJECTIONS, SOLVERS

    check_positive(args.batch_size, "--batch-size")
    for value, flag in ((args.kappa, "--kappa"), (args.nu, "--nu")):
        check_positive(value, flag)
    for value, flag in ((args.step, "--step"), (args.max_iter, "--max-iter")):
        if value is not None:
            check_positive(value, flag)
    for value, flag, allowed in ((args.solver, "--solver", SOLVERS),
                                 (args.projection, "--projection", PROJECTIONS)):
        if value not in allowed:
            raise InputError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
    return dict(kappa=args.kappa, nu=args.nu, group=not args.per_channel, solver=args.solver,
                step=args.step, max_iter=args.max_iter, projection=args.projection)


def parse_levels(text: str) -> tuple[float, ...]:
    """Sparsity levels from ``"0.2,0.4,0.6"``: numbers in (0, 1], returned sorted, no repeats.

    >>> parse_levels("0.6, 0.2,1")
    (0.2, 0.6, 1.0)
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--levels must be comma-separated numbers in (0, 1], e.g. "
                         f"'0.2,0.4,0.6,0.8,1.0', got {text!r}") from None
    return check_levels(values, "--levels")


def progress(total: int, desc: str):
    """A tqdm bar over images (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=None, leave=False)


def warn(command: str, message: str) -> None:
    print(f"virolbi {command}: warning: {message}", file=sys.stderr)


def note(command: str, message: str) -> None:
    print(f"virolbi {command}: note: {message}", file=sys.stderr)


#: From this many megapixels on (a 512 x 512 photograph), a command says what is coming and shows
#: the path's progress: such an image takes seconds, more under load.
LARGE_MEGAPIXELS = 0.25
#: Measured on a 2-core AMD EPYC (one thread, RGB, float32, scikit-image's astronaut at 1024 x 1024;
#: ``benchmarks/results/megapixel.json``): seconds per megapixel to reach each level, and the peak
#: memory growth per megapixel. Other images take 0.5-2x as long (README, "Large images").
SECONDS_PER_MEGAPIXEL = {0.3: 7.7, 0.6: 25.4, 0.9: 143.4}   # 0.9 stopped at max_iter (5000)
MEMORY_GB_PER_MEGAPIXEL = 0.25


def seconds_per_megapixel(level: float) -> float:
    """:data:`SECONDS_PER_MEGAPIXEL` at ``level``, linear between the measured levels (the first
    below 0.3, the last beyond 0.9)."""
    return float(np.interp(level, list(SECONDS_PER_MEGAPIXEL), list(SECONDS_PER_MEGAPIXEL.values())))


def announce_large_images(command: str, images: list, options: dict, level: float) -> None:
    """One note per image of :data:`LARGE_MEGAPIXELS` or more (size, memory and time to expect at
    ``level``, the highest level asked), and the library's progress bar switched on for the run."""
    for im in images:
        c, h, w = im.size
        mp = h * w / 1e6
        if mp < LARGE_MEGAPIXELS:
            continue
        secs = mp * c / 3 * seconds_per_megapixel(level)
        note(command, f"{im.path} is {w}x{h}x{c} ({mp:.2f} MP): expect about "
                      f"{mp * MEMORY_GB_PER_MEGAPIXEL * c / 3:.2g} GB of memory and "
                      f"{_duration(0.5 * secs)}-{_duration(2 * secs)} per core at level {level:g}; "
                      "progress below")
        options["progress"] = True


def _duration(seconds: float) -> str:
    """``"40 s"``, ``"3.5 min"``."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"



def announce_dropped_alpha(command: str, images: list) -> None:
    """One note for all the inputs whose transparency (alpha band, transparent palette entry) is
    not smoothed and not written back (:attr:`~virolbi.imagefiles.LoadedImage.alpha_dropped`)."""
    dropped = [str(im.path) for im in images if im.alpha_dropped]
    if dropped:
        note(command, f"transparency is not smoothed: the alpha channel of {len(dropped)} "
                      f"image(s) is dropped and the outputs are opaque ({', '.join(dropped)})")
