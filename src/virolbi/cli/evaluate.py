"""``virolbi evaluate``: the robustness suite on a trained classifier (SPEC §3, paper §4).

Example::

    virolbi evaluate --checkpoint runs/r18/model.pt --data cifar10 --suite paper \\
        --preprocess-sparsity 0.6 --output-dir runs/r18/eval

The checkpoint is a ``torch.save``-d dict ``{"model": state_dict, "config": {...}}`` whose config
names the model (key ``model``, ``name`` or ``arch``), ``num_classes``, ``width`` and ``dataset``
(optional: ``normalize``, ``image_size``, ``model_kwargs``); or a raw state dict together with
``--model NAME --width W --num-classes K``. It is read with ``torch.load(weights_only=True)``.
Writes ``results.json``, ``results.md`` and ``results.png`` to ``--output-dir``. While it runs, the
tallies are kept there after every batch (``partial-evaluation.json``): the same command run again
after an interruption continues from the last finished batch, with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from virolbi.cli._common import add_dataset_arguments, load_dataset_from_args
from virolbi.errors import InputError

COMMAND = "evaluate"
HELP = "robustness suite (noise, FGSM/PGD, AutoAttack, low resolution, frequency) on a checkpoint"
RERUN = "the same command continues from the last finished batch"

_NAME_KEYS = ("model", "name", "arch")
#: The finished result of each suite that writes its own (the others write results.json).
FINISHED_RESULT = {"psnr": "psnr.json", "sdnet": "sdnet.json"}


def _read_checkpoint(path: Path) -> Any:
    from virolbi.io import load_torch_file

    return load_torch_file(path, "checkpoint")


def _flatten_trainer_config(config: dict, obj: Any) -> dict:
    """Accept the nested config that ``virolbi train`` saves (``model: {name, width, ...}``,
    ``data: {name, num_classes}``) besides the flat form; the class count falls back to the
    classifier's output size in the state dict."""
    if not isinstance(config.get("model"), dict):
        return config
    model, data = config["model"], config.get("data") or {}
    flat = {"model": model.get("name"), "width": model.get("width", 1.0),
            "dataset": data.get("name"), "model_kwargs": dict(model.get("kwargs") or {})}
    if model.get("image_size") is not None:
        flat["image_size"] = model["image_size"]
    k = data.get("num_classes")
    if k is None and isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        linear = [v for key, v in obj["model"].items()
                  if key.endswith("weight") and getattr(v, "ndim", 0) == 2]
        k = int(linear[-1].shape[0]) if linear else None
    if k is not None:
        flat["num_classes"] = k
    return flat


