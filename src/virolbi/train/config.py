"""Training configurations: YAML files layered with ``defaults:`` and ``key=value`` overrides.

A configuration is a nested mapping. :data:`DEFAULTS` holds every key the trainer knows, with its
default; a YAML file may list other files under ``defaults:`` (paths relative to the file, ``.yaml``
optional), which are merged first, in order, and the file's own keys go on top. Command-line
overrides ``section.key=value`` come last; their values are parsed as YAML (``0.1`` is a float,
``true`` a bool, ``null`` None, ``[0.3, 0.5]`` a list). Unknown keys are an error (a typo would
otherwise be silently ignored), except under the free-form sections listed in :data:`FREE_FORM`.

The resolved configuration is saved beside the results (``config.yaml`` in the run directory), so
every run can be repeated from its own output folder.
"""

from __future__ import annotations

import copy
import importlib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from virolbi.errors import InputError

__all__ = ["DEFAULTS", "FREE_FORM", "PROCEDURES", "load_config", "merge", "apply_overrides",
           "config_task", "parse_override", "resolve_config", "validate_config", "save_config", "config_to_yaml",
           "check_names"]

PROCEDURES = ("vanilla", "blur", "fixed", "iterative")

#: Every key the trainer reads, with its default (the seeds' CIFAR recipe, paper §4).
DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "output_dir": "runs/{name}",
    "device": "auto",            # auto | cpu | cuda | cuda:N
    "resume": False,             # True: continue from <output_dir>/last.pt when it exists
    "deterministic": False,      # torch.use_deterministic_algorithms (GPU runs; CPU is already)
    "data": {
        "name": "cifar10-jpeg",  # anything virolbi.data.load_dataset accepts
        "data_dir": None,
        "download": False,
        "train_split": "train",
        "val_split": "val",
        "train_subset": None,    # int: a class-balanced, seeded subset of the training split
        "val_subset": None,
        "num_classes": None,     # None: from the dataset
    },
    "model": {
        "name": "resnet18",
        "width": 1.0,
        "pretrained": None,      # a checkpoint to fine-tune (any procedure)
        "drop_head": False,      # fine-tuning to a new number of classes
        "image_size": None,
        "kwargs": {},
        "data_init_images": 5000,  # images that data-fitted layers (patch whitening) are fitted on
    },
    "procedure": {
        "name": "vanilla",       # vanilla | blur | fixed | iterative
        "sparsity": 0.6,         # fixed: the level (0.6 CIFAR, 0.3 ImageNet100)
        "levels": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],   # iterative: schedule levels, coarse to fine
        "blur_kernel": None,     # blur: None -> kernel 3 (32 px) / 7 (224 px), sigma 2
        "blur_sigma": 2.0,
        "smoother": {"kappa": 5.0, "nu": 1.0, "group": True},
        "cache_dir": None,       # None: $VIROLBI_CACHE or ~/.cache/virolbi
        "cache_batch_size": 256,
        "store": None,           # fixed/iterative: a folder written by virolbi smooth-dataset
    },
    "optim": {
        "name": "sgd",           # sgd | adamw
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 5e-4,
        "epochs": 200,
        "batch_size": 128,       # global batch (split over DDP processes)
        "scheduler": "cosine",   # cosine | linear | step | constant
        "warmup_epochs": 0,
        "warmup_fraction": 0.0,  # > 0: warm-up over this fraction of all steps (airbench 0.23)
        "warmup_start_factor": 0.0,  # warm-up starts at this factor (0: (k+1)/W)
        "final_lr_factor": 0.0,  # cosine/linear decay ends at this factor (airbench 0.07)
        "norm_bias_lr_scale": 1.0,   # BatchNorm biases: lr x s, weight decay / s (airbench 64)
        "drop_last": False,      # drop the last incomplete batch of every epoch
        "lookahead": {"every": 0, "decay": 0.7737809375, "power": 3.0},  # every 0: off
        "step_milestones": [],   # step: epochs at which lr *= step_gamma
        "step_gamma": 0.1,
        "label_smoothing": 0.0,
        "grad_clip": None,
        "max_steps_per_epoch": None,   # cap (tests and benchmarks)
    },
    "augment": {"crop_padding": 4, "flip": True,   # flip: true | false | alternating
                "pad_mode": "zeros"},              # zeros | reflect
    "compute": {
        "precision": "float32",  # float32 | bfloat16 (autocast of the forward pass)
        "channels_last": False,
        "micro_batch": None,     # int: split each batch, accumulate gradients (same update)
        "threads": None,         # int: torch threads during the run (restored after)
    },
    "eval": {
        "batch_size": 256,
        "every": 1,              # validate every N epochs (and after the last)
        "test_time_sparsity": None,    # e.g. 0.6: also report accuracy on smoothed val images
    },
    "adversarial": {             # adversarial training (virolbi.train.adversarial); method null: off
        "method": None,          # null | fgsm_rs (fast AT, Wong et al. 2020) | nfgsm (de Jorge et al.
                                 # 2022) | pgd (Madry et al. 2018) | trades (Zhang et al. 2019)
        "eps": 8 / 255,          # L-inf radius on [0, 1] pixels; "8/255" is accepted
        "step_size": None,       # null: 1.25 eps (fgsm_rs), eps (nfgsm), eps/4 (pgd: 2/255 at 8/255)
        "steps": 7,              # pgd iterations
        "clean_weight": 0.0,     # loss = (1 - w) adversarial + w clean (PNI: 0.5)
        "awp_gamma": 0.0,        # > 0: adversarial weight perturbation (AWP, Wu et al. 2020: 5e-3)
        "trades_beta": 6.0,      # method trades: weight of TRADES's KL term (SAT: 6)
        # SAT (Huang et al. 2020), with method trades: null, or {momentum: 0.9, start_epoch: E_s}
        "self_adaptive": None,
        # FGSM/PGD accuracy on training images held out of training, after every epoch: detects
        # catastrophic overfitting and keeps the weights with the best PGD accuracy (images 0: off)
        "monitor": {"images": 512, "pgd_steps": 10, "drop": 0.1},
    },
    "logging": {"tensorboard": True, "progress": True,
                "keep_checkpoints": False},  # true (every epoch) or a list of epochs, e.g. [1, 2, 5]
    "ddp": {"backend": "auto", "sync_batchnorm": True, "timeout_minutes": 360},
}

