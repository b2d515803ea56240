"""A restricted unpickler for the CIFAR python-pickle release.

The official CIFAR batches are Python 2 pickles of a ``dict`` holding ``str`` keys, ``list``\\ s of
``int`` labels, ``str`` names and one NumPy ``uint8`` array. Loading them with :func:`pickle.load`
would run whatever callable a tampered file names; :func:`safe_unpickle` resolves only the three
globals a NumPy array needs and refuses every other one with :class:`~virolbi.errors.InputError`.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from virolbi.errors import InputError

__all__ = ["safe_unpickle"]


def _reconstruct() -> Any:
    core = getattr(np, "_core", None)  # NumPy >= 2; ``numpy.core`` warns there
    if core is not None:
        return core.multiarray._reconstruct
    return np.core.multiarray._reconstruct  # pragma: no cover - NumPy 1.x


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        make = _ALLOWED.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden")
        return make()


def safe_unpickle(data: bytes, source: str = "pickle") -> Any:
    """Unpickle ``data`` allowing only plain containers and NumPy arrays.

    Python 2 strings are decoded as latin-1 (as torchvision does), so the keys of a CIFAR batch
    come back as ``str``. Any other global (a function, a class) is refused.

    Parameters
    ----------
    data : bytes
        The pickle stream.
    source : str
        Name used in error messages (the file or archive member).

    Raises
    ------
    InputError
        If the stream names a forbidden global or is not a valid pickle.

    Examples
    --------
    >>> import pickle, numpy as np
    >>> safe_unpickle(pickle.dumps({"labels": [1, 2], "data": np.zeros(2, np.uint8)}, protocol=4))
    {'labels': [1, 2], 'data': array([0, 0], dtype=uint8)}
    >>> safe_unpickle(pickle.dumps(print))
    Traceback (most recent call last):
    ...
    virolbi.errors.InputError: pickle: refused to load: global 'builtins.print' is forbidden (only plain data and NumPy arrays are allowed)
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "forbidden" in msg:
            raise InputError(f"{source}: refused to load: {msg} (only plain data and NumPy arrays "
                             "are allowed)") from None
        raise InputError(f"{source} is not a valid pickle file: {msg}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, UnicodeDecodeError) as exc:
        raise InputError(f"{source} is not a valid pickle file (truncated or corrupt): "
                         f"{type(exc).__name__}: {exc}") from None
