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

This module also holds the helpers shared by ``virolbi path`` and ``virolbi demo``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from virolbi.checks import check_image_batch, check_levels, check_positive, check_unit_interval
from virolbi.errors import InputError, UnreachedLevelWarning
from virolbi.io import check_output_dir, check_output_file

COMMAND = "smooth"
HELP = "smooth images with ViRoLBI at one sparsity level (writes <stem>_s<level>.png)"



# ----------------------------------------------------------------------------------------------
# Shared helpers (also used by ``virolbi path`` and ``virolbi demo``)
# ----------------------------------------------------------------------------------------------

@dataclass
class LoadedImage:
    """One input: its file, its pixels as float ``(C, H, W)`` in [0, 1], how to write it back."""

    path: Path
    image: torch.Tensor  # float32 (float64 for float64 arrays) (C, H, W)
    gray_2d: bool  # input was (H, W): write (H, W) back
    is_array: bool  # came from .npy: write .npy back
    dtype: np.dtype  # .npy input dtype (float32/float64) to keep

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]


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
    """Keyword arguments for :func:`virolbi.smooth` / :func:`virolbi.image_path` from ``args``.

    The library checks them (unknown solver, unstable step, ...); the batch size is checked here.
    """
    check_positive(args.batch_size, "--batch-size")
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
        raise InputError(f"levels must be comma-separated numbers in (0, 1], e.g. "
                         f"'0.2,0.4,0.6,0.8,1.0', got {text!r}") from None
    return check_levels(values, "levels")


def _read_array(path: Path) -> tuple[np.ndarray, bool]:
    """A ``.npy`` float image ``(C, H, W)`` or ``(H, W)`` in [0, 1] (or uint8), checked."""
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a directory: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path} as a NumPy array: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path} holds several arrays; expected one image array")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{path}: images must be float in [0, 1] or uint8, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise InputError(f"{path}: expected an image array (C, H, W) or (H, W), got shape "
                         f"{arr.shape}")
    if arr.ndim == 3 and arr.shape[0] > 4 and arr.shape[-1] in (1, 3, 4):
        raise InputError(f"{path}: shape {arr.shape} looks channels-last (H, W, C); save it as "
                         f"(C, H, W), e.g. numpy.moveaxis(x, -1, 0)")
    return arr, arr.ndim == 2


def load_image(path: str | Path) -> LoadedImage:
    """Read one input file (an image, or a ``.npy`` array) and check it as the smoother would,
    with the file name in every message."""
    from virolbi.io import read_image

    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr, gray = _read_array(path)
        dtype = arr.dtype if arr.dtype != np.uint8 else np.dtype(np.float32)
        t = torch.from_numpy(np.array(arr, copy=True))
        # float64 arrays are smoothed in float64; everything else in float32
        t = t.float() / 255.0 if t.dtype == torch.uint8 else (
            t if t.dtype == torch.float64 else t.float())
        t = t[None] if gray else t
        is_array = True
    else:
        arr = read_image(path)  # uint8 (H, W) or (H, W, 3); RGBA/palette -> RGB
        gray = arr.ndim == 2
        t = torch.from_numpy(np.array(arr, copy=True)).float() / 255.0
        t = t[None] if gray else t.permute(2, 0, 1).contiguous()
        dtype, is_array = np.dtype(np.uint8), False
    check_image_batch(t[None], str(path))
    return LoadedImage(path=path, image=t, gray_2d=gray, is_array=is_array, dtype=dtype)


def load_images(paths: Iterable[str | Path]) -> list[LoadedImage]:
    """Read and check every input before any work is done."""
    paths = list(paths)
    if not paths:
        raise InputError("no input images given")
    return [load_image(p) for p in paths]


def size_groups(images: list[LoadedImage], batch_size: int) -> list[list[int]]:
    """Indices of the inputs grouped by size (C, H, W) and float type, in order of first
    appearance, each group cut into batches of at most ``batch_size``."""
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.size, im.image.dtype), []).append(i)
    batches = []
    for idx in groups.values():
        batches += [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    return batches


def split_warnings(records: list, count: int) -> list[list[str]]:
    """The unreached levels of one batch (:class:`~virolbi.errors.UnreachedLevel` records, as carried
    by the :class:`~virolbi.errors.UnreachedLevelWarning` the library raised), one list of lines per
    image of the batch."""
    out: list[list[str]] = [[] for _ in range(count)]
    for rec in records:
        out[rec.image].append(rec.message())
    return out


def run_catching_unreached(fn, x):
    """``fn(x)`` with the library's :class:`~virolbi.errors.UnreachedLevelWarning` caught (the command
    reports it per image itself); returns ``(fn's result, the warning's records)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreachedLevelWarning)
        result = fn(x)
    records = []
    for w in caught:
        if isinstance(w.message, UnreachedLevelWarning):
            records.extend(w.message.records)
        else:  # anything else goes on as it would have
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, records


def level_tag(level: float) -> str:
    """``0.6 -> "s0.60"``, the suffix of output file names.

    >>> level_tag(0.6), level_tag(1.0), level_tag(0.125)
    ('s0.60', 's1.00', 's0.125')
    """
    text = f"{level:.2f}"
    return f"s{text}" if abs(float(text) - level) < 1e-12 else f"s{level:g}"


def output_name(image: LoadedImage, level: float) -> str:
    """``<stem>_s0.60.png`` (``.npy`` for array inputs)."""
    return f"{image.stem}_{level_tag(level)}{'.npy' if image.is_array else '.png'}"


def write_output(image: LoadedImage, smoothed: torch.Tensor, path: Path) -> Path:
    """Write one smoothed ``(C, H, W)`` image atomically in the input's own form."""
    from virolbi.io import atomic_path, write_image

    arr = smoothed.detach().cpu().numpy()
    if image.gray_2d:
        arr = arr[0]
    if image.is_array:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, arr.astype(image.dtype, copy=False))
        return path
    if arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    return write_image(arr, path)


def progress(total: int, desc: str):
    """A tqdm bar over images (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=None, leave=False)


def smoothed_batches(images: list[LoadedImage], batch_size: int, desc: str, fn):
    """Run ``fn(x) -> (out, info)`` on the images batched by :func:`size_groups`, with a bar.

    Yields, per batch, ``(batch, out, info, warnings, seconds)``: the image indices, ``fn``'s output
    and info (a result with ``warnings``) for the stacked images ``x``, the warnings split per image
    (:func:`split_warnings`) and the seconds ``fn`` took. The bar moves on once the caller is done
    with the batch.
    """
    with progress(len(images), desc) as bar:
        for batch in size_groups(images, batch_size):
            x = torch.stack([images[i].image for i in batch])
            t0 = time.perf_counter()
            (out, info), records = run_catching_unreached(fn, x)
            seconds = time.perf_counter() - t0
            per_image = split_warnings(records, len(batch))
            yield batch, out, info, per_image, seconds
            bar.update(len(batch))


def warn(command: str, message: str) -> None:
    print(f"virolbi {command}: warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------

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

    sparsity = check_unit_interval(args.sparsity, "sparsity")
    options = smoother_options(args)
    out_dir = check_output_dir(args.output_dir, "--output-dir")
    check_output_file(args.report, "--report")
    images = load_images(args.images)
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
