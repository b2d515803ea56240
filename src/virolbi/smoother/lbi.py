r"""The LBI path driver of ViRoLBI (paper §3.1): run a solver until each image reaches each level.

The solvers (the paper's Eq. 5 and two faster ones built on Eq. 3a) are one step each in
:mod:`virolbi.smoother.solvers`; the default ``"imex"`` solver with grouped channels on CPU runs as
one compiled loop per image (:mod:`virolbi.smoother.fused`, same arithmetic).

Every image of a batch runs until its sparsity level (fraction of edges with :math:`\gamma_e\neq0`)
reaches each requested level; at each crossing the pair (u, support) is recorded
(:class:`~virolbi.smoother.recorder.LevelRecorder`) and later projected (Eq. 6, Prop. 1,
:mod:`virolbi.smoother.projection`). An image stops on its own when its last level is reached, when
every edge along which ``x`` changes is active (the remaining inactive edges are flat in ``x``, so
higher targets are out of reach), or at ``max_iter``; unreached levels raise one
:class:`~virolbi.errors.UnreachedLevelWarning`. Level 1.0 is the :math:`t\to\infty` limit of the
path, where :math:`u = x`: it returns ``x`` itself.
"""

from __future__ import annotations

import contextlib
import math

import torch
from tqdm.auto import tqdm

from virolbi.checks import check_image_batch, check_levels, check_positive
from virolbi.errors import InputError, warn_unreached
from virolbi.smoother import fused as _fused
from virolbi.smoother.operators import forward_diff
from virolbi.smoother.projection import PROJECTIONS, project
from virolbi.smoother.prox import edge_magnitude
from virolbi.smoother.recorder import LevelRecorder
from virolbi.smoother.result import SmoothResult
from virolbi.smoother.solvers import (DEFAULT_SOLVER, IMEX_STEP, SOLVERS, check_step, default_step,
                                      make_solver)

__all__ = ["SOLVERS", "DEFAULT_SOLVER", "IMEX_STEP", "MAX_TIME", "OVERSHOOT_TOLERANCE", "default_step",
           "lbi_path"]

#: Default time horizon: ``max_iter = ceil(MAX_TIME / α)``.
MAX_TIME = 2000.0


#: With a step larger than the default, a level counts as reached only if the first iterate past it
#: overshoots it by at most this much sparsity (or 4 edges, on images of fewer than 80 edges): at
#: the default step the overshoot is at most 0.02 on CIFAR-10 images (0.04 at twice the step), so
#: more means a step too large. (At the default step or below the path is the validated one; noise
#: images then legitimately activate many edges in one iteration.)
OVERSHOOT_TOLERANCE = 0.05


