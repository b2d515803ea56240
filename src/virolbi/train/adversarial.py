r"""Adversarial training for any model and procedure of the trainer: the defences the paper compares
against (Table 8), as options of :func:`virolbi.train.train` (config section ``adversarial``).

- **PGD adversarial training** (Madry et al. 2018): every training batch is replaced by its PGD-k
  adversarial images (L∞ ball of radius ε on [0, 1] pixels, random start, step η),

  .. math:: \min_\theta \; \mathbb{E}_{(x, y)} \max_{\|\delta\|_\infty \le \varepsilon}
            \ell\big(f_\theta(x + \delta), y\big).

- **Fast adversarial training** (Wong, Rice, Kolter 2020, "FGSM-RS"): one signed-gradient step of
  size 1.25ε from a uniform random start, :math:`\delta = \Pi_\varepsilon(u + 1.25\varepsilon\,
  \mathrm{sign}\nabla_x\ell(f(x + u), y))`, :math:`u \sim U[-\varepsilon, \varepsilon]^d`; with the
  triangular (cyclic) learning rate of the fast recipe. Its failure mode, *catastrophic
  overfitting* (PGD accuracy collapsing within a few steps while FGSM accuracy rises), is watched by
  :class:`RobustnessMonitor` on held-out training images; the weights with the best PGD accuracy
  are kept.
- **N-FGSM** (de Jorge et al. 2022), the single-step attack that avoids catastrophic overfitting at
  the same cost: a larger noise and no projection back onto the ε-ball,
  :math:`x' = \mathrm{clip}_{[0,1]}(x + u + \varepsilon\,\mathrm{sign}\nabla_x\ell(f(x + u), y))`,
  :math:`u \sim U[-2\varepsilon, 2\varepsilon]^d` (the training perturbation reaches 3ε; the
  evaluation's ε is unchanged).
- **TRADES** (Zhang et al. 2019), with self-adaptive targets for **SAT** (Huang, Zhang, Zhang
  2020; :mod:`virolbi.train.self_adaptive`): ``steps`` signed-gradient steps of size η on
  :math:`\mathrm{KL}(p(x)\,\|\,p(x'))` from :math:`x + 0.001\,\mathcal N(0, I)`, projected onto the
  ε-ball; loss :math:`\ell_{\text{nat}}(f(x), y) + \beta\,\mathrm{KL}(p(x)\,\|\,p(x'))`, where the
  natural term is the cross-entropy, or SAT's weighted soft-target loss.
- **Mixed loss** (PNI, He et al. 2019): :math:`(1 - w)\,\ell(f(x'), y) + w\,\ell(f(x), y)` with
  ``clean_weight`` w (PNI: 0.5).
- **AWP** (Wu, Xia, Wang 2020): adversarial weight perturbation on top of either attack. Per batch,
  one ascent step on the weights at the adversarial images,
  :math:`v_l = \gamma \|w_l\| \, g_l / \|g_l\|` with :math:`g_l = \nabla_{w_l}\ell(f_w(x'), y)`
  for every weight tensor of a convolution or linear layer (``ndim > 1``); the training gradient is
  taken at :math:`w + v` and applied to :math:`w`.

Training-time attacks run with the network in training mode (BatchNorm on batch statistics), as
in the papers' code, and under the training precision (bfloat16 autocast when configured); the
attack gradient is taken with respect to the images only. The loss the attack ascends is the model's
training loss without label smoothing (the cross-entropy; for CIFS its Eq. 4.3 objective); the
training loss keeps the recipe's label smoothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from virolbi.checks import check_positive, check_ratio
from virolbi.errors import InputError
from virolbi.train.model_hooks import before_training_forward, training_loss
from virolbi.train.self_adaptive import SelfAdaptiveTargets

__all__ = ["METHODS", "AdversarialTraining", "RobustnessMonitor", "catastrophic_overfitting",
           "validate_adversarial"]

#: Training-time attacks: None (clean training), FGSM from a random start, N-FGSM, PGD, TRADES.
METHODS = (None, "fgsm_rs", "nfgsm", "pgd", "trades")


def validate_adversarial(section: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``adversarial`` config section; fractions such as ``"8/255"`` become numbers."""
    a = dict(section)
    if a["method"] not in METHODS:
        raise InputError(f"adversarial.method must be null, fgsm_rs, nfgsm, pgd or trades, got "
                         f"{a['method']!r}")
    a["eps"] = check_ratio(a["eps"], "adversarial.eps")
    if a["eps"] > 1:
        raise InputError(f"adversarial.eps is on [0, 1] pixels and must be <= 1, got {a['eps']!r} "
                         "(did you mean 8/255?)")
    if a["step_size"] is not None:
        a["step_size"] = check_ratio(a["step_size"], "adversarial.step_size")
    for key in ("steps",):
        if isinstance(a[key], bool) or not isinstance(a[key], int) or a[key] < 1:
            raise InputError(f"adversarial.{key} must be an integer >= 1, got {a[key]!r}")
    w = check_positive(a["clean_weight"], "adversarial.clean_weight", strict=False)
    if w > 1:
        raise InputError(f"adversarial.clean_weight must be in [0, 1], got {a['clean_weight']!r}")
    check_positive(a["awp_gamma"], "adversarial.awp_gamma", strict=False)
    check_positive(a["trades_beta"], "adversarial.trades_beta", strict=False)
    a["self_adaptive"] = _validate_self_adaptive(a["self_adaptive"], a["method"])
    m = dict(a["monitor"])
    for key in ("images", "pgd_steps"):
        if isinstance(m[key], bool) or not isinstance(m[key], int) or m[key] < 0:
            raise InputError(f"adversarial.monitor.{key} must be an integer >= 0, got {m[key]!r}")
    m["drop"] = check_positive(m["drop"], "adversarial.monitor.drop")
    a["monitor"] = m
    return a