#: Sections whose keys are passed through unchecked (model options, smoother options).
FREE_FORM = ("model.kwargs", "procedure.smoother")


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``top`` replaces ``base``.

    Examples
    --------
    >>> merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}})
    {'a': {'x': 1, 'y': 3}, 'b': 1}
    """
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _find(path: Path) -> Path:
    if not path.exists() and path.suffix not in (".yaml", ".yml"):
        return path.with_name(path.name + ".yaml")
    return path


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML text and where, in one line (PyYAML's own message spans several,
    with the offending line quoted)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


def _read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping; a missing, malformed or empty file is one line (an empty file would
    otherwise silently train the defaults)."""
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML ({_yaml_problem(exc)})") from None
    if data is None:
        raise InputError(f"{path} is empty: a config names at least what to train (e.g. "
                         "'defaults: [../base/fast]', or model:, procedure: and data: sections)")
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def _load_layered(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = _find(path).resolve()
    if path in seen:
        chain = " -> ".join(p.name for p in seen + (path,))
        raise InputError(f"config defaults form a cycle: {chain}")
    data = _read_yaml(path)
    parents = data.pop("defaults", None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise InputError(f"{path}: 'defaults' must be a list of config paths, got {parents!r}")
    out: dict[str, Any] = {}
    for parent in parents:
        out = merge(out, _load_layered(path.parent / parent, seen + (path,)))
    return merge(out, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], parsed value)``; the value is read as YAML.

    Examples
    --------
    >>> parse_override("optim.lr=0.05")
    (['optim', 'lr'], 0.05)
    >>> parse_override("procedure.levels=[0.3, 0.8]")
    (['procedure', 'levels'], [0.3, 0.8])
    >>> parse_override("model.pretrained=null")
    (['model', 'pretrained'], None)
    """
    key, sep, raw = str(text).partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise InputError(f"an override must look like section.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (see :func:`parse_override`) on top of ``config``."""
    out = copy.deepcopy(dict(config))
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                if k in node and node[k] is not None:
                    raise InputError(f"override {text!r}: {k!r} is not a section")
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return out


def _check_keys(config: Mapping[str, Any], reference: Mapping[str, Any], prefix: str = "") -> None:
    for key, value in config.items():
        where = f"{prefix}{key}"
        if key not in reference:
            known = ", ".join(sorted(reference))
            raise InputError(f"unknown config key {where!r} (known keys{' in ' + prefix[:-1] if prefix else ''}: "
                             f"{known})")
        if where in FREE_FORM:
            if value is not None and not isinstance(value, Mapping):
                raise InputError(f"config key {where!r} must be a mapping, got {value!r}")
            continue
        if isinstance(reference[key], dict):
            if not isinstance(value, Mapping):
                raise InputError(f"config key {where!r} must be a section (mapping), got {value!r}")
            _check_keys(value, reference[key], where + ".")


def _int(cfg: dict, section: str, key: str, low: int, *, optional: bool = False) -> None:
    value = cfg[section][key]
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{section}.{key} must be an integer >= {low}"
                         f"{' or null' if optional else ''}, got {value!r}")


