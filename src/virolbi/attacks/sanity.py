r"""Sanity checks of an adversarial evaluation, computed from its accuracy curves (SPEC §3).

An attack that is implemented or aimed wrongly (gradient masking, a preprocess that breaks the
gradient, a wrong ε scale) shows up in simple curves (Carlini et al., 2019, §5):

1. :func:`check_accuracy_falls` — accuracy does not rise as ε grows (within a tolerance for noise),
   and it ends lower than it started;
2. :func:`check_large_eps_near_zero` — at a very large ε (e.g. 0.5 or 1 on [0, 1] pixels, where the
   ε-ball covers most of the image space) accuracy is near zero;
3. :func:`check_more_steps_not_better` — more PGD steps never raise accuracy by more than noise.

Each check returns a :class:`SanityCheck` record (name, passed, detail) that the evaluation report
shows; :func:`run_sanity_checks` runs all three.

References
----------
N. Carlini, A. Athalye, N. Papernot, W. Brendel, J. Rauber, D. Tsipras, I. Goodfellow, A. Madry,
A. Kurakin, "On Evaluating Adversarial Robustness", arXiv:1902.06705, 2019.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from virolbi.checks import check_in_range
from virolbi.errors import InputError

__all__ = [
    "SanityCheck",
    "check_accuracy_falls",
    "check_large_eps_near_zero",
    "check_more_steps_not_better",
    "noise_tolerance",
    "run_sanity_checks",
]

DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class SanityCheck:
    """One named pass/fail record for the report."""

    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def noise_tolerance(n: int, z: float = 2.0) -> float:
    r"""``z`` standard errors of an accuracy measured on ``n`` images, at its worst case p = 1/2:
    :math:`z \sqrt{1/(4n)}` (0.063 for n = 1000 at z = 2).

    Examples
    --------
    >>> round(noise_tolerance(100), 3)
    0.1
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be an integer >= 1 (number of evaluated images), got {n!r}")
    return z * math.sqrt(0.25 / n)


def _curve(points: Any, x_name: str, *, integer: bool = False) -> list[tuple[float, float]]:
    """Validate ``[(x, accuracy), ...]`` and return it sorted by ``x``."""
    try:
        items = [tuple(p) for p in points]
    except TypeError:
        raise InputError(f"curve must be a sequence of ({x_name}, accuracy) pairs, "
                         f"got {points!r}") from None
    if not items:
        raise InputError(f"curve of ({x_name}, accuracy) pairs must not be empty")
    out = []
    for p in items:
        if len(p) != 2:
            raise InputError(f"curve must be a sequence of ({x_name}, accuracy) pairs, got {p!r}")
        if integer:
            try:
                x = float(p[0])
            except (TypeError, ValueError):
                x = math.nan
            if isinstance(p[0], bool) or not x.is_integer() or x < 1:
                raise InputError(f"{x_name} must be integers >= 1, got {p[0]!r}")
        else:
            x = check_in_range(p[0], x_name, 0.0, math.inf)
        out.append((x, check_in_range(p[1], "accuracy", 0.0, 1.0)))
    return sorted(out)


def _tolerance(tolerance: float | None, n: int | None) -> float:
    if tolerance is not None:
        return check_in_range(tolerance, "tolerance", 0.0, 1.0)
    return noise_tolerance(n) if n is not None else DEFAULT_TOLERANCE


def _fmt(curve: Iterable[tuple[float, float]]) -> str:
    return ", ".join(f"{x:g}: {a:.3f}" for x, a in curve)


def check_accuracy_falls(eps_curve: Iterable[tuple[float, float]], *, tolerance: float | None = None,
                         n: int | None = None) -> SanityCheck:
    r"""Accuracy falls as ε grows.

    Passes when, sorted by ε, no accuracy exceeds an earlier (smaller-ε) one by more than
    ``tolerance``, and the last is below the first (or the first is already within ``tolerance``
    of zero).

    Parameters
    ----------
    eps_curve : sequence of (eps, accuracy)
        ε >= 0, accuracy in [0, 1]; any order.
    tolerance : float, optional
        Allowed rise (noise); default ``noise_tolerance(n)`` when ``n`` is given, else 0.02.
    n : int, optional
        Number of images behind each accuracy.

    Examples
    --------
    >>> check_accuracy_falls([(0, 0.9), (8 / 255, 0.4), (16 / 255, 0.1)]).passed
    True
    >>> check_accuracy_falls([(0, 0.9), (8 / 255, 0.95)]).passed
    False
    """
    curve = _curve(eps_curve, "eps")
    tol = _tolerance(tolerance, n)
    worst_rise = max((a - min(b for _, b in curve[:i])) for i, (_, a) in enumerate(curve) if i) \
        if len(curve) > 1 else 0.0
    monotone = worst_rise <= tol
    fell = curve[-1][1] < curve[0][1] or curve[0][1] <= tol
    passed = bool(monotone and fell and len(curve) > 1)
    why = "" if passed else (" (needs at least two eps values)" if len(curve) < 2 else
                            f" (largest rise {worst_rise:.3f} > tolerance)" if not monotone else
                            " (accuracy did not fall)")
    return SanityCheck("accuracy falls as eps grows", passed,
                       f"eps -> accuracy: {_fmt(curve)}; tolerance {tol:.3f}{why}")


