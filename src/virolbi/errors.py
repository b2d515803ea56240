"""The one exception type for bad user input.

Every check at the public boundary raises :class:`InputError`. It subclasses :class:`ValueError`, so
callers that catch ``ValueError`` keep working; the command line turns it into one line on stderr and
exit code 2 (see :mod:`virolbi.cli`).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a wrong shape, a NaN, an impossible parameter, an unreadable file."""
