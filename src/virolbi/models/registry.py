"""A name → constructor registry, in the manner of timm's ``create_model``.

Built-in names: ``"airbench"`` (the fast CPU network, :mod:`virolbi.models.airbench`),
``"airbench64"`` (its 64-px variant for Tiny-ImageNet-100: one more conv group),
``"resnet18"`` (CIFAR stem), ``"resnet50"``, ``"vit_tiny"``. Names of the form
``"torchvision:<name>"`` and ``"timm:<name>"`` build that library's model without downloading
anything (``weights=None`` / ``pretrained=False``); they need the ``vision`` extra
(``pip install virolbi[vision]``). Weights come from local files only (:func:`load_pretrained`).

Every model returned by :func:`create_model` takes float images ``(B, C, H, W)`` in [0, 1]: with
``normalize`` on (the default) a :class:`~virolbi.models.Normalize` layer comes first, so attacks and
perturbations act in pixel space.
"""

from __future__ import annotations

import importlib
import inspect
from functools import partial
from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any, TypeVar

from torch import nn

from virolbi.checks import check_positive
from virolbi.errors import InputError
from virolbi.models.normalize import NormalizedModel, resolve_stats
from virolbi.models.airbench import AIRBENCH64_WIDTHS, airbench
from virolbi.models.pretrained import load_pretrained
from virolbi.models.resnet import _check_num_classes, resnet18, resnet50
from virolbi.models.vit import vit_tiny

__all__ = ["create_model", "list_models", "register"]

