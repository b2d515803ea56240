r"""AutoAttack (Croce & Hein, ICML 2020) assembled from ART's attacks: the components as data, the
per-image worst case over them and the per-attack breakdown.

=============  ===============================================================================
version        components, in order (each an ART attack, :mod:`virolbi.attacks.apgd`,
               :mod:`virolbi.attacks.square`)
=============  ===============================================================================
``standard``   APGD-CE (untargeted, cross-entropy); APGD-T (ART's DLR loss, 9 target classes);
               APGD-T with the CW margin loss (9 targets) **in place of FAB-T**, which ART 1.20.1
               does not implement; Square (5 000 queries)
``rand``       for randomised models (PNI): APGD-CE and APGD-DLR (untargeted), every loss and
               gradient averaged over EOT draws (AutoAttack: 20)
=============  ===============================================================================

An image counts as robust only if *every* attack fails on it (:func:`worst_case`). Run as a
cascade (AutoAttack's own order, the default), each attack only sees the images every earlier
one failed on, and attack *k*'s row is the robust accuracy after attacks 1…k
(:func:`run_components`); run independently, every attack sees every correctly classified image
and its row is its own accuracy. Both give the same worst case.

References
----------
F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (AutoAttack; versions ``standard`` and ``rand``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from virolbi.attacks.apgd import apgd
from virolbi.attacks.square import square_attack
from virolbi.errors import InputError

__all__ = ["AUTOATTACK_VERSIONS", "AutoAttackSettings", "Component", "component_attack",
           "cumulative", "run_components", "worst_case"]


@dataclasses.dataclass(frozen=True)
class Component:
    """One attack of an AutoAttack version.

    Attributes
    ----------
    name : str
        Row name (``apgd-ce``, ``apgd-t``, ...).
    kind : str
        ``"apgd"`` or ``"square"``.
    loss : str
        APGD loss (``ce``, ``dlr``, ``margin``; :data:`virolbi.attacks.apgd.APGD_LOSSES`); ``""``
        for Square.
    targeted : bool
        Run towards the most likely wrong classes (``AutoAttackSettings.targets`` of them).
    source : str
        What implements it, for reports.
    """

    name: str
    kind: str
    loss: str
    targeted: bool
    source: str


_ART_APGD = "ART AutoProjectedGradientDescent"

#: The components of each version (AutoAttack's, with the FAB-T substitute stated).
AUTOATTACK_VERSIONS: dict[str, tuple[Component, ...]] = {
    "standard": (
        Component("apgd-ce", "apgd", "ce", False, f"{_ART_APGD}, cross-entropy"),
        Component("apgd-t", "apgd", "dlr", True, f"{_ART_APGD}, difference_logits_ratio, targeted"),
        Component("apgd-t-margin", "apgd", "margin", True,
                  f"{_ART_APGD}, CW margin loss, targeted: in place of FAB-T (not in ART 1.20.1)"),
        Component("square", "square", "", False, "ART SquareAttack, L-inf, p_init 0.8"),
    ),
    "rand": (
        Component("apgd-ce", "apgd", "ce", False, f"{_ART_APGD}, cross-entropy, EOT"),
        Component("apgd-dlr", "apgd", "dlr", False, f"{_ART_APGD}, difference_logits_ratio, EOT"),
    ),
}


@dataclasses.dataclass(frozen=True)
class AutoAttackSettings:
    """The budget of an AutoAttack run (AutoAttack's standard values by default).

    Attributes
    ----------
    version : str
        ``"standard"`` or ``"rand"`` (:data:`AUTOATTACK_VERSIONS`).
    iterations : int
        APGD iterations per run (100).
    queries : int
        Square queries (5 000).
    targets : int
        Target classes of the targeted runs (9; at most classes - 1, fewer are used then).
    restarts : int
        Random starts per APGD run (1).
    eot_samples : int
        EOT draws of the ``rand`` version (20) when the evaluation gives none above 1.
    independent : bool
        Every attack on every image (its own accuracy) instead of the cascade.
    """

    version: str = "standard"
    iterations: int = 100
    queries: int = 5000
    targets: int = 9
    restarts: int = 1
    eot_samples: int = 20
    independent: bool = False

    def __post_init__(self) -> None:
        if self.version not in AUTOATTACK_VERSIONS:
            raise InputError(f"AutoAttack version must be one of {', '.join(AUTOATTACK_VERSIONS)}, "
                             f"got {self.version!r}")
        for name in ("iterations", "queries", "targets", "restarts", "eot_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"AutoAttack {name} must be an integer >= 1, got {value!r}")

    @property
    def components(self) -> tuple[Component, ...]:
        return AUTOATTACK_VERSIONS[self.version]

    def eot_for(self, eot_samples: int) -> int:
        """EOT draws used: the evaluation's when above 1, else the ``rand`` version's own."""
        return eot_samples if eot_samples > 1 or self.version != "rand" else self.eot_samples

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["components"] = {c.name: c.source for c in self.components}
        return out


def component_attack(component: Component, settings: AutoAttackSettings, eps: Any, seed: int
                     ) -> Callable[..., Tensor]:
    """``attack(target, x, y, eot_samples=1) -> x_adv`` for one component, as
    :func:`virolbi.attacks.attack_with_threat_model` calls it. Square, which only queries, also
    takes ``preprocess=P`` to query ``target ∘ P``; a deterministic target's logits are cached per
    image (one forward per new image)."""
    if component.kind == "square":
        return lambda target, x, y, eot_samples=1, preprocess=None: square_attack(
            target, x, y, eps, settings.queries, seed=seed, preprocess=preprocess,
            cache_logits=eot_samples == 1)

    def run(target: Any, x: Tensor, y: Tensor, eot_samples: int = 1) -> Tensor:
        k = settings.targets if component.targeted else 0
        if k:
            with torch.no_grad():
                k = min(k, int(target(x[:1]).shape[1]) - 1)
        return apgd(target, x, y, eps, loss=component.loss, targets=k,
                    iterations=settings.iterations, restarts=settings.restarts,
                    eot_samples=eot_samples, seed=seed)
    return run


def run_components(names: Sequence[str], attack: Callable[[str, Tensor, Tensor], Tensor],
                   judge: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
                   independent: bool = False) -> tuple[dict[str, Tensor], Tensor]:
    """Run the attacks ``names`` on a batch and record, per image, whether it is still classified
    correctly.

    Parameters
    ----------
    names : sequence of str
        The attacks, in order.
    attack : callable
        ``attack(name, x_sub, y_sub) -> x_adv``.
    judge : callable
        ``judge(x_sub, y_sub) -> bool (b,)``: the defended model classifies correctly.
    x, y : Tensor
        The batch.
    independent : bool
        False (cascade): attack *k* only on images every earlier attack failed on, and its
        outcome is "robust after attacks 1…k". True: every attack on every correctly classified
        image, its outcome its own.

    Returns
    -------
    outcomes : dict of str to Tensor
        ``bool (B,)`` per attack (a clean error is False everywhere).
    x_adv : Tensor
        Per image the first successful adversarial image, else the last one tried.
    """
    clean = judge(x, y)
    alive, x_adv = clean.clone(), x.clone()
    broken = torch.zeros_like(clean)
    outcomes: dict[str, Tensor] = {}
    for name in names:
        idx = (clean if independent else alive).nonzero()[:, 0]
        result = torch.zeros_like(clean)
        if idx.numel():
            adv = attack(name, x[idx], y[idx])
            result[idx] = judge(adv, y[idx])
            keep = ~broken[idx]
            x_adv[idx[keep]] = adv[keep]
        outcomes[name] = result
        broken |= clean & ~result
        alive &= result
    return outcomes, x_adv


def worst_case(outcomes: dict[str, Tensor]) -> Tensor:
    """Robust per image only where every attack failed (logical and over the attacks).

    Examples
    --------
    >>> t = torch.tensor
    >>> worst_case({"a": t([True, True, False]), "b": t([True, False, True])})
    tensor([ True, False, False])
    """
    if not outcomes:
        raise InputError("worst case over no attacks")
    out = None
    for robust in outcomes.values():
        out = robust.clone() if out is None else out & robust
    return out


def cumulative(outcomes: dict[str, Tensor]) -> dict[str, Tensor]:
    """Robust after each attack and all before it (the cascade's breakdown from independent runs).

    Examples
    --------
    >>> t = torch.tensor
    >>> cumulative({"a": t([True, True, False]), "b": t([False, True, True])})["b"]
    tensor([False,  True, False])
    """
    out, running = {}, None
    for name, robust in outcomes.items():
        running = robust.clone() if running is None else running & robust
        out[name] = running
    return out
