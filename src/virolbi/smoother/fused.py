r"""The whole ``"imex"`` path of one image in one compiled loop (numba), for grouped channels on CPU.

The tensor driver (:mod:`virolbi.smoother.lbi`) spends most of its time in per-iteration overhead
and memory traffic: every iteration is a dozen tensor operations over the batch. Here each image
runs its whole path in a compiled loop whose state (a few tens of KB for a CIFAR image) stays in
cache; images are independent, so a batch is split over threads that release the GIL.

Per iteration, with :math:`A = I + D^\top D/\nu` (the paper's Eq. 3a, :math:`\nabla_u L = 0`):

.. math::
    u = u_0 + A^{-1} D^\top\gamma/\nu,\qquad
    w_e = z_e + \tfrac{\alpha}{\nu}(Du)_e,\qquad
    z_e \leftarrow w_e\,s(\|w_e\|),\qquad
    \gamma_e = \kappa\,(1 - 1/\|z_e\|)_+\,z_e,

with :math:`s(m) = (m + c)/((1 + c)m)` for :math:`m > 1` and 1 otherwise (:math:`c = \alpha\kappa/\nu`,
the closed-form implicit step of :func:`virolbi.smoother.prox.implicit_update`). The solve with
:math:`A` is exact: a DCT-II along the width diagonalises :math:`L_W`, and each width frequency
:math:`\mu_j` leaves the tridiagonal system :math:`((\nu + \mu_j)I + L_H)\,v = \hat r_j`, solved by
the Thomas algorithm with precomputed pivots (:func:`thomas_pivots`). That is half the transforms
of the 2-D DCT (:class:`~virolbi.smoother.operators.NeumannSolver`) for the same result. The DCT
along the width is a dense matrix product (BLAS) for images up to :data:`DENSE_MAX_WIDTH` pixels
wide, where it is the faster of the two, and pocketfft's O(W log W) DCT from there on (scipy.fft
compiled into the loop by rocket-fft), so the cost per pixel and iteration stays flat from 32 to
512 pixels and more, with no ``W × W`` matrix in memory.

Levels are recorded as the tensor driver records them (same iterate, same support); a test compares
the two paths on real images.

Threads: numba's own thread pool is not used (``parallel=False``), so importing or running this module
changes no numba configuration and leaves no spinning threads to starve torch's OpenMP pool; a batch
is split into chunks run by ``threads`` Python threads (the compiled loop releases the GIL). The two
DCT products go to BLAS (numba's ``np.dot``, SciPy's OpenBLAS); for images large enough that
OpenBLAS would start its own threads, it is held to one thread per worker during the call
(threadpoolctl), for the same reason.
"""

from __future__ import annotations

import contextlib
import functools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
import torch

from virolbi.smoother.operators import dct_matrix, laplacian_eigenvalues

try:  # numba is a dependency, but keep the package importable without it
    import numba
except ImportError:  # pragma: no cover
    numba = None

try:  # registers scipy.fft inside numba-compiled code (a dependency; dense DCT products without it)
    import rocket_fft  # noqa: F401
except ImportError:  # pragma: no cover
    rocket_fft = None

__all__ = ["available", "imex_path", "thomas_pivots", "width_transform", "DENSE_MAX_WIDTH"]

#: Widest image whose width DCT is a dense matrix product; wider ones use the FFT-based DCT
#: (measured on one thread: the product is faster at 16 and 32 pixels, the FFT from 48 on,
#: 2-4x at 128-224; ``benchmarks/bench_smoother.py`` section g).
DENSE_MAX_WIDTH = 40


def available() -> bool:
    """Whether the fused path can run (numba importable)."""
    return numba is not None


def uses_fft(width: int) -> bool:
    """Whether the compiled solve transforms a row of ``width`` pixels with the FFT-based DCT."""
    return width > DENSE_MAX_WIDTH and rocket_fft is not None