def build_model(path: str | Path, *, model: str | None = None, width: float | None = None,
                num_classes: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild a classifier from a checkpoint file; command-line values override its config.

    Returns the model (weights loaded, strict) and the resolved config.
    """
    from virolbi.models import DATASET_STATS, create_model, load_pretrained
    from virolbi.zoo import list_weights, load_weights

    path = Path(path)
    if not path.exists() and str(path) in list_weights():
        if model is not None or width is not None or num_classes is not None:
            raise InputError(f"{path} is a shipped model: it takes no --model, --width or "
                             "--num-classes")
        net, entry = load_weights(str(path))
        m = entry["model"]
        return net, {"model": m["name"], "num_classes": m["num_classes"], "width": m["width"],
                     "normalize": m.get("normalize", True), "dataset": entry["data"]["name"],
                     "shipped": str(path), "sha256": entry["sha256"]}
    obj = _read_checkpoint(path)
    config = dict(obj["config"]) if isinstance(obj, dict) and isinstance(obj.get("config"), dict) else {}
    config = _flatten_trainer_config(config, obj)
    name = model or next((config[k] for k in _NAME_KEYS if isinstance(config.get(k), str)), None)
    if name is None:
        raise InputError(f"{path} has no 'config' naming the model: pass --model NAME (and --width, "
                         "--num-classes)")
    k = num_classes if num_classes is not None else config.get("num_classes", 10)
    w = width if width is not None else config.get("width", 1.0)
    kwargs = dict(config.get("model_kwargs") or {})
    normalize: Any = config.get("normalize", True)
    dataset = str(config.get("dataset", ""))
    stats = "cifar10" if dataset.startswith("cifar10") else dataset
    if normalize is True and stats in DATASET_STATS:
        normalize = stats
    if config.get("image_size") is not None:
        kwargs["image_size"] = config["image_size"]
    net = create_model(name, num_classes=k, width=w, normalize=normalize, **kwargs)
    load_pretrained(net, path)
    resolved = {"model": name, "num_classes": k, "width": w, "normalize": normalize,
                "dataset": config.get("dataset"), **({"model_kwargs": kwargs} if kwargs else {})}
    return net, resolved


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="the name of a shipped model (virolbi weights list), or a torch.save "
                             "file: {'model': state_dict, 'config': {...}} or a raw state dict "
                             "(then give --model)")
    parser.add_argument("--model", default=None, help="model name for a raw state dict (resnet18, "
                        "resnet50, vit_tiny, torchvision:<name>, timm:<name>); overrides the config")
    parser.add_argument("--width", type=float, default=None, help="ResNet width multiplier")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier outputs")
    add_dataset_arguments(parser)
    parser.add_argument("--suite", default="paper",
                        help="paper, quick, noise, adversarial, lowres or frequency; tisode (Gaussian "
                             "sigma 15/255 and 20/255, FGSM 8/255 and 10/255, PGD 8/255: Yan's "
                             "thesis Table 3.8); square (the gradient-free Square attack, L-inf 8/255, "
                             "1000 queries, with and without --preprocess-*: the check that PGD "
                             "is not masked); autoattack (APGD-CE, APGD-T, margin APGD-T in place "
                             "of FAB-T, Square, from ART; worst case per image and the breakdown, "
                             "8/255, see --aa-*); psnr for a "
                             "denoiser run folder (--data set12 or bsd68: Gaussian, uniform and "
                             "ObsAtk noise at 15/255 and 25/255); sdnet for a model with a CSC "
                             "stem (SDNet's Algorithm 1: accuracy with the training lambda, the "
                             "oracle lambda and the fitted lambda(r) on the four noises)")
    parser.add_argument("--preprocess-sparsity", type=float, default=None,
                        help="test-time ViRoLBI preprocessing at this sparsity level (paper: 0.6 "
                             "CIFAR, 0.3 ImageNet100); rows with and without it")
    parser.add_argument("--preprocess-blur", action="store_true",
                        help="test-time Gaussian blur instead (the Blur baseline's preprocessing: "
                             "kernel 3, sigma 2 below 128 px, kernel 7 above)")
    parser.add_argument("--limit", type=int, default=None,
                        help="only N images, as even as possible over the classes, drawn with "
                             "--seed (the same rule in every command)")
    parser.add_argument("--fit-images", type=int, default=None,
                        help="training images used to fit: --suite sdnet, Algorithm 1's lambda(r) "
                             "(of --data's train split, stratified; default 500); --suite psnr "
                             "--checkpoint virolbi, the sparsity (Train400; default 40)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="images per batch (the resume file is kept after every batch; the "
                             "same batch size and seed give the same numbers)")
    parser.add_argument("--pgd-steps", type=int, default=20, help="PGD iterations (step ε/4)")
    parser.add_argument("--eps-convention", choices=("pixel", "normalized"), default="pixel",
                        help="epsilon on [0, 1] pixels, or on normalised images (the paper's "
                             "Table 2 wording: pixel radius eps x the channel's std, ~4x smaller)")
    parser.add_argument("--eot-samples", type=int, default=None,
                        help="average every attack gradient over N forward passes (EOT) - for "
                             "randomised models such as PNI; default: 8 for a model with weight "
                             "noise, else 1")
    parser.add_argument("--aa-version", choices=("standard", "rand"), default=None,
                        help="--suite autoattack: standard, or rand (APGD-CE and APGD-DLR with EOT, "
                             "for random models); default rand for a model with weight noise")
    parser.add_argument("--aa-iterations", type=int, default=100,
                        help="--suite autoattack: APGD iterations per run (AutoAttack: 100)")
    parser.add_argument("--aa-queries", type=int, default=5000,
                        help="--suite autoattack: Square queries (AutoAttack: 5000)")
    parser.add_argument("--aa-targets", type=int, default=9,
                        help="--suite autoattack: target classes of APGD-T (AutoAttack: 9)")
    parser.add_argument("--aa-independent", action="store_true",
                        help="--suite autoattack: run every attack on every image (each attack's "
                             "own accuracy) instead of AutoAttack's cascade; same worst case")
    parser.add_argument("--transfer-from", default=None, metavar="NAME_OR_CHECKPOINT",
                        help="--suite autoattack: also classify images crafted on this undefended "
                             "base model (a shipped name or a checkpoint), RobustBench's transfer "
                             "check for preprocessing defences")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the --limit subset, the noise draws and PGD's random starts")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    parser.add_argument("--no-sanity", action="store_true",
                        help="skip the extra PGD runs of the sanity checks")
    parser.add_argument("--output-dir", default="evaluation",
                        help="where results.json, results.md and results.png go (locked while "
                             "the evaluation runs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished evaluation already in --output-dir (without it, "
                             "such a folder is refused)")


def _smoother_psnr_rows(args: argparse.Namespace, images: list, meta: dict) -> list[dict]:
    """ViRoLBI as the denoiser (``--checkpoint virolbi``): per noise level its sparsity is
    ``--preprocess-sparsity`` or the best of a grid on ``--fit-images`` Train400 images."""
    from virolbi.checks import check_unit_interval
    from virolbi.denoise.data import load_gray_set
    from virolbi.denoise.evaluate import psnr_rows
    from virolbi.denoise.smoother import SmootherDenoiser, choose_sparsity

    if args.fit_images is not None and args.fit_images < 1:
        raise InputError(f"--fit-images must be a positive integer, got {args.fit_images}")
    fixed = (None if args.preprocess_sparsity is None
             else check_unit_interval(args.preprocess_sparsity, "--preprocess-sparsity"))
    train = load_gray_set("train400", args.data_dir)[:args.fit_images or 40] if fixed is None else []
    rows, meta["sparsity"] = [], {}
    for gamma in (15 / 255, 25 / 255):
        level, scores = (fixed, None) if fixed is not None else choose_sparsity(train, gamma, seed=args.seed)
        how = "given" if fixed is not None else f"chosen on {len(train)} Train400 images"
        meta["sparsity"][f"{round(gamma * 255)}/255"] = {"level": level, "how": how, "train_psnr": scores}
        rows += psnr_rows(SmootherDenoiser(level), images, gammas=(gamma,), seed=args.seed,
                          name=f"ViRoLBI (sparsity {level:g}, {how})", dataset=args.data)
    return rows


def _run_psnr(args: argparse.Namespace) -> int:
    """The denoising suite: PSNR of a trained denoiser on a gray test set (thesis Table 2.1)."""
    from virolbi.denoise.data import SETS, load_gray_set
    from virolbi.denoise.evaluate import load_denoiser, psnr_rows, write_psnr_report

    if args.data not in SETS:
        raise InputError(f"--suite psnr takes --data {' or '.join(SETS)}, got {args.data!r}")
    images = load_gray_set(args.data, args.data_dir)[:args.limit]
    meta = {"checkpoint": str(args.checkpoint), "data": args.data, "images": len(images)}
    if str(args.checkpoint) == "virolbi":
        rows = _smoother_psnr_rows(args, images, meta)
    else:
        net = load_denoiser(args.checkpoint)
        rows = psnr_rows(net, images, seed=args.seed, name=str(args.checkpoint), dataset=args.data)
    paths = write_psnr_report(rows, args.output_dir, meta)
    print(f"wrote {paths['json']}, {paths['markdown']}")
    return 0


def _run_sdnet(args: argparse.Namespace) -> int:
    """SDNet's robust inference table (Li et al. 2022, Algorithm 1, Tables 2-3, Fig. 2)."""
    from virolbi.data.subset import balanced_subset
    from virolbi.evaluate.data import EvalData
    from virolbi.evaluate.sdnet_table import sdnet_noise_table, write_sdnet_report

    args.fit_images = 500 if args.fit_images is None else args.fit_images
    for flag, value in (("--limit", args.limit), ("--fit-images", args.fit_images),
                        ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    model, _ = build_model(args.checkpoint, model=args.model, width=args.width,
                           num_classes=args.num_classes)
    sets = []
    for split, n in ((args.split, args.limit), ("train", args.fit_images)):
        data = EvalData(load_dataset_from_args(args, split))
        labels = data.labels()
        idx = (balanced_subset(labels, n, args.seed) if labels is not None and n
               else np.arange(data.length)[:n])
        sets.append(data.batch(idx))
    (test_x, test_y), (fit_x, fit_y) = sets
    table = sdnet_noise_table(model, fit_x, fit_y, test_x, test_y, seed=args.seed,
                              batch_size=args.batch_size)
    meta = {"checkpoint": str(args.checkpoint), "data": f"{args.data} {args.split}",
            "test_images": len(test_y), "fit_images": len(fit_y), "seed": args.seed}
    paths = write_sdnet_report(table, args.output_dir, meta)
    print(f"clean accuracy {100 * table['clean']['lambda0']['accuracy']:.2f}% "
          f"(lambda {table['lambda0']:g}, n = {len(test_y)})")
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['figure']}")
    return 0


def _check_suite(name: str) -> None:
    """An unknown ``--suite`` fails before anything is loaded, naming every suite there is."""
    from virolbi.evaluate.suites import SUITES

    known = (*SUITES, *FINISHED_RESULT)
    if name not in known:
        raise InputError(f"unknown suite {name!r} (--suite); expected one of {', '.join(known)}")


def _refuse_a_finished_result(args: argparse.Namespace) -> None:
    """A folder that already holds this suite's finished result is replaced only with --overwrite
    (an interrupted evaluation's resume file is not a result: it is continued)."""
    done = Path(args.output_dir) / FINISHED_RESULT.get(args.suite, "results.json")
    if done.is_file() and not args.overwrite:
        raise InputError(f"--output-dir {args.output_dir} already holds a finished evaluation "
                         f"({done.name}); pass --overwrite to replace it, or choose another "
                         "--output-dir")


def run(args: argparse.Namespace) -> int:
    from virolbi.io import check_output_dir, locked_output_dir

    _check_suite(args.suite)
    options = _suite_options(args) if args.suite not in FINISHED_RESULT else None
    check_output_dir(args.output_dir, "--output-dir")
    with locked_output_dir(args.output_dir, "--output-dir"):  # a second run gets one line
        _refuse_a_finished_result(args)
        if args.suite == "psnr":
            return _run_psnr(args)
        if args.suite == "sdnet":
            return _run_sdnet(args)
        return _run_suite(args, *options)


def _suite_options(args: argparse.Namespace) -> tuple[float | None, str]:
    """The checked options of a robustness suite: (preprocessing sparsity or None, device)."""
    from virolbi.checks import check_unit_interval, resolve_device

    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size),
                        ("--pgd-steps", args.pgd_steps), ("--eot-samples", args.eot_samples),
                        ("--aa-iterations", args.aa_iterations), ("--aa-queries", args.aa_queries),
                        ("--aa-targets", args.aa_targets)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    sparsity = (None if args.preprocess_sparsity is None
                else check_unit_interval(args.preprocess_sparsity, "--preprocess-sparsity"))
    if sparsity is not None and args.preprocess_blur:
        raise InputError("give either --preprocess-sparsity or --preprocess-blur, not both")
    if args.transfer_from is not None and args.suite != "autoattack":
        raise InputError(f"--transfer-from needs --suite autoattack, got --suite {args.suite}")
    return sparsity, str(resolve_device(args.device, "--device"))


