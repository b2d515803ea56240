r"""One LBI step per solver, on the tensors of a batch (paper §3.1, Eq. 2, 3a, 5 and 8).

The loss (Eq. 2, Split-LBI convention of the paper's Appendix A) couples the image ``u`` with a sparse
edge variable :math:`\gamma`:

.. math:: L(u, \gamma) = \tfrac12\|u - x\|_2^2 + \tfrac{1}{2\nu}\|Du - \gamma\|_2^2 .

Each solver turns the state (``z`` on the edges, and ``u`` for Eq. 5) into the current iterate
(:class:`Iterate`: ``u``, :math:`\gamma = \kappa\,\mathrm{prox}(z)` and its support) and advances the
state by one step. The driver (:func:`virolbi.smoother.lbi.lbi_path`) records levels and drops
finished images; it never looks inside a solver.

- :class:`ExplicitSolver`: the paper's Eq. 5, the reference.
- :class:`DctSolver`: Eq. 3a solved exactly for ``u`` (:class:`~virolbi.smoother.operators.NeumannSolver`),
  ``z`` by Eq. 5's explicit step; stable step ten times larger.
- :class:`ImexSolver`: as ``DctSolver`` with the stiff :math:`-\gamma/\nu` term of the ``z`` update
  implicit (:func:`~virolbi.smoother.prox.implicit_update`); the default.
"""

from __future__ import annotations

import dataclasses

import torch

from virolbi.errors import InputError
from virolbi.smoother.operators import NeumannSolver, adjoint_diff, forward_diff, hessian_norm
from virolbi.smoother.prox import edge_magnitude, implicit_update, shrink

__all__ = ["SOLVERS", "DEFAULT_SOLVER", "IMEX_STEP", "IMEX_MAX_STEP", "Iterate", "PathState", "ExplicitSolver",
           "DctSolver", "ImexSolver", "default_step", "make_solver"]

SOLVERS = ("imex", "dct", "explicit")
DEFAULT_SOLVER = "imex"
#: Step of the ``"imex"`` solver in units of ν/κ (α = IMEX_STEP·ν/κ = 0.4 at the defaults).
IMEX_STEP = 2.0
#: Largest ``"imex"`` step, in units of ν/κ (α < 4 at the defaults). The implicit update is stable at
#: any step, but the path is not: measured on 250 CIFAR-10 images (levels 0.1-0.9), the overshoot
#: past a level grows linearly with the step (≤ 0.02 at the default, 0.16 at 10x), and at 1e6 one
#: iteration jumps from no edge to 99.8 % of them. Beyond 10x the default the step is refused.
IMEX_MAX_STEP = 10 * IMEX_STEP


