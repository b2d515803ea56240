r"""How a torch model is handed to the adversarial-robustness-toolbox (ART) attacks.

ART's L∞ attacks (``AutoProjectedGradientDescent``, ``SquareAttack``) take one scalar radius and
clip to ``clip_values``. The normalised ε convention gives one pixel radius per channel,
:math:`\varepsilon_c = \varepsilon\sigma_c` (:func:`virolbi.attacks.base.eps_for_convention`), so
the attack runs in rescaled coordinates :math:`z_c = x_c / s_c` with
:math:`s_c = \varepsilon_c / \max_c \varepsilon_c`: a scalar ball of radius
:math:`\max_c \varepsilon_c` in :math:`z` is exactly the per-channel ball in :math:`x`, and the box
:math:`[0, 1]` becomes :math:`[0, 1/s_c]`. For one radius, :math:`s = 1` and nothing changes.

The model ART sees is whatever the threat model names (:func:`virolbi.attacks.attack_with_threat_model`
builds it: the classifier, ``BPDA(P) → f`` or ``P → f``), so gradients flow as the threat model
defines them. For a randomised model, :class:`EOTEstimator` averages ART's loss and its gradient
over draws (EOT, Athalye et al. 2018) — the ``rand`` version of AutoAttack.

ART is the ``attacks`` extra (``pip install 'virolbi[attacks]'``): it is imported inside the
functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from virolbi.attacks.base import as_radius, check_eps
from virolbi.attacks.threat import _as_module
from virolbi.errors import InputError

__all__ = ["EOTEstimator", "art_classifier", "art_version", "from_art", "import_art", "numpy_seed", "scaled_radius",
           "to_art"]


def import_art() -> Any:
    """The ``art`` package, or one line saying how to install it."""
    try:
        import art.attacks.evasion  # noqa: F401
        import art.estimators.classification  # noqa: F401
    except ImportError:
        raise InputError("this attack needs the adversarial-robustness-toolbox: "
                         "pip install 'virolbi[attacks]'") from None
    import art

    return art


def art_version() -> str:
    """``adversarial-robustness-toolbox <version>``, or that it is not installed."""
    try:
        from importlib.metadata import version

        return f"adversarial-robustness-toolbox {version('adversarial-robustness-toolbox')}"
    except Exception:  # noqa: BLE001 - any lookup failure means: not there
        return "adversarial-robustness-toolbox (not installed)"


class _Scaled(nn.Module):
    """``model(z * s)``: the model on rescaled coordinates (see the module docstring)."""

    def __init__(self, model: Any, scale: Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", scale if scale is not None else torch.ones(()))

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z * self.scale)


def scaled_radius(eps: Any, x: Tensor) -> tuple[float, Tensor | None]:
    """(scalar radius ART uses, per-channel scale ``s`` (1, C, 1, 1) or None for one radius).

    Examples
    --------
    >>> r, s = scaled_radius((0.01, 0.02, 0.04), torch.zeros(1, 3, 2, 2))
    >>> r, s.flatten().tolist()
    (0.04, [0.25, 0.5, 1.0])
    """
    eps = check_eps(eps)
    if not isinstance(eps, tuple):
        return float(eps), None
    if min(eps) <= 0:
        raise InputError(f"every channel's radius must be > 0 for an ART attack, got {eps}")
    top = max(eps)
    return top, as_radius(tuple(e / top for e in eps), x).to(torch.float32)


def art_classifier(model: Any, x: Tensor, scale: Tensor | None, num_classes: int,
                   loss: nn.Module | None = None) -> Any:
    """An ART ``PyTorchClassifier`` of ``model`` on the (rescaled) images of ``x``'s shape.

    Parameters
    ----------
    model : nn.Module or callable
        The function the threat model attacks, images in [0, 1] to logits.
    x : Tensor
        A batch of the images (for the shape and device).
    scale : Tensor or None
        Per-channel scale ``s`` of :func:`scaled_radius` (None: pixels as they are).
    num_classes : int
        Logits per image.
    loss : nn.Module, optional
        ART's training loss slot, used by attacks with ``loss_type=None``; default cross-entropy.
    """
    art = import_art()
    shape = tuple(x.shape[1:])
    hi = np.ones(shape, np.float32) if scale is None else np.broadcast_to(
        (1.0 / scale.cpu().numpy()[0]).astype(np.float32), shape).copy()
    device_type = "gpu" if x.is_cuda else "cpu"
    scale = scale.to(x.device) if scale is not None else None
    return art.estimators.classification.PyTorchClassifier(
        _Scaled(_as_module(model), scale), loss=loss if loss is not None else nn.CrossEntropyLoss(),
        input_shape=shape, nb_classes=int(num_classes), clip_values=(np.zeros(shape, np.float32), hi),
        device_type=device_type)


class EOTEstimator:
    """An ART estimator whose ``loss_gradient`` and ``compute_loss`` average ``samples`` calls
    (EOT); every other attribute is the wrapped estimator's. Deterministic models need none.

    Examples
    --------
    >>> class Fake:
    ...     calls = 0
    ...     def loss_gradient(self, x, y, **kw):
    ...         Fake.calls += 1
    ...         return np.full_like(x, Fake.calls)
    >>> EOTEstimator(Fake(), 4).loss_gradient(np.zeros(2), None).tolist()  # (1+2+3+4)/4
    [2.5, 2.5]
    """

    def __init__(self, inner: Any, samples: int) -> None:
        self._inner, self._samples = inner, int(samples)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _mean(self, method: str, *args: Any, **kwargs: Any) -> np.ndarray:
        fn = getattr(self._inner, method)
        total = fn(*args, **kwargs)
        for _ in range(self._samples - 1):
            total = total + fn(*args, **kwargs)
        return total / self._samples

    def loss_gradient(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self._mean("loss_gradient", x, y, **kwargs)

    def compute_loss(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self._mean("compute_loss", x, y, **kwargs)


@contextlib.contextmanager
def numpy_seed(seed: int) -> Iterator[None]:
    """Seed NumPy's global state (ART draws its random starts and squares from it); the state
    is restored afterwards."""
    state = np.random.get_state()
    np.random.seed(int(seed) % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


def to_art(x: Tensor, scale: Tensor | None) -> np.ndarray:
    """Images → ART's float32 NumPy array in rescaled coordinates."""
    z = x if scale is None else x / scale.to(x.device)
    return z.detach().cpu().numpy().astype(np.float32)


def from_art(z: np.ndarray, x: Tensor, scale: Tensor | None, eps: Any) -> Tensor:
    """ART's output back to images, projected onto the ε-ball of ``x`` and [0, 1]."""
    out = torch.from_numpy(np.asarray(z)).to(x.device, x.dtype)
    if scale is not None:
        out = out * scale.to(x.device, x.dtype)
    radius = as_radius(check_eps(eps), x)
    return torch.minimum(torch.maximum(out, x - radius), x + radius).clamp(0.0, 1.0)
