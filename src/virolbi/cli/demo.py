"""``virolbi demo``: the main job on scikit-image's bundled sample photographs.

Example::

    virolbi demo                       # writes ./virolbi-demo/
    virolbi demo --output-dir out --size 64 --images camera,astronaut

writes into the output folder

- ``path.png``: the image path (paper Fig. 1a / Fig. 6), a row per photograph, a column per level;
- ``<name>_s0.60.png``: each photograph smoothed at ``--sparsity``;
- ``report.md`` and ``report.json``: per photograph its size, the LBI iterations at which each level
  was reached, seconds and throughput.

Photographs are downscaled (Pillow, Lanczos) so that their longer side is at most ``--size`` pixels,
which keeps the whole demo well under a minute on two CPU cores. Needs scikit-image
(``pip install virolbi[demo]``); nothing is downloaded.

The demo is a list of steps, :data:`DEMO_STEPS`, run in order; later features add theirs with
:func:`demo_step`. Each step is a callable ``step(output_dir, report)`` that reads the photographs
from ``report.images``, writes its files into ``output_dir`` (atomically, via :mod:`virolbi.io`) and
records what it did in ``report`` (Markdown sections, JSON data, file names).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from virolbi.cli._common import add_smoother_arguments, parse_levels, smoother_options
from virolbi.imagefiles import LoadedImage, level_tag, write_output
from virolbi.errors import InputError

COMMAND = "demo"
HELP = "run ViRoLBI on scikit-image's sample photographs: image path, smoothed images, report"

#: scikit-image sample photographs used by default (bundled with scikit-image, no download).
DEFAULT_IMAGES = ("astronaut", "camera", "coffee", "chelsea")
#: The sample photographs the demo accepts: all ship inside scikit-image's wheel.
KNOWN_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry",
                "moon", "coins", "page", "text", "hubble_deep_field", "retina")
DEFAULT_OUTPUT_DIR = "virolbi-demo"
DEFAULT_SIZE = 128


@dataclass
class DemoReport:
    """What the demo's steps share and record.

    Attributes
    ----------
    options : dict
        The demo's options (sparsity, levels, size, smoother keyword arguments).
    images : dict of str to LoadedImage
        The photographs, float ``(C, H, W)`` in [0, 1], by name (filled before the first step).
    sections : list of str
        Markdown sections of ``report.md``, in order.
    data : dict
        JSON-friendly results by step name, written to ``report.json``.
    files : list of str
        Files written into the output folder (relative names).
    """

    options: dict
    images: dict[str, LoadedImage] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


DemoStep = Callable[[Path, DemoReport], None]

#: The demo's steps, run in order by ``virolbi demo``; extend with :func:`demo_step`.
DEMO_STEPS: list[DemoStep] = []


def demo_step(func: DemoStep) -> DemoStep:
    """Register ``func(output_dir, report)`` as the next step of ``virolbi demo`` (a decorator)."""
    DEMO_STEPS.append(func)
    return func


def sample_photographs(names, size: int) -> dict[str, LoadedImage]:
    """scikit-image sample photographs, downscaled so the longer side is at most ``size`` pixels."""
    try:
        import skimage.data
    except ImportError:
        raise InputError("the demo needs scikit-image: pip install virolbi[demo]") from None
    from PIL import Image

    out = {}
    for name in names:
        if name not in KNOWN_IMAGES:
            raise InputError(f"unknown sample image {name!r}; expected some of "
                             f"{', '.join(KNOWN_IMAGES)}")
        arr = np.asarray(getattr(skimage.data, name)())
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr * 255.0 if arr.max() <= 1 else arr), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        scale = size / max(img.size)
        if scale < 1:
            img = img.resize((max(2, round(img.width * scale)), max(2, round(img.height * scale))),
                             Image.Resampling.LANCZOS)
        a = np.array(img, copy=True)
        t = torch.from_numpy(a).float() / 255.0
        t = t[None] if a.ndim == 2 else t.permute(2, 0, 1).contiguous()
        out[name] = LoadedImage(path=Path(f"{name}.png"), image=t, gray_2d=a.ndim == 2,
                                is_array=False, dtype=np.dtype(np.uint8))
    return out


#: What the numbers of level 1 are (the path's t -> infinity limit, not an LBI iterate).
LEVEL_ONE = ("level 1 is the limit t -> infinity: its image is the photograph itself, not an LBI "
             "iterate; its iterations are where the run stopped (after the last level below 1) "
             "and its sparsity the share of edges along which the photograph changes")


def _iterations_cell(iterations: list[int], levels: tuple[float, ...]) -> str:
    """The iterations at each level, ``" / "``-separated; level 1's marked as the stop point.

    >>> _iterations_cell([10, 40, 40], (0.3, 0.6, 1.0))
    '10 / 40 / 40 (stop)'
    """
    return " / ".join(f"{k} (stop)" if level >= 1.0 else str(k)
                      for k, level in zip(iterations, levels))


def _level_one_note(levels: tuple[float, ...], rows: list[dict]) -> list[str]:
    """The report's sentence on level 1's numbers (none when level 1 was not asked for)."""
    if 1.0 not in levels:
        return []
    reached = ", ".join(f"{r['image']} {r['sparsity_reached'][-1]:.3f}" for r in rows)
    return ["", f"Level 1 is the limit t → ∞: its image is the photograph itself, not an LBI "
                f"iterate; its iterations (marked “stop”) are where the run stopped, after the last "
                f"level below 1, and its sparsity ({reached}) is the share of edges along which "
                f"the photograph changes."]


@demo_step
def image_path_step(output_dir: Path, report: DemoReport) -> None:
    """The image path of every photograph: ``path.png``, the smoothed images at the demo's
    sparsity, and a timing table (iterations per level, seconds, throughput)."""
    from virolbi import image_path
    from virolbi.cli._common import progress
    from virolbi.imagefiles import run_catching_unreached
    from virolbi.viz import plot_image_path, save_figure

    opts = report.options
    levels, sparsity, kw = opts["levels"], opts["sparsity"], opts["smoother"]
    # One tiny warm-up run, so that one-off compilation does not count in the first timing.
    image_path(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)), levels, **kw)
    paths, rows, table = [], [], []
    names = list(report.images)
    with progress(len(names), "demo: image path") as bar:
        for name in names:
            im = report.images[name]
            t0 = time.perf_counter()
            (out, res), unreached = run_catching_unreached(
                lambda x: image_path(x, levels, return_info=True, **kw), im.image[None])
            seconds = time.perf_counter() - t0
            paths.append(out[:, 0])
            out_name = f"{name}_{level_tag(sparsity)}.png"
            write_output(im, res.at(sparsity)[0], output_dir / out_name)
            report.files.append(out_name)
            c, h, w = im.size
            iters = [int(v) for v in res.iterations[:, 0]]
            rows.append({"image": name, "size": [c, h, w], "levels": list(levels),
                         "iterations": iters,
                         "sparsity_reached": [round(float(v), 6) for v in res.sparsity[:, 0]],
                         "components": [int(v) for v in res.n_components[:, 0]],
                         "warnings": [r.message() for r in unreached],
                         "seconds": round(seconds, 6),
                         "kpixels_per_second": round(h * w / seconds / 1e3, 3),
                         "iterations_per_second": round(max(iters) / seconds, 1),
                         "output": out_name})
            table.append(f"| {name} | {h}×{w}×{c} | {_iterations_cell(iters, levels)} | "
                         f"{seconds:.2f} | {h * w / seconds / 1e3:.1f} | "
                         f"{max(iters) / seconds:.0f} |")
            bar.update(1)
    fig = plot_image_path(paths, levels, titles=names)
    save_figure(fig, output_dir / "path.png")
    report.files.append("path.png")
    total = sum(r["seconds"] for r in rows)
    warnings = [f"- {r['image']}: {w}" for r in rows for w in r["warnings"]]
    lv = " / ".join(f"{v:g}" for v in levels)
    report.sections.append("\n".join([
        "## Image path (paper Fig. 1a / Fig. 6)",
        "",
        "![image path](path.png)",
        "",
        f"One LBI run per photograph (solver `{kw['solver']}`, κ = {kw['kappa']:g}, ν = {kw['nu']:g}, "
        f"{'group' if kw['group'] else 'per-channel ℓ1'} sparsity) records ũ at each level; "
        f"the smoothed photographs at sparsity {sparsity:g} are "
        + ", ".join(f"`{r['output']}`" for r in rows) + ".",
        "",
        f"| image | size (H×W×C) | iterations at levels {lv} | seconds | throughput (kpx/s) "
        f"| LBI iterations/s |",
        "|---|---|---|---|---|---|",
        *table,
        "",
        f"Total {total:.2f} s on {torch.get_num_threads()} thread(s) (after a warm-up run).",
        *_level_one_note(levels, rows),
        *([""] + ["Warnings (targets not reached):"] + warnings if warnings else []),
    ]))
    report.data["image_path"] = {"images": rows, "seconds": round(total, 6)}
    if 1.0 in levels:
        report.data["image_path"]["level_1"] = LEVEL_ONE


@demo_step
def noise_step(output_dir: Path, report: DemoReport) -> None:
    """Smoothing as a defence against noise (paper §4.1): each photograph with CIFAR-10-C Gaussian
    noise at severity 3, then smoothed at the demo's sparsity; PSNR against the clean photograph
    before and after, and ``noise.png`` (clean / noisy / smoothed rows)."""
    from virolbi import smooth
    from virolbi.perturb import corrupt
    from virolbi.viz import plot_image_path, save_figure

    opts = report.options
    sparsity, kw = opts["sparsity"], opts["smoother"]
    gen = torch.Generator().manual_seed(0)

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean().clamp_min(1e-12)))

    rows, panels = [], []
    for name, im in report.images.items():
        clean = im.image[None].float()
        if clean.shape[1] == 1:  # the CIFAR-C noises are defined on colour and gray alike
            noisy = corrupt(clean.expand(1, 3, *clean.shape[-2:]), "gaussian_noise", 3,
                            generator=gen)[:, :1]
        else:
            noisy = corrupt(clean, "gaussian_noise", 3, generator=gen)
        smoothed = smooth(noisy, sparsity, **kw)
        rows.append({"image": name, "psnr_noisy": round(psnr(noisy, clean), 3),
                     "psnr_smoothed": round(psnr(smoothed, clean), 3)})
        panels.append(torch.stack([clean[0], noisy[0], smoothed[0]]))
    fig = plot_image_path(panels, (1.0, 1.0, sparsity), titles=list(report.images))
    for ax, title in zip(fig.axes[:3], ("clean", "noisy (gaussian, severity 3)",
                                        f"smoothed, sparsity {sparsity:g}")):
        ax.set_title(title, fontsize=8)
    save_figure(fig, output_dir / "noise.png")
    report.files.append("noise.png")
    report.sections.append("\n".join([
        "## Noise (paper §4.1): Gaussian noise, CIFAR-10-C severity 3, then smoothing", "",
        "![noise](noise.png)", "",
        "| image | PSNR noisy (dB) | PSNR smoothed (dB) |", "|---|---|---|",
        *[f"| {r['image']} | {r['psnr_noisy']:.2f} | {r['psnr_smoothed']:.2f} |" for r in rows]]))
    report.data["noise"] = {"corruption": "gaussian_noise", "severity": 3, "images": rows}


def render_markdown(report: DemoReport) -> str:
    """The demo's ``report.md``: a header with the options, then each step's section."""
    from virolbi import __version__

    o = report.options
    head = ["# ViRoLBI demo", "",
            f"virolbi {__version__}, torch {torch.__version__}; photographs from scikit-image "
            f"({', '.join(report.images)}), longer side ≤ {o['size']} px; sparsity {o['sparsity']:g}, "
            f"levels {', '.join(f'{v:g}' for v in o['levels'])}.", ""]
    return "\n".join(head) + "\n" + "\n\n".join(report.sections) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, metavar="DIR",
                        help="folder the demo writes into")
    parser.add_argument("--images", default=",".join(DEFAULT_IMAGES),
                        help=f"comma-separated scikit-image sample photographs "
                             f"(known: {', '.join(KNOWN_IMAGES)})")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help="downscale photographs so their longer side is at most this many "
                             "pixels")
    parser.add_argument("--sparsity", type=float, default=0.6,
                        help="sparsity level of the smoothed images written (added to --levels)")
    parser.add_argument("--levels", default="0.2,0.4,0.6,0.8,1.0",
                        help="comma-separated sparsity levels of the image-path figure")
    add_smoother_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from virolbi.checks import check_in_range, check_unit_interval
    from virolbi.io import save_json, save_text

    sparsity = check_unit_interval(args.sparsity, "--sparsity")
    levels = tuple(sorted(set(parse_levels(args.levels)) | {sparsity}))
    size = int(check_in_range(args.size, "--size", 2, 4096))
    names = [n.strip() for n in str(args.images).split(",") if n.strip()]
    if not names:
        raise InputError(f"--images must name at least one sample photograph, got {args.images!r}")
    options = smoother_options(args)
    from virolbi.io import check_output_dir

    output_dir = check_output_dir(args.output_dir, "--output-dir")
    report = DemoReport(options={"sparsity": sparsity, "levels": levels, "size": size,
                                 "images": names, "smoother": options})
    report.images = sample_photographs(names, size)
    start = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    for step in DEMO_STEPS:
        step(output_dir, report)
    report.files += ["report.md", "report.json"]
    save_text(render_markdown(report), output_dir / "report.md")
    from virolbi.provenance import run_metadata

    run = run_metadata("cpu")
    save_json({"version": run["versions"]["virolbi"], "torch": run["versions"]["torch"],
               "run": run, "options": report.options,
               "steps": [getattr(s, "__name__", repr(s)) for s in DEMO_STEPS],
               "results": report.data, "files": report.files,
               "seconds": round(time.perf_counter() - start, 6)}, output_dir / "report.json")
    print(f"demo written to {output_dir}/ ({', '.join(report.files)}) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0
