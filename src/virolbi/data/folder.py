"""ImageFolder trees (``<class>/<image>``), as directories or packed in ``.tar`` / ``.tar.gz``.

A directory is read lazily, one file per item (ImageNet does not fit in memory). An archive is
decoded once into the on-disk cache (:mod:`virolbi.data.cache`) and memory-mapped afterwards. A
tree may hold native splits (``train/<class>/…``, ``val/<class>/…``, ``test/<class>/…``); otherwise
the whole tree is the training split. Classes are the sorted folder names, files are sorted by
name within a class; a validation split is carved with :func:`virolbi.data.split_per_class`.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import warnings
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from virolbi.data.cache import cache_dir as _cache_root
from numpy.lib.format import open_memmap

from virolbi.data.cache import begin_entry, finish_entry, load_arrays
from virolbi.data.dataset import (FileImageDataset, ImageDataset, _check_size, decode_image,
                                  split_per_class)
from virolbi.errors import InputError
from virolbi.io import IMAGE_SUFFIXES, atomic_path

__all__ = ["load_image_folder", "load_imagenet100", "read_class_list", "SPLITS"]

SPLITS = ("train", "val", "test")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a tar archive by its suffix."""
    return str(path).lower().endswith(_TAR_SUFFIXES)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (blank lines and ``#`` comments skipped).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "classes.txt"
    >>> _ = p.write_text("# ImageNet100\\nn01440764\\n\\nn01443537\\n")
    >>> read_class_list(p)
    ['n01440764', 'n01443537']
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"class list file not found: {p}")
    try:
        lines = p.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"class list {p} is not a text file") from None
    names = [ln.split("#", 1)[0].strip() for ln in lines]
    names = [n for n in names if n]
    if not names:
        raise InputError(f"class list {p} names no classes")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"class list {p} repeats classes: {dup[:5]}")
    return names


# --------------------------------------------------------------------------- listing

def _group(entries: Sequence[tuple[str | None, str, str]], split: str | None,
           classes: Sequence[str] | None, max_per_class: int | None, where: str
           ) -> tuple[list[str], list[str], np.ndarray]:
    """From (split, class, key) entries, the sorted keys of ``split``, their labels, the classes."""
    by_class: dict[str, list[str]] = {}
    for s, c, key in entries:
        if s == split:
            by_class.setdefault(c, []).append(key)
    if classes is None:
        names = sorted(by_class)
    else:
        missing = [c for c in classes if c not in by_class]
        if missing:
            raise InputError(f"{where}: {len(missing)} listed classes are missing, e.g. "
                             f"{missing[:3]}")
        names = sorted(classes)
    if not names:
        raise InputError(f"{where}: no images found (expected <class>/<image> entries with "
                         f"suffixes {', '.join(IMAGE_SUFFIXES)})")
    keys, labels = [], []
    for label, c in enumerate(names):
        members = sorted(by_class[c])[:max_per_class]
        keys += members
        labels += [label] * len(members)
    return keys, names, np.asarray(labels, dtype=np.int64)


def _split_of(parts: Sequence[str], native: bool) -> tuple[str | None, str] | None:
    if native:
        return (parts[0], parts[1]) if len(parts) >= 3 and parts[0] in SPLITS else None
    return (None, parts[-2]) if len(parts) >= 2 else None


def _dir_entries(root: Path) -> tuple[list[tuple[str | None, str, str]], set[str]]:
    native = {s for s in SPLITS if (root / s).is_dir()}
    entries = []
    for dirpath, _, files in os.walk(root, followlinks=True):
        for f in files:
            if _is_image(f):
                rel = Path(dirpath, f).relative_to(root).parts
                sc = _split_of(rel, bool(native))
                if sc is not None:
                    entries.append((sc[0], sc[1], str(Path(dirpath, f))))
    return entries, native


def _tar_entries(tar: tarfile.TarFile) -> tuple[list[tuple[str | None, str, str]], set[str],
                                                  dict[str, tarfile.TarInfo]]:
    members = {}
    for m in tar.getmembers():
        name = m.name[2:] if m.name.startswith("./") else m.name
        if m.isfile() and _is_image(name) and not name.startswith("/") and ".." not in name:
            members[name] = m
    native = {n.split("/", 1)[0] for n in members if n.count("/") >= 2} & set(SPLITS)
    entries = []
    for name in members:
        sc = _split_of(name.split("/"), bool(native))
        if sc is not None:
            entries.append((sc[0], sc[1], name))
    return entries, native, members


