"""The harness with the real ViRoLBI smoother as test-time preprocessing: every threat model.

(The smoother's compiled loop starts no thread pool of its own, so it no longer slows torch's
kernels down afterwards: ``tests/test_smoother_fused.py`` checks that no numba threading layer is
launched.)
"""

from __future__ import annotations

import pytest
import torch

from virolbi.evaluate import ADVERSARIAL_THREAT_MODELS, PerturbationSpec, evaluate


def test_real_smoother_all_threat_models(cifar_one_per_class, template_classifier):
    from virolbi.smoother import ViRoLBI

    x, y, _ = cifar_one_per_class
    x = x[:, :, :12, :12].contiguous()  # a 12x12 crop keeps the smoother's runs short
    specs = [PerturbationSpec("clean", "-", None, "clean"),
             PerturbationSpec("fgsm", "8/255", 8 / 255, "adversarial", ADVERSARIAL_THREAT_MODELS)]
    model, pre = template_classifier(x), ViRoLBI(0.6)
    res = evaluate(model, (x[:2], y[:2]), suite=specs, preprocess=pre, progress=False,
                   sanity=False)
    assert ({r.threat_model for r in res.select(perturbation="fgsm")}
            == set(ADVERSARIAL_THREAT_MODELS) - {"adaptive_exact"})   # the smoother: BPDA only
    assert {r.preprocessing for r in res.rows} == {"none", "ViRoLBI(sparsity=0.6)"}
    assert len(res.meta["skipped"]) == 1 and "adaptive_exact" in res.meta["skipped"][0]
    with torch.no_grad():  # the row with preprocessing is f(P(x)), computed here by hand
        ref = (model(pre(x[:2])).argmax(1) == y[:2]).float().mean().item()
    assert res.accuracy("clean", preprocessing="ViRoLBI(sparsity=0.6)") == pytest.approx(ref)
    assert res.accuracy("clean") == 1.0
