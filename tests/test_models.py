"""Models: shapes, parameter counts against closed forms, normalisation arithmetic, attention against
``nn.MultiheadAttention``, position-embedding resampling, safe checkpoint loading, registry errors."""

from __future__ import annotations

import pickle
import sys
import types

import pytest
import torch
from torch import nn

from virolbi.errors import InputError
from virolbi.models import (
    DATASET_STATS,
    Normalize,
    NormalizedModel,
    ResNet,
    VisionTransformer,
    create_model,
    list_models,
    load_pretrained,
    normalize,
    resample_pos_embed,
    resnet18,
    resnet50,
    vit_tiny,
)
from virolbi.models.vit import Attention


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resnet18_cifar_count(channels: tuple[int, int, int, int], num_classes: int) -> int:
    """Independent closed form: parameters of a BasicBlock (2,2,2,2) ResNet with a 3x3 stem."""
    c0 = channels[0]
    total = 3 * 9 * c0 + 2 * c0  # stem conv + BN
    cin = c0
    for i, c in enumerate(channels):
        block1 = 9 * cin * c + 2 * c + 9 * c * c + 2 * c
        if i > 0 or cin != c:
            block1 += cin * c + 2 * c  # 1x1 projection + BN
        total += block1 + 9 * c * c + 2 * c + 9 * c * c + 2 * c
        cin = c
    return total + channels[-1] * num_classes + num_classes


# ----------------------------------------------------------------------------- normalisation

def test_normalize_matches_manual_arithmetic(rng):
    x = torch.from_numpy(rng.random((2, 3, 4, 5))).float()
    mean, std = DATASET_STATS["cifar10"]
    expected = torch.empty_like(x)
    for c in range(3):
        expected[:, c] = (x[:, c] - mean[c]) / std[c]
    torch.testing.assert_close(normalize(x, mean, std), expected)
    torch.testing.assert_close(Normalize(mean, std)(x), expected)