@contextlib.contextmanager
def _one_torch_thread(device: torch.device):
    """On CPU, torch's own operations run on one thread for the call (restored after): they are
    small, and torch's OpenMP pool spins against other busy processes (measured here under load: a
    48 px photograph 0.02-0.09 s with 2 threads against 0.004 s with one, 224 px 1.1 s against
    0.17 s). Parallelism over images comes from the compiled path's GIL-free Python threads,
    sized by the caller's ``torch.get_num_threads()``."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _count(active_h: torch.Tensor, active_v: torch.Tensor) -> torch.Tensor:
    return active_h.flatten(1).sum(1) + active_v.flatten(1).sum(1)


def _fused_applies(solver: str, grouped: bool, x: torch.Tensor) -> bool:
    """Whether the compiled path (:mod:`virolbi.smoother.fused`) runs: "imex", grouped, CPU float
    (any size: its width transform is a dense product up to 40 pixels, an FFT-based DCT beyond)."""
    return (solver == "imex" and grouped and x.device.type == "cpu" and _fused.available()
            and x.dtype in (torch.float32, torch.float64))


def _run_tensor(solver, st, rec: LevelRecorder, flat_h, flat_v, nonflat, progress: bool) -> None:
    """The driver loop: iterate, record crossed levels, drop finished images, advance."""
    n_edges = flat_h[0].numel() + flat_v[0].numel()  # supports per image (x channels if per-channel)
    bar = tqdm(total=st.idx.numel(), unit="img", desc="LBI", disable=not progress, leave=False)
    while st.idx.numel() > 0 and rec.levels:
        it = solver.iterate(st)
        sp = _count(it.active_h, it.active_v).double() / n_edges
        nxt = rec.crossings(st, it, sp)
        active_nonflat = _count(it.active_h & ~flat_h[st.idx], it.active_v & ~flat_v[st.idx])
        stuck = (active_nonflat >= nonflat[st.idx]) | (st.k >= solver.max_iter)
        finished = (nxt >= len(rec.levels)) | stuck
        if progress and int(st.k.min()) % 20 == 0:  # large images: say how far the path is
            bar.set_postfix(iteration=int(st.k.max()), sparsity=f"{float(sp.min()):.3f}",
                            target=f"{rec.levels[-1]:g}", refresh=True)
        if bool(finished.any()):
            rec.stopped(st, it, solver.stopped_u(st, it, stuck), sp, stuck, nxt, finished)
            bar.update(int(finished.sum()))
            st.keep(~finished)
            it = it.keep(~finished)
            if st.idx.numel() == 0:
                break
        solver.advance(st, it)
    bar.close()


def lbi_path(x: torch.Tensor, levels=(0.2, 0.4, 0.6, 0.8, 1.0), *, kappa: float = 5.0,
             nu: float = 1.0, group: bool = True, solver: str = DEFAULT_SOLVER,
             step: float | None = None, max_iter: int | None = None, projection: str = "graph",
             progress: bool = False) -> SmoothResult:
    r"""Run LBI on a batch and record ũ at each sparsity level (the image path, Fig. 1a/6).

    Parameters
    ----------
    x : torch.Tensor
        Float batch ``(B, C, H, W)`` in [0, 1], ``H, W >= 2``. Computation runs in its dtype (float32
        for float16 and bfloat16 input, whose 8-11 bit mantissa cannot resolve the path; the images
        come back in the input's dtype) and on its device.
    levels : sequence of float
        Sparsity levels in (0, 1]; the lower, the smoother (fewer edges kept). Sorted internally.
    kappa : float
        κ of Eq. 5 (default 5): the larger, the closer LBI follows the inverse scale space.
    nu : float
        ν of Eq. 2 (default 1): coupling between ``Du`` and γ; smaller ν ties them more tightly.
    group : bool
        Colour images: one support per edge shared by all channels (group sparsity, Eq. 8) when
        ``True`` (default); per-channel ℓ1 when ``False``. Irrelevant for one channel.
    solver : {"imex", "dct", "explicit"}
        See the module docstring; ``"explicit"`` is Eq. 5 itself.
    step : float, optional
        The step α; defaults to :func:`default_step`.
    max_iter : int, optional
        Iteration cap per image; defaults to ``ceil(MAX_TIME / step)``.
    projection : {"graph", "pinv", "lsqr"}
        How Eq. 6 is computed (all give the same ũ; "graph" is O(p)).
    progress : bool
        Show a progress bar over finished images, with the iteration and the sparsity reached.

    Returns
    -------
    SmoothResult

    Examples
    --------
    >>> x = torch.zeros(1, 1, 4, 4); x[..., 2:] = 1.0     # a step edge
    >>> r = lbi_path(x, levels=(0.1,))
    >>> r.n_components[0, 0].item(), r.images[0, 0, 0, 0]  # two flat halves, contrast recovering
    (2, tensor([0.2041, 0.2041, 0.7959, 0.7959]))
    """
    threads = torch.get_num_threads()
    with _one_torch_thread(x.device if isinstance(x, torch.Tensor) else torch.device("cpu")):
        return _lbi_path(x, levels, kappa=kappa, nu=nu, group=group, solver=solver, step=step,
                         max_iter=max_iter, projection=projection, progress=progress,
                         threads=threads)


def _lbi_path(x: torch.Tensor, levels, *, kappa: float, nu: float, group: bool, solver: str,
              step: float | None, max_iter: int | None, projection: str, progress: bool,
              threads: int) -> SmoothResult:
    """:func:`lbi_path` after its thread setting; ``threads`` sizes the compiled path's pool."""
    check_image_batch(x, "x")
    if not x.is_floating_point():
        raise InputError(f"x must be a float tensor, got {x.dtype}")
    if x.dtype in (torch.float16, torch.bfloat16):  # too coarse for the path: float32 inside
        result = _lbi_path(x.float(), levels, kappa=kappa, nu=nu, group=group, solver=solver,
                           step=step, max_iter=max_iter, projection=projection,
                           progress=progress, threads=threads)
        result.images = result.images.to(x.dtype)
        return result
    levels = check_levels(levels)
    kappa, nu = check_positive(kappa, "kappa"), check_positive(nu, "nu")
    b, c, h, w = x.shape
    step = default_step(solver, h, w, kappa, nu) if step is None else check_positive(step, "step")
    check_step(solver, step, h, w, kappa, nu)
    if projection not in PROJECTIONS:
        raise InputError(f"unknown projection {projection!r}; expected one of {', '.join(PROJECTIONS)}")
    max_iter = math.ceil(MAX_TIME / step) if max_iter is None else int(check_positive(max_iter, "max_iter"))
    grouped = group or c == 1
    run_levels = [lv for lv in levels if lv < 1.0]
    dxh, dxv = forward_diff(x)
    flat_h, flat_v = edge_magnitude(dxh, grouped) == 0, edge_magnitude(dxv, grouped) == 0
    slv = make_solver(solver, h, w, kappa=kappa, nu=nu, step=step, grouped=grouped,
                      max_iter=max_iter, dtype=x.dtype, device=x.device)
    nonflat = _count(~flat_h, ~flat_v)
    rec = _record_levels(x, slv, run_levels, flat_h, flat_v, nonflat,
                         fused=_fused_applies(solver, grouped, x), threads=threads, progress=progress)
    if step > default_step(solver, h, w, kappa, nu):  # a step the path was not validated at
        rec.mark_overshoots(max(OVERSHOOT_TOLERANCE, 4 / (flat_h[0].numel() + flat_v[0].numel())))
    result = _result(x, levels, rec, flat_h, flat_v, nonflat, grouped, projection)
    result.warnings = rec.unreached(max_iter)
    result.solver, result.step = solver, step
    if result.warnings:
        warn_unreached(result.warnings)
    return result


def _record_levels(x: torch.Tensor, slv, run_levels: list, flat_h: torch.Tensor,
                   flat_v: torch.Tensor, nonflat: torch.Tensor, *, fused: bool, threads: int,
                   progress: bool) -> LevelRecorder:
    """Run the path of every image from the solver's start and record (u, support) at each level
    it crosses: in the compiled loop (``fused``) or step by step on tensors."""
    st = slv.start(x)
    if fused and run_levels:
        return LevelRecorder(run_levels, x, 1, _fused.imex_path(
            st.u0, st.zh, st.zv, st.k, flat_h[:, 0], flat_v[:, 0], nonflat, run_levels,
            nu=slv.nu, step=slv.step, kappa=slv.kappa, max_iter=slv.max_iter, threads=threads,
            progress=progress))
    rec = LevelRecorder(run_levels, x, 1 if slv.grouped else x.shape[1])
    _run_tensor(slv, st, rec, flat_h, flat_v, nonflat, progress)
    return rec


def _result(x: torch.Tensor, levels: tuple, rec: LevelRecorder, flat_h: torch.Tensor,
            flat_v: torch.Tensor, nonflat: torch.Tensor, grouped: bool,
            projection: str) -> SmoothResult:
    """Project every recorded (u, support) (Eq. 6 / Prop. 1, one batched call) and append level 1.0
    (the limit u = x, support of Dx) when it was requested."""
    nl, b, c, h, w = rec.u.shape
    sup_h, sup_v = rec.support_h, rec.support_v
    images, labels = _project_all(rec.u, sup_h, sup_v, grouped, projection)
    iterations, sparsity, ok = rec.iterations, rec.sparsity, rec.reached
    if len(levels) > nl:  # level 1.0: the t -> infinity limit, u = x
        fh, fv = ~flat_h, ~flat_v
        _, lab1 = project(x, fh[:, 0] if grouped else fh, fv[:, 0] if grouped else fv, method="graph")
        sup_h, sup_v = torch.cat([sup_h, fh[None]]), torch.cat([sup_v, fv[None]])
        images, labels = torch.cat([images, x[None]]), torch.cat([labels, lab1[None]])
        iterations = torch.cat([iterations, rec.final_iteration[None]])
        sparsity = torch.cat([sparsity, (nonflat.double() / (fh[0].numel() + fv[0].numel()))[None]])
        ok = torch.cat([ok, torch.ones((1, b), dtype=torch.bool, device=x.device)])
    per_image = labels.flatten(2 if grouped else 3).amax(-1) + 1
    n_components = per_image if grouped else per_image.double().mean(-1).round().to(torch.int64)
    return SmoothResult(levels=tuple(levels), images=images, labels=labels,
                        iterations=iterations.cpu(), sparsity=sparsity.cpu(),
                        n_components=n_components.cpu(), reached=ok.cpu(), support_h=sup_h,
                        support_v=sup_v)


def _project_all(u: torch.Tensor, sup_h: torch.Tensor, sup_v: torch.Tensor, grouped: bool,
                 projection: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 for the ``(L, B, ...)`` records in one call; returns images and component labels."""
    nl, b, c, h, w = u.shape
    if nl == 0:
        lab = (0, b) + ((h, w) if grouped else (c, h, w))
        return u, torch.zeros(lab, dtype=torch.int64, device=u.device)
    ah = sup_h.reshape((nl * b, h, w - 1) if grouped else (nl * b, c, h, w - 1))
    av = sup_v.reshape((nl * b, h - 1, w) if grouped else (nl * b, c, h - 1, w))
    proj, labels = project(u.reshape(nl * b, c, h, w), ah, av, method=projection)
    return proj.reshape(nl, b, c, h, w), labels.reshape((nl, b) + labels.shape[1:])
