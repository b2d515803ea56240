"""The figure of the paper's Fig. 2c: where in the spectrum ViRoLBI and a blur change images."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["plot_spectra"]


def plot_spectra(maps: dict[str, torch.Tensor], rows: Sequence[dict], edges: Sequence[float]):
    """Left: the mean difference spectra ``|F(X) - F(X̂)|²`` (log scale, centred) of some variants,
    with the ring edges drawn; right: the fraction of energy changed per ring for every variant,
    with its 95 % interval. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.0 * n + 5.5, 3.2),
                             gridspec_kw={"width_ratios": [1] * n + [2.2]})
    vmax = max(float(m.max()) for m in maps.values())
    for ax, (name, m) in zip(axes, maps.items()):
        im = ax.imshow(np.log10(m.numpy() + 1e-12), cmap="magma", vmin=np.log10(vmax) - 6,
                       vmax=np.log10(vmax))
        h, w = m.shape
        for r in edges:
            ax.add_patch(plt.Circle((w // 2, h // 2), r, fill=False, color="cyan", lw=0.8))
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[n - 1], fraction=0.046, label="log10 mean |F(X) - F(X̂)|²")
    ax = axes[n]
    rings = ("low", "middle", "high")
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        vals = [row[r]["fraction"] for r in rings]
        err = np.array([[row[r]["fraction"] - row[r]["ci95"][0], row[r]["ci95"][1] - row[r]["fraction"]]
                        for r in rings]).T
        ax.bar(np.arange(3) + (i - (len(rows) - 1) / 2) * width, vals, width, yerr=err,
               label=row["variant"], capsize=2)
    ax.set_xticks(range(3), [f"low (≤ {edges[0]:g})", f"middle (≤ {edges[1]:g})", "high"])
    ax.set_ylabel("fraction of the ring's energy changed")
    top = max(max(row[r]["ci95"][1] for r in rings) for row in rows)
    ax.set_ylim(0, max(1.0, top) * 1.05)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