def _validate_self_adaptive(section: Mapping[str, Any] | None, method: str | None
                            ) -> dict[str, Any] | None:
    """The ``adversarial.self_adaptive`` section (SAT): null, or momentum in (0, 1) and a start
    epoch >= 0; only with TRADES, SAT's adversarial form."""
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise InputError(f"adversarial.self_adaptive must be null or a mapping such as "
                         f"{{momentum: 0.9, start_epoch: 7}}, got {section!r}")
    if method != "trades":
        raise InputError(f"adversarial.self_adaptive (SAT) needs adversarial.method: trades, got "
                         f"{method!r}")
    s = {"momentum": 0.9, "start_epoch": 0, **dict(section)}
    unknown = sorted(set(s) - {"momentum", "start_epoch"})
    if unknown:
        raise InputError(f"adversarial.self_adaptive has unknown keys {unknown} (momentum, "
                         "start_epoch)")
    m = check_positive(s["momentum"], "adversarial.self_adaptive.momentum")
    if m >= 1:
        raise InputError(f"adversarial.self_adaptive.momentum must be in (0, 1), got {m!r}")
    e = s["start_epoch"]
    if isinstance(e, bool) or not isinstance(e, int) or e < 0:
        raise InputError(f"adversarial.self_adaptive.start_epoch must be an integer >= 0, got {e!r}")
    return {"momentum": float(m), "start_epoch": e}