def _autoattack_options(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """``evaluate``'s ``autoattack`` settings and ``transfer`` base model from the --aa-* options
    (the rand version by default for a model with weight noise)."""
    from virolbi.attacks.autoattack import AutoAttackSettings
    from virolbi.evaluate.autoattack import Transfer
    from virolbi.models.pni import default_eot_samples

    if args.suite != "autoattack":
        return {}
    version = args.aa_version or ("rand" if default_eot_samples(model) > 1 else "standard")
    settings = AutoAttackSettings(version=version, iterations=args.aa_iterations,
                                  queries=args.aa_queries, targets=args.aa_targets,
                                  independent=bool(args.aa_independent))
    transfer = None
    if args.transfer_from is not None:
        base, _ = build_model(args.transfer_from)
        transfer = Transfer(base, str(args.transfer_from))
    return {"autoattack": settings, "transfer": transfer}


def _run_suite(args: argparse.Namespace, sparsity: float | None, device: str) -> int:
    """A robustness suite (paper, quick, noise, ...) on a classifier, resumable batch by batch;
    ``sparsity`` and ``device`` as :func:`_suite_options` checked them."""
    from virolbi.evaluate import evaluate, write_report
    from virolbi.evaluate.partial import RESUME_FILE
    from virolbi.models.pni import default_eot_samples

    model, config = build_model(args.checkpoint, model=args.model, width=args.width,
                                num_classes=args.num_classes)
    dataset = load_dataset_from_args(args)
    preprocess = None
    if sparsity is not None:
        from virolbi.smoother import ViRoLBI

        preprocess = ViRoLBI(sparsity=sparsity)
    elif args.preprocess_blur:
        from virolbi.perturb import GaussianBlur, blur_params_for

        side = min(int(s) for s in dataset[0][0].shape[-2:])
        kernel_size, sigma = blur_params_for(side)
        preprocess = GaussianBlur(kernel_size, sigma)
    meta = {"model": f"{config['model']} (width {config['width']:g}, {config['num_classes']} classes)",
            "checkpoint": str(args.checkpoint), "model_config": config,
            "data": {"name": str(args.data), "split": args.split, "data_dir": args.data_dir},
            "preprocess_sparsity": sparsity, "preprocess_blur": bool(args.preprocess_blur),
            "arguments": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
    results = evaluate(model, dataset, suite=args.suite, preprocess=preprocess, limit=args.limit,
                       batch_size=args.batch_size, device=device, seed=args.seed,
                       pgd_steps=args.pgd_steps, sanity=not args.no_sanity, meta=meta,
                       eps_convention=args.eps_convention,
                       eot_samples=args.eot_samples or default_eot_samples(model),
                       resume_file=Path(args.output_dir) / RESUME_FILE,
                       **_autoattack_options(args, model))
    paths = write_report(results, args.output_dir)
    if results.meta.get("resumed_at_batch"):
        print(f"resumed an interrupted evaluation at batch {results.meta['resumed_at_batch'] + 1}")
    clean = [r for r in results.rows if r.group == "clean"]
    failed = [c.name for c in results.sanity if not c.passed]
    for r in clean:
        pre = "without preprocessing" if r.preprocessing == "none" else f"with {r.preprocessing}"
        print(f"clean accuracy {100 * r.accuracy:.2f}% ({pre}, n = {r.n})")
    if results.sanity:
        print(f"sanity checks: {len(results.sanity) - len(failed)}/{len(results.sanity)} passed"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['figure']}")
    return 0
