r"""The robustness harness: one pure function from (model, data, suite) to a tidy results table.

:func:`evaluate` applies every perturbation of a suite (:mod:`virolbi.evaluate.suites`) to a test
set and measures top-1 accuracy

.. math:: \mathrm{acc} = \frac{1}{n}\sum_{i=1}^{n} \mathbb 1\big[\arg\max_k f(P(T(x_i)))_k = y_i\big],

with :math:`T` the perturbation, :math:`P` the test-time preprocessing (identity for the rows
without it; the ViRoLBI smoother of Zhou et al. 2024, §3.2, for the rows with it) and :math:`f` the
classifier, which takes images in [0, 1] and holds its own normalisation. The result is a list of
rows keyed ``(perturbation, level, threat_model, preprocessing)``, with the seeds, versions, device
and elapsed time beside them, and the sanity checks of the adversarial evaluation (Carlini et al.
2019, "On Evaluating Adversarial Robustness", §5): accuracy falls as :math:`\varepsilon` grows, is
near zero at a very large :math:`\varepsilon`, and more PGD steps do not raise it beyond noise.

The layout follows RobustBench's ``benchmark`` (a pure function, model put in eval mode by the
harness, a (corruption × severity) table out); reports are written by :mod:`virolbi.evaluate.report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from virolbi.attacks import (
    FGSM,
    PGD,
    SanityCheck,
    ThreatModel,
    attack_with_threat_model,
    check_accuracy_falls,
    check_large_eps_near_zero,
    check_more_steps_not_better,
)
from virolbi.checks import check_positive_int, resolve_device
from virolbi.data.dataset import batch_of
from virolbi.data.subset import balanced_subset
from virolbi.provenance import run_metadata
from virolbi.errors import InputError
from virolbi.evaluate.suites import (
    NO_THREAT,
    PerturbationSpec,
    get_suite,
    level_label,
)

__all__ = ["Results", "Row", "SanityCheck", "evaluate", "run_metadata", "NO_PREPROCESSING",
           "LARGE_EPS"]

#: Preprocessing key of the rows without test-time preprocessing.
NO_PREPROCESSING = "none"

#: The "very large" ε of the sanity check (on [0, 1] pixels): PGD there should leave ~0 accuracy.
LARGE_EPS = 128 / 255

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

def _check_count(value: Any, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    return check_positive_int(value, name)


def _as_float_batch(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    if not images.is_floating_point():
        raise InputError(f"dataset images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    return images


class _Data:
    """Uniform batched access to the supported dataset forms (see :func:`evaluate`)."""

    def __init__(self, dataset: Any) -> None:
        self.arrays: tuple[Any, Any] | None = None
        if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
            images, labels = dataset
            images = torch.as_tensor(images)
            labels = torch.as_tensor(np.asarray(labels)).long()
            if images.ndim != 4 or labels.shape != (images.shape[0],):
                raise InputError("dataset given as (images, labels) must hold images (N, C, H, W) and "
                                 f"labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
            self.arrays, self.kind = (images, labels), "tensors"
        elif (isinstance(getattr(dataset, "data", None), np.ndarray) and dataset.data.ndim == 4
              and dataset.data.dtype == np.uint8 and hasattr(dataset, "targets")):
            images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2)
            labels = torch.as_tensor(np.asarray(dataset.targets)).long()
            self.arrays, self.kind = (images, labels), "arrays"
        elif hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            self.dataset, self.kind = dataset, "items"
        else:
            raise InputError("dataset must be a torch Dataset of (image, label), an object with "
                             "uint8 .data (N, H, W, C) and .targets, or a pair (images, labels); got "
                             f"{type(dataset).__name__}")
        self.length = len(self.arrays[1]) if self.arrays is not None else len(dataset)
        if self.length == 0:
            raise InputError("dataset is empty")

    def labels(self) -> np.ndarray | None:
        """All labels when they are known without reading the images, else ``None``."""
        if self.arrays is not None:
            return self.arrays[1].numpy()
        targets = getattr(self.dataset, "targets", None)
        return np.asarray(targets) if targets is not None and len(targets) == self.length else None

    def batch(self, indices: np.ndarray) -> tuple[Tensor, Tensor]:
        if self.arrays is not None:
            idx = torch.from_numpy(indices)
            return _as_float_batch(self.arrays[0][idx]), self.arrays[1][idx]
        x, y = batch_of(self.dataset, indices)
        if x.ndim != 4:
            raise InputError(f"dataset items must be images (C, H, W), got shape {tuple(x.shape[1:])}")
        return _as_float_batch(x), y.long()


def _spec_seed(seed: int, *parts: object) -> int:
    """An independent 63-bit seed per (seed, perturbation, level, ...)."""
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _preprocess_name(preprocess: Any) -> str:
    sparsity = getattr(preprocess, "sparsity", None)
    name = type(preprocess).__name__ if isinstance(preprocess, nn.Module) else getattr(
        preprocess, "__name__", type(preprocess).__name__)
    return f"{name}(sparsity={float(sparsity):g})" if isinstance(sparsity, (int, float)) else name


# ----------------------------------------------------------------------------------- perturbations

def _apply(spec: PerturbationSpec, x: Tensor, generator: torch.Generator) -> Tensor:
    """The perturbed batch of a non-adversarial spec."""
    from virolbi import perturb

    if spec.perturbation == "clean":
        return x
    if spec.group == "noise":
        return perturb.corrupt(x, spec.perturbation, int(spec.value), generator=generator)
    if spec.perturbation == "low_resolution":
        return perturb.low_resolution(x, float(spec.value))
    if spec.perturbation == "frequency":
        low, high = perturb.frequency_split(x, radius=float(spec.value))
        return low if spec.level == "low" else high
    raise InputError(f"unknown perturbation {spec.perturbation!r} in group {spec.group!r}")


def _attack(name: str, eps: Any, steps: int, step_size: float | None,
            generator: torch.Generator) -> FGSM | PGD:
    if name == "fgsm":
        return FGSM(None, eps=eps)
    if name == "pgd":
        return PGD(None, eps=eps, steps=steps, step_size=step_size, generator=generator)
    raise InputError(f"unknown attack {name!r}; expected fgsm or pgd")


# -------------------------------------------------------------------------------------- evaluate

_CLASSIFIER = ThreatModel.CLASSIFIER.value


def _sanity_specs(specs: Sequence[PerturbationSpec], pgd_steps: int
                  ) -> tuple[list[tuple[PerturbationSpec, int]], dict]:
    """Extra attack runs the sanity checks need (classifier alone, no preprocessing): PGD at
    ε = :data:`LARGE_EPS`, and PGD at 8/255 with fewer and more steps (``pgd-<steps>``)."""
    attacks = {(s.perturbation, s.level) for s in specs if s.group == "adversarial"}
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


def _sanity_checks(rows: dict[_Key, Row], plan: dict, pgd_steps: int, n: int) -> list[SanityCheck]:
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


def evaluate(model: nn.Module, dataset: Any, *, suite: str | Sequence[PerturbationSpec] = "paper",
             preprocess: Callable[[Tensor], Tensor] | None = None, limit: int | None = None,
             batch_size: int = 128, device: str | torch.device = "cpu", seed: int = 0,
             pgd_steps: int = 20, pgd_step_size: float | None = None, progress: bool = True,
             sanity: bool = True, preprocess_name: str | None = None,
             meta: dict | None = None, eps_convention: str = "pixel") -> Results:
    r"""Accuracy of a classifier under every perturbation of a suite, without and with preprocessing.

    For every spec of the suite and every batch, the perturbed images :math:`T(x)` are classified
    as :math:`f(T(x))` (row ``preprocessing="none"``) and, when ``preprocess`` is given, as
    :math:`f(P(T(x)))`. Adversarial specs run in the threat models of
    :class:`virolbi.attacks.ThreatModel`: ``classifier`` (attack :math:`f`, classify with
    :math:`f`), ``preprocess_after`` (the paper's: attack :math:`f`, classify with
    :math:`f \circ P`) and the adaptive ``adaptive_bpda_identity`` / ``adaptive_bpda_partition``
    (attack :math:`f \circ \mathrm{BPDA}(P)`, classify with :math:`f \circ P`).

    Parameters
    ----------
    model : nn.Module
        Classifier from float images ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``; any
        normalisation lives inside it. Moved to ``device`` and put in eval mode for the run; its
        train/eval flag is restored afterwards.
    dataset : Dataset, array-backed set or (images, labels)
        A :class:`virolbi.data.ImageDataset` (or any set with uint8 ``.data (N, H, W, C)`` and
        ``.targets``), any torch ``Dataset`` of ``(image (C, H, W) uint8 or float, label)``, or a
        pair ``(images (N, C, H, W), labels (N,))``.
    suite : str or sequence of PerturbationSpec, default "paper"
        A suite name (:data:`virolbi.evaluate.suites.SUITES`) or explicit specs.
    preprocess : callable, optional
        Test-time preprocessing :math:`P`, e.g. ``virolbi.ViRoLBI(sparsity=0.6)``; ``None`` evaluates
        the rows without preprocessing only. The ``adaptive_bpda_partition`` threat needs
        ``preprocess.forward_with_labels`` and is skipped (and listed in ``meta["skipped"]``)
        without it.
    limit : int, optional
        Evaluate a random subset of this many images (drawn with ``seed``, kept in dataset order).
    batch_size : int, default 128
        Images per batch.
    device : str or torch.device, default "cpu"
        Where the model runs.
    seed : int, default 0
        Seeds the subset, the noise draws and PGD's random starts (one generator per spec, derived
        from ``(seed, perturbation, level)``): the same seed and batch size give the same numbers.
    pgd_steps : int, default 20
        PGD iterations; the step size defaults to :math:`\varepsilon/4` (``pgd_step_size``).
    progress : bool, default True
        Show a tqdm progress bar (hidden when stderr is not a terminal).
    sanity : bool, default True
        Run the sanity checks when the suite has adversarial specs (three extra PGD runs without
        preprocessing: ε = 128/255, and ε = 8/255 with fewer and more steps).
    preprocess_name : str, optional
        The preprocessing key of the rows with preprocessing; default from the preprocessor's class
        and ``sparsity`` attribute, e.g. ``"ViRoLBI(sparsity=0.6)"``.
    meta : dict, optional
        Extra metadata copied into ``Results.meta`` (e.g. checkpoint and data paths).
    eps_convention : {"pixel", "normalized"}, default "pixel"
        How the suite's ε are meant: on [0, 1] pixels, or on normalised images (the pixel radius of
        channel ``c`` is then ε·σ_c, σ from the model's :class:`~virolbi.models.Normalize` layer;
        :func:`virolbi.attacks.base.eps_for_convention`). Recorded in every adversarial row.

    Returns
    -------
    Results
        Rows keyed ``(perturbation, level, threat_model, preprocessing)`` with accuracy and ``n``;
        sanity checks; ``meta`` with suite, seed, sizes, attack settings, versions, git commit,
        device and elapsed seconds.

    References
    ----------
    Zhou et al., "Robust Network Learning via Inverse Scale Variational Sparsification", 2024, §4.
    Croce et al., "RobustBench: a standardized adversarial robustness benchmark", 2021.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(8, 3, 8, 8)
    >>> y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    >>> class Oracle(torch.nn.Module):  # classifies by mean brightness: perfect on clean data
    ...     def forward(self, x):
    ...         m = x.mean(dim=(1, 2, 3))
    ...         return torch.stack([0.5 - m, m - 0.5], dim=1)
    >>> res = evaluate(Oracle(), (x, y), suite="lowres", progress=False)
    >>> res.accuracy("clean")
    1.0
    >>> [r.level for r in res.rows]
    ['-', '1/4', '1/2']
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if preprocess is not None and not callable(preprocess):
        raise InputError(f"preprocess must be callable (an nn.Module) or None, got "
                         f"{type(preprocess).__name__}")
    limit = _check_count(limit, "limit", allow_none=True)
    batch_size = _check_count(batch_size, "batch_size")
    pgd_steps = _check_count(pgd_steps, "pgd_steps")
    dev = resolve_device(device, "device")
    data = _Data(dataset)

    rng = np.random.default_rng(seed)
    if limit is not None and limit < data.length:  # stratified by class where labels are known
        labels = data.labels()
        indices = (balanced_subset(labels, limit, seed) if labels is not None
                   else np.sort(rng.choice(data.length, size=limit, replace=False)))
    else:
        indices = np.arange(data.length)
    n = len(indices)
    probe, _ = data.batch(indices[:1])
    size = tuple(probe.shape[-2:])
    specs = get_suite(suite, size) if isinstance(suite, str) else tuple(suite)
    if not specs or not all(isinstance(s, PerturbationSpec) for s in specs):
        raise InputError("suite must be a suite name or a non-empty sequence of PerturbationSpec")
    extra, plan = _sanity_specs(specs, pgd_steps) if sanity else ([], {})
    work = [(s, pgd_steps) for s in specs] + extra

    pname = (preprocess_name or _preprocess_name(preprocess)) if preprocess is not None else None
    skipped: list[str] = []
    if preprocess is not None and not hasattr(preprocess, "forward_with_labels"):
        if any(ThreatModel.ADAPTIVE_BPDA_PARTITION.value in s.threat_models for s in specs):
            skipped.append(f"{ThreatModel.ADAPTIVE_BPDA_PARTITION.value}: the preprocessor has no "
                           "forward_with_labels")
    generators = {(s.perturbation, s.level): torch.Generator().manual_seed(
        _spec_seed(seed, s.perturbation, s.level)) for s, _ in work}

    counts: dict[_Key, list] = {}
    radius_of = _radius_function(model, eps_convention)

    def tally(spec: PerturbationSpec, threat: str, pre: str, logits: Tensor, y: Tensor,
              params: dict) -> None:
        key = (spec.perturbation, spec.level, threat, pre)
        entry = counts.setdefault(key, [0, 0, spec, params])
        entry[0] += int((logits.argmax(dim=1) == y).sum())
        entry[1] += int(y.numel())

    was_training = model.training
    start = time.perf_counter()
    model.to(dev).eval()
    if isinstance(preprocess, nn.Module):
        preprocess.to(dev).eval()
    batches = [indices[i:i + batch_size] for i in range(0, n, batch_size)]
    bar = tqdm(total=len(batches) * len(work), desc="evaluate", unit="step",
               disable=None if progress else True)
    try:
        for idx in batches:
            x, y = data.batch(idx)
            x, y = x.to(dev, torch.float32), y.to(dev)
            for spec, steps in work:
                bar.set_postfix_str(f"{spec.perturbation} {spec.level}", refresh=False)
                gen = generators[(spec.perturbation, spec.level)]
                if spec.group in ("adversarial", "sanity"):
                    _evaluate_attack(model, preprocess, pname, spec, steps, pgd_step_size, gen, x, y,
                                     tally, radius_of)
                else:
                    with torch.no_grad():
                        xp = _apply(spec, x, gen)
                        tally(spec, NO_THREAT, NO_PREPROCESSING, model(xp), y, {})
                        if preprocess is not None:
                            xin = xp.clamp(0.0, 1.0)  # frequency components leave [0, 1]
                            tally(spec, NO_THREAT, pname, model(preprocess(xin)), y, {})
                bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    elapsed = time.perf_counter() - start

    rows: dict[_Key, Row] = {}
    for key, (correct, total, spec, params) in counts.items():
        rows[key] = Row(*key, accuracy=correct / total, correct=correct, n=total, group=spec.group,
                        value=spec.value, params=params)
    checks = _sanity_checks(rows, plan, pgd_steps, n) if sanity else []

    info = run_metadata(dev)
    info.update({
        "suite": suite if isinstance(suite, str) else "custom",
        "model": type(model).__name__,
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "dataset_size": data.length, "n": n, "limit": limit, "image_size": list(size),
        "batch_size": batch_size, "seed": seed,
        "seeds": "subset: numpy default_rng(seed); noise and PGD starts: one torch.Generator per "
                 "(perturbation, level) seeded with sha256(seed/perturbation/level)",
        "preprocess": pname,
        "eps_convention": eps_convention,
        "attacks": {"fgsm": {"norm": "Linf"},
                    "pgd": {"norm": "Linf", "steps": pgd_steps, "random_start": True,
                            "step_size": pgd_step_size if pgd_step_size is not None else "eps/4",
                            "restarts": 1}},
        "skipped": skipped,
        "elapsed_s": round(elapsed, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    info.update(meta or {})
    return Results(rows=list(rows.values()), sanity=checks, meta=info)


def _radius_function(model: nn.Module, convention: str) -> Callable[[float], Any]:
    """ε of a spec → the attack's pixel radius (per channel for the normalised convention)."""
    from virolbi.attacks.base import eps_for_convention
    from virolbi.models.normalize import Normalize

    if convention == "pixel":
        return lambda eps: eps_for_convention(eps, "pixel")
    norm = next((m for m in model.modules() if isinstance(m, Normalize)), None)
    if convention == "normalized" and norm is None:
        raise InputError("eps_convention='normalized' needs a model with a Normalize layer "
                         "(virolbi.models.create_model adds one)")
    std = norm.std.detach().cpu() if norm is not None else None
    eps_for_convention(0.0, convention, std)        # checks the convention's name
    return lambda eps: eps_for_convention(eps, convention, std)


def _evaluate_attack(model: nn.Module, preprocess: Any, pname: str | None, spec: PerturbationSpec,
                     steps: int, step_size: float | None, gen: torch.Generator, x: Tensor, y: Tensor,
                     tally: Callable, radius_of: Callable[[float], Any]) -> None:
    """One batch of an adversarial spec in each of its threat models."""
    name = "pgd" if spec.perturbation.startswith("pgd") else spec.perturbation
    attack = _attack(name, radius_of(float(spec.value)), steps, step_size, gen)
    params = {k: v for k, v in attack.config().items() if k != "generator"}
    threats = [ThreatModel.parse(t) for t in spec.threat_models]
    x_attacked: Tensor | None = None  # classifier alone: shared by CLASSIFIER and PREPROCESS_AFTER
    for threat in threats:
        if threat.uses_preprocess and preprocess is None:
            continue
        if threat is ThreatModel.ADAPTIVE_BPDA_PARTITION and not hasattr(preprocess,
                                                                         "forward_with_labels"):
            continue
        if threat.adaptive:
            x_adv = attack_with_threat_model(model, preprocess, x, y, attack, threat)
        else:
            if x_attacked is None:
                x_attacked = attack_with_threat_model(model, None, x, y, attack,
                                                      ThreatModel.CLASSIFIER)
            x_adv = x_attacked
        with torch.no_grad():
            logits = model(preprocess(x_adv)) if threat.uses_preprocess else model(x_adv)
        tally(spec, threat.value, pname if threat.uses_preprocess else NO_PREPROCESSING, logits, y,
              params)
