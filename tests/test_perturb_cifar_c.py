"""write_cifar_c: the released CIFAR-10-C layout, reproducibility, atomic writes, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virolbi.errors import InputError
from virolbi.perturb import SEVERITY_PARAMS, write_cifar_c


def test_layout_round_trip(cifar_small, tmp_path):
    images, labels = cifar_small
    n = len(images)
    path = write_cifar_c(images, labels, tmp_path, "impulse_noise", severities=(1, 3, 5), seed=0,
                         batch_size=7)
    assert path == tmp_path / "impulse_noise.npy"
    data = np.load(path)
    assert data.dtype == np.uint8 and data.shape == (3 * n, 32, 32, 3)
    lab = np.load(tmp_path / "labels.npy")
    assert lab.dtype == np.int64 and lab.tolist() == np.tile(labels, 3).tolist()
    # block k holds severity k in source order: the flipped fraction is about c, with untouched
    # pixels equal to the source and flipped ones 0 or 255
    for k, s in enumerate((1, 3, 5)):
        block = data[k * n:(k + 1) * n]
        changed = block != images
        assert set(np.unique(block[changed]).tolist()) <= {0, 255}
        c = SEVERITY_PARAMS["impulse_noise"][s - 1]
        assert abs(changed.mean() - c) < 5 * np.sqrt(c / images.size)
    # only the two final files remain (no temporary files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["impulse_noise.npy", "labels.npy"]


def test_reproducible_and_severity_blocks_independent(cifar_small, tmp_path):
    images, labels = cifar_small[0][:6], cifar_small[1][:6]
    full = np.load(write_cifar_c(images, labels, tmp_path / "a", "gaussian_noise", seed=3))
    again = np.load(write_cifar_c(images, labels, tmp_path / "b", "gaussian_noise", seed=3))
    only4 = np.load(write_cifar_c(images, labels, tmp_path / "c", "gaussian_noise", severities=4,
                                  seed=3))
    other = np.load(write_cifar_c(images, labels, tmp_path / "d", "gaussian_noise", seed=4))
    assert np.array_equal(full, again)
    assert np.array_equal(full[3 * 6:4 * 6], only4)
    assert not np.array_equal(full, other)
    # noise grows with severity
    dev = [np.abs(full[k * 6:(k + 1) * 6].astype(float) - images).mean() for k in range(5)]
    assert all(a < b for a, b in zip(dev, dev[1:]))


def test_matches_load_cifar_c_when_available(cifar_small, tmp_path):
    data = pytest.importorskip("virolbi.data")
    if not hasattr(data, "load_cifar_c"):
        pytest.skip("virolbi.data.load_cifar_c has not landed yet")
    images, labels = cifar_small
    arr = np.load(write_cifar_c(images, labels, tmp_path, "shot_noise", seed=0))
    ds = data.load_cifar_c(tmp_path, "shot_noise", 2)
    assert len(ds) == len(images)
    img, lab = ds[5]
    assert torch.equal(img, torch.from_numpy(arr[len(images) + 5]).permute(2, 0, 1))
    assert lab == labels[5]


def test_gray_images(tmp_path):
    images = np.full((3, 8, 8, 1), 200, dtype=np.uint8)
    out = np.load(write_cifar_c(images, [0, 1, 2], tmp_path, "speckle_noise", severities=(2,)))
    assert out.shape == (3, 8, 8, 1)


# ----------------------------------------------------------------------------- input errors

def _ok():
    return np.zeros((2, 4, 4, 3), dtype=np.uint8), np.array([0, 1])


def test_unknown_corruption(tmp_path):
    with pytest.raises(InputError, match="unknown corruption 'contrast'; valid names: gaussian_noise"):
        write_cifar_c(*_ok(), tmp_path, "contrast")


@pytest.mark.parametrize("images", [np.zeros((2, 4, 4, 3)), np.zeros((4, 4, 3), np.uint8),
                                    torch.zeros(2, 4, 4, 3, dtype=torch.uint8)])
def test_bad_images(images, tmp_path):
    with pytest.raises(InputError, match=r"images must be a uint8 numpy array of shape \(N, H, W, C\), "
                                         r"got"):
        write_cifar_c(images, [0, 1], tmp_path, "gaussian_noise")


def test_empty_images(tmp_path):
    with pytest.raises(InputError, match=r"images is empty \(N = 0\)"):
        write_cifar_c(np.zeros((0, 4, 4, 3), np.uint8), [], tmp_path, "gaussian_noise")


@pytest.mark.parametrize("labels", [[0], [0, 1, 2], [0.0, 1.0]])
def test_bad_labels(labels, tmp_path):
    with pytest.raises(InputError, match="labels must be 2 integers \\(one per image\\), got"):
        write_cifar_c(_ok()[0], labels, tmp_path, "gaussian_noise")


def test_bad_severities(tmp_path):
    with pytest.raises(InputError, match=r"severity must be an integer in 1\.\.5, got 6"):
        write_cifar_c(*_ok(), tmp_path, "gaussian_noise", severities=(1, 6))
    with pytest.raises(InputError, match="severities must not be empty"):
        write_cifar_c(*_ok(), tmp_path, "gaussian_noise", severities=())
    assert not any(tmp_path.iterdir())  # nothing written when the input is refused


@pytest.mark.parametrize("bs", [0, -1, 2.5])
def test_bad_batch_size(bs, tmp_path):
    with pytest.raises(InputError, match="batch_size must be a positive integer, got"):
        write_cifar_c(*_ok(), tmp_path, "gaussian_noise", batch_size=bs)


def test_failure_midway_leaves_nothing(cifar_small, tmp_path, monkeypatch):
    import virolbi.perturb.cifar_c as mod

    calls = []

    def failing(x, name, severity, generator=None):
        calls.append(severity)
        if severity == 3:
            raise RuntimeError("disk full")
        return x

    monkeypatch.setattr(mod, "corrupt", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_cifar_c(cifar_small[0], cifar_small[1], tmp_path, "gaussian_noise")
    assert calls == [1, 2, 3]
    assert list(tmp_path.iterdir()) == []
