"""Heat maps of models on image variants (original, blurred, smoothed): the one home of the variant
rule, the attribution call and the overlay grid, used by ``virolbi explain`` and by the figures
(Fig. 1b: Grad-CAM of one model on the three variants; Fig. 3: LRP of the four procedures)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from virolbi.errors import InputError

__all__ = ["parse_variants", "variant", "attribution", "positive_normalised", "overlay_grid",
           "model_grid_figure"]


def parse_variants(text: str, option: str = "--variants") -> list[tuple[str, float | None]]:
    """``"original,blur,smooth:0.6"`` -> ``[("original", None), ("blur", None), ("smooth", 0.6)]``."""
    from virolbi.checks import check_unit_interval

    out = []
    for part in (p.strip() for p in str(text).split(",")):
        name, _, level = part.partition(":")
        if name in ("original", "blur") and not level:
            out.append((name, None))
        elif name == "smooth" and level:
            try:
                out.append((name, check_unit_interval(float(level), f"{option} smooth level")))
            except ValueError:
                raise InputError(f"{option}: bad smoothing level in {part!r}") from None
        else:
            raise InputError(f"{option} takes original, blur and smooth:LEVEL, got {part!r}")
    if not out:
        raise InputError(f"{option} is empty")
    return out


def variant(x: torch.Tensor, name: str, level: float | None) -> torch.Tensor:
    """The images as the variant shows them: unchanged, Gaussian-blurred (the Blur baseline's
    parameters for their size) or smoothed by ViRoLBI at ``level``."""
    import virolbi
    from virolbi.perturb.blur import blur_params_for, gaussian_blur

    if name == "original":
        return x
    if name == "blur":
        return gaussian_blur(x, *blur_params_for(tuple(x.shape[-2:])))
    return virolbi.smooth(x, level)


def attribution(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, method: str) -> torch.Tensor:
    """``(B, H, W)`` maps: Grad-CAM (non-negative, each summing to 1) or signed LRP relevance."""
    if method == "gradcam":
        from virolbi.explain.gradcam import gradcam

        return gradcam(model, x, y)
    if method == "lrp":
        from virolbi.explain.lrp import lrp_maps

        return lrp_maps(model, x, y)
    raise InputError(f"method must be gradcam or lrp, got {method!r}")


def positive_normalised(maps: np.ndarray) -> np.ndarray:
    """The positive part of signed maps, each map scaled to sum 1 (all-zero maps stay zero)."""
    pos = np.clip(maps, 0, None)
    total = pos.sum(axis=(-2, -1), keepdims=True)
    return np.divide(pos, total, out=np.zeros_like(pos), where=total > 0)


def _show(ax, img: torch.Tensor, heat: np.ndarray | None = None) -> None:
    arr = img.permute(1, 2, 0).clamp(0, 1).numpy()
    arr = arr[..., 0] if arr.shape[-1] == 1 else arr
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def overlay_grid(images: torch.Tensor, maps: np.ndarray, labels: list[str], method: str):
    """Rows: images; per variant the image and its heat map. ``images`` ``(V, B, C, H, W)``,
    ``maps`` ``(V, B, H, W)`` (shown as they are)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v, b = maps.shape[:2]
    fig, axes = plt.subplots(b, 2 * v, figsize=(1.5 * 2 * v, 1.5 * b), squeeze=False)
    for i in range(b):
        for j in range(v):
            _show(axes[i, 2 * j], images[j, i])
            _show(axes[i, 2 * j + 1], images[j, i], maps[j, i])
            if i == 0:
                axes[i, 2 * j].set_title(labels[j], fontsize=8)
                axes[i, 2 * j + 1].set_title("Grad-CAM" if method == "gradcam" else "LRP (+)",
                                             fontsize=8)
    fig.tight_layout()
    return fig


