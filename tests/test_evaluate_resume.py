"""A resumable evaluation: interrupted midway and called again, it continues from the last finished
batch with exactly the numbers of an uninterrupted run; a resume file recorded for other settings,
other weights, or one that cannot be read, is not resumed."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from virolbi.evaluate import PerturbationSpec, evaluate
from virolbi.evaluate.partial import FORMAT
from virolbi.models.normalize import Normalize
from virolbi.perturb import GaussianBlur


class Interrupted(RuntimeError):
    pass


class NoisyNet(nn.Module):
    """A small random classifier whose prediction hangs on every random draw of an evaluation: a
    hash of the input (any change of the noise or of PGD's random start moves it) and noise from
    torch's global generator (as PNI's weight noise does), on top of a differentiable convolutional
    part for the attacks' gradients. ``fail_after`` forward calls, it raises (a kill)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.register_buffer("probe", torch.rand(3 * 32 * 32, generator=g))
        self.calls = 0
        self.fail_after: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise Interrupted("killed")
        smooth = self.fc(torch.relu(self.conv(self.norm(x))).mean(dim=(2, 3)))
        bucket = ((x.detach().flatten(1) @ self.probe) * 1e3).floor().remainder(10).long()
        return smooth + 3 * nn.functional.one_hot(bucket, 10) + 2 * torch.randn(x.shape[0], 10)


SPECS = (PerturbationSpec("clean", "-", None, "clean"),
         PerturbationSpec("gaussian_noise", "3", 3.0, "noise"),
         PerturbationSpec("pgd", "8/255", 8 / 255, "adversarial",
                          ("classifier", "adaptive_bpda_identity", "adaptive_exact")))


def _run(model, data, path, **kw):
    args = dict(suite=SPECS, preprocess=GaussianBlur(3, 1.0), preprocess_name="blur", batch_size=5,
                pgd_steps=3, progress=False, eps_convention="normalized", resume_file=path)
    args.update(kw)
    return evaluate(model, data, **args)


def _table(res):
    return [(r.perturbation, r.level, r.threat_model, r.preprocessing, r.correct, r.n)
            for r in res.rows]


@pytest.fixture(scope="module")
def data(cifar_batch, cifar_small):
    return cifar_batch, torch.from_numpy(cifar_small[1])          # 20 images: 4 batches of 5


@pytest.fixture(scope="module")
def reference(data):
    model = NoisyNet()
    torch.manual_seed(0)
    res = _run(model, data, None)
    return res, model.calls


def _interrupt(model, data, path, total_calls, fraction=0.6):
    torch.manual_seed(0)
    model.calls, model.fail_after = 0, int(total_calls * fraction)
    with pytest.raises(Interrupted):
        _run(model, data, path)
    model.calls, model.fail_after = 0, None


def test_an_interrupted_evaluation_resumes_with_the_numbers_of_an_uninterrupted_one(
        data, reference, tmp_path):
    ref, total_calls = reference
    assert len({r.correct for r in ref.rows}) > 1               # the numbers are not trivial
    path = tmp_path / "partial.json"
    model = NoisyNet()
    _interrupt(model, data, path, total_calls)                  # killed inside the third batch
    state = json.loads(path.read_text())
    assert state["format"] == FORMAT and state["batches_done"] == 2
    assert {tuple(c["key"][:2]) for c in state["counts"]} >= {("clean", "-"), ("pgd", "8/255")}
    assert all(c["n"] == 10 for c in state["counts"])           # two batches of 5 images
    torch.manual_seed(123)        # another global state: the file's is restored for PNI-like noise
    res = _run(model, data, path)
    assert _table(res) == _table(ref)
    assert [(c.name, c.passed) for c in res.sanity] == [(c.name, c.passed) for c in ref.sanity]
    assert res.meta["resumed_at_batch"] == 2 and "resumed_at_batch" not in ref.meta
    assert model.calls == total_calls // 2                      # the two done batches are not redone
    assert not path.exists()                                    # removed when complete
    assert res.meta["elapsed_s"] > 0


