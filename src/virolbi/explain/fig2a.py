"""The paper's Fig. 2a from the project's own data: images and their ViRoLBI-smoothed versions split
into low- and high-frequency parts by the radius-6 disk of Table 4."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["fig2a"]


def fig2a(x: torch.Tensor, out_dir: str | Path, *, source: str, sparsity: float = 0.6,
          radius: float = 6.0) -> dict[str, Path]:
    """Write ``fig2a.png`` and ``fig2a_caption.md``: per image (rows), the image, its low part,
    its high part (shown as 0.5 + 2·high), then the same for the image smoothed at ``sparsity``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import virolbi
    from virolbi.io import save_text
    from virolbi.perturb.frequency import frequency_split
    from virolbi.viz import save_figure

    smoothed = virolbi.smooth(x, sparsity).clamp(0, 1)  # (ũ can overshoot [0, 1] by a hair)
    cols = []
    for img in (x, smoothed):
        low, high = frequency_split(img, radius)
        cols += [img, low.clamp(0, 1), (0.5 + 2 * high).clamp(0, 1)]
    titles = ["image", f"low (r ≤ {radius:g})", "high (0.5 + 2·high)",
              f"ViRoLBI {sparsity:g}", "its low part", "its high part"]
    fig, axes = plt.subplots(len(x), 6, figsize=(9, 1.5 * len(x)), squeeze=False)
    for i in range(len(x)):
        for j, col in enumerate(cols):
            axes[i, j].imshow(col[i].permute(1, 2, 0).numpy())
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=8)
    fig.tight_layout()
    out = Path(out_dir)
    paths = {"png": save_figure(fig, out / "fig2a.png")}
    paths["caption"] = save_text(
        f"Fig. 2a drawn from {len(x)} images of {source}: each image and the same image smoothed by "
        f"ViRoLBI at sparsity {sparsity:g} (virolbi.smooth, defaults), each split by the disk of "
        f"radius {radius:g} in the centred 2-D FFT (virolbi.perturb.frequency_split, the split of "
        "Table 4) into its low part and its high part (shown as 0.5 + 2·high).\n",
        out / "fig2a_caption.md")
    return paths
