"""Spectral statistics of the smoothed images (the paper's Fig. 2c) against closed-form cases, and
`virolbi figures` end to end on real images."""

from __future__ import annotations

import json

import pytest
import torch

from virolbi.cli import main
from virolbi.explain import RINGS, removed_energy_table, ring_masks
from virolbi.perturb.frequency import frequency_split


def test_rings_partition_the_spectrum_without_the_zero_frequency():
    m = ring_masks(32, 32)
    total = sum(v.int() for v in m.values())
    assert int(total.max()) == 1 and int(total.sum()) == 32 * 32 - 1
    assert not total[16, 16]  # the zero frequency belongs to no ring


def test_an_ideal_low_pass_changes_exactly_the_rings_outside_its_disk(cifar_batch):
    """Keeping the disk of radius r2 (the middle ring's outer edge) changes 0 % of the low and
    middle energy and 100 % of the high energy; the identity changes nothing."""
    x = cifar_batch[:12].double()
    low, _ = frequency_split(x, radius=RINGS[1])
    rows = removed_energy_table(x, {"ideal low-pass": low, "identity": x.clone()}, reps=50)
    ideal, same = rows
    assert ideal["low"]["fraction"] == pytest.approx(0, abs=1e-12)
    assert ideal["middle"]["fraction"] == pytest.approx(0, abs=1e-12)
    assert ideal["high"]["fraction"] == pytest.approx(1, abs=1e-9)
    assert all(same[k]["fraction"] == 0 for k in ("low", "middle", "high"))
    lo, hi = ideal["high"]["ci95"]
    assert lo <= 1 + 1e-9 and hi >= 1 - 1e-9


def test_figures_fig2c_end_to_end_on_real_images(tmp_path, capsys):
    code = main(["figures", "fig2c", "--images", "20", "--output-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2c.json", "fig2c.md", "fig2c.png",
                                                          "fig2c_caption.md"]
    rows = {r["variant"]: r for r in json.loads((tmp_path / "fig2c.json").read_text())["rows"]}
    # coarser smoothing changes more in every ring; level 1.0 returns the images themselves
    for ring in ("low", "middle", "high"):
        fr = [rows[f"ViRoLBI {lv:g}"][ring]["fraction"] for lv in (0.2, 0.4, 0.6, 0.8, 1.0)]
        assert fr == sorted(fr, reverse=True) and fr[-1] == 0
    assert (tmp_path / "fig2c.png").read_bytes()[:4] == b"\x89PNG"


def test_gradcam_puts_its_mass_on_the_region_the_decision_depends_on():
    """Two feature channels: red (present only in the top-left quadrant of the images) and green
    (everywhere else). The class score sums the red channel only, so Grad-CAM's channel weights
    pick red and the map lies in the top-left quadrant; the other class's map (green) avoids it."""
    from virolbi.explain.gradcam import box_mass, gradcam

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1, bias=False)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[0, 0] = 1.0  # channel 0 <- red
                self.conv.weight[1, 1] = 1.0  # channel 1 <- green

        def forward(self, x):
            a = torch.relu(self.conv(x))
            return torch.stack([a[:, 0].flatten(1).sum(1), a[:, 1].flatten(1).sum(1)], 1)

    x = torch.zeros(4, 3, 16, 16)
    x[:, 0, :8, :8] = torch.rand(4, 8, 8) + 0.5   # red only top-left
    x[:, 1] = torch.rand(4, 16, 16) + 0.5
    x[:, 1, :8, :8] = 0.0                          # green everywhere else
    quadrant = torch.zeros(16, 16, dtype=torch.bool)
    quadrant[:8, :8] = True
    red = gradcam(Net(), x, torch.zeros(4, dtype=torch.long))
    green = gradcam(Net(), x, torch.ones(4, dtype=torch.long))
    assert torch.allclose(red.flatten(1).sum(1), torch.ones(4))
    assert (box_mass(red, quadrant) > 0.9).all()      # bilinear upsampling leaks a little
    assert (box_mass(green, quadrant) < 0.1).all()


def test_box_mass_and_pointing_game_on_known_maps():
    from virolbi.explain.gradcam import box_mass, centre_box, pointing_game

    box = centre_box(8, 8, 0.5)
    assert int(box.sum()) == 16 and bool(box[2:6, 2:6].all())
    uniform = torch.full((1, 8, 8), 1 / 64)
    peak = torch.zeros(1, 8, 8)
    peak[0, 0, 0] = 1.0
    assert float(box_mass(uniform, box)) == pytest.approx(0.25)
    assert float(box_mass(peak, box)) == 0.0 and not bool(pointing_game(peak, box))


