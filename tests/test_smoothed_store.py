"""Smoothed stores (issue #31): engines, resume, repair, locking, the legacy cache layout, the CLI
and DDP training on a store (real CIFAR-10 images, the real smoother)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import virolbi
from virolbi.cli import main
from virolbi.data import load_dataset
from virolbi.io import locked_output_dir
from virolbi.store import StoreRepairWarning, build_store, open_smoothed
from virolbi.store.manifest import MANIFEST

LEVELS = (0.4, 0.8)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(cifar_small):
    return np.ascontiguousarray(cifar_small[0][:6])


@pytest.fixture(scope="module")
def expected(images):
    """virolbi.smooth image by image, at every level: uint8 (L, N, H, W, C), the independent truth
    (one smoothing run per image and level, not the image path the store uses)."""
    return np.stack([np.stack([virolbi.smooth(np.ascontiguousarray(im.transpose(2, 0, 1)), lv)
                               .transpose(1, 2, 0) for im in images]) for lv in LEVELS])


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """An uninterrupted store of ``images`` in shards of 2 (this process)."""
    d = tmp_path_factory.mktemp("reference") / "store"
    build_store(images, d, LEVELS, workers=1, shard_size=2, progress=False)
    return d


def _shard_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("shard-*.npy"))}


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_store_equals_smooth_image_by_image(engine, images, expected, reference, tmp_path):
    """Both engines (2 local processes; a local Ray instance of 1 CPU) give, for every image and
    level, exactly virolbi.smooth's uint8 image, and the same shard bytes as one process."""
    if engine == "ray":
        pytest.importorskip("ray")
    report = build_store(images, tmp_path / "s", LEVELS, engine=engine,
                         workers=2 if engine == "local" else 1, shard_size=4, progress=False)
    store = open_smoothed(tmp_path / "s", verify=True)
    assert report.computed == 2 and len(store) == 6 and store.levels == LEVELS
    for i in range(len(images)):
        img, target = store[i]
        assert img.shape == (2, 32, 32, 3) and target is None
        assert np.array_equal(img, expected[:, i])
    assert np.array_equal(store.take([5, 0, 3], 0.8), expected[1, [5, 0, 3]])
    one = open_smoothed(reference)
    assert np.array_equal(np.stack([one[i][0] for i in range(6)]),
                          np.stack([store[i][0] for i in range(6)]))


_KILLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import virolbi.store.worker as worker
    from virolbi.store import build_store
    real, calls = worker.image_path, []
    def killed_on_third_shard(x, levels, **kw):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(x, levels, **kw)
    worker.image_path = killed_on_third_shard
    build_store(np.load(sys.argv[1]), sys.argv[2], (0.4, 0.8), workers=1, shard_size=2,
                batch_size=2, progress=False)
