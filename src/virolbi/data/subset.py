"""One meaning of "a subset of N images" everywhere (``--limit``, ``data.train_subset``, the
reproduction's evaluation images): as even as possible over the classes, drawn with a seed."""

from __future__ import annotations

import numpy as np

__all__ = ["balanced_subset"]


def balanced_subset(targets: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` images, as even as possible over the classes, drawn with ``seed``; sorted.

    Examples
    --------
    >>> balanced_subset(np.array([0, 0, 0, 1, 1, 1]), 4).size
    4
    >>> np.bincount(np.array([0, 0, 0, 1, 1, 1])[balanced_subset(np.array([0, 0, 0, 1, 1, 1]), 4)]).tolist()
    [2, 2]
    """
    targets = np.asarray(targets)
    if n >= targets.size:
        return np.arange(targets.size)
    rng = np.random.default_rng(seed)
    classes = np.unique(targets)
    per_class = [rng.permutation(np.flatnonzero(targets == c)) for c in classes]
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for members in per_class:
            if depth < members.size and len(picked) < n:
                picked.append(int(members[depth]))
        depth += 1
    return np.sort(np.asarray(picked, dtype=np.int64))
