r"""Grid operators of the ViRoLBI smoother: the edge difference operator :math:`D`, its adjoint, the
exact operator norm of the Hessian, and an exact DCT solver for :math:`(I + D^\top D/\nu)u = r`.

The graph is the 4-neighbour pixel grid with free (Neumann) boundary (paper §3.1, Eq. 2). An image
``u`` of shape ``(..., H, W)`` has ``H(W-1)`` horizontal edges and ``(H-1)W`` vertical edges;
``D`` maps it to the pair ``(dh, dv)`` with ``dh[..., i, j] = u[..., i, j+1] - u[..., i, j]`` and
``dv[..., i, j] = u[..., i+1, j] - u[..., i, j]``. Colour images carry a C-vector per edge.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

__all__ = ["forward_diff", "adjoint_diff", "edge_count", "laplacian_eigenvalues", "hessian_norm",
           "lbi_step_size", "dct_matrix", "dct_last", "idct_last", "NeumannSolver", "FFT_FROM"]

#: Image sides from which the DCTs go through the FFT (O(n log n)) instead of dense matrices.
FFT_FROM = 65


def forward_diff(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The edge differences :math:`Du` of an image ``(..., H, W)``: ``(dh, dv)`` of shapes
    ``(..., H, W-1)`` and ``(..., H-1, W)``."""
    return u[..., :, 1:] - u[..., :, :-1], u[..., 1:, :] - u[..., :-1, :]


