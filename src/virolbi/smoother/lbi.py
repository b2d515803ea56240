r"""Linearised Bregman iteration (LBI) solvers of ViRoLBI and the path driver (paper §3.1).

The loss (Eq. 2, Split-LBI convention of the paper's Appendix A) couples the image ``u`` with a sparse
edge variable :math:`\gamma`:

.. math:: L(u, \gamma) = \tfrac12\|u - x\|_2^2 + \tfrac{1}{2\nu}\|Du - \gamma\|_2^2 .

Three solvers produce the inverse-scale-space path :math:`\gamma_k` (sparsity grows with ``k``; the time
:math:`t = k\alpha` plays the role of :math:`1/\lambda`):

``"explicit"`` — the paper's Eq. 5, the reference. From :math:`u_0 = z_0 = \gamma_0 = 0`:

.. math::
    u_{k+1} = u_k - \kappa\alpha\,[(u_k - x) + D^\top(Du_k - \gamma_k)/\nu],\quad
    z_{k+1} = z_k + \alpha\,(Du_k - \gamma_k)/\nu,\quad \gamma_{k+1} = \kappa\,\mathrm{prox}(z_{k+1}),

with :math:`\alpha = 1/(\kappa\|H\|_2)` (exact :math:`\|H\|_2`, :func:`~virolbi.smoother.operators.hessian_norm`).

``"dct"`` — Eq. 3a solved exactly: :math:`u(\gamma) = (I + D^\top D/\nu)^{-1}(x + D^\top\gamma/\nu)` by a DCT
(:class:`~virolbi.smoother.operators.NeumannSolver`), and only ``z`` evolves, by the same explicit step.
The reduced Hessian in :math:`\gamma` has norm :math:`1/\nu`, so the step is :math:`\alpha = \nu/\kappa`,
about ten times the explicit one.

``"imex"`` — as ``"dct"``, but the stiff term :math:`-\gamma/\nu` of the ``z`` update is taken implicitly
(closed form per edge, :func:`~virolbi.smoother.prox.implicit_update`) and :math:`Du(\gamma)/\nu`
explicitly. On a fixed support the linear part is then unconditionally stable, so the step is set by
accuracy of the path, not stability (default :data:`IMEX_STEP`; validated against ``"explicit"`` on
real CIFAR-10 images, see ``benchmarks/validate_solvers.py``).

Every image of a batch runs until its sparsity level (fraction of edges with :math:`\gamma_e\neq0`)
reaches each requested level; at each crossing the pair (u, support) is recorded and projected
(Eq. 6, Prop. 1, :mod:`virolbi.smoother.projection`). An image stops on its own when its last level is
reached, when every edge along which ``x`` changes is active (the remaining inactive edges are flat in
``x``, so higher targets are out of reach), or at ``max_iter``; unreached levels are reported as warnings.
Level 1.0 is the :math:`t\to\infty` limit of the path, where :math:`u = x`: it returns ``x`` itself.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from virolbi.checks import check_image_batch, check_levels, check_positive
from virolbi.errors import InputError
from virolbi.smoother import fused as _fused
from virolbi.smoother.operators import (NeumannSolver, adjoint_diff, edge_count, forward_diff,
                                        hessian_norm)
from virolbi.smoother.projection import PROJECTIONS, project
from virolbi.smoother.prox import edge_magnitude, implicit_update, shrink
from virolbi.smoother.result import SmoothResult

__all__ = ["SOLVERS", "DEFAULT_SOLVER", "IMEX_STEP", "MAX_TIME", "default_step", "lbi_path"]

SOLVERS = ("imex", "dct", "explicit")
DEFAULT_SOLVER = "imex"
#: Step of the ``"imex"`` solver in units of ν/κ (α = IMEX_STEP·ν/κ = 0.4 at the defaults).
IMEX_STEP = 2.0
#: Default time horizon: ``max_iter = ceil(MAX_TIME / α)``.
MAX_TIME = 2000.0


def default_step(solver: str, height: int, width: int, kappa: float, nu: float) -> float:
    """The default step α of each solver (see the module docstring)."""
    if solver == "explicit":
        return 1.0 / (kappa * hessian_norm(height, width, nu))
    if solver == "dct":
        return nu / kappa
    return IMEX_STEP * nu / kappa


def _check_solver_args(solver: str, step: float, height: int, width: int, kappa: float,
                       nu: float) -> None:
    if solver not in SOLVERS:
        raise InputError(f"unknown solver {solver!r}; expected one of {', '.join(SOLVERS)}")
    limit = {"explicit": 2.0 / (kappa * hessian_norm(height, width, nu)),
             "dct": 2.0 * nu / kappa}.get(solver)
    if limit is not None and step >= limit:
        raise InputError(f"step {step:g} is unstable for the {solver!r} solver: it needs "
                         f"step < {limit:.4g} (2/(kappa*||H||))")


def _sparsity(active_h: torch.Tensor, active_v: torch.Tensor) -> torch.Tensor:
    count = active_h.flatten(1).sum(1) + active_v.flatten(1).sum(1)
    return count.double() / (active_h[0].numel() + active_v[0].numel())


def lbi_path(x: torch.Tensor, levels=(0.2, 0.4, 0.6, 0.8, 1.0), *, kappa: float = 5.0,
             nu: float = 1.0, group: bool = True, solver: str = DEFAULT_SOLVER,
             step: float | None = None, max_iter: int | None = None, projection: str = "graph",
             progress: bool = False) -> SmoothResult:
    r"""Run LBI on a batch and record ũ at each sparsity level (the image path, Fig. 1a/6).

    Parameters
    ----------
    x : torch.Tensor
        Float batch ``(B, C, H, W)`` in [0, 1], ``H, W >= 2``. Computation runs in its dtype and device.
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
        Show a progress bar over finished images.

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
    check_image_batch(x, "x")
    if not x.is_floating_point():
        raise InputError(f"x must be a float tensor, got {x.dtype}")
    levels = check_levels(levels)
    kappa = check_positive(kappa, "kappa")
    nu = check_positive(nu, "nu")
    b, c, h, w = x.shape
    step = default_step(solver, h, w, kappa, nu) if step is None else check_positive(step, "step")
    _check_solver_args(solver, step, h, w, kappa, nu)
    if projection not in PROJECTIONS:
        raise InputError(f"unknown projection {projection!r}; expected one of {', '.join(PROJECTIONS)}")
    max_iter = math.ceil(MAX_TIME / step) if max_iter is None else int(check_positive(max_iter, "max_iter"))
    grouped = group or c == 1
    gc = 1 if grouped else c  # channels of the support
    run_levels = [lv for lv in levels if lv < 1.0]
    nl = len(run_levels)
    lev = torch.tensor(run_levels, dtype=torch.float64, device=x.device)

    dxh, dxv = forward_diff(x)
    flat_h = edge_magnitude(dxh, grouped) == 0
    flat_v = edge_magnitude(dxv, grouped) == 0
    nonflat = (~flat_h).flatten(1).sum(1) + (~flat_v).flatten(1).sum(1)
    n_edges = gc * edge_count(h, w)

    out_u = x.new_zeros((nl, b, c, h, w))
    out_ah = torch.zeros((nl, b, gc, h, w - 1), dtype=torch.bool, device=x.device)
    out_av = torch.zeros((nl, b, gc, h - 1, w), dtype=torch.bool, device=x.device)
    out_it = torch.zeros((nl, b), dtype=torch.int64, device=x.device)
    out_sp = torch.zeros((nl, b), dtype=torch.float64, device=x.device)
    reached = torch.zeros((nl, b), dtype=torch.bool, device=x.device)
    final_it = torch.zeros(b, dtype=torch.int64, device=x.device)
    next_level = torch.zeros(b, dtype=torch.int64, device=x.device)

    idx = torch.arange(b, device=x.device)
    xs = x
    zh = torch.zeros_like(dxh)
    zv = torch.zeros_like(dxv)
    k = torch.zeros(b, dtype=torch.int64, device=x.device)
    if solver == "explicit":
        u = torch.zeros_like(x)
        solve = u0 = None
    else:
        solve = NeumannSolver(h, w, nu, dtype=x.dtype, device=x.device)
        u0 = solve(x)
        # While γ = 0, u = u0 and z grows linearly: jump to just before the first edge enters.
        d0h, d0v = forward_diff(u0)
        top = torch.maximum(edge_magnitude(d0h, grouped).flatten(1).amax(1),
                            edge_magnitude(d0v, grouped).flatten(1).amax(1))
        jump = torch.where(top > 0, torch.floor(nu / (step * top.clamp_min(1e-30))) - 1,
                           torch.zeros_like(top)).clamp(0, max_iter - 1)
        k = jump.to(torch.int64)
        scale = (jump * step / nu).view(b, 1, 1, 1)
        zh, zv = d0h * scale, d0v * scale
    c_imp = step * kappa / nu
    # The default CPU path fuses the IMEX edge update into one numba pass (same arithmetic).
    use_fused = (solver == "imex" and grouped and x.device.type == "cpu" and _fused.available()
                 and x.dtype in (torch.float32, torch.float64))
    if use_fused:
        zh, zv = zh.contiguous(), zv.contiguous()
        dtg = torch.zeros_like(x)  # Dᵀγ, γ = 0 after the jump
        cnt = torch.zeros(b, dtype=torch.int64)
        cnt_nf = torch.zeros(b, dtype=torch.int64)
        flat_h_run = flat_h[:, 0].contiguous()
        flat_v_run = flat_v[:, 0].contiguous()
        u0_run, nonflat_run = u0, nonflat
        solve_nu = NeumannSolver(h, w, nu, dtype=x.dtype, device=x.device)
        solve_nu.inv = solve_nu.inv / nu  # folds the 1/ν of u = u0 + A⁻¹Dᵀγ/ν

    bar = tqdm(total=b, unit="img", desc=f"LBI ({solver})", disable=not progress, leave=False)
    while idx.numel() > 0 and nl > 0:
        if use_fused:
            u = solve_nu(dtg).add_(u0_run)
            sp = cnt.double() / n_edges
            n_act_nonflat = cnt_nf

            def support(mask):
                return (edge_magnitude(zh[mask], True) > 1.0, edge_magnitude(zv[mask], True) > 1.0)
        else:
            mag_h, mag_v = edge_magnitude(zh, grouped), edge_magnitude(zv, grouped)
            gh, gv = kappa * shrink(zh, grouped, mag_h), kappa * shrink(zv, grouped, mag_v)
            act_h, act_v = mag_h > 1.0, mag_v > 1.0
            if solver != "explicit":
                u = u0[idx] + solve(adjoint_diff(gh, gv)) / nu
            sp = _sparsity(act_h, act_v)
            n_act_nonflat = ((act_h & ~flat_h[idx]).flatten(1).sum(1)
                             + (act_v & ~flat_v[idx]).flatten(1).sum(1))

            def support(mask):
                return act_h[mask], act_v[mask]
        nxt = next_level[idx]
        if bool((sp >= lev[nxt.clamp(max=nl - 1)]).any()):
            for li in range(nl):
                hit = (nxt == li) & (sp >= lev[li])
                if bool(hit.any()):
                    sel = idx[hit]
                    out_u[li, sel] = u[hit]
                    out_ah[li, sel], out_av[li, sel] = support(hit)
                    out_it[li, sel], out_sp[li, sel] = k[hit], sp[hit]
                    reached[li, sel] = True
                    nxt = torch.where(hit, nxt + 1, nxt)
            next_level[idx] = nxt
        stuck = (n_act_nonflat >= (nonflat_run if use_fused else nonflat[idx])) | (k >= max_iter)
        finished = (nxt >= nl) | stuck
        if bool(finished.any()):
            u_stop = u
            if solver == "explicit" and bool(stuck.any()):
                # Eq. 5's u lags behind its minimiser; at a frozen support the iteration converges
                # to the Eq. 3a solution, which is what an unreachable level records.
                exact = NeumannSolver(h, w, nu, dtype=x.dtype, device=x.device)
                u_stop = torch.where(stuck.view(-1, 1, 1, 1),
                                     exact(xs + adjoint_diff(gh, gv) / nu), u)
            for li in range(nl):  # record unreachable levels at the stopping iterate
                miss = stuck & (nxt <= li)
                if bool(miss.any()):
                    sel = idx[miss]
                    out_u[li, sel] = u_stop[miss]
                    out_ah[li, sel], out_av[li, sel] = support(miss)
                    out_it[li, sel], out_sp[li, sel] = k[miss], sp[miss]
            final_it[idx[finished]] = k[finished]
            keep = ~finished
            bar.update(int(finished.sum()))
            idx, k = idx[keep], k[keep]
            if idx.numel() == 0:
                break
            xs = x[idx]
            zh, zv, u = zh[keep].contiguous(), zv[keep].contiguous(), u[keep]
            if use_fused:
                dtg, flat_h_run, flat_v_run = dtg[keep], flat_h_run[keep], flat_v_run[keep]
                u0_run, nonflat_run = u0_run[keep], nonflat_run[keep]
            else:
                gh, gv = gh[keep], gv[keep]
        if use_fused:
            cnt, cnt_nf = _fused.imex_edge_step(u, zh, zv, dtg, flat_h_run, flat_v_run,
                                                step / nu, c_imp, kappa)
            k = k + 1
            continue
        dh, dv = forward_diff(u)
        if solver == "explicit":
            rh, rv = dh - gh, dv - gv
            zh = zh + (step / nu) * rh
            zv = zv + (step / nu) * rv
            u = u - (kappa * step) * ((u - xs) + adjoint_diff(rh, rv) / nu)
        elif solver == "dct":
            zh = zh + (step / nu) * (dh - gh)
            zv = zv + (step / nu) * (dv - gv)
        else:
            zh = implicit_update(zh + (step / nu) * dh, c_imp, grouped)
            zv = implicit_update(zv + (step / nu) * dv, c_imp, grouped)
        k = k + 1
    bar.close()

    # Eq. 6 / Prop. 1 for every recorded (u, support), in one batched call.
    if nl > 0:
        shape_h = (nl * b, gc, h, w - 1) if not grouped else (nl * b, h, w - 1)
        shape_v = (nl * b, gc, h - 1, w) if not grouped else (nl * b, h - 1, w)
        proj, labels = project(out_u.reshape(nl * b, c, h, w), out_ah.reshape(shape_h),
                               out_av.reshape(shape_v), method=projection)
        images = proj.reshape(nl, b, c, h, w)
        labels = labels.reshape((nl, b) + labels.shape[1:])
    else:
        images = x.new_zeros((0, b, c, h, w))
        labels = torch.zeros((0, b) + ((h, w) if grouped else (c, h, w)), dtype=torch.int64,
                             device=x.device)
    iterations, sparsity, ok = out_it, out_sp, reached
    if len(run_levels) < len(levels):  # level 1.0: the t -> infinity limit, u = x
        fh, fv = ~flat_h, ~flat_v
        if grouped:
            fh, fv = fh[:, 0], fv[:, 0]
        _, lab1 = project(x, fh, fv, method="graph")
        out_ah = torch.cat([out_ah, (fh if not grouped else fh[:, None])[None]])
        out_av = torch.cat([out_av, (fv if not grouped else fv[:, None])[None]])
        images = torch.cat([images, x[None]])
        labels = torch.cat([labels, lab1[None]])
        iterations = torch.cat([iterations, final_it[None]])
        sparsity = torch.cat([sparsity, (nonflat.double() / n_edges)[None]])
        ok = torch.cat([ok, torch.ones_like(ok[:1]) if nl else torch.ones((1, b), dtype=torch.bool,
                                                                           device=x.device)])
    per_image = labels.flatten(2 if grouped else 3).amax(-1) + 1
    n_components = per_image if grouped else per_image.double().mean(-1).round().to(torch.int64)
    warnings = []
    for li in range(nl):
        for i in torch.nonzero(~reached[li]).flatten().tolist():
            why = ("every edge along which the image changes is already active"
                   if int(out_it[li, i]) < max_iter else f"max_iter={max_iter} reached")
            warnings.append(f"image {i}: sparsity {run_levels[li]:g} not reached; stopped at "
                            f"{float(out_sp[li, i]):.4f} after {int(out_it[li, i])} iterations ({why})")
    return SmoothResult(levels=tuple(levels), images=images, labels=labels,
                        iterations=iterations.cpu(), sparsity=sparsity.cpu(),
                        n_components=n_components.cpu(), reached=ok.cpu(), support_h=out_ah,
                        support_v=out_av, warnings=warnings,
                        solver=solver, step=step)
