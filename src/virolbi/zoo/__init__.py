"""Shipped weights: the trained models behind RESULTS.md, loadable by name without training.

Every model is one ``<name>.safetensors`` file beside ``manifest.json`` in this package. The
manifest gives, per name, the file's SHA-256 and size, the model to build (registry name, width,
classes, normalisation), how it was trained (config file, procedure, seed, precision) and its
validation accuracy before and after the float16 rounding of the stored weights. Loading never
unpickles anything (safetensors is a flat tensor format) and refuses a file whose checksum does not
match the manifest.

>>> "fast_cifar10_vanilla_s0" in list_weights() or list_weights() == []
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from virolbi.data.cache import file_sha256 as _sha256
from virolbi.errors import InputError

__all__ = ["ZOO_DIR", "list_weights", "weights_info", "weights_problem", "load_weights", "verify_weights",
           "export_weights", "read_manifest"]

#: Directory of the shipped files (``$VIROLBI_ZOO`` overrides it, e.g. for tests).
ZOO_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"


def _zoo_dir(zoo_dir: str | os.PathLike | None) -> Path:
    if zoo_dir is not None:
        return Path(zoo_dir)
    env = os.environ.get("VIROLBI_ZOO")
    return Path(env) if env else ZOO_DIR


def read_manifest(zoo_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest (``{name: entry}``); empty when there is none."""
    path = _zoo_dir(zoo_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"the weights manifest {path} is unreadable: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("weights", {}), dict):
        raise InputError(f"the weights manifest {path} is not a mapping of names to entries")
    return dict(data.get("weights", {}))


def list_weights(zoo_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the shipped models, sorted."""
    return sorted(read_manifest(zoo_dir))


def weights_info(name: str, zoo_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest entry of ``name``; an unknown name is an error listing the known ones."""
    manifest = read_manifest(zoo_dir)
    if name not in manifest:
        known = ", ".join(sorted(manifest)) or "none"
        raise InputError(f"no shipped weights named {name!r} (shipped: {known})")
    return dict(manifest[name])


def weights_problem(name: str, zoo_dir: str | os.PathLike | None = None) -> tuple[Path, str | None]:
    """``(path, problem)`` of ``name``'s file: ``problem`` is ``"missing"``, ``"does not match its
    checksum"`` (size or SHA-256 differ from the manifest) or ``None`` for a good file."""
    entry = weights_info(name, zoo_dir)
    path = _zoo_dir(zoo_dir) / entry["file"]
    if not path.is_file():
        return path, "missing"
    if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
        return path, "does not match its checksum"
    return path, None


def verify_weights(name: str, zoo_dir: str | os.PathLike | None = None) -> Path:
    """The path of ``name``'s file after checking its size and SHA-256 against the manifest."""
    path, problem = weights_problem(name, zoo_dir)
    if problem == "missing":
        raise InputError(f"shipped weights {name!r}: file {path} is missing")
    if problem is not None:
        raise InputError(f"shipped weights {name!r}: {path} does not match its checksum in the "
                         "manifest (corrupted or modified); refusing to load it")
    return path


def _read_tensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"shipped weights {name!r}: {path} is not a valid safetensors file "
                         f"({exc})") from None


def load_weights(name: str, *, zoo_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the shipped model ``name`` with its weights (float32, eval mode): a classifier, or a
    denoiser for an entry with ``task: denoising``.

    Returns ``(model, entry)`` with the manifest entry. Raises :class:`~virolbi.InputError` for an
    unknown name, a missing file, a checksum mismatch or a file that is not safetensors.
    """
    from virolbi.models import create_model

    path = verify_weights(name, zoo_dir)
    entry = weights_info(name, zoo_dir)
    m = entry["model"]
    if entry.get("task") == "denoising":  # a DnCNN of virolbi.denoise (Yan's thesis, chapter 2)
        from virolbi.denoise.dncnn import DnCNN

        net = DnCNN(m["depth"], m["width"])
    else:
        net = create_model(m["name"], m["num_classes"], width=m["width"],
                           normalize=m.get("normalize", True), **(m.get("kwargs") or {}))
    state = {k: (v.float() if v.is_floating_point() else v)
             for k, v in _read_tensors(path, name).items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"shipped weights {name!r} do not fit model {m['name']!r}: {first}") from None
    return net.to(device).eval(), entry


def export_weights(model: torch.nn.Module, name: str, info: Mapping[str, Any], *,
                   zoo_dir: str | os.PathLike | None = None, dtype: torch.dtype = torch.float16
                   ) -> dict[str, Any]:
    """Write ``model``'s state dict as ``<name>.safetensors`` (floating tensors cast to ``dtype``)
    and record it in the manifest with ``info`` (must hold ``model``: name, num_classes, width).

    Both files are written atomically; an existing entry of the same name is replaced.
    """
    from safetensors.torch import save_file

    from virolbi.io import atomic_path, save_json

    if not isinstance(info.get("model"), Mapping) or "name" not in info["model"]:
        raise InputError("export_weights: info['model'] must give the model's registry name")
    root = _zoo_dir(zoo_dir)
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in model.state_dict().items()}
    path = root / f"{name}.safetensors"
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"name": name, "dtype": str(dtype)})
    entry = {**dict(info), "file": path.name, "bytes": path.stat().st_size,
             "sha256": _sha256(path), "dtype": str(dtype).replace("torch.", "")}
    manifest = read_manifest(root)
    manifest[name] = entry
    save_json({"format": 1, "weights": dict(sorted(manifest.items()))}, root / MANIFEST)
    return entry
