"""Shipped weights: the trained models behind RESULTS.md, loadable by name without training.

Every model is one ``<name>.safetensors`` file listed in ``manifest.json``. The manifest gives, per
name, the file's SHA-256 and size, the model to build (registry name, width, classes,
normalisation), how it was trained (config file, procedure, seed, precision) and its validation
accuracy before and after the float16 rounding of the stored weights. Loading never unpickles
anything (safetensors is a flat tensor format) and refuses a file whose checksum does not match the
manifest.

The files are not in the package (the wheel stays small). :func:`weights_source` finds them, first
match wins:

1. ``$VIROLBI_WEIGHTS`` (``$VIROLBI_ZOO`` is the same, its older name): a folder holding
   ``manifest.json`` and the files;
2. the checkout's top-level ``weights/`` folder, when the package runs from a clone (the editable
   install of ``make``);
3. the user cache, ``$VIROLBI_CACHE/weights`` (default ``~/.cache/virolbi/weights``): a file not
   there yet is downloaded on first use from :data:`RELEASE_URL` (``$VIROLBI_WEIGHTS_URL``
   overrides it) with :func:`virolbi.data.download_url`, checked against the manifest's SHA-256 and
   only then renamed into place.

One manifest: ``weights/manifest.json`` of the repository is the source of truth (``virolbi weights
export`` writes it). The package ships a byte-identical copy, ``virolbi/zoo/manifest.json`` (package
data, 60 kB), the manifest of the cache, so names and checksums are known without network;
exporting into the checkout's folder rewrites both, and ``tests/test_weights_location.py`` fails
when they differ.

>>> "fast_cifar10_vanilla_s0" in list_weights() or list_weights() == []
True
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from virolbi.data.cache import cache_dir
from virolbi.data.cache import file_sha256 as _sha256
from virolbi.data.download import download_url
from virolbi.errors import InputError
from virolbi.io import atomic_path, save_json

__all__ = ["RELEASE_URL", "WeightsSource", "weights_source", "checkout_weights_dir", "list_weights",
           "weights_info", "weights_problem", "load_weights", "verify_weights", "export_weights",
           "read_manifest"]

#: The project's release of the weights files (each manifest entry at ``RELEASE_URL + file``, the
#: manifest too); ``$VIROLBI_WEIGHTS_URL`` overrides it (a mirror, or a ``file://`` folder).
RELEASE_URL = "https://github.com/virolbi/virolbi/releases/download/weights-v1/"
MANIFEST = "manifest.json"
#: The manifest shipped in the package: a copy of the checkout's ``weights/manifest.json``.
PACKAGE_MANIFEST = Path(__file__).resolve().with_name(MANIFEST)
#: Environment variables naming a weights folder, the first set one wins.
WEIGHTS_ENV = ("VIROLBI_WEIGHTS", "VIROLBI_ZOO")


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights are: ``folder`` holds the files, ``manifest`` lists them, ``origin`` says
    how the folder was found; ``url`` is the download base of missing files (the cache only)."""

    folder: Path
    manifest: Path
    origin: str
    url: str | None = None

    def describe(self) -> str:
        """One line: the folder, how it was found, and where missing files come from."""
        text = f"weights folder {self.folder} ({self.origin})"
        return f"{text}; missing files are downloaded from {self.url}" if self.url else text


def checkout_weights_dir(package_file: str | os.PathLike = __file__) -> Path | None:
    """The top-level ``weights/`` folder of the checkout the package runs from (a clone, an
    editable install), or ``None`` for an installed wheel.

    Parameters
    ----------
    package_file : path
        This module's file: ``<root>/src/virolbi/zoo/__init__.py`` in a checkout, where
        ``<root>`` must hold ``pyproject.toml`` and ``weights/manifest.json``.

    Returns
    -------
    Path or None
        ``<root>/weights``, or ``None`` when the package does not run from a checkout.
    """
    src = Path(package_file).resolve().parents[2]
    folder = src.parent / "weights"
    if src.name == "src" and (src.parent / "pyproject.toml").is_file() and (folder / MANIFEST).is_file():
        return folder
    return None


def weights_source(zoo_dir: str | os.PathLike | None = None) -> WeightsSource:
    """Where the weights are looked up, first match wins.

    Parameters
    ----------
    zoo_dir : path, optional
        A folder holding ``manifest.json`` and the files; it overrides everything below.

    Returns
    -------
    WeightsSource
        ``$VIROLBI_WEIGHTS`` (or ``$VIROLBI_ZOO``) when set; else the checkout's ``weights/``;
        else ``<cache>/weights`` with the package's manifest and the download base
        ``$VIROLBI_WEIGHTS_URL`` or :data:`RELEASE_URL`.

    Examples
    --------
    >>> weights_source("/tmp/w").describe()
    'weights folder /tmp/w (given folder)'
    """
    if zoo_dir is not None:
        folder = Path(zoo_dir).expanduser()
        return WeightsSource(folder, folder / MANIFEST, "given folder")
    for var in WEIGHTS_ENV:
        if os.environ.get(var):
            folder = Path(os.environ[var]).expanduser()
            return WeightsSource(folder, folder / MANIFEST, f"${var}")
    checkout = checkout_weights_dir()
    if checkout is not None:
        return WeightsSource(checkout, checkout / MANIFEST, "checkout")
    url = os.environ.get("VIROLBI_WEIGHTS_URL") or RELEASE_URL
    return WeightsSource(cache_dir() / "weights", PACKAGE_MANIFEST, "user cache",
                         url if url.endswith("/") else url + "/")


