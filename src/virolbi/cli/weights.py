"""``virolbi weights``: list, check and export the shipped models (safetensors + checksums).

Examples::

    virolbi weights list                        # each model and the file it loads from
    virolbi weights verify                      # every file against its SHA-256 in the manifest
    virolbi weights verify --download           # installed package: fetch the missing files first
    virolbi weights export runs/fast_cifar10_vanilla_s0 --name fast_cifar10_vanilla_s0

Where the files are looked up (``$VIROLBI_WEIGHTS``, the checkout's ``weights/``, the user cache
filled from the project's release) is :func:`virolbi.zoo.weights_source`; both ``list`` and
``verify`` print the file of every model and, last, the folder and how it was found.
"""

from __future__ import annotations

import argparse

COMMAND = "weights"
HELP = "list, verify or export the shipped model weights (virolbi evaluate --checkpoint NAME)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "verify", "export"),
                        help="list the shipped models, verify their checksums, or export a run")
    parser.add_argument("run_dir", nargs="?", default=None,
                        help="export: a finished 'virolbi train' run folder")
    parser.add_argument("--name", default=None, help="export: the name to ship it under")
    parser.add_argument("--weights-dir", "--zoo-dir", dest="zoo_dir", metavar="DIR", default=None,
                        help="folder of the manifest and files (unset: $VIROLBI_WEIGHTS, else the "
                             "checkout's weights/, else the user cache, downloading on first use)")
    parser.add_argument("--download", action="store_true",
                        help="verify: download the files missing from the user cache first")


def _is_denoiser_run(run_dir: str) -> bool:
    from pathlib import Path

    from virolbi.train.config import config_task

    path = Path(run_dir) / "config.yaml"
    return path.is_file() and config_task(path) == "denoising"


def _quality(entry: dict, dtype: str) -> str:
    """Validation accuracy of a classifier, Set12 PSNR of a denoiser, with the weights in dtype."""
    if entry.get("task") == "denoising":
        return f"Set12 PSNR {entry[f'set12_psnr_gaussian25_{dtype}']:.2f} dB (sigma 25/255)"
    return f"val {100 * entry[f'val_acc_{dtype}']:.2f}%"


def _export(args: argparse.Namespace) -> int:
    from virolbi.errors import InputError
    from virolbi.zoo.export import export_denoiser_run, export_run

    if not args.run_dir or not args.name:
        raise InputError("export needs a run folder and --name")
    if _is_denoiser_run(args.run_dir):
        entry = export_denoiser_run(args.run_dir, args.name, zoo_dir=args.zoo_dir)
    else:
        entry = export_run(args.run_dir, args.name, zoo_dir=args.zoo_dir)
    print(f"{args.name}: {entry['dtype']}, {entry['bytes'] / 1e6:.1f} MB, {_quality(entry, 'float32')} "
          f"(float32) / {_quality(entry, 'float16')} (float16)")
    return 0


def _status(name: str, args: argparse.Namespace, downloads: bool) -> tuple[str, str, str | None]:
    """``(where, status, problem)`` of one file: its path, the ``verify`` column, and what is
    wrong with it (``None``: nothing). ``list`` checks nothing; ``verify`` checks size and SHA-256,
    and with ``--download`` first fetches a file the user cache lacks (the first file that cannot
    be fetched stops it, in one line). A file not yet in the cache is no failure: it is downloaded
    on first use."""
    from virolbi.zoo import verify_weights, weights_info, weights_problem, weights_source

    if args.action == "verify" and downloads and args.download:
        verify_weights(name, args.zoo_dir)
    if args.action == "list":
        path = weights_source(args.zoo_dir).folder / weights_info(name, args.zoo_dir)["file"]
        return str(path) + ("" if path.is_file() else " (not downloaded yet)" if downloads
                            else " (missing)"), "", None
    path, problem = weights_problem(name, args.zoo_dir)
    if problem == "missing" and downloads:
        return f"{path} (not downloaded yet)", "NOT DOWNLOADED", None
    return str(path), problem.upper() if problem else "ok", problem


def run(args: argparse.Namespace) -> int:
    from virolbi.errors import InputError
    from virolbi.zoo import list_weights, weights_info, weights_source

    if args.action == "export":
        return _export(args)
    source = weights_source(args.zoo_dir)
    names = list_weights(args.zoo_dir)
    bad = []
    for name in names:
        entry = weights_info(name, args.zoo_dir)
        where, status, problem = _status(name, args, downloads=source.url is not None)
        status = f"\t{status}" if args.action == "verify" else ""
        if problem:
            bad.append(f"{where} ({problem})")
        print(f"{name}\t{entry['model']['name']} x{entry['model']['width']:g}\t"
              f"{entry['procedure'].get('name', '?')}\tseed {entry.get('seed')}\t"
              f"{_quality(entry, entry['dtype'])}\t{entry['dtype']}\t{where}{status}")
    print(source.describe() if names else f"no shipped weights ({source.describe()})")
    if bad:
        raise InputError(f"{len(bad)} of {len(names)} shipped weight files failed verification: "
                         + "; ".join(bad))
    return 0
