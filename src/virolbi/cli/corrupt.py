"""``virolbi corrupt``: write a dataset's noise-corrupted copy in the CIFAR-10-C layout.

Example::

    virolbi corrupt --data cifar10 --split test --corruption gaussian_noise --severities 1-5 \\
        --output CIFAR-10-C-mine

writes ``CIFAR-10-C-mine/gaussian_noise.npy`` (``uint8 (5 N, H, W, C)``, severities 1..5 in blocks
of N images in dataset order) and ``labels.npy``, with the pinned CIFAR-10-C parameters
(:data:`virolbi.perturb.SEVERITY_PARAMS`), so any dataset gets its "-C" version;
:func:`virolbi.data.load_cifar_c` reads it back.
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

from virolbi.cli._common import add_dataset_arguments, load_dataset_from_args
from virolbi.checks import resolve_device
from virolbi.errors import InputError
from virolbi.io import check_output_dir

COMMAND = "corrupt"
HELP = "write a dataset's noise-corrupted copy in the CIFAR-10-C layout (<name>.npy + labels.npy)"

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_severities(text: str) -> tuple[int, ...]:
    """Severities from ``"1-5"``, ``"2,4"`` or ``"3"``: integers in 1..5, in the given order.

    >>> parse_severities("1-5"), parse_severities("5,1"), parse_severities("3")
    ((1, 2, 3, 4, 5), (5, 1), (3,))
    """
    expected = f"severities must be integers in 1..5 written like '1-5', '2,4' or '3', got {text!r}"
    values: list[int] = []
    for part in str(text).split(","):
        m = _RANGE.match(part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise InputError(expected)
            values += list(range(lo, hi + 1))
        elif part.strip().isdigit():
            values.append(int(part))
        else:
            raise InputError(expected)
    if not values or any(not 1 <= v <= 5 for v in values):
        raise InputError(expected)
    if len(set(values)) != len(values):
        raise InputError(f"severities must not repeat, got {text!r}")
    return tuple(values)


def parse_corruptions(text: str) -> tuple[str, ...]:
    """Corruption names from ``"gaussian_noise"``, ``"gaussian_noise,shot_noise"`` or ``"all"``.

    >>> parse_corruptions("all")
    ('gaussian_noise', 'shot_noise', 'impulse_noise', 'speckle_noise')
    """
    from virolbi.perturb import CORRUPTIONS

    names = tuple(CORRUPTIONS) if text.strip() == "all" else tuple(
        p.strip() for p in text.split(",") if p.strip())
    unknown = [n for n in names if n not in CORRUPTIONS]
    if not names or unknown:
        raise InputError(f"corruption must be one or more of {', '.join(CORRUPTIONS)} (comma "
                         f"separated) or 'all', got {text!r}")
    return names


def dataset_arrays(dataset: object, limit: int | None = None,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``uint8 (N, H, W, C)`` images and ``int64 (N,)`` labels of a dataset; with ``limit``, a
    class-stratified subset of that many (:func:`~virolbi.data.subset.balanced_subset`, in dataset
    order), the same rule as ``virolbi evaluate --limit``."""
    from virolbi.data.subset import balanced_subset

    targets = getattr(dataset, "targets", None)
    if limit is None or limit >= len(dataset):
        order = np.arange(len(dataset))
    elif targets is not None and len(targets) == len(dataset):
        order = balanced_subset(np.asarray(targets), limit, seed)
    else:
        order = np.arange(limit)
    data = getattr(dataset, "data", None)
    if isinstance(data, np.ndarray) and data.ndim == 4 and data.dtype == np.uint8:
        return (np.ascontiguousarray(data[order]),
                np.asarray(dataset.targets, dtype=np.int64)[order])
    images, labels = [], []
    for i in order.tolist():
        img, label = dataset[i]
        arr = np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim != 3:
            raise InputError(f"dataset items must be uint8 images (C, H, W), got {arr.dtype} "
                             f"{arr.shape}")
        images.append(arr.transpose(1, 2, 0))
        labels.append(int(label))
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--corruption", required=True,
                        help="gaussian_noise, shot_noise, impulse_noise, speckle_noise, a comma "
                             "list of them, or 'all'")
    parser.add_argument("--severities", default="1-5", help="'1-5', '2,4' or '3'")
    parser.add_argument("--output-dir", "--output", dest="output", required=True, metavar="DIR",
                        help="folder of the <corruption>.npy files (--output: its former name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--limit", type=int, default=None,
                        help="only N images, as even as possible over the classes, drawn with "
                             "--seed (the same rule in every command)")
    parser.add_argument("--batch-size", type=int, default=1000, help="images corrupted at once")
    parser.add_argument("--device", default="auto",
                        help="where the corruption is computed: auto, cpu, cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    from virolbi.perturb import write_cifar_c

    corruptions = parse_corruptions(args.corruption)
    severities = parse_severities(args.severities)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be a positive integer, got {args.limit}")
    device = resolve_device(args.device, "--device")
    check_output_dir(args.output, "--output-dir")
    dataset = load_dataset_from_args(args)
    images, labels = dataset_arrays(dataset, args.limit, args.seed)
    for name in corruptions:
        path = write_cifar_c(images, labels, args.output, name, severities, seed=args.seed,
                             batch_size=args.batch_size, device=device)
        print(f"wrote {path} ({len(severities)} x {len(images)} images, severities "
              f"{','.join(map(str, severities))})", file=sys.stdout)
    return 0
