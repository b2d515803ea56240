"""Figures over training, from the snapshots a run keeps (``logging.keep_checkpoints: [1, 2, 5, 10]``
writes ``epoch_0001.pt`` ... in the run folder):

- Fig. 2b: the first trainable convolution's feature maps of one image at each kept epoch, with the
  share of their energy at low spatial frequencies (radius 6 of the 32 × 32 spectrum scaled to the
  map size): the paper's claim is that training on smoothed images learns low frequencies first;
- Fig. 5: Grad-CAM of the model at each kept epoch (the paper: attention moves to larger, shape-like
  regions during iterative training).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from virolbi.errors import InputError

__all__ = ["snapshot_models", "first_conv", "low_frequency_share", "fig2b", "fig5"]


def snapshot_models(run_dir: str | Path) -> list[tuple[int, nn.Module]]:
    """(epoch, model in eval mode) for every ``epoch_NNNN.pt`` of a training run, by epoch."""
    from virolbi.models import create_model
    from virolbi.train.config import load_config
    from virolbi.train.trainer import load_checkpoint

    run = Path(run_dir)
    files = sorted(run.glob("epoch_*.pt"))
    if not (run / "config.yaml").is_file() or not files:
        raise InputError(f"{run} holds no training snapshots (train with logging.keep_checkpoints: "
                         "[1, 2, 5, 10])")
    cfg = load_config(run / "config.yaml")
    out = []
    for f in files:
        state = load_checkpoint(f)["model"]
        head = [v for k, v in state.items() if k.endswith("head.weight") or k.endswith("fc.weight")]
        num = cfg["data"]["num_classes"] or (head[-1].shape[0] if head else 10)
        m = cfg["model"]
        net = create_model(m["name"], num, width=m["width"], **(m["kwargs"] or {}))
        net.load_state_dict(state)
        out.append((int(re.findall(r"\d+", f.stem)[0]), net.eval()))
    return out


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first convolution with trainable weights (the fast network's whitening is frozen)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
            return m
    raise InputError("the model has no trainable convolution")


def _feature_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    conv, seen = first_conv(model), {}
    handle = conv.register_forward_hook(lambda m, i, o: seen.setdefault("out", o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen["out"]


def low_frequency_share(maps: torch.Tensor, radius: float = 6.0, size: int = 32) -> float:
    """Share of the (mean-removed) energy of feature maps ``(B, C, H, W)`` within ``radius``
    frequency bins of the centre (the radius scaled by ``H / size``)."""
    f = torch.fft.fftshift(torch.fft.fft2(maps - maps.mean(dim=(-2, -1), keepdim=True)),
                           dim=(-2, -1))
    h, w = maps.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    low = (yy ** 2 + xx ** 2).float().sqrt() <= radius * h / size
    energy = f.abs() ** 2
    return float(energy[..., low].sum() / energy.sum().clamp_min(1e-12))


def _save(fig, out: Path, stem: str, caption: str, table: dict) -> dict[str, Path]:
    from virolbi.io import save_json, save_text
    from virolbi.viz import save_figure

    return {"figure": save_figure(fig, out / f"{stem}.png"),
            "table": save_json(table, out / f"{stem}.json"),
            "caption": save_text(caption, out / f"{stem}_caption.md")}


def fig2b(run_dir: str | Path, x: torch.Tensor, out_dir: str | Path, *, source: str,
          channels: int = 8) -> dict[str, Path]:
    """Fig. 2b: first-layer feature maps of ``x[0]`` at each kept epoch (rows: epochs; columns: the
    first ``channels`` channels) and the low-frequency share of all of them per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snaps = snapshot_models(run_dir)
    fig, axes = plt.subplots(len(snaps), channels, figsize=(1.2 * channels, 1.3 * len(snaps)),
                             squeeze=False)
    shares = {}
    for r, (epoch, net) in enumerate(snaps):
        maps = _feature_maps(net, x)
        shares[epoch] = low_frequency_share(maps)
        for c in range(min(channels, maps.shape[1])):
            axes[r, c].imshow(maps[0, c].numpy(), cmap="gray")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(f"epoch {epoch}\nlow {shares[epoch]:.0%}", fontsize=7)
    fig.tight_layout()
    caption = (f"# Fig. 2b (reproduced)\n\nFirst trainable convolution's feature maps (first "
               f"{channels} channels) of one image of {source}, at the epochs kept by the run "
               f"`{run_dir}`: {', '.join(str(e) for e, _ in snaps)}. 'low' = share of the maps' "
               "energy within radius 6 (of a 32-pixel spectrum) over all images: "
               + ", ".join(f"epoch {e}: {s:.1%}" for e, s in shares.items()) + ".\n")
    return _save(fig, Path(out_dir), "fig2b", caption,
                 {"run": str(run_dir), "source": source, "low_frequency_share": shares})


def fig5(run_dir: str | Path, x: torch.Tensor, y: torch.Tensor, out_dir: str | Path, *,
         source: str) -> dict[str, Path]:
    """Fig. 5: Grad-CAM of the model at each kept epoch (rows: images; columns: epochs), and the
    share of the map inside the centred half box per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from virolbi.explain.gradcam import box_mass, centre_box, gradcam

    snaps = snapshot_models(run_dir)
    box = centre_box(*x.shape[-2:])
    maps = {e: gradcam(net, x, y) for e, net in snaps}
    mass = {e: float(box_mass(m, box).mean()) for e, m in maps.items()}
    fig, axes = plt.subplots(len(x), len(snaps), figsize=(1.5 * len(snaps), 1.5 * len(x)),
                             squeeze=False)
    for i in range(len(x)):
        for j, (e, _) in enumerate(snaps):
            axes[i, j].imshow(x[i].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[i, j].imshow(maps[e][i].numpy(), cmap="jet", alpha=0.5)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(f"epoch {e}", fontsize=8)
    fig.tight_layout()
    caption = (f"# Fig. 5 (reproduced)\n\nGrad-CAM (true class) over training of the run "
               f"`{run_dir}` on {source}. Mean Grad-CAM mass in the centred half box per epoch: "
               + ", ".join(f"epoch {e}: {m:.1%}" for e, m in mass.items()) + ".\n")
    return _save(fig, Path(out_dir), "fig5", caption,
                 {"run": str(run_dir), "source": source, "box_mass": mass})
