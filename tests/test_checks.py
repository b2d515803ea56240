"""The shared input checks."""

import pytest

from virolbi.errors import InputError


def test_check_positive_int():
    import numpy as np

    from virolbi.checks import check_positive_int

    assert check_positive_int(3, "n") == 3 and check_positive_int(np.int64(2), "n") == 2
    for bad in (0, -1, 2.5, "3", True, None):
        with pytest.raises(InputError, match=r"n must be a positive integer, got"):
            check_positive_int(bad, "n")
