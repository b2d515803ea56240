"""The fast CPU recipe: the airbench network, its whitening, schedule, augmentation, lookahead,
micro-batching and precision options of the trainer (real CIFAR-10 JPEG images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virolbi.data.dataset import ImageDataset
from virolbi.errors import InputError
from virolbi.models import DATASET_STATS, airbench, create_model, normalize
from virolbi.train import load_config, train
from virolbi.train.augment import alternating_flips, apply_crop_flip
from virolbi.train.config import resolve_config
from virolbi.train.model_hooks import init_from_data
from virolbi.train.optim import Lookahead, build_optimizer
from virolbi.train.schedule import lr_factor

ROOT = Path(__file__).resolve().parents[1]
FAST = ROOT / "configs" / "fast" / "cifar10_vanilla.yaml"


def _conv_params(cin: int, cout: int) -> int:
    return 9 * cin * cout


def test_parameter_count_and_output_shape():
    # whitening 24x3x2x2 + 24 bias; per group two 3x3 convs, two BatchNorms (scale + shift);
    # bias-free head. Counted by hand from the architecture, not from the module.
    widths, cin, expected = (64, 256, 256), 24, 24 * 3 * 4 + 24
    for w in widths:
        expected += _conv_params(cin, w) + _conv_params(w, w) + 4 * w
        cin = w
    expected += 256 * 10
    net = create_model("airbench", 10)
    assert sum(p.numel() for p in net.parameters()) == expected == 1_972_792
    assert net(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == expected - 24 * 3 * 4 - 2 * sum(widths)   # frozen whitening, BN scales
    half = airbench(10, width=0.5)
    assert [g.conv1.out_channels for g in half.layers] == [32, 128, 128]


@pytest.mark.parametrize("whiten_eps", [None, 0.1])
def test_whitening_makes_patch_covariance_identity(cifar_small, whiten_eps):
    """Output covariance lam / (lam + eps) per eigen-direction: identity for the strong directions
    at the default eps; a larger eps (adversarial training) keeps the weak ones small."""
    x = torch.from_numpy(cifar_small[0]).permute(0, 3, 1, 2).float() / 255
    xn = normalize(x, *DATASET_STATS["cifar10"])
    net = create_model("airbench", 10, **({} if whiten_eps is None else {"whiten_eps": whiten_eps}))
    assert init_from_data(net, x) == 1
    w = net.backbone.whiten
    assert w.eps == (5e-4 if whiten_eps is None else whiten_eps)
    out = F.conv2d(xn.double(), w.weight.double())                 # (N, 24, 31, 31), bias 0
    feats = out.permute(0, 2, 3, 1).reshape(-1, 24)
    cov = feats.T @ feats / feats.shape[0]
    # independent reference: eigenvalues of the raw 2x2x3 patch second moment
    p = xn.double().unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    lam = torch.linalg.eigvalsh(p.T @ p / p.shape[0]).flip(0)
    expected = torch.diag(torch.cat([lam / (lam + w.eps)] * 2))
    expected[:12, 12:] = -torch.diag(lam / (lam + w.eps))
    expected[12:, :12] = -torch.diag(lam / (lam + w.eps))
    assert torch.allclose(cov, expected, atol=1e-4)
    if whiten_eps is None:
        assert torch.allclose(cov[:6, :6], torch.eye(6, dtype=torch.float64), atol=0.05)
    else:
        assert float(cov[11, 11]) < 0.01                     # the weakest direction stays small


def test_whitening_bias_trains_only_in_first_epochs():
    net = airbench(10, width=0.25)
    net.whiten.on_epoch_start(2, 10)
    assert net.whiten.bias.requires_grad
    net.whiten.on_epoch_start(3, 10)
    assert not net.whiten.bias.requires_grad
    with pytest.raises(InputError, match="PatchWhitening"):
        net.whiten.fit_to_data(torch.rand(2, 1, 8, 8))


def _airbench_lr(step: int, total: int) -> float:
    """airbench94's get_lr, transcribed (the reference)."""
    warmup = int(total * 0.23)
    if step < warmup:
        frac = step / warmup
        return 0.2 * (1 - frac) + 1.0 * frac
    frac = (step - warmup) / (total - warmup)
    return 1.0 * (1 - frac) + 0.07 * frac