def adjoint_diff(dh: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
    r"""The adjoint :math:`D^\top(dh, dv)`, an image ``(..., H, W)`` (minus the divergence)."""
    h, w = dv.shape[-2] + 1, dh.shape[-1] + 1
    out = dh.new_zeros(dh.shape[:-2] + (h, w))
    out[..., :, 1:] += dh
    out[..., :, :-1] -= dh
    out[..., 1:, :] += dv
    out[..., :-1, :] -= dv
    return out


def edge_count(height: int, width: int) -> int:
    """Number of 4-neighbour edges of an ``height x width`` grid."""
    return height * (width - 1) + (height - 1) * width


def laplacian_eigenvalues(n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    r"""Eigenvalues :math:`4\sin^2(\pi k / 2n)`, ``k = 0..n-1``, of the 1-D Neumann Laplacian
    :math:`D_1^\top D_1` on ``n`` nodes; its eigenvectors are the DCT-II basis."""
    k = torch.arange(n, dtype=torch.float64, device=device)
    return (4.0 * torch.sin(math.pi * k / (2 * n)) ** 2).to(dtype)


def hessian_norm(height: int, width: int, nu: float = 1.0) -> float:
    r"""Exact spectral norm of the Hessian of :math:`L(u,\gamma)=\tfrac12\|u-x\|^2+\tfrac1{2\nu}\|Du-\gamma\|^2`
    in :math:`(u, \gamma)` (the paper's Eq. 2, Appendix A).

    The Hessian is :math:`H = \begin{pmatrix} I + D^\top D/\nu & -D^\top/\nu \\ -D/\nu & I/\nu \end{pmatrix}`.
    On each singular pair :math:`\sigma` of :math:`D` it acts as the 2×2 block with trace
    :math:`T = 1 + (1+\sigma^2)/\nu` and determinant :math:`1/\nu`; on the cycle space of the grid
    (the null space of :math:`D^\top`) it is :math:`1/\nu`. Hence
    :math:`\|H\|_2 = (T + \sqrt{T^2 - 4/\nu})/2` at :math:`\sigma^2_{\max} = 4\sin^2\frac{\pi(H-1)}{2H} +
    4\sin^2\frac{\pi(W-1)}{2W}`, the largest eigenvalue of the Neumann Laplacian. This is exact,
    not a bound (a test checks it against power iteration).

    Examples
    --------
    >>> round(hessian_norm(32, 32, nu=1.0), 4)
    9.8795
    """
    s2 = float(laplacian_eigenvalues(height)[-1] + laplacian_eigenvalues(width)[-1])
    t = 1.0 + (1.0 + s2) / nu
    return max((t + math.sqrt(max(t * t - 4.0 / nu, 0.0))) / 2.0, 1.0 / nu)


def lbi_step_size(height: int, width: int, kappa: float = 5.0, nu: float = 1.0) -> float:
    r"""The paper's default step of Eq. 5, :math:`\alpha = 1/(\kappa\|H\|_2)` (Appendix E); stability
    needs :math:`\alpha < 2/(\kappa\|H\|_2)`."""
    return 1.0 / (kappa * hessian_norm(height, width, nu))


@lru_cache(maxsize=64)
def _dct_matrix_cached(n: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(dtype=dtype, device=device)


def dct_matrix(n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``C`` (``C @ C.T == I``); row ``k`` is the ``k``-th eigenvector
    of the 1-D Neumann Laplacian. A fresh tensor each call (the cached one is never handed out)."""
    return _dct_matrix_cached(n, dtype, str(torch.device(device or "cpu"))).clone()


def _orthonormal_scale(n: int, dtype: torch.dtype, device) -> torch.Tensor:
    s = torch.full((n,), math.sqrt(2.0 / n), dtype=dtype, device=device)
    s[0] = math.sqrt(1.0 / n)
    return s


def dct_last(x: torch.Tensor) -> torch.Tensor:
    r"""Orthonormal DCT-II along the last axis through one FFT of length ``n`` (Makhoul 1980):
    reorder to even samples then odd ones reversed, FFT, rotate by :math:`e^{-i\pi k/2n}`, take
    the real part. Equals ``x @ dct_matrix(n).T``."""
    n = x.shape[-1]
    v = torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)
    k = torch.arange(n, dtype=x.dtype, device=x.device)
    rot = torch.polar(torch.ones_like(k), -math.pi * k / (2 * n))
    return (torch.fft.fft(v, dim=-1) * rot).real * _orthonormal_scale(n, x.dtype, x.device)


def idct_last(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`dct_last` (orthonormal DCT-III), through one inverse FFT."""
    n = y.shape[-1]
    yt = y / _orthonormal_scale(n, y.dtype, y.device)
    mirror = torch.cat([torch.zeros_like(yt[..., :1]), yt[..., 1:].flip(-1)], dim=-1)
    k = torch.arange(n, dtype=y.dtype, device=y.device)
    v = torch.fft.ifft(torch.polar(torch.ones_like(k), math.pi * k / (2 * n))
                       * torch.complex(yt, -mirror), dim=-1).real
    x = torch.empty_like(y)
    half = (n + 1) // 2
    x[..., 0::2], x[..., 1::2] = v[..., :half], v[..., half:].flip(-1)
    return x


class NeumannSolver:
    r"""Exact solver of :math:`(I + D^\top D/\nu)\,u = r` on an ``H x W`` grid with Neumann boundary.

    :math:`D^\top D = L_H \otimes I + I \otimes L_W` is diagonalised by the separable DCT-II, so
    :math:`u = C_H^\top \big[(C_H r C_W^\top) / (1 + (\lambda_i + \mu_j)/\nu)\big] C_W`: four small
    matrix products per image and channel, or, from a side of :data:`FFT_FROM` on, FFTs
    (:func:`dct_last`), O(HW log) instead of O(HW(H+W)). This is the minimiser of Eq. 2 in ``u`` for
    fixed :math:`\gamma` (the paper's Eq. 3a, :math:`\nabla_u L = 0`) when ``r = x + D^\top\gamma/\nu``.
    """

    def __init__(self, height: int, width: int, nu: float = 1.0, *, dtype=torch.float32,
                 device=None) -> None:
        self.fft = max(height, width) >= FFT_FROM
        if not self.fft:
            self.ch = dct_matrix(height, dtype=dtype, device=device)
            self.cw = dct_matrix(width, dtype=dtype, device=device)
            self.cht, self.cwt = self.ch.t().contiguous(), self.cw.t().contiguous()
        lam = laplacian_eigenvalues(height, device=device)[:, None]
        mu = laplacian_eigenvalues(width, device=device)[None, :]
        self.inv = (1.0 / (1.0 + (lam + mu) / nu)).to(dtype)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        """Solve for a batch ``r`` of shape ``(..., H, W)``."""
        if self.fft:
            spec = dct_last(dct_last(r).transpose(-1, -2)).transpose(-1, -2)
            return idct_last(idct_last(spec * self.inv).transpose(-1, -2)).transpose(-1, -2)
        spec = torch.matmul(self.ch, torch.matmul(r, self.cwt))
        return torch.matmul(self.cht, torch.matmul(spec * self.inv, self.cw))
