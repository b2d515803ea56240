"""SDNet's CSC layer (virolbi.models.csc): the unrolled FISTA reaches the non-negative Lasso optimum
(KKT conditions), unit-norm atoms, adjoint operators, the residual, and the fast network's CSC stem."""

from __future__ import annotations

import pytest
import torch

from virolbi.models import create_model
from virolbi.models.csc import CSCLayer, csc_layers, csc_residual, set_csc_lambda


def small(steps=2, lam=0.1, seed=0):
    torch.manual_seed(seed)
    return CSCLayer(2, 5, kernel_size=3, lam=lam, steps=steps, power_iterations=50).double()


def test_many_steps_reach_the_kkt_conditions_of_eq_4():
    """z* minimises lam |z|_1 + 1/2 |x - A z|^2 over z >= 0 iff g = A^T(A z - x) satisfies
    g + lam = 0 where z > 0 and g + lam >= 0 where z = 0."""
    layer = small(steps=3000, lam=0.05)
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        z = layer(x)
        g = layer.analysis(layer.synthesis(z) - x)
    active = z > 1e-9
    assert active.any() and (~active).any()
    assert (g[active] + 0.05).abs().max() < 1e-6
    assert (g[~active] + 0.05).min() > -1e-6


def test_two_steps_lower_the_objective_and_lambda_sparsifies():
    layer = small()
    x = torch.rand(3, 2, 6, 6, dtype=torch.float64)

    def objective(z):
        return 0.1 * z.abs().sum() + 0.5 * ((x - layer.synthesis(z)) ** 2).sum()

    with torch.no_grad():
        z = layer(x)
        assert objective(z) < objective(torch.zeros_like(z))
        layer.lam = 1.0
        assert (layer(x) > 0).sum() < (z > 0).sum()


