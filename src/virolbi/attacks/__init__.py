"""Adversarial attacks and threat models for the robustness evaluation (SPEC §3, paper §4.2).

- :mod:`~virolbi.attacks.fgsm`, :mod:`~virolbi.attacks.pgd`: L∞ FGSM and PGD (random start,
  restarts) on [0, 1] pixels, as functions (:func:`fgsm`, :func:`pgd`) and attack objects
  (:class:`FGSM`, :class:`PGD`) that put the model in eval mode and restore it afterwards.
- :mod:`~virolbi.attacks.bpda`: :func:`bpda` / :class:`BPDA`, attacking through a
  non-differentiable preprocess such as :class:`virolbi.ViRoLBI` (identity or fixed-partition
  averaging backward).
- :mod:`~virolbi.attacks.eot`: gradients averaged over the randomness of a model (EOT).
- :mod:`~virolbi.attacks.threat`: :class:`ThreatModel` (classifier alone; the paper's "attack the
  classifier, then preprocess"; adaptive BPDA), :func:`attack_with_threat_model`,
  :func:`robust_accuracy`.
- :mod:`~virolbi.attacks.apgd`, :mod:`~virolbi.attacks.square`: ART's APGD (CE, DLR, CW margin;
  untargeted or targeted) and Square, in both ε conventions (``pip install virolbi[attacks]``).
- :mod:`~virolbi.attacks.autoattack`: AutoAttack's versions as data, the per-image worst case and
  the breakdown.
- :mod:`~virolbi.attacks.sanity`: the sanity checks shown in every adversarial report.

Images are float ``(B, C, H, W)`` in [0, 1]; normalisation lives inside the model.
"""

from virolbi.attacks.apgd import apgd
from virolbi.attacks.autoattack import AUTOATTACK_VERSIONS, AutoAttackSettings, worst_case
from virolbi.attacks.base import Attack, eval_mode, project_linf
from virolbi.attacks.bpda import BACKWARD_MODES, BPDA, bpda
from virolbi.attacks.eot import eot_loss, eot_loss_and_gradient
from virolbi.attacks.fgsm import FGSM, fgsm
from virolbi.attacks.pgd import PGD, pgd
from virolbi.attacks.sanity import (
    SanityCheck,
    check_accuracy_falls,
    check_large_eps_near_zero,
    check_more_steps_not_better,
    noise_tolerance,
    run_sanity_checks,
)
from virolbi.attacks.threat import ThreatModel, attack_with_threat_model, predict, robust_accuracy

__all__ = [
    "AUTOATTACK_VERSIONS",
    "AutoAttackSettings",
    "BACKWARD_MODES",
    "BPDA",
    "FGSM",
    "PGD",
    "Attack",
    "SanityCheck",
    "ThreatModel",
    "apgd",
    "attack_with_threat_model",
    "bpda",
    "check_accuracy_falls",
    "check_large_eps_near_zero",
    "check_more_steps_not_better",
    "eot_loss",
    "eot_loss_and_gradient",
    "eval_mode",
    "fgsm",
    "noise_tolerance",
    "pgd",
    "predict",
    "project_linf",
    "robust_accuracy",
    "run_sanity_checks",
    "worst_case",
]
