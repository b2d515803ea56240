"""``virolbi smooth-dataset``: a data set smoothed at several levels into a sharded store.

Example::

    virolbi smooth-dataset cifar10-jpeg --split train --levels 0.3,0.4,0.5,0.6,0.7,0.8 \\
        --output-dir smoothed/cifar10-train [--engine local|ray] [--address ADDR] [--shard-size N]

One image-path run per image (all levels in one run, :func:`virolbi.image_path`), in shards of
``--shard-size`` images with a manifest (:mod:`virolbi.store`); a training reads the folder with
``procedure.store`` and Python with :func:`virolbi.open_smoothed`. A rerun continues where a killed
run stopped and recomputes a damaged shard; a second run on the same folder is refused. Running
it on a Ray cluster or under Slurm: ``docs/smoothing_at_scale.md``.
"""

from __future__ import annotations

import argparse
import warnings

from virolbi.cli._common import (SPLITS, add_smoother_arguments, as_typed, parse_levels,
                                 smoother_options, warn)
from virolbi.errors import InputError, UnreachedLevelWarning
from virolbi.io import check_output_dir

COMMAND = "smooth-dataset"
HELP = "smooth a whole data set at several sparsity levels into a sharded store (local or Ray)"
RERUN = "a rerun skips the finished shards"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="a data set name (cifar10, cifar10-jpeg, tinyimagenet100, ...), an "
                             "image folder or a .tar/.tar.gz of one")
    parser.add_argument("--split", default="train", help=", ".join(SPLITS[:-1]) + " or " + SPLITS[-1])
    parser.add_argument("--data-dir", default=None, help="where a named data set lives")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize and centre-crop folder images to this side")
    parser.add_argument("--levels", required=True,
                        help="comma-separated sparsity levels in (0, 1], all from one run per image")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="the store's folder")
    parser.add_argument("--engine", default="local", choices=("local", "ray"),
                        help="local: a process per core, one thread each; ray: Ray tasks")
    parser.add_argument("--address", default=None,
                        help="ray: the cluster to join (auto, HOST:6379, ray://HOST:10001); "
                             "default: start a local Ray instance")
    parser.add_argument("--workers", type=int, default=None,
                        help="local processes, or CPUs of the local Ray instance (default: the cores)")
    parser.add_argument("--shard-size", type=int, default=1024,
                        help="images per shard (one task each)")
    parser.add_argument("--gpus-per-task", type=float, default=0.0,
                        help="ray: GPUs per task; > 0 smooths on CUDA workers")
    add_smoother_arguments(parser)


def _check(args: argparse.Namespace) -> tuple[tuple[float, ...], dict]:
    """Every option checked under its own name before any work."""
    from virolbi.checks import check_positive_int

    levels = parse_levels(args.levels)
    options = smoother_options(args)
    check_positive_int(args.shard_size, "--shard-size")
    if args.workers is not None:
        check_positive_int(args.workers, "--workers")
    if args.address is not None and args.engine != "ray":
        raise InputError("--address joins a Ray cluster: use it with --engine ray")
    if args.gpus_per_task and args.engine != "ray":
        raise InputError("--gpus-per-task asks Ray for GPUs: use it with --engine ray")
    if args.gpus_per_task < 0:
        raise InputError(f"--gpus-per-task must be >= 0, got {args.gpus_per_task}")
    if args.split not in SPLITS:
        raise InputError(f"--split must be {', '.join(SPLITS[:-1])} or {SPLITS[-1]}, got "
                         f"{args.split!r}")
    check_output_dir(args.output_dir, "--output-dir")
    return levels, options


def _message(warning: Warning, n: int) -> str:
    """A warning of the run in one line (unreached levels counted, not listed)."""
    if isinstance(warning, UnreachedLevelWarning):
        images = len({r.image for r in warning.records})
        levels = ", ".join(f"{v:g}" for v in sorted({r.level for r in warning.records}))
        return (f"{images} of {n} images did not reach level(s) {levels} (flat regions or "
                "max_iter): each is stored where its path stopped")
    return str(warning)


def run(args: argparse.Namespace) -> int:
    from virolbi.data import load_dataset
    from virolbi.store import build_store

    levels, options = _check(args)
    try:
        data = load_dataset(args.source, args.split, data_dir=args.data_dir,
                            image_size=args.image_size)
    except InputError as err:
        raise InputError(as_typed(str(err))) from None
    desc = f"{args.source} split={args.split}" + (f" image_size={args.image_size}"
                                                    if args.image_size else "")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = build_store(data, args.output_dir, levels, engine=args.engine,
                             workers=args.workers, address=args.address,
                             shard_size=args.shard_size, batch_size=args.batch_size,
                             params=options, description=desc, gpus_per_task=args.gpus_per_task)
    for w in caught:
        warn(COMMAND, _message(w.message, len(data)))
    n = len(report.store)
    rate = n / report.seconds if report.computed and report.seconds else 0.0
    print(f"{n} images at levels {', '.join(f'{v:g}' for v in levels)} in {args.output_dir}: "
          f"{report.computed} shard(s) computed, {report.skipped} already done, "
          f"{report.seconds:.1f} s" + (f" ({rate:.1f} images/s)" if rate else ""))
    return 0
