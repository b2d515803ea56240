"""The paper's Fig. 2c from the project's own data: the spectra of what ViRoLBI (at several
sparsity levels) and the Blur baseline change, and the table of energy changed per ring."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from virolbi.explain.spectra import RINGS, difference_spectrum, removed_energy_table

__all__ = ["LEVELS", "fig2c"]

#: The sparsity levels of the table (the figure's maps: 0.6 and 0.8, as in the paper).
LEVELS = (0.2, 0.4, 0.6, 0.8, 1.0)


def _markdown(rows: list[dict], n: int, source: str) -> str:
    lines = [f"Fraction of the images' spectral energy changed, per ring of the centred 2-D FFT "
             f"(low: 0 < r ≤ {RINGS[0]:g}, middle: ≤ {RINGS[1]:g}, high: the rest; the zero "
             f"frequency left out), pooled over {n} images of {source} and their 3 channels, "
             "[95 % bootstrap interval over images].", "",
             "| variant | low | middle | high |", "|---|---|---|---|"]
    for r in rows:
        cells = [f"{100 * r[k]['fraction']:.1f} % [{100 * r[k]['ci95'][0]:.1f}, "
                 f"{100 * r[k]['ci95'][1]:.1f}]" for k in ("low", "middle", "high")]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fig2c(x: torch.Tensor, out_dir: str | Path, *, source: str, levels: Sequence[float] = LEVELS,
          smoother_options: dict | None = None) -> dict[str, Path]:
    """Smooth ``x`` (float ``(B, 3, H, W)`` in [0, 1]) along the path, blur it as the Blur baseline
    does, and write ``fig2c.png``, ``fig2c.json``, ``fig2c.md`` and ``fig2c_caption.md`` into
    ``out_dir``. Returns the paths."""
    import virolbi
    from virolbi.io import save_json, save_text
    from virolbi.perturb.blur import blur_params_for, gaussian_blur
    from virolbi.viz import save_figure
    from virolbi.viz.spectra_figure import plot_spectra

    out = Path(out_dir)
    path = virolbi.image_path(x, levels, **(smoother_options or {}))
    k, sigma = blur_params_for(tuple(x.shape[-2:]))
    variants = {f"ViRoLBI {lv:g}": path[i] for i, lv in enumerate(levels)}
    variants[f"Blur (kernel {k}, σ {sigma:g})"] = gaussian_blur(x, k, sigma)
    rows = removed_energy_table(x, variants)
    shown = [name for name in variants if name in ("ViRoLBI 0.6", "ViRoLBI 0.8")]
    shown.append(list(variants)[-1])
    fig = plot_spectra({n: difference_spectrum(x, variants[n]) for n in shown},
                       [r for r in rows if r["variant"] != "ViRoLBI 1"], RINGS)
    paths = {"png": save_figure(fig, out / "fig2c.png")}
    paths["json"] = save_json({"rings": list(RINGS), "images": int(x.shape[0]), "source": source,
                               "rows": rows}, out / "fig2c.json")
    paths["md"] = save_text(_markdown(rows, int(x.shape[0]), source), out / "fig2c.md")
    paths["caption"] = save_text(
        f"Fig. 2c drawn from {x.shape[0]} images of {source}: left, the mean power spectrum of "
        f"X − X̂ for {', '.join(shown)} (log scale, zero frequency in the centre, rings at radii "
        f"{RINGS[0]:g} and {RINGS[1]:g}); right, the fraction of each ring's energy the variant "
        "changed, with 95 % bootstrap intervals over images. Smoother: virolbi.image_path with its "
        "defaults (imex, κ = 5, ν = 1); Blur: the Blur baseline's Gaussian blur.\n",
        out / "fig2c_caption.md")
    return paths
