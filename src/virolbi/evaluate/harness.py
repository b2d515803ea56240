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

import hashlib
import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from virolbi.attacks import FGSM, PGD, SanityCheck, ThreatModel, attack_with_threat_model
from virolbi.checks import check_positive_int, resolve_device
from virolbi.data.subset import balanced_subset
from virolbi.errors import InputError
from virolbi.attacks.art_estimator import art_version
from virolbi.attacks.base import eps_for_convention
from virolbi.attacks.autoattack import AutoAttackSettings
from virolbi.evaluate.autoattack import Transfer, component_specs, evaluate_autoattack
from virolbi.evaluate.data import EvalData
from virolbi.evaluate.partial import ResumeFile, fingerprint
from virolbi.evaluate.results import NO_PREPROCESSING, Results, Row, _Key
from virolbi.evaluate.sanity_plan import LARGE_EPS, SanityRun, plan_sanity, sanity_checks
from virolbi.provenance import run_metadata
from virolbi.evaluate.suites import (
    AUTOATTACK,
    GAUSSIAN_SIGMA,
    NO_THREAT,
    PerturbationSpec,
    get_suite,
    level_label,
)

__all__ = ["Results", "Row", "SanityCheck", "evaluate", "run_metadata", "NO_PREPROCESSING",
           "LARGE_EPS"]

def _check_count(value: Any, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    return check_positive_int(value, name)


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
    if spec.perturbation == GAUSSIAN_SIGMA:
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x)
        return (x + float(spec.value) * noise).clamp(0.0, 1.0)
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


def _select_indices(data: EvalData, limit: int | None, seed: int) -> np.ndarray:
    """The images evaluated: all of them, or ``limit`` of them, stratified by class where the labels
    are known (else uniformly), drawn with ``seed`` and kept in dataset order."""
    if limit is None or limit >= data.length:
        return np.arange(data.length)
    labels = data.labels()
    if labels is not None:
        return balanced_subset(labels, limit, seed)
    return np.sort(np.random.default_rng(seed).choice(data.length, size=limit, replace=False))


def _skipped_threat_models(preprocess: Any, specs: Sequence[PerturbationSpec]) -> list[str]:
    """The threat models of ``specs`` that this preprocessor cannot be attacked in, and why."""
    skipped: list[str] = []
    if preprocess is not None and not hasattr(preprocess, "forward_with_labels"):
        if any(ThreatModel.ADAPTIVE_BPDA_PARTITION.value in s.threat_models for s in specs):
            skipped.append(f"{ThreatModel.ADAPTIVE_BPDA_PARTITION.value}: the preprocessor has no "
                           "forward_with_labels")
    if preprocess is not None and not getattr(preprocess, "differentiable", False):
        if any(ThreatModel.ADAPTIVE_EXACT.value in s.threat_models for s in specs):
            skipped.append(f"{ThreatModel.ADAPTIVE_EXACT.value}: the preprocessor is not "
                           "differentiable (attacked through BPDA instead)")
    return skipped


# -------------------------------------------------------------------------------------- evaluate