# --------------------------------------------------------------------------- archives

def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise InputError(f"cannot read {path} as a tar archive (corrupt or truncated?): "
                         f"{exc}") from None


def _cache_key(path: Path, **params: object) -> str:
    st = path.stat()
    text = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{sorted(params.items())}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resolve_source(root: Path, native: set[str], split: str, carve: bool) -> str | None:
    """Which part of the tree holds ``split``: a native split name, or None for the whole tree."""
    if carve:
        if native and "train" not in native:
            raise InputError(f"{root} has splits {sorted(native)} but no 'train' to carve "
                             "a validation split from")
        return "train" if native else None
    if native:
        if split not in native:
            hint = "; pass val_per_class to carve one from train" if split == "val" else ""
            raise InputError(f"{root} has no {split!r} split (it has {sorted(native)}){hint}")
        return split
    if split == "val":  # a validation split is held out of training images: carve it
        raise InputError(f"{root} has no 'val' split (a tree without train/val/test folders is "
                         "one set of images); pass val_per_class to carve one from it")
    return None  # train or test: the whole tree (the one rule for trees without split folders)


def _decode_archive(path: Path, split: str, carve: bool, *, classes: Sequence[str] | None,
                    max_per_class: int | None, image_size: int | None,
                    cache: str | os.PathLike | None, progress: bool | None) -> ImageDataset:
    """The decoded images of the part of the archive that holds ``split`` (cached)."""
    mode = "carve" if carve else split
    key = _cache_key(path, mode=mode, classes=list(classes or []), max_per_class=max_per_class,
                     image_size=image_size)
    stem = path.name.split(".", 1)[0]
    entry = _cache_root(cache) / f"{stem}-{mode}-{key}"
    if (entry / "meta.json").exists():  # without it the entry is an interrupted build
        try:
            images, targets, meta = load_arrays(entry)
            return ImageDataset(images, targets, meta["classes"], name=stem)
        except InputError as exc:
            warnings.warn(f"{exc}; rebuilding it from {path}", RuntimeWarning, stacklevel=3)
    tar = _open_tar(path)
    try:
        try:
            entries, native, members = _tar_entries(tar)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise InputError(f"cannot read {path} as a tar archive (corrupt or truncated?): "
                             f"{exc}") from None
        source = _resolve_source(path, native, split, carve)
        keys, names, labels = _group(entries, source, classes, max_per_class,
                                     f"{path}" + (f" [{source}]" if source else ""))
        order = {k: i for i, k in enumerate(keys)}
        begin_entry(entry)
        # decoded straight into a memory-mapped images.npy: the set never sits in memory twice
        with atomic_path(entry / "images.npy") as tmp:
            out = None
            bar = tqdm(total=len(keys), desc=f"decoding {path.name}", unit="img",
                       disable=progress if progress is None else not progress)
            try:
                for name, m in members.items():  # archive order: forward reads only
                    i = order.get(name)
                    if i is None:
                        continue
                    fh = tar.extractfile(m)
                    img = decode_image(fh.read() if fh is not None else b"", image_size,
                                       name=f"{path}:{name}")
                    if out is None:
                        first = (name, img.shape)
                        out = open_memmap(tmp, mode="w+", dtype=np.uint8,
                                          shape=(len(keys), *img.shape))
                    elif img.shape != first[1]:
                        raise InputError(f"{path}: images of different sizes ({first[0]} is "
                                         f"{first[1]}, {name} is {img.shape}); pass image_size "
                                         "to resize and centre-crop them")
                    out[i] = img
                    bar.update(1)
            except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
                raise InputError(f"cannot read {path} (corrupt or truncated archive): "
                                 f"{exc}") from None
            finally:
                bar.close()
            if out is not None:
                out.flush()
                del out
    finally:
        tar.close()
    finish_entry(entry, labels, {"classes": names, "files": keys, "source": str(path)})
    images, labels, _ = load_arrays(entry)
    return ImageDataset(images, labels, names, name=stem)


# --------------------------------------------------------------------------- public

