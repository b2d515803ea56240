"""ImageFolder trees as directories (lazy) and archives (decoded once into a checksummed cache),
native and carved splits, resizing, ImageNet100 class lists, and the shared CIFAR-10 JPEG copy."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

import virolbi.data.folder as folder_mod
from virolbi.data import (FileImageDataset, ImageDataset, load_dataset, load_image_folder,
                          load_imagenet100, read_class_list, resize_center_crop)
from virolbi.errors import InputError
from virolbi.io import write_image


def make_tree(root: Path, classes=("dog", "cat", "bird"), n=4, size=(5, 6), seed=0,
              prefix="") -> dict:
    """PNG (lossless) tree root/prefix/<class>/<name>.png; returns {relative path: array}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for c in classes:
        for k in range(n):
            img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            rel = f"{prefix}{c}/img_{(7 * k) % n:02d}.png"  # created out of name order
            write_image(img, root / rel)
            truth[rel] = img
    return truth


def expected(truth: dict, prefix: str = "", limit=None):
    """Independent reference: classes sorted, files sorted by name within a class."""
    rels = sorted(r for r in truth if r.startswith(prefix))
    classes = sorted({r[len(prefix):].split("/")[0] for r in rels})
    imgs, labels = [], []
    for label, c in enumerate(classes):
        mine = sorted(r for r in rels if r[len(prefix):].split("/")[0] == c)[:limit]
        imgs += [truth[r] for r in mine]
        labels += [label] * len(mine)
    return np.stack(imgs), np.asarray(labels), classes


def pack(src: Path, archive: Path, mode="w:gz"):
    with tarfile.open(archive, mode) as tar:
        for p in sorted(src.rglob("*"), reverse=True):  # archive order != name order
            tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return archive


def test_directory_is_lazy_and_ordered(tmp_path):
    truth = make_tree(tmp_path / "tree")
    ds = load_image_folder(tmp_path / "tree")
    x, y, classes = expected(truth)
    assert isinstance(ds, FileImageDataset) and ds.classes == classes == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(ds.targets, y)
    img, label = ds[5]
    np.testing.assert_array_equal(img.numpy(), x[5].transpose(2, 0, 1))
    assert label == y[5]
    with pytest.raises(AttributeError, match="decoded lazily"):
        ds.data
    np.testing.assert_array_equal(ds.materialize().data, x)
    xb, yb = ds.get_batch([0, 11])
    np.testing.assert_array_equal(xb.numpy(), x[[0, 11]].transpose(0, 3, 1, 2))


def test_archive_equals_directory_and_is_cached(tmp_path, monkeypatch):
    truth = make_tree(tmp_path / "tree")
    archive = pack(tmp_path / "tree", tmp_path / "tree.tar.gz")
    cache = tmp_path / "cache"
    ds = load_image_folder(archive, cache_dir=cache)
    x, y, classes = expected(truth)
    assert type(ds) is ImageDataset and ds.classes == classes
    np.testing.assert_array_equal(ds.data, x)
    np.testing.assert_array_equal(ds.targets, y)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()

    def no_decoding(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(folder_mod, "decode_image", no_decoding)
    again = load_image_folder(archive, cache_dir=cache)
    assert isinstance(again.data, np.memmap)
    np.testing.assert_array_equal(again.data, x)


def test_corrupt_cache_is_rebuilt(tmp_path):
    truth = make_tree(tmp_path / "tree", n=2)
    archive = pack(tmp_path / "tree", tmp_path / "tree.tar", mode="w")
    cache = tmp_path / "cache"
    load_image_folder(archive, cache_dir=cache)
    (entry,) = cache.iterdir()
    raw = bytearray((entry / "images.npy").read_bytes())
    raw[-1] ^= 0xFF
    (entry / "images.npy").write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="is corrupt: images.npy has sha256 .*rebuilding"):
        ds = load_image_folder(archive, cache_dir=cache)
    np.testing.assert_array_equal(ds.data, expected(truth)[0])
    (entry / "meta.json").unlink()  # interrupted build: rebuilt silently
    (entry / "targets.npy").write_bytes(b"junk")
    np.testing.assert_array_equal(load_image_folder(archive, cache_dir=cache).targets,
                                  expected(truth)[1])


