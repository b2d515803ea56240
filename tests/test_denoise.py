"""Denoising (virolbi.denoise): ObsAtk's two-step projection and attack on real gray images, DnCNN,
HAT's loss, the denoiser trainer, PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from virolbi.denoise import DnCNN, obsatk, project_zero_mean_l2
from virolbi.denoise.data import SHARED_ARCHIVE, load_gray_set, random_patches, to_tensor
from virolbi.denoise.evaluate import noisy_observation, psnr, psnr_rows
from virolbi.denoise.train import hat_loss, resolve_denoise_config, train_denoiser

needs_data = pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason="shared denoising data absent")


@pytest.fixture(scope="module")
def set12_crop():
    img = load_gray_set("set12")[0]
    return to_tensor(img[64:128, 64:128])


def test_two_step_projection_is_the_projection_onto_the_intersection():
    """Theorem 2.3.1: the result is feasible and no feasible point is closer to delta."""
    torch.manual_seed(0)
    delta = torch.randn(1, 1, 5, 5) + 0.3
    rho = 0.8
    p = project_zero_mean_l2(delta, rho)
    assert abs(float(p.mean())) < 1e-7 and float(p.norm()) <= rho + 1e-6
    for _ in range(2000):
        q = torch.randn(1, 1, 5, 5)
        q = q - q.mean()
        q = q * (rho * float(torch.rand(())) / q.norm())          # a random feasible point
        assert float((q - delta).norm()) >= float((p - delta).norm()) - 1e-6


@needs_data
def test_obsatk_is_zero_mean_in_the_ball_and_beats_random_noise_of_the_same_norm(set12_crop):
    import torch.nn.functional as F

    def denoiser(v):                                         # a real (linear) denoiser: 3x3 box
        return F.avg_pool2d(F.pad(v, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    x = set12_crop
    g = torch.Generator().manual_seed(0)
    y = x + (15 / 255) * torch.randn(x.shape, generator=g)
    eps = 5 / 255
    rho = eps * math.sqrt(x.numel())
    delta = obsatk(denoiser, x, y, eps)
    assert abs(float(delta.mean())) < 1e-7
    assert float(delta.norm()) <= rho * (1 + 1e-5) and float(delta.norm()) > 0.99 * rho
    rand = torch.randn(x.shape, generator=g)
    rand = (rand - rand.mean()) * (rho / (rand - rand.mean()).norm())
    attacked, random = psnr(x, denoiser(y + delta)), psnr(x, denoiser(y + rand))
    assert attacked < random - 1.0


def test_dncnn_is_residual_and_hat_with_alpha_zero_is_normal_training():
    torch.manual_seed(0)
    net = DnCNN(depth=4, width=8).eval()
    with torch.no_grad():
        net.residual[-1].weight.zero_()
        net.residual[-1].bias.zero_()
    y = torch.rand(2, 1, 12, 12)
    torch.testing.assert_close(net(y), y)                    # no predicted noise: identity
    x = torch.rand(3, 1, 12, 12)
    y = x + 0.1 * torch.randn_like(x)
    net = DnCNN(depth=4, width=8)
    nt = hat_loss(net.eval(), x, y, alpha=0.0, eps=5 / 255)
    torch.testing.assert_close(nt, 0.5 * ((net(y) - x) ** 2).mean())
    assert float(hat_loss(net, x, y, alpha=1.0, eps=5 / 255).detach()) != float(nt.detach())


@needs_data
def test_trainer_lowers_the_loss_resumes_and_rejects_bad_keys(tmp_path):
    cfg = {"name": "tiny", "output_dir": str(tmp_path / "run"), "model": {"depth": 3, "width": 8},
           "data": {"patch_size": 16, "patches_per_epoch": 256},
           "optim": {"epochs": 3, "batch_size": 64, "lr": 3e-3}, "hat": {"alpha": 1.0},
           "logging": {"progress": False}}
    model, rows = train_denoiser(cfg)
    assert rows[-1]["loss"] < rows[0]["loss"]
    for f in ("config.yaml", "last.pt", "model.pt", "metrics.json"):
        assert (tmp_path / "run" / f).is_file()
    again, rows2 = train_denoiser({**cfg, "resume": True})
    assert rows2 == rows                                     # finished: nothing more to do
    from virolbi.errors import InputError
    with pytest.raises(InputError, match="unknown config key"):
        resolve_denoise_config({"optim": {"momentum": 0.9}})
    with pytest.raises(InputError, match="compute.precision must be float32 or bfloat16, got 'fp8'"):
        resolve_denoise_config({"compute": {"precision": "fp8"}})


def test_bfloat16_channels_last_training_is_a_float32_model_close_to_the_float32_one(tmp_path):
    """bfloat16 autocast changes the rounding of the forward passes only: the same seed trains a
    float32 model whose first-step loss matches float32 training to bfloat16 precision, and which
    lowers the loss too."""
    cfg = {"name": "tiny", "output_dir": None, "model": {"depth": 3, "width": 8},
           "data": {"patch_size": 16, "patches_per_epoch": 256},
           "optim": {"epochs": 3, "batch_size": 64, "lr": 3e-3}, "hat": {"alpha": 1.0},
           "logging": {"progress": False}}
    _, ref = train_denoiser(cfg)
    model, rows = train_denoiser({**cfg, "compute": {"precision": "bfloat16", "channels_last": True}})
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert rows[0]["loss"] == pytest.approx(ref[0]["loss"], rel=0.05)
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_psnr_and_noises():
    x = torch.full((1, 1, 8, 8), 0.5)
    assert psnr(x, x + 0.01) == pytest.approx(40.0)
    g = torch.Generator().manual_seed(0)
    u = noisy_observation(lambda v: v, torch.zeros(1, 1, 64, 64), "uniform", 25 / 255, g)
    assert float(u.abs().max()) <= math.sqrt(3) * 25 / 255 + 1e-6
    assert float(u.std()) == pytest.approx(25 / 255, rel=0.05)
    rows = psnr_rows(lambda v: v, [np.full((128, 128), 128, np.uint8)], gammas=(15 / 255,),
                     noises=("gaussian",))
    assert rows[0]["psnr"] == pytest.approx(-20 * math.log10(15 / 255), abs=0.1)


def test_patches_have_the_size_and_range():
    rng = np.random.default_rng(0)
    imgs = [np.arange(400, dtype=np.uint8).reshape(20, 20)]
    p = random_patches(imgs, 5, 8, rng)
    assert p.shape == (5, 1, 8, 8) and 0 <= float(p.min()) and float(p.max()) <= 1


@needs_data
def test_cli_trains_a_denoiser_and_evaluates_its_psnr(tmp_path, capsys):
    from virolbi.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("task: denoising\nname: tiny\nmodel: {depth: 3, width: 4}\n"
                   "data: {patch_size: 16, patches_per_epoch: 64}\noptim: {epochs: 1, batch_size: 32}\n"
                   "logging: {progress: false}\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--output-dir", str(run)]) == 0
    assert main(["evaluate", "--checkpoint", str(run), "--suite", "psnr", "--data", "set12",
                 "--limit", "1", "--output-dir", str(tmp_path / "ev")]) == 0
    import json
    rows = json.loads((tmp_path / "ev" / "psnr.json").read_text())["rows"]
    assert {r["noise"] for r in rows} == {"gaussian", "uniform", "obsatk-5/255", "obsatk-7/255"}
    assert len(rows) == 8 and all(10 < r["psnr"] < 60 and r["images"] == 1 for r in rows)
    assert "| 15/255 |" in (tmp_path / "ev" / "psnr.md").read_text()
    assert main(["evaluate", "--checkpoint", str(run), "--suite", "psnr", "--data", "cifar10",
                 "--output-dir", str(tmp_path / "ev2")]) == 2
    assert "--suite psnr takes --data" in capsys.readouterr().err


def test_smoother_denoiser_has_an_identity_backward_and_its_sparsity_is_chosen_by_psnr():
    """ViRoLBI as a denoiser: BPDA identity backward (the ObsAtk gradient passes straight through);
    on a piecewise-constant image the chosen level is the grid's best by mean PSNR and denoises
    (> 4 dB above the noisy input at sigma 25/255), and the most smoothing level beats the least."""
    from virolbi.denoise.smoother import SmootherDenoiser, choose_sparsity

    img = np.full((32, 32), 60, np.uint8)
    img[8:24, 8:24] = 190
    img[:, 26:] = 120
    level, scores = choose_sparsity([img, img.T.copy()], 25 / 255, grid=(0.1, 0.3, 0.9))
    assert set(scores) == {0.1, 0.3, 0.9} and scores[level] == max(scores.values())
    x = to_tensor(img)
    y = x + (25 / 255) * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    den = SmootherDenoiser(level)
    with torch.no_grad():
        assert psnr(x, den(y)) > psnr(x, y) + 4.0
    assert scores[0.1] > scores[0.9]
    v = y.clone().requires_grad_(True)
    (den(v) * x).sum().backward()
    assert torch.equal(v.grad, x)


@needs_data
def test_cli_psnr_suite_with_virolbi_as_the_denoiser(tmp_path):
    from virolbi.cli import main

    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", "virolbi", "--suite", "psnr", "--data", "set12",
                 "--limit", "1", "--fit-images", "1", "--output-dir", str(out)]) == 0
    import json
    report = json.loads((out / "psnr.json").read_text())
    chosen = report["meta"]["sparsity"]
    assert set(chosen) == {"15/255", "25/255"} and all(c["train_psnr"] for c in chosen.values())
    assert all(r["denoiser"].startswith("ViRoLBI (sparsity ") for r in report["rows"])
    by = {(r["gamma"], r["noise"]): r["psnr"] for r in report["rows"]}
    assert by[("25/255", "gaussian")] < by[("15/255", "gaussian")]     # more noise, lower PSNR
    assert all(15 < v < 40 for v in by.values())


@needs_data
def test_a_trained_denoiser_is_shipped_and_loaded_by_name(tmp_path, monkeypatch, capsys):
    """`virolbi weights export` on a denoiser run writes safetensors + a manifest entry with the
    Set12 PSNR of the float32 and float16 weights; the shipped name then loads as the same DnCNN
    (weights equal to the run's, up to the stored precision) in `load_denoiser` and `weights list`."""
    from virolbi.cli import main
    from virolbi.denoise.evaluate import load_denoiser
    from virolbi.zoo import load_weights, weights_info

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("task: denoising\nname: tiny\nmodel: {depth: 3, width: 4}\n"
                   "data: {patch_size: 16, patches_per_epoch: 64}\noptim: {epochs: 1, batch_size: 32}\n"
                   "logging: {progress: false}\n")
    run, zoo = tmp_path / "run", tmp_path / "zoo"
    zoo.mkdir()
    assert main(["train", "--config", str(cfg), "--output-dir", str(run)]) == 0
    monkeypatch.setenv("VIROLBI_ZOO", str(zoo))
    assert main(["weights", "export", str(run), "--name", "tiny_dncnn"]) == 0
    entry = weights_info("tiny_dncnn")
    assert entry["task"] == "denoising" and entry["model"] == {"name": "dncnn", "depth": 3, "width": 4}
    assert abs(entry["set12_psnr_gaussian25_float16"] - entry["set12_psnr_gaussian25_float32"]) < 0.05
    net, _ = load_weights("tiny_dncnn")
    ref = load_denoiser(run)
    by_name = load_denoiser("tiny_dncnn")
    for a, b, c in zip(net.state_dict().values(), ref.state_dict().values(), by_name.state_dict().values()):
        assert torch.equal(a, c) and torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    assert "Set12 PSNR" in capsys.readouterr().out
