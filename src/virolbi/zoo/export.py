"""Turn a finished training run into a shipped weights file (:func:`virolbi.zoo.export_weights`).

The run folder of ``virolbi train`` holds ``config.yaml`` (resolved), ``model.pt`` (final weights)
and ``metrics.json``. :func:`export_run` rebuilds the model, measures its validation accuracy with
the float32 weights and with the weights rounded to float16, and stores float16 only when the two
agree (at most ``max_drop`` lower; else float32), recording both accuracies in the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from virolbi.errors import InputError

__all__ = ["export_run", "export_denoiser_run", "accuracy", "model_from_run"]


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``uint8 (N, H, W, C)`` images (float32, eval mode)."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        x = x.permute(0, 3, 1, 2).float() / 255.0
        correct += int((model(x).argmax(1).numpy() == labels[start:start + batch_size]).sum())
    return correct / len(images)


def _rounded(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for t in list(out.parameters()) + list(out.buffers()):
            if t.is_floating_point():
                t.copy_(t.to(dtype).float())
    return out


def _head_size(state: dict[str, torch.Tensor]) -> int:
    """Outputs of the classifier: rows of the last 2-D weight of a state dict."""
    return int([v for k, v in state.items() if k.endswith("weight") and v.ndim == 2][-1].shape[0])


def model_from_run(run_dir: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of a finished ``virolbi train`` run folder and its resolved config."""
    from virolbi.models import create_model
    from virolbi.train.config import load_config
    from virolbi.train.trainer import load_checkpoint

    run = Path(run_dir)
    for f in ("config.yaml", "model.pt"):
        if not (run / f).is_file():
            raise InputError(f"{run} is not a finished training run: {f} is missing")
    cfg = load_config(run / "config.yaml")
    m = cfg["model"]
    state = load_checkpoint(run / "model.pt")
    num_classes = cfg["data"]["num_classes"] or _head_size(state)
    net = create_model(m["name"], num_classes, width=m["width"], **(m["kwargs"] or {}))
    net.load_state_dict(state)
    return net.eval(), cfg


def export_run(run_dir: str | os.PathLike, name: str, *, val_data: Any = None,
               zoo_dir: str | os.PathLike | None = None, max_drop: float = 0.001,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ship the run in ``run_dir`` as ``name``; returns the manifest entry.

    ``val_data`` (an ImageDataset; default: the config's validation split) measures the float32
    and float16 accuracies; float16 is kept when it loses at most ``max_drop``.
    """
    from virolbi.data import load_dataset
    from virolbi.io import load_json
    from virolbi.zoo import export_weights

    run = Path(run_dir)
    net, cfg = model_from_run(run)
    if not (run / "metrics.json").is_file():
        raise InputError(f"{run} is not a finished training run: metrics.json is missing")
    m, d = cfg["model"], cfg["data"]
    if val_data is None:
        val_data = load_dataset(d["name"], d["val_split"], data_dir=d["data_dir"])
    labels = np.asarray(val_data.targets)
    num_classes = _head_size(net.state_dict())
    images = np.asarray(val_data.data)
    acc32 = accuracy(net, images, labels)
    acc16 = accuracy(_rounded(net, torch.float16), images, labels)
    dtype = torch.float16 if acc16 >= acc32 - max_drop else torch.float32
    metrics = load_json(run / "metrics.json")
    rows = metrics.get("epochs", [])
    info = {"model": {"name": m["name"], "width": m["width"], "num_classes": num_classes,
                      "normalize": True, "kwargs": dict(m["kwargs"] or {})},
            "procedure": dict(cfg["procedure"]), "seed": cfg["seed"],
            "precision": cfg["compute"]["precision"], "epochs": cfg["optim"]["epochs"],
            "train_seconds": round(sum(r.get("epoch_time") or 0 for r in rows), 1),
            "prepare_seconds": round(sum(r.get("prepare_time") or 0 for r in rows), 1),
            "data": {"name": d["name"], "train_split": d["train_split"],
                     "val_split": d["val_split"], "val_images": len(labels)},
            "val_acc_float32": acc32, "val_acc_float16": acc16,
            "val_acc_pre": rows[-1].get("val_acc_pre") if rows else None,
            "config": {k: cfg[k] for k in ("optim", "augment", "compute", "model")},
            **(extra or {})}
    return export_weights(net, name, info, zoo_dir=zoo_dir, dtype=dtype)


def export_denoiser_run(run_dir: str | os.PathLike, name: str, *,
                        zoo_dir: str | os.PathLike | None = None, max_drop_db: float = 0.01
                        ) -> dict[str, Any]:
    """Ship the denoiser run (``task: denoising``) in ``run_dir`` as ``name``: float16 when its PSNR
    on Set12 with Gaussian noise 25/255 loses at most ``max_drop_db`` against float32."""
    from virolbi.denoise.data import load_gray_set
    from virolbi.denoise.evaluate import load_denoiser, psnr_rows
    from virolbi.denoise.train import load_denoise_config
    from virolbi.io import load_json
    from virolbi.zoo import export_weights

    run = Path(run_dir)
    net = load_denoiser(run)
    cfg = load_denoise_config(run / "config.yaml")
    images = load_gray_set("set12", cfg["data"]["archive"])

    def set12_psnr(model: torch.nn.Module) -> float:
        return psnr_rows(model, images, gammas=(25 / 255,), noises=("gaussian",))[0]["psnr"]

    db32, db16 = set12_psnr(net), set12_psnr(_rounded(net, torch.float16))
    dtype = torch.float16 if db16 >= db32 - max_drop_db else torch.float32
    rows = load_json(run / "metrics.json").get("epochs", []) if (run / "metrics.json").is_file() else []
    hat = cfg["hat"]
    info = {"task": "denoising",
            "model": {"name": "dncnn", "depth": cfg["model"]["depth"], "width": cfg["model"]["width"]},
            "procedure": {"name": "hat" if hat["alpha"] > 0 else "nt", **dict(hat)},
            "seed": cfg["seed"], "precision": cfg["compute"]["precision"], "epochs": cfg["optim"]["epochs"],
            "train_seconds": round(sum(r.get("epoch_time") or 0 for r in rows), 1),
            "data": {"name": "train400", "noise": dict(cfg["noise"])},
            "set12_psnr_gaussian25_float32": db32, "set12_psnr_gaussian25_float16": db16,
            "config": {k: cfg[k] for k in ("model", "data", "noise", "hat", "optim")}}
    return export_weights(net, name, info, zoo_dir=zoo_dir, dtype=dtype)
