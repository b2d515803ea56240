"""``virolbi weights``: list, check and export the shipped models (safetensors + checksums).

Examples::

    virolbi weights list
    virolbi weights verify                      # every file against its SHA-256 in the manifest
    virolbi weights export runs/fast_cifar10_vanilla_s0 --name fast_cifar10_vanilla_s0
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
    parser.add_argument("--zoo-dir", default=None,
                        help="folder of the manifest and files (default: the package's own)")


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


def run(args: argparse.Namespace) -> int:
    from virolbi.errors import InputError
    from virolbi.zoo import list_weights, weights_info, weights_problem

    if args.action == "export":
        if not args.run_dir or not args.name:
            raise InputError("export needs a run folder and --name")
        from virolbi.zoo.export import export_denoiser_run, export_run

        if _is_denoiser_run(args.run_dir):
            entry = export_denoiser_run(args.run_dir, args.name, zoo_dir=args.zoo_dir)
        else:
            entry = export_run(args.run_dir, args.name, zoo_dir=args.zoo_dir)
        print(f"{args.name}: {entry['dtype']}, {entry['bytes'] / 1e6:.1f} MB, {_quality(entry, 'float32')} "
              f"(float32) / {_quality(entry, 'float16')} (float16)")
        return 0
    names = list_weights(args.zoo_dir)
    bad = []
    for name in names:
        entry = weights_info(name, args.zoo_dir)
        status = ""
        if args.action == "verify":  # every file is checked, and every bad one named
            path, problem = weights_problem(name, args.zoo_dir)
            status = f"\t{problem.upper() if problem else 'ok'}"
            if problem:
                bad.append(f"{path} ({problem})")
        print(f"{name}\t{entry['model']['name']} x{entry['model']['width']:g}\t"
              f"{entry['procedure'].get('name', '?')}\tseed {entry.get('seed')}\t"
              f"{_quality(entry, entry['dtype'])}\t{entry['dtype']}{status}")
    if not names:
        print("no shipped weights")
    if bad:
        raise InputError(f"{len(bad)} of {len(names)} shipped weight files failed verification: "
                         + "; ".join(bad))
    return 0