@dataclass
class AdversarialTraining:
    """The training-time attack and loss of one run (built from the ``adversarial`` section).

    Parameters
    ----------
    method : {"fgsm_rs", "nfgsm", "pgd", "trades"}
        Fast adversarial training (Wong et al. 2020), N-FGSM (de Jorge et al. 2022), PGD
        adversarial training (Madry et al. 2018) or TRADES (Zhang et al. 2019).
    eps : float
        L∞ radius on [0, 1] pixels (8/255).
    step_size : float, optional
        Attack step; default 1.25ε for ``fgsm_rs`` (Wong et al.), ε for ``nfgsm`` and ε/4 for ``pgd``
        and ``trades`` (2/255 at 8/255).
    steps : int
        PGD / TRADES iterations (7; SAT's TRADES: 10); ignored by the single-step methods.
    clean_weight : float
        Weight of the clean loss (0: adversarial images only; PNI: 0.5).
    awp_gamma : float
        AWP's relative weight-perturbation size γ (0: off; Wu et al.: 5e-3).
    trades_beta : float
        TRADES's β, the weight of the KL term (SAT: 6).
    self_adaptive : SelfAdaptiveTargets, optional
        SAT's soft targets (TRADES only): the natural term becomes their loss; the loop sets
        :attr:`epoch` and passes every batch's training positions.

    Examples
    --------
    >>> at = AdversarialTraining("fgsm_rs", eps=8 / 255)
    >>> round(at.step * 255, 2)
    10.0
    """

    method: str
    eps: float
    step_size: float | None = None
    steps: int = 7
    clean_weight: float = 0.0
    awp_gamma: float = 0.0
    trades_beta: float = 6.0
    self_adaptive: SelfAdaptiveTargets | None = None
    epoch: int = 0

    @classmethod
    def from_config(cls, section: Mapping[str, Any], labels: Any = None,
                    num_classes: int | None = None) -> "AdversarialTraining | None":
        """None when ``adversarial.method`` is null (clean training); SAT's targets are built for
        the training ``labels`` when ``adversarial.self_adaptive`` is set."""
        if section.get("method") is None:
            return None
        sat = section.get("self_adaptive")
        targets = None if sat is None else SelfAdaptiveTargets(
            labels, int(num_classes), sat["momentum"], sat["start_epoch"])
        return cls(section["method"], float(section["eps"]), section["step_size"],
                   int(section["steps"]), float(section["clean_weight"]),
                   float(section["awp_gamma"]), float(section.get("trades_beta", 6.0)), targets)

    @property
    def step(self) -> float:
        if self.step_size is not None:
            return float(self.step_size)
        return {"fgsm_rs": 1.25 * self.eps, "nfgsm": self.eps}.get(self.method, self.eps / 4)

    def examples(self, net: nn.Module, x: Tensor, y: Tensor,
                 autocast: Callable[[], Any] = contextlib.nullcontext) -> Tensor:
        """Adversarial images of the batch ``(x, y)`` against ``net`` in its current mode, detached.

        ``fgsm_rs``: one step of 1.25ε from a uniform start; ``pgd``: ``steps`` steps from a
        uniform start; both projected onto the ε-ball around ``x`` and onto [0, 1]. ``nfgsm``: one
        step of ε from a uniform start in the 2ε-ball, not projected (only onto [0, 1]).
        """
        before_training_forward(net, y)
        if self.method == "trades":
            return self._trades_examples(net, x, autocast)
        noise = 2 * self.eps if self.method == "nfgsm" else self.eps
        radius = 3 * self.eps if self.method == "nfgsm" else self.eps   # nfgsm: no projection
        x_adv = (x + (torch.rand_like(x) * 2 - 1) * noise).clamp(0.0, 1.0)
        for _ in range(self.steps if self.method == "pgd" else 1):
            x_adv.requires_grad_(True)
            with autocast():
                logits = net(x_adv)
            grad, = torch.autograd.grad(training_loss(net, logits, y), x_adv)
            x_adv = x_adv.detach() + self.step * grad.sign()
            x_adv = torch.minimum(torch.maximum(x_adv, x - radius), x + radius).clamp(0.0, 1.0)
        return x_adv.detach()

    def _trades_examples(self, net: nn.Module, x: Tensor, autocast: Callable[[], Any]) -> Tensor:
        """TRADES's inner maximisation: ascend KL(p(x) ‖ p(x')) from x + 0.001·N(0, I)."""
        with torch.no_grad(), autocast():
            target = torch.softmax(net(x).float(), dim=1)
        x_adv = (x + 0.001 * torch.randn_like(x)).clamp(0.0, 1.0)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            with autocast():
                logits = net(x_adv)
            kl = F.kl_div(torch.log_softmax(logits.float(), dim=1), target, reduction="sum")
            grad, = torch.autograd.grad(kl, x_adv)
            x_adv = x_adv.detach() + self.step * grad.sign()
            x_adv = torch.minimum(torch.maximum(x_adv, x - self.eps), x + self.eps).clamp(0.0, 1.0)
        return x_adv.detach()

    def _trades_loss(self, net: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor,
                     label_smoothing: float, autocast: Callable[[], Any],
                     index: Any) -> tuple[Tensor, Tensor]:
        """ℓ_nat(f(x), y) + β·KL(p(x) ‖ p(x')), summed; ℓ_nat is SAT's loss when it is on."""
        with autocast():
            clean, adv = net(x), net(x_adv)
        if self.self_adaptive is not None:
            if index is None:
                raise ValueError("self-adaptive training needs the batch's training positions")
            natural = self.self_adaptive.loss(clean, y, index, self.epoch)
        else:
            natural = training_loss(net, clean, y, label_smoothing)
        robust = F.kl_div(torch.log_softmax(adv.float(), dim=1),
                          torch.softmax(clean.float(), dim=1), reduction="sum")
        return natural + self.trades_beta * robust, adv

    def loss(self, net: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, label_smoothing: float,
             autocast: Callable[[], Any] = contextlib.nullcontext,
             index: Any = None) -> tuple[Tensor, Tensor]:
        """(summed training loss, logits on the adversarial images): ``(1 - w)·ℓ(x') + w·ℓ(x)``,
        ℓ the model's training loss (:func:`virolbi.train.model_hooks.training_loss`); TRADES:
        its own loss (``index``: the training positions of the batch, for SAT)."""
        before_training_forward(net, y)
        if self.method == "trades":
            return self._trades_loss(net, x, x_adv, y, label_smoothing, autocast, index)
        with autocast():
            logits = net(x_adv)
        loss = training_loss(net, logits, y, label_smoothing)
        if self.clean_weight > 0:
            with autocast():
                clean = net(x)
            loss = (1 - self.clean_weight) * loss + self.clean_weight * training_loss(
                net, clean, y, label_smoothing)
        return loss, logits

    def weight_perturbation(self, net: nn.Module, batches: Sequence[tuple[Tensor, Tensor]],
                            autocast: Callable[[], Any] = contextlib.nullcontext
                            ) -> dict[nn.Parameter, Tensor]:
        r"""AWP's perturbation :math:`v_l = \gamma\|w_l\| g_l/\|g_l\|` (Wu et al. 2020), from the
        gradient of the cross-entropy at the adversarial ``batches`` ``[(x', y), ...]``."""
        params = [p for p in net.parameters() if p.requires_grad and p.ndim > 1]
        grads = [torch.zeros_like(p) for p in params]
        for x_adv, y in batches:
            before_training_forward(net, y)
            with autocast():
                logits = net(x_adv)
            loss = training_loss(net, logits, y)
            for g, d in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
                if d is not None:
                    g += d
        out = {}
        for p, g in zip(params, grads):
            norm = g.norm()
            if norm > 0:
                out[p] = self.awp_gamma * p.detach().norm() * g / norm
        return out


