"""Tiny-ImageNet-100 (64 px): 100 ImageNet classes at 64×64, the project's stand-in for the paper's
ImageNet100 (which is 224 px; say "Tiny-ImageNet-100 (64 px)" beside every figure).

The classes are the first 100 WordNet ids of Tiny ImageNet (Stanford CS231n) in sorted order,
listed with their names in ``tinyimagenet100.tsv`` beside this module (a copy of the shared
``classes.tsv``); labels follow that order and ``classes`` are the wnids. Two sources give the same
classes and the same splits:

- the shared copy ``../shared/data/tiny-imagenet-100/train.tar.gz`` (found from the repository
  root; 500 training images per class, about 2.5 % of them grayscale JPEGs, converted to RGB). Its
  SHA-256 is checked, then it is decoded once into the cache (:mod:`virolbi.data.folder`).
- the official archive ``tiny-imagenet-200.zip`` for online users: ``download=True`` fetches it
  (MD5-checked, resumable); the 100 classes are selected by wnid and unpacked once into an
  ImageFolder tree in the cache.

Splits: ``"train"`` is the first 450 images of every class and ``"val"`` the last 50, in file-name
order (sorted names, e.g. ``n01443537_0``, ``n01443537_1``, ``n01443537_10``, …), carved from the
500 training images. ``"test"`` (official archive only) is Tiny ImageNet's own validation set: 50
images per class, labelled by ``val/val_annotations.txt``.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from virolbi.data.cache import cache_dir as _cache_root
from virolbi.data.cache import file_sha256
from virolbi.data.dataset import ImageDataset
from virolbi.data.download import download_url
from virolbi.data.folder import load_image_folder
from virolbi.errors import InputError

__all__ = ["SHARED_TINYIMAGENET100", "TINYIMAGENET100_CLASSES", "TINYIMAGENET100_SHA256",
           "TINYIMAGENET_MD5", "TINYIMAGENET_URL", "TINYIMAGENET_VAL_PER_CLASS",
           "load_tinyimagenet100", "read_classes_tsv", "unpack_official"]

#: The shared training archive, ``../shared/data/tiny-imagenet-100/train.tar.gz`` from the repository.
SHARED_TINYIMAGENET100 = (Path(__file__).resolve().parents[3].parent / "shared" / "data"
                          / "tiny-imagenet-100" / "train.tar.gz")
#: SHA-256 of the shared ``train.tar.gz`` (from its README).
TINYIMAGENET100_SHA256 = "9bc97a65c4de559fe268355d9fcb53f49050e83a2ba9779b0b07d595e7bf2151"
#: The official Tiny ImageNet archive and its MD5.
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
_ZIP_NAME, _ZIP_ROOT = "tiny-imagenet-200.zip", "tiny-imagenet-200"
#: Validation images carved from the end of every class (of 500).
TINYIMAGENET_VAL_PER_CLASS = 50
_CLASSES_FILE = Path(__file__).with_name("tinyimagenet100.tsv")


def read_classes_tsv(path: str | os.PathLike) -> dict[str, str]:
    """``wnid → names`` from a ``<wnid>\\t<names>`` file, in file order.

    Examples
    --------
    >>> classes = read_classes_tsv(_CLASSES_FILE)
    >>> len(classes), next(iter(classes.items()))
    (100, ('n01443537', 'goldfish, Carassius auratus'))
    """
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        wnid, sep, names = line.partition("\t")
        if not sep or not wnid.startswith("n") or wnid in out:
            raise InputError(f"{path}, line {n}: expected '<wnid>\\t<names>' with a new wnid, "
                             f"got {line!r}")
        out[wnid] = names
    return out


#: The 100 classes, ``wnid → names``, in label order.
TINYIMAGENET100_CLASSES = read_classes_tsv(_CLASSES_FILE)


def _check_shared(path: Path) -> Path:
    """``path`` (or ``path/train.tar.gz``), after checking it is the shared archive by SHA-256."""
    if path.is_dir():
        path = path / "train.tar.gz"
    if not path.is_file():
        raise InputError(f"Tiny-ImageNet-100 archive not found: {path} (pass data_dir, or "
                         f"download=True to fetch {TINYIMAGENET_URL})")
    got = file_sha256(path)
    if got != TINYIMAGENET100_SHA256:
        raise InputError(f"{path} has sha256 {got[:16]}…, expected {TINYIMAGENET100_SHA256[:16]}… "
                         "(the shared Tiny-ImageNet-100 train.tar.gz): corrupt or another file")
    return path


def _zip_member(name: str, wnids: dict[str, str], labels: dict[str, str]) -> str | None:
    """Where an official member goes in the unpacked tree (``train/`` or ``test/``), or None."""
    parts = name.split("/")
    if len(parts) < 4 or parts[0] != _ZIP_ROOT or not parts[-1].upper().endswith(".JPEG"):
        return None
    if parts[1] == "train" and len(parts) == 5 and parts[3] == "images" and parts[2] in wnids:
        return f"train/{parts[2]}/{parts[4]}"
    if parts[1:3] == ["val", "images"] and len(parts) == 4 and labels.get(parts[3]) in wnids:
        return f"test/{labels[parts[3]]}/{parts[3]}"
    return None


def _read_zip_text(archive: zipfile.ZipFile, member: str, where: Path) -> str:
    try:
        return archive.read(f"{_ZIP_ROOT}/{member}").decode()
    except KeyError:
        raise InputError(f"{where} is not the official {_ZIP_NAME}: {_ZIP_ROOT}/{member} is "
                         "missing") from None


def unpack_official(archive_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack the 100 classes of the official ``tiny-imagenet-200.zip`` into an ImageFolder tree.

    ``dest/train/<wnid>/<wnid>_<n>.JPEG`` (500 per class) and ``dest/test/<wnid>/val_<n>.JPEG``
    (the official validation images, labelled by ``val/val_annotations.txt``). The tree is written
    beside ``dest`` and renamed onto it when complete, so an existing ``dest`` is whole; it is then
    returned as is.
    """
    dest, src = Path(dest), Path(archive_path)
    if dest.is_dir():
        return dest
    wnids = TINYIMAGENET100_CLASSES
    try:
        with zipfile.ZipFile(src) as archive:
            listed = set(_read_zip_text(archive, "wnids.txt", src).split())
            missing = sorted(set(wnids) - listed)
            if missing:
                raise InputError(f"{src}: wnids.txt lacks {len(missing)} of the 100 classes, "
                                 f"e.g. {missing[:3]}")
            rows = _read_zip_text(archive, "val/val_annotations.txt", src).splitlines()
            labels = dict(r.split("\t")[:2] for r in rows if r.count("\t") >= 1)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                for info in archive.infolist():
                    target = _zip_member(info.filename, wnids, labels)
                    if target is not None:
                        (tmp / target).parent.mkdir(parents=True, exist_ok=True)
                        (tmp / target).write_bytes(archive.read(info))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"cannot read {src} as a zip archive (corrupt or truncated?): "
                         f"{exc}") from None
    os.replace(tmp, dest)
    return dest


