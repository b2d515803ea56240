"""Load weights from a local checkpoint file into a model, safely and with clear errors.

Files are read with ``torch.load(weights_only=True)`` (never unpickled as arbitrary objects) and may
be a raw state dict or a training checkpoint holding it under ``"model"``, ``"state_dict"`` or
``"model_state_dict"``. Key prefixes are reconciled before the strict check:

- ``module.`` (``DistributedDataParallel``/``DataParallel``) and ``_orig_mod.`` (``torch.compile``) are
  stripped;
- ``backbone.`` (the :class:`~virolbi.models.NormalizedModel` wrapper) is added or stripped as needed,
  so a bare torchvision / timm state dict loads into a normalised virolbi model and back;
- a ViT position embedding made for another patch grid is resampled
  (:func:`~virolbi.models.vit.resample_pos_embed`).

With ``drop_head=True`` the classifier (the model's last ``nn.Linear``) is skipped when its shape
differs, for fine-tuning to a new number of classes (paper §4: ResNet50 and ViT-tiny fine-tuned on ImageNet100).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from virolbi.errors import InputError
from virolbi.models.vit import VisionTransformer, resample_pos_embed

__all__ = ["LoadResult", "extract_state_dict", "load_pretrained"]

_CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict")
_STRIP_PREFIXES = ("module.", "_orig_mod.")
_WRAPPER_PREFIX = "backbone."
_SHOW = 5


class LoadResult(NamedTuple):
    """What :func:`load_pretrained` did (all lists hold model key names)."""

    #: model tensors the checkpoint did not provide (left as initialised; only with strict=False)
    missing: list[str]
    #: checkpoint tensors the model has no place for (ignored; only with strict=False)
    unexpected: list[str]
    #: classifier tensors skipped because their shape differs (drop_head=True)
    dropped: list[str]
    #: position embeddings resampled to the model's patch grid
    resampled: list[str]


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def extract_state_dict(obj: object, source: str = "checkpoint") -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint, with ``module.``/``_orig_mod.`` prefixes removed.

    Parameters
    ----------
    obj : object
        What ``torch.load`` returned: a ``{name: Tensor}`` mapping, or a mapping holding one under
        ``"model"``, ``"state_dict"`` or ``"model_state_dict"``.
    source : str
        Name used in error messages.

    Returns
    -------
    dict of str to Tensor

    Examples
    --------
    >>> sd = extract_state_dict({"epoch": 3, "model": {"module.fc.bias": torch.zeros(2)}})
    >>> list(sd)
    ['fc.bias']
    """
    if isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(f"{source} is not a checkpoint: expected a state dict (name -> tensor) or a "
                         f"dict with one under {', '.join(map(repr, _CHECKPOINT_KEYS))}, got "
                         f"{type(obj).__name__}{' (empty)' if isinstance(obj, Mapping) else ''}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise InputError(f"{source} is not a checkpoint: entries {_listing(bad)} are not named "
                         f"tensors")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        changed = True
        while changed:
            changed = False
            for prefix in _STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _align_prefix(state: dict[str, Tensor], model_keys: set[str]) -> dict[str, Tensor]:
    """Add or strip the NormalizedModel ``backbone.`` prefix, whichever matches more model keys."""
    candidates = [state,
                  {_WRAPPER_PREFIX + k: v for k, v in state.items()},
                  {k[len(_WRAPPER_PREFIX):] if k.startswith(_WRAPPER_PREFIX) else k: v
                   for k, v in state.items()}]
    return max(candidates, key=lambda c: len(model_keys.intersection(c)))


def _head_keys(model: nn.Module) -> set[str]:
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        return set()
    return {f"{last}.{p}" for p, _ in model.get_submodule(last).named_parameters(recurse=False)}


