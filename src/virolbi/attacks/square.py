r"""Square attack (Andriushchenko et al., ECCV 2020): a gradient-free, score-based L∞ attack, the
check against obfuscated gradients for a defence that preprocesses its input.

It only queries the logits of the *whole pipeline* (preprocessing + classifier), so a smoother
that breaks or masks gradients gives it no advantage: where adaptive gradient attacks (BPDA, EOT)
and Square disagree, the lower accuracy is the pipeline's robustness.

The search is the maintained implementation of the adversarial-robustness-toolbox (ART,
``art.attacks.evasion.SquareAttack``; ``pip install virolbi[attacks]``). ART queries the pipeline
again for images it has not changed (every iteration re-predicts the whole batch and re-scores
the current iterate), so :class:`PerImageCache` remembers the preprocessed image of every input by
its bytes: each query costs one smoother run per *new* image, the rest are cache hits.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from virolbi.attacks.art_estimator import (art_classifier, from_art, import_art, numpy_seed,
                                           scaled_radius, to_art)
from virolbi.attacks.base import (check_count, check_eps, check_images, check_labels, check_model,
                                  eval_mode)
from virolbi.attacks.threat import _as_module
from virolbi.errors import InputError

__all__ = ["PerImageCache", "SQUARE_P_INIT", "square_attack", "square_params"]

#: Initial fraction of pixels changed per square: the Square paper's CIFAR-10 setting (ART's default).
SQUARE_P_INIT = 0.8


class PerImageCache(nn.Module):
    """``inner`` applied image by image with a least-recently-used cache keyed by the image bytes.

    Only for preprocessors that treat every image of a batch independently (ViRoLBI does: a batch
    equals the same images one by one).

    Parameters
    ----------
    inner : nn.Module
        The preprocessor.
    capacity : int
        Images kept (the oldest are dropped first).
    """

    def __init__(self, inner: nn.Module, capacity: int = 4096) -> None:
        super().__init__()
        self.inner, self.capacity = inner, int(capacity)
        self._cache: OrderedDict[bytes, Tensor] = OrderedDict()
        self.hits = self.misses = 0

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        arr = x.detach().cpu().contiguous()
        keys = [hashlib.sha1(arr[i].numpy().tobytes()).digest() for i in range(arr.shape[0])]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            done = self.inner(x[todo]).detach().cpu()
            for j, i in enumerate(todo):
                self._cache[keys[i]] = done[j]
        out = torch.stack([self._cache[k] for k in keys])
        for k in keys:
            self._cache.move_to_end(k)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return out.to(x.device)


def _pipeline(model: Any, preprocess: nn.Module | None, capacity: int, cache_logits: bool) -> Any:
    """``model ∘ preprocess`` with the per-image cache on the preprocess, or on the whole."""
    if cache_logits:
        inner = _as_module(model) if preprocess is None else nn.Sequential(preprocess, model)
        return PerImageCache(inner, capacity)
    return nn.Sequential(PerImageCache(preprocess, capacity), model) if preprocess is not None \
        else model


def square_params(queries: int) -> dict[str, Any]:
    """The settings a result row records for an L∞ Square run of ``queries`` queries."""
    return {"attack": "square (ART)", "queries": int(queries), "norm": "Linf", "p_init": SQUARE_P_INIT}


def square_attack(model: Any, x: Tensor, y: Tensor, eps: Any, queries: int = 1000, *,
                  p_init: float = SQUARE_P_INIT, seed: int = 0, batch_size: int = 250,
                  preprocess: nn.Module | None = None, progress: bool = False,
                  cache_logits: bool = False) -> Tensor:
    """L∞ Square attack on ``model ∘ preprocess`` (ART's implementation); adversarial images.

    Parameters
    ----------
    model : nn.Module
        Classifier on float images in [0, 1] (or the whole function a threat model attacks).
    x, y : Tensor
        Clean images ``(B, C, H, W)`` in [0, 1] and labels ``(B,)``.
    eps : float or sequence of float
        L∞ radius on [0, 1] pixels, or one per channel (the normalised ε convention, ε·σ_c: the
        search runs on rescaled channels so that ART's scalar ball is that box,
        :mod:`virolbi.attacks.art_estimator`).
    queries : int
        Iterations of the random search (ART ``max_iter``; one new query per image per iteration).
    p_init : float
        Initial fraction of pixels changed per square (0.8, the paper's CIFAR setting).
    seed : int
        Seeds ART's NumPy draws (the global NumPy state is restored afterwards).
    preprocess : nn.Module, optional
        Applied before the classifier inside the attacked pipeline (cached per image).
    cache_logits : bool, default False
        Cache the pipeline's logits per image instead (one forward per *new* image: ART scores
        the current iterate again every query). Only for a deterministic model.

    Returns
    -------
    Tensor
        ``‖x' − x‖∞ ≤ eps`` (per channel), values in [0, 1].
    """
    art = import_art()
    check_model(model)
    x = check_images(x)
    y = check_labels(y, x)
    eps = check_eps(eps)
    queries = check_count(queries, "queries")
    if min(x.shape[-2:]) < 8:
        raise InputError(f"the Square attack needs images of at least 8x8 pixels, got "
                         f"{tuple(x.shape[-2:])}")
    radius, scale = scaled_radius(eps, x)
    pipeline = _pipeline(model, preprocess, 8 * x.shape[0], cache_logits)
    with torch.no_grad(), eval_mode(pipeline):
        k = int(pipeline(x[:1]).shape[1])
    estimator = art_classifier(pipeline, x, scale, k)
    attack = art.attacks.evasion.SquareAttack(estimator, norm=np.inf, eps=radius, max_iter=queries,
                                              p_init=p_init, nb_restarts=1, batch_size=batch_size,
                                              verbose=progress)
    with eval_mode(pipeline), numpy_seed(seed):
        z = attack.generate(to_art(x, scale), y=y.cpu().numpy())
    return from_art(z, x, scale, eps)
