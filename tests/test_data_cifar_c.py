"""load_cifar_c: the released CIFAR-10-C layout (severities in blocks of N), memory-mapped,
with clear errors for missing or malformed files."""

from __future__ import annotations

import numpy as np
import pytest

from virolbi.data import CIFAR100_CLASSES, list_cifar_c, load_cifar_c, make_loader
from virolbi.errors import InputError


def write_release(root, n=3, name="gaussian_noise", labels=None):
    """Severity s holds images whose every pixel is 10*s + index: blocks are easy to recognise."""
    root.mkdir(parents=True, exist_ok=True)
    vals = np.array([10 * s + k for s in range(1, 6) for k in range(n)], dtype=np.uint8)
    np.save(root / f"{name}.npy", np.broadcast_to(vals[:, None, None, None], (5 * n, 4, 4, 3)).copy())
    lab = np.arange(n) if labels is None else np.asarray(labels)
    np.save(root / "labels.npy", np.tile(lab, 5).astype(np.uint8))  # the release stores uint8
    return root


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_blocks(tmp_path, severity):
    write_release(tmp_path)
    ds = load_cifar_c(tmp_path, "gaussian_noise", severity)
    assert isinstance(ds.data, np.memmap) and not ds.data.flags.writeable
    assert ds.data.shape == (3, 4, 4, 3)
    assert ds.data[:, 0, 0, 0].tolist() == [10 * severity + k for k in range(3)]
    assert ds.targets.dtype == np.int64 and ds.targets.tolist() == [0, 1, 2]
    assert ds.classes[:3] == ["airplane", "automobile", "bird"]
    x, y = ds[2]
    assert x.dtype.is_floating_point is False and int(x[0, 0, 0]) == 10 * severity + 2 and y == 2
    (xb, yb), = list(make_loader(ds, batch_size=8))
    assert tuple(xb.shape) == (3, 3, 4, 4) and yb.tolist() == [0, 1, 2]


def test_written_by_perturb_module(tmp_path, cifar_small):
    """Round trip through virolbi.perturb.write_cifar_c (the project's writer of this layout)."""
    perturb = pytest.importorskip("virolbi.perturb")
    images, labels = cifar_small[0][:4], cifar_small[1][:4]
    path = perturb.write_cifar_c(images, labels, tmp_path, "impulse_noise", seed=3)
    full = np.load(path)
    for s in (1, 5):
        ds = load_cifar_c(tmp_path, "impulse_noise", s)
        np.testing.assert_array_equal(ds.data, full[4 * (s - 1): 4 * s])
        np.testing.assert_array_equal(ds.targets, labels)
    assert list_cifar_c(tmp_path) == ["impulse_noise"]


def test_cifar100_names(tmp_path):
    write_release(tmp_path, n=2, labels=[4, 50])
    ds = load_cifar_c(tmp_path, "gaussian_noise", 1)
    assert ds.classes == list(CIFAR100_CLASSES) and ds.classes[50] == "mouse"
    assert load_cifar_c(tmp_path, "gaussian_noise", 1, classes=[str(k) for k in range(60)]).classes[4] == "4"


def test_errors(tmp_path):
    root = write_release(tmp_path / "c")
    with pytest.raises(InputError, match="CIFAR-C directory not found"):
        load_cifar_c(tmp_path / "none", "gaussian_noise", 1)
    with pytest.raises(InputError, match="corruption 'fog' not found in .*available: gaussian_noise"):
        load_cifar_c(root, "fog", 1)
    for bad in (0, 6, 2.5, "1"):
        with pytest.raises(InputError, match="severity must be an integer in 1..5"):
            load_cifar_c(root, "gaussian_noise", bad)
    with pytest.raises(InputError, match="corruption must be a corruption name"):
        load_cifar_c(root, "labels", 1)

    np.save(root / "odd.npy", np.zeros((7, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="7 images is not 5 severity blocks"):
        load_cifar_c(root, "odd", 1)
    np.save(root / "floaty.npy", np.zeros((15, 4, 4, 3), np.float32))
    with pytest.raises(InputError, match=r"expected uint8 images \(5 N, H, W, C\), got float32"):
        load_cifar_c(root, "floaty", 1)
    np.save(root / "flat.npy", np.zeros((15, 48), np.uint8))
    with pytest.raises(InputError, match="expected uint8 images"):
        load_cifar_c(root, "flat", 1)
    raw = (root / "gaussian_noise.npy").read_bytes()
    (root / "trunc.npy").write_bytes(raw[: len(raw) - 50])
    with pytest.raises(InputError, match="trunc.npy is not a valid .npy file"):
        load_cifar_c(root, "trunc", 1)
    (root / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match="garbage.npy is not a valid .npy file"):
        load_cifar_c(root, "garbage", 1)
    np.save(root / "shot_noise.npy", np.zeros((10, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match=r"expected 10 integer labels .*got uint8 array of shape \(15,\)"):
        load_cifar_c(root, "shot_noise", 1)
    (root / "labels.npy").unlink()
    with pytest.raises(InputError, match="labels file not found"):
        load_cifar_c(root, "gaussian_noise", 1)
    with pytest.raises(InputError, match="CIFAR-C directory not found"):
        list_cifar_c(tmp_path / "none")
