r"""The ``autoattack`` suite's batches: AutoAttack (:mod:`virolbi.attacks.autoattack`) in every
threat model the defence can be attacked in, the per-image worst case and its breakdown, and the
transfer attack from an undefended base model (RobustBench's rule for preprocessing defences).

Rows written per threat model ``t`` and preprocessing ``p`` (all in group ``"adversarial"``):

- ``("autoattack", ε, t, p)``: the worst case, robust only where every attack failed;
- ``("autoattack:<attack>", ε, t, p)``: the breakdown, one row per component (cumulative in the
  cascade, the attack's own accuracy with ``independent``), and ``autoattack:transfer`` when a
  base model is given: the images crafted on the base model (APGD-CE then APGD-T on it, classifier
  alone) classified by the defence of ``t``. The transfer images count in the worst case.

Every row's ``params`` name the version, budget, ε convention and pixel radius.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor, nn

from virolbi.attacks import ThreatModel, attack_with_threat_model
from virolbi.attacks.autoattack import (AUTOATTACK_VERSIONS, AutoAttackSettings, component_attack,
                                        run_components, worst_case)
from virolbi.attacks.threat import RepeatedInputMemo
from virolbi.evaluate.results import NO_PREPROCESSING
from virolbi.evaluate.suites import PerturbationSpec

__all__ = ["TRANSFER", "Transfer", "component_specs", "evaluate_autoattack"]

#: Row name of the transfer attack among the breakdown rows.
TRANSFER = "transfer"


@dataclasses.dataclass
class Transfer:
    """The undefended base model the transfer images are crafted on, and its name for reports."""

    model: nn.Module
    name: str


def component_specs(spec: PerturbationSpec, settings: AutoAttackSettings,
                    transfer: bool) -> list[PerturbationSpec]:
    """The breakdown rows' specs of an ``autoattack`` spec (``autoattack:<attack>``)."""
    names = [c.name for c in AUTOATTACK_VERSIONS[settings.version]] + ([TRANSFER] if transfer else [])
    return [dataclasses.replace(spec, perturbation=f"{spec.perturbation}:{n}") for n in names]


def _judge(model: nn.Module, preprocess: Any, threat: ThreatModel) -> Callable[[Tensor, Tensor], Tensor]:
    def judge(x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            logits = model(preprocess(x)) if threat.uses_preprocess else model(x)
        return logits.argmax(dim=1) == y
    return judge


def craft_transfer(base: nn.Module, x: Tensor, y: Tensor, eps: Any, settings: AutoAttackSettings,
                   seeds: dict[str, int]) -> Tensor:
    """Adversarial images of the base model alone: APGD-CE, then APGD-T on what it left."""
    gradient = [c for c in AUTOATTACK_VERSIONS["standard"] if c.name in ("apgd-ce", "apgd-t")]
    attacks = {c.name: component_attack(c, settings, eps, seeds[c.name]) for c in gradient}
    _, x_adv = run_components(list(attacks), lambda n, xs, ys: attacks[n](base, xs, ys),
                              _judge(base, None, ThreatModel.CLASSIFIER), x, y)
    return x_adv


def _attacked_preprocess(preprocess: Any, threat: ThreatModel) -> Any:
    """BPDA calls the preprocess on the point APGD just scored: a deterministic one is memoised."""
    if threat.bpda_backward and getattr(preprocess, "deterministic", False):
        return RepeatedInputMemo(preprocess)
    return preprocess


def _threat_outcomes(model: nn.Module, preprocess: Any, threat: ThreatModel, x: Tensor, y: Tensor,
                     attacks: dict[str, Callable], settings: AutoAttackSettings, eot: int,
                     x_transfer: Tensor | None) -> dict[str, Tensor]:
    judge = _judge(model, preprocess, threat)
    pre = _attacked_preprocess(preprocess, threat)
    queries_only = {c.name for c in settings.components if c.kind == "square"}

    def attack(name: str, xs: Tensor, ys: Tensor) -> Tensor:
        if name in queries_only:   # no backward to choose: f(P(x)) through the per-image cache
            return attacks[name](model, xs, ys, eot_samples=eot,
                                 preprocess=preprocess if threat.uses_preprocess else None)
        return attack_with_threat_model(model, pre, xs, ys, attacks[name], threat, eot)

    outcomes, _ = run_components(list(attacks), attack, judge, x, y, settings.independent)
    if x_transfer is not None:
        outcomes[TRANSFER] = judge(x, y) & judge(x_transfer, y)
    return outcomes


def evaluate_autoattack(model: nn.Module, preprocess: Any, pname: str | None, spec: PerturbationSpec,
                        gen: torch.Generator, x: Tensor, y: Tensor, tally: Callable,
                        radius_of: Any, eot_samples: int, settings: AutoAttackSettings,
                        transfer: Transfer | None = None) -> None:
    """One batch of an ``autoattack`` spec in each of its threat models; ``tally(spec, threat,
    preprocessing, correct (B,) bool, params)`` records every row."""
    eps = radius_of(float(spec.value))
    eot = settings.eot_for(eot_samples)
    names = [c.name for c in settings.components]
    seeds = {n: int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) for n in names}
    attacks = {c.name: component_attack(c, settings, eps, seeds[c.name]) for c in settings.components}
    x_transfer = (craft_transfer(transfer.model, x, y, eps, settings, seeds) if transfer is not None
                  else None)
    base = {"attack": "autoattack", **settings.to_dict(), "eot_samples": eot,
            "breakdown": "alone" if settings.independent else "cumulative",
            **radius_of.params(float(spec.value))}
    if transfer is not None:
        base["transfer_from"] = transfer.name
    parts = component_specs(spec, settings, transfer is not None)
    for threat in map(ThreatModel.parse, spec.threat_models):
        if not threat.applies_to(preprocess):
            continue
        outcomes = _threat_outcomes(model, preprocess, threat, x, y, attacks, settings, eot,
                                    x_transfer)
        pre = pname if threat.uses_preprocess else NO_PREPROCESSING
        tally(spec, threat.value, pre, worst_case(outcomes), base)
        for i, (part, (name, robust)) in enumerate(zip(parts, outcomes.items())):
            tally(part, threat.value, pre, robust, {**base, "component": name, "order": i})