def model_grid_figure(models: "OrderedDict[str, nn.Module]", x: torch.Tensor, y: torch.Tensor,
                      variants: list[tuple[str, float | None]], method: str, out_dir: str | Path,
                      stem: str, caption: str) -> dict[str, Path]:
    """One row per (model, image), one column per variant (heat map over the image); the PNG, the
    raw maps (``(models, variants, images, H, W)`` .npy) and the caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from virolbi.io import atomic_path, save_text
    from virolbi.viz import save_figure

    shown = [variant(x, name, level) for name, level in variants]
    maps = np.stack([np.stack([attribution(m, xv, y, method).detach().numpy() for xv in shown])
                     for m in models.values()]).astype(np.float32)
    heat = maps if method == "gradcam" else positive_normalised(maps)
    rows, cols = len(models) * len(x), len(variants)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1.2, 1.6 * rows), squeeze=False)
    for mi, label in enumerate(models):
        for i in range(len(x)):
            r = mi * len(x) + i
            for j, (name, level) in enumerate(variants):
                _show(axes[r, j], shown[j][i], heat[mi, j, i])
                if r == 0:
                    axes[r, j].set_title(name if level is None else f"{name} {level:g}", fontsize=8)
            axes[r, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    out = Path(out_dir)
    paths = {"figure": save_figure(fig, out / f"{stem}.png")}
    with atomic_path(out / f"{stem}.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, maps)
    paths["maps"] = out / f"{stem}.npy"
    paths["caption"] = save_text(caption, out / f"{stem}_caption.md")
    return paths


_VARIANTS = [("original", None), ("blur", None), ("smooth", 0.6)]


def fig1b(x: torch.Tensor, y: torch.Tensor, out_dir: str | Path, *, source: str) -> dict[str, Path]:
    """Fig. 1b: Grad-CAM of the shipped Vanilla model on original, blurred and smoothed images."""
    from virolbi.zoo import load_weights

    models = OrderedDict([("Vanilla (s0)", load_weights("fast_cifar10_vanilla_s0")[0])])
    caption = (f"# Fig. 1b (reproduced)\n\nGrad-CAM (captum LayerGradCam at the last convolution, "
               f"true class) of the shipped `fast_cifar10_vanilla_s0` on {source}: original images, "
               "the Blur baseline's Gaussian blur (kernel 3, sigma 2) and ViRoLBI at sparsity 0.6. "
               "The paper's claim: smoothing keeps large-scale structure where blurring keeps only "
               "low frequencies. Maps: `fig1b.npy` (models, variants, images, H, W).\n")
    return model_grid_figure(models, x, y, _VARIANTS, "gradcam", out_dir, "fig1b", caption)


def fig3(x: torch.Tensor, y: torch.Tensor, out_dir: str | Path, *, source: str) -> dict[str, Path]:
    """Fig. 3: LRP of the shipped Vanilla, Blur, Fix 0.6 and Iterative models (seed 0) on original,
    blurred and smoothed images."""
    from virolbi.zoo import load_weights

    names = OrderedDict([("Vanilla", "fast_cifar10_vanilla_s0"), ("Blur", "fast_cifar10_blur_s0"),
                         ("Fix 0.6", "fast_cifar10_fixed_s0"),
                         ("Iterative", "fast_cifar10_iterative_s0")])
    models = OrderedDict((k, load_weights(v)[0]) for k, v in names.items())
    caption = (f"# Fig. 3 (reproduced)\n\nLRP-epsilon relevance (eps 1e-6; BatchNorm folded into the "
               "convolutions, identity rule for GELU; positive part shown, each map scaled to sum 1) "
               f"for the true class, of the shipped seed-0 models {', '.join(names.values())}, on "
               f"{source}: original, blurred (kernel 3, sigma 2) and smoothed (ViRoLBI 0.6). Signed "
               "maps: `fig3.npy` (models, variants, images, H, W).\n")
    return model_grid_figure(models, x, y, _VARIANTS, "lrp", out_dir, "fig3", caption)
