r"""PSNR of a denoiser under random and adversarial noise (Yan's thesis, Tables 2.1 and 2.2).

For a test set and a noise energy density :math:`\hat\gamma^2` (γ̂ = 15/255 or 25/255), each clean
image :math:`x` is observed as

- ``gaussian``: :math:`y = x + \hat\gamma n`, :math:`n \sim \mathcal N(0, 1)`;
- ``uniform``: :math:`y = x + u`, :math:`u \sim U(-\sqrt3\hat\gamma, \sqrt3\hat\gamma)`;
- ``obsatk-ε``: :math:`y = x + (\hat\gamma - \varepsilon) n` perturbed by ObsAtk with
  :math:`\rho = \varepsilon\sqrt m` (:mod:`virolbi.denoise.obsatk`), so that the total noise keeps
  ℓ₂ norm ≤ γ̂√m (the thesis's "Atk-ε").

and the PSNR of the denoised :math:`f(y)` against :math:`x` (peak 1, the output clipped to [0, 1])
is averaged over the images. A non-differentiable denoiser (ViRoLBI) is attacked through BPDA with
the identity backward (:func:`virolbi.attacks.bpda`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from virolbi.errors import InputError

__all__ = ["psnr", "NOISES", "noisy_observation", "psnr_rows"]

NOISES = ("gaussian", "uniform", "obsatk-5/255", "obsatk-7/255")


def psnr(x: Tensor, estimate: Tensor) -> float:
    """PSNR in dB of ``estimate`` (clipped to [0, 1]) against ``x``, peak 1.

    Examples
    --------
    >>> round(psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.1)), 4)
    20.0
    """
    mse = float(((estimate.clamp(0, 1) - x) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def noisy_observation(denoiser: Callable[[Tensor], Tensor], x: Tensor, noise: str, gamma: float,
                      g: torch.Generator) -> Tensor:
    """The observation ``y`` of the clean ``x`` under one of :data:`NOISES` at level γ̂."""
    if noise == "gaussian":
        return x + gamma * torch.randn(x.shape, generator=g)
    if noise == "uniform":
        return x + (torch.rand(x.shape, generator=g) * 2 - 1) * math.sqrt(3) * gamma
    if noise.startswith("obsatk-"):
        from virolbi.checks import check_ratio
        from virolbi.denoise.obsatk import obsatk

        eps = check_ratio(noise.split("-", 1)[1], "ObsAtk eps")
        if eps > gamma:
            raise InputError(f"{noise}: the attack budget exceeds the noise level {gamma * 255:g}/255")
        y = x + (gamma - eps) * torch.randn(x.shape, generator=g)
        return y + obsatk(denoiser, x, y, eps)
    raise InputError(f"unknown noise {noise!r}; choose one of {', '.join(NOISES)}")


def psnr_rows(denoiser: Callable[[Tensor], Tensor], images: Sequence[np.ndarray],
              gammas: Sequence[float] = (15 / 255, 25 / 255), noises: Sequence[str] = NOISES,
              seed: int = 0, name: str = "denoiser", dataset: str = "data") -> list[dict[str, Any]]:
    """One row per (γ̂, noise): mean and standard deviation of the PSNR over ``images``."""
    from virolbi.denoise.data import to_tensor

    rows = []
    for gamma in gammas:
        for noise in noises:
            g = torch.Generator().manual_seed(seed)
            values = []
            for img in images:
                x = to_tensor(img)
                y = noisy_observation(denoiser, x, noise, gamma, g)
                with torch.no_grad():
                    values.append(psnr(x, denoiser(y)))
            rows.append({"denoiser": name, "dataset": dataset, "gamma": f"{round(gamma * 255)}/255",
                         "noise": noise, "psnr": float(np.mean(values)),
                         "psnr_std": float(np.std(values)), "images": len(values)})
    return rows


def load_denoiser(run: Any) -> torch.nn.Module:
    """A trained :class:`~virolbi.denoise.dncnn.DnCNN` from its run folder (or ``model.pt`` in it)
    or the name of a shipped denoiser (``virolbi weights list``), read without unpickling; in eval
    mode."""
    from pathlib import Path

    from virolbi.denoise.dncnn import DnCNN
    from virolbi.denoise.train import load_denoise_config
    from virolbi.io import load_torch_file

    path = Path(run)
    if not path.exists():
        from virolbi.zoo import list_weights, load_weights, weights_info

        if str(run) in list_weights() and weights_info(str(run)).get("task") == "denoising":
            return load_weights(str(run))[0]
    folder = path.parent if path.is_file() else path
    if not (folder / "config.yaml").is_file() or not (folder / "model.pt").is_file():
        raise InputError(f"{run} is not a denoiser run folder (config.yaml and model.pt expected)")
    cfg = load_denoise_config(folder / "config.yaml")
    net = DnCNN(cfg["model"]["depth"], cfg["model"]["width"])
    try:
        net.load_state_dict(load_torch_file(folder / "model.pt", "denoiser weights"))
    except RuntimeError as exc:
        raise InputError(f"{folder / 'model.pt'} does not fit the DnCNN of its config.yaml: "
                         f"{str(exc).splitlines()[0]}") from None
    return net.eval()


def write_psnr_report(rows: list[dict[str, Any]], out_dir: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """``psnr.json`` and ``psnr.md`` (the thesis's Table 2.1 layout) in ``out_dir``."""
    from pathlib import Path

    from virolbi.io import save_json, save_text

    out = Path(out_dir)
    save_json({"meta": meta, "rows": rows}, out / "psnr.json")
    lines = ["| denoiser | dataset | γ̂ | " + " | ".join(NOISES) + " |", "|---|---|---|" + "---|" * len(NOISES)]
    keys = sorted({(r["denoiser"], r["dataset"], r["gamma"]) for r in rows})
    for key in keys:
        cells = {r["noise"]: f"{r['psnr']:.2f} ± {r['psnr_std']:.2f}" for r in rows
                 if (r["denoiser"], r["dataset"], r["gamma"]) == key}
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells.get(n, "–") for n in NOISES) + " |")
    note = ("\nPSNR in dB (peak 1), mean ± standard deviation over the images; ObsAtk-ε: noise "
            "(γ̂ − ε)·N(0, 1) plus the zero-mean ObsAtk perturbation of ℓ₂ norm ε·√m (5 steps).\n")
    if any(r["denoiser"].startswith("ViRoLBI") for r in rows):
        note += ("ViRoLBI rows: the smoother, not differentiable, is attacked through BPDA with the "
                 "identity backward; its sparsity is chosen on Train400, never on the test images.\n")
    save_text("\n".join(lines) + "\n" + note, out / "psnr.md")
    return {"json": out / "psnr.json", "markdown": out / "psnr.md"}
