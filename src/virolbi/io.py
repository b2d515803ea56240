"""File input/output shared by every module: atomic writes, images, JSON and YAML.

Nothing is left half-written: every writer goes through :func:`atomic_path`, which writes to a
temporary file in the target directory and renames it into place only when writing succeeded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from virolbi.errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: output folders are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_path", "save_json", "load_json", "save_text", "read_image",
           "read_image_with_alpha", "write_image",
           "IMAGE_SUFFIXES", "check_output_dir", "check_output_file", "load_torch_file",
           "locked_output_dir"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries :func:`atomic_path` left beside ``path`` when its process was killed
    (named ``.<name>.<pid>.<random><suffix>``; only those whose process is gone)."""
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            if not entry.name.startswith(prefix):
                continue
            pid = entry.name[len(prefix):].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    entry.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else remove it.
    Temporaries left by a killed process (SIGKILL gives no chance to clean up) are removed the next
    time ``path`` is written.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.",
                               suffix=suffix or (path.suffix + ".tmp"), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())   # the mode open() would give, not mkstemp's 0600
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        failed = _write_failure(exc, path, tmp_path)
        if failed is not None:
            raise failed from None
        raise


def _raised_by_torch_serialization(exc: BaseException) -> bool:
    """Whether ``exc`` came out of ``torch.save`` (its writer's errors carry no errno and vary:
    "file write failed", "unexpected pos", "basic_ios::clear: iostream error")."""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename.replace(os.sep, "/")
        if name.endswith("torch/serialization.py"):
            return True
        tb = tb.tb_next
    return False


def _write_failure(exc: BaseException, path: Path, tmp: Path) -> OSError | None:
    """The error to raise for a write of ``path`` (through the temporary ``tmp``) that failed with
    ``exc``, naming ``path``, the file the user asked for: an ``OSError`` without a file name (a
    failed ``write()``, e.g. on a full disk) or naming the temporary gets it; a ``RuntimeError`` of
    ``torch.save``'s writer, which names no file, becomes an ``OSError`` (EIO) that names it.
    ``None``: re-raise ``exc`` as it is."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (None, "", str(tmp)):
        return type(exc)(exc.errno, exc.strerror, str(path))
    if isinstance(exc, RuntimeError) and _raised_by_torch_serialization(exc):
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        return OSError(errno.EIO, f"PyTorch could not write the file, is the disk full? ({first})",
                       str(path))
    return None


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch tensors
        return obj.tolist()
    return obj


def save_json(obj: Any, path: str | os.PathLike, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON, atomically: indented by ``indent`` spaces, or compact (no spaces at
    all) with ``indent=None``. NumPy/torch values are converted."""
    separators = (",", ":") if indent is None else None
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_to_jsonable(obj), indent=indent, separators=separators) + "\n")
    return Path(path)


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising :class:`InputError` if it is missing or malformed."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None


def save_text(text: str, path: str | os.PathLike) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _gray_to_8_bits(arr: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """A 16-bit (``I;16``), 32-bit integer (``I``) or float (``F``) gray image as ``uint8`` gray,
    scaled (``round(v / 257)`` for 16-bit values; ``round(255 v)`` for floats in [0, 1]), never
    clipped: Pillow's own conversion saturates everything above 255 to white."""
    a = arr.astype(np.float64)
    if mode == "F":
        if a.size and (a.min() < 0 or a.max() > 1):
            raise InputError(f"{path}: float image with values outside [0, 1] "
                             f"({a.min():g} .. {a.max():g}); save it as 8 or 16 bits")
        return np.round(a * 255.0).astype(np.uint8)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise InputError(f"{path}: 32-bit image with values outside 0 .. 65535")
    return np.round(a / 257.0).astype(np.uint8)


#: Pillow modes read as gray ("1", and gray with alpha, whose alpha is dropped).
_GRAY_MODES = ("1", "LA", "La")


def _has_transparency(img: Any) -> bool:
    """Whether a Pillow image has a pixel that is not fully opaque (an alpha band or a palette or
    gray transparency entry that is used; an alpha band of 255 everywhere loses nothing)."""
    if not (any(band in ("A", "a") for band in img.getbands()) or "transparency" in img.info):
        return False
    return int(np.asarray(img.convert("RGBA").getchannel("A")).min()) < 255


def read_image_with_alpha(path: str | os.PathLike, *,
                          mode: str | None = None) -> tuple[np.ndarray, bool]:
    """:func:`read_image`, and whether transparency was dropped: the file had pixels that are not
    fully opaque (alpha band, transparent palette entry), of which only the colour or gray values
    are read."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith("I;16") or img.mode in ("I", "F"):
                arr = _gray_to_8_bits(np.asarray(img), img.mode, path)
                return (arr if mode != "RGB" else np.repeat(arr[..., None], 3, axis=2)), False
            dropped = (mode is None or "A" not in mode) and _has_transparency(img)
            if mode is not None:
                img = img.convert(mode)
            elif img.mode in _GRAY_MODES:
                img = img.convert("L")          # gray stays gray
            elif img.mode not in ("L", "RGB"):
                img = img.convert("RGBA" if dropped else "RGB").convert("RGB")
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read {path} as an image: {exc}") from None
    if arr.dtype != np.uint8:
        raise InputError(f"{path}: unsupported pixel type {arr.dtype}")
    return arr, dropped


def read_image(path: str | os.PathLike, *, mode: str | None = None) -> np.ndarray:
    """Read an image file into a ``uint8`` array, ``(H, W)`` for gray or ``(H, W, C)`` for colour.

    ``mode`` converts with Pillow first (``"RGB"`` or ``"L"``). Raises :class:`InputError` for a
    missing, unreadable or non-image file. Gray images with alpha (``LA``) and 1-bit images stay
    gray; palette and other colour images become RGB; the alpha band is dropped (see
    :func:`read_image_with_alpha` to know when). 16-bit gray images stay gray and are scaled to 8
    bits (:func:`_gray_to_8_bits`), not clipped.
    """
    return read_image_with_alpha(path, mode=mode)[0]


def write_image(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a ``uint8`` (or float in [0, 1]) ``(H, W)`` / ``(H, W, C)`` array atomically."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(np.asarray(arr, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), None)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format=fmt or (path.suffix.lstrip(".").upper() or "PNG"))
    return path


def _torch_load_problem(exc: BaseException) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in one line (never
    torch's advice to load it unsafely)."""
    import re

    text = str(exc)
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        found = f" (found {m.group(1)})" if m else ""
        return (f"it holds Python objects, not only tensors and plain data{found}; such files are "
                "refused because reading them would run code")
    if "zip archive" in text or "central directory" in text:
        return "not a PyTorch file, or a truncated one (its zip archive is unreadable)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"not a PyTorch file ({first})"


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint", hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU: nothing is unpickled. A missing or unreadable
    file raises :class:`InputError` with one line naming the file, what it was read as (``what``)
    and what is wrong with it; ``hint`` is appended to that line."""
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError,
            AttributeError, TypeError) as exc:
        raise InputError(f"could not read {p} as a PyTorch {what}: {_torch_load_problem(exc)}"
                         f"{hint}") from None


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(path: Path, option: str, where: Path) -> None:
    """Create and remove a temporary file in ``where`` (the real test: permissions, read-only or
    pseudo file systems, quotas), so that a command fails before its work, not after."""
    base = _nearest_existing(where)
    if not base.is_dir():
        raise InputError(f"{option} {path}: {base} is a file, so no folder can be made under it")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write in {base} "
                         f"({exc.strerror or type(exc).__name__})") from None


def check_output_dir(path: str | os.PathLike, option: str = "--output-dir") -> Path:
    """An output folder the command will write into: an existing file is an error, and the folder
    (or the nearest existing folder above it) must be writable. Checked before any work."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{option} {p} is an existing file; expected a folder")
    _probe_writable(p, option, p)
    return p


def check_output_file(path: str | os.PathLike | None, option: str = "--output") -> Path | None:
    """An output file the command will write (``None`` passes): an existing folder is an error,
    and its folder must be writable. Checked before any work."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {p} is a folder; expected a file name")
    _probe_writable(p, option, p.parent)
    return p


def _make_folders(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; return those created, outermost first."""
    missing = []
    p = path.absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


@contextlib.contextmanager
def locked_output_dir(path: str | os.PathLike, option: str = "--output-dir", *,
                      wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on an output folder while a command writes into it: a second run
    into the same folder gets one line (:class:`InputError`) instead of silently racing the first
    (with ``wait=True`` it waits for the first to finish instead).

    The lock is ``flock`` on the folder itself: no lock file is left, and it is released when the
    process ends, however it ends. The folder is created if missing and removed again (with the
    parents made for it) if the run leaves it empty, e.g. when it fails before writing anything.
    """
    p = Path(path)
    created = _make_folders(p)
    fd = os.open(p, os.O_RDONLY)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise InputError(f"{option} {p} is in use by another virolbi run; wait for it to "
                                 f"finish or choose another {option}") from None
        yield p
    finally:
        os.close(fd)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()       # only an empty folder goes