def thomas_pivots(height: int, width_eigenvalues: np.ndarray, nu: float) -> np.ndarray:
    r"""Inverse pivots ``m[i, j]`` of the Thomas algorithm for :math:`((\nu+\mu_j)I + L_H)v = r`,
    :math:`L_H` the 1-D Neumann Laplacian on ``height`` nodes (diagonal 1, 2, …, 2, 1; off-diagonal
    −1). With them, forward :math:`y_i = (r_i + y_{i-1})\,m_i` and back :math:`v_i = y_i + m_i v_{i+1}`.
    Computed in float64."""
    mu = np.asarray(width_eigenvalues, dtype=np.float64)
    deg = np.full(height, 2.0)
    deg[0] = deg[-1] = 1.0
    if height == 1:
        deg[0] = 0.0
    m = np.empty((height, mu.size))
    m[0] = 1.0 / (nu + mu + deg[0])
    for i in range(1, height):
        m[i] = 1.0 / (nu + mu + deg[i] - m[i - 1])
    return m


@functools.lru_cache(maxsize=32)
def _width_transform(height: int, width: int, nu: float, dtype: str,
                     fft: bool) -> tuple[np.ndarray, ...]:
    c = np.zeros((0, 0)) if fft else dct_matrix(width).numpy()
    lam = laplacian_eigenvalues(width).numpy()  # eigenvalues of L_W
    arrays = tuple(np.ascontiguousarray(m, dtype=dtype)
                   for m in (c.T, c, thomas_pivots(height, lam, nu)))
    for a in arrays:
        a.flags.writeable = False  # shared by every call with this shape
    return arrays


def width_transform(height: int, width: int, nu: float, dtype,
                    fft: bool | None = None) -> tuple[np.ndarray, ...]:
    r"""Matrices and pivots of the exact solve with :math:`A = I + D^\top D/\nu` (see :func:`_solve`):
    ``(ct, c, piv)`` with ``c`` the orthonormal DCT-II matrix along the width (row ``k`` the
    ``k``-th eigenvector of the Neumann Laplacian :math:`L_W`), ``ct`` its transpose and ``piv`` the
    Thomas pivots of every width frequency (:func:`thomas_pivots`, ν folded in). With ``fft``
    (default: :func:`uses_fft`) the matrices are empty ``(0, 0)``: the solve uses the FFT-based DCT.
    Cached per shape (read-only arrays)."""
    fft = uses_fft(width) if fft is None else bool(fft)
    return _width_transform(int(height), int(width), float(nu), np.dtype(dtype).str, fft)


def _thomas(spec, piv, nc, h):  # pragma: no cover - compiled
    """Solve the tridiagonal systems of every channel's rows ``spec[ch*h:(ch+1)*h]`` in place, all
    width frequencies (columns) at once: forward sweep, then back substitution."""
    n = spec.shape[1]
    for ch in range(nc):
        o = ch * h
        for p in range(n):
            spec[o, p] *= piv[0, p]
        for i in range(1, h):
            for p in range(n):
                spec[o + i, p] = (spec[o + i, p] + spec[o + i - 1, p]) * piv[i, p]
        for i in range(h - 2, -1, -1):
            for p in range(n):
                spec[o + i, p] += piv[i, p] * spec[o + i + 1, p]


def _solve(dtg, u0, ct, c, piv, spec, u):  # pragma: no cover - compiled
    r"""``u = u0 + A⁻¹ dtg / ν`` for one image ``(C, H, W)``: orthonormal DCT-II along the width,
    the tridiagonal systems along the height of every width frequency (Thomas), the inverse DCT.
    The transforms are matrix products (BLAS) when ``c`` is given, pocketfft's DCT when ``c`` is
    empty (:func:`width_transform`). Exact; ``spec`` is a ``(C*H, W)`` scratch array."""
    nc, h, w = dtg.shape
    rows = dtg.reshape(nc * h, w)
    if c.shape[0] == 0:
        spec[:] = scipy.fft.dct(rows, 2, None, -1, "ortho")
        _thomas(spec, piv, nc, h)
        back = scipy.fft.idct(spec, 2, None, -1, "ortho").reshape(-1)
    else:
        np.dot(rows, ct, spec)
        _thomas(spec, piv, nc, h)
        np.dot(spec, c, u.reshape(nc * h, w))
        back = u.reshape(-1)
    uf, bf = u.reshape(-1), u0.reshape(-1)
    for q in range(uf.size):
        uf[q] = back[q] + bf[q]