@contextlib.contextmanager
def perturbed_weights(perturbation: Mapping[nn.Parameter, Tensor]) -> Iterator[None]:
    """Add ``v`` to each weight for the duration of the block (AWP); the weights are restored
    exactly afterwards (copied back, not ``w + v - v``)."""
    saved = {p: p.detach().clone() for p in perturbation}
    with torch.no_grad():
        for p, v in perturbation.items():
            p.add_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, w in saved.items():
                p.copy_(w)


def catastrophic_overfitting(history: Sequence[Mapping[str, float]], drop: float = 0.1) -> bool:
    """Whether the last monitor reading shows catastrophic overfitting (Wong et al. 2020, §5).

    ``history`` holds ``{"fgsm": acc, "pgd": acc}`` per reading. It fires when the last PGD accuracy
    lies more than ``drop`` below the best one so far while the FGSM accuracy is at least the FGSM
    accuracy of that best reading: the network has learnt to defeat its own one-step attack
    (a masked gradient) and lost robustness to the multi-step one.

    Examples
    --------
    >>> catastrophic_overfitting([{"fgsm": .40, "pgd": .30}, {"fgsm": .70, "pgd": .02}])
    True
    >>> catastrophic_overfitting([{"fgsm": .40, "pgd": .30}, {"fgsm": .42, "pgd": .31}])
    False
    """
    if len(history) < 2:
        return False
    best = max(history[:-1], key=lambda h: h["pgd"])
    last = history[-1]
    return last["pgd"] < best["pgd"] - drop and last["fgsm"] >= best["fgsm"]


