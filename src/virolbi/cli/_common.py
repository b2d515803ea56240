"""Argument groups shared by several ``virolbi`` commands (not a command itself: the leading
underscore keeps the dispatcher from listing it)."""

from __future__ import annotations

import argparse

__all__ = ["add_dataset_arguments", "load_dataset_from_args"]


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
                        help="dataset name (cifar10, cifar100, cifar10-jpeg, imagenet100) or the "
                             "path of an ImageFolder directory / tar archive")
    parser.add_argument("--split", default="test", help="train, val or test")
    parser.add_argument("--data-dir", default=None, help="where the dataset lives")
    parser.add_argument("--download", action="store_true",
                        help="download the official CIFAR-10/100 release into --data-dir when it "
                             "is not there (md5-verified, resumable; needs the internet)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize and centre-crop folder images to this side")


def load_dataset_from_args(args: argparse.Namespace):
    """The dataset named by the arguments of :func:`add_dataset_arguments`."""
    from virolbi.data import load_dataset

    return load_dataset(args.data, args.split, data_dir=args.data_dir, image_size=args.image_size,
                        download=args.download)