def _edge_pass(u, z, act, flat, valid, gam, shift, consts, scratch):  # pragma: no cover - compiled
    r"""IMEX update of one direction's edges of one image, in place.

    Arrays are flat over the pixel grid (``n = H*W``): the edge ``q -> q + shift`` (``shift`` 1 for
    horizontal, ``W`` for vertical edges) is stored at ``q``; ``valid`` is 0 where no edge starts
    (last column or last row), so ``z`` stays 0 there. Writes :math:`\gamma` to ``gam`` and the
    support to ``act``; returns (active edges, active edges where ``x`` is not flat).
    ``consts = (α/ν, c, κ, 1, 0)`` in the image dtype. Every loop but the counting one vectorises."""
    a, c, kappa, one, zero = consts[0], consts[1], consts[2], consts[3], consts[4]
    nc, n = z.shape
    mag, scale, gain = scratch[0], scratch[1], scratch[2]
    mag[:] = zero
    for ch in range(nc):  # w = z + (α/ν) Du
        zc, uc = z[ch], u[ch]
        for q in range(n - shift):
            v = zc[q] + a * valid[q] * (uc[q + shift] - uc[q])
            zc[q] = v
            mag[q] += v * v
    cnt = 0
    cnf = 0
    for q in range(n):
        mag[q] = np.sqrt(mag[q])
        on = mag[q] > one
        act[q] = on
        cnt += on
        cnf += on * (1 - flat[q])
    for q in range(n):  # branch-free: at |w| <= 1, mm = 1 gives scale 1 and gain 0 exactly
        mm = max(mag[q], one)
        scale[q] = (mm + c) / ((one + c) * mm)
        gain[q] = kappa * (one - (one + c) / (mm + c))
    for ch in range(nc):  # z = w s(|w|), γ = κ (1 - 1/|z|)+ z
        zc, gc = z[ch], gam[ch]
        for q in range(n):
            zc[q] *= scale[q]
            gc[q] = gain[q] * zc[q]
    return cnt, cnf


def _adjoint(gh, gv, width, dtg):  # pragma: no cover - compiled
    r""":math:`D^\top\gamma` from the flat edge arrays of :func:`_edge_pass` (zero where no edge)."""
    nc, n = gh.shape
    for ch in range(nc):
        d, hc, vc = dtg[ch], gh[ch], gv[ch]
        for q in range(n):
            d[q] = -hc[q] - vc[q]
        for q in range(1, n):
            d[q] += hc[q - 1]
        for q in range(width, n):
            d[q] += vc[q - width]


def _record(li, b, reached_it, u, act_h, act_v, k, sp, out):  # pragma: no cover - compiled
    out_u, out_ah, out_av, out_it, out_sp, reached = out[:6]
    h, w = u.shape[1:]
    out_u[li, b] = u
    out_ah[li, b, 0] = act_h.reshape(h, w)[:, : w - 1]
    out_av[li, b, 0] = act_v.reshape(h, w)[: h - 1, :]
    out_it[li, b] = k
    out_sp[li, b] = sp
    reached[li, b] = reached_it


#: Columns of the per-image progress state of :func:`_path_chunk`.
_K, _CNT, _CNF, _NEXT, _DONE, _PAUSED = range(6)