def evaluate(model: nn.Module, dataset: Any, *, suite: str | Sequence[PerturbationSpec] = "paper",
             preprocess: Callable[[Tensor], Tensor] | None = None, limit: int | None = None,
             batch_size: int = 128, device: str | torch.device = "cpu", seed: int = 0,
             pgd_steps: int = 20, pgd_step_size: float | None = None, progress: bool = True,
             sanity: bool = True, preprocess_name: str | None = None,
             meta: dict | None = None, eps_convention: str = "pixel",
             eot_samples: int = 1, resume_file: str | os.PathLike | None = None,
             autoattack: AutoAttackSettings | None = None, transfer: Transfer | None = None
             ) -> Results:
    r"""Accuracy of a classifier under every perturbation of a suite, without and with preprocessing.

    For every spec of the suite and every batch, the perturbed images :math:`T(x)` are classified
    as :math:`f(T(x))` (row ``preprocessing="none"``) and, when ``preprocess`` is given, as
    :math:`f(P(T(x)))`. Adversarial specs run in the threat models of
    :class:`virolbi.attacks.ThreatModel`: ``classifier`` (attack :math:`f`, classify with
    :math:`f`), ``preprocess_after`` (the paper's: attack :math:`f`, classify with
    :math:`f \circ P`), the adaptive ``adaptive_bpda_identity`` / ``adaptive_bpda_partition``
    (attack :math:`f \circ \mathrm{BPDA}(P)`, classify with :math:`f \circ P`) and, for a
    differentiable :math:`P` (the Blur baseline's blur), ``adaptive_exact`` (attack :math:`f \circ P`
    with its exact gradient).

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
    eot_samples : int, default 1
        Every attack gradient (and PGD's choice of restart) averages this many forward passes
        (EOT, Athalye et al. 2018): for randomised models such as PNI (:mod:`virolbi.models.pni`)
        or a random preprocessing. Recorded in ``meta["attacks"]``.
    resume_file : str or os.PathLike, optional
        Keep the running tallies here after every batch (:mod:`virolbi.evaluate.partial`): called
        again with the same arguments after an interruption, the evaluation continues from the
        next batch and gives the numbers of an uninterrupted run (``meta["resumed_at_batch"]``
        says where it continued). A file recorded for other images, settings or weights is not
        resumed. Removed when the evaluation completes.
    autoattack : AutoAttackSettings, optional
        Version and budget of the ``autoattack`` suite's spec (default: AutoAttack's standard
        version; :mod:`virolbi.evaluate.autoattack`).
    transfer : Transfer, optional
        An undefended base model: the ``autoattack`` spec adds the images crafted on it
        (RobustBench's transfer check), classified by the defence.

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
    eot_samples = _check_count(eot_samples, "eot_samples")
    dev = resolve_device(device, "device")
    data = EvalData(dataset)

    indices = _select_indices(data, limit, seed)
    n = len(indices)
    probe, _ = data.batch(indices[:1])
    size = tuple(probe.shape[-2:])
    specs = get_suite(suite, size) if isinstance(suite, str) else tuple(suite)
    if not specs or not all(isinstance(s, PerturbationSpec) for s in specs):
        raise InputError("suite must be a suite name or a non-empty sequence of PerturbationSpec")
    plan = plan_sanity(specs, pgd_steps) if sanity else None
    work: list[PerturbationSpec | SanityRun] = list(specs) + list(plan.runs if plan else ())

    pname = (preprocess_name or _preprocess_name(preprocess)) if preprocess is not None else None
    skipped = _skipped_threat_models(preprocess, specs)
    generators = {(w.perturbation, w.level): torch.Generator().manual_seed(
        _spec_seed(seed, w.perturbation, w.level)) for w in work}

    counts: dict[_Key, list] = {}
    radius_of = _radius_function(model, eps_convention)
    autoattack = autoattack or AutoAttackSettings()
    has_aa = any(s.perturbation == AUTOATTACK for s in specs)
    settings = {"batch_size": batch_size, "seed": seed, "pgd_steps": pgd_steps,
                "pgd_step_size": pgd_step_size, "eps_convention": eps_convention,
                "eot_samples": eot_samples, "preprocess": pname, "dataset_size": data.length,
                **({"autoattack": autoattack.to_dict(), "transfer": transfer and transfer.name}
                   if has_aa else {})}
    resume = (ResumeFile(resume_file, fingerprint(model, preprocess, indices, work, settings))
              if resume_file is not None else None)
    batches = [indices[i:i + batch_size] for i in range(0, n, batch_size)]
    spec_of = {(w.perturbation, w.level): w for w in work}
    spec_of.update({(c.perturbation, c.level): c for w in specs if w.perturbation == AUTOATTACK
                    for c in component_specs(w, autoattack, transfer is not None)})
    first, elapsed = (resume.restore(counts, generators, spec_of, len(batches)) if resume
                      else (0, 0.0))

    def tally(spec: PerturbationSpec | SanityRun, threat: str, pre: str, logits: Tensor, y: Tensor,
              params: dict) -> None:
        tally_correct(spec, threat, pre, logits.argmax(dim=1) == y, params)

    def tally_correct(spec: PerturbationSpec | SanityRun, threat: str, pre: str, correct: Tensor,
                      params: dict) -> None:
        entry = counts.setdefault((spec.perturbation, spec.level, threat, pre), [0, 0, spec, params])
        entry[0] += int(correct.sum())
        entry[1] += int(correct.numel())

    def run_batch(x: Tensor, y: Tensor, spec: PerturbationSpec | SanityRun) -> None:
        gen = generators[(spec.perturbation, spec.level)]
        if isinstance(spec, SanityRun):
            _evaluate_sanity_run(model, spec, pgd_step_size, gen, x, y, tally, radius_of, eot_samples)
        elif spec.perturbation == AUTOATTACK:
            evaluate_autoattack(model, preprocess, pname, spec, gen, x, y, tally_correct, radius_of,
                                eot_samples, autoattack, transfer)
        elif spec.group == "adversarial":
            _evaluate_attack(model, preprocess, pname, spec, pgd_steps, pgd_step_size, gen, x, y,
                             tally, radius_of, eot_samples)
        else:
            with torch.no_grad():
                xp = _apply(spec, x, gen)
                tally(spec, NO_THREAT, NO_PREPROCESSING, model(xp), y, {})
                if preprocess is not None:
                    xin = xp.clamp(0.0, 1.0)  # frequency components leave [0, 1]
                    tally(spec, NO_THREAT, pname, model(preprocess(xin)), y, {})

    was_training = model.training
    start = time.perf_counter() - elapsed
    model.to(dev).eval()
    if isinstance(preprocess, nn.Module):
        preprocess.to(dev).eval()
    if transfer is not None:
        transfer.model.to(dev).eval()
    bar = tqdm(total=len(batches) * len(work), initial=first * len(work), desc="evaluate",
               unit="step", disable=None if progress else True)
    try:
        for b in range(first, len(batches)):
            x, y = data.batch(batches[b])
            x, y = x.to(dev, torch.float32), y.to(dev)
            for spec in work:
                bar.set_postfix_str(f"{spec.perturbation} {spec.level}", refresh=False)
                run_batch(x, y, spec)
                bar.update(1)
            if resume is not None:
                resume.save(b + 1, counts, generators, time.perf_counter() - start)
    finally:
        bar.close()
        model.train(was_training)
    elapsed = time.perf_counter() - start

    rows: dict[_Key, Row] = {}
    for key, (correct, total, spec, params) in counts.items():
        rows[key] = Row(*key, accuracy=correct / total, correct=correct, n=total, group=spec.group,
                        value=spec.value, params=params)
    checks = sanity_checks(rows, plan, pgd_steps, n) if sanity else []

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
        "eps_radius_pixels": {s.level: radius_of.params(float(s.value))["radius_pixels"]
                              for s in specs if s.group == "adversarial"},
        "attacks": {"fgsm": {"norm": "Linf", "eot_samples": eot_samples},
                    "pgd": {"norm": "Linf", "steps": pgd_steps, "random_start": True,
                            "step_size": pgd_step_size if pgd_step_size is not None else "eps/4",
                            "restarts": 1, "eot_samples": eot_samples}},
        **({"autoattack": {**autoattack.to_dict(), "eot_samples": autoattack.eot_for(eot_samples),
                           "transfer_from": transfer and transfer.name,
                           "implementation": art_version()}} if has_aa else {}),
        "skipped": skipped,
        "elapsed_s": round(elapsed, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    if first:
        info["resumed_at_batch"] = first
    info.update(meta or {})
    if resume is not None:
        resume.remove()
    return Results(rows=list(rows.values()), sanity=checks, meta=info)


class _Radius:
    """ε of a spec → the attack's pixel radius (per channel for the normalised convention), and
    the row parameters that name the convention and that radius."""

    def __init__(self, convention: str, std: Tensor | None) -> None:
        eps_for_convention(0.0, convention, std)        # checks the convention's name
        self.convention, self.std = convention, std

    def __call__(self, eps: float) -> Any:
        return eps_for_convention(eps, self.convention, self.std)

    def params(self, eps: float) -> dict[str, Any]:
        r = self(eps)
        radius = [round(v, 8) for v in r] if isinstance(r, tuple) else round(r, 8)
        return {"eps_convention": self.convention, "radius_pixels": radius}


def _radius_function(model: nn.Module, convention: str) -> _Radius:
    """ε of a spec → the attack's pixel radius (per channel for the normalised convention)."""
    from virolbi.models.normalize import Normalize

    if convention == "pixel":
        return _Radius("pixel", None)
    norm = next((m for m in model.modules() if isinstance(m, Normalize)), None)
    if convention == "normalized" and norm is None:
        raise InputError("eps_convention='normalized' needs a model with a Normalize layer "
                         "(virolbi.models.create_model adds one)")
    return _Radius(convention, norm.std.detach().cpu() if norm is not None else None)


