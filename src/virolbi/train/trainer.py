r"""The trainer: one function, :func:`train`, from a configuration to a trained model and its metrics.

Recipe (SPEC §2, the seeds' CIFAR recipe): SGD with momentum 0.9, learning rate 0.1 with a cosine
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
import csv
import io
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from virolbi.data.dataset import batch_of
from virolbi.data.subset import balanced_subset
from virolbi.provenance import run_metadata
from virolbi.errors import InputError
from virolbi.io import atomic_path, save_json, save_text
from virolbi.train.augment import alternating_flips, apply_crop_flip, sample_crop_flip
from virolbi.train.config import resolve_config, save_config
from virolbi.train.model_hooks import data_fitted_modules, init_from_data
from virolbi.train.model_hooks import start_epoch as notify_epoch_start
from virolbi.train.optim import Lookahead, build_optimizer
from virolbi.train.schedule import lr_factor
from virolbi.train.ddp import (DistInfo, all_reduce_sum, barrier, cleanup, init_distributed, shard,
                               unwrap_model, wrap_model)
from virolbi.train.procedures import Procedure, build_procedure

__all__ = ["train", "TrainResult", "TrainConfig", "balanced_subset", "load_checkpoint",
           "METRIC_FIELDS"]

METRIC_FIELDS = ("epoch", "lr", "sparsity", "train_loss", "train_acc", "val_loss", "val_acc",
                 "val_acc_pre", "epoch_time", "prepare_time")

# Keys that may differ between an interrupted run and its resumption.
_RESUME_FREE = ("name", "resume", "logging", "device", "output_dir", "eval")


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


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix-style), so nearby seeds give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


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


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Any) -> dict[str, Any]:
    """Read a training checkpoint (``torch.load(weights_only=True)``: nothing is unpickled)."""
    from virolbi.io import load_torch_file

    return load_torch_file(path, "checkpoint")


#: What a training checkpoint written by :func:`train` holds.
_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "config")


def _check_resumable(ckpt: Any, path: Path, lookahead: bool) -> None:
    """One line when ``ckpt`` is not a training checkpoint of this trainer (e.g. bare weights)."""
    if not isinstance(ckpt, Mapping):
        raise InputError(f"cannot resume from {path}: not a training checkpoint (a "
                         f"{type(ckpt).__name__}, expected the dict virolbi train writes)")
    missing = [k for k in _CHECKPOINT_KEYS + (("lookahead",) if lookahead else ()) if k not in ckpt]
    if missing:
        raise InputError(f"cannot resume from {path}: not a training checkpoint of virolbi train "
                         f"(no {', '.join(missing)}); to start from weights use model.pretrained")


def _comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in cfg.items() if k not in _RESUME_FREE}
    if isinstance(out.get("compute"), Mapping):
        out["compute"] = {k: v for k, v in out["compute"].items() if k != "threads"}
    return out


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The dotted key of the first difference between two nested configs (None if equal)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return prefix + str(key)
            found = _first_difference(a[key], b[key], f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if a == b else prefix.rstrip(".") or "config"


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


def _autocast(device: torch.device, precision: str) -> Any:
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                scale: float, cfg: dict, device: torch.device) -> tuple[float, int]:
    """One optimiser step on the batch ``(x, y)``, in micro-batches whose gradients accumulate.

    The loss of each micro-batch is its summed cross-entropy times ``scale`` (1 / global batch,
    times the process count under DDP), so the step is the same whatever the micro-batch size
    (up to floating-point order and BatchNorm statistics). Returns (summed loss, correct).
    """
    comp, o = cfg["compute"], cfg["optim"]
    if comp["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    size = comp["micro_batch"] or x.shape[0]
    chunks = list(zip(x.split(size), y.split(size)))
    opt.zero_grad(set_to_none=True)
    loss_total, correct = 0.0, 0
    for i, (xs, ys) in enumerate(chunks):
        sync = i == len(chunks) - 1 or not hasattr(net, "no_sync")
        with (contextlib.nullcontext() if sync else net.no_sync()):
            with _autocast(device, comp["precision"]):
                logits = net(xs)
            loss_sum = F.cross_entropy(logits.float(), ys, reduction="sum",
                                       label_smoothing=o["label_smoothing"])
            (loss_sum * scale).backward()
        loss_total += loss_sum.item()
        correct += int((logits.argmax(1) == ys).sum().item())
    if o["grad_clip"]:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                       o["grad_clip"])
    opt.step()
    return loss_total, correct


def _write_metrics(out: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_FIELDS})
    save_text(buf.getvalue(), out / "metrics.csv")
    save_json({"info": info, "epochs": rows}, out / "metrics.json")


def _tensorboard(out: Path, enabled: bool, notes: list[str]) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        notes.append("tensorboard is not installed: TensorBoard logging skipped "
                     "(pip install virolbi[tensorboard])")
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


@torch.no_grad()
def _evaluate(model: torch.nn.Module, dataset: Any, info: DistInfo, device: torch.device,
              batch_size: int, preprocess: Callable[[torch.Tensor], torch.Tensor] | None,
              images: np.ndarray | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) over ``dataset`` (or over ``images``, uint8 (N, H, W, C), with the
    dataset's labels), sharded over processes."""
    model.eval()
    n = len(dataset)
    idx = shard(torch.arange(n), info.rank, info.world_size)
    totals = torch.zeros(3, dtype=torch.float64)
    for start in range(0, idx.numel(), batch_size):
        b = idx[start:start + batch_size].numpy()
        if images is not None:
            x = torch.from_numpy(np.ascontiguousarray(np.take(images, b, axis=0).transpose(0, 3, 1, 2)))
            y = torch.as_tensor(np.asarray(dataset.targets)[b])
        else:
            x, y = batch_of(dataset, b)
        x = x.to(device).float() / 255.0 if x.dtype == torch.uint8 else x.to(device)
        y = y.to(device)
        if preprocess is not None:
            x = preprocess(x)
        logits = model(x)
        totals += torch.tensor([F.cross_entropy(logits, y, reduction="sum").item(),
                                (logits.argmax(1) == y).sum().item(), y.numel()], dtype=torch.float64)
    totals = all_reduce_sum(totals, info)
    return float(totals[0] / max(totals[2], 1)), float(totals[1] / max(totals[2], 1))


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


