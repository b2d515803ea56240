"""The evaluation's results: one :class:`Row` per (perturbation, level, threat model,
preprocessing), gathered in :class:`Results` with the sanity checks and the run's metadata."""

from __future__ import annotations

import dataclasses
from typing import Any

from virolbi.attacks import SanityCheck
from virolbi.errors import InputError
from virolbi.evaluate.suites import NO_THREAT

__all__ = ["NO_PREPROCESSING", "Row", "Results"]

#: Preprocessing key of the rows without test-time preprocessing.
NO_PREPROCESSING = "none"

_Key = tuple[str, str, str, str]


@dataclasses.dataclass
class Row:
    """One measured accuracy.

    Attributes
    ----------
    perturbation, level, threat_model, preprocessing : str
        The key (see :mod:`virolbi.evaluate.suites`); ``preprocessing`` is ``"none"`` or the
        preprocessor's name, ``threat_model`` is ``"none"`` for rows that are not adversarial.
    accuracy : float
        ``correct / n`` in [0, 1].
    correct, n : int
        Correctly classified images and images evaluated.
    group : str
        The paper table the row belongs to (``clean``, ``noise``, ``adversarial``, ``lowres``,
        ``frequency``) or ``sanity``.
    value : float or None
        The level as a number (severity, ε, scale, radius).
    params : dict
        Anything else that defines the row (attack steps and step size, ...).
    """

    perturbation: str
    level: str
    threat_model: str
    preprocessing: str
    accuracy: float
    correct: int
    n: int
    group: str
    value: float | None = None
    params: dict = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> _Key:
        return (self.perturbation, self.level, self.threat_model, self.preprocessing)


@dataclasses.dataclass
class Results:
    """What :func:`evaluate` returns: tidy rows, sanity checks and run metadata.

    ``results[perturbation, level, threat_model, preprocessing]`` gives the :class:`Row`;
    :meth:`accuracy` the number. :meth:`to_dict` / :meth:`from_dict` round-trip through JSON.
    """

    rows: list[Row]
    sanity: list[SanityCheck]
    meta: dict

    def __getitem__(self, key: _Key) -> Row:
        for row in self.rows:
            if row.key == tuple(key):
                return row
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return any(row.key == key for row in self.rows)

    def accuracy(self, perturbation: str, level: str = "-", threat_model: str = NO_THREAT,
                 preprocessing: str = NO_PREPROCESSING) -> float:
        """The accuracy of one row; ``KeyError`` if it was not evaluated."""
        return self[perturbation, level, threat_model, preprocessing].accuracy

    @property
    def preprocessings(self) -> list[str]:
        """The preprocessing keys present, ``"none"`` first."""
        seen = [NO_PREPROCESSING] if any(r.preprocessing == NO_PREPROCESSING for r in self.rows) else []
        for r in self.rows:
            if r.preprocessing not in seen:
                seen.append(r.preprocessing)
        return seen

    def select(self, **where: Any) -> list[Row]:
        """Rows whose attributes equal the given values, e.g. ``select(group="noise")``."""
        return [r for r in self.rows if all(getattr(r, k) == v for k, v in where.items())]

    def to_dict(self) -> dict:
        """A JSON-ready dict: ``{"meta": ..., "rows": [...], "sanity": [...]}``."""
        return {"meta": self.meta, "rows": [dataclasses.asdict(r) for r in self.rows],
                "sanity": [s.to_dict() for s in self.sanity]}

    @classmethod
    def from_dict(cls, data: Any) -> "Results":
        """Inverse of :meth:`to_dict`; raises :class:`InputError` on a malformed dict."""
        if not isinstance(data, dict) or not {"meta", "rows", "sanity"} <= set(data):
            raise InputError("results must be a dict with keys 'meta', 'rows' and 'sanity', got "
                             f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
        try:
            rows = [Row(**r) for r in data["rows"]]
            sanity = [SanityCheck(**s) for s in data["sanity"]]
        except TypeError as exc:
            raise InputError(f"malformed results row: {exc}") from None
        return cls(rows=rows, sanity=sanity, meta=dict(data["meta"]))


# ----------------------------------------------------------------------------------------- inputs