def test_dataset_stats_values():
    assert DATASET_STATS["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert DATASET_STATS["cifar100"] == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    assert DATASET_STATS["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_normalize_follows_dtype_and_is_not_in_state_dict():
    norm = Normalize(*DATASET_STATS["imagenet"])
    x = torch.rand(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    y = norm(x)
    assert y.dtype == torch.float64
    assert norm.state_dict() == {}
    assert torch.autograd.gradcheck(norm, (x,))
    # d y_c / d x_c = 1 / std_c
    y.sum().backward()
    torch.testing.assert_close(x.grad[0, :, 0, 0],
                               1.0 / torch.tensor(DATASET_STATS["imagenet"][1], dtype=torch.float64))


def test_normalize_errors():
    norm = Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    with pytest.raises(InputError, match=r"must have 3 channels, got shape \(1, 1, 4, 4\)"):
        norm(torch.rand(1, 1, 4, 4))
    with pytest.raises(InputError, match=r"float tensor \(B, C, H, W\), got \(3, 4, 4\)"):
        norm(torch.rand(3, 4, 4))
    with pytest.raises(InputError, match="must be float in \\[0, 1\\], got dtype torch.uint8"):
        norm(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(InputError, match="std must be > 0"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(InputError, match="same length, got 2 and 3"):
        Normalize((0.5, 0.5), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="unknown normalisation statistics 'mnist'"):
        create_model("resnet18", width=0.125, normalize="mnist")
    with pytest.raises(InputError, match="must be a dataset name or a \\(mean, std\\) pair"):
        create_model("resnet18", width=0.125, normalize=(0.5, 0.5, 0.5))
    with pytest.raises(InputError, match="mean must be a sequence of numbers \\(one per channel\\)"):
        Normalize("abc", (1.0,))
    with pytest.raises(InputError, match="std must not be empty"):
        Normalize((0.5,), ())
    with pytest.raises(InputError, match="mean must be finite"):
        Normalize((float("nan"),), (1.0,))
    with pytest.raises(InputError, match="same length, got 3 and 2"):
        normalize(torch.rand(1, 3, 2, 2), (0.5, 0.5, 0.5), (1.0, 1.0))


# ----------------------------------------------------------------------------- ResNets

def test_resnet18_cifar_shapes_and_stem(device):
    net = resnet18(10, width=0.125).to(device).eval()
    x = torch.rand(3, 3, 32, 32, device=device)
    assert net(x).shape == (3, 10)
    # CIFAR stem: 3x3 conv, stride 1, no max-pool -> the last stage sees 32/8 = 4x4 maps
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert net.forward_features(x).shape == (3, 64, 4, 4)
    imagenet = resnet18(10, width=0.125, stem="imagenet").to(device).eval()
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert imagenet.forward_features(x).shape == (3, 64, 1, 1)


def test_resnet_width_scales_channels():
    net = resnet18(10, width=0.5)
    assert net.conv1.out_channels == 32 and net.fc.in_features == 256
    assert n_params(net) == resnet18_cifar_count((32, 64, 128, 256), 10)
    tiny = resnet18(3, width=0.001)  # every channel count clamps to 1
    assert {m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)} == {1}
    assert tiny(torch.rand(2, 3, 8, 8)).shape == (2, 3)


def test_resnet50_small_width_shape():
    net = resnet50(7, width=0.0625, stem="cifar").eval()
    assert net.fc.in_features == 32 * 4
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_parameter_counts_of_full_models():
    with torch.device("meta"):
        r18 = create_model("resnet18", 10, normalize=False)
        r50 = create_model("resnet50", 1000, normalize=False)
        vit = create_model("vit_tiny", 1000, normalize=False)
    assert n_params(r18) == 11_173_962 == resnet18_cifar_count((64, 128, 256, 512), 10)
    assert n_params(r50) == 25_557_032  # torchvision resnet50
    assert n_params(vit) == 5_717_416  # timm vit_tiny_patch16_224
    assert vit.pos_embed.shape == (1, 197, 192) and len(vit.blocks) == 12


def test_resnet_errors():
    with pytest.raises(InputError, match="stem must be one of cifar, imagenet, got 'tiny'"):
        resnet18(stem="tiny")
    with pytest.raises(InputError, match="width must be a finite number > 0, got 0"):
        resnet18(width=0)
    with pytest.raises(InputError, match="num_classes must be a positive integer, got 0"):
        resnet50(0)
    with pytest.raises(InputError, match=r"layers must be 4 positive block counts"):
        ResNet(type(resnet18().layer1[0]), (2, 2, 2))


# ----------------------------------------------------------------------------- ViT

def test_vit_tiny_small_shapes(device):
    vit = vit_tiny(10, image_size=32, patch_size=4, depth=2).to(device).eval()
    assert vit.pos_embed.shape == (1, 1 + 8 * 8, 192)
    assert vit(torch.rand(2, 3, 32, 32, device=device)).shape == (2, 10)
    # another input size: the position embedding is resampled on the fly
    assert vit(torch.rand(2, 3, 48, 40, device=device)).shape == (2, 10)


def test_attention_matches_multihead_attention_reference():
    torch.manual_seed(0)
    attn = Attention(12, num_heads=3).double()
    ref = nn.MultiheadAttention(12, 3, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.in_proj_bias.copy_(attn.qkv.bias)
        ref.out_proj.weight.copy_(attn.proj.weight)
        ref.out_proj.bias.copy_(attn.proj.bias)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    torch.testing.assert_close(attn(x), ref(x, x, x, need_weights=False)[0])


def test_resample_pos_embed_properties():
    pe = torch.randn(1, 1 + 4 * 4, 6)
    assert resample_pos_embed(pe, (4, 4), (4, 4)) is pe
    const = torch.cat([torch.randn(1, 1, 6), torch.full((1, 16, 6), 0.7)], dim=1)
    up = resample_pos_embed(const, (6, 5), (4, 4))
    assert up.shape == (1, 1 + 30, 6)
    torch.testing.assert_close(up[:, 0], const[:, 0])  # class token untouched
    torch.testing.assert_close(up[:, 1:], torch.full((1, 30, 6), 0.7))  # constants stay constant
    with pytest.raises(InputError, match="has 16 grid tokens, expected 3x3"):
        resample_pos_embed(pe, (4, 4), (3, 3))


def test_vit_errors():
    vit = vit_tiny(10, image_size=32, patch_size=8, depth=1)
    with pytest.raises(InputError, match="image size 30x32 must be a multiple of the patch size 8x8"):
        vit(torch.rand(1, 3, 30, 32))
    with pytest.raises(InputError, match=r"embed_dim \(10\) must be divisible by num_heads \(3\)"):
        VisionTransformer(32, 8, embed_dim=10, depth=1)
    with pytest.raises(InputError, match=r"image_size \(30, 30\) must be a multiple of patch_size"):
        VisionTransformer(30, 8, depth=1)
    with pytest.raises(InputError, match="depth must be a positive integer, got 0"):
        vit_tiny(depth=0)


# ----------------------------------------------------------------------------- registry

def test_list_and_create_models():
    assert list_models() == ["airbench", "airbench64", "odenet_small", "resnet18", "resnet50", "vit_tiny"]
    model = create_model("resnet18", 10, width=0.125)
    assert isinstance(model, NormalizedModel) and isinstance(model.backbone, ResNet)
    torch.testing.assert_close(model.normalize.mean, torch.tensor(DATASET_STATS["cifar10"][0]))
    assert create_model("resnet18", width=0.125, stem="imagenet").normalize.mean[0].item() == \
        pytest.approx(0.485)
    c100 = create_model("resnet18", 100, width=0.125, normalize="cifar100")
    torch.testing.assert_close(c100.normalize.std, torch.tensor(DATASET_STATS["cifar100"][1]))
    custom = create_model("resnet18", 3, width=0.125, normalize=((0.5,) * 3, (0.25,) * 3))
    assert custom.normalize.std.tolist() == [0.25] * 3
    assert isinstance(create_model("resnet18", width=0.125, normalize=False), ResNet)
    vit = create_model("vit_tiny", 5, image_size=32, patch_size=8, depth=1)
    torch.testing.assert_close(vit.normalize.mean, torch.tensor(DATASET_STATS["imagenet"][0]))
    assert vit.backbone.grid_size == (4, 4)


def test_normalized_model_equals_backbone_on_normalized_input(cifar_batch):
    model = create_model("resnet18", 10, width=0.125).eval()
    x = cifar_batch[:4]
    mean, std = DATASET_STATS["cifar10"]
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), model.backbone(manual))


def test_create_model_errors(monkeypatch):
    with pytest.raises(InputError, match="unknown model 'resnet7'; available: airbench, airbench64, odenet_small, resnet18, resnet50"):
        create_model("resnet7")
    with pytest.raises(InputError, match="a prefix must be 'torchvision:<name>' or 'timm:<name>'"):
        create_model("keras:resnet50")
    with pytest.raises(InputError, match="model 'vit_tiny' has no width multiplier"):
        create_model("vit_tiny", width=0.5)
    with pytest.raises(InputError, match="'resnet18' got unknown option\\(s\\) depth"):
        create_model("resnet18", depth=3)
    with pytest.raises(InputError, match="num_classes must be a positive integer, got 2.5"):
        create_model("resnet18", 2.5)
    with pytest.raises(InputError, match="width must be a finite number > 0"):
        create_model("resnet18", width=-1)
    with pytest.raises(InputError, match="model name must be a string, got 18"):
        create_model(18)
    with pytest.raises(InputError, match="model 'timm:resnet18' has no width multiplier"):
        create_model("timm:resnet18", width=0.5)
    # the optional extras: a clear message, not an ImportError (None in sys.modules blocks imports)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(InputError, match=r"needs torchvision, .*pip install virolbi\[vision\]"):
        create_model("torchvision:resnet18")
    with pytest.raises(InputError, match=r"'timm:vit_small_patch16_224' needs timm, .*\[vision\]"):
        create_model("timm:vit_small_patch16_224")


def test_external_model_plumbing_with_fake_timm(monkeypatch):
    calls = {}

    def fake_create(name, pretrained, num_classes, **kw):
        calls.update(name=name, pretrained=pretrained, num_classes=num_classes, **kw)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))
        net.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
        return net

    fake = types.SimpleNamespace(is_model=lambda n: n == "tiny", create_model=fake_create)
    monkeypatch.setitem(sys.modules, "timm", fake)
    model = create_model("timm:tiny", 4, image_size=4)
    assert calls == {"name": "tiny", "pretrained": False, "num_classes": 4, "img_size": 4}
    assert model.normalize.mean.tolist() == [0.5] * 3
    assert model(torch.rand(2, 3, 4, 4)).shape == (2, 4)
    with pytest.raises(InputError, match="unknown timm model 'huge'"):
        create_model("timm:huge")


