"""A reproduction plan: which models (training config + overrides) and which tables (suite +
models), read from a YAML file such as ``configs/reproduce/cifar10_fast.yaml``."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from virolbi.checks import check_ratio
from virolbi.errors import InputError

__all__ = ["ModelSpec", "TableSpec", "Plan", "load_plan", "procedure_key", "defence_key",
           "TABLE_SUITES"]

#: The Square attack's settings unless the plan says otherwise (L∞ on pixels, ≥ 1000 queries).
#: ``pool``: the Square images are the stratified subset of ``images`` drawn from the first
#: ``pool`` evaluation images (None: from the table's evaluation images).
SQUARE_DEFAULTS = {"images": 500, "queries": 1000, "eps": 8 / 255, "pool": None}

#: The suites a table may use ("clean": the clean row only).
TABLE_SUITES = ("noise", "adversarial", "lowres", "frequency", "clean")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One trained model of the plan: ``virolbi train --config config overrides...``."""

    name: str
    config: Path
    overrides: tuple[str, ...] = ()
    eot_samples: int = 1  # forward passes per attack gradient (randomised models, e.g. PNI)

    def resolved(self, output_dir: Path | None = None) -> dict[str, Any]:
        """The model's resolved training configuration (output in ``output_dir``)."""
        from virolbi.train.config import load_config

        extra = [f"output_dir={output_dir}"] if output_dir is not None else []
        return load_config(self.config, list(self.overrides) + extra + [f"name={self.name}"])


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A table: a suite on some models; adversarial tables also name their ε conventions and the
    models the gradient-free Square attack runs on."""

    name: str
    title: str
    suite: str
    models: tuple[str, ...]
    conventions: tuple[str, ...] = ()
    square_models: tuple[str, ...] = ()
    eval_images: int | None = None  # overrides the plan's number (e.g. the costly Table 2)


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    path: Path
    dataset: dict[str, Any]
    eval_images: int
    eval_seed: int
    test_time_sparsity: float
    models: dict[str, ModelSpec]
    tables: dict[str, TableSpec]
    square: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(SQUARE_DEFAULTS))
    pgd_steps: int = 20

    def images_of(self, table: str) -> int:
        """The number of evaluation images of ``table`` (its own, else the plan's)."""
        return self.tables[table].eval_images or self.eval_images

    def models_of(self, tables: list[str]) -> list[str]:
        """The models the given tables need, in plan order, each once."""
        wanted = {m for t in tables for m in self.tables[t].models}
        return [m for m in self.models if m in wanted]


def defence_key(cfg: dict[str, Any]) -> str | None:
    """The baseline defence of a resolved training config: ``pni`` (weight noise), ``cifs``, ``tv_layer``,
    ``awp``, ``sat`` (TRADES with self-adaptive targets), ``trades``, ``fast_at`` (single-step
    training: FGSM-RS or N-FGSM), ``pgd_at``; None for plain training."""
    kwargs = cfg["model"].get("kwargs") or {}
    adv = cfg.get("adversarial") or {}
    if kwargs.get("weight_noise"):
        return "pni"
    if kwargs.get("cifs"):
        return "cifs"
    if kwargs.get("tv_layer") is not None:
        return "tv_layer"
    if adv.get("method") and adv.get("awp_gamma"):
        return "awp"
    if adv.get("method") == "trades":
        return "sat" if adv.get("self_adaptive") else "trades"
    return {"fgsm_rs": "fast_at", "nfgsm": "fast_at", "pgd": "pgd_at"}.get(adv.get("method"))


def procedure_key(spec: ModelSpec) -> str:
    """``vanilla``, ``blur``, ``iterative`` or ``fixed<level>`` (``fixed`` at 0.6) of a model; a
    baseline defence (:func:`defence_key`) on Vanilla is named by itself, on another procedure
    as ``procedure+defence``; a network with another first layer than the patch whitening gains
    ``+<stem>_stem`` (``vanilla+plain_stem``).

    Examples
    --------
    >>> procedure_key(ModelSpec("m", Path("configs/fast/cifar10_fixed.yaml"), ("procedure.sparsity=0.4",)))
    'fixed0.4'
    >>> procedure_key(ModelSpec("m", Path("configs/fast/cifar10_fast_at.yaml")))
    'fast_at'
    """
    cfg = spec.resolved()
    proc = cfg["procedure"]
    key = proc["name"]
    if proc["name"] == "fixed" and abs(proc["sparsity"] - 0.6) > 1e-9:
        key = f"fixed{proc['sparsity']:g}"
    defence = defence_key(cfg)
    if defence is not None:
        key = defence if key == "vanilla" else f"{key}+{defence}"
    if (cfg["model"].get("kwargs") or {}).get("stem", "whiten") != "whiten":
        key = f"{key}+{cfg['model']['kwargs']['stem']}_stem"
    return key


def _root_of(path: Path) -> Path:
    """The project root a plan's relative config paths start from (the plan's ``configs/`` parent)."""
    for parent in path.resolve().parents:
        if parent.name == "configs":
            return parent.parent
    return path.resolve().parent


def load_plan(path: str | os.PathLike) -> Plan:
    """Read and check a plan file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"reproduction plan not found: {path} (plans live in the project's "
                         "configs/reproduce/: run from the project's root or pass --plan)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    root = _root_of(path)
    models = {}
    for name, m in (raw.get("models") or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(name)) or not isinstance(m, dict):
            raise InputError(f"{path}: model {name!r} needs a plain name and a mapping")
        eot = m.get("eot_samples", 1)
        if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
            raise InputError(f"{path}: {name}.eot_samples must be an integer >= 1, got {eot!r}")
        models[name] = ModelSpec(name, root / m["config"], tuple(m.get("overrides") or ()), eot)
    tables = {}
    for name, t in (raw.get("tables") or {}).items():
        if t.get("suite") not in TABLE_SUITES:
            raise InputError(f"{path}: {name}.suite must be one of {', '.join(TABLE_SUITES)}")
        unknown = [m for m in t.get("models", []) if m not in models]
        if unknown:
            raise InputError(f"{path}: {name} names unknown models {unknown}")
        convs = tuple(t.get("eps_conventions") or ())
        if any(c not in ("pixel", "normalized") for c in convs):
            raise InputError(f"{path}: {name}.eps_conventions must be pixel and/or normalized")
        square = tuple(t.get("square_models") or ())
        unknown = [m for m in square if m not in models]
        if unknown:
            raise InputError(f"{path}: {name}.square_models names unknown models {unknown}")
        n_img = t.get("eval_images")
        if n_img is not None and (not isinstance(n_img, int) or n_img < 10):
            raise InputError(f"{path}: {name}.eval_images must be an integer >= 10, got {n_img!r}")
        tables[name] = TableSpec(name, t.get("title", name), t["suite"], tuple(t["models"]),
                                 convs if t["suite"] == "adversarial" else (), square, n_img)
    square_cfg = {**SQUARE_DEFAULTS, **(raw.get("square") or {})}
    square_cfg["eps"] = check_ratio(square_cfg["eps"], f"{path}: square.eps")
    pool = square_cfg["pool"]
    if pool is not None and (isinstance(pool, bool) or not isinstance(pool, int)
                             or pool < square_cfg["images"]):
        raise InputError(f"{path}: square.pool must be an integer >= square.images "
                         f"({square_cfg['images']}), got {pool!r}")
    return Plan(raw.get("name", path.stem), path, dict(raw.get("dataset") or {}),
                int(raw.get("eval_images", 2000)), int(raw.get("eval_seed", 0)),
                float(raw.get("test_time_sparsity", 0.6)), models, tables, square_cfg,
                int(raw.get("pgd_steps", 20)))
