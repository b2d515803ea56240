"""The epoch loop of :func:`virolbi.train.train`: one optimiser step in micro-batches, one epoch
of steps, validation, and what is written after every epoch (checkpoint, metrics, TensorBoard).

:class:`TrainingRun` holds what the loop needs (model, optimiser, schedule, data, procedure); the
trainer builds it (:mod:`virolbi.train.trainer`) and calls :meth:`TrainingRun.run`.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from virolbi.data.dataset import batch_of
from virolbi.io import atomic_path, save_json, save_text
from virolbi.train.adversarial import AdversarialTraining, RobustnessMonitor, perturbed_weights
from virolbi.train.augment import alternating_flips, apply_crop_flip, sample_crop_flip
from virolbi.train.ddp import DistInfo, all_reduce_sum, shard, unwrap_model
from virolbi.train.model_hooks import before_training_forward, training_loss
from virolbi.train.model_hooks import start_epoch as notify_epoch_start
from virolbi.train.procedures import Procedure

__all__ = ["METRIC_FIELDS", "TrainingRun", "mix_seed", "rng_state", "set_rng_state"]

METRIC_FIELDS = ("epoch", "lr", "sparsity", "train_loss", "train_acc", "val_loss", "val_acc",
                 "val_acc_pre", "monitor_fgsm_acc", "monitor_pgd_acc", "overfitting", "epoch_time",
                 "prepare_time")


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix-style), so nearby seeds give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def _autocast(device: torch.device, precision: str) -> Any:
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                scale: float, cfg: dict, device: torch.device,
                adversary: AdversarialTraining | None = None,
                index: np.ndarray | None = None) -> tuple[float, int]:
    """One optimiser step on the batch ``(x, y)``, in micro-batches whose gradients accumulate.

    The loss of each micro-batch is its summed cross-entropy times ``scale`` (1 / global batch,
    times the process count under DDP), so the step is the same whatever the micro-batch size
    (up to floating-point order and BatchNorm statistics). With ``adversary`` every micro-batch is
    replaced by its adversarial images first (and AWP perturbs the weights for the step;
    :mod:`virolbi.train.adversarial`; ``index``: the images' training positions, for SAT).
    Returns (summed loss, correct on the trained images).
    """
    comp, o = cfg["compute"], cfg["optim"]
    if comp["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    size = comp["micro_batch"] or x.shape[0]
    autocast = functools.partial(_autocast, device, comp["precision"])
    index = np.arange(len(y)) if index is None else np.asarray(index)
    chunks = [(xs, xs, ys, ids) for xs, ys, ids in
              zip(x.split(size), y.split(size), np.split(index, range(size, len(index), size)))]
    perturbation: dict = {}
    plain = unwrap_model(net)  # attacks and AWP's ascent need no DDP gradient sync
    if adversary is not None:
        chunks = [(xs, adversary.examples(plain, xs, ys, autocast), ys, ids)
                  for xs, _, ys, ids in chunks]
        if adversary.awp_gamma > 0:
            perturbation = adversary.weight_perturbation(plain, [(xa, ys) for _, xa, ys, _ in chunks],
                                                         autocast)
    opt.zero_grad(set_to_none=True)
    loss_total, correct = 0.0, 0
    with perturbed_weights(perturbation):
        for i, (xs, xin, ys, ids) in enumerate(chunks):
            sync = i == len(chunks) - 1 or not hasattr(net, "no_sync")
            with (contextlib.nullcontext() if sync else net.no_sync()):
                if adversary is not None:
                    loss_sum, logits = adversary.loss(net, xs, xin, ys, o["label_smoothing"],
                                                      autocast, index=ids)
                else:
                    before_training_forward(plain, ys)
                    with autocast():
                        logits = net(xin)
                    loss_sum = training_loss(plain, logits, ys, o["label_smoothing"])
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


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainingRun:
    """Everything the epoch loop needs, built by the trainer."""

    cfg: dict
    info: DistInfo
    device: torch.device
    procedure: Procedure
    train_data: Any
    val_data: Any
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    lookahead: Any
    steps_per_epoch: int
    out: Path | None
    run_info: dict
    val_pre_images: np.ndarray | None = None
    prepare_time: float = 0.0
    adversary: AdversarialTraining | None = None
    monitor: RobustnessMonitor | None = None
    writer: Any = None
    rows: list = field(default_factory=list)
    flips_base: Tensor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.cfg["augment"]["flip"] == "alternating":  # one draw, flipped every other epoch
            g = torch.Generator().manual_seed(mix_seed(self.cfg["seed"], 3))
            self.flips_base = torch.rand(len(self.train_data), generator=g) < 0.5

    def run(self, start_epoch: int, callbacks: list) -> None:
        """Epochs ``start_epoch`` .. ``epochs - 1``: train, validate, save, call back."""
        epochs = self.cfg["optim"]["epochs"]
        for epoch in range(start_epoch, epochs):
            t_epoch = time.perf_counter()
            row = self.train_epoch(epoch)
            if self.val_data is not None and ((epoch + 1) % self.cfg["eval"]["every"] == 0
                                              or epoch + 1 == epochs):
                self.validate(row)
            if self.monitor is not None:
                self.watch(row, epoch)
            row["epoch_time"] = time.perf_counter() - t_epoch
            row["prepare_time"] = self.prepare_time if epoch == start_epoch else 0.0
            self.rows.append(row)
            if self.info.is_main and self.out is not None:
                self.save(epoch, row)
            for cb in callbacks:
                cb(epoch + 1, row)

    def _batch(self, gidx: torch.Tensor, epoch: int, step: int) -> tuple:
        """The process's share of the global batch ``gidx``: fetched, transformed, augmented;
        (images, labels, their training positions)."""
        cfg, aug = self.cfg, self.cfg["augment"]
        pad, flip = aug["crop_padding"], aug["flip"]
        g = torch.Generator().manual_seed(mix_seed(cfg["seed"], epoch, step, 2))
        dy, dx, flips = sample_crop_flip(gidx.numel(), pad, flip is not False, g)
        if self.flips_base is not None:
            flips = alternating_flips(self.flips_base[gidx], epoch)
        part = shard(torch.arange(gidx.numel()), self.info.rank, self.info.world_size)
        idx = gidx[part].numpy()
        x = self.procedure.fetch(idx, epoch, cfg["optim"]["epochs"]).to(self.device).float() / 255.0
        x = self.procedure.transform(x)
        x = apply_crop_flip(x, dy[part], dx[part], flips[part], pad, aug["pad_mode"])
        y = torch.as_tensor(np.asarray(self.train_data.targets)[idx]).to(self.device)
        return x, y, idx

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of optimiser steps; the row of its training metrics."""
        from tqdm.auto import tqdm

        cfg, o, seed, n = self.cfg, self.cfg["optim"], self.cfg["seed"], len(self.train_data)
        epochs, gb, world = o["epochs"], o["batch_size"], self.info.world_size
        torch.manual_seed(mix_seed(seed, epoch, self.info.rank, 1))
        notify_epoch_start(unwrap_model(self.net), epoch, epochs)
        if self.adversary is not None:
            self.adversary.epoch = epoch  # SAT's targets move from their start epoch on
        self.net.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, epoch)))
        totals = torch.zeros(3, dtype=torch.float64)
        progress = cfg["logging"]["progress"] and self.info.is_main
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                   disable=None if progress else True, leave=False)
        for step in bar:
            gidx = order[step * gb:(step + 1) * gb]
            x, y, idx = self._batch(gidx, epoch, step)
            # DDP averages gradients over processes: scale so the result is the global mean.
            loss_sum, correct = _train_step(self.net, self.opt, x, y, world / gidx.numel(), cfg,
                                            self.device, self.adversary, idx)
            self.sched.step()
            if self.lookahead is not None:
                self.lookahead.after_step(unwrap_model(self.net),
                                          epoch * self.steps_per_epoch + step + 1)
            totals += torch.tensor([loss_sum, correct, y.numel()], dtype=torch.float64)
            if progress:
                bar.set_postfix(loss=f"{loss_sum / max(1, y.numel()):.3f}")
        totals = all_reduce_sum(totals, self.info)
        return {"epoch": epoch + 1, "lr": self.opt.param_groups[0]["lr"],
                "sparsity": self.procedure.level(epoch, epochs),
                "train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
                "val_loss": None, "val_acc": None, "val_acc_pre": None}

    def validate(self, row: dict[str, Any]) -> None:
        """Validation loss and accuracy, and the accuracy with the procedure's test-time
        preprocessing (its own, or the cached smoothed validation images)."""
        bs, dev, info = self.cfg["eval"]["batch_size"], self.device, self.info
        row["val_loss"], row["val_acc"] = _evaluate(self.net, self.val_data, info, dev, bs, None)
        own = self.procedure.test_preprocess
        if own(torch.zeros(1, 3, 8, 8)) is not None:
            row["val_acc_pre"] = _evaluate(self.net, self.val_data, info, dev, bs, own)[1]
        elif self.val_pre_images is not None:
            row["val_acc_pre"] = _evaluate(self.net, self.val_data, info, dev, bs, None,
                                           images=self.val_pre_images)[1]

    def watch(self, row: dict[str, Any], epoch: int) -> None:
        """The robustness monitor's reading after ``epoch`` (0-based) into ``row``; a note on
        catastrophic overfitting (:mod:`virolbi.train.adversarial`)."""
        import sys

        reading, collapsed = self.monitor.update(unwrap_model(self.net), epoch + 1)
        row.update(monitor_fgsm_acc=reading["fgsm"], monitor_pgd_acc=reading["pgd"],
                   overfitting=int(collapsed))
        self.run_info["kept_epoch"] = self.monitor.best_epoch  # the weights model.pt will hold
        if collapsed and self.info.is_main:
            best = self.monitor.history[self.monitor.best_epoch - 1]
            print(f"virolbi train: catastrophic overfitting at epoch {epoch + 1}: PGD accuracy on "
                  f"{len(self.monitor.labels)} held-out images fell from {best['pgd']:.1%} (epoch "
                  f"{self.monitor.best_epoch}) to {reading['pgd']:.1%} while FGSM accuracy rose to "
                  f"{reading['fgsm']:.1%}; the weights of epoch {self.monitor.best_epoch} are kept",
                  file=sys.stderr)

    def save(self, epoch: int, row: dict[str, Any]) -> None:
        """The checkpoint (``last.pt``, and ``epoch_NNNN.pt`` when kept), metrics and TensorBoard."""
        ckpt = {"model": unwrap_model(self.net).state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch": epoch + 1, "rng": rng_state(),
                "config": self.cfg, "metrics": self.rows}
        if self.lookahead is not None:
            ckpt["lookahead"] = self.lookahead.state_dict()
        if self.monitor is not None:
            ckpt["monitor"] = self.monitor.state_dict()
        if self.adversary is not None and self.adversary.self_adaptive is not None:
            ckpt["self_adaptive"] = self.adversary.self_adaptive.state_dict()
        with atomic_path(self.out / "last.pt") as tmp:
            torch.save(ckpt, tmp)
        keep = self.cfg["logging"]["keep_checkpoints"]  # snapshots for figures over training
        if keep is True or (isinstance(keep, list) and epoch + 1 in keep):
            with atomic_path(self.out / f"epoch_{epoch + 1:04d}.pt") as tmp:
                torch.save(ckpt, tmp)
        _write_metrics(self.out, self.rows, self.run_info)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and value is not None:
                    self.writer.add_scalar(key, value, epoch + 1)
            self.writer.flush()