def check_large_eps_near_zero(eps_curve: Iterable[tuple[float, float]], *, max_accuracy: float = 0.05,
                              min_eps: float = 0.25) -> SanityCheck:
    r"""At a very large ε accuracy is near zero.

    Takes the point with the largest ε; passes when that ε is at least ``min_eps`` and its accuracy
    at most ``max_accuracy``. A defence that keeps accuracy there is masking gradients (or the
    attack is broken): no classifier is robust when the ε-ball holds images of other classes.

    Parameters
    ----------
    eps_curve : sequence of (eps, accuracy)
        As in :func:`check_accuracy_falls`.
    max_accuracy : float, default 0.05
        Accuracy counted as "near zero"; raise it (e.g. to chance level) for a preprocess that
        maps every input to some image, where a random guess remains.
    min_eps : float, default 0.25
        The smallest ε counted as "very large".

    Examples
    --------
    >>> check_large_eps_near_zero([(8 / 255, 0.3), (0.5, 0.0)]).passed
    True
    >>> check_large_eps_near_zero([(8 / 255, 0.3), (0.5, 0.3)]).passed
    False
    """
    curve = _curve(eps_curve, "eps")
    max_accuracy = check_in_range(max_accuracy, "max_accuracy", 0.0, 1.0)
    min_eps = check_in_range(min_eps, "min_eps", 0.0, 1.0)
    eps, acc = curve[-1]
    passed = bool(eps >= min_eps and acc <= max_accuracy)
    why = "" if passed else (f" (largest eps {eps:g} < {min_eps:g}: not very large)" if eps < min_eps
                            else " (accuracy too high)")
    return SanityCheck("accuracy near zero at very large eps", passed,
                       f"accuracy {acc:.3f} at eps {eps:g}; threshold {max_accuracy:.3f}{why}")


def check_more_steps_not_better(steps_curve: Iterable[tuple[int, float]], *,
                                tolerance: float | None = None, n: int | None = None) -> SanityCheck:
    r"""More PGD steps never raise accuracy by more than noise.

    Passes when, sorted by the number of steps, no accuracy exceeds an earlier (fewer-steps) one by
    more than ``tolerance`` (default as in :func:`check_accuracy_falls`).

    Examples
    --------
    >>> check_more_steps_not_better([(1, 0.5), (10, 0.31), (50, 0.3)]).passed
    True
    >>> check_more_steps_not_better([(1, 0.3), (10, 0.5)]).passed
    False
    """
    curve = _curve(steps_curve, "steps", integer=True)
    tol = _tolerance(tolerance, n)
    worst_rise = max((a - min(b for _, b in curve[:i])) for i, (_, a) in enumerate(curve) if i) \
        if len(curve) > 1 else 0.0
    passed = bool(worst_rise <= tol)
    why = "" if passed else f" (largest rise {worst_rise:.3f} > tolerance)"
    return SanityCheck("more PGD steps never raise accuracy", passed,
                       f"steps -> accuracy: {_fmt((int(s), a) for s, a in curve)}; "
                       f"tolerance {tol:.3f}{why}")


def run_sanity_checks(eps_curve: Iterable[tuple[float, float]],
                      steps_curve: Iterable[tuple[int, float]] | None = None, *,
                      tolerance: float | None = None, n: int | None = None,
                      max_accuracy: float = 0.05, min_eps: float = 0.25) -> list[SanityCheck]:
    """All three checks (the steps check only when ``steps_curve`` is given), in report order.

    Examples
    --------
    >>> checks = run_sanity_checks([(0, 0.9), (0.03, 0.2), (1.0, 0.0)], [(5, 0.21), (20, 0.2)])
    >>> [c.passed for c in checks]
    [True, True, True]
    """
    eps_curve = _curve(eps_curve, "eps")
    out = [check_accuracy_falls(eps_curve, tolerance=tolerance, n=n),
           check_large_eps_near_zero(eps_curve, max_accuracy=max_accuracy, min_eps=min_eps)]
    if steps_curve is not None:
        out.append(check_more_steps_not_better(steps_curve, tolerance=tolerance, n=n))
    return out
