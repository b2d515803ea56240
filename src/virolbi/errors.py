"""The exception type for bad user input, and the warning of levels a smoothing run could not reach.

Every check at the public boundary raises :class:`InputError`. It subclasses :class:`ValueError`, so
callers that catch ``ValueError`` keep working; the command line turns it into one line on stderr and
exit code 2 (see :mod:`virolbi.cli`).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a wrong shape, a NaN, an impossible parameter, an unreadable file."""


class UnreachedLevelWarning(UserWarning):
    """Some images stopped before a requested sparsity level (flat regions, or ``max_iter``), or
    jumped over it (a step too large for the image).

    Raised once per smoothing call; ``records`` holds one :class:`UnreachedLevel` per (image, level),
    the same objects as :attr:`virolbi.smoother.SmoothResult.warnings`."""

    def __init__(self, records) -> None:
        self.records = list(records)
        levels = ", ".join(f"{lv:g}" for lv in sorted({r.level for r in self.records}))
        # The text does not carry counts, so Python's default filter shows it once per place.
        super().__init__(f"some images did not reach sparsity level {levels}: each was recorded "
                         f"where it stopped (this warning's .records, SmoothResult.warnings)")


def warn_unreached(records) -> None:
    """Raise one :class:`UnreachedLevelWarning` for ``records``, attributed to the first caller
    outside the virolbi package (so the user sees their own line, as with a direct call)."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2  # stacklevel 2: our caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(UnreachedLevelWarning(records), stacklevel=level)


class UnreachedLevel:
    """One (image, level) an LBI run could not reach: where it stopped and why."""

    __slots__ = ("image", "level", "sparsity", "iterations", "reason")

    def __init__(self, image: int, level: float, sparsity: float, iterations: int, reason: str) -> None:
        self.image, self.level, self.sparsity = image, level, sparsity
        self.iterations, self.reason = iterations, reason

    def message(self) -> str:
        """The line without the image index."""
        return (f"sparsity {self.level:g} not reached; stopped at {self.sparsity:.4f} after "
                f"{self.iterations} iterations ({self.reason})")

    def __str__(self) -> str:
        return f"image {self.image}: {self.message()}"

    def __repr__(self) -> str:
        return f"UnreachedLevel({self})"