def _evaluate_attack(model: nn.Module, preprocess: Any, pname: str | None, spec: PerturbationSpec,
                     steps: int, step_size: float | None, gen: torch.Generator, x: Tensor, y: Tensor,
                     tally: Callable, radius_of: Callable[[float], Any], eot_samples: int = 1) -> None:
    """One batch of an adversarial spec in each of its threat models (gradients averaged over
    ``eot_samples`` forward passes)."""
    if spec.perturbation == "square":
        _evaluate_square(model, preprocess, pname, spec, gen, x, y, tally, radius_of)
        return
    attack = _attack(spec.perturbation, radius_of(float(spec.value)), steps, step_size, gen)
    params = {**{k: v for k, v in attack.config().items() if k != "generator"},
              **radius_of.params(float(spec.value))}
    threats = [ThreatModel.parse(t) for t in spec.threat_models]
    x_attacked: Tensor | None = None  # classifier alone: shared by CLASSIFIER and PREPROCESS_AFTER
    for threat in threats:
        if not threat.applies_to(preprocess):
            continue
        if threat.adaptive:
            x_adv = attack_with_threat_model(model, preprocess, x, y, attack, threat, eot_samples)
        else:
            if x_attacked is None:
                x_attacked = attack_with_threat_model(model, None, x, y, attack,
                                                      ThreatModel.CLASSIFIER, eot_samples)
            x_adv = x_attacked
        with torch.no_grad():
            logits = model(preprocess(x_adv)) if threat.uses_preprocess else model(x_adv)
        tally(spec, threat.value, pname if threat.uses_preprocess else NO_PREPROCESSING, logits, y,
              params)


