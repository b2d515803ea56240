r"""Learning-rate schedules of the trainer, as a factor of the base rate per optimiser step.

- ``cosine`` (the seeds' recipe, paper §4): :math:`f + (1-f)\,\tfrac12(1+\cos(\pi t))`, ``t`` the
  fraction of the post-warm-up steps done, ``f`` = ``final_lr_factor`` (0 by default).
- ``linear`` (airbench): :math:`1 - (1-f)\,t`, a straight decay to ``f`` (airbench94: 0.07).
- ``step``: multiplied by ``step_gamma`` at each milestone epoch.
- ``constant``.

All of them may start with a linear warm-up over ``warmup_epochs`` epochs or, when
``warmup_fraction`` is set, over that fraction of all steps (airbench94: ``int(0.23 · total)``),
from ``warmup_start_factor`` (airbench94: 0.2) to 1.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

__all__ = ["lr_factor", "warmup_steps"]


def warmup_steps(optim: Mapping[str, Any], steps_per_epoch: int) -> int:
    """Number of warm-up steps: ``int(warmup_fraction · total)`` if set, else whole epochs."""
    total = optim["epochs"] * steps_per_epoch
    if optim.get("warmup_fraction"):
        return int(optim["warmup_fraction"] * total)
    return optim["warmup_epochs"] * steps_per_epoch


def lr_factor(optim: Mapping[str, Any], steps_per_epoch: int) -> Callable[[int], float]:
    """The factor of the base learning rate at optimiser step ``step`` (0-based).

    During warm-up the factor rises linearly: from ``warmup_start_factor`` at step 0 when that
    is positive (airbench's ``s (1 - k/W) + k/W``), else as ``(k + 1)/W`` (never zero).

    Examples
    --------
    >>> o = {"epochs": 10, "scheduler": "linear", "warmup_epochs": 0, "warmup_fraction": 0.23,
    ...      "warmup_start_factor": 0.2, "final_lr_factor": 0.07, "step_milestones": [],
    ...      "step_gamma": 0.1}
    >>> f = lr_factor(o, 10)        # 100 steps, 23 of warm-up
    >>> round(f(0), 6), round(f(23), 6), round(f(100), 6)
    (0.2, 1.0, 0.07)
    >>> c = lr_factor(dict(o, scheduler="cosine", warmup_fraction=0, final_lr_factor=0.0), 10)
    >>> round(c(0), 6), round(c(50), 6)
    (1.0, 0.5)
    """
    total = optim["epochs"] * steps_per_epoch
    warm = warmup_steps(optim, steps_per_epoch)
    start = float(optim.get("warmup_start_factor") or 0.0)
    final = float(optim.get("final_lr_factor") or 0.0)
    milestones = [m * steps_per_epoch for m in optim["step_milestones"]]
    kind = optim["scheduler"]

    def factor(step: int) -> float:
        if step < warm:
            frac = step / warm if start > 0 else (step + 1) / warm
            return start + (1.0 - start) * frac
        t = min(1.0, (step - warm) / max(1, total - warm))
        if kind == "cosine":
            return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))
        if kind == "linear":
            return 1.0 - (1.0 - final) * t
        if kind == "step":
            return optim["step_gamma"] ** sum(step >= m for m in milestones)
        return 1.0

    return factor