def _path_chunk(lo, hi, u0, zh, zv, flat_h, flat_v, nonflat, valid_h, valid_v, solver,
                levels, max_iter, until, consts, state, u_state, dtg_state,
                out):  # pragma: no cover - compiled
    """Run images ``lo..hi-1`` to their last level (or until stuck), recording every level, and
    pause an image at iteration ``until``. ``state[b]`` (``_K`` … ``_PAUSED``), ``u_state[b]``,
    ``dtg_state[b]`` and ``zh``/``zv`` hold where it is, so a later call continues exactly there."""
    nc, h, w = u0.shape[1:]
    n, nl = h * w, levels.shape[0]
    n_edges = h * (w - 1) + (h - 1) * w
    scratch = np.empty((3, n), dtype=u0.dtype)
    spec = np.empty((nc * h, w), dtype=u0.dtype)
    gh, gv = np.zeros((nc, n), dtype=u0.dtype), np.zeros((nc, n), dtype=u0.dtype)
    act_h, act_v = np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_)
    for b in range(lo, hi):
        if state[b, _DONE]:
            continue
        u, dtg = u_state[b], dtg_state[b]
        uf, zhf, zvf = u.reshape(nc, n), zh[b].reshape(nc, n), zv[b].reshape(nc, n)
        k, cnt, cnf, nxt = state[b, _K], state[b, _CNT], state[b, _CNF], state[b, _NEXT]
        paused = state[b, _PAUSED] == 1
        while True:
            if not paused:
                if cnt > 0:  # u = u0 + A^-1 D^T γ / ν (Eq. 3a)
                    _solve(dtg, u0[b], solver[0], solver[1], solver[2], spec, u)
                else:
                    u[:] = u0[b]
                sp = cnt / n_edges
                while nxt < nl and sp >= levels[nxt]:
                    _record(nxt, b, True, u, act_h, act_v, k, sp, out)
                    nxt += 1
                if nxt >= nl or cnf >= nonflat[b] or k >= max_iter:
                    for li in range(nxt, nl):  # unreachable: recorded at the stopping iterate
                        _record(li, b, False, u, act_h, act_v, k, sp, out)
                    out[6][b] = k
                    state[b, _DONE] = 1
                    break
                if k >= until:  # u is checked: the next call starts with the edge passes
                    state[b, _PAUSED] = 1
                    break
            paused = False
            c1, f1 = _edge_pass(uf, zhf, act_h, flat_h[b].reshape(n), valid_h, gh, 1, consts, scratch)
            c2, f2 = _edge_pass(uf, zvf, act_v, flat_v[b].reshape(n), valid_v, gv, w, consts, scratch)
            _adjoint(gh, gv, w, dtg.reshape(nc, n))
            cnt, cnf, k = c1 + c2, f1 + f2, k + 1
        state[b, _K], state[b, _CNT], state[b, _CNF], state[b, _NEXT] = k, cnt, cnf, nxt


if numba is not None:
    _jit = numba.njit(nogil=True, cache=True, error_model="numpy")  # no zero-division checks
    _thomas, _solve, _edge_pass, _adjoint = _jit(_thomas), _jit(_solve), _jit(_edge_pass), _jit(_adjoint)
    _record, _path_chunk = _jit(_record), _jit(_path_chunk)


def _chunks(n: int, threads: int) -> list[tuple[int, int]]:
    """Image ranges small enough that threads stay busy when images need different iteration counts."""
    size = max(1, min(16, math.ceil(n / (4 * threads))))
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


def _padded(t: torch.Tensor, h: int, w: int, fill) -> np.ndarray:
    """A horizontal ``(..., H, W-1)`` or vertical ``(..., H-1, W)`` edge array on the ``(..., H, W)`` grid."""
    out = np.full(t.shape[:-2] + (h, w), fill, dtype=t.numpy().dtype)
    out[..., : t.shape[-2], : t.shape[-1]] = t.numpy()
    return out


