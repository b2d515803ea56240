"""Issue #26: the weights live outside the package. Where they are looked up ($VIROLBI_WEIGHTS,
the checkout's weights/, the user cache), the first-use download into the cache (SHA-256 checked,
atomic; served from a local file:// folder, never the network), and the packaging that keeps the
.safetensors files out of the wheel."""

from __future__ import annotations

import fnmatch
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import virolbi.zoo as zoo
from virolbi.cli import main
from virolbi.data.cache import file_sha256
from virolbi.errors import InputError
from virolbi.models import create_model

ROOT = Path(__file__).resolve().parents[1]
WEIGHT_ENV = ("VIROLBI_WEIGHTS", "VIROLBI_ZOO", "VIROLBI_WEIGHTS_URL")


@pytest.fixture
def no_env(monkeypatch):
    for var in WEIGHT_ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def release(tmp_path, no_env):
    """An installed package (no checkout) whose manifest lists ``tiny``, served from a file://
    release folder; the user cache is empty. Returns ``(release folder, cache weights folder)``."""
    rel = tmp_path / "release"
    torch.manual_seed(0)
    info = {"model": {"name": "airbench", "width": 0.125, "num_classes": 10, "normalize": True},
            "procedure": {"name": "vanilla"}, "seed": 0, "val_acc_float32": 0.5, "val_acc_float16": 0.5}
    zoo.export_weights(create_model("airbench", 10, width=0.125).eval(), "tiny", info, zoo_dir=rel)
    no_env.setattr(zoo, "PACKAGE_MANIFEST", rel / "manifest.json")   # the wheel's manifest
    no_env.setattr(zoo, "checkout_weights_dir", lambda: None)        # not a checkout
    no_env.setenv("VIROLBI_CACHE", str(tmp_path / "cache"))
    no_env.setenv("VIROLBI_WEIGHTS_URL", rel.as_uri())                # no trailing slash on purpose
    return rel, tmp_path / "cache" / "weights"


def test_lookup_order_env_then_checkout_then_cache(tmp_path, no_env):
    """$VIROLBI_WEIGHTS wins over its alias $VIROLBI_ZOO, both over the checkout, which wins over
    the cache; only the cache downloads, from the release URL unless $VIROLBI_WEIGHTS_URL is set."""
    src = zoo.weights_source()
    assert (src.origin, src.folder, src.url) == ("checkout", ROOT / "weights", None)
    no_env.setenv("VIROLBI_ZOO", str(tmp_path / "z"))
    assert zoo.weights_source().folder == tmp_path / "z"
    no_env.setenv("VIROLBI_WEIGHTS", str(tmp_path / "w"))
    src = zoo.weights_source()
    assert (src.origin, src.manifest, src.url) == ("$VIROLBI_WEIGHTS", tmp_path / "w" / "manifest.json", None)
    assert zoo.weights_source(tmp_path / "arg").folder == tmp_path / "arg"    # an explicit folder
    for var in WEIGHT_ENV:
        no_env.delenv(var, raising=False)
    no_env.setattr(zoo, "checkout_weights_dir", lambda: None)
    no_env.setenv("VIROLBI_CACHE", str(tmp_path / "cache"))
    src = zoo.weights_source()
    assert (src.origin, src.folder, src.manifest) == ("user cache", tmp_path / "cache" / "weights",
                                                      zoo.PACKAGE_MANIFEST)
    assert src.url == zoo.RELEASE_URL == "https://github.com/virolbi/virolbi/releases/download/weights-v1/"
    no_env.setenv("VIROLBI_WEIGHTS_URL", "https://mirror.example/w")
    assert zoo.weights_source().url == "https://mirror.example/w/"


def test_checkout_is_found_from_the_source_tree_and_not_from_site_packages(tmp_path):
    assert zoo.checkout_weights_dir() == ROOT / "weights"
    fake = tmp_path / "lib" / "python3.11" / "site-packages" / "virolbi" / "zoo" / "__init__.py"
    (tmp_path / "lib" / "python3.11" / "weights").mkdir(parents=True)
    (tmp_path / "lib" / "python3.11" / "weights" / "manifest.json").write_text("{}")
    assert zoo.checkout_weights_dir(fake) is None