def test_native_and_carved_splits(tmp_path):
    truth = make_tree(tmp_path / "t", prefix="train/", n=5)
    truth.update(make_tree(tmp_path / "t", prefix="val/", n=2, seed=1))
    archive = pack(tmp_path / "t", tmp_path / "t.tar.gz")
    for src in (tmp_path / "t", archive):
        kw = dict(cache_dir=tmp_path / "cache")
        val = load_image_folder(src, "val", **kw)
        np.testing.assert_array_equal(np.stack([val[i][0].numpy() for i in range(len(val))]),
                                      expected(truth, "val/")[0].transpose(0, 3, 1, 2))
        xt, yt, _ = expected(truth, "train/")
        tr = load_image_folder(src, "train", val_per_class=2, **kw)
        cv = load_image_folder(src, "val", val_per_class=2, **kw)
        last2 = np.concatenate([np.arange(5 * c + 3, 5 * c + 5) for c in range(3)])
        first3 = np.concatenate([np.arange(5 * c, 5 * c + 3) for c in range(3)])
        np.testing.assert_array_equal(cv.get_batch(np.arange(6))[0].numpy(),
                                      xt[last2].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(tr.get_batch(np.arange(9))[0].numpy(),
                                      xt[first3].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(cv.targets, yt[last2])
        few = load_image_folder(src, "val", val_per_class=1, max_per_class=2, **kw)
        np.testing.assert_array_equal(few.get_batch(np.arange(3))[0].numpy(),
                                      xt[[1, 6, 11]].transpose(0, 3, 1, 2))
        with pytest.raises(InputError, match="has no 'test' split \\(it has \\['train', 'val'\\]\\)"):
            load_image_folder(src, "test", **kw)


def test_a_tree_without_split_folders_is_one_set_for_train_and_test(tmp_path):
    make_tree(tmp_path / "t", n=2)
    train, test = load_image_folder(tmp_path / "t", "train"), load_image_folder(tmp_path / "t", "test")
    assert len(train) == len(test) > 0 and train.targets.tolist() == test.targets.tolist()
    np.testing.assert_array_equal(train.get_batch(np.arange(len(train)))[0].numpy(),
                                  test.get_batch(np.arange(len(test)))[0].numpy())


def test_split_errors_without_native_splits(tmp_path):
    make_tree(tmp_path / "t", n=2)
    with pytest.raises(InputError, match="has no 'val' split .*pass val_per_class"):
        load_image_folder(tmp_path / "t", "val")
    with pytest.raises(InputError, match="class bird has 2 images, too few to hold out val_per_class=2"):
        load_image_folder(tmp_path / "t", "val", val_per_class=2)
    with pytest.raises(InputError, match="split must be one of"):
        load_image_folder(tmp_path / "t", "dev")
    with pytest.raises(InputError, match="image folder not found"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(InputError, match="max_per_class must be an integer >= 1"):
        load_image_folder(tmp_path / "t", max_per_class=0)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(InputError, match="no images found"):
        load_image_folder(tmp_path / "empty")


def test_corrupt_archives(tmp_path):
    make_tree(tmp_path / "t", n=2)
    archive = pack(tmp_path / "t", tmp_path / "t.tar.gz")
    trunc = tmp_path / "trunc.tar.gz"
    trunc.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image_folder(trunc, cache_dir=tmp_path / "c")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00not a tar" * 100)
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image_folder(junk, cache_dir=tmp_path / "c")
    badimg = tmp_path / "badimg.tar"
    with tarfile.open(badimg, "w") as tar:
        info = tarfile.TarInfo("cat/0.png")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(InputError, match="cannot decode .*badimg.tar:cat/0.png as an image"):
        load_image_folder(badimg, cache_dir=tmp_path / "c")
    (tmp_path / "t" / "cat" / "broken.png").write_bytes(b"nope")
    ds = load_image_folder(tmp_path / "t")
    with pytest.raises(InputError, match="cannot decode .*broken.png"):
        ds.materialize()


def test_mixed_sizes_need_image_size(tmp_path):
    make_tree(tmp_path / "t", classes=("a",), n=2, size=(5, 6))
    make_tree(tmp_path / "t", classes=("b",), n=2, size=(12, 9))
    with pytest.raises(InputError, match="different sizes .*pass image_size"):
        load_image_folder(tmp_path / "t").get_batch([0, 3])
    with pytest.raises(InputError, match="different sizes .*pass image_size"):
        load_image_folder(pack(tmp_path / "t", tmp_path / "t.tar"), cache_dir=tmp_path / "c")
    ds = load_image_folder(tmp_path / "t", image_size=4)
    assert tuple(ds.get_batch([0, 3])[0].shape) == (2, 3, 4, 4)
    with pytest.raises(InputError, match="image_size must be a positive integer"):
        load_image_folder(tmp_path / "t", image_size=0)


def test_resize_center_crop():
    from PIL import Image

    rng = np.random.default_rng(0)
    # shorter side 9 = round(8 * 256 / 224): no resampling, the crop starts at (0, 0)
    img = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(resize_center_crop(Image.fromarray(img), 8)),
                                  img[:8, :8])
    # a wide image keeps its aspect: 9 x 27 -> crop columns 9..17
    img = rng.integers(0, 256, (9, 27, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(resize_center_crop(Image.fromarray(img), 8)),
                                  img[:8, 9:17])
    flat = Image.fromarray(np.full((40, 70, 3), 77, np.uint8))
    out = np.asarray(resize_center_crop(flat, 16))
    assert out.shape == (16, 16, 3) and (out == 77).all()


def test_imagenet100_class_list(tmp_path):
    wnids = [f"n{k:08d}" for k in range(101)]
    for split in ("train", "val"):
        for w in wnids:
            write_image(np.full((6, 7, 3), int(w[-2:]), np.uint8), tmp_path / "in" / split / w / "a.JPEG")
    listed = wnids[1:][::-1]
    (tmp_path / "list.txt").write_text("# ImageNet100\n" + "\n".join(listed) + "\n")
    ds = load_dataset("imagenet100", "val", data_dir=tmp_path / "in", class_list=tmp_path / "list.txt",
                      image_size=4)
    assert ds.classes == sorted(listed) and len(ds) == 100
    x, y = ds[0]
    assert tuple(x.shape) == (3, 4, 4) and int(x[0, 0, 0]) == 1 and y == 0
    with pytest.raises(InputError, match="has 101 classes; pass class_list"):
        load_imagenet100(tmp_path / "in", "train")
    (tmp_path / "list99.txt").write_text("\n".join(listed[:99]))
    with pytest.raises(InputError, match="must name 100 classes, got 99"):
        load_imagenet100(tmp_path / "in", class_list=tmp_path / "list99.txt")
    (tmp_path / "listbad.txt").write_text("\n".join(listed[:99] + ["n99999999"]))
    with pytest.raises(InputError, match=r"1 listed classes are missing, e.g. \['n99999999'\]"):
        load_imagenet100(tmp_path / "in", class_list=tmp_path / "listbad.txt")
    (tmp_path / "in" / "imagenet100.txt").write_text("\n".join(listed))
    assert load_imagenet100(tmp_path / "in", "train", image_size=4).classes == sorted(listed)
    with pytest.raises(InputError, match="imagenet100 needs data_dir"):
        load_dataset("imagenet100")


def test_class_list_errors(tmp_path):
    with pytest.raises(InputError, match="class list file not found"):
        read_class_list(tmp_path / "none.txt")
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(InputError, match=r"repeats classes: \['a'\]"):
        read_class_list(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(InputError, match="names no classes"):
        read_class_list(tmp_path / "empty.txt")


def test_load_dataset_paths(tmp_path):
    truth = make_tree(tmp_path / "t", n=2)
    ds = load_dataset(str(tmp_path / "t"))
    np.testing.assert_array_equal(ds.materialize().data, expected(truth)[0])
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="is a file but not a tar archive"):
        load_dataset(tmp_path / "x.txt")
    with pytest.raises(InputError, match="unknown dataset 'cifar11': expected one of"):
        load_dataset("cifar11")


def test_cifar10_jpeg_generated(tmp_path):
    """The cifar10-jpeg recipe on a generated tar in the shared layout: train/<class>/<NNNN>.jpg."""
    make_tree(tmp_path / "src", classes=("cat", "airplane"), n=5, prefix="train/")
    (tmp_path / "d").mkdir()
    archive = pack(tmp_path / "src", tmp_path / "d" / "train.tar.gz")
    kw = dict(data_dir=tmp_path / "d", cache_dir=tmp_path / "c")
    with pytest.raises(InputError, match="class airplane has 5 images, too few to hold out val_per_class=1000"):
        load_dataset("cifar10-jpeg", "val", **kw)
    va = load_dataset("cifar10-jpeg", "val", val_per_class=2, **kw)
    tr = load_dataset("cifar10-jpeg", "train", data_dir=archive, val_per_class=2, cache_dir=tmp_path / "c")
    assert (len(tr), len(va)) == (6, 4) and va.classes == ["airplane", "cat"]
    assert va.name == "cifar10-jpeg-val"
    with pytest.raises(InputError, match="has no test split; use split='val'"):
        load_dataset("cifar10-jpeg", "test", **kw)
    with pytest.raises(InputError, match="cifar10-jpeg archive not found"):
        load_dataset("cifar10-jpeg", data_dir=tmp_path / "nowhere")


def test_shared_cifar10_jpeg(tmp_path, cifar_small):
    """The real shared copy, 2 images per class: val = the 2nd of each class (by file name)."""
    from virolbi.data import SHARED_CIFAR10_JPEG

    if not SHARED_CIFAR10_JPEG.exists():
        pytest.skip(f"shared data not found: {SHARED_CIFAR10_JPEG}")
    va = load_dataset("cifar10-jpeg", "val", val_per_class=1, max_per_class=2,
                      cache_dir=tmp_path, progress=False)
    images, labels = cifar_small
    np.testing.assert_array_equal(va.data, images[1::2])
    np.testing.assert_array_equal(va.targets, labels[1::2])
    assert va.classes[0] == "airplane" and va.classes[-1] == "truck"