class RobustnessMonitor:
    """FGSM and PGD accuracy of the network on a fixed set of held-out images, after every epoch;
    the weights with the best PGD accuracy; catastrophic-overfitting detection.

    Parameters
    ----------
    images : Tensor
        Float ``(N, C, H, W)`` in [0, 1], never trained on.
    labels : Tensor
        ``(N,)``.
    eps : float
        L∞ radius of both attacks on [0, 1] pixels.
    pgd_steps : int
        PGD iterations (step ε/4, random start, a fixed seed so readings are comparable).
    drop : float
        PGD accuracy drop that counts as a collapse (:func:`catastrophic_overfitting`).
    """

    def __init__(self, images: Tensor, labels: Tensor, eps: float, pgd_steps: int = 10,
                 drop: float = 0.1, batch_size: int = 256) -> None:
        self.images, self.labels = images, labels
        self.eps, self.pgd_steps, self.drop, self.batch_size = eps, pgd_steps, drop, batch_size
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, Tensor] | None = None
        self.best_epoch: int | None = None

    def measure(self, net: nn.Module) -> dict[str, float]:
        """``{"fgsm": acc, "pgd": acc}`` of ``net`` (in eval mode) on the held-out images."""
        from virolbi.attacks import fgsm, pgd

        g = torch.Generator().manual_seed(0)
        right = np.zeros(2)
        for start in range(0, len(self.labels), self.batch_size):
            x = self.images[start:start + self.batch_size]
            y = self.labels[start:start + self.batch_size]
            for i, x_adv in enumerate((fgsm(net, x, y, self.eps),
                                       pgd(net, x, y, self.eps, self.pgd_steps, generator=g))):
                with torch.no_grad():
                    right[i] += float((net(x_adv).argmax(1) == y).sum())
        n = max(1, len(self.labels))
        return {"fgsm": float(right[0] / n), "pgd": float(right[1] / n)}

    def update(self, net: nn.Module, epoch: int) -> tuple[dict[str, float], bool]:
        """Measure after ``epoch`` (1-based), keep the weights if their PGD accuracy is the best;
        (the reading, whether catastrophic overfitting shows)."""
        reading = self.measure(net)
        if self.best_epoch is None or reading["pgd"] > max(h["pgd"] for h in self.history):
            self.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            self.best_epoch = epoch
        self.history.append(reading)
        return reading, catastrophic_overfitting(self.history, self.drop)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "best_epoch": self.best_epoch,
                "best_state": self.best_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = [dict(h) for h in state.get("history", [])]
        self.best_epoch = state.get("best_epoch")
        self.best_state = state.get("best_state")
