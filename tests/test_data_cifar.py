"""CIFAR python-pickle release: round trips through generated archives in the official format,
the restricted unpickler, download (file:// URL, never the network), and clear errors."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from virolbi.data import (CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_COARSE_CLASSES, CIFAR_RELEASES,
                          load_cifar, load_dataset, safe_unpickle)
from virolbi.errors import InputError


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING opcodes), like the cPickle that made the
    official batches; loading such a file with encoding="latin1" gives ``str`` back."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    """A protocol-2 pickle as Python 2 + NumPy 1 wrote it (py2 strings, numpy.core globals)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def to_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072), written pixel by pixel: red plane, green, blue, row-major."""
    n = images.shape[0]
    rows = np.zeros((n, 3072), np.uint8)
    for k in range(n):
        for c in range(3):
            for i in range(32):
                rows[k, c * 1024 + i * 32: c * 1024 + (i + 1) * 32] = images[k, i, :, c]
    return rows


def make_release(root: Path, name: str = "cifar10", n_per_batch: int = 4, seed: int = 0,
                 files: dict | None = None) -> tuple[Path, Path, dict]:
    """Write a tiny release in the official layout: the unpacked folder and its .tar.gz.
    Returns (folder, archive, truth) with truth[split] = (images (N,32,32,3), labels) and, for
    CIFAR-100, truth[split + "_coarse"] = its coarse labels (drawn independently of the fine ones,
    so reading the wrong key cannot pass)."""
    rel = CIFAR_RELEASES[name]
    rng = np.random.default_rng(seed)
    folder = root / rel.folder
    folder.mkdir(parents=True)
    truth: dict = {}
    for split, fnames in (("train", rel.train), ("test", rel.test)):
        imgs, labs, coarse = [], [], []
        for fname in fnames:
            x = rng.integers(0, 256, (n_per_batch, 32, 32, 3), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, rel.num_classes, n_per_batch)]
            batch = {b"batch_label": b"training batch", b"data": to_rows(x),
                     b"filenames": [b"f%d.png" % k for k in range(n_per_batch)]}
            if name == "cifar10":
                batch[b"labels"] = y
            else:
                batch[b"fine_labels"] = y
                batch[b"coarse_labels"] = [int(v) for v in rng.integers(0, 20, n_per_batch)]
                coarse += batch[b"coarse_labels"]
            (folder / fname).write_bytes(py2_pickle(batch))
            imgs.append(x)
            labs += y
        truth[split] = (np.concatenate(imgs), np.asarray(labs))
        truth[split + "_coarse"] = np.asarray(coarse)
    if name == "cifar10":
        meta = {b"label_names": [n.encode() for n in CIFAR10_CLASSES],
                b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}
    else:  # the official meta: both name lists
        meta = {b"fine_label_names": [n.encode() for n in CIFAR100_CLASSES],
                b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE_CLASSES]}
    (folder / rel.meta).write_bytes(py2_pickle(meta))
    for fname, data in (files or {}).items():
        (folder / fname).write_bytes(data)
    archive = root / rel.archive
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=rel.folder)
    return folder, archive, truth


@pytest.fixture
def release10(tmp_path):
    return make_release(tmp_path / "c10")


def test_py2_pickle_is_really_python2_style():
    data = py2_pickle({b"data": np.zeros(2, np.uint8)})
    assert b"cnumpy.core.multiarray\n_reconstruct" in data and b"_codecs" not in data
    out = safe_unpickle(data)
    assert list(out) == ["data"] and out["data"].tolist() == [0, 0]


@pytest.mark.parametrize("where", ["folder", "archive", "root"])
def test_cifar10_round_trip(release10, where):
    folder, archive, truth = release10
    src = {"folder": folder, "archive": archive, "root": folder.parent}[where]
    if where == "root":
        archive.unlink()  # the unpacked folder is found under the root
    for split in ("train", "test"):
        ds = load_cifar("cifar10", split, src)
        x, y = truth[split]
        assert ds.data.dtype == np.uint8 and ds.data.shape == x.shape
        np.testing.assert_array_equal(ds.data, x)
        np.testing.assert_array_equal(ds.targets, y)
        assert ds.classes == list(CIFAR10_CLASSES)
    assert len(load_cifar("cifar10", "train", src)) == 5 * 4
    img, label = ds[1]
    np.testing.assert_array_equal(img.numpy(), x[1].transpose(2, 0, 1))
    assert label == y[1]


def test_cifar10_from_archive_only(tmp_path):
    folder, archive, truth = make_release(tmp_path)
    import shutil
    shutil.rmtree(folder)
    ds = load_dataset("cifar10", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.data, truth["test"][0])


def test_cifar100_fine_labels(tmp_path):
    folder, _, truth = make_release(tmp_path, "cifar100", n_per_batch=6)
    ds = load_dataset("cifar100", "train", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.data, truth["train"][0])
    np.testing.assert_array_equal(ds.targets, truth["train"][1])
    assert ds.classes == list(CIFAR100_CLASSES) and len(set(CIFAR100_CLASSES)) == 100
    assert len(load_dataset("cifar100", "test", data_dir=tmp_path)) == 6


def test_cifar100_coarse_labels(tmp_path):
    """labels="coarse" / "cifar100-coarse": the batches' coarse_labels and the meta file's
    coarse_label_names, in both splits and through validation carving."""
    _, _, truth = make_release(tmp_path, "cifar100", n_per_batch=200, seed=3)
    for split in ("train", "test"):
        ds = load_cifar("cifar100", split, tmp_path, labels="coarse")
        np.testing.assert_array_equal(ds.targets, truth[split + "_coarse"])
        np.testing.assert_array_equal(ds.data, truth[split][0])
        assert ds.classes == list(CIFAR100_COARSE_CLASSES) and ds.name == f"cifar100-coarse-{split}"
    assert not np.array_equal(truth["train_coarse"], truth["train"][1] % 20)
    same = load_dataset("cifar100-coarse", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(same.targets, truth["test_coarse"])
    va = load_dataset("cifar100-coarse", "val", data_dir=tmp_path, val_per_class=1)
    coarse = truth["train_coarse"]
    last = sorted(int(np.flatnonzero(coarse == c)[-1]) for c in np.unique(coarse))
    np.testing.assert_array_equal(va.targets, coarse[last])  # the last of every superclass
    np.testing.assert_array_equal(va.data, truth["train"][0][last])
    with pytest.raises(InputError, match="cifar10 has no coarse labels"):
        load_cifar("cifar10", "train", tmp_path, labels="coarse")
    with pytest.raises(InputError, match="labels must be 'fine' or 'coarse', got 'medium'"):
        load_cifar("cifar100", "train", tmp_path, labels="medium")


def test_validation_carving(tmp_path):
    rel = CIFAR_RELEASES["cifar10"]
    folder, _, _ = make_release(tmp_path)
    # overwrite with known labels: 2 classes, 10 images each, interleaved over the batches
    labels = np.tile([0, 1], 10)
    images = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
    for b, fname in enumerate(rel.train):
        sl = slice(4 * b, 4 * b + 4)
        (folder / fname).write_bytes(py2_pickle({b"data": to_rows(images[sl]),
                                                 b"labels": labels[sl].tolist()}))
    tr = load_dataset("cifar10", "train", data_dir=folder, val_per_class=3)
    va = load_dataset("cifar10", "val", data_dir=folder, val_per_class=3)
    ids_tr, ids_va = tr.data[:, 0, 0, 0].tolist(), va.data[:, 0, 0, 0].tolist()
    assert ids_va == [14, 15, 16, 17, 18, 19]  # the last 3 of each class, in file order
    assert sorted(ids_tr + ids_va) == list(range(20)) and not set(ids_tr) & set(ids_va)
    np.testing.assert_array_equal(va.targets, labels[14:])
    full = load_dataset("cifar10", "train", data_dir=folder)
    assert len(full) == 20
    few = load_dataset("cifar10", "train", data_dir=folder, max_per_class=2)
    assert few.data[:, 0, 0, 0].tolist() == [0, 1, 2, 3]


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps({"data": Evil()}, protocol=2)
    folder, _, _ = make_release(tmp_path / "r", files={"data_batch_3": payload})
    with pytest.raises(InputError, match=r"data_batch_3: refused to load: global '(posix|nt)\.system' is forbidden"):
        load_cifar("cifar10", "train", folder)
    assert not marker.exists()
    for evil in (pickle.dumps(eval), pickle.dumps(Path("x"))):
        with pytest.raises(InputError, match="refused to load"):
            safe_unpickle(evil)


def test_not_a_pickle():
    with pytest.raises(InputError, match="not a valid pickle"):
        safe_unpickle(b"this is not a pickle")
    with pytest.raises(InputError, match="not a valid pickle file.*truncated"):
        safe_unpickle(py2_pickle({b"data": np.zeros(300, np.uint8)})[:-40])


def test_corrupt_and_wrong_archives(tmp_path, release10):
    _, archive, _ = release10
    bad = tmp_path / "bad" / "cifar-10-python.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_cifar("cifar10", "train", bad)
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        tar.add(archive, arcname="something/else")
    with pytest.raises(InputError, match="member cifar-10-batches-py/batches.meta is missing"):
        load_cifar("cifar10", "train", other)


@pytest.mark.parametrize("batch, message", [
    ({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, r"shape \(N, 3072\)"),
    ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, r"shape \(N, 3072\)"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, "expected 4 integer labels"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, r"labels must lie in \[0, 10\)"),
    ({b"data": np.zeros((4, 3072), np.uint8)}, "missing keys"),
    ([1, 2, 3], "expected a pickled dict"),
])
def test_malformed_batches(tmp_path, batch, message):
    folder, _, _ = make_release(tmp_path, files={"test_batch": py2_pickle(batch)})
    with pytest.raises(InputError, match=message):
        load_cifar("cifar10", "test", folder)


def test_missing_files_and_bad_arguments(tmp_path, release10):
    folder, _, _ = release10
    (folder / "data_batch_5").unlink()
    with pytest.raises(InputError, match="data_batch_5 is missing"):
        load_cifar("cifar10", "train", folder)
    with pytest.raises(InputError, match="cifar10 not found under .*pass download=True"):
        load_dataset("cifar10", data_dir=tmp_path / "empty")
    with pytest.raises(InputError, match="has splits 'train' and 'test', got 'val'"):
        load_cifar("cifar10", "val", folder)
    with pytest.raises(InputError, match="unknown CIFAR release 'cifar11'"):
        load_cifar("cifar11", "train", folder)
    with pytest.raises(InputError, match="no validation split: pass val_per_class"):
        load_dataset("cifar10", "val", data_dir=folder)
    with pytest.raises(InputError, match="cifar10: pass data_dir"):
        load_cifar("cifar10", "train", None)
    with pytest.raises(InputError, match="val_per_class must be a positive integer"):
        load_dataset("cifar10", "train", data_dir=folder, val_per_class=0)


def test_download_from_local_url(tmp_path, monkeypatch):
    """download=True fetches the archive (here a file:// URL), checks its MD5 and unpacks it."""
    _, archive, truth = make_release(tmp_path / "server")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    rel = dataclasses.replace(CIFAR_RELEASES["cifar10"], url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(CIFAR_RELEASES, "cifar10", rel)
    target = tmp_path / "data"
    ds = load_dataset("cifar10", "test", data_dir=target, download=True)
    np.testing.assert_array_equal(ds.data, truth["test"][0])
    assert (target / rel.archive).is_file() and (target / rel.folder / "data_batch_1").is_file()
    assert not list(target.rglob("*.part"))

    bad = dataclasses.replace(rel, md5="0" * 32)
    monkeypatch.setitem(CIFAR_RELEASES, "cifar10", bad)
    with pytest.raises(InputError, match="checksum mismatch"):
        load_dataset("cifar10", "test", data_dir=tmp_path / "data2", download=True)
    assert not (tmp_path / "data2" / rel.archive).exists()


def test_official_urls_and_checksums():
    assert CIFAR_RELEASES["cifar10"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR_RELEASES["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert CIFAR_RELEASES["cifar100"].url.endswith("/cifar-100-python.tar.gz")
    assert CIFAR_RELEASES["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
