r"""The training procedures of the paper (§3.2): Vanilla, Blur, Fixed and Iterative.

A procedure decides which version of each training image the network sees at a given epoch; the
trainer (:func:`virolbi.train.train`) does the rest (augmentation, SGD, validation). Every
procedure can start from a trained model (fine-tuning: ``model.pretrained`` in the config).

- **Vanilla**: the clean images (ERM).
- **Blur** (baseline): Gaussian-blurred images, kernel 3 / σ 2 for 32×32 data and kernel 7 / σ 2 for
  224×224 data; the test images are blurred too (the Blur model's test-time preprocessing).
- **Fixed**: the images smoothed by ViRoLBI at one sparsity level (0.6 CIFAR, 0.3 ImageNet100),
  computed once and cached on disk (:mod:`virolbi.train.smoothed_cache`), or read from a store
  written beforehand by ``virolbi smooth-dataset`` (``procedure.store``; :mod:`virolbi.store`).
- **Iterative** (Eq. 9): smoothing and SGD alternate, so the images get finer as training goes:

  .. math::

     \tilde u^{(e)} = \mathrm{proj}_{\mathrm{supp}\,\gamma_{k(e)}}(u_{k(e)}),\qquad
     \theta \leftarrow \theta - \eta\,\nabla_\theta\,\ell(f_\theta(\tilde u^{(e)}), y),

  where the LBI iterate :math:`k(e)` is the first one whose sparsity level reaches
  :math:`s(e)`, rising linearly from 0.3 at the first epoch to 0.8 at the last
  (:func:`iterative_level`). Since LBI's path does not depend on θ, one run per image to the
  last level, recording ũ at a discrete set of levels, serves every epoch (the paper's
  "alternating" Eq. 9a–9c, with the image path computed once).

Each procedure maps ``(indices, epoch)`` to a ``uint8 (B, C, H, W)`` batch (:meth:`Procedure.fetch`)
and float images to float images (:meth:`Procedure.transform`, applied before augmentation).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from virolbi.errors import InputError

__all__ = ["Procedure", "Vanilla", "Blur", "Fixed", "Iterative", "iterative_level",
           "build_procedure", "PROCEDURE_CLASSES"]


def iterative_level(epoch: int, epochs: int, levels: Sequence[float]) -> float:
    r"""The sparsity level Iterative training uses at ``epoch`` (0-based) of ``epochs``.

    The target :math:`s(e) = s_0 + (s_1 - s_0)\,e/(E-1)` rises linearly from the smallest level
    :math:`s_0` (first epoch) to the largest :math:`s_1` (last epoch); the level used is the one of
    ``levels`` nearest to it (ties go to the coarser level).

    Examples
    --------
    >>> levels = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    >>> [iterative_level(e, 6, levels) for e in range(6)]
    [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    >>> [iterative_level(e, 3, levels) for e in range(3)]
    [0.3, 0.5, 0.8]
    """
    levels = sorted(float(v) for v in levels)
    if epochs < 1 or not 0 <= epoch < epochs:
        raise InputError(f"epoch must be in [0, {epochs}), got {epoch}")
    lo, hi = levels[0], levels[-1]
    target = lo if epochs == 1 else lo + (hi - lo) * epoch / (epochs - 1)
    return min(levels, key=lambda v: (round(abs(v - target), 9), v))


def _get_batch(dataset: Any, indices: np.ndarray) -> torch.Tensor:
    from virolbi.data.dataset import batch_of

    return batch_of(dataset, indices)[0]


class Procedure:
    """Vanilla training: the clean images. Base class of the other procedures.

    Examples
    --------
    >>> from virolbi.data.dataset import ImageDataset
    >>> ds = ImageDataset(np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 0, 1])
    >>> proc = Procedure(); proc.prepare(ds)
    >>> proc.fetch(np.array([2, 0]), epoch=0, epochs=1).shape
    torch.Size([2, 3, 8, 8])
    """

    name = "vanilla"

    def __init__(self) -> None:
        self.dataset: Any = None

    def prepare(self, dataset: Any, **kw: Any) -> None:
        """Attach the training set (and build caches; see :class:`Fixed`)."""
        self.dataset = dataset

    def level(self, epoch: int, epochs: int) -> float | None:
        """The sparsity level of the images at ``epoch`` (None: not smoothed)."""
        return None

    def fetch(self, indices: np.ndarray, epoch: int, epochs: int) -> torch.Tensor:
        """``uint8 (B, C, H, W)``: the training images ``indices`` as seen at ``epoch``."""
        if self.dataset is None:
            raise InputError(f"{self.name}: call prepare(dataset) before fetch")
        return _get_batch(self.dataset, indices)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Float images → float images, before augmentation (identity here)."""
        return x

    def test_preprocess(self, x: torch.Tensor) -> torch.Tensor | None:
        """The procedure's own test-time preprocessing (None: smoothing, if configured)."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"procedure": self.name}


Vanilla = Procedure


class Blur(Procedure):
    """Gaussian blur of the training (and test) images: the paper's Blur baseline.

    Parameters
    ----------
    kernel_size : int, optional
        None: 3 below 128 pixels a side, else 7 (:func:`virolbi.perturb.blur_params_for`).
    sigma : float
        Standard deviation (default 2).
    """

    name = "blur"

    def __init__(self, kernel_size: int | None = None, sigma: float = 2.0) -> None:
        super().__init__()
        self.kernel_size, self.sigma = kernel_size, float(sigma)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        from virolbi.perturb import blur_params_for, gaussian_blur

        k = self.kernel_size or blur_params_for(tuple(x.shape[-2:]))[0]
        return gaussian_blur(x, kernel_size=k, sigma=self.sigma)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self._blur(x)

    def test_preprocess(self, x: torch.Tensor) -> torch.Tensor | None:
        return self._blur(x)

    def describe(self) -> dict[str, Any]:
        return {"procedure": self.name, "kernel_size": self.kernel_size, "sigma": self.sigma}


class _Smoothed(Procedure):
    """Reads images from a smoothed store (:mod:`virolbi.store`): the one in ``store`` (written
    by ``virolbi smooth-dataset``), else a cache entry (:mod:`virolbi.train.smoothed_cache`)."""

    def __init__(self, levels: Sequence[float], smoother: dict[str, Any] | None = None,
                 cache_dir: Any = None, batch_size: int = 256, path_fn: Any = None,
                 store: Any = None) -> None:
        super().__init__()
        from virolbi.checks import check_levels

        self.levels = check_levels(levels, "levels")
        self.smoother = dict(smoother or {})
        self.cache_dir, self.batch_size, self.path_fn = cache_dir, batch_size, path_fn
        self.store_dir = store
        self.store: Any = None

    def prepare(self, dataset: Any, *, progress: bool | None = None, verify: bool = True,
                **kw: Any) -> None:
        """Open the store (``verify``: check its checksums; a DDP rank after the first need not)."""
        from virolbi.train.smoothed_cache import smoothed_images, store_for_training

        super().prepare(dataset)
        if self.store_dir is not None:
            self.store = store_for_training(dataset, self.store_dir, self.levels, self.smoother,
                                            self.path_fn, verify=verify)
            return
        data = getattr(dataset, "data", None)
        if not isinstance(data, np.ndarray):
            raise InputError(f"{self.name} training needs an array-backed dataset with .data "
                             f"uint8 (N, H, W, C), got {type(dataset).__name__}; or smooth it "
                             "with virolbi smooth-dataset and set procedure.store")
        self.store = smoothed_images(data, self.levels, cache_dir=self.cache_dir,
                                     batch_size=self.batch_size, progress=progress, verify=verify,
                                     path_fn=self.path_fn, **self.smoother).store

    def fetch(self, indices: np.ndarray, epoch: int, epochs: int) -> torch.Tensor:
        """The images ``indices`` at this epoch's level, read from their shards only."""
        if self.store is None:
            raise InputError(f"{self.name}: call prepare(dataset) before fetch")
        batch = self.store.take(indices, self.level(epoch, epochs))
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))

    def describe(self) -> dict[str, Any]:
        store = {} if self.store_dir is None else {"store": str(self.store_dir)}
        return {"procedure": self.name, "levels": list(self.levels), **self.smoother, **store}