def test_external_model_plumbing_with_fake_torchvision(monkeypatch):
    calls = {}

    def get_model(name, weights, num_classes, **kw):
        calls.update(name=name, weights=weights, num_classes=num_classes, **kw)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))

    fake_models = types.SimpleNamespace(list_models=lambda: ["vit_b_16"], get_model=get_model)
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=fake_models))
    monkeypatch.setitem(sys.modules, "torchvision.models", fake_models)
    model = create_model("torchvision:vit_b_16", 3, image_size=4)
    assert calls == {"name": "vit_b_16", "weights": None, "num_classes": 3, "image_size": 4}
    torch.testing.assert_close(model.normalize.std, torch.tensor(DATASET_STATS["imagenet"][1]))
    with pytest.raises(InputError, match="unknown torchvision model 'resnet999'"):
        create_model("torchvision:resnet999")


def test_register_custom_model_and_errors():
    from virolbi.models import registry

    @registry.register("test_linear", default_stats="cifar100")
    def test_linear(num_classes, *, image_size=8):
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, num_classes))

    try:
        model = create_model("test_linear", 4, image_size=2)
        assert "test_linear" in list_models()
        assert model(torch.rand(5, 3, 2, 2)).shape == (5, 4)
        torch.testing.assert_close(model.normalize.mean, torch.tensor(DATASET_STATS["cifar100"][0]))
        with pytest.raises(InputError, match="model 'test_linear' is already registered"):
            registry.register("test_linear")(test_linear)
        with pytest.raises(InputError, match="model name must be a non-empty string without ':'"):
            registry.register("a:b")(test_linear)
    finally:
        registry._REGISTRY.pop("test_linear", None)
        registry._DEFAULT_STATS.pop("test_linear", None)
    assert "test_linear" not in list_models()


