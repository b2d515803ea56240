"""How much of each model's Grad-CAM falls on the object, for the shipped Vanilla, Blur, Fix and
Iterative models: the measured companion of the paper's Fig. 5 ("models trained on smoothed images
attend to larger, shape-like regions"). Writes ``cam_mass.{json,md,png}`` and a caption."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from virolbi.explain.gradcam import (box_mass, centre_box, gradcam, half_mass_area, mean_with_ci,
                                     pointing_game)
from virolbi.reproduce.stats import wilson_interval

__all__ = ["PROCEDURES", "cam_mass"]

#: Label of each shipped model family.
PROCEDURES = OrderedDict([("vanilla", "Vanilla"), ("blur", "Blur"), ("fixed", "Fix 0.6"),
                          ("iterative", "Iterative")])


def _shipped_models() -> OrderedDict[str, list[str]]:
    from virolbi.zoo import list_weights

    names = list_weights()
    return OrderedDict((key, sorted(n for n in names if n.startswith(f"fast_cifar10_{key}_s")))
                       for key in PROCEDURES)


def _maps(name: str, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> torch.Tensor:
    from virolbi.zoo import load_weights

    model = load_weights(name)[0]
    return torch.cat([gradcam(model, x[i:i + batch], y[i:i + batch])
                      for i in range(0, len(x), batch)])


def cam_mass(x: torch.Tensor, y: torch.Tensor, out_dir: str | Path, *, source: str,
             fraction: float = 0.5) -> dict[str, Path]:
    """Grad-CAM (true class, last conv layer) of every shipped model on ``x``; per procedure the
    mean fraction of map mass in the centred box (bootstrap 95 % interval over images, seeds
    pooled) and the pointing-game hit rate (Wilson 95 %)."""
    from virolbi.io import save_json, save_text
    from virolbi.viz import save_figure

    out = Path(out_dir)
    box = centre_box(*x.shape[-2:], fraction)
    shown = torch.from_numpy(np.linspace(0, len(x) - 1, min(6, len(x))).astype(np.int64))
    rows, examples = [], {}
    for key, names in _shipped_models().items():
        if not names:
            continue
        maps = [_maps(n, x, y) for n in names]
        per_seed = [box_mass(m, box) for m in maps]
        mass = torch.cat(per_seed).numpy()
        hits = torch.cat([pointing_game(m, box) for m in maps]).numpy()
        mean, lo, hi = mean_with_ci(mass)
        spread, slo, shi = mean_with_ci(torch.cat([half_mass_area(m) for m in maps]).numpy())
        plo, phi = wilson_interval(int(hits.sum()), hits.size)
        rows.append({"procedure": PROCEDURES[key], "models": names, "images": int(len(x)),
                     "box_mass": mean, "box_mass_ci95": [lo, hi],
                     "per_seed": [float(v.mean()) for v in per_seed],
                     "pointing": float(hits.mean()), "pointing_ci95": [plo, phi],
                     "half_mass_area": spread, "half_mass_area_ci95": [slo, shi]})
        examples[PROCEDURES[key]] = maps[0][shown]
    area = float(box.float().mean())
    paths = {"json": save_json({"box_fraction_of_side": fraction, "box_area": area,
                                "source": source, "rows": rows}, out / "cam_mass.json")}
    paths["md"] = save_text(_markdown(rows, area, source), out / "cam_mass.md")
    paths["png"] = save_figure(_figure(x[shown], examples), out / "cam_mass.png")
    paths["caption"] = save_text(
        f"Grad-CAM (captum LayerGradCam, last convolution, true class, bilinear upsampling) of the "
        f"shipped models on {source}, every model on the clean images (the Blur model without its "
        f"blur). Top row: six of the images; below, one row per procedure (seed 0). "
        f"Table: mean fraction of the map's mass inside the centred box of half the side "
        f"({100 * area:.0f} % of the area; a uniform map scores that), seeds pooled, 95 % "
        "bootstrap interval over images; pointing game: the map's maximum inside the box (Wilson "
        "95 %); area holding half the mass: how spread the map is (a uniform map: 50 %).\n",
        out / "cam_mass_caption.md")
    return paths


def _markdown(rows: list[dict], area: float, source: str) -> str:
    lines = [f"Grad-CAM mass inside the centred box ({100 * area:.0f} % of the image; a uniform "
             f"map gives {100 * area:.0f} %) on {source}; seeds pooled, [95 % interval].", "",
             "| procedure | models | mass in the box | each seed | pointing game | area holding "
             "half the mass |", "|---|---|---|---|---|---|"]
    for r in rows:
        seeds = " / ".join(f"{100 * v:.1f}" for v in r["per_seed"])
        lines.append(f"| {r['procedure']} | {len(r['models'])} | **{100 * r['box_mass']:.1f} %** "
                     f"[{100 * r['box_mass_ci95'][0]:.1f}, {100 * r['box_mass_ci95'][1]:.1f}] | "
                     f"{seeds} | {100 * r['pointing']:.1f} % [{100 * r['pointing_ci95'][0]:.1f}, "
                     f"{100 * r['pointing_ci95'][1]:.1f}] | {100 * r['half_mass_area']:.1f} % "
                     f"[{100 * r['half_mass_area_ci95'][0]:.1f}, "
                     f"{100 * r['half_mass_area_ci95'][1]:.1f}] |")
    return "\n".join(lines) + "\n"


def _figure(images: torch.Tensor, examples: dict[str, torch.Tensor]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, rows = images.shape[0], 1 + len(examples)
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n, 1.6 * rows), squeeze=False)
    for j in range(n):
        img = images[j].permute(1, 2, 0).numpy()
        axes[0, j].imshow(img)
        for i, (name, maps) in enumerate(examples.items(), start=1):
            axes[i, j].imshow(img)
            axes[i, j].imshow(maps[j].numpy(), cmap="jet", alpha=0.5)
            if j == 0:
                axes[i, j].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
