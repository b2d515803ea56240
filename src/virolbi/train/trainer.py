r"""The trainer: one function, :func:`train`, from a configuration to a trained model and its metrics.

Recipe (paper §4, the seeds' CIFAR recipe): SGD with momentum 0.9, learning rate 0.1 with a cosine
schedule (per step, optional linear warm-up), weight decay 5e-4, global batch 128, random crop
(padding 4) and horizontal flip, cross-entropy

.. math:: \min_\theta \frac1n\sum_i \ell\big(f_\theta(\mathrm{aug}(P_e(x_i))), y_i\big)

where :math:`P_e` is the procedure's view of the image at epoch :math:`e` (identity, blur, the
smoothed ũ at a fixed or rising sparsity level; :mod:`virolbi.train.procedures`).

Reproducibility: the data order of epoch ``e`` and the augmentation of step ``s`` come from
generators seeded by ``(seed, e)`` and ``(seed, e, s)``, and the global RNG is reseeded at every
epoch, so an interrupted run resumed from its last checkpoint (``resume: true``) reaches the same
final weights, bit for bit, as an uninterrupted one; the same holds across DDP process counts up
to floating-point summation order (the global batches are the same).

Outputs in ``output_dir``: ``config.yaml`` (resolved), ``last.pt`` (a checkpoint after every
epoch, written atomically: model, optimizer, scheduler, epoch, RNG states, config, metrics),
``model.pt`` (final weights), ``metrics.csv`` / ``metrics.json`` and TensorBoard events (``tb/``).
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from virolbi.data.subset import balanced_subset
from virolbi.provenance import run_metadata
from virolbi.errors import InputError
from virolbi.io import atomic_path
from virolbi.train.config import resolve_config, save_config
from virolbi.train.model_hooks import data_fitted_modules, init_from_data
from virolbi.train.optim import Lookahead, build_optimizer
from virolbi.train.schedule import lr_factor
from virolbi.train.ddp import (DistInfo, barrier, cleanup, init_distributed, unwrap_model,
                               wrap_model)
from virolbi.train.loop import METRIC_FIELDS, TrainingRun, _tensorboard, _train_step  # noqa: F401
from virolbi.train.procedures import Procedure, build_procedure
from virolbi.train.resume import load_checkpoint, resume_run

__all__ = ["train", "TrainResult", "TrainConfig", "balanced_subset", "load_checkpoint",
           "METRIC_FIELDS"]

class TrainConfig(dict):
    """A resolved training configuration (a dict with every key of
    :data:`virolbi.train.config.DEFAULTS`).

    Examples
    --------
    >>> cfg = TrainConfig({"optim": {"epochs": 2}})
    >>> cfg["optim"]["epochs"], cfg["optim"]["lr"]
    (2, 0.1)
    """

    def __init__(self, config: Mapping[str, Any] | None = None, overrides: Iterable[str] = ()):
        super().__init__(resolve_config(config, overrides))

    @classmethod
    def from_yaml(cls, path: Any, overrides: Iterable[str] = ()) -> "TrainConfig":
        """Load a YAML config (with ``defaults:`` layering) and apply overrides."""
        from virolbi.train.config import load_config

        out = cls.__new__(cls)
        dict.__init__(out, load_config(path, overrides))
        return out


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : nn.Module
        The trained model (unwrapped from DDP), in eval mode.
    metrics : list of dict
        One row per epoch (keys :data:`METRIC_FIELDS`).
    config : dict
        The resolved configuration.
    output_dir : Path or None
    resumed_from : int or None
        The epoch count found in the checkpoint this run resumed from.
    """

    model: torch.nn.Module
    metrics: list[dict[str, Any]]
    config: dict[str, Any]
    output_dir: Path | None = None
    resumed_from: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


def _device(spec: str, info: DistInfo) -> torch.device:
    from virolbi.checks import resolve_device

    if spec == "auto" and torch.cuda.is_available():
        return torch.device(f"cuda:{info.local_rank}")
    dev = resolve_device(spec, "device")
    if dev.type == "cuda" and info.distributed and dev.index is None:
        dev = torch.device(f"cuda:{info.local_rank}")
    return dev


