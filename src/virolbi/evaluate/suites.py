r"""Named evaluation suites: which perturbations the harness applies, at which levels (SPEC §3).

A suite is a tuple of :class:`PerturbationSpec`, one per (perturbation, level). The harness
(:func:`virolbi.evaluate.evaluate`) evaluates every spec without test-time preprocessing and, when a
preprocessor is given, with it; adversarial specs additionally carry the threat models to run.

=============  ==============================================================================
suite          contents (32×32 images; ImageNet-size images use the values in brackets)
=============  ==============================================================================
``paper``      clean; gaussian/shot/impulse/speckle noise at severities 1–5 [1, 2];
               FGSM and PGD at :math:`\varepsilon` = 8/255 and 16/255; low resolution 1/4 and
               1/2 [1/7 and 1/4]; low and high frequency, radius 6 [scaled with the image side]
``quick``      clean; gaussian noise severity 3; FGSM 8/255; low resolution 1/2; low/high frequency
``noise``      clean and the four noises at every severity
``adversarial``  clean, FGSM and PGD at 8/255 and 16/255
``lowres``     clean and the two low-resolution scales
``frequency``  clean and the low/high frequency components
``autoattack``   clean; AutoAttack (APGD-CE, APGD-T, margin APGD-T for FAB-T, Square; the
               ``rand`` version for random models) at 8/255, worst case per image and breakdown
               (:mod:`virolbi.evaluate.autoattack`)
=============  ==============================================================================

Threat models of the adversarial rows are those of :class:`virolbi.attacks.ThreatModel` (keys
are its values):

- ``classifier``: the attack sees the classifier alone, and the attacked images go to the
  classifier (the row *without* preprocessing).
- ``preprocess_after``: the attack sees the classifier alone; the attacked images are then
  preprocessed (the paper's Table 2 setting, *with* preprocessing). Not adaptive: optimistic.
- ``adaptive_bpda_identity`` / ``adaptive_bpda_partition``: adaptive attacks on preprocessing +
  classifier end to end, the non-differentiable smoother replaced in the backward pass by the
  identity, or by averaging over its fixed partition (Athalye et al. 2018): the honest numbers.

The ImageNet100 choices the papers leave open are fixed here: severities 1 and 2 of the CIFAR-C
noise parameters ("2 severities", paper §4.1), and the frequency radius scaled as
:math:`r = 6 \cdot \min(H, W) / 32`.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Sequence

from virolbi.attacks import ThreatModel
from virolbi.errors import InputError

__all__ = [
    "ADVERSARIAL_THREAT_MODELS",
    "AUTOATTACK",
    "AUTOATTACK_THREAT_MODELS",
    "NOISES",
    "NO_THREAT",
    "PerturbationSpec",
    "SUITES",
    "GAUSSIAN_SIGMA",
    "THREAT_MODEL_LABELS",
    "frequency_radius",
    "get_suite",
    "is_large_image",
    "level_label",
]

#: The four CIFAR-10-C noise corruptions of the paper's Table 1 (plus speckle, SPEC §3).
NOISES: tuple[str, ...] = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")

#: Threat-model key of rows that are not adversarial.
NO_THREAT = "none"

#: Threat models of adversarial rows (:class:`~virolbi.attacks.ThreatModel` values): the first
#: without preprocessing, the others with it.
ADVERSARIAL_THREAT_MODELS: tuple[str, ...] = tuple(t.value for t in ThreatModel)

#: Threat-model key of a gradient-free attack (Square) on the whole pipeline: no gradients, so no
#: BPDA choice to make; with preprocessing it queries f(P(x)).
GRADIENT_FREE = "gradient_free"

#: How each threat model is labelled in reports (:attr:`ThreatModel.label`).
THREAT_MODEL_LABELS: dict[str, str] = {NO_THREAT: "-", **{t.value: t.label for t in ThreatModel},
                                       GRADIENT_FREE: "gradient-free (queries only)"}

#: The named suites.
SUITES: tuple[str, ...] = ("paper", "quick", "noise", "adversarial", "lowres", "frequency", "tisode",
                           "square", "autoattack")

#: Perturbation name of the AutoAttack spec (its breakdown rows are ``autoattack:<attack>``).
AUTOATTACK = "autoattack"

#: Threat models of the AutoAttack spec: the classifier alone, and the whole pipeline attacked end
#: to end (BPDA through a non-differentiable preprocess, the exact gradient through a
#: differentiable one); those the preprocess cannot be attacked in are skipped.
AUTOATTACK_THREAT_MODELS: tuple[str, ...] = (
    ThreatModel.CLASSIFIER.value, ThreatModel.ADAPTIVE_BPDA_IDENTITY.value,
    ThreatModel.ADAPTIVE_BPDA_PARTITION.value, ThreatModel.ADAPTIVE_EXACT.value)

#: The Square attack of the ``square`` suite: L∞ 8/255 on pixels, ART's defaults otherwise
#: (p_init 0.8), 1 000 queries per image (Andriushchenko et al. 2020; the budget of Table 8).
SQUARE_QUERIES = 1000

#: Additive Gaussian noise of a given standard deviation (on [0, 1] pixels, clipped): the noise of
#: Yan's thesis, Table 3.8 (sigma = 15/255 and 20/255), unlike the CIFAR-10-C severities.
GAUSSIAN_SIGMA = "gaussian"

_GROUPS = ("clean", "noise", "adversarial", "lowres", "frequency")


@dataclasses.dataclass(frozen=True)
class PerturbationSpec:
    """One perturbation at one level.

    Attributes
    ----------
    perturbation : str
        ``"clean"``, a noise name (``"gaussian_noise"``, ...), ``"fgsm"``, ``"pgd"``,
        ``"square"``, ``"low_resolution"`` or ``"frequency"``.
    level : str
        The level's label, as in the paper: a severity ``"3"``, an :math:`\\varepsilon` ``"8/255"``,
        a scale ``"1/4"``, a component ``"low"``/``"high"``; ``"-"`` for clean.
    value : float or None
        The level's number: the severity, :math:`\\varepsilon` on [0, 1] pixels, the scale factor,
        or the frequency radius in bins.
    group : str
        ``"clean"``, ``"noise"``, ``"adversarial"``, ``"lowres"`` or ``"frequency"`` (the paper
        table the row belongs to). The sanity checks' extra attack runs are not specs: they are
        :class:`~virolbi.evaluate.sanity_plan.SanityRun` and write rows of group ``"sanity"``.
    threat_models : tuple of str
        For adversarial specs, the threat models to run (see the module docstring);
        ``("none",)`` otherwise.
    """

    perturbation: str
    level: str
    value: float | None
    group: str
    threat_models: tuple[str, ...] = (NO_THREAT,)

    def __post_init__(self) -> None:
        if self.group not in _GROUPS:
            raise InputError(f"group must be one of {', '.join(_GROUPS)}, got {self.group!r}")
        unknown = [t for t in self.threat_models if t not in THREAT_MODEL_LABELS]
        if unknown:
            raise InputError(f"unknown threat model(s) {unknown}; expected some of "
                             f"{', '.join(THREAT_MODEL_LABELS)}")


def level_label(value: float, denominators: Sequence[int] = (255, 2, 3, 4, 5, 6, 7, 8, 16)) -> str:
    """A short label for a level: ``8/255`` for 8/255, ``1/4`` for 0.25, ``3`` for 3.0.

    Examples
    --------
    >>> level_label(8 / 255), level_label(0.25), level_label(1 / 7), level_label(3.0)
    ('8/255', '1/4', '1/7', '3')
    """
    v = float(value)
    if v == int(v):
        return str(int(v))
    for d in denominators:
        n = round(v * d)
        if n != 0 and abs(v - n / d) < 1e-9:
            f = Fraction(n, d)
            return f"{n}/{d}" if d == 255 else f"{f.numerator}/{f.denominator}"
    return f"{v:g}"


def is_large_image(image_size: int | Sequence[int]) -> bool:
    """Whether images of this side (or ``(H, W)``) take the ImageNet-size settings (side ≥ 128)."""
    side = min(image_size) if isinstance(image_size, (tuple, list)) else int(image_size)
    return side >= 128


def frequency_radius(image_size: int | Sequence[int]) -> float:
    """Cut-off radius of the low/high split: 6 for 32×32 (paper, Table 4), scaled with the side.

    >>> frequency_radius(32), frequency_radius(224)
    (6.0, 42.0)
    """
    side = min(image_size) if isinstance(image_size, (tuple, list)) else int(image_size)
    return float(round(6.0 * side / 32.0, 3))


def _clean() -> list[PerturbationSpec]:
    return [PerturbationSpec("clean", "-", None, "clean")]


def _noise(severities: Sequence[int]) -> list[PerturbationSpec]:
    return [PerturbationSpec(n, str(s), float(s), "noise") for n in NOISES for s in severities]


def _adversarial(attacks: Sequence[str], epsilons: Sequence[int]) -> list[PerturbationSpec]:
    return [PerturbationSpec(a, f"{e}/255", e / 255.0, "adversarial", ADVERSARIAL_THREAT_MODELS)
            for a in attacks for e in epsilons]


def _gaussian_sigma(sigmas_255: Sequence[int]) -> list[PerturbationSpec]:
    return [PerturbationSpec(GAUSSIAN_SIGMA, f"{v}/255", v / 255.0, "noise") for v in sigmas_255]


def _lowres(scales: Sequence[float]) -> list[PerturbationSpec]:
    return [PerturbationSpec("low_resolution", level_label(s), float(s), "lowres") for s in scales]


def _frequency(radius: float) -> list[PerturbationSpec]:
    return [PerturbationSpec("frequency", part, radius, "frequency") for part in ("low", "high")]


def get_suite(name: str, image_size: int | Sequence[int] = 32) -> tuple[PerturbationSpec, ...]:
    r"""The perturbation specs of a named suite.

    Parameters
    ----------
    name : str
        One of ``paper``, ``quick``, ``noise``, ``adversarial``, ``lowres``, ``frequency``,
        ``tisode`` (Yan's thesis Table 3.8: Gaussian σ = 15/255 and 20/255, FGSM 8/255 and
        10/255, PGD 8/255), or ``square`` (the gradient-free Square attack, L∞ 8/255,
        :data:`SQUARE_QUERIES` queries: the check that a PGD figure is not gradient masking), or
        ``autoattack`` (AutoAttack at 8/255 in :data:`AUTOATTACK_THREAT_MODELS`).
    image_size : int or (int, int), default 32
        Image side (or ``(H, W)``). From a side of 128 on, the ImageNet100 settings apply: noise
        severities 1 and 2, low-resolution scales 1/7 and 1/4, frequency radius
        :math:`6 \cdot \text{side} / 32`.

    Returns
    -------
    tuple of PerturbationSpec
        Clean first, then noises, adversarial, low resolution and frequency, in the paper's order.

    Examples
    --------
    >>> [(s.perturbation, s.level) for s in get_suite("quick")]  # doctest: +NORMALIZE_WHITESPACE
    [('clean', '-'), ('gaussian_noise', '3'), ('fgsm', '8/255'), ('low_resolution', '1/2'),
     ('frequency', 'low'), ('frequency', 'high')]
    >>> len(get_suite("paper"))  # 1 + 4 x 5 + 2 x 2 + 2 + 2
    29
    >>> [s.level for s in get_suite("lowres", 224)]
    ['-', '1/7', '1/4']
    """
    if not isinstance(name, str) or name not in SUITES:
        raise InputError(f"unknown suite {name!r}; expected one of {', '.join(SUITES)}")
    large = is_large_image(image_size)
    severities = (1, 2) if large else (1, 2, 3, 4, 5)
    scales = (1 / 7, 1 / 4) if large else (1 / 4, 1 / 2)
    radius = frequency_radius(image_size)
    if name == "paper":
        specs = (_clean() + _noise(severities) + _adversarial(("fgsm", "pgd"), (8, 16))
                 + _lowres(scales) + _frequency(radius))
    elif name == "quick":
        specs = (_clean() + [PerturbationSpec("gaussian_noise", "3", 3.0, "noise")]
                 + _adversarial(("fgsm",), (8,)) + _lowres((scales[-1],)) + _frequency(radius))
    elif name == "noise":
        specs = _clean() + _noise(severities)
    elif name == "adversarial":
        specs = _clean() + _adversarial(("fgsm", "pgd"), (8, 16))
    elif name == "lowres":
        specs = _clean() + _lowres(scales)
    elif name == "tisode":  # thesis Table 3.8: Gaussian 15/255, 20/255; FGSM 8/255, 10/255; PGD
        specs = (_clean() + _gaussian_sigma((15, 20)) + _adversarial(("fgsm",), (8, 10))
                 + _adversarial(("pgd",), (8,)))
    elif name == AUTOATTACK:
        specs = _clean() + [PerturbationSpec(AUTOATTACK, "8/255", 8 / 255, "adversarial",
                                             AUTOATTACK_THREAT_MODELS)]
    elif name == "square":
        specs = _clean() + [PerturbationSpec("square", "8/255", 8 / 255, "adversarial", (GRADIENT_FREE,))]
    else:
        specs = _clean() + _frequency(radius)
    return tuple(specs)