def _num(cfg: dict, section: str, key: str, low: float, *, strict: bool = False,
         optional: bool = False) -> None:
    value = cfg[section][key]
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        value > low if strict else value >= low)
    if not ok:
        raise InputError(f"{section}.{key} must be a number {'>' if strict else '>='} {low:g}, "
                         f"got {value!r}")


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check keys and values of a full configuration; return it (a plain dict)."""
    cfg = dict(config)
    _check_keys(cfg, DEFAULTS)
    check_names(cfg)
    proc = cfg["procedure"]
    if proc["name"] not in PROCEDURES:
        raise InputError(f"procedure.name must be one of {', '.join(PROCEDURES)}, got "
                         f"{proc['name']!r} (fine-tuning = any procedure with model.pretrained set)")
    from virolbi.checks import check_levels, check_unit_interval

    check_unit_interval(proc["sparsity"], "procedure.sparsity")
    proc["levels"] = list(check_levels(proc["levels"], "procedure.levels"))
    if cfg["eval"]["test_time_sparsity"] is not None:
        check_unit_interval(cfg["eval"]["test_time_sparsity"], "eval.test_time_sparsity")
    for key in ("epochs", "batch_size"):
        _int(cfg, "optim", key, 1)
    _int(cfg, "optim", "warmup_epochs", 0)
    _int(cfg, "optim", "max_steps_per_epoch", 1, optional=True)
    _num(cfg, "optim", "lr", 0.0, strict=True)
    for key in ("momentum", "weight_decay", "label_smoothing", "step_gamma"):
        _num(cfg, "optim", key, 0.0)
    _num(cfg, "optim", "grad_clip", 0.0, strict=True, optional=True)
    if cfg["optim"]["name"] not in ("sgd", "adamw"):
        raise InputError(f"optim.name must be 'sgd' or 'adamw', got {cfg['optim']['name']!r}")
    if cfg["optim"]["scheduler"] not in ("cosine", "linear", "step", "constant"):
        raise InputError(f"optim.scheduler must be cosine, linear, step or constant, got "
                         f"{cfg['optim']['scheduler']!r}")
    _validate_recipe(cfg)
    from virolbi.train.adversarial import validate_adversarial

    cfg["adversarial"] = validate_adversarial(cfg["adversarial"])
    _int(cfg, "augment", "crop_padding", 0)
    _int(cfg, "eval", "batch_size", 1)
    _int(cfg, "eval", "every", 1)
    _int(cfg, "data", "train_subset", 1, optional=True)
    _int(cfg, "data", "val_subset", 1, optional=True)
    _int(cfg, "data", "num_classes", 1, optional=True)
    _int(cfg, "procedure", "cache_batch_size", 1)
    if proc["store"] is not None and not isinstance(proc["store"], str):
        raise InputError(f"procedure.store must be a folder path, got {proc['store']!r}")
    _num(cfg, "model", "width", 0.0, strict=True)
    keep = cfg["logging"]["keep_checkpoints"]
    if not isinstance(keep, bool) and not (isinstance(keep, list) and all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in keep)):
        raise InputError(f"logging.keep_checkpoints must be true, false or a list of epochs "
                         f"(integers >= 1), got {keep!r}")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool) or cfg["seed"] < 0:
        raise InputError(f"seed must be a non-negative integer, got {cfg['seed']!r}")
    return cfg


def check_names(cfg: Mapping[str, Any]) -> None:
    """Resolve every name of a configuration before any work: the model (a registered model, or
    ``torchvision:``/``timm:`` with that library installed and knowing the architecture), the data
    set (a known name or an existing path) and its splits. The procedure, optimiser, scheduler and
    adversarial method are checked with their options (:func:`validate_config`).

    Examples
    --------
    >>> check_names(merge(DEFAULTS, {"model": {"name": "resnet9000"}}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    virolbi.errors.InputError: model.name 'resnet9000' is not a model; expected one of airbench, ...
    """
    _check_model_name(cfg["model"]["name"])
    from virolbi.data import DATASETS

    d = cfg["data"]

    name = d["name"]
    if not isinstance(name, str) or not (name.lower() in DATASETS or Path(name).expanduser().exists()):
        raise InputError(f"data.name {name!r} is neither a data set ({', '.join(DATASETS)}) nor "
                         "an existing folder or archive")
    for key in ("train_split", "val_split"):
        split = d[key]
        if not (split in ("train", "val", "test") or (key == "val_split" and not split)):
            raise InputError(f"data.{key} must be train, val or test"
                             f"{' (or null: no validation)' if key == 'val_split' else ''}, "
                             f"got {split!r}")


def _check_model_name(name: Any) -> None:
    """``model.name``: a registered model, or ``torchvision:<arch>`` / ``timm:<arch>`` whose library
    is installed and knows ``arch`` (nothing is built or downloaded)."""
    from virolbi.models import list_models  # not at the top: virolbi.models imports virolbi.train

    known = list_models()
    if isinstance(name, str) and name in known:
        return
    lib, sep, arch = str(name).partition(":")
    if not (isinstance(name, str) and sep and lib in ("torchvision", "timm") and arch):
        raise InputError(f"model.name {name!r} is not a model; expected one of {', '.join(known)}, "
                         "torchvision:<name> or timm:<name>")
    try:
        module = importlib.import_module("torchvision.models" if lib == "torchvision" else "timm")
    except ImportError:
        raise InputError(f"model.name {name!r} needs {lib}, which is not installed (pip install "
                         "virolbi[vision])") from None
    found = arch in module.list_models() if lib == "torchvision" else module.is_model(arch)
    if not found:
        raise InputError(f"model.name {name!r}: {lib} has no model {arch!r}")


def _validate_recipe(cfg: dict) -> None:
    """The options of the fast recipe: schedule shape, lookahead, augmentation, compute."""
    o = cfg["optim"]
    for key in ("warmup_fraction", "warmup_start_factor", "final_lr_factor"):
        _num(cfg, "optim", key, 0.0)
        if o[key] > 1:
            raise InputError(f"optim.{key} must be in [0, 1], got {o[key]!r}")
    _num(cfg, "optim", "norm_bias_lr_scale", 0.0, strict=True)
    if not isinstance(o["drop_last"], bool):
        raise InputError(f"optim.drop_last must be true or false, got {o['drop_last']!r}")
    la = o["lookahead"]
    if isinstance(la["every"], bool) or not isinstance(la["every"], int) or la["every"] < 0:
        raise InputError(f"optim.lookahead.every must be an integer >= 0, got {la['every']!r}")
    for key in ("decay", "power"):
        if isinstance(la[key], bool) or not isinstance(la[key], (int, float)) or la[key] < 0:
            raise InputError(f"optim.lookahead.{key} must be a number >= 0, got {la[key]!r}")
    a = cfg["augment"]
    if a["flip"] not in (True, False, "alternating"):
        raise InputError(f"augment.flip must be true, false or alternating, got {a['flip']!r}")
    if a["pad_mode"] not in ("zeros", "reflect"):
        raise InputError(f"augment.pad_mode must be zeros or reflect, got {a['pad_mode']!r}")
    check_compute_precision(cfg["compute"])
    _int(cfg, "compute", "micro_batch", 1, optional=True)
    _int(cfg, "compute", "threads", 1, optional=True)
    _int(cfg, "model", "data_init_images", 1)


def check_compute_precision(c: Mapping[str, Any]) -> None:
    """``compute.precision`` (float32 | bfloat16) and ``compute.channels_last`` (bool), one line each
    (shared by the classifier and the denoiser trainers)."""
    if c["precision"] not in ("float32", "bfloat16"):
        raise InputError(f"compute.precision must be float32 or bfloat16, got {c['precision']!r}")
    if not isinstance(c["channels_last"], bool):
        raise InputError(f"compute.channels_last must be true or false, got {c['channels_last']!r}")


def resolve_config(config: Mapping[str, Any] | None = None,
                   overrides: Iterable[str] = ()) -> dict[str, Any]:
    """:data:`DEFAULTS` ← ``config`` ← ``overrides``, validated; ``output_dir`` formatted with ``name``.

    Examples
    --------
    >>> cfg = resolve_config({"optim": {"epochs": 3}}, ["optim.lr=0.05", "name=demo"])
    >>> cfg["optim"]["epochs"], cfg["optim"]["lr"], cfg["output_dir"]
    (3, 0.05, 'runs/demo')
    """
    cfg = merge(DEFAULTS, dict(config or {}))
    cfg = apply_overrides(cfg, overrides)
    cfg = validate_config(cfg)
    if isinstance(cfg["output_dir"], str) and "{name}" in cfg["output_dir"]:
        cfg["output_dir"] = cfg["output_dir"].replace("{name}", str(cfg["name"]))
    return cfg


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a YAML config (following its ``defaults:`` chain), apply overrides, validate.

    Parameters
    ----------
    path : path-like
        A YAML file, e.g. ``configs/small/cifar10_iterative.yaml``.
    overrides : iterable of str
        ``section.key=value`` strings, applied last.

    Returns
    -------
    dict
        The resolved configuration (every key of :data:`DEFAULTS` present).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "base.yaml").write_text("optim: {lr: 0.1, epochs: 10}\\n")
    >>> _ = (d / "run.yaml").write_text("defaults: [base]\\noptim: {epochs: 2}\\n")
    >>> cfg = load_config(d / "run.yaml", ["optim.lr=0.01"])
    >>> cfg["optim"]["lr"], cfg["optim"]["epochs"], cfg["optim"]["momentum"]
    (0.01, 2, 0.9)
    """
    return resolve_config(_load_layered(Path(path), ()), overrides)


def config_to_yaml(config: Mapping[str, Any]) -> str:
    """The configuration as YAML text (keys in :data:`DEFAULTS` order)."""
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)


def save_config(config: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the resolved configuration as YAML, atomically."""
    from virolbi.io import save_text

    return save_text(config_to_yaml(config), path)


def config_task(path: str | Path) -> str | None:
    """The ``task`` key of a config file (after its ``defaults:`` chain): ``denoising`` for the
    denoiser configs, ``None`` for classifiers."""
    return _load_layered(Path(path), ()).get("task")
