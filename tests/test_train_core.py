"""Training: configs, augmentation, smoothed cache, procedures, resume, DDP (tiny sizes, real images)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virolbi.data.dataset import ImageDataset
from virolbi.errors import InputError
from virolbi.train import (CacheRebuildWarning, iterative_level, load_config, random_crop_flip,
                           smoothed_images, train)
from virolbi.train.config import resolve_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_net():
    """A BatchNorm-free CNN (PyTorch has no SyncBatchNorm on CPU, so DDP equality needs none)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(128, 10))


def fake_path(x, levels, **kw):
    """Cheap stand-in for image_path: quantisation, coarser at lower levels."""
    return np.stack([(x // int(256 * (1.05 - lv)) * int(256 * (1.05 - lv))).astype(np.uint8)
                     for lv in levels])


@pytest.fixture(scope="module")
def data(cifar_small):
    imgs, labels = cifar_small
    return ImageDataset(np.ascontiguousarray(imgs[:, 8:24, 8:24]), labels)   # 20 real 16x16 crops


def base_cfg(tmp_path, **procedure):
    return {"output_dir": str(tmp_path / "run"), "logging": {"progress": False, "tensorboard": False},
            "optim": {"epochs": 2, "batch_size": 10, "lr": 0.05},
            "procedure": {"cache_dir": str(tmp_path / "cache"), **procedure}}


# ---------------------------------------------------------------- configs
def test_all_configs_parse_and_build():
    files = sorted(f for f in (ROOT / "configs").glob("*/*.yaml")
                   if f.parent.name not in ("reproduce", "denoise"))
    assert len(files) >= 40                       # reproduce/ holds plans (tests/test_reproduce.py)
    from virolbi.denoise.train import load_denoise_config
    denoise = sorted((ROOT / "configs" / "denoise").glob("*.yaml"))
    assert {load_denoise_config(f)["name"] for f in denoise} == {"dncnn_nt", "dncnn_hat"}
    from virolbi.train.procedures import build_procedure
    for f in files:
        cfg = load_config(f)
        build_procedure(cfg["procedure"])
        if "base" not in f.parts:
            assert cfg["name"] != "run", f
    fast = load_config(ROOT / "configs/fast/cifar10_iterative.yaml")
    assert fast["model"]["name"] == "airbench" and fast["procedure"]["name"] == "iterative"
    small = load_config(ROOT / "configs/small/cifar10_iterative.yaml")
    assert small["procedure"]["name"] == "iterative" and small["model"]["width"] == 0.25
    assert load_config(ROOT / "configs/sweep/cifar10_fixed_0.8.yaml")["procedure"]["sparsity"] == 0.8
    assert load_config(ROOT / "configs/imagenet100/fixed_resnet50_finetune.yaml")["procedure"]["sparsity"] == 0.3


def test_small_models_build():
    from virolbi.models import create_model
    cfg = load_config(ROOT / "configs/small/cifar10_vanilla.yaml")
    m = create_model(cfg["model"]["name"], 10, width=cfg["model"]["width"])
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_layering_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("optim: {lr: 0.2, epochs: 7}\nname: a\n")
    (tmp_path / "b.yaml").write_text("defaults: [a]\noptim: {epochs: 3}\n")
    cfg = load_config(tmp_path / "b.yaml", ["procedure.levels=[0.5, 0.3]", "model.pretrained=null",
                                           "augment.flip=false"])
    assert (cfg["optim"]["lr"], cfg["optim"]["epochs"], cfg["name"]) == (0.2, 3, "a")
    assert cfg["procedure"]["levels"] == [0.3, 0.5] and cfg["augment"]["flip"] is False
    (tmp_path / "c.yaml").write_text("defaults: [d]\n")
    (tmp_path / "d.yaml").write_text("defaults: [c]\n")
    with pytest.raises(InputError, match="cycle"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("override, message", [
    (["optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
    (["procedure.name=magic"], "procedure.name must be one of"),
    (["optim.epochs=0"], "optim.epochs must be an integer >= 1"),
    (["optim.lr=-1"], "optim.lr must be a number > 0"),
    (["procedure.sparsity=1.5"], r"procedure.sparsity must be in \(0, 1\]"),
    (["noequals"], "an override must look like section.key=value"),
    (["optim.scheduler=poly"], "optim.scheduler must be cosine, linear, step or constant"),
    (["seed=-1"], "seed must be a non-negative integer"),
    (["optim=3"], "'optim' must be a section"),
])
def test_config_errors(override, message):
    with pytest.raises(InputError, match=message):
        resolve_config({}, override)


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- augmentation
def test_random_crop_flip_matches_per_image_reference():
    x = torch.arange(2 * 3 * 6 * 5, dtype=torch.float32).reshape(2, 3, 6, 5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = random_crop_flip(x, padding=2, generator=g1)
    dy = torch.randint(0, 5, (2,), generator=g2); dx = torch.randint(0, 5, (2,), generator=g2)
    fl = torch.rand(2, generator=g2) < 0.5
    for i in range(2):
        ref = F.pad(x[i], (2, 2, 2, 2))[:, dy[i]:dy[i] + 6, dx[i]:dx[i] + 5]
        ref = ref.flip(-1) if fl[i] else ref
        assert torch.equal(out[i], ref)
    u8 = random_crop_flip(x.to(torch.uint8), padding=0, flip=False)
    assert u8.dtype == torch.uint8 and torch.equal(u8, x.to(torch.uint8))
    with pytest.raises(InputError, match="padding must be a non-negative integer"):
        random_crop_flip(x, padding=-1)
    with pytest.raises(InputError, match=r"expects a tensor \(B, C, H, W\)"):
        random_crop_flip(x[0])


# ---------------------------------------------------------------- schedule
def test_iterative_schedule_rises_linearly():
    levels = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    seq = [iterative_level(e, 200, levels) for e in range(200)]
    assert seq[0] == 0.3 and seq[-1] == 0.8 and seq == sorted(seq)
    for e, s in enumerate(seq):          # nearest level to the linear target
        assert abs(s - (0.3 + 0.5 * e / 199)) <= 0.05 + 1e-9
    with pytest.raises(InputError, match=r"epoch must be in \[0, 3\)"):
        iterative_level(3, 3, levels)


# ---------------------------------------------------------------- cache
def test_cache_real_smoother_matches_image_path(cifar_small, tmp_path):
    import virolbi
    imgs = np.ascontiguousarray(cifar_small[0][:3, :8, :8])
    s = smoothed_images(imgs, [0.3, 0.8], cache_dir=tmp_path, batch_size=2, progress=False)
    ref = virolbi.image_path(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)), (0.3, 0.8))
    assert s.built and np.array_equal(s.images, ref.transpose(0, 1, 3, 4, 2))
    assert np.array_equal(s.at(0.8), s.images[1])


def test_cache_serves_levels_from_a_recorded_superset(cifar_small, tmp_path):
    """One path run at several levels serves a later request for any of them (Table 5 sweep,
    Fixed, Iterative) without smoothing again; other parameters still compute their own entry."""
    imgs = np.ascontiguousarray(cifar_small[0][:5])
    calls = []

    def counting(x, levels, **kw):
        calls.append(tuple(levels))
        return fake_path(x, levels)
    kw = dict(cache_dir=tmp_path, path_fn=counting, progress=False, batch_size=5)
    whole = smoothed_images(imgs, [0.4, 0.6, 0.8], **kw)
    sub = smoothed_images(imgs, [0.6, 0.8], **kw)
    assert len(calls) == 1 and not sub.built and sub.path == whole.path
    assert np.array_equal(sub.at(0.6), fake_path(imgs, [0.6])[0])
    assert np.array_equal(sub.at(0.8), whole.at(0.8))
    smoothed_images(imgs, [0.6, 0.7], **kw)                   # 0.7 was not recorded
    smoothed_images(imgs, [0.6], kappa=3.0, **kw)             # other smoother parameters
    smoothed_images(imgs[:4], [0.6], **kw)                    # other images
    assert len(calls) == 4


def test_cache_reused_and_invalidated(cifar_small, tmp_path, monkeypatch):
    imgs = np.ascontiguousarray(cifar_small[0][:5])
    kw = dict(cache_dir=tmp_path, path_fn=fake_path, progress=False, batch_size=2)
    a = smoothed_images(imgs, [0.6], **kw)
    assert a.built and np.array_equal(a.images, fake_path(imgs, [0.6]))
    b = smoothed_images(imgs, [0.6], **kw)
    assert not b.built and b.key == a.key
    # a different level, smoother parameter, dataset or code version is a different entry
    keys = {a.key}
    for other in (smoothed_images(imgs, [0.7], **kw), smoothed_images(imgs, [0.6], kappa=3.0, **kw),
                  smoothed_images(imgs[:4], [0.6], **kw)):
        assert other.built and other.key not in keys
        keys.add(other.key)
    import virolbi.train.smoothed_cache as sc
    monkeypatch.setattr(sc, "SMOOTHER_CODE_VERSION", sc.SMOOTHER_CODE_VERSION + 1)
    assert smoothed_images(imgs, [0.6], **kw).built
    monkeypatch.undo()
    # a damaged file is detected by its checksum and rebuilt
    path = a.path / "shard-00000.npy"
    raw = bytearray(path.read_bytes()); raw[-1] ^= 0xFF; path.write_bytes(bytes(raw))
    with pytest.warns(CacheRebuildWarning, match="checksum mismatch"):
        c = smoothed_images(imgs, [0.6], **kw)
    assert c.built and np.array_equal(c.images, fake_path(imgs, [0.6]))


def test_cache_errors(tmp_path):
    with pytest.raises(InputError, match=r"expects uint8 images \(N, H, W, C\)"):
        smoothed_images(np.zeros((2, 4, 4, 3)), 0.5, cache_dir=tmp_path)
    with pytest.raises(InputError, match="empty dataset"):
        smoothed_images(np.zeros((0, 4, 4, 3), np.uint8), 0.5, cache_dir=tmp_path)
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        smoothed_images(np.zeros((2, 4, 4, 3), np.uint8), 0.5, cache_dir=tmp_path, batch_size=0)
    s = smoothed_images(np.zeros((2, 4, 4, 3), np.uint8), 0.5, cache_dir=tmp_path, path_fn=fake_path)
    with pytest.raises(InputError, match="is not one of the cached levels"):
        s.at(0.7)


# ---------------------------------------------------------------- procedures
@pytest.mark.parametrize("procedure", [{"name": "vanilla"}, {"name": "blur"},
                                       {"name": "fixed", "sparsity": 0.6},
                                       {"name": "iterative", "levels": [0.3, 0.8]}])
def test_each_procedure_loss_falls(procedure, data, tmp_path):
    cfg = base_cfg(tmp_path, **procedure)
    cfg["optim"].update(epochs=8, name="adamw", lr=0.01, weight_decay=0.0, scheduler="constant")
    cfg["augment"] = {"crop_padding": 0, "flip": False}
    cfg["eval"] = {"test_time_sparsity": 0.6}
    res = train(cfg, model=tiny_net, train_data=data, val_data=data)
    losses = [r["train_loss"] for r in res.metrics]
    assert losses[-1] < 0.9 * losses[0], losses
    if procedure["name"] == "iterative":
        assert [r["sparsity"] for r in res.metrics][::7] == [0.3, 0.8]
    if procedure["name"] in ("fixed", "iterative"):
        assert any((tmp_path / "cache" / "smoothed").iterdir())
    assert res.final["val_acc_pre"] is not None


def test_fixed_trains_on_smoothed_images(data, tmp_path):
    """A Fixed training feeds the network the cached smoothed images, not the originals: with a
    path_fn that maps every image to a constant 77, every batch the network sees in training is
    77/255 everywhere (crop padding and flips off, so nothing else can change a pixel), while the
    validation batches are the real images."""
    const = lambda x, levels, **kw: np.full((len(levels),) + x.shape, 77, np.uint8)  # noqa: E731
    seen = {"train": [], "eval": []}

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_net()

        def forward(self, x):
            seen["train" if self.training else "eval"].append(x.detach().clone())
            return self.net(x)

    cfg = base_cfg(tmp_path, name="fixed", sparsity=0.6)
    cfg["augment"] = {"crop_padding": 0, "flip": False}
    cfg["eval"] = {"test_time_sparsity": None}
    train(cfg, model=Recorder(), train_data=data, val_data=data, path_fn=const)
    assert len(seen["train"]) >= 4  # 2 epochs x 2 batches of 10
    assert all(torch.allclose(x, torch.full_like(x, 77 / 255)) for x in seen["train"])
    assert sum(x.shape[0] for x in seen["train"]) == 2 * len(data)
    assert seen["eval"] and not any(torch.allclose(x, torch.full_like(x, 77 / 255))
                                    for x in seen["eval"])


# ---------------------------------------------------------------- checkpoints, resume, outputs
class Stop(Exception):
    pass


def test_resume_gives_bitwise_equal_weights(data, tmp_path):
    from virolbi.models import create_model
    net = lambda: create_model("resnet18", 10, width=1 / 16)  # noqa: E731 (BatchNorm included)
    cfg = base_cfg(tmp_path / "a")
    cfg["optim"]["epochs"] = 3
    full = train(cfg, model=net, train_data=data, val_data=data)

    cfg_b = base_cfg(tmp_path / "b")
    cfg_b["optim"]["epochs"] = 3

    def stop(epoch, row):
        if epoch == 1:
            raise Stop
    with pytest.raises(Stop):
        train(cfg_b, model=net, train_data=data, val_data=data, callbacks=[stop])
    assert (tmp_path / "b" / "run" / "last.pt").exists()
    resumed = train({**cfg_b, "resume": True}, model=net, train_data=data, val_data=data)
    assert resumed.resumed_from == 1
    for (k, v), (k2, v2) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert [r["train_loss"] for r in full.metrics] == [r["train_loss"] for r in resumed.metrics]
    out = tmp_path / "b" / "run"
    for name in ("config.yaml", "metrics.csv", "metrics.json", "model.pt", "last.pt"):
        assert (out / name).is_file()
    ck = torch.load(out / "last.pt", weights_only=True)
    assert set(ck) == {"model", "optimizer", "scheduler", "epoch", "rng", "config", "metrics"}
    assert ck["epoch"] == 3 and len((out / "metrics.csv").read_text().splitlines()) == 4
    # a changed recipe refuses to resume
    cfg_b["optim"]["lr"] = 0.2
    with pytest.raises(InputError, match="different configuration"):
        train({**cfg_b, "resume": True}, model=net, train_data=data, val_data=data)


def test_tensorboard_and_cosine_lr(data, tmp_path):
    cfg = base_cfg(tmp_path)
    cfg["logging"]["tensorboard"] = True
    cfg["optim"].update(epochs=2, batch_size=20)
    res = train(cfg, model=tiny_net, train_data=data, val_data=None)
    assert list((tmp_path / "run" / "tb").iterdir())
    # one step per epoch: after step 1 of 2 the cosine factor is 0.5(1 + cos(pi/2)) = 0.5
    assert res.metrics[0]["lr"] == pytest.approx(0.025) and res.metrics[1]["lr"] == pytest.approx(0.0)


# ---------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg, images, labels, out):
    import os
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ds = ImageDataset(images, labels)
    res = train(cfg, model=tiny_net, train_data=ds, val_data=ds)
    if rank == 0:
        torch.save({"state": res.model.state_dict(), "metrics": res.metrics}, out)


@pytest.mark.slow
def test_ddp_two_processes_equal_one(data, tmp_path):
    import torch.multiprocessing as mp
    cfg = base_cfg(tmp_path / "single")
    cfg["optim"].update(epochs=2, batch_size=8)     # 20 images: batches of 8, 8, 4
    cfg["eval"] = {"test_time_sparsity": None}
    single = train(cfg, model=tiny_net, train_data=data, val_data=data)
    cfg2 = base_cfg(tmp_path / "ddp")
    cfg2["optim"].update(epochs=2, batch_size=8)
    cfg2["eval"] = {"test_time_sparsity": None}
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg2, data.data, data.targets, str(out)),
             nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(got["state"][k], v, rtol=1e-5, atol=1e-5)
    for a, b in zip(single.metrics, got["metrics"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_acc"] == pytest.approx(b["val_acc"])


def test_train_input_errors(data, tmp_path):
    with pytest.raises(InputError, match="checkpoint not found"):
        from virolbi.train import load_checkpoint
        load_checkpoint(tmp_path / "none.pt")
    with pytest.raises(InputError, match="CUDA is not available"):
        if torch.cuda.is_available():
            raise InputError("CUDA is not available (skipped)")
        train({"device": "cuda", **base_cfg(tmp_path)}, model=tiny_net, train_data=data)


# ---------------------------------------------------------------- CLI
def test_cli_train_small(tmp_path, capsys, data, monkeypatch):
    from virolbi.cli import main
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults: [" + str(ROOT / "configs/small/cifar10_vanilla.yaml") + "]\n")
    rc = main(["train", "--config", str(cfg), "--print-config", "optim.epochs=1"])
    assert rc == 0 and "epochs: 1" in capsys.readouterr().out
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "optim.bogus=1"]) == 2
    assert "unknown config key 'optim.bogus'" in capsys.readouterr().err
    # a folder that holds a training is not overwritten silently (the training is never started)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"a previous training")
    assert main(["train", "--config", str(cfg), "--output-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir} already holds a training (last.pt); pass --resume" in err
    assert len(err.strip().splitlines()) == 1
    assert (run_dir / "last.pt").read_bytes() == b"a previous training"


@pytest.mark.parametrize("override, typed", [
    ("model.name=resnet9000", "model.name 'resnet9000' is not a model"),
    ("model.name='torchvision:'", "model.name 'torchvision:' is not a model"),
    ("data.name=cifar11", "data.name 'cifar11' is neither a data set"),
    ("data.val_split=validation", "data.val_split must be train, val or test"),
    ("procedure.name=smooth", "procedure.name must be one of"),
    ("optim.name=adam", "optim.name must be 'sgd' or 'adamw'"),
])
def test_cli_train_resolves_every_name_before_any_work(tmp_path, capsys, monkeypatch, override,
                                                       typed):
    """Issue #30 item 2: a wrong name on top of the fast recipe failed only after the data set was
    smoothed, and --print-config accepted it. Now: one line, exit 2, the trainer never starts."""
    from virolbi.cli import main
    from virolbi.train import trainer

    started = []
    monkeypatch.setattr(trainer, "train", lambda *a, **k: started.append(1))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"defaults: [{ROOT / 'configs/fast/cifar10_iterative.yaml'}]\n")
    out = tmp_path / "run"
    for extra in (["--print-config"], ["--output-dir", str(out)]):
        assert main(["train", "--config", str(cfg), override, *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("virolbi train: error: ")
        assert typed in err and "Traceback" not in err
    assert started == [] and not out.exists()


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("model: {name: airbench\noptim: [1,\n", "is not valid YAML (line 2, column"),
    ("optim:\n  lr: 0.1\n   epochs: 3\n", "is not valid YAML (line 3, column"),
])
def test_cli_train_refuses_an_empty_or_malformed_config_in_one_line(tmp_path, capsys,
                                                                     monkeypatch, text, message):
    """An empty file silently trained a default ResNet18; a malformed one gave six lines."""
    from virolbi.cli import main
    from virolbi.train import trainer

    started = []
    monkeypatch.setattr(trainer, "train", lambda *a, **k: started.append(1))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    for extra in ([], ["--print-config"]):
        assert main(["train", "--config", str(cfg), "--output-dir", str(tmp_path / "run"),
                     *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert f"virolbi train: error: {cfg} {message}" in err
    assert started == [] and not (tmp_path / "run").exists()


def test_cli_subprocess_print_config():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "virolbi.cli", "train", "--config",
                          str(ROOT / "configs/cifar10/iterative_resnet18.yaml"), "--print-config",
                          "optim.epochs=5"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "name: iterative" in out.stdout and "epochs: 5" in out.stdout


def test_resume_from_a_structurally_wrong_checkpoint_is_one_line(data, tmp_path):
    cfg = base_cfg(tmp_path)
    cfg["resume"] = True
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True)
    torch.save(tiny_net().state_dict(), out / "last.pt")  # bare weights, not a training checkpoint
    with pytest.raises(InputError, match=r"not a training checkpoint of virolbi train \(no model, "
                                         r"optimizer, scheduler, epoch, rng, config\)") as err:
        train(cfg, model=tiny_net(), train_data=data)
    assert "\n" not in str(err.value)
    torch.save([1, 2, 3], out / "last.pt")
    with pytest.raises(InputError, match="not a training checkpoint \\(a list"):
        train(cfg, model=tiny_net(), train_data=data)


def test_training_leaves_the_callers_global_state_as_it_was(data, tmp_path):
    """Seeds, deterministic algorithms and the thread count are the caller's, before and after."""
    import random

    net = tiny_net()  # (seeds torch itself)
    torch.manual_seed(1234)
    np.random.seed(99)
    random.seed(7)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(1234)
    np.random.seed(99)
    random.seed(7)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    cfg = base_cfg(tmp_path)
    cfg["deterministic"] = True
    cfg["compute"] = {"threads": 1}
    cfg["optim"]["epochs"] = 1
    train(cfg, model=net, train_data=data)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def test_checkpoints_kept_at_chosen_epochs(data, tmp_path):
    cfg = base_cfg(tmp_path)
    cfg["optim"]["epochs"] = 3
    cfg["logging"]["keep_checkpoints"] = [1, 3]
    train(cfg, model=tiny_net(), train_data=data)
    run = Path(cfg["output_dir"])
    assert sorted(p.name for p in run.glob("epoch_*.pt")) == ["epoch_0001.pt", "epoch_0003.pt"]
    assert torch.load(run / "epoch_0001.pt", weights_only=True)["epoch"] == 1
    cfg["logging"]["keep_checkpoints"] = [0, "2"]
    with pytest.raises(InputError, match="logging.keep_checkpoints must be true, false or a list"):
        train(cfg, model=tiny_net(), train_data=data)
