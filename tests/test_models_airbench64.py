"""The 64-px fast network ("airbench64", Tiny-ImageNet-100) and its configs: shapes, forward at
64 px, the whitening stem at stride 2, one training step through the recipe, the plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from virolbi.data.dataset import ImageDataset
from virolbi.errors import InputError
from virolbi.models import PatchWhitening, create_model, list_models
from virolbi.models.airbench import AIRBENCH64_WIDTHS, AirbenchNet
from virolbi.perturb import blur_params_for
from virolbi.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def group_shapes(net: torch.nn.Module, side: int) -> list[tuple[int, ...]]:
    """(C, H, W) after the stem and after every conv group, for one image of ``side`` pixels."""
    backbone = getattr(net, "backbone", net)
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
             for m in (backbone.whiten, *backbone.layers)]
    with torch.no_grad():
        net.eval()(torch.rand(1, 3, side, side))
    for h in hooks:
        h.remove()
    return shapes


def test_airbench64_shapes_at_64_px():
    net = create_model("airbench64", 100)
    assert "airbench64" in list_models() and AIRBENCH64_WIDTHS == (64, 128, 256, 256)
    assert group_shapes(net, 64) == [(24, 63, 63), (64, 31, 31), (128, 15, 15), (256, 7, 7),
                                     (256, 3, 3)]
    out = net(torch.rand(5, 3, 64, 64))
    assert out.shape == (5, 100) and torch.isfinite(out).all()
    half = create_model("airbench64", 100, width=0.5)
    assert [g.conv2.out_channels for g in half.backbone.layers] == [32, 64, 128, 128]
    # ImageNet statistics come first (Tiny ImageNet images), not CIFAR-10's
    assert torch.allclose(net.normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_same_last_map_as_airbench_at_32_px():
    """The reference property the extra group buys: 64 px ends where airbench94 ends at 32 px."""
    ref = group_shapes(create_model("airbench", 10), 32)[-1]
    assert group_shapes(create_model("airbench64", 10), 64)[-1] == ref == (256, 3, 3)


def test_wrong_image_size_is_one_clear_error():
    with pytest.raises(InputError, match=r"3 conv groups and final pool 3 ends in a 7x7 map .* 64-px images 4"):
        create_model("airbench", 10).eval()(torch.rand(1, 3, 64, 64))
    with pytest.raises(InputError, match="4 conv groups and final pool 3 ends in a 1x1 map"):
        create_model("airbench64", 10).eval()(torch.rand(1, 3, 32, 32))
    with pytest.raises(InputError, match="widths must be positive integers"):
        AirbenchNet(10, widths=())
    with pytest.raises(InputError, match="stem_stride must be 1 or 2, got 3"):
        create_model("airbench64", 10, stem_stride=3)


def test_stride_two_whitening_whitens_the_patches_it_sees():
    """At stride 2 the filters come from the non-overlapping 2x2 patches, and on those patches
    the output has identity covariance (first 12 channels; the other 12 are their negatives)."""
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.6, 0.2], [0.0, 0.8, 0.5], [0.0, 0.0, 0.4]])
    x = torch.einsum("ij,njhw->nihw", mix, torch.rand(64, 3, 16, 16, generator=g))
    layer = PatchWhitening(3, 2, eps=1e-9, stride=2)
    layer.fit_to_data(x)
    with torch.no_grad():
        y = layer(x.double().float()) - layer.bias.view(1, -1, 1, 1)
    assert y.shape == (64, 24, 8, 8)
    z = y[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = z.T @ z / z.shape[0]
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=2e-3)
    assert torch.allclose(y[:, 12:], -y[:, :12])


def test_one_training_step_through_the_recipe(tmp_path):
    """The Tiny-ImageNet-100 recipe (airbench64, whitening fitted on the data, micro-batches,
    channels_last) runs on 64-px images; bf16 is not needed for the check."""
    from virolbi.train import train

    cfg = load_config(ROOT / "configs/fast/tinyimagenet100_vanilla.yaml",
                      ["model.width=0.125", "optim.epochs=1", "optim.batch_size=16",
                       "compute.micro_batch=8", "model.data_init_images=32",
                       "eval.test_time_sparsity=null", "output_dir=null",
                       "logging.progress=false", "logging.tensorboard=false"])
    rng = np.random.default_rng(0)
    data = ImageDataset(rng.integers(0, 256, (32, 64, 64, 3), dtype=np.uint8), np.arange(32) % 4)
    res = train(cfg, train_data=data, val_data=data)
    assert res.metrics[-1]["epoch"] == 1 and 0.0 <= res.final["val_acc"] <= 1.0


# ---------------------------------------------------------------- configs and plan

@pytest.mark.parametrize("procedure", ["vanilla", "blur", "fixed", "iterative"])
def test_fast_configs(procedure):
    from virolbi.train.procedures import build_procedure

    tin = load_config(ROOT / f"configs/fast/tinyimagenet100_{procedure}.yaml")
    assert tin["name"] == f"fast_tinyimagenet100_{procedure}"
    assert tin["model"]["name"] == "airbench64" and tin["data"]["name"] == "tinyimagenet100"
    assert (tin["data"]["train_split"], tin["data"]["val_split"]) == ("train", "val")
    assert tin["procedure"]["name"] == procedure and tin["procedure"]["sparsity"] == 0.3
    assert tin["eval"]["test_time_sparsity"] == 0.3
    p = tin["procedure"]
    assert (p["blur_kernel"], p["blur_sigma"]) == blur_params_for(64)
    build_procedure(p)
    c100 = load_config(ROOT / f"configs/fast/cifar100_{procedure}.yaml")
    c10 = load_config(ROOT / f"configs/fast/cifar10_{procedure}.yaml")
    assert c100["data"]["name"] == "cifar100" and c100["data"]["val_split"] == "test"
    assert c100["name"] == f"fast_cifar100_{procedure}"
    for key in ("model", "optim", "procedure", "augment", "compute"):   # the same recipe
        assert c100[key] == c10[key], key


def test_reproduction_plan():
    from virolbi.reproduce.plan import load_plan, procedure_key

    plan = load_plan(ROOT / "configs/reproduce/tinyimagenet100.yaml")
    assert plan.dataset["name"] == "tinyimagenet100" and plan.dataset["split"] == "val"
    assert plan.test_time_sparsity == 0.3
    assert set(plan.tables) == {"table1", "table2", "table3", "table5"}
    keys = {name: procedure_key(spec) for name, spec in plan.models.items()}
    for name, spec in plan.models.items():
        cfg = spec.resolved()
        assert cfg["data"]["name"] == "tinyimagenet100" and cfg["model"]["name"] == "airbench64"
        assert cfg["compute"]["precision"] == "bfloat16"
    assert sorted(k for k in keys.values() if k.startswith("fixed")) == \
        ["fixed", "fixed0.3", "fixed0.3", "fixed0.4", "fixed0.5", "fixed0.7"]  # "fixed" is 0.6
    assert sorted(keys.values()).count("vanilla") == 2
    sweep = plan.tables["table5"].models
    levels = sorted(plan.models[m].resolved()["procedure"]["sparsity"] for m in sweep
                    if keys[m].startswith("fixed"))
    assert levels[0] == 0.3 and levels[-1] == 0.7 and {0.4, 0.5, 0.6} <= set(levels)


def test_clean_table_smooths_at_each_models_own_level():
    """Table 5 shows each Fix model at its training level, also the 0.6 one (procedure key
    "fixed") in a plan whose test-time level is 0.3; the other tables smooth at the plan's 0.3."""
    from virolbi.reproduce.plan import load_plan
    from virolbi.reproduce.runner import _preprocess_for

    plan = load_plan(ROOT / "configs/reproduce/tinyimagenet100.yaml")
    shared: dict = {}
    for name, level in (("fast_tinyimagenet100_fixed0.6_s0", 0.6),
                        ("fast_tinyimagenet100_fixed0.4_s0", 0.4),
                        ("fast_tinyimagenet100_fixed_s0", 0.3)):
        assert _preprocess_for(plan, name, "clean", shared).inner.sparsity == level
        assert _preprocess_for(plan, name, "noise", shared).inner.sparsity == 0.3
    assert _preprocess_for(plan, "fast_tinyimagenet100_vanilla_s0", "clean", shared) is None
