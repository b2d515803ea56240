r"""Training a denoiser on Train400 patches: normal training (NT) and hybrid adversarial training
(HAT, Yan's thesis §2.4, Eq. 2.3).

Every step draws clean patches :math:`x`, a noise level :math:`\sigma \sim U[0, \gamma]` per patch
(γ = 25/255, the family :math:`Q^\gamma_{\mathcal N}`) and :math:`y = x + \sigma n`. NT minimises
:math:`\tfrac12\|f(y) - x\|^2`; HAT adds the adversarial observation :math:`y' = y + \delta^*`
(one ObsAtk step, ε = 5/255) and minimises

.. math:: \tfrac12\Big(\tfrac{1}{1+\alpha}\|f(y) - x\|_2^2 + \tfrac{\alpha}{1+\alpha}\|f(y) - f(y')\|_2^2\Big)

(α = 1 in the thesis; α = 0 is NT). Adam with the learning rate divided by 10 at 60 % and 90 % of
the epochs. Outputs in ``output_dir``: ``config.yaml``, ``last.pt`` (after every epoch, resumable,
read without unpickling), ``model.pt`` (weights), ``metrics.json``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from virolbi.errors import InputError

__all__ = ["DENOISE_DEFAULTS", "resolve_denoise_config", "load_denoise_config", "train_denoiser",
           "hat_loss"]

DENOISE_DEFAULTS: dict[str, Any] = {
    "task": "denoising",
    "name": "denoiser",
    "seed": 0,
    "output_dir": "runs/{name}",
    "resume": False,
    "model": {"depth": 17, "width": 64},
    "data": {"archive": None, "patch_size": 40, "patches_per_epoch": 12800},
    "noise": {"gamma": 25 / 255},
    "hat": {"alpha": 0.0, "eps": 5 / 255, "steps": 1},   # alpha 0: normal training
    "optim": {"lr": 1e-3, "epochs": 30, "batch_size": 128},
    "compute": {"threads": None, "precision": "float32", "channels_last": False},
    "logging": {"progress": True},
}


def _validate(cfg: dict[str, Any]) -> dict[str, Any]:
    from virolbi.checks import check_positive, check_ratio
    from virolbi.train.config import _check_keys, check_compute_precision

    _check_keys(cfg, DENOISE_DEFAULTS)
    cfg["noise"]["gamma"] = check_ratio(cfg["noise"]["gamma"], "noise.gamma")
    cfg["hat"]["eps"] = check_ratio(cfg["hat"]["eps"], "hat.eps")
    check_positive(cfg["hat"]["alpha"], "hat.alpha", strict=False)
    check_positive(cfg["optim"]["lr"], "optim.lr")
    check_compute_precision(cfg["compute"])
    for sec, key in (("model", "depth"), ("model", "width"), ("data", "patch_size"),
                     ("data", "patches_per_epoch"), ("optim", "epochs"), ("optim", "batch_size"),
                     ("hat", "steps")):
        v = cfg[sec][key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{sec}.{key} must be an integer >= 1, got {v!r}")
    return cfg


def resolve_denoise_config(config: Mapping[str, Any] | None = None,
                           overrides: Iterable[str] = ()) -> dict[str, Any]:
    """:data:`DENOISE_DEFAULTS` ← ``config`` ← ``key=value`` overrides, validated."""
    from virolbi.train.config import apply_overrides, merge

    cfg = _validate(apply_overrides(merge(DENOISE_DEFAULTS, dict(config or {})), overrides))
    if isinstance(cfg["output_dir"], str):
        cfg["output_dir"] = cfg["output_dir"].replace("{name}", str(cfg["name"]))
    return cfg


def load_denoise_config(path: Any, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """A denoising YAML config (with ``defaults:`` layering), resolved."""
    from virolbi.train.config import _load_layered

    return resolve_denoise_config(_load_layered(Path(path), ()), overrides)


def hat_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float, eps: float,
             steps: int = 1) -> torch.Tensor:
    """Eq. 2.3 on a batch (mean over pixels); ``alpha = 0`` is the plain reconstruction loss."""
    from virolbi.denoise.obsatk import obsatk

    out = model(y)
    loss = ((out - x) ** 2).mean()
    if alpha > 0:
        delta = obsatk(model, x, y, eps, steps=steps)
        adv = ((out - model(y + delta)) ** 2).mean()
        loss = (loss + alpha * adv) / (1 + alpha)
    return 0.5 * loss


def _noisy(x: torch.Tensor, gamma: float, g: torch.Generator) -> torch.Tensor:
    sigma = torch.rand(x.shape[0], 1, 1, 1, generator=g) * gamma
    return x + sigma * torch.randn(x.shape, generator=g)


def _epoch(model, opt, images, cfg, epoch, rng_seed) -> float:
    """One epoch of fresh random patches; the forward passes (and ObsAtk's) under bfloat16 autocast
    when ``compute.precision`` says so — the loss, the optimiser and the evaluation stay float32."""
    from tqdm.auto import tqdm

    from virolbi.denoise.data import random_patches
    from virolbi.train.loop import _autocast

    d, o, h, c = cfg["data"], cfg["optim"], cfg["hat"], cfg["compute"]
    rng = np.random.default_rng([rng_seed, epoch])
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    x_all = random_patches(images, d["patches_per_epoch"], d["patch_size"], rng)
    model.train()
    total, n = 0.0, 0
    starts = range(0, len(x_all), o["batch_size"])
    for s in tqdm(starts, desc=f"epoch {epoch + 1}", disable=None if cfg["logging"]["progress"] else True,
                  leave=False):
        x = x_all[s:s + o["batch_size"]]
        y = _noisy(x, cfg["noise"]["gamma"], g)
        if c["channels_last"]:
            x, y = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
        with _autocast(x.device, c["precision"]):
            loss = hat_loss(model, x, y, h["alpha"], h["eps"], h["steps"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, n = total + float(loss.detach()) * len(x), n + len(x)
    return total / max(n, 1)


def train_denoiser(config: Mapping[str, Any]) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Train a :class:`~virolbi.denoise.dncnn.DnCNN` on Train400 (NT or HAT); (model, metrics)."""
    from virolbi.denoise.data import load_gray_set
    from virolbi.denoise.dncnn import DnCNN
    from virolbi.io import atomic_path, load_torch_file, save_json
    from virolbi.train.config import save_config

    cfg = resolve_denoise_config(copy.deepcopy(dict(config)))
    if cfg["compute"]["threads"]:
        torch.set_num_threads(int(cfg["compute"]["threads"]))
    torch.manual_seed(cfg["seed"])
    model = DnCNN(cfg["model"]["depth"], cfg["model"]["width"])
    if cfg["compute"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    epochs = cfg["optim"]["epochs"]
    opt = torch.optim.Adam(model.parameters(), lr=cfg["optim"]["lr"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.6 * epochs), int(0.9 * epochs)], 0.1)
    out = Path(cfg["output_dir"]) if cfg["output_dir"] else None
    rows: list[dict[str, Any]] = []
    start = 0
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if cfg["resume"] and (out / "last.pt").is_file():
            ck = load_torch_file(out / "last.pt", "checkpoint")
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            rows, start = list(ck["metrics"]), int(ck["epoch"])
    images = load_gray_set("train400", cfg["data"]["archive"])
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        loss = _epoch(model, opt, images, cfg, epoch, cfg["seed"])
        sched.step()
        rows.append({"epoch": epoch + 1, "loss": loss, "lr": opt.param_groups[0]["lr"],
                     "epoch_time": time.perf_counter() - t0})
        if out is not None:
            with atomic_path(out / "last.pt") as tmp:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "epoch": epoch + 1, "metrics": rows}, tmp)
            save_json({"config": cfg, "epochs": rows}, out / "metrics.json")
    if out is not None:
        with atomic_path(out / "model.pt") as tmp:
            torch.save(model.state_dict(), tmp)
    return model.eval(), rows
