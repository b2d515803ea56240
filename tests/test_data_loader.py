"""ImageDataset, make_loader (deterministic shuffling), to_float, split_per_class and the
checksummed array cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virolbi.data import (ImageDataset, cache_dir, load_arrays, make_loader, save_arrays,
                          split_per_class, to_float)
from virolbi.errors import InputError


@pytest.fixture
def tagged():
    """Image k has every pixel equal to k and label k % 3: batches can be checked exactly."""
    n = 10
    data = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 5, 3)).copy()
    return ImageDataset(data, np.arange(n) % 3, ["a", "b", "c"], name="tagged")


def ids(batch):
    return batch[:, 0, 0, 0].tolist()


def test_items_and_batches(tagged):
    x, y = tagged[-1]
    assert x.shape == (3, 4, 5) and x.dtype == torch.uint8 and int(x[0, 0, 0]) == 9 and y == 0
    xb, yb = tagged.get_batch(np.array([4, 0, 4]))
    assert ids(xb) == [4, 0, 4] and yb.dtype == torch.int64 and yb.tolist() == [1, 0, 1]
    # a read-only (memory-mapped-like) array gives writable tensors without warnings
    ro = tagged.data.copy()
    ro.flags.writeable = False
    x, _ = ImageDataset(ro, tagged.targets)[0]
    x += 1


def test_gray_and_subset(tagged):
    gray = ImageDataset(np.zeros((2, 3, 3), np.uint8), [0, 1])
    assert gray[0][0].shape == (1, 3, 3) and gray.classes == ["0", "1"]
    sub = tagged.subset(tagged.targets == 2)
    assert ids(torch.from_numpy(sub.data).permute(0, 3, 1, 2)) == [2, 5, 8]
    assert sub.classes == tagged.classes and sub.targets.tolist() == [2, 2, 2]
    assert len(tagged.subset([])) == 0
    assert "tagged" in repr(sub)


def test_dataset_errors(tagged):
    with pytest.raises(InputError, match=r"data must be a uint8 array of shape \(N, H, W, C\), got float64"):
        ImageDataset(np.zeros((2, 3, 3, 3)), [0, 1])
    with pytest.raises(InputError, match="got list"):
        ImageDataset([[1]], [0])
    with pytest.raises(InputError, match=r"targets must be 2 integers .*shape \(3,\)"):
        ImageDataset(np.zeros((2, 3, 3, 3), np.uint8), [0, 1, 2])
    with pytest.raises(InputError, match="label 2 out of range for 2 classes"):
        ImageDataset(np.zeros((2, 3, 3, 3), np.uint8), [0, 2], ["a", "b"])
    with pytest.raises(InputError, match="labels must be >= 0"):
        ImageDataset(np.zeros((2, 3, 3, 3), np.uint8), [0, -1])
    with pytest.raises(InputError, match="index must be an integer"):
        tagged[1.5]
    with pytest.raises(IndexError, match="index 10 out of range"):
        tagged[10]
    with pytest.raises(InputError, match=r"indices out of range for a dataset of 10 images: \[0, 12\]"):
        tagged.subset([0, 12])
    with pytest.raises(InputError, match=r"boolean mask for indices must have shape \(10,\)"):
        tagged.subset(np.ones(3, bool))
    with pytest.raises(InputError, match="1-D sequence of integers"):
        tagged.get_batch([0.5, 1.5])


def test_loader_order_and_determinism(tagged):
    plain = [ids(x) for x, _ in make_loader(tagged, batch_size=4)]
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for x, y in make_loader(tagged, batch_size=3, shuffle=True, seed=1):
        assert y.tolist() == [k % 3 for k in ids(x)]  # labels travel with their images

    def epochs(seed, n=2):
        loader = make_loader(tagged, batch_size=4, shuffle=True, seed=seed)
        return [sum((ids(x) for x, _ in loader), []) for _ in range(n)]

    a, b = epochs(0), epochs(0)
    assert a == b  # same seed, same orders
    assert sorted(a[0]) == list(range(10)) and a[0] != a[1]  # a permutation, new per epoch
    assert epochs(1)[0] != a[0]
    # the permutation is torch's randperm under the seeded generator
    assert a[0] == torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    dropped = list(make_loader(tagged, batch_size=4, drop_last=True))
    assert [len(y) for _, y in dropped] == [4, 4]


def test_loader_with_worker_and_plain_dataset(tagged):
    got = sum((ids(x) for x, _ in make_loader(tagged, batch_size=5, num_workers=1)), [])
    assert got == list(range(10))

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.full((1, 2, 2), i, dtype=torch.uint8), i

    (x, y), = list(make_loader(Plain(), batch_size=8))
    assert ids(x) == [0, 1, 2] and y.dtype == torch.int64


def test_loader_errors(tagged):
    with pytest.raises(InputError, match="batch_size must be a positive integer, got 0"):
        make_loader(tagged, batch_size=0)
    with pytest.raises(InputError, match="num_workers must be a non-negative integer, got -1"):
        make_loader(tagged, num_workers=-1)


def test_to_float():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    y = to_float(x)
    assert y.dtype == torch.float32 and float(y.min()) == 0.0 and float(y.max()) == 1.0
    torch.testing.assert_close(y * 255, x.float())
    z = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    assert to_float(z) is z
    with pytest.raises(InputError, match="expects uint8 \\(or float\\) images, got torch.int32"):
        to_float(x.int())
    with pytest.raises(InputError, match="expects a torch tensor, got ndarray"):
        to_float(np.zeros((1, 1, 2, 2), np.uint8))


def test_split_per_class_properties():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 60)
    for k in (0, 1, 3):
        tr, va = split_per_class(t, k)
        assert np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).tolist() == list(range(60))
        for c in range(4):
            members = np.flatnonzero(t == c)
            want = members[members.size - k:] if k else members[:0]
            assert va[t[va] == c].tolist() == want.tolist()
    with pytest.raises(InputError, match="val_per_class must be a non-negative integer, got -1"):
        split_per_class(t, -1)
    with pytest.raises(InputError, match="class b has 1 images, too few"):
        split_per_class([0, 0, 1], 1, ["a", "b"])


def test_cache_round_trip_and_corruption(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    entry = save_arrays(tmp_path / "e", imgs, np.array([2, 0, 1]), {"classes": list("abc")})
    got, t, meta = load_arrays(entry)
    np.testing.assert_array_equal(got, imgs)
    assert t.tolist() == [2, 0, 1] and meta["classes"] == ["a", "b", "c"]
    assert not list(entry.glob("*.tmp")) and not list(entry.glob(".*"))
    raw = bytearray((entry / "targets.npy").read_bytes())
    raw[-1] ^= 1
    (entry / "targets.npy").write_bytes(bytes(raw))
    with pytest.raises(InputError, match="is corrupt: targets.npy has sha256"):
        load_arrays(entry)
    (entry / "targets.npy").unlink()
    with pytest.raises(InputError, match="is corrupt: targets.npy is missing"):
        load_arrays(entry)
    (entry / "meta.json").write_text("{}")
    with pytest.raises(InputError, match="meta.json has an unknown format"):
        load_arrays(entry)
    (entry / "meta.json").write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON"):
        load_arrays(entry)
    with pytest.raises(InputError, match=r"missing or incomplete \(no meta.json\)"):
        load_arrays(tmp_path / "nothing")


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VIROLBI_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("VIROLBI_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "virolbi")
