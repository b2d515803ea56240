"""PNI (virolbi.models.pni): trainable weight noise on every trainable convolution, on at test
time and off with a flag; EOT in the evaluation of such a random model."""

from __future__ import annotations

import pytest
import torch

from virolbi.errors import InputError
from virolbi.models import create_model, set_weight_noise
from virolbi.models.pni import add_weight_noise, default_eot_samples, weight_noise_layers
from virolbi.train.optim import build_optimizer


def pni_airbench(**noise):
    torch.manual_seed(0)
    return create_model("airbench", 10, width=0.25, weight_noise=noise or True)


def test_noise_is_on_at_test_time_and_off_with_the_flag():
    net = pni_airbench().eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        a, b = net(x), net(x)
    assert not torch.allclose(a, b)                    # random in eval mode too
    assert set_weight_noise(net, False) == 6           # 3 groups x 2 convolutions
    with torch.no_grad():
        c, d = net(x), net(x)
    assert torch.equal(c, d)
    plain = create_model("airbench", 10, width=0.25).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.endswith("alpha")})
    with torch.no_grad():
        torch.testing.assert_close(plain(x), c)          # noise off = the deterministic network


def test_noise_has_the_layer_std_times_alpha():
    conv = torch.nn.Conv2d(8, 16, 3)
    add_weight_noise(conv, alpha=0.5)
    torch.manual_seed(0)
    draws = torch.stack([conv.noisy_weight().detach() - conv.weight.detach() for _ in range(200)])
    expected = 0.5 * float(conv.weight.detach().std())
    assert float(draws.std()) == pytest.approx(expected, rel=0.02)
    assert float(draws.mean()) == pytest.approx(0.0, abs=expected * 0.01)


def test_alpha_trains_and_has_no_weight_decay_and_frozen_convs_stay_plain():
    net = pni_airbench(alpha=0.25, channelwise=True)
    layers = weight_noise_layers(net)
    assert len(layers) == 6 and all(m.alpha.shape == (m.out_channels, 1, 1, 1) for m in layers)
    assert not isinstance(net.backbone.whiten, type(layers[0]))      # the frozen whitening conv
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    assert all(m.alpha.grad is not None and m.alpha.grad.abs().sum() > 0 for m in layers)
    opt = build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False,
                           "weight_decay": 1e-3, "norm_bias_lr_scale": 64.0}, net)
    alpha_ids = {id(m.alpha) for m in layers}
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert not ids & alpha_ids or (ids <= alpha_ids and group["weight_decay"] == 0)
    assert "backbone.layers.0.conv1.alpha" in net.state_dict()


def test_default_eot_and_bad_options():
    net = pni_airbench()
    assert default_eot_samples(net) == 8
    set_weight_noise(net, False)
    assert default_eot_samples(net) == 1
    assert default_eot_samples(create_model("airbench", 10, width=0.25)) == 1
    with pytest.raises(InputError, match="weight_noise"):
        create_model("airbench", 10, weight_noise={"sigma": 1})


def test_evaluation_records_eot_and_attacks_the_random_model():
    """PGD with EOT through a PNI model: the record says so, and the attack still works (the
    averaged gradient of a random model drives its accuracy down)."""
    from virolbi.evaluate import evaluate
    from virolbi.evaluate.suites import PerturbationSpec

    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    net = pni_airbench().eval()
    with torch.no_grad():
        y = net(x).argmax(1)
    spec = PerturbationSpec("pgd", "8/255", 8 / 255, "adversarial", ("classifier",))
    res = evaluate(net, (x, y), suite=[spec], sanity=False, progress=False, eot_samples=3)
    assert res.meta["attacks"]["pgd"]["eot_samples"] == 3
    assert res.accuracy("pgd", "8/255", threat_model="classifier") < 0.5


def test_eot_through_a_deterministic_preprocess_smooths_each_input_once():
    """EOT redraws the random model, not the (deterministic) smoother: a PGD step with 4 EOT samples
    calls the preprocess once per new input, and the attack equals the one without the memo."""
    from virolbi.attacks import PGD, attack_with_threat_model

    class Counting(torch.nn.Module):
        deterministic = True

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x.clamp(0.1, 0.9)

    torch.manual_seed(0)
    net = pni_airbench().eval()
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4)
    attack = PGD(None, eps=8 / 255, steps=3, generator=torch.Generator().manual_seed(0))
    pre = Counting()
    torch.manual_seed(1)
    memo = attack_with_threat_model(net, pre, x, y, attack, "adaptive_bpda_identity", eot_samples=4)
    assert pre.calls == 4                      # 3 steps + the final loss, not 4 x 4
    pre.deterministic = False                  # a random preprocess is redrawn every sample
    attack = PGD(None, eps=8 / 255, steps=3, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    plain = attack_with_threat_model(net, pre, x, y, attack, "adaptive_bpda_identity", eot_samples=4)
    assert pre.calls == 4 + 16
    torch.testing.assert_close(memo, plain)