def test_first_use_downloads_into_the_cache_with_the_checksum(release):
    rel, cache = release
    net, entry = zoo.load_weights("tiny")
    got = cache / "tiny.safetensors"
    assert got.read_bytes() == (rel / "tiny.safetensors").read_bytes()
    assert file_sha256(got) == entry["sha256"] and sorted(p.name for p in cache.iterdir()) == [got.name]
    (rel / "tiny.safetensors").unlink()          # second use: from the cache, nothing fetched
    again, _ = zoo.load_weights("tiny")
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_a_corrupted_download_is_refused_in_one_line_and_nothing_is_left(release):
    rel, cache = release
    data = bytearray((rel / "tiny.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (rel / "tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        zoo.load_weights("tiny")
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and msg.startswith("shipped weights 'tiny': checksum mismatch")
    assert "expected sha256" in msg and "tiny.safetensors" in msg
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_damaged_cached_file_is_downloaded_again(release):
    rel, cache = release
    zoo.load_weights("tiny")
    (cache / "tiny.safetensors").write_bytes(b"garbage")
    zoo.load_weights("tiny")
    assert (cache / "tiny.safetensors").read_bytes() == (rel / "tiny.safetensors").read_bytes()


def test_no_network_is_one_line_naming_the_file_and_the_url(release, monkeypatch):
    _, cache = release
    monkeypatch.delenv("VIROLBI_WEIGHTS_URL")

    def offline(request, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(InputError) as err:
        zoo.load_weights("tiny")
    msg = str(err.value)
    assert len(msg.splitlines()) == 1
    assert f"cannot download {zoo.RELEASE_URL}tiny.safetensors" in msg
    assert str(cache / "tiny.safetensors") in msg and "$VIROLBI_WEIGHTS" in msg
    assert not cache.exists() or list(cache.iterdir()) == []
    assert main(["weights", "verify", "--download"]) == 2      # the command: the same one line


def test_cli_list_and_verify_name_the_cache_and_download_on_request(release, capsys):
    rel, cache = release
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"\t{cache / 'tiny.safetensors'} (not downloaded yet)")
    assert out[-1] == (f"weights folder {cache} (user cache); missing files are downloaded from "
                       f"{rel.as_uri()}/")
    assert main(["weights", "verify"]) == 0                     # not yet downloaded is no failure
    assert capsys.readouterr().out.splitlines()[0].endswith("(not downloaded yet)\tNOT DOWNLOADED")
    assert main(["weights", "verify", "--download"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(f"\t{cache / 'tiny.safetensors'}\tok")
    (cache / "tiny.safetensors").write_bytes(b"garbage")        # verify alone repairs nothing
    assert main(["weights", "verify"]) == 2
    assert "1 of 1 shipped weight files failed verification" in capsys.readouterr().err


def test_export_into_the_checkout_keeps_the_package_manifest_identical(tmp_path, no_env):
    """weights/manifest.json is the source; the package's copy is rewritten with it. With no
    checkout and no folder, an export is refused in one line (never into the download cache)."""
    weights, package = tmp_path / "weights", tmp_path / "pkg" / "manifest.json"
    weights.mkdir()
    package.parent.mkdir()
    no_env.setattr(zoo, "checkout_weights_dir", lambda: weights)
    no_env.setattr(zoo, "PACKAGE_MANIFEST", package)
    info = {"model": {"name": "airbench", "width": 0.125, "num_classes": 10}}
    zoo.export_weights(create_model("airbench", 10, width=0.125), "tiny", info)
    assert package.read_bytes() == (weights / "manifest.json").read_bytes()
    no_env.setattr(zoo, "checkout_weights_dir", lambda: None)
    with pytest.raises(InputError, match=r"^no weights folder to export into: .*\$VIROLBI_WEIGHTS$"):
        zoo.export_weights(create_model("airbench", 10, width=0.125), "tiny", info)


def test_the_package_manifest_is_the_checkouts():
    assert (ROOT / "src" / "virolbi" / "zoo" / "manifest.json").read_bytes() == \
        (ROOT / "weights" / "manifest.json").read_bytes()


def test_no_safetensors_in_the_package_data_and_weights_outside_src():
    """The wheel stays small: no package-data glob can match a weights file, none lies in src/,
    and the weights folder is the top-level one."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["virolbi"]
    probes = ["zoo/x.safetensors", "x.safetensors", "weights/x.safetensors", "zoo/sub/x.safetensors"]
    assert not [(g, p) for g in globs for p in probes if fnmatch.fnmatch(p, g)], globs
    assert not [p for g in globs for p in (ROOT / "src" / "virolbi").glob(g) if p.suffix == ".safetensors"]
    assert not list((ROOT / "src").rglob("*.safetensors"))
    assert (ROOT / "weights").is_dir() and ROOT / "src" not in (ROOT / "weights").resolve().parents
    assert len(list((ROOT / "weights").glob("*.safetensors"))) >= 12