def _resample_vit(model: nn.Module, state: dict[str, Tensor], target: dict[str, Tensor]
                  ) -> list[str]:
    done = []
    for name, module in model.named_modules():
        if not isinstance(module, VisionTransformer):
            continue
        key = f"{name}.pos_embed" if name else "pos_embed"
        if key not in state or state[key].shape == target[key].shape:
            continue
        src, p = state[key], module.num_prefix_tokens
        n = src.shape[1] - p if src.ndim == 3 else -1
        side = math.isqrt(n) if n > 0 else 0
        if src.ndim != 3 or src.shape[-1] != target[key].shape[-1] or side * side != n:
            continue  # reported as a shape mismatch
        state[key] = resample_pos_embed(src, module.grid_size, (side, side), p)
        done.append(key)
    return done


def load_pretrained(model: nn.Module, path: str | PathLike, *, strict: bool = True,
                    drop_head: bool = False) -> LoadResult:
    """Load a local checkpoint file into ``model`` in place (for evaluation or fine-tuning).

    Parameters
    ----------
    model : nn.Module
        The model to fill, e.g. from :func:`~virolbi.models.create_model`.
    path : str or path-like
        A file written by ``torch.save``: a state dict or a checkpoint dict holding one under
        ``"model"``, ``"state_dict"`` or ``"model_state_dict"``. Read with ``weights_only=True``.
    strict : bool
        If True (default), every model tensor must come from the file and every file tensor must
        have a place in the model. Shapes must always match.
    drop_head : bool
        If True, skip the classifier (the model's last ``nn.Linear``) when its shape differs from
        the file's, leaving it freshly initialised: fine-tuning to another number of classes.

    Returns
    -------
    LoadResult
        ``missing``, ``unexpected``, ``dropped`` and ``resampled`` key lists.

    Raises
    ------
    InputError
        Missing or unreadable file, a file that holds no state dict, shape mismatches, or (strict)
        missing / unexpected tensors; the message lists the first offending keys.

    Examples
    --------
    >>> import tempfile, os
    >>> from virolbi.models import create_model
    >>> src = create_model("resnet18", 10, width=0.125)
    >>> path = os.path.join(tempfile.mkdtemp(), "r18.pt")
    >>> torch.save({"model": src.state_dict(), "epoch": 1}, path)
    >>> dst = create_model("resnet18", 100, width=0.125)
    >>> load_pretrained(dst, path, drop_head=True).dropped
    ['backbone.fc.weight', 'backbone.fc.bias']
    """
    from virolbi.io import load_torch_file

    p = Path(path)
    if not p.is_file():
        raise InputError(f"pretrained weights file not found: {p}")
    obj = load_torch_file(p, "checkpoint", "; save model.state_dict(), not the model object")
    state = extract_state_dict(obj, source=str(p))
    target = model.state_dict()
    state = _align_prefix(state, set(target))
    resampled = _resample_vit(model, state, target)

    heads = _head_keys(model) if drop_head else set()
    dropped = [k for k in target if k in heads and k in state and state[k].shape != target[k].shape]
    for k in dropped:
        del state[k]
    mismatched = [f"{k} (file {tuple(state[k].shape)} vs model {tuple(target[k].shape)})"
                  for k in target if k in state and state[k].shape != target[k].shape]
    if mismatched:
        hint = "" if drop_head else "; pass drop_head=True to fine-tune to another class count"
        raise InputError(f"{p} does not fit the model: {len(mismatched)} tensor(s) have different "
                         f"shapes: {_listing(mismatched)}{hint}")
    missing = [k for k in target if k not in state and k not in dropped
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    if strict and missing:
        raise InputError(f"{p} lacks {len(missing)} of the model's tensors: {_listing(missing)} "
                         f"(wrong architecture? use strict=False to load a part)")
    if strict and unexpected:
        raise InputError(f"{p} has {len(unexpected)} tensor(s) the model lacks: "
                         f"{_listing(unexpected)} (wrong architecture? use strict=False to ignore)")
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    return LoadResult(missing, unexpected, dropped, resampled)