def _load_data(cfg: dict, train_data: Any, val_data: Any) -> tuple[Any, Any]:
    d = cfg["data"]
    if train_data is None or (val_data is None and d["val_split"]):
        from virolbi.data import load_dataset

        kw = dict(data_dir=d["data_dir"], download=d["download"])
        if train_data is None:
            train_data = load_dataset(d["name"], d["train_split"], **kw)
        if val_data is None and d["val_split"]:
            val_data = load_dataset(d["name"], d["val_split"], **kw)
    if d["train_subset"] is not None:
        train_data = train_data.subset(balanced_subset(train_data.targets, d["train_subset"],
                                                       cfg["seed"]))
    if val_data is not None and d["val_subset"] is not None:
        val_data = val_data.subset(balanced_subset(val_data.targets, d["val_subset"], cfg["seed"]))
    # lazily decoded sets (files, tar members) are decoded once, not at every batch
    train_data, val_data = (ds.materialize() if hasattr(ds, "materialize") else ds
                            for ds in (train_data, val_data))
    return train_data, val_data


def _build_model(cfg: dict, model: Any, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(cfg["seed"])
    if model is not None:
        return model() if not isinstance(model, torch.nn.Module) and callable(model) else model
    from virolbi.models import create_model

    m = cfg["model"]
    return create_model(m["name"], num_classes, width=m["width"], pretrained=m["pretrained"],
                        image_size=m["image_size"], drop_head=m["drop_head"], **(m["kwargs"] or {}))


def _fit_to_training_images(cfg: dict, net: torch.nn.Module, procedure: Procedure,
                            train_data: Any, device: torch.device) -> None:
    """Fit the model's data-fitted layers (patch whitening) on a class-balanced set of training
    images, as the procedure shows them in the first epoch (unaugmented)."""
    if not data_fitted_modules(net):
        return
    m = min(cfg["model"]["data_init_images"], len(train_data))
    idx = balanced_subset(np.asarray(train_data.targets), m, cfg["seed"])
    x = procedure.fetch(idx, 0, cfg["optim"]["epochs"]).to(device).float() / 255.0
    init_from_data(net, procedure.transform(x))


def train(config: Mapping[str, Any] | TrainConfig, *, model: Any = None, train_data: Any = None,
          val_data: Any = None, callbacks: Iterable[Callable[[int, dict], None]] = (),
          path_fn: Any = None) -> TrainResult:
    r"""Train a classifier with one of the paper's procedures (§3.2) and the SGD/cosine recipe.

    Parameters
    ----------
    config : dict or TrainConfig
        A (partial) configuration; missing keys take :data:`virolbi.train.config.DEFAULTS`.
        ``procedure.name`` picks Vanilla / Blur / Fixed / Iterative; ``model.pretrained`` turns any
        of them into fine-tuning; ``resume: true`` continues from ``<output_dir>/last.pt``.
    model : nn.Module or callable, optional
        Use this model (or call this factory) instead of ``create_model(config.model...)``.
    train_data, val_data : ImageDataset, optional
        Use these instead of ``load_dataset(config.data...)``.
    callbacks : iterable of callable
        ``cb(epoch, metrics_row)`` after every epoch's checkpoint (e.g. to stop early by raising).
    path_fn : callable, optional
        Replacement for :func:`virolbi.image_path` in the smoothed cache (tests, other smoothers).

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> import numpy as np, torch
    >>> from virolbi.data.dataset import ImageDataset
    >>> rng = np.random.default_rng(0)
    >>> ds = ImageDataset(rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), np.arange(16) % 2)
    >>> net = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    >>> res = train({"optim": {"epochs": 2, "batch_size": 8}, "output_dir": None,
    ...              "logging": {"progress": False}}, model=net, train_data=ds, val_data=ds)
    >>> [row["epoch"] for row in res.metrics], 0 <= res.final["val_acc"] <= 1
    ([1, 2], True)
    """
    cfg = dict(config) if isinstance(config, TrainConfig) else resolve_config(config)
    info = init_distributed(cfg["ddp"]["backend"],
                            use_cuda=None if cfg["device"] == "auto" else cfg["device"].startswith("cuda"),
                            timeout_minutes=cfg["ddp"]["timeout_minutes"])
    threads = cfg["compute"]["threads"]
    with _caller_state_kept():
        if threads:
            torch.set_num_threads(threads)
        try:
            result = _train(cfg, info, model, train_data, val_data, list(callbacks), path_fn)
            barrier(info)  # leave together: destroying a gloo group while a peer still runs aborts
            return result
        finally:
            cleanup(info)


@contextlib.contextmanager
def _caller_state_kept():
    """Training seeds the global generators (torch, NumPy, random) and may switch on deterministic
    algorithms and change the thread count; the caller gets all of them back as they were."""
    state = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])
        torch.use_deterministic_algorithms(state[3], warn_only=state[4])
        torch.set_num_threads(state[5])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _seed_everything(cfg: dict) -> None:
    """Determinism and the global seeds of the run (restored for the caller by :func:`train`)."""
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"] % 2**32)
    random.seed(cfg["seed"])


