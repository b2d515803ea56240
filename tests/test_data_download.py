"""download_url: resume with Range, restart when the server ignores it, MD5 check, atomic rename.
A fake opener stands in for the network."""

from __future__ import annotations

import hashlib
import io
import urllib.error

import pytest

from virolbi.data import download_url, file_md5
from virolbi.errors import InputError

PAYLOAD = bytes(range(256)) * 40  # 10 240 bytes
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, status: int, fail_after: int | None = None):
        super().__init__(data)
        self.status = status
        self.headers = {"Content-Length": str(len(data))}
        self.fail_after = fail_after

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(n)


class FakeServer:
    """Honours Range requests (206) unless ``ranges=False`` (then always 200 with everything)."""

    def __init__(self, data=PAYLOAD, ranges=True, fail_after=None):
        self.data, self.ranges, self.fail_after = data, ranges, fail_after
        self.requests = []

    def __call__(self, request, timeout=None):
        rng = request.get_header("Range")
        self.requests.append(rng)
        if rng and self.ranges:
            start = int(rng.split("=")[1].rstrip("-"))
            return FakeResponse(self.data[start:], 206, self.fail_after)
        return FakeResponse(self.data, 200, self.fail_after)


def test_md5_of_known_string(tmp_path):
    (tmp_path / "f").write_bytes(b"The quick brown fox jumps over the lazy dog")
    assert file_md5(tmp_path / "f", chunk_size=7) == "9e107d9d372bb6826bd81d3542a419d6"


def test_fresh_download(tmp_path):
    server = FakeServer()
    out = download_url("https://example.org/x.bin", tmp_path / "x.bin", MD5, opener=server,
                       chunk_size=1000, progress=False)
    assert out.read_bytes() == PAYLOAD and server.requests == [None]
    assert not (tmp_path / "x.bin.part").exists()
    # already there with the right checksum: no request at all
    download_url("https://example.org/x.bin", out, MD5, opener=server, progress=False)
    assert len(server.requests) == 1


def test_resume_appends_the_rest(tmp_path):
    (tmp_path / "x.bin.part").write_bytes(PAYLOAD[:3000])
    server = FakeServer()
    out = download_url("https://example.org/x.bin", tmp_path / "x.bin", MD5, opener=server,
                       progress=False)
    assert server.requests == ["bytes=3000-"]
    assert out.read_bytes() == PAYLOAD


def test_server_without_ranges_restarts(tmp_path):
    (tmp_path / "x.bin.part").write_bytes(b"garbage" * 10)
    server = FakeServer(ranges=False)
    out = download_url("https://example.org/x.bin", tmp_path / "x.bin", MD5, opener=server,
                       progress=False)
    assert out.read_bytes() == PAYLOAD


def test_interrupted_then_resumed(tmp_path):
    dest = tmp_path / "x.bin"
    with pytest.raises(InputError, match="interrupted .*run again to resume"):
        download_url("https://h/x.bin", dest, MD5, opener=FakeServer(fail_after=4000), chunk_size=1000,
                     progress=False)
    assert not dest.exists()
    assert (tmp_path / "x.bin.part").read_bytes() == PAYLOAD[:4000]
    server = FakeServer()
    download_url("https://h/x.bin", dest, MD5, opener=server, progress=False)
    assert server.requests == ["bytes=4000-"] and dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_removes_partial(tmp_path):
    dest = tmp_path / "x.bin"
    with pytest.raises(InputError, match=f"checksum mismatch .*expected md5 {'0' * 32}, got {MD5}"):
        download_url("https://h/x.bin", dest, "0" * 32, opener=FakeServer(), progress=False)
    assert not dest.exists() and not (tmp_path / "x.bin.part").exists()


def test_existing_file_with_wrong_checksum_is_replaced(tmp_path):
    dest = tmp_path / "x.bin"
    dest.write_bytes(b"stale")
    download_url("https://h/x.bin", dest, MD5, opener=FakeServer(), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_unreachable(tmp_path):
    def offline(request, timeout=None):
        raise urllib.error.URLError("no route to host")

    with pytest.raises(InputError, match="cannot download https://h/x: .*no route to host.*by hand"):
        download_url("https://h/x", tmp_path / "x", MD5, opener=offline, progress=False)


def test_file_url_without_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    out = download_url(src.as_uri(), tmp_path / "sub" / "copy.bin", None, progress=False)
    assert out.read_bytes() == PAYLOAD


def test_sha256_checked_instead_of_md5(tmp_path):
    """The weights zoo checks SHA-256: a good file lands, a wrong digest is refused, nothing left."""
    good = hashlib.sha256(PAYLOAD).hexdigest()
    out = download_url("https://h/x.bin", tmp_path / "x.bin", sha256=good.upper(), opener=FakeServer(),
                       progress=False)
    assert out.read_bytes() == PAYLOAD
    dest = tmp_path / "y.bin"
    with pytest.raises(InputError, match=f"expected sha256 {'0' * 64}, got {good}"):
        download_url("https://h/y.bin", dest, sha256="0" * 64, opener=FakeServer(), progress=False)
    assert not dest.exists() and not (tmp_path / "y.bin.part").exists()
    with pytest.raises(InputError, match="md5 or sha256, not both"):
        download_url("https://h/y.bin", dest, MD5, sha256=good, opener=FakeServer(), progress=False)
