r"""SDNet's noise table (Li et al. 2022, Tables 2–3 and Fig. 2) on a trained CSC model.

For every noise of the paper's Table 1 and CIFAR-10-C severity 1–5 of it, the accuracy on the test
images with

- the training λ₀ (the paper's "SDNet-18, λ = 0.1" rows),
- the best λ of the grid, chosen on the corrupted **test** images themselves (an oracle: an upper
  bound no deployed model has),
- Algorithm 1: λ(r_test) from the least-squares line fitted on corrupted **training** images of the
  same noise type (:func:`virolbi.evaluate.sdnet.fit_lambda`), then applied
  (:func:`virolbi.evaluate.sdnet.robust_inference`).

Each accuracy carries its 95 % Wilson interval. The test corruptions are drawn with seeds
independent of the fit's (one per noise and severity), so the fit never sees the test noise.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from virolbi.errors import InputError
from virolbi.evaluate.harness import _spec_seed
from virolbi.evaluate.sdnet import LAMBDAS, _corrupt, fit_lambda, lambda_sweep, robust_inference
from virolbi.evaluate.suites import NOISES
from virolbi.models.csc import csc_layers
from virolbi.reproduce.stats import wilson_interval

__all__ = ["sdnet_noise_table", "write_sdnet_report", "SEVERITIES"]

SEVERITIES = (1, 2, 3, 4, 5)


def _test_seed(seed: int, noise: str, severity: int) -> int:
    """The harness's per-spec seed, keyed apart from the fit's (``seed + severity``) draws."""
    return _spec_seed("sdnet-test", seed, noise, severity)


def _cell(correct: int, n: int) -> dict[str, Any]:
    return {"accuracy": correct / n, "ci95": list(wilson_interval(correct, n)), "correct": correct}


def _row(model: nn.Module, x: Tensor, y: Tensor, fit, lam0: float, lambdas: Sequence[float],
         batch_size: int) -> dict[str, Any]:
    """The λ₀, oracle and Algorithm 1 accuracies of one corrupted test set."""
    n = len(y)
    sweep = lambda_sweep(model, x, y, sorted({float(v) for v in lambdas} | {lam0}), batch_size)
    oracle = max(sweep, key=lambda lam: (sweep[lam], -lam))
    row = {"n": n, "sweep": {f"{lam:g}": acc for lam, acc in sorted(sweep.items())},
           "lambda0": _cell(round(sweep[lam0] * n), n),
           "oracle": {**_cell(round(sweep[oracle] * n), n), "lambda": oracle}}
    if fit is not None:
        pred, lam = robust_inference(model, x, fit, batch_size)
        row["algorithm1"] = {**_cell(int((pred == y).sum()), n), "lambda": lam}
    return row


def sdnet_noise_table(model: nn.Module, fit_images: Tensor, fit_labels: Tensor, test_images: Tensor,
                      test_labels: Tensor, noises: Sequence[str] = NOISES,
                      severities: Sequence[int] = SEVERITIES, lambdas: Sequence[float] = LAMBDAS,
                      seed: int = 0, batch_size: int = 500, progress: bool = True) -> dict[str, Any]:
    """Tables 2–3 of SDNet for ``noises`` × ``severities``, plus the clean row.

    Returns ``{"lambda0", "clean", "fits": {noise: {slope, intercept, points}}, "rows": [...]}``,
    one row per (noise, severity) with ``lambda0``, ``oracle`` and ``algorithm1`` cells (accuracy,
    95 % CI, the λ used) and the whole λ ``sweep`` (Fig. 2).
    """
    layers = csc_layers(model)
    if not layers:
        raise InputError("the model has no CSC layer: train SDNet (model.kwargs.csc) first")
    model.eval()
    lam0 = float(layers[0].lam)
    out: dict[str, Any] = {"lambda0": lam0, "lambdas": [float(v) for v in lambdas], "fits": {},
                           "rows": []}
    bar = tqdm(total=len(noises) * (1 + len(severities)) + 1, desc="sdnet", unit="step",
               disable=not progress)
    out["clean"] = _row(model, test_images, test_labels, None, lam0, lambdas, batch_size)
    bar.update()
    for noise in noises:
        fit = fit_lambda(model, fit_images, fit_labels, noise, severities, lambdas, seed, batch_size)
        out["fits"][noise] = {"slope": fit.slope, "intercept": fit.intercept,
                              "points": [list(p) for p in fit.points]}
        bar.update()
        for sev in severities:
            x = _corrupt(test_images, noise, sev, _test_seed(seed, noise, sev))
            out["rows"].append({"noise": noise, "severity": int(sev),
                                **_row(model, x, test_labels, fit, lam0, lambdas, batch_size)})
            bar.update()
    bar.close()
    return out


def _pct(cell: dict[str, Any]) -> str:
    lo, hi = cell["ci95"]
    return f"{100 * cell['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _markdown(table: dict[str, Any], meta: dict[str, Any]) -> str:
    lam0 = table["lambda0"]
    lines = [f"# SDNet robust inference (Algorithm 1): {meta.get('checkpoint', 'model')}", "",
             f"Test images: {table['clean']['n']} ({meta.get('data', '')}); λ fitted on "
             f"{meta.get('fit_images', '?')} corrupted training images per noise. Accuracy in % "
             "with its 95 % Wilson interval; the oracle λ is chosen on the test images themselves.",
             "", f"Clean, λ₀ = {lam0:g}: {_pct(table['clean']['lambda0'])}", "",
             f"| noise | severity | λ₀ = {lam0:g} | oracle λ | oracle | Algorithm 1 λ | Algorithm 1 |",
             "|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        a = r["algorithm1"]
        lines.append(f"| {r['noise']} | {r['severity']} | {_pct(r['lambda0'])} | "
                     f"{r['oracle']['lambda']:g} | {_pct(r['oracle'])} | {a['lambda']:.2f} | {_pct(a)} |")
    lines += ["", "Mean over severities:", "", "| noise | λ₀ | oracle | Algorithm 1 | fitted line λ(r) |",
              "|---|---|---|---|---|"]
    for noise, fit in table["fits"].items():
        rows = [r for r in table["rows"] if r["noise"] == noise]
        mean = {k: 100 * sum(r[k]["accuracy"] for r in rows) / len(rows)
                for k in ("lambda0", "oracle", "algorithm1")}
        lines.append(f"| {noise} | {mean['lambda0']:.1f} | {mean['oracle']:.1f} | "
                     f"{mean['algorithm1']:.1f} | {fit['slope']:.3g} r "
                     f"{'+' if fit['intercept'] >= 0 else '−'} {abs(fit['intercept']):.3g} |")
    return "\n".join(lines) + "\n"


def _figure(table: dict[str, Any]):
    """Fig. 2 of SDNet: accuracy against λ per noise, one line per severity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = list(table["fits"])
    fig, axes = plt.subplots(1, len(noises), figsize=(3.2 * len(noises), 3), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        for r in (r for r in table["rows"] if r["noise"] == noise):
            lams = [float(k) for k in r["sweep"]]
            line, = ax.plot(lams, [100 * v for v in r["sweep"].values()], label=f"severity {r['severity']}")
            ax.axvline(r["algorithm1"]["lambda"], color=line.get_color(), ls=":", lw=0.8)
        ax.set_title(noise, fontsize=9)
        ax.set_xlabel("λ")
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_sdnet_report(table: dict[str, Any], out_dir: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """``sdnet.json``, ``sdnet.md`` and ``sdnet.png`` (the λ curves, dotted: Algorithm 1's λ)."""
    from pathlib import Path

    from virolbi.io import save_json, save_text
    from virolbi.viz.path_figure import save_figure

    out = Path(out_dir)
    paths = {"json": save_json({"meta": meta, **table}, out / "sdnet.json"),
             "markdown": save_text(_markdown(table, meta), out / "sdnet.md")}
    import matplotlib.pyplot as plt

    fig = _figure(table)
    paths["figure"] = save_figure(fig, out / "sdnet.png")
    plt.close(fig)
    return paths
