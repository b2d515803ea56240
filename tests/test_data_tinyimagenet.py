"""Tiny-ImageNet-100 (64 px): the shared train.tar.gz layout and the official tiny-imagenet-200.zip
layout, both built here in miniature (never downloaded), plus a quick read of the real shared
archive when it is there."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from virolbi.data import DATASETS, load_dataset, tinyimagenet
from virolbi.data.tinyimagenet import (SHARED_TINYIMAGENET100, TINYIMAGENET100_CLASSES,
                                       load_tinyimagenet100, read_classes_tsv)
from virolbi.errors import InputError

WNIDS = list(TINYIMAGENET100_CLASSES)
#: File numbers per class: "_10" sorts between "_1" and "_2" (names are not contiguous either).
NUMBERS = (0, 1, 10, 2)
SHARED_DIR = SHARED_TINYIMAGENET100.parent


def jpeg(c: int, k: int, gray: bool) -> bytes:
    """A flat 8x8 JPEG identifying (class c, file k): red and blue 20 + 25 × the tens and units of c,
    green 30 + 50k (gray: one plane of 30 + 50k). Colour channels differ by >= 10."""
    if gray:
        img = Image.new("L", (8, 8), 30 + 50 * k)
    else:
        img = Image.new("RGB", (8, 8), (20 + 25 * (c // 10), 30 + 50 * k, 20 + 25 * (c % 10)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def ident(images: np.ndarray) -> list[tuple[int, int]]:
    """(class, file) from the pixels written by :func:`jpeg` (gray images give class -1)."""
    out = []
    for r, g, b in images[:, 4, 4].astype(int):
        gray = max(r, g, b) - min(r, g, b) < 4
        c = -1 if gray else 10 * round((r - 20) / 25) + round((b - 20) / 25)
        out.append((c, NUMBERS[round((g - 30) / 50)]))
    return out


def make_shared(path: Path) -> Path:
    """train/<wnid>/<wnid>_<n>.JPEG for the 100 classes, in the shared archive's layout; the
    images of class 3 are grayscale."""
    with tarfile.open(path, "w:gz") as tar:
        for c, wnid in enumerate(WNIDS):
            for k, n in enumerate(NUMBERS):
                data = jpeg(c, k, gray=c == 3)
                info = tarfile.TarInfo(f"train/{wnid}/{wnid}_{n}.JPEG")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def shared(tmp_path, monkeypatch):
    path = make_shared(tmp_path / "train.tar.gz")
    monkeypatch.setattr(tinyimagenet, "TINYIMAGENET100_SHA256",
                        hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def test_shared_layout_splits_in_file_name_order(shared, tmp_path):
    opts = dict(data_dir=shared.parent, val_per_class=1, cache_dir=tmp_path / "cache")
    va = load_dataset("tinyimagenet100", "val", **opts)
    tr = load_dataset("tinyimagenet100", "train", **opts)
    assert va.classes == tr.classes == WNIDS and len(WNIDS) == 100
    assert va.data.shape == (100, 8, 8, 3) and len(tr) == 300
    # val: the last file by name, "_2" (not "_10", the highest number); train the other three
    got = ident(va.data)
    assert [n for _, n in got] == [2] * 100
    assert [c for c, _ in got] == [c if c != 3 else -1 for c in range(100)]
    np.testing.assert_array_equal(va.targets, np.arange(100))
    assert [n for _, n in ident(tr.data)] == [0, 1, 10] * 100
    np.testing.assert_array_equal(tr.targets, np.repeat(np.arange(100), 3))
    gray = va.data[3]                                  # a grayscale JPEG comes back as RGB
    assert gray.shape == (8, 8, 3) and (gray[..., 0] == gray[..., 1]).all()
    assert va.name == "tinyimagenet100-val"


def test_default_validation_is_the_last_50(shared, tmp_path):
    """By default 50 per class are held out: the 4-image classes here are too small for that."""
    with pytest.raises(InputError, match="has 4 images, too few to hold out val_per_class=50"):
        load_tinyimagenet100("val", shared, cache_dir=tmp_path / "cache")


def test_shared_archive_is_checked(tmp_path, shared, monkeypatch):
    monkeypatch.setattr(tinyimagenet, "TINYIMAGENET100_SHA256", "0" * 64)
    with pytest.raises(InputError, match=r"has sha256 [0-9a-f]{16}…, expected 0{16}…"):
        load_dataset("tinyimagenet100", "train", data_dir=shared, cache_dir=tmp_path)
    with pytest.raises(InputError, match="shared copy\\) has no test split; use split='val'"):
        load_dataset("tinyimagenet100", "test", data_dir=shared, cache_dir=tmp_path)
    with pytest.raises(InputError, match="Tiny-ImageNet-100 archive not found: .*empty"):
        load_dataset("tinyimagenet100", "train", data_dir=tmp_path / "empty")
    assert "tinyimagenet100" in DATASETS


# ---------------------------------------------------------------- official archive

def make_official(path: Path, extra: str = "n99999999", drop: str | None = None) -> dict:
    """A miniature tiny-imagenet-200.zip: wnids.txt (the 100 + ``extra``), words.txt,
    train/<wnid>/images/ (4 per class) + boxes, val/images + val_annotations.txt (one per class,
    in shuffled order), test/images. Returns val file name -> class index."""
    root = "tiny-imagenet-200"
    wnids = [w for w in WNIDS if w != drop] + [extra]
    order = np.random.default_rng(0).permutation(len(wnids))
    val = {}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{root}/wnids.txt", "\n".join(wnids) + "\n")
        z.writestr(f"{root}/words.txt", "".join(f"{w}\tthing {w}\n" for w in wnids))
        rows = []
        for c, wnid in enumerate(wnids):
            for k, n in enumerate(NUMBERS):
                z.writestr(f"{root}/train/{wnid}/images/{wnid}_{n}.JPEG", jpeg(c, k, False))
            z.writestr(f"{root}/train/{wnid}/{wnid}_boxes.txt", "")
            name = f"val_{order[c]}.JPEG"
            z.writestr(f"{root}/val/images/{name}", jpeg(c, 3, False))
            rows.append(f"{name}\t{wnid}\t0\t0\t63\t63")
            val[name] = c
        z.writestr(f"{root}/val/val_annotations.txt", "\n".join(rows) + "\n")
        z.writestr(f"{root}/test/images/test_0.JPEG", jpeg(0, 0, False))
    return val


def test_official_zip_selects_the_100_classes(tmp_path):
    archive = tmp_path / "tiny-imagenet-200.zip"
    make_official(archive)
    opts = dict(data_dir=archive, val_per_class=1, cache_dir=tmp_path / "cache")
    tr = load_dataset("tinyimagenet100", "train", **opts)
    va = load_dataset("tinyimagenet100", "val", **opts)
    te = load_dataset("tinyimagenet100", "test", **opts)
    assert tr.classes == va.classes == te.classes == WNIDS      # the extra wnid is left out
    assert [c for c, _ in ident(tr.materialize().data)] == list(np.repeat(np.arange(100), 3))
    assert [n for _, n in ident(va.materialize().data)] == [2] * 100  # same carving as shared
    test = te.materialize()
    assert len(test) == 100 and [c for c, _ in ident(test.data)] == list(range(100))
    np.testing.assert_array_equal(test.targets, np.arange(100))  # labels from the annotations
    # the folder holding the zip works as well, and the unpacked tree is reused
    again = load_dataset("tinyimagenet100", "test", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.targets, te.targets)
    assert len(list((tmp_path / "cache" / "tinyimagenet100").iterdir())) == 1


def test_official_download(tmp_path, monkeypatch):
    """download=True fetches the archive (a file:// URL here), checks its MD5 and unpacks it."""
    server = tmp_path / "server" / "tiny-imagenet-200.zip"
    server.parent.mkdir()
    make_official(server)
    monkeypatch.setattr(tinyimagenet, "TINYIMAGENET_URL", server.as_uri())
    monkeypatch.setattr(tinyimagenet, "TINYIMAGENET_MD5", hashlib.md5(server.read_bytes()).hexdigest())
    target = tmp_path / "data"
    te = load_dataset("tinyimagenet100", "test", data_dir=target, download=True,
                      cache_dir=tmp_path / "cache")
    assert len(te) == 100 and (target / "tiny-imagenet-200.zip").is_file()
    monkeypatch.setattr(tinyimagenet, "TINYIMAGENET_MD5", "0" * 32)
    with pytest.raises(InputError, match="checksum mismatch"):
        load_dataset("tinyimagenet100", "test", data_dir=tmp_path / "data2", download=True)
    assert not (tmp_path / "data2" / "tiny-imagenet-200.zip").exists()


def test_official_archive_errors(tmp_path):
    short = tmp_path / "short" / "tiny-imagenet-200.zip"
    short.parent.mkdir()
    make_official(short, drop=WNIDS[7])
    with pytest.raises(InputError, match=f"wnids.txt lacks 1 of the 100 classes, e.g. \\['{WNIDS[7]}'\\]"):
        load_dataset("tinyimagenet100", "train", data_dir=short, cache_dir=tmp_path)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match="cannot read .*bad.zip as a zip archive"):
        load_dataset("tinyimagenet100", "train", data_dir=bad, cache_dir=tmp_path)
    with pytest.raises(InputError, match="official Tiny ImageNet archive not found: .*none.zip"):
        load_dataset("tinyimagenet100", "train", data_dir=tmp_path / "none.zip")
    assert not list(tmp_path.glob("tinyimagenet100/*"))          # nothing half-unpacked