def _check_count(value: object, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    import operator

    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        v = minimum - 1
    if v < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def load_image_folder(path: str | os.PathLike, split: str = "train", *,
                      val_per_class: int | None = None, image_size: int | None = None,
                      max_per_class: int | None = None, classes: Sequence[str] | None = None,
                      cache_dir: str | os.PathLike | None = None,
                      progress: bool | None = None) -> ImageDataset:
    """Load an ImageFolder tree (directory or tar archive of one).

    Parameters
    ----------
    path : path
        A directory or ``.tar`` / ``.tar.gz`` holding ``<class>/<image>`` or
        ``<split>/<class>/<image>`` with split in train, val, test.
    split : {"train", "val", "test"}
        A native split when the tree has one. A tree without split folders is one set of images:
        "train" and "test" both name all of it (so ``virolbi evaluate``'s default ``--split test``
        reads a plain folder), and "val" must be carved. With ``val_per_class`` the validation
        split is carved from the training images instead: the last ``val_per_class`` files (by
        name) of every class are "val", the others "train".
    val_per_class : int, optional
        Validation images per class to carve (``None``: use the native splits only).
    image_size : int, optional
        Resize (shorter side to ``image_size·256/224``) and centre-crop every image (224 for
        ImageNet). Required for trees of mixed sizes.
    max_per_class : int, optional
        Keep only the first files (by name) of every class, before carving — for quick runs.
    classes : sequence of str, optional
        Restrict to these classes (each must exist); labels follow their sorted order.
    cache_dir : path, optional
        Cache for decoded archives (default ``$VIROLBI_CACHE`` or ``~/.cache/virolbi``).
    progress : bool or None
        Progress bar while decoding an archive (``None``: only on a terminal).

    Returns
    -------
    ImageDataset
        A :class:`FileImageDataset` (decoded on access) for a directory, an array-backed (memory
        mapped) :class:`ImageDataset` for an archive.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from virolbi.io import write_image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("cat", "dog"):
    ...     for k in range(3):
    ...         _ = write_image(np.full((4, 4, 3), 60 * k, np.uint8), root / c / f"{k}.png")
    >>> ds = load_image_folder(root, "val", val_per_class=1)
    >>> len(ds), ds.classes, ds.targets.tolist()
    (2, ['cat', 'dog'], [0, 1])
    """
    root = Path(path).expanduser()
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    val_per_class = _check_count(val_per_class, "val_per_class", 1)
    max_per_class = _check_count(max_per_class, "max_per_class", 1)
    image_size = _check_size(image_size)
    if not root.exists():
        raise InputError(f"image folder not found: {root}")
    carve = val_per_class is not None and split in ("train", "val")
    if root.is_file():
        ds: ImageDataset = _decode_archive(root, split, carve, classes=classes,
                                           max_per_class=max_per_class, image_size=image_size,
                                           cache=cache_dir, progress=progress)
    else:
        entries, native = _dir_entries(root)
        source = _resolve_source(root, native, split, carve)
        keys, names, labels = _group(entries, source, classes, max_per_class,
                                     f"{root}" + (f" [{source}]" if source else ""))
        ds = FileImageDataset(keys, labels, names, image_size=image_size,
                              name=f"{root.name}-{split}")
    if carve:
        train_idx, val_idx = split_per_class(ds.targets, val_per_class, ds.classes)
        ds = ds.subset(train_idx if split == "train" else val_idx)
        ds.name = f"{root.name.split('.', 1)[0]}-{split}"
    return ds


def load_imagenet100(data_dir: str | os.PathLike, split: str = "train", *,
                     class_list: str | os.PathLike | None = None, image_size: int | None = 224,
                     **kwargs) -> ImageDataset:
    """ImageNet100: an ImageNet ImageFolder tree restricted to 100 classes.

    ``data_dir`` holds ``train/<wnid>/…`` and ``val/<wnid>/…`` (the validation images sorted
    into class folders). ``class_list`` is a text file of wnids, one per line; without it the file
    ``data_dir/imagenet100.txt`` is used, or, failing that, the tree itself must have exactly 100
    classes. Every listed class must exist. Images are resized and centre-cropped to
    ``image_size`` (224). Other keywords go to :func:`load_image_folder`.
    """
    root = Path(data_dir).expanduser()
    if class_list is None and (root / "imagenet100.txt").is_file():
        class_list = root / "imagenet100.txt"
    names = read_class_list(class_list) if class_list is not None else None
    if names is not None and len(names) != 100:
        raise InputError(f"ImageNet100 class list {class_list} must name 100 classes, got "
                         f"{len(names)}")
    ds = load_image_folder(root, split, classes=names, image_size=image_size, **kwargs)
    if len(ds.classes) != 100:
        raise InputError(f"ImageNet100: {root} has {len(ds.classes)} classes; pass class_list "
                         "(a file of 100 wnids) to restrict an ImageNet tree")
    return ds