""")


def test_killed_run_resumes_to_the_same_bytes(images, reference, tmp_path):
    """A run SIGKILLed while smoothing its third shard keeps the two finished ones (recorded in
    the manifest); the rerun computes only the last, and every shard's bytes equal those of an
    uninterrupted run."""
    np.save(tmp_path / "x.npy", images)
    d = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(tmp_path / "x.npy"), str(d)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    m = json.loads((d / MANIFEST).read_text())
    assert [bool(s["sha256"]) for s in m["shards"]] == [True, True, False] and not m["complete"]
    assert sorted(p.name for p in d.iterdir()) == [MANIFEST, "shard-00000.npy", "shard-00001.npy"]
    with pytest.raises(virolbi.InputError, match="is incomplete .1 of 3 shards missing"):
        open_smoothed(d)
    report = build_store(images, d, LEVELS, workers=1, shard_size=2, progress=False)
    assert (report.computed, report.skipped) == (1, 2)
    assert _shard_bytes(d) == _shard_bytes(reference)


def test_flipped_byte_is_recomputed_with_a_warning(images, reference, tmp_path):
    d = tmp_path / "store"
    shutil.copytree(reference, d)
    path = d / "shard-00001.npy"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(virolbi.InputError, match="shard-00001.npy missing or damaged"):
        open_smoothed(d, verify=True)
    with pytest.warns(StoreRepairWarning, match=r"shard-00001.npy is damaged \(checksum mismatch\)"):
        report = build_store(images, d, LEVELS, workers=1, shard_size=2, progress=False)
    assert (report.computed, report.skipped) == (1, 2)
    assert _shard_bytes(d) == _shard_bytes(reference)


def test_another_run_or_request_cannot_write_into_the_store(images, reference, tmp_path):
    """A folder being written by another run is refused in one line; so is a folder holding a
    store of other levels, images or shard size (nothing there is changed)."""
    d = tmp_path / "store"
    shutil.copytree(reference, d)
    before = _shard_bytes(d)
    with locked_output_dir(d):
        with pytest.raises(virolbi.InputError, match="is in use by another virolbi run"):
            build_store(images, d, LEVELS, workers=1, shard_size=2, progress=False)
    for kw, why in (({"levels": (0.5,)}, "levels"), ({"source": images[:4]}, "source identity"),
                    ({"shard_size": 3}, "shard_size")):
        args = {"source": images, "levels": LEVELS, "shard_size": 2, **kw}
        with pytest.raises(virolbi.InputError, match=f"another run \\({why} differs\\)"):
            build_store(args.pop("source"), d, args.pop("levels"), workers=1, progress=False,
                        **args)
    assert _shard_bytes(d) == before


def test_store_reads_only_the_shards_it_is_asked_for(reference, expected):
    store = open_smoothed(reference)
    assert np.array_equal(store.take([5, 4], 0.4), expected[0, [5, 4]])
    assert store.opened == {2}
    assert np.array_equal(store[2][0], expected[:, 2]) and store.opened == {1, 2}
    with pytest.raises(virolbi.InputError, match="not one of the stored levels"):
        store.take([0], 0.6)
    with pytest.raises(IndexError):
        store[6]


def test_single_array_cache_entry_is_a_one_shard_store(images, tmp_path, monkeypatch):
    """An entry written before stores existed (images.npy + meta.json, as the earlier cache wrote
    it) is read as it is: no smoothing runs, the same pixels come back, and open_smoothed reads it."""
    import virolbi.store.worker as worker
    from virolbi.data.cache import file_sha256
    from virolbi.train.smoothed_cache import cache_key, dataset_fingerprint, smoothed_images

    params = {"kappa": 5.0, "nu": 1.0, "group": True}
    ident = dataset_fingerprint(images)
    entry = tmp_path / "smoothed" / cache_key(ident, [0.4, 0.8], params)
    entry.mkdir(parents=True)
    arr = np.random.default_rng(0).integers(0, 256, (2,) + images.shape, dtype=np.uint8)
    np.save(entry / "images.npy", arr)
    (entry / "meta.json").write_text(json.dumps({
        "sha256": file_sha256(entry / "images.npy"), "shape": list(arr.shape),
        "levels": [0.4, 0.8], "params": params, "identity": ident, "code_version": 1,
        "virolbi": virolbi.__version__, "path_fn": "virolbi.image_path"}))

    def refuse(*a, **k):
        raise AssertionError("the smoother ran")
    monkeypatch.setattr(worker, "image_path", refuse)
    s = smoothed_images(images, [0.4, 0.8], cache_dir=tmp_path, progress=False, **params)
    assert not s.built and np.array_equal(s.images, arr)
    sub = smoothed_images(images, [0.8], cache_dir=tmp_path, progress=False, **params)
    assert not sub.built and sub.path == entry and np.array_equal(sub.at(0.8), arr[1])
    store = open_smoothed(entry, verify=True)
    assert len(store) == 6 and store.levels == (0.4, 0.8) and len(store.shards) == 1
    assert np.array_equal(store[3][0], arr[:, 3])


def test_cli_smooth_dataset(cifar_image_tree, tmp_path, capsys):
    """The command on an image folder: labels in the source's order, pixels equal to
    virolbi.smooth; a rerun does nothing; bad options and a folder in use give one line, exit 2."""
    out = tmp_path / "store"
    argv = ["smooth-dataset", str(cifar_image_tree), "--split", "test", "--levels", "0.8,0.4",
            "--output-dir", str(out), "--shard-size", "8", "--workers", "1"]
    assert main(argv) == 0
    assert "3 shard(s) computed, 0 already done" in capsys.readouterr().out
    ds = load_dataset(cifar_image_tree, "test").materialize()   # file-backed: decoded here
    store = open_smoothed(out, verify=True)
    assert len(store) == 20 and store.levels == LEVELS
    assert [store[i][1] for i in range(20)] == ds.targets.tolist()
    assert np.array_equal(store[13][0][1], virolbi.smooth(
        np.ascontiguousarray(ds.data[13].transpose(2, 0, 1)), 0.8).transpose(1, 2, 0))
    assert main(argv) == 0 and "0 shard(s) computed, 3 already done" in capsys.readouterr().out
    for extra, msg in ((["--shard-size", "0"], "--shard-size must be a positive integer"),
                       (["--address", "auto"], "--address joins a Ray cluster"),
                       (["--levels", "0.4,2"], "each of --levels")):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    with locked_output_dir(out):
        assert main(argv) == 2
    assert "is in use by another virolbi run" in capsys.readouterr().err


_TRAIN = textwrap.dedent("""
    import json, os, sys
    import numpy as np, torch
    sys.path.insert(0, sys.argv[4])
    from test_smoothed_store import first_epoch_loss
    torch.set_num_threads(1)
    d = np.load(sys.argv[1])
    loss = first_epoch_loss(d["images"], d["labels"], json.loads(sys.argv[2]))
    if int(os.environ.get("RANK", "0")) == 0:
        with open(sys.argv[3], "w") as fh:
            json.dump(loss, fh)
