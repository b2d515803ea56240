"""The image-path figure (paper Fig. 1a / Fig. 6): layout, pixels drawn, labels, atomic saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from virolbi import InputError, image_path
from virolbi.viz import plot_image_path, save_figure


def _path(levels=3, n=2, c=3, h=6, w=5, seed=0):
    return np.random.default_rng(seed).random((levels, n, c, h, w))


def test_grid_labels_and_pixels_drawn():
    p = _path(levels=3, n=2, c=3)
    p[0, 1, 0, 0, 0] = 1.7  # out of range: clipped for display
    fig = plot_image_path(p, levels=(0.2, 0.6, 1.0), titles=["first", "second"])
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["sparsity 0.2", "sparsity 0.6", "sparsity 1"]
    assert [ax.get_title() for ax in axes[1]] == ["", "", ""]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["first", "second"]
    for i in range(2):
        for j in range(3):
            drawn = np.asarray(axes[i, j].images[0].get_array())
            np.testing.assert_allclose(drawn, np.clip(np.moveaxis(p[j, i], 0, -1), 0, 1))


def test_gray_drawn_with_a_fixed_gray_scale():
    p = _path(levels=2, n=1, c=1)
    fig = plot_image_path(p, levels=(0.5, 1.0))
    im = fig.axes[0].images[0]
    np.testing.assert_allclose(np.asarray(im.get_array()), p[0, 0, 0])
    assert im.get_cmap().name == "gray" and im.get_clim() == (0.0, 1.0)


def test_rows_of_different_sizes_and_tensors_from_image_path():
    a = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    b = torch.rand(3, 6, 10, generator=torch.Generator().manual_seed(1))
    levels = (0.3, 1.0)
    rows = [image_path(a, levels), image_path(b, levels)]  # (L, C, H, W) each
    fig = plot_image_path(rows, levels, titles=["a", "b"])
    assert len(fig.axes) == 4
    assert np.asarray(fig.axes[0].images[0].get_array()).shape == (8, 8)
    assert np.asarray(fig.axes[3].images[0].get_array()).shape == (6, 10, 3)
    np.testing.assert_allclose(np.asarray(fig.axes[3].images[0].get_array()),
                               b.permute(1, 2, 0).numpy())  # level 1.0 is the image


def test_uint8_is_scaled():
    p = np.full((1, 1, 1, 4, 4), 255, dtype=np.uint8)
    fig = plot_image_path(p, levels=[1.0])
    assert np.asarray(fig.axes[0].images[0].get_array()).max() == 1.0


def test_pyplot_state_is_untouched():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_image_path(_path(), levels=(0.2, 0.6, 1.0))
    assert plt.get_fignums() == before


@pytest.mark.parametrize("images, levels, titles, message", [
    (np.zeros((2, 3, 4, 4)), (0.5, 1.0), None, r"shape \(L, N, C, H, W\)"),
    (np.zeros((2, 0, 3, 4, 4)), (0.5, 1.0), None, "holds no image"),
    (np.zeros((2, 1, 2, 4, 4)), (0.5, 1.0), None,
     r"1 \(gray\) or 3 \(RGB\) channels, image 0 has 2"),
    (np.zeros((2, 1, 3, 4, 4)), (0.5,), None, "got 1 levels for 2 images per row"),
    (np.zeros((2, 1, 3, 4, 4)), "ab", None, "levels must be a sequence of numbers"),
    (np.zeros((2, 2, 3, 4, 4)), (0.5, 1.0), ["one"], "got 1 titles for 2 images"),
    (np.full((1, 1, 1, 4, 4), np.nan), (1.0,), None, "image 0 contains NaN or Inf"),
    (np.zeros((1, 1, 1, 4, 4), dtype=np.int64), (1.0,), None, "float in \\[0, 1\\] or uint8"),
    ([], (1.0,), None, "at least one image"),
    ([np.zeros((3, 4, 4))], (1.0,), None, r"shape \(L, C, H, W\), image 0 has shape \(3, 4, 4\)"),
    ([np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 4, 4))], (1.0,), None, "same number of levels"),
])
def test_bad_input(images, levels, titles, message):
    with pytest.raises(InputError, match=message):
        plot_image_path(images, levels, titles)


@pytest.mark.parametrize("name, magic", [("f.png", b"\x89PNG"), ("f.pdf", b"%PDF"),
                                         ("f.jpg", b"\xff\xd8\xff"), ("f.svg", b"<?xml")])
def test_save_figure_formats(tmp_path, name, magic):
    fig = plot_image_path(_path(n=1), levels=(0.2, 0.6, 1.0))
    out = save_figure(fig, tmp_path / "sub" / name)
    assert out == tmp_path / "sub" / name
    assert out.read_bytes().startswith(magic)
    assert [p.name for p in out.parent.iterdir()] == [name]  # no temporary file left
    if name.endswith(".png"):
        with Image.open(out) as img:
            assert img.width > img.height > 50  # a row of three panels


def test_save_figure_rejects_unknown_suffix(tmp_path):
    fig = plot_image_path(_path(n=1), levels=(0.2, 0.6, 1.0))
    with pytest.raises(InputError, match=r"figure file must end in one of .png.*got 'f.gif'"):
        save_figure(fig, tmp_path / "f.gif")
    assert list(tmp_path.iterdir()) == []


def test_save_figure_leaves_nothing_when_writing_fails(tmp_path):
    fig = plot_image_path(_path(n=1), levels=(0.2, 0.6, 1.0))

    def broken(path, **kw):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise RuntimeError("disk full")

    fig.savefig = broken
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == []
