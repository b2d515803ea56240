"""Resumable, checksum-verified, atomic downloads (for users who are online; tests never download).

A download goes to ``<dest>.part``; an interrupted one is resumed with an HTTP ``Range`` request,
the finished file is checked against its MD5 or SHA-256 and only then renamed onto ``dest``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from virolbi.data.cache import file_sha256
from virolbi.errors import InputError

__all__ = ["download_url", "file_md5"]


def file_md5(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The hexadecimal MD5 digest of a file, read in chunks.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"
    >>> _ = p.write_bytes(b"abc")
    >>> file_md5(p)
    '900150983cd24fb0d6963f7d28e17f72'
    """
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def _status(response: Any) -> int | None:
    code = getattr(response, "status", None)
    if code is None and hasattr(response, "getcode"):
        code = response.getcode()
    return code


def _expected(md5: str | None, sha256: str | None) -> tuple[str, str, Callable[[Path], str]] | None:
    """``(algorithm, digest, function)`` of the checksum to check, or ``None`` for no check."""
    if md5 and sha256:
        raise InputError("download_url: give md5 or sha256, not both")
    if sha256:
        return "sha256", sha256.lower(), file_sha256
    return ("md5", md5.lower(), file_md5) if md5 else None


def download_url(url: str, dest: str | os.PathLike, md5: str | None = None, *,
                 sha256: str | None = None, opener: Callable[..., Any] | None = None,
                 chunk_size: int = 1 << 20, timeout: float = 60.0,
                 progress: bool | None = None) -> Path:
    """Download ``url`` to ``dest``: resumable, checksum-checked (MD5 or SHA-256), atomic.

    If ``dest`` already exists with the right checksum nothing is fetched. Otherwise bytes are
    appended to ``dest.part``; when that file exists from an interrupted run, the request asks
    for the rest (``Range: bytes=<size>-``) and appends if the server answers ``206 Partial
    Content``, or starts over if it sends the whole file. The finished file must match ``md5``
    before it is renamed onto ``dest``; on a mismatch the partial file is removed.

    Parameters
    ----------
    url : str
        ``http(s)://`` or ``file://`` address.
    dest : path
        Final file path (its directory is created).
    md5 : str, optional
        Expected hexadecimal MD5 digest; ``None`` (and no ``sha256``) skips the check.
    sha256 : str, optional
        Expected hexadecimal SHA-256 digest, instead of ``md5``.
    opener : callable, optional
        ``opener(request, timeout=...)`` returning a file-like response (default
        :func:`urllib.request.urlopen`); tests pass a fake one.
    chunk_size : int, default 1 MiB
        Bytes read per step.
    timeout : float, default 60
        Socket timeout in seconds.
    progress : bool or None
        Show a tqdm bar (``None``: only on a terminal).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    InputError
        If the server cannot be reached or the checksum does not match.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "src.bin").write_bytes(b"abc")
    >>> out = download_url((d / "src.bin").as_uri(), d / "out.bin", "900150983cd24fb0d6963f7d28e17f72",
    ...                    progress=False)
    >>> out.read_bytes()
    b'abc'
    """
    dest = Path(dest)
    check = _expected(md5, sha256)
    if dest.is_file() and (check is None or check[2](dest) == check[1]):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    opener = opener or urllib.request.urlopen
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "virolbi"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = opener(request, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InputError(f"cannot download {url}: {exc}; download it by hand and place it at "
                         f"{dest}") from None
    with response:
        resumed = bool(have) and _status(response) == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
        total = have + int(length) if length and str(length).isdigit() else None
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                   disable=(None if progress is None else not progress))
        try:
            with open(part, "ab" if resumed else "wb") as fh:
                for block in iter(lambda: response.read(chunk_size), b""):
                    fh.write(block)
                    bar.update(len(block))
        except OSError as exc:
            raise InputError(f"download of {url} interrupted ({exc}); run again to resume from "
                             f"{part}") from None
        finally:
            bar.close()
    if check is not None:
        algorithm, want, digest = check
        got = digest(part)
        if got != want:
            part.unlink()
            raise InputError(f"checksum mismatch for {url}: expected {algorithm} {want}, got {got}; "
                             "the partial file was removed, run again to retry")
    os.replace(part, dest)
    return dest
