r"""Backward Pass Differentiable Approximation (BPDA) for attacking through a preprocess.

The smoother :math:`g` = :class:`virolbi.ViRoLBI` has no useful gradient (it runs a thresholded
iteration under ``no_grad``), so an *adaptive* attack on :math:`f \circ g` keeps the exact forward
pass and replaces the backward pass (Athalye et al., 2018):

.. math:: \nabla_x \ell(f(g(x)), y) \approx J^\top \, \nabla_u \ell(f(u), y) \big|_{u = g(x)}

- ``backward="identity"``: :math:`J = I` (the smoother returns an image close to its input).
- ``backward="partition"``: :math:`J = P_\pi`, the averaging over the connected components
  :math:`\pi` of the output (Eq. 6, Prop. 1). At a fixed support the smoother's final step
  :math:`u \mapsto \tilde u` is this orthogonal projection, so :math:`P_\pi` is its exact Jacobian
  at the fixed partition; it is self-adjoint, so the backward pass is
  ``average_over_components(grad, labels)``. It needs a preprocess with
  ``forward_with_labels(x) -> (images, labels)``.

References
----------
A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security:
Circumventing Defenses to Adversarial Examples", ICML 2018.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from virolbi.errors import InputError

__all__ = ["BACKWARD_MODES", "BPDA", "bpda"]

BACKWARD_MODES = ("identity", "partition")


def _average_over_components(grad: Tensor, labels: Tensor) -> Tensor:
    from virolbi.smoother import average_over_components  # the smoother owns the projection

    return average_over_components(grad, labels)


def _check_backward(preprocess: Any, backward: Any) -> str:
    if not callable(preprocess):
        raise InputError(f"preprocess must be a callable on images (B, C, H, W), "
                         f"got {type(preprocess).__name__}")
    if backward not in BACKWARD_MODES:
        raise InputError(f"backward must be one of {', '.join(map(repr, BACKWARD_MODES))}, "
                         f"got {backward!r}")
    if backward == "partition" and not callable(getattr(preprocess, "forward_with_labels", None)):
        raise InputError(f"backward='partition' needs a preprocess with forward_with_labels(x) -> "
                         f"(images, labels), such as virolbi.ViRoLBI; {type(preprocess).__name__} "
                         f"has none (use backward='identity')")
    return str(backward)


class _BPDAFunction(torch.autograd.Function):
    """Exact forward of ``preprocess``; identity or fixed-partition averaging backward."""

    @staticmethod
    def forward(ctx, x: Tensor, preprocess: Any, backward: str) -> Tensor:  # type: ignore[override]
        with torch.no_grad():
            if backward == "partition":
                out, labels = preprocess.forward_with_labels(x)
                ctx.save_for_backward(labels)
            else:
                out = preprocess(x)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise InputError(f"BPDA needs a preprocess that keeps the shape {tuple(x.shape)}, "
                             f"got {got}")
        ctx.backward_mode = backward
        return out.to(dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        if ctx.backward_mode == "partition":
            (labels,) = ctx.saved_tensors
            grad = _average_over_components(grad, labels.to(grad.device))
        return grad, None, None


def bpda(x: Tensor, preprocess: Any, backward: str = "identity") -> Tensor:
    r"""Apply ``preprocess`` to ``x`` with a BPDA backward pass (Athalye et al., 2018).

    Parameters
    ----------
    x : Tensor
        Images ``(B, C, H, W)``; the gradient flows back to it.
    preprocess : callable
        Maps images to images of the same shape; run under ``no_grad`` (its own gradient, if any,
        is not used). For ``"partition"`` it must provide ``forward_with_labels(x)`` returning the
        images and ``int64`` labels ``(B, H, W)`` (or ``(B, C, H, W)``) of the pieces they are
        constant on, like :meth:`virolbi.ViRoLBI.forward_with_labels`.
    backward : {"identity", "partition"}, default "identity"
        The surrogate Jacobian: :math:`I`, or the averaging :math:`P_\pi` over the output's
        components (exact at a fixed partition; it zeroes the gradient's within-component detail).

    Returns
    -------
    Tensor
        ``preprocess(x)``, shape of ``x``, with the surrogate backward attached.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(1, 1, 2, 2, requires_grad=True)
    >>> y = bpda(x, torch.round)
    >>> bool(torch.equal(y, torch.round(x)))
    True
    >>> y.sum().backward()
    >>> x.grad
    tensor([[[[1., 1.],
              [1., 1.]]]])
    """
    backward = _check_backward(preprocess, backward)
    return _BPDAFunction.apply(x, preprocess, backward)


class BPDA(nn.Module):
    """A preprocess made attackable: ``BPDA(preprocess, backward)(x)`` equals
    ``bpda(x, preprocess, backward)``.

    Put it in front of the classifier, ``nn.Sequential(BPDA(ViRoLBI(0.6), "partition"), model)``,
    and any gradient attack becomes the adaptive BPDA attack. Parameters are those of :func:`bpda`;
    ``preprocess`` is registered as a submodule when it is an ``nn.Module``.

    Examples
    --------
    >>> import torch
    >>> layer = BPDA(torch.nn.Identity())
    >>> layer(torch.zeros(1, 3, 4, 4)).shape
    torch.Size([1, 3, 4, 4])
    """

    def __init__(self, preprocess: Any, backward: str = "identity") -> None:
        super().__init__()
        self.backward_mode = _check_backward(preprocess, backward)
        self.preprocess = preprocess

    def forward(self, x: Tensor) -> Tensor:
        return _BPDAFunction.apply(x, self.preprocess, self.backward_mode)

    def extra_repr(self) -> str:
        return f"backward={self.backward_mode!r}"