def imex_path(u0: torch.Tensor, zh: torch.Tensor, zv: torch.Tensor, k0: torch.Tensor,
              flat_h: torch.Tensor, flat_v: torch.Tensor, nonflat: torch.Tensor, levels, *,
              nu: float, step: float, kappa: float, max_iter: int,
              threads: int | None = None, progress: bool = False) -> dict[str, torch.Tensor]:
    r"""Run the ``"imex"`` path of every image from the state after the initial jump.

    ``u0 = A⁻¹x`` ``(B, C, H, W)``; ``zh``/``zv`` the edge variables ``(B, C, H, W-1)``/``(B, C, H-1, W)``
    and ``k0`` the iteration count after the jump; ``flat_h``/``flat_v`` ``(B, H, W-1)``/``(B, H-1, W)``
    mark edges along which ``x`` is constant and ``nonflat`` counts the others; ``levels`` increasing,
    all < 1. ``threads`` defaults to ``torch.get_num_threads()``. With ``progress`` the path runs in
    segments of :data:`PROGRESS_EVERY` iterations and a bar shows the iteration and the sparsity
    reached (same result: the compiled loop pauses and resumes exactly). Returns the recorder's
    tensors: ``u (L, B, C, H, W)``, ``support_h``/``support_v`` ``(L, B, 1, ...)``, ``iterations``,
    ``sparsity``, ``reached`` ``(L, B)`` and ``final_iteration`` ``(B,)``.
    """
    b, nc, h, w = u0.shape
    dt = u0.numpy().dtype
    nl = len(levels)
    out = {"u": np.zeros((nl, b, nc, h, w), dtype=dt),
           "support_h": np.zeros((nl, b, 1, h, w - 1), dtype=np.bool_),
           "support_v": np.zeros((nl, b, 1, h - 1, w), dtype=np.bool_),
           "iterations": np.zeros((nl, b), dtype=np.int64),
           "sparsity": np.zeros((nl, b), dtype=np.float64),
           "reached": np.zeros((nl, b), dtype=np.bool_),
           "final_iteration": np.zeros(b, dtype=np.int64)}
    valid_h, valid_v = np.ones((h, w), dtype=dt), np.ones((h, w), dtype=dt)
    valid_h[:, -1] = 0.0
    valid_v[-1, :] = 0.0
    state = np.zeros((b, 6), dtype=np.int64)
    state[:, _K] = k0.numpy()
    u_start = np.ascontiguousarray(u0.numpy())
    head = (u_start, _padded(zh, h, w, 0.0), _padded(zv, h, w, 0.0), _padded(flat_h, h, w, True),
            _padded(flat_v, h, w, True), nonflat.numpy().astype(np.int64), valid_h.reshape(-1),
            valid_v.reshape(-1), width_transform(h, w, nu, dt), np.asarray(levels, dtype=np.float64),
            int(max_iter))
    tail = (np.array([step / nu, step * kappa / nu, kappa, 1.0, 0.0], dtype=dt), state,
            u_start.copy(), np.zeros_like(u_start), tuple(out.values()))
    threads = max(1, min(threads or torch.get_num_threads(), b))
    with _single_threaded_blas(0 if uses_fft(w) else nc * h * w * w):
        with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
            def run(until: int) -> None:
                if pool is None:
                    _path_chunk(0, b, *head, until, *tail)
                else:
                    list(pool.map(lambda r: _path_chunk(r[0], r[1], *head, until, *tail),
                                  _chunks(b, threads)))
            if progress:
                _run_with_progress(run, state, h * (w - 1) + (h - 1) * w, int(max_iter), levels[-1])
            else:
                run(int(max_iter))
    return {key: torch.from_numpy(v) for key, v in out.items()}


#: Iterations per segment when the compiled path shows progress.
PROGRESS_EVERY = 10


def _run_with_progress(run, state: np.ndarray, n_edges: int, max_iter: int, target: float) -> None:
    """Call ``run(until)`` segment by segment, a bar over finished images showing the furthest
    image's iteration and the lowest sparsity reached."""
    from tqdm.auto import tqdm

    with tqdm(total=len(state), unit="img", desc="LBI", leave=False) as bar:
        while not state[:, _DONE].all():
            run(min(int(state[state[:, _DONE] == 0, _K].min()) + PROGRESS_EVERY, max_iter))
            bar.update(int(state[:, _DONE].sum()) - bar.n)
            running = state[state[:, _DONE] == 0]
            if len(running):
                bar.set_postfix(iteration=int(running[:, _K].max()),
                                sparsity=f"{running[:, _CNT].min() / n_edges:.3f}",
                                target=f"{target:g}", refresh=True)


#: Products (multiply-adds) from which OpenBLAS may use several threads (its threshold is 4 x 65 536).
_BLAS_THREADED_FROM = 4 * 65536


def _single_threaded_blas(work: int):
    """A context holding BLAS to one thread when a product of ``work`` multiply-adds might start
    OpenBLAS's own threads (a no-op for CIFAR-sized images, or without threadpoolctl)."""
    if work < _BLAS_THREADED_FROM:
        return contextlib.nullcontext()
    controller = _blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1,
                                                                                user_api="blas")


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's controller, built once: building it scans the loaded libraries (~2 ms)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS numba calls, so it is limited)
    return ThreadpoolController()