def _prepare_procedure(cfg: dict, info: DistInfo, train_data: Any, val_data: Any,
                       path_fn: Any) -> tuple[Procedure, np.ndarray | None, float]:
    """The procedure with its smoothed caches built (rank 0 builds and verifies them, the others
    then open them without reading them through), the smoothed validation images when validation smooths at test time, and the seconds."""
    t0 = time.perf_counter()
    procedure: Procedure = build_procedure(cfg["procedure"], path_fn=path_fn)
    progress = cfg["logging"]["progress"] and info.is_main
    val_pre = None
    for turn in ((0,) if not info.distributed else (0, 1)):
        if (turn == 0) == info.is_main:
            procedure.prepare(train_data, progress=progress or None if info.is_main else False,
                              verify=info.is_main)
            tts = cfg["eval"]["test_time_sparsity"]
            if val_data is not None and tts is not None and procedure.test_preprocess(
                    torch.zeros(1, 3, 8, 8)) is None:
                from virolbi.train.smoothed_cache import smoothed_images

                val_pre = smoothed_images(
                    np.asarray(val_data.data), [tts], cache_dir=cfg["procedure"]["cache_dir"],
                    batch_size=cfg["procedure"]["cache_batch_size"], progress=progress or None,
                    verify=info.is_main, path_fn=path_fn, **(cfg["procedure"]["smoother"] or {})).at(tts)
        barrier(info)
    return procedure, val_pre, time.perf_counter() - t0


def _steps_per_epoch(o: dict, n: int, world: int) -> int:
    gb = o["batch_size"]
    steps = n // gb + (1 if n % gb >= world and not o["drop_last"] else 0)
    if o["max_steps_per_epoch"]:
        steps = min(steps, o["max_steps_per_epoch"])
    if steps < 1:
        raise InputError(f"optim.drop_last with {n} training images and batch {gb} leaves no step")
    return steps