class Fixed(_Smoothed):
    """Training on images smoothed at one sparsity level (paper §3.2, "Fixed training").

    Parameters
    ----------
    sparsity : float
        Level in (0, 1]: 0.6 for CIFAR, 0.3 for ImageNet100 (Table 5 sweeps 0.4–0.9).
    smoother : dict, optional
        Options of :func:`virolbi.image_path` (``kappa``, ``nu``, ``group``, ``solver``...).
    cache_dir, batch_size, path_fn
        See :func:`virolbi.train.smoothed_cache.smoothed_images`.
    store : path, optional
        A store written by ``virolbi smooth-dataset`` to read instead of the cache.
    """

    name = "fixed"

    def __init__(self, sparsity: float = 0.6, **kw: Any) -> None:
        super().__init__([sparsity], **kw)
        self.sparsity = self.levels[0]

    def level(self, epoch: int, epochs: int) -> float:
        return self.sparsity


class Iterative(_Smoothed):
    """Iterative training (Eq. 9): sparsity rising from the lowest to the highest level.

    Parameters
    ----------
    levels : sequence of float
        The discrete levels, e.g. 0.3, 0.4, …, 0.8 (default); all come from one LBI run per image.
    smoother, cache_dir, batch_size, path_fn, store
        As in :class:`Fixed`.
    """

    name = "iterative"

    def __init__(self, levels: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8), **kw: Any) -> None:
        super().__init__(levels, **kw)

    def level(self, epoch: int, epochs: int) -> float:
        return iterative_level(epoch, epochs, self.levels)


PROCEDURE_CLASSES = {"vanilla": Vanilla, "blur": Blur, "fixed": Fixed, "iterative": Iterative}


def build_procedure(proc_cfg: dict[str, Any], *, path_fn: Any = None) -> Procedure:
    """A procedure from the ``procedure:`` section of a training config.

    Examples
    --------
    >>> build_procedure({"name": "iterative", "levels": [0.3, 0.8]}).level(1, 2)
    0.8
    """
    name = proc_cfg.get("name", "vanilla")
    if name not in PROCEDURE_CLASSES:
        raise InputError(f"unknown procedure {name!r}; choose one of {', '.join(PROCEDURE_CLASSES)}")
    common = dict(smoother=proc_cfg.get("smoother"), cache_dir=proc_cfg.get("cache_dir"),
                  batch_size=proc_cfg.get("cache_batch_size", 256), path_fn=path_fn,
                  store=proc_cfg.get("store"))
    if name == "blur":
        return Blur(proc_cfg.get("blur_kernel"), proc_cfg.get("blur_sigma", 2.0))
    if name == "fixed":
        return Fixed(proc_cfg.get("sparsity", 0.6), **common)
    if name == "iterative":
        return Iterative(proc_cfg.get("levels", (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)), **common)
    return Vanilla()
