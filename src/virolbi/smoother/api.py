r"""Public entry points of the smoother: :func:`smooth`, :func:`image_path` and the
:class:`ViRoLBI` module.

They accept one image ``(H, W)`` or ``(C, H, W)`` or a batch ``(B, C, H, W)``, as a torch tensor or a
NumPy array, float in [0, 1] or ``uint8``, and return the same shape and type family (uint8 in,
uint8 out, rounded). The work is done by :func:`virolbi.smoother.lbi.lbi_path`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from virolbi.checks import check_unit_interval
from virolbi.errors import InputError
from virolbi.smoother.lbi import DEFAULT_SOLVER, lbi_path
from virolbi.smoother.result import SmoothResult

__all__ = ["smooth", "image_path", "ViRoLBI", "DEFAULT_LEVELS"]

DEFAULT_LEVELS = (0.2, 0.4, 0.6, 0.8, 1.0)


def _to_batch(x: Any) -> tuple[torch.Tensor, dict]:
    """Convert user input to a float ``(B, C, H, W)`` tensor and remember how to convert back."""
    is_numpy = isinstance(x, np.ndarray)
    if not is_numpy and not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor or numpy.ndarray image, got {type(x).__name__}")
    if is_numpy:
        x = np.ascontiguousarray(x)
        if not x.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. from PIL)
            x = x.copy()
    t = torch.from_numpy(x) if is_numpy else x
    if t.dtype == torch.bool or t.is_complex() or (not t.is_floating_point() and t.dtype != torch.uint8):
        raise InputError(f"images must be float in [0, 1] or uint8, got dtype {t.dtype}")
    if t.ndim not in (2, 3, 4):
        raise InputError(f"expected an image (H, W) or (C, H, W) or a batch (B, C, H, W), got shape "
                         f"{tuple(t.shape)}")
    if t.ndim == 3 and t.shape[0] > 4 and t.shape[-1] in (1, 3, 4):
        raise InputError(f"shape {tuple(t.shape)} looks channels-last (H, W, C); pass (C, H, W), "
                         f"e.g. numpy.moveaxis(x, -1, 0)")
    if t.ndim == 4 and t.shape[1] > 4 and t.shape[-1] in (1, 3, 4):
        raise InputError(f"shape {tuple(t.shape)} looks channels-last (B, H, W, C); pass "
                         f"(B, C, H, W), e.g. numpy.moveaxis(x, -1, 1)")
    meta = {"numpy": is_numpy, "ndim": t.ndim, "dtype": t.dtype}
    batch = t.reshape((1,) * (4 - t.ndim) + tuple(t.shape))
    if t.dtype == torch.uint8:
        batch = batch.to(torch.float32) / 255.0
    return batch, meta


def _from_batch(y: torch.Tensor, meta: dict) -> Any:
    """Undo :func:`_to_batch` on a result ``(..., B, C, H, W)`` (leading axes kept)."""
    lead = y.shape[:-4]
    y = y.reshape(lead + y.shape[-4 + (4 - meta["ndim"]):])
    if meta["dtype"] == torch.uint8:
        y = torch.round(y.clamp(0, 1) * 255.0).to(torch.uint8)
    return y.cpu().numpy() if meta["numpy"] else y


def _run(x: Any, levels, kwargs) -> tuple[SmoothResult, dict]:
    batch, meta = _to_batch(x)
    with torch.no_grad():
        return lbi_path(batch, levels, **kwargs), meta


def smooth(x: Any, sparsity: float = 0.6, *, kappa: float = 5.0, nu: float = 1.0,
           group: bool = True, solver: str = DEFAULT_SOLVER, step: float | None = None,
           max_iter: int | None = None, projection: str = "graph", progress: bool = False,
           return_info: bool = False):
    r"""Smooth images with ViRoLBI at one sparsity level (paper §3.1, Eq. 2–8, Prop. 1).

    Runs the linearised Bregman iteration on :math:`L(u,\gamma)=\tfrac12\|u-x\|^2+\tfrac1{2\nu}\|Du-\gamma\|^2`
    until the fraction of edges with :math:`\gamma_e\neq0` reaches ``sparsity``, then returns ũ: the
    iterate averaged over the connected components of the inactive edges (Eq. 6). The lower the
    sparsity, the fewer edges are kept and the smoother (more piecewise constant) the result.

    Parameters
    ----------
    x : torch.Tensor or numpy.ndarray
        ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``; float in [0, 1] or uint8.
    sparsity : float
        Target sparsity level in (0, 1] (default 0.6, the paper's CIFAR level; 0.3 for ImageNet100).
        Each image of a batch stops on its own when it reaches it; 1.0 returns ``x``.
    kappa, nu, group, solver, step, max_iter, projection, progress
        See :func:`virolbi.smoother.lbi.lbi_path`.
    return_info : bool
        Also return the :class:`~virolbi.smoother.result.SmoothResult` (iterations, sparsity reached,
        number of components, warnings for unreachable targets).

    Returns
    -------
    Same type, shape and dtype family as ``x`` (and the result object if ``return_info``).

    Raises
    ------
    ValueError
        (:class:`~virolbi.errors.InputError`) for NaN/Inf, a wrong rank, an empty batch, images
        smaller than 2×2, float values outside [0, 1], a sparsity outside (0, 1].

    References
    ----------
    Zhou et al., "Robust Network Learning via Inverse Scale Variational Sparsification", 2024.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    >>> out = smooth(img, sparsity=0.3)
    >>> out.shape, out.dtype
    ((3, 16, 16), dtype('uint8'))
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:  # a flat image cannot reach 0.6:
    ...     warnings.simplefilter("always")
    ...     flat = smooth(np.full((8, 8), 0.5))                # returned unchanged, with a warning
    >>> float(flat[0, 0]), caught[0].category.__name__, caught[0].message.records[0].sparsity
    (0.5, 'UnreachedLevelWarning', 0.0)
    """
    sparsity = check_unit_interval(sparsity, "sparsity")
    res, meta = _run(x, (sparsity,), dict(kappa=kappa, nu=nu, group=group, solver=solver, step=step,
                                          max_iter=max_iter, projection=projection,
                                          progress=progress))
    out = _from_batch(res.images[0], meta)
    return (out, res) if return_info else out


def image_path(x: Any, levels=DEFAULT_LEVELS, *, kappa: float = 5.0, nu: float = 1.0,
               group: bool = True, solver: str = DEFAULT_SOLVER, step: float | None = None,
               max_iter: int | None = None, projection: str = "graph", progress: bool = False,
               return_info: bool = False):
    """ũ at several sparsity levels from one LBI run per image (the paper's Fig. 1a / Fig. 6).

    Levels are recorded as the path crosses them, so the whole path costs one run to its last
    level. Returns an array/tensor with a leading level axis, shape ``(L, *x.shape)``, levels in
    increasing order (coarse to fine). Parameters as in :func:`smooth`.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    >>> image_path(x, levels=(0.2, 0.5, 1.0)).shape
    torch.Size([3, 2, 3, 12, 12])
    """
    res, meta = _run(x, levels, dict(kappa=kappa, nu=nu, group=group, solver=solver, step=step,
                                     max_iter=max_iter, projection=projection, progress=progress))
    out = _from_batch(res.images, meta)
    return (out, res) if return_info else out


class ViRoLBI(torch.nn.Module):
    """The smoother as a transform: ``ViRoLBI(sparsity)(x)`` equals ``smooth(x, sparsity)``.

    Works on ``(B, C, H, W)`` float batches on any device (CPU or CUDA; computation follows the
    input), in a model (test-time preprocessing) or in a data pipeline. It has no parameters and
    is not differentiable: to attack through it use BPDA (:mod:`virolbi.attacks`), whose
    ``"partition"`` backward uses :meth:`forward_with_labels`.

    Examples
    --------
    >>> import torch
    >>> m = ViRoLBI(sparsity=0.6)
    >>> m(torch.rand(2, 3, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    """

    #: The same input gives the same output (attacks may reuse an output under EOT).
    deterministic = True

    def __init__(self, sparsity: float = 0.6, *, kappa: float = 5.0, nu: float = 1.0,
                 group: bool = True, solver: str = DEFAULT_SOLVER, step: float | None = None,
                 max_iter: int | None = None, projection: str = "graph") -> None:
        super().__init__()
        self.sparsity = check_unit_interval(sparsity, "sparsity")
        self.options = dict(kappa=kappa, nu=nu, group=group, solver=solver, step=step,
                            max_iter=max_iter, projection=projection)

    def forward_with_labels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Smoothed batch and the ``int64`` partition labels ``(B, H, W)`` it is constant on."""
        with torch.no_grad():
            res = lbi_path(x.detach(), (self.sparsity,), **self.options)
        return res.images[0], res.labels[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_labels(x)[0]

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if v is not None)
        return f"sparsity={self.sparsity}, {opts}"