""")


def first_epoch_loss(images, labels, procedure: dict) -> float:
    """The first-epoch training loss of a small CNN on ``images`` with ``procedure``."""
    import torch

    from virolbi.data.dataset import ImageDataset
    from virolbi.train import train

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                   torch.nn.Linear(128, 10))
    cfg = {"output_dir": None, "logging": {"progress": False, "tensorboard": False},
           "optim": {"epochs": 1, "batch_size": 4, "lr": 0.5},
           "augment": {"crop_padding": 0, "flip": False}, "eval": {"test_time_sparsity": None},
           "procedure": procedure}
    ds = ImageDataset(images, labels)
    return train(cfg, model=net, train_data=ds, val_data=ds).metrics[0]["train_loss"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_loss(tmp_path: Path, procedure: dict, nproc: int) -> float:
    script, out = tmp_path / "train.py", tmp_path / "loss.json"
    script.write_text(_TRAIN)
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
              f"--master_port={_free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(launch + [str(script), str(tmp_path / "data.npz"), json.dumps(procedure),
                                    str(out), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_torchrun_training_on_a_store_equals_one_process(cifar_small, tmp_path):
    """Fixed training read from a store: 2 torchrun processes give the first-epoch loss of one;
    one process gives the loss of the same training through the smoothed cache (the same images),
    and not that of Vanilla (the store's images are the ones trained on)."""
    imgs, labels = cifar_small
    crops = np.ascontiguousarray(imgs[:, 8:24, 8:24])
    np.savez(tmp_path / "data.npz", images=crops, labels=labels)
    build_store(crops, tmp_path / "store", (0.3, 0.6), workers=1, shard_size=8, progress=False)
    fixed = {"name": "fixed", "sparsity": 0.3, "store": str(tmp_path / "store")}
    two = _torchrun_loss(tmp_path, fixed, nproc=2)
    one = first_epoch_loss(crops, labels, fixed)
    cached = first_epoch_loss(crops, labels, {"name": "fixed", "sparsity": 0.3,
                                              "cache_dir": str(tmp_path / "cache")})
    vanilla = first_epoch_loss(crops, labels, {"name": "vanilla"})
    assert two == pytest.approx(one, rel=1e-5)
    assert cached == pytest.approx(one, rel=1e-6)
    assert abs(vanilla - one) > 1e-3 * one, (vanilla, one)      # 100x the DDP tolerance
