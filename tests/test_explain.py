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
