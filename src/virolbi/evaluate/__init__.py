"""Robustness evaluation (SPEC §3): named suites, the harness and its report writers.

- :func:`evaluate`: a pure function from (classifier, test set, suite) to :class:`Results`, rows keyed
  ``(perturbation, level, threat_model, preprocessing)`` with accuracy and ``n``.
- :func:`get_suite` / :data:`SUITES`: the perturbations of the ``paper``, ``quick``, ``noise``,
  ``adversarial``, ``lowres`` and ``frequency`` suites.
- :func:`write_report`: ``results.json``, ``results.md`` (the paper's Tables 1-4 layout, with
  a sanity-check section) and ``results.png``.
"""

from virolbi.evaluate.harness import (
    LARGE_EPS,
    NO_PREPROCESSING,
    Results,
    Row,
    evaluate,
    run_metadata,
)
from virolbi.evaluate.report import (
    load_results,
    plot_results,
    save_results,
    to_markdown,
    write_report,
)
from virolbi.evaluate.suites import (
    ADVERSARIAL_THREAT_MODELS,
    NO_THREAT,
    NOISES,
    SUITES,
    THREAT_MODEL_LABELS,
    PerturbationSpec,
    get_suite,
)

__all__ = [
    "ADVERSARIAL_THREAT_MODELS",
    "LARGE_EPS",
    "NOISES",
    "NO_PREPROCESSING",
    "NO_THREAT",
    "PerturbationSpec",
    "Results",
    "Row",
    "SUITES",
    "THREAT_MODEL_LABELS",
    "evaluate",
    "get_suite",
    "load_results",
    "plot_results",
    "run_metadata",
    "save_results",
    "to_markdown",
    "write_report",
]