def test_linear_schedule_equals_airbench():
    o = load_config(FAST)["optim"]
    spe = 39                                   # 40 000 images, batch 1024, last batch dropped
    f = lr_factor(o, spe)
    total = o["epochs"] * spe
    got = np.array([f(s) for s in range(total + 1)])
    ref = np.array([_airbench_lr(s, total) for s in range(total + 1)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert got[0] == pytest.approx(0.2) and got.max() == pytest.approx(1.0)


def test_reflect_translation_and_alternating_flip_match_reference(rng):
    x = torch.from_numpy(rng.random((5, 3, 8, 8)).astype(np.float32))
    dy, dx = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([4, 0, 2, 1, 3])
    flips = torch.tensor([True, False, True, False, False])
    out = apply_crop_flip(x, dy, dx, flips, padding=2, mode="reflect")
    for i in range(5):
        padded = np.pad(x[i].numpy(), ((0, 0), (2, 2), (2, 2)), mode="reflect")
        ref = padded[:, int(dy[i]):int(dy[i]) + 8, int(dx[i]):int(dx[i]) + 8]
        ref = ref[:, :, ::-1] if flips[i] else ref
        np.testing.assert_array_equal(out[i].numpy(), ref)
    base = torch.rand(1000, generator=torch.Generator().manual_seed(0)) < 0.5
    e0, e1, e2 = (alternating_flips(base, e) for e in range(3))
    assert bool((e0 ^ e1).all()) and torch.equal(e0, e2)            # each image once per 2 epochs
    assert 400 < int(e0.sum()) < 600
    with pytest.raises(InputError, match="padding mode"):
        apply_crop_flip(x, dy, dx, flips, padding=2, mode="wrap")


def test_lookahead_against_hand_computed_sequence():
    net = torch.nn.Linear(1, 1, bias=False)
    slow, fast_values = 0.0, [1.0, 2.0, 3.0, 4.0]
    with torch.no_grad():
        net.weight.fill_(slow)
    la = Lookahead(net, every=2, decay=0.5, power=1.0, total_steps=4)
    for k, v in enumerate(fast_values, start=1):
        with torch.no_grad():
            net.weight.fill_(v)
        la.after_step(net, k)
        if k % 2 == 0:
            a = 0.5 * (k / 4)
            slow = a * slow + (1 - a) * v
            assert net.weight.item() == pytest.approx(slow)
        else:
            assert net.weight.item() == pytest.approx(v)
    # k=2: a=0.25 -> 1.5; k=4: a=0.5 -> 2.75; after the last step the weights are the slow copy
    assert slow == pytest.approx(2.75) and net.weight.item() == pytest.approx(2.75)


def test_norm_bias_group_keeps_absolute_decay():
    net = airbench(10, width=0.25)
    o = load_config(FAST)["optim"]
    opt = build_optimizer(o, net)
    main, biases = opt.param_groups
    assert biases["lr"] == pytest.approx(64 * o["lr"])
    assert biases["lr"] * biases["weight_decay"] == pytest.approx(main["lr"] * main["weight_decay"])
    bn_biases = {id(m.bias) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {id(p) for p in biases["params"]} == bn_biases
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.85


@pytest.fixture(scope="module")
def real32(cifar_small):
    imgs, labels = cifar_small
    return ImageDataset(imgs, labels)                # 20 real 32x32 images


def _cfg(tmp_path, **over):
    cfg = load_config(FAST)
    cfg.update(output_dir=str(tmp_path / "run"), logging={"progress": False, "tensorboard": False,
                                                          "keep_checkpoints": False})
    cfg["optim"].update(epochs=2, batch_size=8)
    cfg["model"].update(width=0.125, data_init_images=20)
    cfg["eval"]["test_time_sparsity"] = None
    cfg["compute"].update(micro_batch=4)
    for key, value in over.items():
        cfg[key].update(value)
    return cfg


def test_one_recipe_step_lowers_the_loss(real32):
    from virolbi.train.trainer import _train_step
    cfg = resolve_config(_cfg(Path("/nonexistent"), optim={"lr": 0.2}))
    torch.manual_seed(0)
    net = create_model("airbench", 10, width=0.5)
    x = torch.from_numpy(real32.data).permute(0, 3, 1, 2).float() / 255
    y = torch.as_tensor(real32.targets)
    init_from_data(net, x)
    opt = build_optimizer(cfg["optim"], net)

    def loss() -> float:
        net.eval()
        with torch.no_grad():
            return F.cross_entropy(net(x), y, label_smoothing=0.2).item()
    before = loss()
    for _ in range(3):
        net.train()
        _train_step(net, opt, x, y, 1 / x.shape[0], cfg, torch.device("cpu"))
    assert loss() < before - 0.05, (before, loss())


def test_micro_batches_give_the_same_step(real32):
    from virolbi.train.trainer import _train_step
    x = torch.from_numpy(real32.data).permute(0, 3, 1, 2).float() / 255
    y = torch.as_tensor(real32.targets)
    grads = []
    for micro in (None, 4):
        cfg = resolve_config(_cfg(Path("/x"), compute={"micro_batch": micro, "channels_last": False}))
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 30 * 30, 10))
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        _train_step(net, opt, x, y, 1 / 20, cfg, torch.device("cpu"))
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_recipe_trains_resumes_bitwise_and_bf16_runs(real32, tmp_path):
    net = lambda: create_model("airbench", 10, width=0.125)  # noqa: E731
    full = train(_cfg(tmp_path / "a"), model=net, train_data=real32, val_data=real32)
    assert full.final["val_acc"] is not None

    class Stop(Exception):
        pass

    def stop(epoch, row):
        raise Stop
    with pytest.raises(Stop):
        train(_cfg(tmp_path / "b"), model=net, train_data=real32, val_data=real32, callbacks=[stop])
    resumed = train({**_cfg(tmp_path / "b"), "resume": True}, model=net, train_data=real32,
                    val_data=real32)
    for (k, v), (_, v2) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(v, v2), k
    ck = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)
    assert "lookahead" in ck
    bf = train(_cfg(tmp_path / "c", compute={"precision": "bfloat16"}), model=net,
               train_data=real32, val_data=real32)
    assert np.isfinite(bf.final["train_loss"])


@pytest.mark.parametrize("override, message", [
    ("optim.scheduler=triangle", "optim.scheduler"),
    ("optim.warmup_fraction=1.5", "warmup_fraction"),
    ("augment.flip=sometimes", "augment.flip"),
    ("augment.pad_mode=wrap", "augment.pad_mode"),
    ("compute.precision=float16", "compute.precision"),
    ("compute.micro_batch=0", "compute.micro_batch"),
    ("optim.lookahead.every=-1", "lookahead.every"),
])
def test_recipe_config_errors(override, message):
    with pytest.raises(InputError, match=message):
        load_config(FAST, [override])