F = TypeVar("F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DEFAULT_STATS: dict[str, Callable[[dict[str, Any]], str]] = {}
_EXTERNAL = {"torchvision": "torchvision", "timm": "timm"}


def register(name: str | Callable[..., nn.Module] | None = None, *,
             default_stats: str | Callable[[dict[str, Any]], str] = "imagenet"
             ) -> Any:
    """Register a model constructor under a name (decorator; bare or with arguments).

    The constructor is called as ``fn(num_classes, width=..., image_size=..., **kw)`` — it may
    leave out ``width``/``image_size`` from its signature when it does not support them — and returns
    an ``nn.Module`` that takes *normalised* images.

    Parameters
    ----------
    name : str, optional
        Registry name (default: the function's name). Must not start with ``torchvision:``/``timm:``.
    default_stats : str or callable
        Normalisation statistics used when ``create_model(normalize=True)``: a
        :data:`~virolbi.models.DATASET_STATS` name, or a function of the keyword arguments returning
        one (default ``"imagenet"``).

    Examples
    --------
    >>> @register("tiny_mlp", default_stats="cifar10")
    ... def tiny_mlp(num_classes=10):
    ...     return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
    >>> "tiny_mlp" in list_models()
    True
    >>> _ = _REGISTRY.pop("tiny_mlp"), _DEFAULT_STATS.pop("tiny_mlp")
    """
    def decorate(fn: F, key: str | None = None) -> F:
        key = key or fn.__name__
        if not isinstance(key, str) or not key or ":" in key:
            raise InputError(f"model name must be a non-empty string without ':', got {key!r}")
        if key in _REGISTRY:
            raise InputError(f"model {key!r} is already registered")
        _REGISTRY[key] = fn
        stats = default_stats
        _DEFAULT_STATS[key] = stats if callable(stats) else (lambda _kw: stats)
        return fn

    if callable(name):
        return decorate(name)  # type: ignore[arg-type]
    return lambda fn: decorate(fn, name)


def list_models() -> list[str]:
    """Sorted names of the registered models (``torchvision:``/``timm:`` names are not listed).

    Examples
    --------
    >>> list_models()
    ['airbench', 'airbench64', 'odenet_small', 'resnet18', 'resnet50', 'vit_tiny']
    """
    return sorted(_REGISTRY)


@register("airbench", default_stats="cifar10")
def _airbench(num_classes: int, *, width: float = 1.0, image_size: object = None,
              widths: Any = (64, 256, 256), scale: float = 1 / 9, bn_momentum: float = 0.4,
              whiten_bias_epochs: Any = 3, tv_layer: Any = None, cifs: Any = None,
              csc: Any = None, whiten_eps: float = 5e-4, stem: str = "whiten",
              stem_stride: int = 1, final_pool: int = 3) -> nn.Module:
    return airbench(num_classes, width=width, widths=widths, scale=scale, bn_momentum=bn_momentum,
                    whiten_bias_epochs=whiten_bias_epochs, tv_layer=tv_layer, cifs=cifs, csc=csc,
                    whiten_eps=whiten_eps, stem=stem, stem_stride=stem_stride,
                    final_pool=final_pool)


# The 64-px fast network (Tiny-ImageNet-100): airbench with one more conv group, every option of
# "airbench" with other defaults; ImageNet statistics.
register("airbench64", default_stats="imagenet")(partial(_airbench, widths=AIRBENCH64_WIDTHS))


@register("odenet_small", default_stats="cifar10")
def _odenet_small(num_classes: int, *, image_size: object = None, kind: str = "tisode",
                  T: float = 1.0, method: str = "euler", steps: int = 10,
                  steady_weight: float = 0.1) -> nn.Module:
    from virolbi.models.odenet import odenet_small

    return odenet_small(num_classes, kind=kind, T=T, method=method, steps=steps,
                        steady_weight=steady_weight)


@register("resnet18", default_stats=lambda kw: "cifar10" if kw.get("stem", "cifar") == "cifar"
          else "imagenet")
def _resnet18(num_classes: int, *, width: float = 1.0, image_size: object = None,
              stem: str = "cifar", zero_init_residual: bool = False, csc: object = None,
              cifs: object = None) -> nn.Module:
    return resnet18(num_classes, width=width, stem=stem, zero_init_residual=zero_init_residual,
                    csc=csc, cifs=cifs)


@register("resnet50", default_stats=lambda kw: "cifar10" if kw.get("stem") == "cifar"
          else "imagenet")
def _resnet50(num_classes: int, *, width: float = 1.0, image_size: object = None,
              stem: str = "imagenet", zero_init_residual: bool = False) -> nn.Module:
    return resnet50(num_classes, width=width, stem=stem, zero_init_residual=zero_init_residual)


@register("vit_tiny", default_stats="imagenet")
def _vit_tiny(num_classes: int, *, image_size: Any = None, patch_size: Any = 16, depth: int = 12,
              embed_dim: int = 192, num_heads: int = 3, mlp_dim: int = 768, dropout: float = 0.0,
              attn_dropout: float = 0.0) -> nn.Module:
    return vit_tiny(num_classes, image_size=224 if image_size is None else image_size,
                    patch_size=patch_size, depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                    mlp_dim=mlp_dim, dropout=dropout, attn_dropout=attn_dropout)


def _import_extra(module: str, name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"model {name!r} needs {module.split('.')[0]}, which is not installed "
                         f"(pip install virolbi[vision])") from None


def _external(lib: str, arch: str, name: str, num_classes: int, image_size: Any,
              kw: dict[str, Any]) -> tuple[nn.Module, str | tuple[Sequence[float], Sequence[float]]]:
    if lib == "torchvision":
        models = _import_extra("torchvision.models", name)
        if arch not in models.list_models():
            raise InputError(f"unknown torchvision model {arch!r} in {name!r}")
        if image_size is not None:
            kw.setdefault("image_size", image_size)
        return models.get_model(arch, weights=None, num_classes=num_classes, **kw), "imagenet"
    timm = _import_extra("timm", name)
    if not timm.is_model(arch):
        raise InputError(f"unknown timm model {arch!r} in {name!r}")
    if image_size is not None:
        kw.setdefault("img_size", image_size)
    net = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kw)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    stats: Any = (cfg["mean"], cfg["std"]) if "mean" in cfg and "std" in cfg else "imagenet"
    return net, stats


def _call_builtin(name: str, num_classes: int, width: float, image_size: Any,
                  kw: dict[str, Any]) -> nn.Module:
    fn = _REGISTRY[name]
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    args = dict(kw)
    if "width" in params:
        args["width"] = width
    elif width != 1.0:
        raise InputError(f"model {name!r} has no width multiplier (got width={width})")
    if image_size is not None:
        args["image_size"] = image_size
    if not takes_any:
        unknown = sorted(set(args) - set(params))
        if unknown:
            allowed = sorted(set(params) - {"num_classes"})
            raise InputError(f"model {name!r} got unknown option(s) {', '.join(unknown)}; it takes "
                             f"{', '.join(allowed) or 'none'}")
    return fn(num_classes, **args)