def test_figures_cam_mass_end_to_end_on_the_shipped_models(tmp_path, capsys):
    code = main(["figures", "cam-mass", "--images", "20", "--output-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "cam_mass.json").read_text())
    assert [r["procedure"] for r in data["rows"]] == ["Vanilla", "Blur", "Fix 0.6", "Iterative"]
    for r in data["rows"]:
        assert 0 <= r["box_mass_ci95"][0] <= r["box_mass"] <= r["box_mass_ci95"][1] <= 1
    assert (tmp_path / "cam_mass.png").read_bytes()[:4] == b"\x89PNG"


def test_half_mass_area_of_a_point_and_of_a_uniform_map():
    from virolbi.explain.gradcam import half_mass_area

    point = torch.zeros(1, 10, 10)
    point[0, 3, 4] = 1.0
    assert float(half_mass_area(point)) == pytest.approx(0.01)
    assert float(half_mass_area(torch.full((1, 10, 10), 0.01))) == pytest.approx(0.5)


def test_explain_end_to_end_and_bad_variants(tmp_path, capsys):
    import numpy as np

    code = main(["explain", "--model", "fast_cifar10_vanilla_s0", "--images", "cifar10-jpeg:val",
                 "--limit", "3", "--variants", "original,smooth:0.6", "--output-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    maps = np.load(tmp_path / "gradcam.npy")
    assert maps.shape == (2, 3, 32, 32) and np.allclose(maps.sum((2, 3)), 1, atol=1e-5)
    info = json.loads((tmp_path / "gradcam.json").read_text())
    assert info["variants"] == ["original", "smooth 0.6"] and info["target"] == "true class"
    assert (tmp_path / "gradcam.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    code = main(["explain", "--model", "fast_cifar10_vanilla_s0", "--images", "cifar10-jpeg:val",
                 "--limit", "2", "--method", "lrp", "--variants", "original,blur",
                 "--output-dir", str(tmp_path / "lrp")])
    assert code == 0, capsys.readouterr().err
    lrp = np.load(tmp_path / "lrp" / "lrp.npy")
    assert lrp.shape == (2, 2, 32, 32) and (lrp > 0).any() and (lrp < 0).any()   # signed relevance
    assert (tmp_path / "lrp" / "lrp.png").is_file()
    capsys.readouterr()
    code = main(["explain", "--model", "fast_cifar10_vanilla_s0", "--images", "cifar10-jpeg:val",
                 "--variants", "original,sharpen", "--output-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--variants takes original, blur and smooth:LEVEL, got 'sharpen'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_figures_fig2a_end_to_end(tmp_path, capsys):
    code = main(["figures", "fig2a", "--images", "10", "--output-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2a.png", "fig2a_caption.md"]
    assert "radius 6" in (tmp_path / "fig2a_caption.md").read_text()


@pytest.mark.parametrize("figure", ["fig1b", "fig3"])
def test_heat_map_figures_end_to_end(tmp_path, capsys, figure):
    import numpy as np

    code = main(["figures", figure, "--images", "10", "--output-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{figure}.npy", f"{figure}.png", f"{figure}_caption.md"]
    maps = np.load(tmp_path / f"{figure}.npy")
    assert maps.shape == ((1 if figure == "fig1b" else 4), 3, 4, 32, 32)
    assert "fast_cifar10_vanilla_s0" in (tmp_path / f"{figure}_caption.md").read_text()


def test_snapshot_figures_over_training(tmp_path, capsys, cifar_small):
    """fig2b and fig5 from a real (tiny) training that keeps epochs 1 and 2."""
    from virolbi.data.dataset import ImageDataset
    from virolbi.train import train

    imgs, labels = cifar_small
    data = ImageDataset(imgs, labels)
    run = tmp_path / "run"
    train({"output_dir": str(run), "model": {"name": "airbench", "width": 0.125,
                                             "data_init_images": 20},
           "optim": {"epochs": 2, "batch_size": 10, "lr": 0.05},
           "logging": {"progress": False, "tensorboard": False, "keep_checkpoints": [1, 2]}},
          train_data=data, val_data=data)
    for figure in ("fig2b", "fig5"):
        code = main(["figures", figure, "--run", str(run), "--images", "10",
                     "--output-dir", str(tmp_path / "fig")])
        assert code == 0, capsys.readouterr().err
        table = json.loads((tmp_path / "fig" / f"{figure}.json").read_text())
        values = table["low_frequency_share" if figure == "fig2b" else "box_mass"]
        assert list(values) == ["1", "2"] and all(0 <= v <= 1 for v in values.values())
    code = main(["figures", "fig5", "--images", "10", "--output-dir", str(tmp_path / "f2")])
    assert code == 2 and "needs --run" in capsys.readouterr().err
    code = main(["figures", "all", "--run", str(run), "--images", "10",
                 "--output-dir", str(tmp_path / "all")])
    assert code == 0, capsys.readouterr().err
    stems = {p.name.split("_caption")[0] for p in (tmp_path / "all").glob("*_caption.md")}
    assert stems == {"fig1b", "fig2a", "fig2b", "fig2c", "fig3", "fig5", "cam_mass"}


def test_low_frequency_share_of_known_signals():
    from virolbi.explain.snapshots import low_frequency_share

    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    slow = torch.cos(2 * torch.pi * 2 * xx / 32)[None, None]       # frequency 2: low
    fast = torch.cos(2 * torch.pi * 12 * yy / 32)[None, None]      # frequency 12: high
    assert low_frequency_share(slow) == pytest.approx(1.0)
    assert low_frequency_share(fast) == pytest.approx(0.0, abs=1e-9)