def _build_training(cfg: dict, info: DistInfo, device: torch.device, model: Any, procedure: Any,
                    train_data: Any, num_classes: int) -> tuple:
    """Model (fitted to the data where it has data-fitted layers), optimiser, schedule, lookahead."""
    o = cfg["optim"]
    net = _build_model(cfg, model, num_classes).to(device)
    _fit_to_training_images(cfg, net, procedure, train_data, device)
    if cfg["compute"]["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    net = wrap_model(net, info, device, cfg["ddp"]["sync_batchnorm"])
    opt = build_optimizer(o, net)
    steps = _steps_per_epoch(o, len(train_data), info.world_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(o, steps))
    la = o["lookahead"]
    lookahead = (Lookahead(unwrap_model(net), la["every"], la["decay"], la["power"],
                           o["epochs"] * steps) if la["every"] else None)
    return net, opt, sched, lookahead, steps


def _hold_out_monitor(cfg: dict, train_data: Any, device: torch.device) -> tuple[Any, Any]:
    """(the training set, the robustness monitor): adversarial training with a monitor holds
    ``adversarial.monitor.images`` class-balanced training images out of training to watch for
    catastrophic overfitting on them (:class:`~virolbi.train.adversarial.RobustnessMonitor`)."""
    from virolbi.data.dataset import batch_of
    from virolbi.train.adversarial import RobustnessMonitor

    a = cfg["adversarial"]
    m = a["monitor"]
    if a["method"] is None or not m["images"]:
        return train_data, None
    targets = np.asarray(train_data.targets)
    if m["images"] >= len(targets):
        raise InputError(f"adversarial.monitor.images ({m['images']}) must be smaller than the "
                         f"{len(targets)} training images")
    held = balanced_subset(targets, m["images"], cfg["seed"])
    x, y = batch_of(train_data, held)
    x = x.to(device).float() / 255.0 if x.dtype == torch.uint8 else x.to(device)
    monitor = RobustnessMonitor(x, y.to(device), a["eps"], m["pgd_steps"], m["drop"],
                                cfg["eval"]["batch_size"])
    return train_data.subset(np.setdiff1d(np.arange(len(targets)), held)), monitor


def _open_outputs(cfg: dict, run: TrainingRun, notes: list[str]) -> None:
    """The run folder with its resolved config and TensorBoard writer; the notes printed."""
    if run.out is not None and run.info.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.out / "config.yaml")
        run.writer = _tensorboard(run.out, cfg["logging"]["tensorboard"], notes)
    for note in notes:
        if run.info.is_main:
            print(f"virolbi train: note: {note}", file=sys.stderr)


def _train(cfg: dict, info: DistInfo, model: Any, train_data: Any, val_data: Any,
           callbacks: list, path_fn: Any) -> TrainResult:
    """The steps of a training: seeds, data, procedure, model and optimiser, resume, outputs, the
    epoch loop (:class:`~virolbi.train.loop.TrainingRun`), the final weights."""
    device = _device(cfg["device"], info)
    _seed_everything(cfg)
    out = Path(cfg["output_dir"]) if cfg["output_dir"] else None
    train_data, val_data = _load_data(cfg, train_data, val_data)
    num_classes = cfg["data"]["num_classes"] or len(getattr(train_data, "classes", []) or
                                                     np.unique(train_data.targets))
    train_data, monitor = _hold_out_monitor(cfg, train_data, device)
    n = len(train_data)
    if cfg["adversarial"]["self_adaptive"] is not None and info.world_size > 1:
        raise InputError("adversarial.self_adaptive (SAT) keeps one target per training image in "
                         f"one process; run it without DDP (got {info.world_size} processes)")
    if n < info.world_size:
        raise InputError(f"the training set has {n} images, fewer than the {info.world_size} "
                         "processes")
    procedure, val_pre, prepare_time = _prepare_procedure(cfg, info, train_data, val_data, path_fn)
    net, opt, sched, lookahead, steps = _build_training(cfg, info, device, model, procedure,
                                                        train_data, num_classes)
    from virolbi.train.adversarial import AdversarialTraining

    run = TrainingRun(cfg, info, device, procedure, train_data, val_data, net, opt, sched,
                      lookahead, steps, out, {}, val_pre, prepare_time,
                      AdversarialTraining.from_config(cfg["adversarial"], train_data.targets,
                                                      num_classes), monitor)
    notes: list[str] = []
    resumed_from = resume_run(cfg, out / "last.pt" if out else None, run, notes)
    meta = run_metadata(device)
    run.run_info.update({**meta["versions"], "git_commit": meta["git_commit"],
                         "device": str(device), "world_size": info.world_size,
                         "procedure": procedure.describe(), "train_images": n,
                         "val_images": len(val_data) if val_data is not None else 0,
                         "steps_per_epoch": steps, "notes": notes})
    _open_outputs(cfg, run, notes)
    try:
        run.run(resumed_from or 0, callbacks)
        final = unwrap_model(net)
        if monitor is not None and monitor.best_state is not None:  # best PGD accuracy
            final.load_state_dict(monitor.best_state)
        if info.is_main and out is not None:
            with atomic_path(out / "model.pt") as tmp:
                torch.save(final.state_dict(), tmp)
    finally:
        if run.writer is not None:
            run.writer.close()
    final.eval()
    return TrainResult(final, run.rows, cfg, out, resumed_from, run.run_info)