def _official_zip(data_dir: str | os.PathLike | None, cache: str | os.PathLike | None,
                  download: bool) -> Path | None:
    """The official zip named by ``data_dir`` (a zip, or a folder holding one; fetched there with
    ``download``), or None when ``data_dir`` names the shared archive instead."""
    root = Path(data_dir).expanduser() if data_dir is not None else None
    if root is not None and root.suffix.lower() == ".zip":
        return root
    if root is None:
        if not download:
            return None
        root = _cache_root(cache) / "datasets"
    if (root / _ZIP_NAME).is_file() and not download:
        return root / _ZIP_NAME
    if download:
        return download_url(TINYIMAGENET_URL, root / _ZIP_NAME, TINYIMAGENET_MD5)
    return None


def load_tinyimagenet100(split: str = "train", data_dir: str | os.PathLike | None = None, *,
                         download: bool = False, val_per_class: int | None = None,
                         cache_dir: str | os.PathLike | None = None, **kwargs) -> ImageDataset:
    """Load a split of Tiny-ImageNet-100 (64 px) from the shared copy or the official archive.

    Parameters
    ----------
    split : {"train", "val", "test"}
        ``"train"``: the first 450 images of every class; ``"val"``: the last 50, in file-name
        order; ``"test"``: the official validation images (official archive only).
    data_dir : path, optional
        The shared ``train.tar.gz`` or its folder (default :data:`SHARED_TINYIMAGENET100`), or
        the official ``tiny-imagenet-200.zip`` or a folder holding it.
    download : bool, default False
        Fetch the official archive (MD5 :data:`TINYIMAGENET_MD5`) into ``data_dir`` (default
        ``<cache>/datasets``) when it is not there.
    val_per_class : int, optional
        Images per class held out as "val" (default 50).
    cache_dir : path, optional
        Cache for the decoded / unpacked images (default ``$VIROLBI_CACHE`` or
        ``~/.cache/virolbi``).
    **kwargs
        ``max_per_class``, ``image_size``, ``progress``: see :func:`load_image_folder`.

    Returns
    -------
    ImageDataset
        uint8 ``(N, 64, 64, 3)`` images; ``classes`` are the 100 wnids
        (:data:`TINYIMAGENET100_CLASSES` gives their names).

    Examples
    --------
    >>> load_tinyimagenet100("val", "/nonexistent/train.tar.gz")
    Traceback (most recent call last):
    ...
    virolbi.errors.InputError: Tiny-ImageNet-100 archive not found: /nonexistent/train.tar.gz (pass data_dir, or download=True to fetch http://cs231n.stanford.edu/tiny-imagenet-200.zip)
    """
    official = _official_zip(data_dir, cache_dir, download)
    if official is None:
        if split == "test":
            raise InputError("tinyimagenet100 (the shared copy) has no test split; use "
                             "split='val' (the last 50 images of every class) and say so")
        source = _check_shared(Path(data_dir).expanduser() if data_dir is not None
                               else SHARED_TINYIMAGENET100)
    else:
        if not official.is_file():
            raise InputError(f"official Tiny ImageNet archive not found: {official} (pass "
                             f"download=True to fetch {TINYIMAGENET_URL})")
        key = f"{official.stat().st_size}-{official.stat().st_mtime_ns}"
        source = unpack_official(official, _cache_root(cache_dir) / "tinyimagenet100" / key)
    ds = load_image_folder(source, split, classes=list(TINYIMAGENET100_CLASSES),
                           val_per_class=val_per_class or TINYIMAGENET_VAL_PER_CLASS,
                           cache_dir=cache_dir, **kwargs)
    ds.name = f"tinyimagenet100-{split}"
    return ds