def read_manifest(zoo_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest (``{name: entry}``) of :func:`weights_source`; empty when there is none."""
    path = weights_source(zoo_dir).manifest
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
    """``(path, problem)`` of ``name``'s file where :func:`weights_source` looks for it (nothing is
    downloaded): ``problem`` is ``"missing"``, ``"does not match its checksum"`` (size or SHA-256
    differ from the manifest) or ``None`` for a good file."""
    entry = weights_info(name, zoo_dir)
    path = weights_source(zoo_dir).folder / entry["file"]
    if not path.is_file():
        return path, "missing"
    if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
        return path, "does not match its checksum"
    return path, None


def _download(name: str, entry: Mapping[str, Any], source: WeightsSource) -> None:
    """Fetch ``name``'s file from the release into the cache folder, SHA-256 checked, atomic."""
    try:
        download_url(source.url + entry["file"], source.folder / entry["file"], sha256=entry["sha256"])
    except InputError as exc:
        raise InputError(f"shipped weights {name!r}: {exc} (or set $VIROLBI_WEIGHTS to a folder "
                         "holding the weights)") from None


def verify_weights(name: str, zoo_dir: str | os.PathLike | None = None) -> Path:
    """The path of ``name``'s file after checking its size and SHA-256 against the manifest; in
    the user cache a missing or damaged file is downloaded first (see :func:`weights_source`)."""
    source = weights_source(zoo_dir)
    path, problem = weights_problem(name, zoo_dir)
    if problem is not None and source.url is not None:
        _download(name, weights_info(name, zoo_dir), source)
        path, problem = weights_problem(name, zoo_dir)
    if problem == "missing":
        raise InputError(f"shipped weights {name!r}: file {path} is missing ({source.describe()})")
    if problem is not None:
        raise InputError(f"shipped weights {name!r}: {path} does not match its checksum in the "
                         "manifest (corrupted or modified); refusing to load it")
    return path


def _read_tensors(path: Path, name: str) -> dict[str, torch.Tensor]:
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


def _export_source(zoo_dir: str | os.PathLike | None) -> WeightsSource:
    """The folder an export writes to: never the download cache (its manifest is the package's)."""
    source = weights_source(zoo_dir)
    if source.url is not None:
        raise InputError("no weights folder to export into: this installation has no checkout "
                         "weights/ folder; pass a folder (--weights-dir) or set $VIROLBI_WEIGHTS")
    return source


def _write_manifest(source: WeightsSource, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest`` into the folder; for the checkout's folder, copy it into the package too."""
    save_json({"format": 1, "weights": dict(sorted(manifest.items()))}, source.manifest)
    checkout = checkout_weights_dir()
    if checkout is not None and source.folder.resolve() == checkout.resolve():
        with atomic_path(PACKAGE_MANIFEST) as tmp:
            tmp.write_bytes(source.manifest.read_bytes())


def export_weights(model: torch.nn.Module, name: str, info: Mapping[str, Any], *,
                   zoo_dir: str | os.PathLike | None = None, dtype: torch.dtype = torch.float16
                   ) -> dict[str, Any]:
    """Write ``model``'s state dict as ``<name>.safetensors`` (floating tensors cast to ``dtype``)
    and record it in the manifest with ``info`` (must hold ``model``: name, num_classes, width).

    The folder is ``zoo_dir``, else ``$VIROLBI_WEIGHTS``, else the checkout's ``weights/`` (whose
    manifest is then copied into the package, see the module docstring). Both files are written
    atomically; an existing entry of the same name is replaced.
    """
    if not isinstance(info.get("model"), Mapping) or "name" not in info["model"]:
        raise InputError("export_weights: info['model'] must give the model's registry name")
    source = _export_source(zoo_dir)
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in model.state_dict().items()}
    path = source.folder / f"{name}.safetensors"
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"name": name, "dtype": str(dtype)})
    entry = {**dict(info), "file": path.name, "bytes": path.stat().st_size,
             "sha256": _sha256(path), "dtype": str(dtype).replace("torch.", "")}
    manifest = read_manifest(zoo_dir)
    manifest[name] = entry
    _write_manifest(source, manifest)
    return entry