def test_official_address_and_checksum():
    assert tinyimagenet.TINYIMAGENET_URL == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    assert tinyimagenet.TINYIMAGENET_MD5 == "90528d7ca1a48142e341f4ef8d21d0de"


# ---------------------------------------------------------------- the real shared copy

needs_shared = pytest.mark.skipif(not SHARED_TINYIMAGENET100.is_file(),
                                  reason="../shared/data/tiny-imagenet-100 is not here")


@needs_shared
def test_constants_match_the_shared_readme():
    readme = (SHARED_DIR / "README.md").read_text()
    assert re.search(r"sha256 of train\.tar\.gz: ([0-9a-f]{64})", readme)[1] == \
        tinyimagenet.TINYIMAGENET100_SHA256
    assert read_classes_tsv(SHARED_DIR / "classes.tsv") == TINYIMAGENET100_CLASSES
    assert WNIDS == sorted(WNIDS)


def _second_by_name(wnids: list[str]) -> dict[str, np.ndarray]:
    """The second file by name of each class in ``wnids`` (leading classes of the archive),
    decoded by PIL from a forward read of the real tar that stops after them."""
    files: dict[str, dict[str, bytes]] = {w: {} for w in wnids}
    with tarfile.open(SHARED_TINYIMAGENET100, "r|gz") as tar:
        for m in tar:
            wnid = m.name.split("/")[1] if m.name.count("/") == 2 else None
            if wnid not in files:
                if wnid is not None and all(files.values()):
                    break
                continue
            files[wnid][m.name] = tar.extractfile(m).read()
    out = {}
    for wnid, members in files.items():
        with Image.open(io.BytesIO(members[sorted(members)[1]])) as img:
            out[wnid] = np.asarray(img.convert("RGB"))
    return out


@needs_shared
@pytest.mark.slow
def test_real_shared_archive(tmp_path):
    """Default location, checksum, and the carving on the real files: with the first 2 files of
    every class, "val" is the second by name, decoded as PIL decodes that member (~5 s)."""
    va = load_dataset("tinyimagenet100", "val", max_per_class=2, val_per_class=1,
                      cache_dir=tmp_path, progress=False)
    assert va.data.shape == (100, 64, 64, 3) and va.classes == WNIDS
    for wnid, expected in _second_by_name(WNIDS[:2]).items():
        np.testing.assert_array_equal(va.data[WNIDS.index(wnid)], expected)
