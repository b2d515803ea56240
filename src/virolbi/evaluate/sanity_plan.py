"""The extra attack runs of the sanity checks (Carlini et al. 2019, §5) and the checks on their rows:
PGD at a very large ε, and PGD at 8/255 with fewer and more steps, all on the classifier alone."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from virolbi.attacks import (
    SanityCheck,
    ThreatModel,
    check_accuracy_falls,
    check_large_eps_near_zero,
    check_more_steps_not_better,
)
from virolbi.evaluate.results import NO_PREPROCESSING, Row, _Key
from virolbi.evaluate.suites import NO_THREAT, PerturbationSpec, level_label

__all__ = ["LARGE_EPS", "SanityRun", "SanityPlan", "plan_sanity", "sanity_checks"]

#: The "very large" ε of the sanity check (on [0, 1] pixels): PGD there should leave ~0 accuracy.
LARGE_EPS = 128 / 255

_CLASSIFIER = ThreatModel.CLASSIFIER.value

#: The group of the rows the sanity runs write (not a perturbation group a suite may ask for).
SANITY_GROUP = "sanity"


@dataclasses.dataclass(frozen=True)
class SanityRun:
    """One extra PGD run of the sanity checks, on the classifier alone without preprocessing.

    Its row is keyed ``(perturbation, level, "classifier", "none")`` in group ``"sanity"``:
    ``perturbation`` is ``"pgd"`` for the large-ε run and ``"pgd-<steps>"`` for a step count.
    """

    perturbation: str
    value: float
    steps: int
    group: str = SANITY_GROUP

    @property
    def level(self) -> str:
        return level_label(self.value)


@dataclasses.dataclass(frozen=True)
class SanityPlan:
    """The runs the checks need and the two step counts compared at 8/255 (fewer, more)."""

    runs: tuple[SanityRun, ...]
    steps: tuple[int, int]


def plan_sanity(specs: Sequence[PerturbationSpec], pgd_steps: int) -> SanityPlan | None:
    """The extra runs for a suite with FGSM/PGD specs (None without): PGD at ε =
    :data:`LARGE_EPS`, and PGD at 8/255 with fewer and more steps than ``pgd_steps`` (a run is
    skipped when the suite's own PGD-``pgd_steps`` row at 8/255 already is that count)."""
    attacks = {(s.perturbation, s.level) for s in specs
               if s.group == "adversarial" and s.perturbation in ("fgsm", "pgd")}
    if not attacks:
        return None
    runs = [SanityRun("pgd", LARGE_EPS, pgd_steps)]
    fewer = max(1, pgd_steps // 2)
    more = pgd_steps if pgd_steps > fewer else 2
    for k in (fewer, more):
        if not (k == pgd_steps and ("pgd", "8/255") in attacks):
            runs.append(SanityRun(f"pgd-{k}", 8 / 255, k))
    return SanityPlan(tuple(runs), (fewer, more))


def sanity_checks(rows: dict[_Key, Row], plan: SanityPlan | None, pgd_steps: int, n: int
                  ) -> list[SanityCheck]:
    """The three checks of :mod:`virolbi.attacks.sanity` on the rows without preprocessing."""
    if plan is None:
        return []

    def acc(p: str, level: str) -> float | None:
        threat = NO_THREAT if p == "clean" else _CLASSIFIER
        row = rows.get((p, level, threat, NO_PREPROCESSING))
        return None if row is None else row.accuracy

    def curve(attack: str) -> list[tuple[float, float]]:
        pts = [(0.0, acc("clean", "-"))] + [
            (r.value, r.accuracy) for r in rows.values()
            if r.perturbation == attack and r.threat_model == _CLASSIFIER
            and r.preprocessing == NO_PREPROCESSING]
        return [(e, a) for e, a in pts if a is not None]

    checks = []
    for attack in ("fgsm", "pgd"):
        pts = curve(attack)
        if len(pts) >= 2:
            c = check_accuracy_falls(pts, n=n)
            checks.append(SanityCheck(f"{attack.upper()}: {c.name}", c.passed, c.detail))
    pts = curve("pgd")
    if pts:
        c = check_large_eps_near_zero(pts)
        checks.append(SanityCheck(f"PGD: {c.name}", c.passed, c.detail))
    fewer, more = plan.steps
    by_steps = [(k, acc("pgd", "8/255") if k == pgd_steps and acc(f"pgd-{k}", "8/255") is None
                 else acc(f"pgd-{k}", "8/255")) for k in (fewer, more)]
    if all(a is not None for _, a in by_steps):
        c = check_more_steps_not_better(by_steps, n=n)
        checks.append(SanityCheck(f"PGD at 8/255: {c.name}", c.passed, c.detail))
    return checks
