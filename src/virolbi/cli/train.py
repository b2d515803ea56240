"""``virolbi train --config CONFIG.yaml [section.key=value ...]``: train a model (paper §3.2)."""

from __future__ import annotations

import argparse
import os

COMMAND = "train"
HELP = ("train a classifier with the Vanilla, Blur, Fixed or Iterative procedure (or a denoiser, "
        "task: denoising) from a YAML config")
RERUN = "add --resume to continue from the last finished epoch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/small/cifar10_iterative.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. optim.epochs=3 procedure.sparsity=0.8")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <output_dir>/last.pt if it exists")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again in an output_dir that already holds a training")
    parser.add_argument("--output-dir", default=None, help="override output_dir")
    parser.add_argument("--device", default=None,
                        help="override device: auto, cpu, cuda or cuda:N (config default auto)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config and exit")


def _refuse_silent_overwrite(cfg: dict, args: argparse.Namespace) -> None:
    """A run folder that already holds a training is continued (--resume) or started again
    (--overwrite), never overwritten silently."""
    from pathlib import Path

    from virolbi.errors import InputError

    from virolbi.io import check_output_dir

    out = Path(cfg["output_dir"]) if cfg.get("output_dir") else None
    if out is not None:
        check_output_dir(out, "--output-dir" if args.output_dir else "output_dir")
    if out is None or args.resume or args.overwrite:
        return
    held = [f for f in ("last.pt", "model.pt") if (out / f).is_file()]
    if held:
        raise InputError(f"{out} already holds a training ({', '.join(held)}); pass --resume to "
                         f"continue it or --overwrite to start again")


def _train_denoiser(args: argparse.Namespace, overrides: list) -> int:
    """``task: denoising``: a DnCNN on Train400 (normal or hybrid adversarial training)."""
    from virolbi.denoise.train import load_denoise_config, train_denoiser
    from virolbi.train.config import config_to_yaml

    cfg = load_denoise_config(args.config, [o for o in overrides if not o.startswith("device=")])
    if args.print_config:
        print(config_to_yaml(cfg), end="")
        return 0
    _refuse_silent_overwrite(cfg, args)
    _, rows = train_denoiser(cfg)
    print(f"virolbi train: {cfg['name']}: {len(rows)} epochs, loss {rows[-1]['loss']:.5f} -> "
          f"{cfg['output_dir']}")
    return 0


def run(args: argparse.Namespace) -> int:
    from virolbi.train.config import config_to_yaml, load_config

    overrides = list(args.overrides)
    if args.resume:
        overrides.append("resume=true")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.device:
        from virolbi.checks import resolve_device

        resolve_device(args.device, "--device")
        overrides.append(f"device={args.device}")
    from virolbi.train.config import config_task

    if config_task(args.config) == "denoising":
        return _train_denoiser(args, overrides)
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(config_to_yaml(cfg), end="")
        return 0
    _refuse_silent_overwrite(cfg, args)
    from virolbi.train.trainer import train

    result = train(cfg)
    final = result.final
    val = final.get("val_acc")
    if os.environ.get("RANK", "0") == "0":  # one line from torchrun's rank 0 only
        print(f"virolbi train: {cfg['name']}: {len(result.metrics)} epochs, train loss "
              f"{final.get('train_loss', float('nan')):.4f}"
              + (f", val acc {val:.4f}" if val is not None else "")
              + (f" -> {result.output_dir}" if result.output_dir else ""))
    return 0