@dataclasses.dataclass
class PathState:
    """The running images of a batch: their batch indices, iteration counts and solver state."""

    idx: torch.Tensor  # (n,) indices into the batch
    k: torch.Tensor  # (n,) iterations done
    x: torch.Tensor  # (n, C, H, W) the input images
    zh: torch.Tensor  # (n, C, H, W-1) edge variable z, horizontal edges
    zv: torch.Tensor  # (n, C, H-1, W)
    u: torch.Tensor | None = None  # (n, C, H, W): Eq. 5's iterate (explicit solver only)
    u0: torch.Tensor | None = None  # (n, C, H, W): A⁻¹x (solvers that solve Eq. 3a)

    def keep(self, mask: torch.Tensor) -> None:
        """Drop the images where ``mask`` is False."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(self, f.name, value[mask])


@dataclasses.dataclass
class Iterate:
    """What the state stands for: ``u``, :math:`\\gamma` (``gh``, ``gv``) and its support."""

    u: torch.Tensor
    gh: torch.Tensor
    gv: torch.Tensor
    active_h: torch.Tensor
    active_v: torch.Tensor

    def keep(self, mask: torch.Tensor) -> Iterate:
        """The iterate of the images where ``mask`` is True."""
        return Iterate(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))


def default_step(solver: str, height: int, width: int, kappa: float, nu: float) -> float:
    """The default step α of each solver (see the module docstring)."""
    if solver == "explicit":
        return 1.0 / (kappa * hessian_norm(height, width, nu))
    if solver == "dct":
        return nu / kappa
    return IMEX_STEP * nu / kappa


def check_step(solver: str, step: float, height: int, width: int, kappa: float, nu: float) -> None:
    """Refuse an unknown solver or a step beyond its stability limit :math:`2/(\\kappa\\|H\\|_2)`."""
    if solver not in SOLVERS:
        raise InputError(f"unknown solver {solver!r}; expected one of {', '.join(SOLVERS)}")
    limit = {"explicit": 2.0 / (kappa * hessian_norm(height, width, nu)),
             "dct": 2.0 * nu / kappa, "imex": IMEX_MAX_STEP * nu / kappa}[solver]
    bound = {"explicit": "2/(kappa*||H||)", "dct": "2*nu/kappa",
             "imex": f"{IMEX_MAX_STEP:g}*nu/kappa: the path jumps past the levels"}[solver]
    if step >= limit:
        raise InputError(f"step {step:g} is unstable for the {solver!r} solver: it needs "
                         f"step < {limit:.4g} ({bound})")


class _Solver:
    """Shared parts: constants and :math:`\\gamma` from ``z`` (Eq. 5's third line, Eq. 8 grouped)."""

    def __init__(self, height: int, width: int, *, kappa: float, nu: float, step: float,
                 grouped: bool, max_iter: int, dtype: torch.dtype, device: torch.device) -> None:
        self.kappa, self.nu, self.step, self.grouped = kappa, nu, step, grouped
        self.max_iter = max_iter
        self.neumann = NeumannSolver(height, width, nu, dtype=dtype, device=device)

    def gamma(self, st: PathState) -> tuple[torch.Tensor, ...]:
        """:math:`\\gamma = \\kappa\\,\\mathrm{prox}(z)` and its support ``|z| > 1``."""
        mag_h, mag_v = edge_magnitude(st.zh, self.grouped), edge_magnitude(st.zv, self.grouped)
        gh = self.kappa * shrink(st.zh, self.grouped, mag_h)
        gv = self.kappa * shrink(st.zv, self.grouped, mag_v)
        return gh, gv, mag_h > 1.0, mag_v > 1.0

    def stopped_u(self, st: PathState, it: Iterate, stuck: torch.Tensor) -> torch.Tensor:
        """The ``u`` recorded for a level an image cannot reach (it stopped early)."""
        return it.u


class ExplicitSolver(_Solver):
    r"""The paper's Eq. 5 from :math:`u_0 = z_0 = \gamma_0 = 0`:

    .. math::
        u_{k+1} = u_k - \kappa\alpha\,[(u_k - x) + D^\top(Du_k - \gamma_k)/\nu],\quad
        z_{k+1} = z_k + \alpha\,(Du_k - \gamma_k)/\nu,\quad \gamma_{k+1} = \kappa\,\mathrm{prox}(z_{k+1}),

    with :math:`\alpha = 1/(\kappa\|H\|_2)` (exact :math:`\|H\|_2`,
    :func:`~virolbi.smoother.operators.hessian_norm`)."""

    def start(self, x: torch.Tensor) -> PathState:
        idx = torch.arange(x.shape[0], device=x.device)
        return PathState(idx=idx, k=torch.zeros_like(idx), x=x, zh=torch.zeros_like(x[..., :, 1:]),
                         zv=torch.zeros_like(x[..., 1:, :]), u=torch.zeros_like(x))

    def iterate(self, st: PathState) -> Iterate:
        return Iterate(st.u, *self.gamma(st))

    def advance(self, st: PathState, it: Iterate) -> None:
        dh, dv = forward_diff(st.u)
        rh, rv = dh - it.gh, dv - it.gv
        st.zh = st.zh + (self.step / self.nu) * rh
        st.zv = st.zv + (self.step / self.nu) * rv
        st.u = st.u - (self.kappa * self.step) * ((st.u - st.x) + adjoint_diff(rh, rv) / self.nu)
        st.k = st.k + 1

    def stopped_u(self, st: PathState, it: Iterate, stuck: torch.Tensor) -> torch.Tensor:
        """Eq. 5's ``u`` lags behind its minimiser; at a frozen support the iteration converges to
        the Eq. 3a solution, which is what an unreachable level records."""
        exact = self.neumann(st.x + adjoint_diff(it.gh, it.gv) / self.nu)
        return torch.where(stuck.view(-1, 1, 1, 1), exact, it.u)


class DctSolver(_Solver):
    r"""Eq. 3a solved exactly, :math:`u(\gamma) = (I + D^\top D/\nu)^{-1}(x + D^\top\gamma/\nu)` by a DCT,
    and only ``z`` evolves by Eq. 5's explicit step. The reduced Hessian in :math:`\gamma` has norm
    :math:`1/\nu`, so the step is :math:`\alpha = \nu/\kappa`.

    While :math:`\gamma = 0`, :math:`u = u_0 = A^{-1}x` and ``z`` grows linearly: :meth:`start` jumps to
    just before the first edge enters (same path, fewer iterations)."""

    def start(self, x: torch.Tensor) -> PathState:
        u0 = self.neumann(x)
        d0h, d0v = forward_diff(u0)
        top = torch.maximum(edge_magnitude(d0h, self.grouped).flatten(1).amax(1),
                            edge_magnitude(d0v, self.grouped).flatten(1).amax(1))
        jump = torch.where(top > 0, torch.floor(self.nu / (self.step * top.clamp_min(1e-30))) - 1,
                           torch.zeros_like(top)).clamp(0, self.max_iter - 1)
        scale = (jump * self.step / self.nu).view(-1, 1, 1, 1)
        idx = torch.arange(x.shape[0], device=x.device)
        return PathState(idx=idx, k=jump.to(torch.int64), x=x, zh=d0h * scale, zv=d0v * scale, u0=u0)

    def iterate(self, st: PathState) -> Iterate:
        gh, gv, ah, av = self.gamma(st)
        return Iterate(st.u0 + self.neumann(adjoint_diff(gh, gv)) / self.nu, gh, gv, ah, av)

    def advance(self, st: PathState, it: Iterate) -> None:
        dh, dv = forward_diff(it.u)
        st.zh = st.zh + (self.step / self.nu) * (dh - it.gh)
        st.zv = st.zv + (self.step / self.nu) * (dv - it.gv)
        st.k = st.k + 1


class ImexSolver(DctSolver):
    r"""As :class:`DctSolver`, with the stiff term :math:`-\gamma/\nu` of the ``z`` update implicit and
    :math:`Du(\gamma)/\nu` explicit: :math:`z_{k+1} + c\,\mathrm{prox}(z_{k+1}) = z_k + \alpha Du_k/\nu`,
    :math:`c = \alpha\kappa/\nu`, solved in closed form per edge
    (:func:`~virolbi.smoother.prox.implicit_update`). On a fixed support the linear part is then
    unconditionally stable; the step (:data:`IMEX_STEP`) is set by the accuracy of the path, validated
    against Eq. 5 on real images (``benchmarks/validate_solvers.py``)."""

    def advance(self, st: PathState, it: Iterate) -> None:
        dh, dv = forward_diff(it.u)
        c = self.step * self.kappa / self.nu
        st.zh = implicit_update(st.zh + (self.step / self.nu) * dh, c, self.grouped)
        st.zv = implicit_update(st.zv + (self.step / self.nu) * dv, c, self.grouped)
        st.k = st.k + 1


def make_solver(name: str, height: int, width: int, **kwargs) -> _Solver:
    """The solver object of ``name`` (``"imex"``, ``"dct"`` or ``"explicit"``)."""
    cls = {"explicit": ExplicitSolver, "dct": DctSolver, "imex": ImexSolver}[name]
    return cls(height, width, **kwargs)
