r"""The image-path figure of the paper (Zhou et al. 2024, Fig. 1a and Fig. 6).

One row per image, one column per sparsity level: ũ from coarse (few edges kept, piecewise
constant) to fine (level 1.0, the image itself). Figures are built with Matplotlib's object API
(:class:`matplotlib.figure.Figure` on the Agg canvas), so nothing touches ``pyplot``'s global state
or needs a display, and :func:`save_figure` writes them atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from virolbi.errors import InputError
from virolbi.io import atomic_path

__all__ = ["plot_image_path", "save_figure", "FIGURE_SUFFIXES"]

#: File types :func:`save_figure` writes (from the file name's suffix).
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _as_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor, on any device
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _rows(images: Any) -> list[np.ndarray]:
    """Split the input into one ``(L, C, H, W)`` float array per image (row)."""
    if isinstance(images, (list, tuple)):
        rows = [_as_numpy(r) for r in images]
        if not rows:
            raise InputError("plot_image_path needs at least one image, got an empty list")
        for i, r in enumerate(rows):
            if r.ndim != 4:
                raise InputError(f"each image of the list must have shape (L, C, H, W), image {i} "
                                 f"has shape {r.shape}")
    else:
        arr = _as_numpy(images)
        if arr.ndim != 5:
            raise InputError(f"images must have shape (L, N, C, H, W) (levels, images, channels, "
                             f"height, width), got {arr.shape}")
        if arr.shape[1] == 0:
            raise InputError(f"images holds no image (shape {arr.shape})")
        rows = [arr[:, i] for i in range(arr.shape[1])]
    out = []
    for i, r in enumerate(rows):
        if r.dtype == np.uint8:
            r = r.astype(np.float32) / 255.0
        if not np.issubdtype(r.dtype, np.floating):
            raise InputError(f"images must be float in [0, 1] or uint8, got dtype {r.dtype}")
        if r.shape[1] not in (1, 3):
            raise InputError(f"images must have 1 (gray) or 3 (RGB) channels, image {i} has "
                             f"{r.shape[1]}")
        if r.shape[0] == 0:
            raise InputError("images must hold at least one level")
        if not np.isfinite(r).all():
            raise InputError(f"image {i} contains NaN or Inf values")
        out.append(r)
    if len({r.shape[0] for r in out}) != 1:
        raise InputError(f"every image needs the same number of levels, got "
                         f"{[r.shape[0] for r in out]}")
    return out


def plot_image_path(images: Any, levels: Sequence[float], titles: Sequence[str] | None = None, *,
                    panel_size: float = 1.6):
    r"""Draw the image path ũ(s) at several sparsity levels ``s`` (the paper's Fig. 1a / Fig. 6).

    Parameters
    ----------
    images : array or tensor ``(L, N, C, H, W)``, or a list of ``N`` arrays ``(L, C, H, W)``
        Float in [0, 1] (values are clipped for display) or uint8; ``C`` is 1 (drawn in gray) or 3
        (RGB). A list lets images of different sizes share a figure, e.g. the output of
        :func:`virolbi.image_path` called per image.
    levels : sequence of float
        The ``L`` sparsity levels, in the order of the first axis; each column is labelled with
        its level. Lower levels keep fewer edges (coarser, more piecewise-constant images).
    titles : sequence of str, optional
        One label per row (e.g. the file names).
    panel_size : float
        Size of one panel in inches (default 1.6).

    Returns
    -------
    matplotlib.figure.Figure
        On the Agg canvas; save it with :func:`save_figure`.

    References
    ----------
    Zhou et al., "Robust Network Learning via Inverse Scale Variational Sparsification", 2024,
    Fig. 1a and Fig. 6.

    Examples
    --------
    >>> import numpy as np
    >>> path = np.random.default_rng(0).random((3, 2, 1, 8, 8))  # 3 levels, 2 gray images
    >>> fig = plot_image_path(path, levels=(0.2, 0.6, 1.0), titles=["a", "b"])
    >>> len(fig.axes), fig.axes[1].get_title()
    (6, 'sparsity 0.6')
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _rows(images)
    n_levels = rows[0].shape[0]
    try:
        levels = [float(v) for v in levels]
    except (TypeError, ValueError):
        raise InputError(f"levels must be a sequence of numbers, got {levels!r}") from None
    if len(levels) != n_levels:
        raise InputError(f"got {len(levels)} levels for {n_levels} images per row (the first "
                         f"axis of images)")
    if titles is not None:
        titles = [str(t) for t in titles]
        if len(titles) != len(rows):
            raise InputError(f"got {len(titles)} titles for {len(rows)} images")

    aspects = [r.shape[2] / r.shape[3] for r in rows]  # height / width of each row
    fig = Figure(figsize=(panel_size * n_levels, panel_size * sum(aspects) + 0.3),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), n_levels, squeeze=False,
                        gridspec_kw={"height_ratios": aspects})
    for i, row in enumerate(rows):
        for j in range(n_levels):
            ax = axes[i, j]
            img = np.clip(row[j], 0.0, 1.0)
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(np.moveaxis(img, 0, -1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"sparsity {levels[j]:g}", fontsize=9)
            if j == 0 and titles is not None:
                ax.set_ylabel(titles[i], fontsize=8)
    return fig


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary file, then rename); the type follows the
    suffix (one of :data:`FIGURE_SUFFIXES`). Returns the path.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> fig = plot_image_path(np.zeros((1, 1, 1, 4, 4)), levels=[1.0])
    >>> out = save_figure(fig, pathlib.Path(tempfile.mkdtemp()) / "path.png")
    >>> out.read_bytes()[:4]
    b'\\x89PNG'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise InputError(f"figure file must end in one of {', '.join(FIGURE_SUFFIXES)}, got "
                         f"{path.name!r}")
    fmt = "jpeg" if suffix in (".jpg", ".jpeg") else suffix.lstrip(".")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path
