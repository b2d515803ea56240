r"""What every attack shares: input checks, the loss, the L∞ projection and the eval-mode guard.

Conventions (SPEC §3, torchattacks): images are float ``(B, C, H, W)`` in [0, 1] with the
normalisation *inside* the model, labels are integer ``(B,)``, the loss is the per-sample
cross-entropy

.. math:: \ell(x, y) = -\log \operatorname{softmax}(f(x))_y ,

and an attack looks for :math:`x' \in \mathcal{B}_\infty(x, \varepsilon) \cap [0, 1]^d` that
raises it. While an attack runs, the model is put in eval mode; every module's own train/eval flag
is restored afterwards (:func:`eval_mode`).
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from virolbi.checks import check_image_batch
from virolbi.errors import InputError

__all__ = [
    "Attack",
    "check_eot_samples",
    "check_eps",
    "as_radius",
    "eps_for_convention",
    "check_labels",
    "check_model",
    "check_count",
    "eval_mode",
    "per_sample_loss",
    "project_linf",
]


@contextlib.contextmanager
def eval_mode(*modules: Any) -> Iterator[None]:
    """Put every ``nn.Module`` among ``modules`` in eval mode and restore each submodule's flag.

    Restoring per submodule (not just the top-level ``training`` flag, as torchattacks does) keeps
    a deliberately mixed state, e.g. a frozen BatchNorm inside a training model. Arguments that are
    not modules (plain functions) are ignored.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training, net[1].training
    (True, True)
    """
    saved = [(m, m.training) for mod in modules if isinstance(mod, nn.Module) for m in mod.modules()]
    try:
        for mod in modules:
            if isinstance(mod, nn.Module):
                mod.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def check_model(model: Any, name: str = "model") -> None:
    """Raise unless ``model`` is callable (an ``nn.Module`` or a function of a batch)."""
    if not callable(model):
        raise InputError(f"{name} must be a callable mapping images (B, C, H, W) to logits (B, K), "
                         f"got {type(model).__name__}")


def _check_one_eps(eps: Any) -> float:
    try:
        v = float(eps)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a number in [0, 1], got {eps!r}") from None
    if not math.isfinite(v) or v < 0:
        raise InputError(f"eps must be a number in [0, 1] (L-infinity radius on [0, 1] pixels), "
                         f"got {eps!r}")
    if v > 1:
        raise InputError(f"eps must be in [0, 1]: it is measured on [0, 1] pixels, got {eps!r} "
                         f"(did you mean {eps!r}/255?)")
    return v


def check_eps(eps: Any) -> float | tuple[float, ...]:
    """``eps`` on [0, 1] pixels: a number in [0, 1], or one such number per channel (a sequence or
    1-D tensor), e.g. ``8/255 · σ_c`` for an ε stated on normalised images (see
    :func:`virolbi.attacks.eps_for_convention`).

    Examples
    --------
    >>> check_eps(8 / 255) == 8 / 255, check_eps([0.01, 0.02, 0.03])
    (True, (0.01, 0.02, 0.03))
    """
    if isinstance(eps, Tensor) and eps.ndim == 1:
        eps = eps.tolist()
    if isinstance(eps, (list, tuple)):
        if not eps:
            raise InputError("eps must be a number or one number per channel, got an empty sequence")
        return tuple(_check_one_eps(v) for v in eps)
    return _check_one_eps(eps)


def as_radius(eps: float | tuple[float, ...], x: Tensor) -> float | Tensor:
    """``eps`` (a number or per-channel numbers) broadcastable against ``x`` ``(B, C, H, W)``."""
    if isinstance(eps, tuple):
        if len(eps) != x.shape[1]:
            raise InputError(f"eps has {len(eps)} per-channel values but the images have "
                             f"{x.shape[1]} channels")
        return torch.tensor(eps, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return eps


def eps_for_convention(eps: float, convention: str, std: Any = None) -> float | tuple[float, ...]:
    r"""The pixel-space radius of an ε stated in a convention.

    - ``"pixel"``: ε on [0, 1] pixels (RobustBench's convention): returned as is.
    - ``"normalized"``: ε on normalised images :math:`(x_c - \mu_c)/\sigma_c` (what the paper's
      Table 2 says it uses): the pixel radius of channel ``c`` is :math:`\varepsilon\sigma_c`,
      about 4x smaller for CIFAR-10 (σ ≈ 0.25).

    Examples
    --------
    >>> eps_for_convention(8 / 255, "normalized", (0.25, 0.5, 1.0)) == (2 / 255, 4 / 255, 8 / 255)
    True
    """
    if convention == "pixel":
        return _check_one_eps(eps)
    if convention == "normalized":
        if std is None:
            raise InputError("the normalized eps convention needs the model's normalisation std")
        values = std.tolist() if isinstance(std, Tensor) else list(std)
        return tuple(_check_one_eps(float(eps) * float(s)) for s in values)
    raise InputError(f"eps convention must be 'pixel' or 'normalized', got {convention!r}")


def check_count(value: Any, name: str) -> int:
    """An integer ``>= 1`` (steps, restarts, EOT samples); booleans are refused."""
    try:
        v = operator.index(value)
    except TypeError:
        v = None
    if v is None or isinstance(value, bool) or v < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(v)


def check_eot_samples(value: Any) -> int:
    """The number of forward passes averaged by EOT: an integer ``>= 1``."""
    return check_count(value, "eot_samples")


def check_labels(y: Any, x: Tensor) -> Tensor:
    """Integer labels ``(B,)`` for the batch ``x``, returned on ``x``'s device as ``int64``."""
    if not isinstance(y, Tensor):
        raise InputError(f"labels must be a torch tensor of shape (B,), got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise InputError(f"labels must be an integer tensor, got {y.dtype}")
    if y.shape != (x.shape[0],):
        raise InputError(f"labels must have shape ({x.shape[0]},) to match images "
                         f"{tuple(x.shape)}, got {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise InputError(f"labels must be >= 0, got {int(y.min())}")
    return y.to(device=x.device, dtype=torch.int64)


def check_images(x: Any, name: str = "images") -> Tensor:
    """A float batch ``(B, C, H, W)`` in [0, 1], returned detached."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch tensor (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be float in [0, 1], got {x.dtype} (scale uint8 images by 1/255)")
    x = x.detach()
    check_image_batch(x, name, min_size=1)
    return x


def per_sample_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per sample, ``(B,)``, with a clear error for labels the model cannot output."""
    if logits.ndim != 2 or logits.shape[0] != y.shape[0]:
        raise InputError(f"model must return logits of shape ({y.shape[0]}, K), "
                         f"got {tuple(logits.shape)}")
    if y.numel() and int(y.max()) >= logits.shape[1]:
        raise InputError(f"labels must be < the model's {logits.shape[1]} classes, got {int(y.max())}")
    return F.cross_entropy(logits, y, reduction="none")


def project_linf(x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
    r"""Project onto :math:`\mathcal{B}_\infty(x, \varepsilon) \cap [0, 1]^d` (coordinate-wise clip).

    Examples
    --------
    >>> import torch
    >>> project_linf(torch.tensor([1.2, -0.5, 0.52]), torch.tensor([0.95, 0.1, 0.5]), 0.1)
    tensor([1.0000, 0.0000, 0.5200])
    """
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


class Attack:
    """Base of the attack objects: a model plus the attack's settings, called as ``attack(x, y)``.

    The functional core (:func:`~virolbi.attacks.fgsm`, :func:`~virolbi.attacks.pgd`) does the
    work; a subclass only stores its settings and names its function in ``_function``.
    :meth:`perturb` runs the same attack against another model, which is how
    :func:`~virolbi.attacks.attack_with_threat_model` aims one configured attack at the classifier
    or at smoother + classifier.

    Parameters
    ----------
    model : nn.Module or callable or None
        Maps float images ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``. ``None`` is allowed for
        an attack that is only used through :meth:`perturb`.
    **settings
        The keyword arguments of the attack function (``eps``, ``steps``, ...).
    """

    name = "attack"
    _function: Callable[..., Tensor]

    def __init__(self, model: Any, **settings: Any) -> None:
        if model is not None:
            check_model(model)
        self.model = model
        self.settings = settings

    def perturb(self, model: Any, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial images against ``model`` with this attack's settings."""
        return type(self)._function(model, x, y, **self.settings)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self.model is None:
            raise InputError(f"{type(self).__name__} was built without a model; call "
                             f".perturb(model, x, y) or pass a model to the constructor")
        return self.perturb(self.model, x, y)

    def config(self) -> dict[str, Any]:
        """The settings as plain values (for reports): name, eps, steps, step size, ..."""
        out: dict[str, Any] = {"attack": self.name}
        for k, v in self.settings.items():
            if isinstance(v, torch.Generator):
                v = f"torch.Generator(initial_seed={v.initial_seed()})"
            out[k] = v
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "attack")
        return f"{type(self).__name__}({args})"