def test_atoms_have_unit_norm_and_the_operators_are_adjoint():
    layer = small()
    with torch.no_grad():
        layer.weight.mul_(7.0)
    d = layer.dictionary()
    torch.testing.assert_close(d.flatten(1).norm(dim=1), torch.ones(5, dtype=torch.float64))
    z = torch.rand(1, 5, 6, 6, dtype=torch.float64)
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64)
    lhs = (layer.synthesis(z) * x).sum()
    rhs = (z * layer.analysis(x)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_lipschitz_bounds_the_operator_norm():
    layer = small()
    d = layer.dictionary().detach()
    big = torch.linalg.matrix_norm(_matrix(layer, 6), ord=2) ** 2
    assert layer.lipschitz(d, 6, 6) >= float(big) * 0.999


def _matrix(layer, n):
    """A as a dense matrix (columns = images of the unit codes)."""
    cols = []
    for i in range(5 * n * n):
        e = torch.zeros(1, 5 * n * n, dtype=torch.float64)
        e[0, i] = 1
        cols.append(layer.synthesis(e.view(1, 5, n, n)).detach().flatten())
    return torch.stack(cols, dim=1)


def test_residual_grows_with_noise_and_lambda_is_set_everywhere():
    net = create_model("airbench", 10, width=0.25, csc={"lam": 0.1}).eval()
    assert len(csc_layers(net)) == 1
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 0.3 + 0.35
    with torch.no_grad():
        net(x)
        clean = csc_residual(net)
        net((x + 0.2 * torch.randn_like(x)).clamp(0, 1))
        noisy = csc_residual(net)
    assert (noisy > clean).all()
    assert set_csc_lambda(net, 0.7) == 1 and csc_layers(net)[0].lam == 0.7


def test_gradients_reach_the_dictionary_and_the_input():
    layer = CSCLayer(3, 6)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_bad_options():
    from virolbi.errors import InputError
    with pytest.raises(InputError, match="odd"):
        CSCLayer(3, 4, kernel_size=2)


def test_algorithm_1_fits_a_line_and_applies_the_fitted_lambda(cifar_batch):
    """Robust inference: the fitted lambda(r) passes through the (r_c, lambda_c) points by least
    squares, and the test predictions are made with lambda(r_test), not the training lambda."""
    from virolbi.evaluate.sdnet import LambdaFit, fit_lambda, lambda_sweep, mean_residual, \
        robust_inference

    torch.manual_seed(0)
    net = create_model("airbench", 10, width=0.125, csc=True).eval()
    y = torch.arange(len(cifar_batch)) % 10
    sweep = lambda_sweep(net, cifar_batch, y, (0.1, 0.5, 1.0))
    assert set(sweep) == {0.1, 0.5, 1.0} and csc_layers(net)[0].lam == 0.1     # restored
    fit = fit_lambda(net, cifar_batch, y, "gaussian_noise", severities=(1, 3, 5),
                     lambdas=(0.1, 0.5, 1.0))
    r = [p[1] for p in fit.points]
    lam = [p[2] for p in fit.points]
    assert len(fit.points) == 3 and r[0] < r[2]                      # more noise, more residual
    import numpy as np
    ref = np.polyfit(r, lam, 1)
    assert fit.slope == pytest.approx(ref[0]) and fit.intercept == pytest.approx(ref[1])
    seen = []
    net.backbone.whiten.register_forward_hook(lambda m, i, o: seen.append(m.lam))
    chosen = LambdaFit(slope=2.0, intercept=0.05, lo=0.1, hi=1.5)
    r_test = mean_residual(net, cifar_batch)
    seen.clear()
    pred, applied = robust_inference(net, cifar_batch, chosen)
    assert applied == pytest.approx(min(1.5, max(0.1, 2.0 * r_test + 0.05)))
    assert seen[0] == 0.1 and seen[-1] == pytest.approx(applied)     # r at lambda_0, then lambda(r)
    assert pred.shape == (len(cifar_batch),) and csc_layers(net)[0].lam == 0.1


def test_bfloat16_autocast_training_then_float32_evaluation():
    """A training step under bfloat16 autocast, then evaluation outside it (what the trainer's
    validation does): the power iteration stays float32, so the eval pass neither fails on a
    bfloat16 power vector nor changes the step size."""
    torch.manual_seed(0)
    layer = CSCLayer(3, 8)
    x = torch.rand(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x).float().sum().backward()
    assert layer.power_vector.dtype == torch.float32
    layer.eval()
    z = layer(x)
    assert z.dtype == torch.float32
    fresh = CSCLayer(3, 8)
    fresh.load_state_dict(layer.state_dict())
    d = fresh.dictionary().detach()
    assert layer._eval_lipschitz["L"] == pytest.approx(fresh.lipschitz(d, 8, 8, 200), rel=1e-3)


def test_sdnet_noise_table_rows_are_consistent_with_direct_runs(cifar_batch, tmp_path):
    """Each row's λ₀ cell is the sweep's value at λ₀, the oracle is the sweep's best, the
    Algorithm 1 cell uses λ(r_test) of the fit on the *training* images (whose corruption draws
    differ from the test ones), and the layers' λ₀ is restored; the report files are written."""
    from virolbi.evaluate.sdnet import _corrupt, lambda_sweep, mean_residual, LambdaFit
    from virolbi.evaluate.sdnet_table import _test_seed, sdnet_noise_table, write_sdnet_report

    torch.manual_seed(0)
    net = create_model("airbench", 10, width=0.125, csc=True).eval()
    y = torch.arange(len(cifar_batch)) % 10
    lambdas = (0.1, 0.7, 1.5)
    table = sdnet_noise_table(net, cifar_batch[:10], y[:10], cifar_batch, y, noises=("shot_noise",),
                              severities=(2, 5), lambdas=lambdas, progress=False)
    assert csc_layers(net)[0].lam == 0.1 and table["lambda0"] == 0.1
    assert [(r["noise"], r["severity"]) for r in table["rows"]] == [("shot_noise", 2), ("shot_noise", 5)]
    f = table["fits"]["shot_noise"]
    fit = LambdaFit(f["slope"], f["intercept"], 0.1, 1.5)
    for r in table["rows"]:
        x = _corrupt(cifar_batch, "shot_noise", r["severity"], _test_seed(0, "shot_noise", r["severity"]))
        assert _test_seed(0, "shot_noise", r["severity"]) != r["severity"]   # fit draws differ
        sweep = lambda_sweep(net, x, y, lambdas)
        assert r["sweep"] == {f"{k:g}": v for k, v in sweep.items()}
        assert r["lambda0"]["accuracy"] == sweep[0.1]
        assert r["oracle"]["accuracy"] == max(sweep.values()) >= r["lambda0"]["accuracy"]
        lo, hi = r["oracle"]["ci95"]
        assert lo <= r["oracle"]["accuracy"] <= hi
        assert r["algorithm1"]["lambda"] == pytest.approx(fit(mean_residual(net, x)))
    paths = write_sdnet_report(table, tmp_path, {"checkpoint": "toy", "fit_images": 10})
    assert "| shot_noise | 5 |" in paths["markdown"].read_text()
    assert paths["figure"].read_bytes()[:4] == b"\x89PNG"


def test_cli_sdnet_suite_end_to_end_and_refuses_a_model_without_csc(cifar_image_tree, tmp_path,
                                                                   capsys):
    from virolbi.cli import main

    root = tmp_path / "data"
    root.mkdir()
    for split in ("train", "test"):
        (root / split).symlink_to(cifar_image_tree / "test")
    torch.manual_seed(0)
    for name, kwargs in (("csc", {"csc": True}), ("plain", {})):
        net = create_model("airbench", 10, width=0.125, **kwargs)
        torch.save({"model": net.state_dict(), "config": {"model": "airbench", "num_classes": 10,
                    "width": 0.125, "model_kwargs": kwargs}}, tmp_path / f"{name}.pt")
    out = tmp_path / "out"
    code = main(["evaluate", "--suite", "sdnet", "--checkpoint", str(tmp_path / "csc.pt"), "--data",
                 str(root), "--limit", "10", "--fit-images", "10", "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["sdnet.json", "sdnet.md", "sdnet.png"]
    import json
    table = json.loads((out / "sdnet.json").read_text())
    assert table["meta"]["test_images"] == 10 and len(table["rows"]) == 4 * 5
    capsys.readouterr()
    code = main(["evaluate", "--suite", "sdnet", "--checkpoint", str(tmp_path / "plain.pt"), "--data",
                 str(root), "--limit", "4", "--fit-images", "4", "--output-dir", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no CSC layer" in err
    code = main(["evaluate", "--suite", "sdnet", "--checkpoint", str(tmp_path / "csc.pt"), "--data",
                 str(root), "--fit-images", "0", "--output-dir", str(tmp_path / "o3")])
    err = capsys.readouterr().err
    assert code == 2 and "--fit-images must be a positive integer, got 0" in err
    assert not (tmp_path / "o3").exists()