def test_a_file_for_other_settings_or_weights_is_not_resumed(data, reference, tmp_path):
    ref, total_calls = reference
    path = tmp_path / "partial.json"
    _interrupt(NoisyNet(), data, path, total_calls)
    a, b = NoisyNet(), NoisyNet()
    torch.manual_seed(0)
    fresh = _run(a, data, None, seed=1)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="not resumed.*other images, settings or weights"):
        res = _run(b, data, path, seed=1)                       # another seed: starts afresh
    assert _table(res) == _table(fresh) and "resumed_at_batch" not in res.meta
    assert not path.exists()

    _interrupt(NoisyNet(), data, path, total_calls)
    other = NoisyNet(seed=1)                                    # other weights
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="not resumed"):
        res = _run(other, data, path)
    assert other.calls == total_calls and "resumed_at_batch" not in res.meta

    _interrupt(NoisyNet(), data, path, total_calls)
    model = NoisyNet()
    with pytest.warns(UserWarning, match="not resumed"):          # another blur, the same name
        res = _run(model, data, path, preprocess=GaussianBlur(3, 2.0))
    assert model.calls == total_calls and "resumed_at_batch" not in res.meta


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"format": "other/9"}),
                                     json.dumps({"format": FORMAT})])
def test_an_unreadable_file_is_set_aside_with_a_warning(data, reference, tmp_path, content):
    ref, total_calls = reference
    path = tmp_path / "partial.json"
    path.write_text(content)
    model = NoisyNet()
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="not resumed"):
        res = _run(model, data, path)
    assert _table(res) == _table(ref) and model.calls == total_calls and not path.exists()


def test_a_fingerprint_with_a_corrupt_state_is_set_aside(data, reference, tmp_path):
    ref, total_calls = reference
    path = tmp_path / "partial.json"
    _interrupt(NoisyNet(), data, path, total_calls)
    state = json.loads(path.read_text())
    state["generators"][0][1] = "@@not base64@@"
    path.write_text(json.dumps(state))
    model = NoisyNet()
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="not resumed"):
        res = _run(model, data, path)
    assert _table(res) == _table(ref) and model.calls == total_calls

    _interrupt(NoisyNet(), data, path, total_calls)
    state = json.loads(path.read_text())
    state["batches_done"] = 9                                   # more batches than there are
    path.write_text(json.dumps(state))
    model = NoisyNet()                 # built before seeding: its layers' init draws from torch's
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="not resumed"):
        res = _run(model, data, path)
    assert _table(res) == _table(ref) and model.calls == total_calls


def test_the_resume_file_is_small_and_holds_nothing_per_image(cifar_batch, tmp_path):
    """Issue #30 item 5: a 300-image noise run kept 157 kB (every generator's 5 056-byte state in
    base64, indented). Now only the generators that drew (the 20 noise specs, not clean) are kept,
    each packed to 2 560 bytes, and nothing grows with the number of images."""
    import base64

    from virolbi.evaluate import get_suite

    specs = get_suite("noise")
    drawing = {(s.perturbation, s.level) for s in specs if s.group == "noise"}
    sizes = {}
    for n in (10, 20):
        path = tmp_path / f"partial-{n}.json"
        model = NoisyNet()
        model.fail_after = 2 * len(specs)             # the first batch (clean, noises, twice each
        with pytest.raises(Interrupted):              # with the blur) completes, the second dies
            _run(model, (cifar_batch[:n], torch.arange(n) % 10), path, suite=specs,
                 batch_size=n // 2)
        text = path.read_text()
        state = json.loads(text)
        assert state["batches_done"] == 1
        assert {tuple(k) for k, _ in state["generators"]} == drawing
        states = [s for _, s in state["generators"]] + [state["torch_rng"]]
        assert all(len(base64.b64decode(s.removeprefix("mt32:"))) == 2560 for s in states)
        assert "\n  " not in text                      # not indented
        sizes[n] = len(text)
    assert abs(sizes[20] - sizes[10]) < 200            # nothing per image (only digits differ)
    assert sizes[20] < 22 * 3500                       # 21 packed states of ~3.4 kB, plus counts