def create_model(name: str, num_classes: int = 10, *, width: float = 1.0,
                 pretrained: str | PathLike | None = None,
                 normalize: bool | str | tuple[Sequence[float], Sequence[float]] = True,
                 image_size: int | tuple[int, int] | None = None, drop_head: bool = False,
                 **kw: Any) -> nn.Module:
    """Build a classifier by name; its input is float images ``(B, C, H, W)`` in [0, 1].

    Parameters
    ----------
    name : str
        ``"resnet18"`` (CIFAR stem: 3×3 conv, stride 1, no max-pool), ``"resnet50"``,
        ``"vit_tiny"`` (patch 16, 224), any name from :func:`register`, or
        ``"torchvision:<name>"`` / ``"timm:<name>"`` (needs ``pip install virolbi[vision]``).
    num_classes : int
        Classifier outputs (default 10).
    width : float
        Channel multiplier of the ResNets (default 1; e.g. 0.25 for the CPU configurations).
    pretrained : path, optional
        Local checkpoint to load (:func:`load_pretrained`, strict); nothing is ever downloaded.
    normalize : bool, str or (mean, std)
        ``True`` (default): a :class:`~virolbi.models.Normalize` layer with the model's usual
        statistics (CIFAR-10 for the CIFAR stem, ImageNet otherwise) goes first; a name of
        :data:`~virolbi.models.DATASET_STATS` or an explicit ``(mean, std)`` picks them;
        ``False``/``None`` returns the bare backbone (input then already normalised).
    image_size : int or (int, int), optional
        Input size the model is built for (ViT position embedding; ignored by the ResNets, which
        take any size). ``None``: the model's default (224 for ViT).
    drop_head : bool
        With ``pretrained``: skip the file's classifier when its shape differs (fine-tuning to a new
        class count). Default False: a class-count mismatch is an error.
    **kw
        Model options: ``weight_noise`` (any model: PNI on every trainable convolution,
        ``{"alpha": 0.25, "channelwise": False}``, :mod:`virolbi.models.pni`);
        ``stem`` and ``zero_init_residual`` (ResNets; ResNet18 also ``csc`` and ``cifs``, SDNet-18
        and CIFS); ``patch_size``, ``depth``,
        ``embed_dim``, ``num_heads``, ``mlp_dim``, ``dropout``, ``attn_dropout`` (ViT); anything the
        torchvision / timm constructor takes.

    Returns
    -------
    nn.Module
        A :class:`~virolbi.models.NormalizedModel` (``.normalize``, ``.backbone``), or the bare
        backbone when ``normalize`` is off.

    Examples
    --------
    >>> import torch
    >>> model = create_model("resnet18", num_classes=10, width=0.125).eval()
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> vit = create_model("vit_tiny", 100, image_size=32, patch_size=4, depth=1).eval()
    >>> vit(torch.rand(1, 3, 32, 32)).shape
    torch.Size([1, 100])
    """
    if not isinstance(name, str):
        raise InputError(f"model name must be a string, got {name!r}")
    num_classes = _check_num_classes(num_classes)
    width = check_positive(width, "width")
    from virolbi.models.pni import add_weight_noise, weight_noise_options

    noise = weight_noise_options(kw.pop("weight_noise", None))
    lib, sep, arch = name.partition(":")
    stats: Any
    if sep:
        if lib not in _EXTERNAL or not arch:
            raise InputError(f"unknown model {name!r}: a prefix must be 'torchvision:<name>' or "
                             f"'timm:<name>'")
        if width != 1.0:
            raise InputError(f"model {name!r} has no width multiplier (got width={width})")
        net, stats = _external(lib, arch, name, num_classes, image_size, dict(kw))
    else:
        if name not in _REGISTRY:
            raise InputError(f"unknown model {name!r}; available: {', '.join(list_models())} "
                             f"(or 'torchvision:<name>', 'timm:<name>')")
        net = _call_builtin(name, num_classes, width, image_size, kw)
        stats = _DEFAULT_STATS[name](kw)
    if noise is not None:
        add_weight_noise(net, **noise)

    if normalize is True:
        model: nn.Module = NormalizedModel(net, *resolve_stats(stats))
    elif normalize is False or normalize is None:
        model = net
    else:
        model = NormalizedModel(net, *resolve_stats(normalize))  # type: ignore[arg-type]
    if pretrained is not None:
        load_pretrained(model, pretrained, strict=True, drop_head=drop_head)
    return model