def _evaluate_sanity_run(model: nn.Module, run: SanityRun, step_size: float | None,
                         gen: torch.Generator, x: Tensor, y: Tensor, tally: Callable,
                         radius_of: Callable[[float], Any], eot_samples: int = 1) -> None:
    """One batch of a sanity check's extra PGD run, on the classifier alone."""
    attack = _attack("pgd", radius_of(run.value), run.steps, step_size, gen)
    params = {**{k: v for k, v in attack.config().items() if k != "generator"},
              **radius_of.params(run.value)}
    x_adv = attack_with_threat_model(model, None, x, y, attack, ThreatModel.CLASSIFIER, eot_samples)
    with torch.no_grad():
        tally(run, ThreatModel.CLASSIFIER.value, NO_PREPROCESSING, model(x_adv), y, params)


def _evaluate_square(model: nn.Module, preprocess: Any, pname: str | None, spec: PerturbationSpec,
                     gen: torch.Generator, x: Tensor, y: Tensor, tally: Callable,
                     radius_of: Callable[[float], Any]) -> None:
    """One batch of the Square attack (ART, :data:`~virolbi.evaluate.suites.SQUARE_QUERIES`
    queries) on the classifier alone and, with a preprocessor, on the whole pipeline f(P(x))."""
    from virolbi.attacks.square import square_attack, square_params
    from virolbi.evaluate.suites import GRADIENT_FREE, SQUARE_QUERIES

    eps = radius_of(float(spec.value))   # per channel in the normalised convention
    params = {**square_params(SQUARE_QUERIES), **radius_of.params(float(spec.value))}
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))  # the same search for both rows
    for pre in (None, preprocess) if preprocess is not None else (None,):
        x_adv = square_attack(model, x, y, eps, SQUARE_QUERIES, seed=seed, preprocess=pre)
        with torch.no_grad():
            logits = model(pre(x_adv)) if pre is not None else model(x_adv)
        tally(spec, GRADIENT_FREE, pname if pre is not None else NO_PREPROCESSING, logits, y, params)