def _train(cfg: dict, info: DistInfo, model: Any, train_data: Any, val_data: Any,
           callbacks: list, path_fn: Any) -> TrainResult:
    device = _device(cfg["device"], info)
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True)
    seed = cfg["seed"]
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    out = Path(cfg["output_dir"]) if cfg["output_dir"] else None
    main = info.is_main
    notes: list[str] = []
    progress = cfg["logging"]["progress"] and main

    train_data, val_data = _load_data(cfg, train_data, val_data)
    num_classes = cfg["data"]["num_classes"] or len(getattr(train_data, "classes", []) or
                                                     np.unique(train_data.targets))
    n = len(train_data)
    o = cfg["optim"]
    world = info.world_size
    if n < world:
        raise InputError(f"the training set has {n} images, fewer than the {world} processes")

    # --- procedure (rank 0 builds the smoothed caches, the others then read them) ---
    t0 = time.perf_counter()
    procedure: Procedure = build_procedure(cfg["procedure"], path_fn=path_fn)
    val_pre_images = None
    for turn in ((0,) if not info.distributed else (0, 1)):
        if (turn == 0) == main:
            procedure.prepare(train_data, progress=progress or None if main else False)
            tts = cfg["eval"]["test_time_sparsity"]
            if val_data is not None and tts is not None and procedure.test_preprocess(
                    torch.zeros(1, 3, 8, 8)) is None:
                from virolbi.train.smoothed_cache import smoothed_images

                val_pre_images = smoothed_images(
                    np.asarray(val_data.data), [tts], cache_dir=cfg["procedure"]["cache_dir"],
                    batch_size=cfg["procedure"]["cache_batch_size"], progress=progress or None,
                    path_fn=path_fn, **(cfg["procedure"]["smoother"] or {})).at(tts)
        barrier(info)
    prepare_time = time.perf_counter() - t0

    # --- model, optimizer, schedule ---
    net = _build_model(cfg, model, num_classes).to(device)
    _fit_to_training_images(cfg, net, procedure, train_data, device)
    if cfg["compute"]["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    net = wrap_model(net, info, device, cfg["ddp"]["sync_batchnorm"])
    opt = build_optimizer(o, net)
    gb = o["batch_size"]
    steps_per_epoch = n // gb + (1 if n % gb >= world and not o["drop_last"] else 0)
    if o["max_steps_per_epoch"]:
        steps_per_epoch = min(steps_per_epoch, o["max_steps_per_epoch"])
    if steps_per_epoch < 1:
        raise InputError(f"optim.drop_last with {n} training images and batch {gb} leaves no step")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(o, steps_per_epoch))
    la_cfg = o["lookahead"]
    lookahead = (Lookahead(unwrap_model(net), la_cfg["every"], la_cfg["decay"], la_cfg["power"],
                           o["epochs"] * steps_per_epoch) if la_cfg["every"] else None)

    # --- resume ---
    start_epoch, rows, resumed_from = 0, [], None
    ckpt_path = out / "last.pt" if out else None
    if cfg["resume"] and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(ckpt, ckpt_path, lookahead is not None)
        differs = _first_difference(_comparable(ckpt.get("config", {})), _comparable(cfg))
        if differs is not None:
            raise InputError(f"cannot resume from {ckpt_path}: it was written with a different "
                             f"configuration ({differs} differs; only name, resume, logging, "
                             "device, output_dir, eval and compute.threads may change)")
        try:
            unwrap_model(net).load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            if lookahead is not None:
                lookahead.load_state_dict(ckpt["lookahead"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot resume from {ckpt_path}: its state does not fit this "
                             f"model and optimizer ({first})") from None
        start_epoch = resumed_from = int(ckpt["epoch"])
        rows = list(ckpt.get("metrics", []))
        _set_rng_state(ckpt["rng"])
    elif cfg["resume"] and main:
        notes.append(f"resume requested but no checkpoint at {ckpt_path}: starting from scratch")

    meta = run_metadata(device)
    run_info = {**meta["versions"], "git_commit": meta["git_commit"],
                "device": str(device), "world_size": world,
                "procedure": procedure.describe(), "train_images": n,
                "val_images": len(val_data) if val_data is not None else 0,
                "steps_per_epoch": steps_per_epoch, "notes": notes}
    writer = None
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        writer = _tensorboard(out, cfg["logging"]["tensorboard"], notes)
    for note in notes:
        if main:
            print(f"virolbi train: note: {note}", file=sys.stderr)

    from tqdm.auto import tqdm

    aug = cfg["augment"]
    pad, flip = aug["crop_padding"], aug["flip"]
    base_flips = (torch.rand(n, generator=torch.Generator().manual_seed(_mix(seed, 3))) < 0.5
                  if flip == "alternating" else None)
    epochs = o["epochs"]
    try:
        for epoch in range(start_epoch, epochs):
            t_epoch = time.perf_counter()
            torch.manual_seed(_mix(seed, epoch, info.rank, 1))
            notify_epoch_start(unwrap_model(net), epoch, epochs)
            net.train()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch)))
            level = procedure.level(epoch, epochs)
            totals = torch.zeros(3, dtype=torch.float64)
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                       disable=None if progress else True, leave=False)
            for step in bar:
                gidx = order[step * gb:(step + 1) * gb]
                g = torch.Generator().manual_seed(_mix(seed, epoch, step, 2))
                dy, dx, flips = sample_crop_flip(gidx.numel(), pad, flip is not False, g)
                if base_flips is not None:
                    flips = alternating_flips(base_flips[gidx], epoch)
                part = shard(torch.arange(gidx.numel()), info.rank, world)
                idx = gidx[part].numpy()
                x = procedure.fetch(idx, epoch, epochs).to(device).float() / 255.0
                x = procedure.transform(x)
                x = apply_crop_flip(x, dy[part], dx[part], flips[part], pad, aug["pad_mode"])
                y = torch.as_tensor(np.asarray(train_data.targets)[idx]).to(device)
                # DDP averages gradients over processes: scale so the result is the global mean.
                loss_sum, correct = _train_step(net, opt, x, y, world / gidx.numel(), cfg, device)
                sched.step()
                if lookahead is not None:
                    lookahead.after_step(unwrap_model(net), epoch * steps_per_epoch + step + 1)
                totals += torch.tensor([loss_sum, correct, y.numel()], dtype=torch.float64)
                if progress:
                    bar.set_postfix(loss=f"{loss_sum / max(1, y.numel()):.3f}")
            totals = all_reduce_sum(totals, info)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
                                   "sparsity": level, "train_loss": float(totals[0] / totals[2]),
                                   "train_acc": float(totals[1] / totals[2]), "val_loss": None,
                                   "val_acc": None, "val_acc_pre": None}
            last = epoch + 1 == epochs
            if val_data is not None and ((epoch + 1) % cfg["eval"]["every"] == 0 or last):
                bs = cfg["eval"]["batch_size"]
                row["val_loss"], row["val_acc"] = _evaluate(net, val_data, info, device, bs, None)
                own = procedure.test_preprocess
                if own(torch.zeros(1, 3, 8, 8)) is not None:
                    row["val_acc_pre"] = _evaluate(net, val_data, info, device, bs, own)[1]
                elif val_pre_images is not None:
                    row["val_acc_pre"] = _evaluate(net, val_data, info, device, bs, None,
                                                   images=val_pre_images)[1]
            row["epoch_time"] = time.perf_counter() - t_epoch
            row["prepare_time"] = prepare_time if epoch == start_epoch else 0.0
            rows.append(row)
            if main and out is not None:
                ckpt = {"model": unwrap_model(net).state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch + 1, "rng": _rng_state(),
                        "config": cfg, "metrics": rows}
                if lookahead is not None:
                    ckpt["lookahead"] = lookahead.state_dict()
                with atomic_path(ckpt_path) as tmp:
                    torch.save(ckpt, tmp)
                if cfg["logging"]["keep_checkpoints"]:
                    with atomic_path(out / f"epoch_{epoch + 1:04d}.pt") as tmp:
                        torch.save(ckpt, tmp)
                _write_metrics(out, rows, run_info)
                if writer is not None:
                    for key, value in row.items():
                        if key != "epoch" and value is not None:
                            writer.add_scalar(key, value, epoch + 1)
                    writer.flush()
            for cb in callbacks:
                cb(epoch + 1, row)
        final = unwrap_model(net)
        if main and out is not None:
            with atomic_path(out / "model.pt") as tmp:
                torch.save(final.state_dict(), tmp)
    finally:
        if writer is not None:
            writer.close()
    final.eval()
    return TrainResult(final, rows, cfg, out, resumed_from, run_info)
