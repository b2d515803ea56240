"""Shipped weights: every file loads and matches its checksum; tampered, corrupted or foreign files
are refused with one clear message and never unpickled."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from virolbi.errors import InputError
from virolbi.models import create_model
from virolbi.zoo import (export_weights, list_weights, load_weights, read_manifest, verify_weights,
                         weights_source)

#: The models behind RESULTS.md that must ship (see configs/reproduce/cifar10_fast.yaml).
REQUIRED = ["fast_cifar10_vanilla_s0", "fast_cifar10_vanilla_s1", "fast_cifar10_blur_s0",
            "fast_cifar10_fixed_s0", "fast_cifar10_fixed_s1", "fast_cifar10_iterative_s0",
            "fast_cifar10_iterative_s1", "fast_cifar10_fast_at_s0", "fast_cifar10_awp_s0",
            "fast_cifar10_pni_s0", "fast_cifar10_tv_layer_s0", "fast_cifar10_pgd_at_s0"]


def _info():
    return {"model": {"name": "airbench", "width": 0.125, "num_classes": 10, "normalize": True},
            "procedure": {"name": "vanilla"}, "seed": 0, "data": {"name": "cifar10-jpeg"}}


@pytest.fixture
def tiny_zoo(tmp_path):
    torch.manual_seed(0)
    net = create_model("airbench", 10, width=0.125).eval()
    entry = export_weights(net, "tiny", _info(), zoo_dir=tmp_path)
    return tmp_path, net, entry


def test_export_load_round_trip_in_float16(tiny_zoo, cifar_batch):
    zoo, net, entry = tiny_zoo
    assert entry["dtype"] == "float16" and entry["bytes"] == (zoo / "tiny.safetensors").stat().st_size
    loaded, got = load_weights("tiny", zoo_dir=zoo)
    assert got["sha256"] == entry["sha256"] and list_weights(zoo) == ["tiny"]
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0, msg=k)
        else:
            assert torch.equal(a, b), k
    with torch.no_grad():
        torch.testing.assert_close(loaded(cifar_batch), net(cifar_batch), rtol=2e-2, atol=2e-2)


def test_tampered_file_is_refused(tiny_zoo):
    zoo, _, _ = tiny_zoo
    path = zoo / "tiny.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match its checksum"):
        load_weights("tiny", zoo_dir=zoo)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch BOOM_MARKER",))


def test_pickle_with_matching_checksum_is_not_unpickled(tiny_zoo, tmp_path, monkeypatch):
    zoo, _, entry = tiny_zoo
    monkeypatch.chdir(tmp_path)
    evil = pickle.dumps({"w": _Boom()})
    (zoo / "tiny.safetensors").write_bytes(evil)
    import hashlib
    manifest = json.loads((zoo / "manifest.json").read_text())
    manifest["weights"]["tiny"].update(sha256=hashlib.sha256(evil).hexdigest(), bytes=len(evil))
    (zoo / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="not a valid safetensors file"):
        load_weights("tiny", zoo_dir=zoo)
    assert not (tmp_path / "BOOM_MARKER").exists()


def test_unknown_name_missing_file_and_bad_manifest(tiny_zoo):
    zoo, _, _ = tiny_zoo
    with pytest.raises(InputError, match=r"no shipped weights named 'nope' \(shipped: tiny\)"):
        load_weights("nope", zoo_dir=zoo)
    (zoo / "tiny.safetensors").unlink()
    with pytest.raises(InputError, match="is missing"):
        verify_weights("tiny", zoo_dir=zoo)
    (zoo / "manifest.json").write_text("[1, 2")
    with pytest.raises(InputError, match="manifest .* is unreadable"):
        list_weights(zoo)


def test_every_shipped_file_loads_and_matches_its_checksum(monkeypatch):
    for var in ("VIROLBI_WEIGHTS", "VIROLBI_ZOO"):  # the checkout's own weights/
        monkeypatch.delenv(var, raising=False)
    manifest = read_manifest()
    assert set(REQUIRED) <= set(manifest), sorted(manifest)
    total = 0
    for name, entry in manifest.items():
        verify_weights(name)
        net, _ = load_weights(name)
        if entry.get("task") == "denoising":  # a DnCNN: image in, image out; PSNR kept in float16
            assert net(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 16, 16)
            if entry["dtype"] == "float16":
                assert (entry["set12_psnr_gaussian25_float16"]
                        >= entry["set12_psnr_gaussian25_float32"] - 0.01), name
        else:
            assert net(torch.zeros(1, 3, 32, 32)).shape == (1, entry["model"]["num_classes"])
            if entry["dtype"] == "float16":  # shipped in float16 only where accuracy is unchanged
                assert entry["val_acc_float16"] >= entry["val_acc_float32"] - 0.001, name
        total += entry["bytes"]
    source = weights_source()
    assert source.origin == "checkout" and source.folder == Path(__file__).resolve().parents[1] / "weights"
    on_disk = sorted(p.name for p in source.folder.glob("*.safetensors"))
    assert on_disk == sorted(e["file"] for e in manifest.values())    # nothing unlisted ships
    assert total < 150e6


def test_cli_weights_list_and_evaluate_by_name(tmp_path, capsys, monkeypatch):
    from virolbi.cli import main

    for var in ("VIROLBI_WEIGHTS", "VIROLBI_ZOO"):  # the checkout's own weights/
        monkeypatch.delenv(var, raising=False)
    assert main(["weights", "verify"]) == 0
    out = capsys.readouterr().out
    assert "fast_cifar10_vanilla_s0" in out and "ok" in out
    weights = Path(__file__).resolve().parents[1] / "weights"    # where each file was found
    assert f"\t{weights / 'fast_cifar10_vanilla_s0.safetensors'}\tok" in out
    assert out.splitlines()[-1] == f"weights folder {weights} (checkout)"
    assert main(["evaluate", "--checkpoint", "fast_cifar10_vanilla_s0", "--data", "cifar10-jpeg",
                 "--split", "val", "--suite", "lowres", "--limit", "20", "--no-sanity",
                 "--output-dir", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["meta"]["model_config"]["shipped"] == "fast_cifar10_vanilla_s0"
    assert main(["evaluate", "--checkpoint", "fast_cifar10_vanilla_s0", "--model", "resnet18",
                 "--data", "cifar10-jpeg", "--output-dir", str(tmp_path / "x")]) == 2
    assert "shipped model" in capsys.readouterr().err


def test_cli_verify_checks_every_file_and_names_every_bad_one(tmp_path, capsys):
    """Issue #30 item 4: verify stopped at the first bad file. Three files, the second missing and
    the third altered: all three are reported, and the one error line names both bad files."""
    from virolbi.cli import main

    torch.manual_seed(0)
    net = create_model("airbench", 10, width=0.125).eval()
    info = {**_info(), "val_acc_float32": 0.5, "val_acc_float16": 0.5}  # what `list` prints
    for name in ("a_good", "b_missing", "c_altered"):
        export_weights(net, name, info, zoo_dir=tmp_path)
    (tmp_path / "b_missing.safetensors").unlink()
    altered = tmp_path / "c_altered.safetensors"
    data = bytearray(altered.read_bytes())
    data[-3] ^= 0xFF
    altered.write_bytes(bytes(data))

    assert main(["weights", "verify", "--zoo-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[-1] == f"weights folder {tmp_path} (given folder)"
    status = {line.split("\t")[0]: line.split("\t")[-1] for line in lines[:-1]}
    assert status == {"a_good": "ok", "b_missing": "MISSING",
                      "c_altered": "DOES NOT MATCH ITS CHECKSUM"}
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("virolbi weights: error: 2 of 3 shipped weight files")
    assert f"{tmp_path / 'b_missing.safetensors'} (missing)" in err[0]
    assert f"{altered} (does not match its checksum)" in err[0]
