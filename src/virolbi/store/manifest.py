"""The manifest of a smoothed store: what was smoothed, how, and which shards are done.

A store is a folder holding ``manifest.json``, the shards ``shard-00000.npy`` … (each ``uint8
(L, n, H, W, C)``: ũ of ``n`` consecutive images at the ``L`` levels, one image-path run per image,
paper Eq. 5–8 and Prop. 1) and, when the source has labels, ``targets.npy``. The manifest records

- the source's identity (:func:`virolbi.store.source.source_identity`), size and image shape,
- the levels, the smoother's parameters (:func:`smoother_params`, defaults filled in), the path
  function's name, :data:`SMOOTHER_CODE_VERSION` and ``virolbi.__version__``,
- the shard size and, per shard, its image range and the SHA-256 of its file once written.

The cache entries written before stores existed (``images.npy`` + ``meta.json``, one array ``uint8
(L, N, H, W, C)``) are read as a store of one shard (:func:`read_manifest`), not converted.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Sequence

from virolbi.errors import InputError
from virolbi.io import load_json
from virolbi.smoother import image_path

__all__ = ["SMOOTHER_CODE_VERSION", "FORMAT", "MANIFEST", "TARGETS", "shard_name",
           "smoother_params", "new_manifest", "read_manifest", "mismatch", "fn_name"]

#: Version of the smoothing code path as far as stored outputs go: bump when ũ changes.
SMOOTHER_CODE_VERSION = 1
FORMAT = "virolbi-smoothed-store/1"
MANIFEST = "manifest.json"
TARGETS = "targets.npy"
_LEGACY_META, _LEGACY_IMAGES = "meta.json", "images.npy"
#: Fields two manifests must share for one to continue the other (``source`` compared apart).
_SAME = ("levels", "params", "path_fn", "code_version", "virolbi", "shard_size")
_PATH_OPTIONS = ("kappa", "nu", "group", "solver", "step", "max_iter", "projection")


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00003.npy``."""
    return f"shard-{index:05d}.npy"


def fn_name(fn: Any) -> str:
    """The name a path function is recorded under (``virolbi.image_path`` for None)."""
    if fn is None:
        return "virolbi.image_path"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def smoother_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """The smoother options with :func:`virolbi.image_path`'s defaults filled in, JSON-normalised,
    so that ``{}`` and ``{"kappa": 5.0}`` describe the same run.

    >>> smoother_params({"kappa": 5})["kappa"], smoother_params({}) == smoother_params({"nu": 1.0})
    (5, True)
    """
    sig = inspect.signature(image_path).parameters
    full = {k: sig[k].default for k in _PATH_OPTIONS}
    full.update({k: v for k, v in (params or {}).items() if k != "progress"})
    return json.loads(json.dumps({k: full[k] for k in sorted(full)}, default=str))


def new_manifest(source: dict[str, Any], levels: Sequence[float], params: dict[str, Any],
                 path_fn: str, shard_size: int, code_version: int | None = None) -> dict[str, Any]:
    """A manifest with every shard planned and none done (``source`` needs ``n_images``)."""
    import virolbi

    n = int(source["n_images"])
    shards = [{"file": shard_name(i), "start": s, "stop": min(s + shard_size, n), "sha256": None}
              for i, s in enumerate(range(0, n, shard_size))]
    return {"format": FORMAT, "source": source, "levels": [float(v) for v in levels],
            "params": smoother_params(params), "path_fn": path_fn,
            "code_version": SMOOTHER_CODE_VERSION if code_version is None else int(code_version),
            "virolbi": virolbi.__version__, "shard_size": int(shard_size), "complete": False,
            "shards": shards}


def mismatch(stored: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The first field in which ``stored`` does not describe the run ``wanted`` (None: same)."""
    for key in ("identity", "n_images", "image_shape"):
        if stored["source"].get(key) != wanted["source"].get(key):
            return f"source {key}"
    for key in _SAME:
        if stored.get(key) != wanted.get(key):
            return key
    return None


def _legacy(folder: Path) -> dict[str, Any] | None:
    """A pre-store cache entry (``images.npy`` + ``meta.json``) as the manifest of one shard."""
    meta = load_json(folder / _LEGACY_META)
    shape = meta.get("shape", [])
    if len(shape) != 5:
        raise InputError(f"{folder / _LEGACY_META} has no 5-axis shape; not a smoothed cache entry")
    n = int(shape[1])
    source = {"identity": meta.get("identity"), "n_images": n, "image_shape": list(shape[2:]),
              "description": "cache entry (single-array layout)"}
    return {"format": FORMAT, "source": source, "levels": [float(v) for v in meta.get("levels", [])],
            "params": smoother_params(meta.get("params")), "path_fn": meta.get("path_fn"),
            "code_version": meta.get("code_version"), "virolbi": meta.get("virolbi"),
            "shard_size": n, "complete": True, "legacy": True,
            "shards": [{"file": _LEGACY_IMAGES, "start": 0, "stop": n,
                        "sha256": meta.get("sha256")}]}


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of the store in ``folder``, the single-array layout read as one shard, or None
    when ``folder`` holds neither. A malformed manifest raises :class:`InputError`."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        m = load_json(folder / MANIFEST)
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise InputError(f"{folder / MANIFEST} is not a virolbi smoothed-store manifest")
        return m
    if (folder / _LEGACY_META).is_file() and (folder / _LEGACY_IMAGES).is_file():
        return _legacy(folder)
    return None
