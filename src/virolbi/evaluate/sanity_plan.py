"""The extra attack runs of the sanity checks (Carlini et al. 2019, §5) and the checks on their rows:
PGD at a very large ε, and PGD at 8/255 with fewer and more steps, all on the classifier alone."""

from __future__ import annotations

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

__all__ = ["LARGE_EPS", "sanity_specs", "sanity_checks"]

#: The "very large" ε of the sanity check (on [0, 1] pixels): PGD there should leave ~0 accuracy.
LARGE_EPS = 128 / 255

_CLASSIFIER = ThreatModel.CLASSIFIER.value


def sanity_specs(specs: Sequence[PerturbationSpec], pgd_steps: int
                  ) -> tuple[list[tuple[PerturbationSpec, int]], dict]:
    """Extra attack runs the sanity checks need (classifier alone, no preprocessing): PGD at
    ε = :data:`LARGE_EPS`, and PGD at 8/255 with fewer and more steps (``pgd-<steps>``)."""
    attacks = {(s.perturbation, s.level) for s in specs
               if s.group == "adversarial" and s.perturbation in ("fgsm", "pgd")}
    if not attacks:
        return [], {}
    large = PerturbationSpec("pgd", level_label(LARGE_EPS), LARGE_EPS, "sanity", (_CLASSIFIER,))
    extra = [(large, pgd_steps)]
    fewer = max(1, pgd_steps // 2)
    more = pgd_steps if pgd_steps > fewer else 2
    for k in (fewer, more):
        if not (k == pgd_steps and ("pgd", "8/255") in attacks):
            extra.append((PerturbationSpec(f"pgd-{k}", "8/255", 8 / 255, "sanity", (_CLASSIFIER,)), k))
    return extra, {"large_eps": large.level, "steps": (fewer, more)}


def sanity_checks(rows: dict[_Key, Row], plan: dict, pgd_steps: int, n: int) -> list[SanityCheck]:
    """The three checks of :mod:`virolbi.attacks.sanity` on the rows without preprocessing."""
    if not plan:
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
    fewer, more = plan["steps"]
    by_steps = [(k, acc("pgd", "8/255") if k == pgd_steps and acc(f"pgd-{k}", "8/255") is None
                 else acc(f"pgd-{k}", "8/255")) for k in (fewer, more)]
    if all(a is not None for _, a in by_steps):
        c = check_more_steps_not_better(by_steps, n=n)
        checks.append(SanityCheck(f"PGD at 8/255: {c.name}", c.passed, c.detail))
    return checks