# ----------------------------------------------------------------------------- pretrained

@pytest.fixture
def small_resnet():
    torch.manual_seed(0)
    return create_model("resnet18", 10, width=0.125).eval()


def test_pretrained_round_trip(tmp_path, small_resnet):
    path = tmp_path / "weights.pt"
    small_resnet.train()
    small_resnet(torch.rand(4, 3, 16, 16))  # move the BatchNorm running statistics
    small_resnet.eval()
    torch.save(small_resnet.state_dict(), path)
    torch.manual_seed(1)
    other = create_model("resnet18", 10, width=0.125).eval()
    x = torch.rand(2, 3, 32, 32)
    assert not torch.allclose(other(x), small_resnet(x))
    result = load_pretrained(other, path)
    assert result.missing == result.unexpected == result.dropped == []
    torch.testing.assert_close(other(x), small_resnet(x), rtol=0, atol=0)
    # through create_model, from a training checkpoint dict
    torch.save({"model": small_resnet.state_dict(), "epoch": 3, "lr": 0.1}, tmp_path / "ckpt.pt")
    again = create_model("resnet18", 10, width=0.125, pretrained=tmp_path / "ckpt.pt").eval()
    torch.testing.assert_close(again(x), small_resnet(x), rtol=0, atol=0)


def test_pretrained_ddp_prefix_and_bare_backbone(tmp_path, small_resnet):
    x = torch.rand(2, 3, 32, 32)
    ddp = {"module." + k: v for k, v in small_resnet.state_dict().items()}
    torch.save({"state_dict": ddp}, tmp_path / "ddp.pt")
    torch.manual_seed(2)
    model = create_model("resnet18", 10, width=0.125).eval()
    load_pretrained(model, tmp_path / "ddp.pt")
    torch.testing.assert_close(model(x), small_resnet(x), rtol=0, atol=0)
    # a bare backbone's state dict (torchvision layout) into a normalised model, and back
    torch.save(small_resnet.backbone.state_dict(), tmp_path / "bare.pt")
    torch.manual_seed(3)
    model = create_model("resnet18", 10, width=0.125).eval()
    load_pretrained(model, tmp_path / "bare.pt")
    torch.testing.assert_close(model(x), small_resnet(x), rtol=0, atol=0)
    bare = create_model("resnet18", 10, width=0.125, normalize=False,
                        pretrained=tmp_path / "ddp.pt").eval()
    torch.testing.assert_close(bare(small_resnet.normalize(x)), small_resnet(x), rtol=0, atol=0)


