"""``python -m virolbi.cli ...``: the same as the ``virolbi`` console script."""

import sys

from virolbi.cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    sys.exit(main())