def test_pretrained_drop_head_for_fine_tuning(tmp_path, small_resnet):
    path = tmp_path / "weights.pt"
    torch.save(small_resnet.state_dict(), path)
    with pytest.raises(InputError, match=r"2 tensor\(s\) have different shapes: backbone.fc.weight "
                                         r"\(file \(10, 64\) vs model \(7, 64\)\).*drop_head=True"):
        create_model("resnet18", 7, width=0.125, pretrained=path)
    model = create_model("resnet18", 7, width=0.125, pretrained=path, drop_head=True).eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.backbone.forward_features(model.normalize(x)),
                               small_resnet.backbone.forward_features(small_resnet.normalize(x)))
    assert model(x).shape == (2, 7)
    fresh = create_model("resnet18", 7, width=0.125)
    assert load_pretrained(fresh, path, drop_head=True).dropped == ["backbone.fc.weight",
                                                                     "backbone.fc.bias"]
    # same class count: drop_head keeps the head
    same = create_model("resnet18", 10, width=0.125).eval()
    assert load_pretrained(same, path, drop_head=True).dropped == []
    torch.testing.assert_close(same(x), small_resnet(x), rtol=0, atol=0)


def test_pretrained_vit_position_embedding_resampled(tmp_path):
    torch.manual_seed(0)
    src = vit_tiny(10, image_size=32, patch_size=8, depth=1)
    torch.save(src.state_dict(), tmp_path / "vit.pt")
    dst = vit_tiny(10, image_size=48, patch_size=8, depth=1)
    assert load_pretrained(dst, tmp_path / "vit.pt").resampled == ["pos_embed"]
    torch.testing.assert_close(dst.pos_embed, resample_pos_embed(src.pos_embed, (6, 6), (4, 4)))
    x = torch.rand(1, 3, 48, 48)
    torch.testing.assert_close(dst(x), src(x))  # src resamples on the fly, the same way
    # fine-tuning a ViT to another class count drops its head
    five = vit_tiny(5, image_size=32, patch_size=8, depth=1)
    assert load_pretrained(five, tmp_path / "vit.pt", drop_head=True).dropped == ["head.weight",
                                                                                  "head.bias"]
    torch.testing.assert_close(five.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


def test_pretrained_strictness(tmp_path, small_resnet):
    state = small_resnet.state_dict()
    partial = {k: v for k, v in state.items() if "layer4" not in k}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(InputError, match=r"lacks \d+ of the model's tensors: backbone.layer4"):
        load_pretrained(create_model("resnet18", 10, width=0.125), tmp_path / "partial.pt")
    result = load_pretrained(create_model("resnet18", 10, width=0.125), tmp_path / "partial.pt",
                             strict=False)
    assert result.missing and all("layer4" in k for k in result.missing)
    torch.save({**state, "backbone.extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(InputError, match=r"has 1 tensor\(s\) the model lacks: backbone.extra.weight"):
        load_pretrained(create_model("resnet18", 10, width=0.125), tmp_path / "extra.pt")
    assert load_pretrained(create_model("resnet18", 10, width=0.125), tmp_path / "extra.pt",
                           strict=False).unexpected == ["backbone.extra.weight"]
    with pytest.raises(InputError, match=r"does not fit the model: .*backbone.conv1.weight"):
        load_pretrained(create_model("resnet18", 10, width=0.25), tmp_path / "extra.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pretrained_bad_files(tmp_path, capsys):
    model = create_model("resnet18", 10, width=0.125)
    with pytest.raises(InputError, match="pretrained weights file not found: .*nothing.pt"):
        load_pretrained(model, tmp_path / "nothing.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(InputError, match="could not read .*text.pt as a PyTorch checkpoint"):
        load_pretrained(model, tmp_path / "text.pt")
    with open(tmp_path / "evil.pt", "wb") as f:  # arbitrary objects are refused, never run
        pickle.dump({"x": _Evil()}, f, protocol=2)
    with pytest.raises(InputError, match="could not read .*evil.pt .*save model.state_dict\\(\\)"):
        load_pretrained(model, tmp_path / "evil.pt")
    assert "unpickled!" not in capsys.readouterr().out
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(InputError, match="list.pt is not a checkpoint: expected a state dict"):
        load_pretrained(model, tmp_path / "list.pt")
    torch.save({"epoch": 3, "note": "hi"}, tmp_path / "meta.pt")
    with pytest.raises(InputError, match="not a checkpoint: entries epoch, note are not named tensors"):
        load_pretrained(model, tmp_path / "meta.pt")


# ----------------------------------------------------------------------------- gradients, learning

@pytest.mark.parametrize("name,kw", [("resnet18", {"width": 0.125}),
                                     ("vit_tiny", {"image_size": 32, "patch_size": 8, "depth": 1})])
def test_gradients_flow_to_the_input(name, kw, cifar_batch):
    model = create_model(name, 10, **kw).eval()
    x = cifar_batch[:2].clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
    loss.backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_small_resnet_fits_real_images(cifar_batch, cifar_small):
    torch.manual_seed(0)
    model = create_model("resnet18", 10, width=0.125)
    y = torch.from_numpy(cifar_small[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(cifar_batch), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_unreadable_checkpoints_get_one_line_without_unsafe_advice(tmp_path):
    """torch's refusal says "re-run with weights_only=False"; we say what is wrong, in one line."""
    from virolbi.io import load_torch_file

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": _Evil()}, f, protocol=2)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(3)}, good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    for name, why in [("evil.pt", "holds Python objects"), ("cut.pt", "truncated")]:
        with pytest.raises(InputError) as err:
            load_torch_file(tmp_path / name)
        msg = str(err.value)
        assert why in msg and name in msg and "\n" not in msg
        assert "weights_only" not in msg and "trust" not in msg


def test_the_package_requires_a_torch_whose_weights_only_loading_is_safe():
    """Checkpoints are read with ``torch.load(weights_only=True)``, which torch < 2.6 lets a crafted
    file bypass (CVE-2025-32434): the declared requirement must exclude those versions."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    torch_reqs = [r for r in project["project"]["dependencies"] if re.match(r"torch\b", r)]
    assert len(torch_reqs) == 1, torch_reqs
    floor = re.fullmatch(r"torch\s*>=\s*(\d+)\.(\d+)(?:\.\d+)?", torch_reqs[0].strip())
    assert floor is not None, torch_reqs[0]
    assert (int(floor.group(1)), int(floor.group(2))) >= (2, 6)
