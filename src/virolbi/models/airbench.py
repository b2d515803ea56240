r"""A fast CIFAR network in the manner of airbench94 (K. Jordan, "94% on CIFAR-10 in 3.29 seconds
on a single GPU", 2024): the project's CPU-trainable classifier.

Architecture (widths 64/256/256 at ``width=1``)::

    PatchWhitening 2×2, 3 → 24 (frozen weights, trainable bias) → GELU
    3 × ConvGroup: conv3×3 → max-pool 2 → BatchNorm → GELU → conv3×3 → BatchNorm → GELU
    max-pool 3 → flatten → linear (no bias) → × 1/9

- The first layer is a *patch-whitening* convolution: its 12 filters are the eigenvectors
  :math:`v_i` of the (uncentred) covariance :math:`\Sigma = \frac1n\sum_p p\,p^\top` of the
  training images' 2×2×3 patches, scaled by :math:`1/\sqrt{\lambda_i + \epsilon}`, together with
  their negatives (24 channels, so the GELU after it loses no sign). Its output on training
  patches has covariance ≈ identity (:meth:`PatchWhitening.fit_to_data`). The trainer fits it on the
  first training images before the first step (:func:`virolbi.train.init_from_data`).
- BatchNorm layers have a fixed unit scale (only the shift trains), ε = 1e-12 and running-average
  momentum 0.4 (airbench's 0.6 in its convention).
- Convolutions are initialised as the identity on their first input channels (Dirac) on top of
  PyTorch's default init.

For 64-px images (Tiny-ImageNet-100) the registry's ``"airbench64"`` adds a fourth group (widths
64/128/256/256, :data:`AIRBENCH64_WIDTHS`): 64 → 63 → 31 → 15 → 7 → 3, so the head sees the same
3×3 map, pooled, as airbench94 at 32 px. About 2.8× the multiply-adds of airbench94 at 32 px (324 M
against 118 M per image); ``stem_stride=2`` (a whitened space-to-depth, 64 → 32) with
``final_pool=4`` is the cheaper alternative measured beside it
(``benchmarks/bench_tinyimagenet.py``).

The training recipe (label smoothing 0.2, Nesterov SGD, warm-up and linear decay, lookahead,
2-pixel reflect translation, alternating flips) lives in the trainer's options and
``configs/fast/``; this module only holds the network.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from virolbi.checks import check_positive, check_positive_int
from virolbi.errors import InputError

__all__ = ["AirbenchNet", "PatchWhitening", "ConvGroup", "airbench", "AIRBENCH_WIDTHS",
           "AIRBENCH64_WIDTHS", "STEMS"]

#: The first layer's kinds (:class:`AirbenchNet`'s ``stem``).
STEMS = ("whiten", "plain")

#: Block widths of airbench94 at ``width=1``.
AIRBENCH_WIDTHS = (64, 256, 256)

#: Block widths of the 64-px variant (``"airbench64"``): one more group, so a 64-px image ends at
#: the same 3×3 map as a 32-px one in airbench94 (63 → 31 → 15 → 7 → 3).
AIRBENCH64_WIDTHS = (64, 128, 256, 256)


class PatchWhitening(nn.Conv2d):
    r"""A ``k×k`` convolution whose filters whiten the image patches (frozen weight, trainable bias).

    Parameters
    ----------
    in_channels : int
        Image channels (3).
    kernel_size : int
        Patch size (2): ``in_channels·k²`` eigenvectors, output ``2·in_channels·k²`` channels.
    eps : float
        Added to the eigenvalues before the inverse square root (5e-4).
    bias_epochs : int or None
        The bias trains during the first ``bias_epochs`` epochs and is frozen after
        (:meth:`on_epoch_start`; airbench: 3). None: always trainable.
    stride : int
        1 (airbench: every overlapping patch) or ``kernel_size`` (non-overlapping patches: a
        whitened space-to-depth that halves the image side at ``k = 2``).

    Examples
    --------
    >>> layer = PatchWhitening(3, 2)
    >>> tuple(layer.weight.shape), layer.weight.requires_grad
    ((24, 3, 2, 2), False)
    """

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4,
                 bias_epochs: int | None = 3, stride: int = 1) -> None:
        width = 2 * in_channels * kernel_size ** 2
        super().__init__(in_channels, width, kernel_size, stride=stride, padding=0, bias=True)
        self.eps, self.bias_epochs = float(eps), bias_epochs
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def fit_to_data(self, x: torch.Tensor) -> None:
        r"""Set the filters from images ``x`` ``(N, C, H, W)`` (as this layer receives them).

        With :math:`\Sigma = V \Lambda V^\top` the covariance of the ``k×k`` patches this layer
        sees (every one at stride 1, the non-overlapping ones at stride ``k``),
        filter ``i`` is :math:`v_i/\sqrt{\lambda_i+\epsilon}` and filter ``i + C k^2`` its negative,
        eigenvalues in decreasing order.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"PatchWhitening.fit_to_data expects (N, {self.in_channels}, H, W) "
                             f"images, got {tuple(x.shape)}")
        k, s = self.kernel_size, self.stride
        c = self.in_channels
        patches = x.double().unfold(2, k[0], s[0]).unfold(3, k[1], s[1])  # N, C, H', W', kh, kw
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k[0] * k[1])
        cov = patches.T @ patches / patches.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.flip(1)                        # decreasing
        filters = (evecs / torch.sqrt(evals.clamp_min(0) + self.eps)).T   # (C k², C k²)
        filters = filters.reshape(-1, c, k[0], k[1])
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight.dtype))

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Freeze the bias from epoch ``bias_epochs`` on (0-based ``epoch``)."""
        if self.bias_epochs is not None:
            self.bias.requires_grad_(epoch < self.bias_epochs)


class _Conv(nn.Conv2d):
    """3×3 'same' convolution without bias, Dirac-initialised on its first input channels."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[:min(cin, cout)])


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a frozen unit scale (only the shift trains)."""

    def __init__(self, features: int, momentum: float = 0.4, eps: float = 1e-12) -> None:
        super().__init__(features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """conv → max-pool 2 → BN → GELU → conv → BN → GELU (halves the spatial size)."""

    def __init__(self, cin: int, cout: int, bn_momentum: float = 0.4) -> None:
        super().__init__()
        self.conv1, self.pool = _Conv(cin, cout), nn.MaxPool2d(2)
        self.norm1, self.conv2 = _BatchNorm(cout, bn_momentum), _Conv(cout, cout)
        self.norm2, self.activ = _BatchNorm(cout, bn_momentum), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """The airbench94 network (see the module docstring); input: *normalised* images.

    Parameters
    ----------
    num_classes : int
    widths : sequence of int
        Output channels of the conv groups, one group per entry (default 64, 256, 256: airbench94's
        three); each group halves the spatial size.
    scale : float
        Multiplier of the logits (1/9).
    bn_momentum : float
        PyTorch BatchNorm momentum (0.4).
    whiten_bias_epochs : int or None
        See :class:`PatchWhitening`.
    tv_layer : float or None
        Insert a learnable TV-proximal layer (:class:`~virolbi.models.tv_layer.TVLayer`, the TV-layer
        baseline of Yeh et al. 2022) after the stem, with this initial weight per channel; ``None``
        (default): none.
    cifs : bool or dict
        Put a CIFS layer (:class:`~virolbi.models.cifs.CIFS`, channel-wise importance-based feature
        selection, Yan et al. 2021) after the last group; a dict passes ``k``, ``temperature``,
        ``scale``.
    whiten_eps : float
        Added to the patch covariance's eigenvalues before the inverse square root (5e-4). The
        weakest patch directions (eigenvalues ~1e-4 on CIFAR-10) are amplified ~40x at 5e-4; a
        larger value (0.1) keeps high-frequency directions small, as in an unwhitened network,
        which adversarial training needs (RESULTS.md, Table 8 notes).
    stem : {"whiten", "plain"}
        ``"whiten"`` (default): the frozen patch-whitening stem above. ``"plain"``: an ordinary
        trainable 2×2 convolution with the same 24 output channels and PyTorch's default
        initialisation, so no input direction is amplified by construction (the ablation of
        RESULTS.md, "Does the finding depend on the stem?"). ``whiten_eps`` and
        ``whiten_bias_epochs`` then have no effect.
    csc : bool or dict
        Replace the patch-whitening stem by a CSC layer (:class:`~virolbi.models.csc.CSCLayer`,
        SDNet's convolutional sparse coding, Li et al. 2022) with as many atoms as the whitening
        has channels (24); a dict passes ``atoms``, ``kernel_size``, ``lam``, ``steps``.
    stem_stride : {1, 2}
        Stride of the 2×2 stem (1: airbench94; 2: non-overlapping patches, halving the side).
    final_pool : int
        Kernel of the max-pool before the head (3). It must cover the last group's whole map,
        which the head sees as one vector: 3 for 32-px images through the three groups.
    """

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = AIRBENCH_WIDTHS,
                 scale: float = 1 / 9, bn_momentum: float = 0.4,
                 whiten_bias_epochs: int | None = 3, tv_layer: float | None = None,
                 cifs: bool | dict | None = None, csc: bool | dict | None = None,
                 whiten_eps: float = 5e-4, stem: str = "whiten", stem_stride: int = 1,
                 final_pool: int = 3) -> None:
        super().__init__()
        widths = _check_widths(widths)
        if stem_stride not in (1, 2):
            raise InputError(f"airbench stem_stride must be 1 or 2, got {stem_stride!r}")
        self.whiten: nn.Module = PatchWhitening(3, 2, eps=check_positive(whiten_eps, "whiten_eps"),
                                                bias_epochs=whiten_bias_epochs, stride=stem_stride)
        cin = self.whiten.out_channels
        if stem not in STEMS:
            raise InputError(f"airbench stem must be one of {', '.join(STEMS)}, got {stem!r}")
        if stem == "plain":
            self.whiten = nn.Conv2d(3, cin, kernel_size=2, stride=stem_stride, padding=0, bias=True)
        if csc is not None and csc is not False:
            from virolbi.models.csc import CSCLayer

            if stem_stride != 1:
                raise InputError("airbench: the CSC stem has stride 1; it cannot be combined with "
                                 f"stem_stride={stem_stride}")
            options = {"atoms": cin, **({} if csc is True else dict(csc))}
            self.whiten = CSCLayer(3, **options)
            cin = options["atoms"]
        self.tv = None
        if tv_layer is not None:
            from virolbi.models.tv_layer import TVLayer

            self.tv = TVLayer(cin, init=check_positive(tv_layer, "tv_layer"))
        groups = []
        for w in widths:
            groups.append(ConvGroup(cin, w, bn_momentum))
            cin = w
        self.layers = nn.Sequential(*groups)
        from virolbi.models.cifs import CIFS, cifs_options

        options = cifs_options(cifs)
        self.cifs = CIFS(widths[-1], num_classes, **options) if options is not None else None
        self.pool = nn.MaxPool2d(check_positive_int(final_pool, "final_pool"))
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.whiten(x))
        x = self.layers(x if self.tv is None else self.tv(x))
        if self.cifs is not None:
            x = self.cifs(x)
        k = self.pool.kernel_size
        if not all(k <= side < 2 * k for side in x.shape[-2:]):  # the pool must give 1x1
            raise InputError(f"airbench with {len(self.layers)} conv groups and final pool {k} "
                             f"ends in a {x.shape[-2]}x{x.shape[-1]} map on these images, which "
                             "the pool does not reduce to 1x1: 32-px images need 3 groups "
                             "(\"airbench\"), 64-px images 4 (\"airbench64\")")
        return self.head(self.pool(x).flatten(1)) * self.scale


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(w) for w in widths)
    except (TypeError, ValueError):
        out = ()
    if not out or min(out) < 1:
        raise InputError(f"airbench widths must be positive integers (one per conv group), "
                         f"got {widths!r}")
    return out


def airbench(num_classes: int = 10, *, width: float = 1.0,
             widths: Sequence[int] = AIRBENCH_WIDTHS, **kw: object) -> AirbenchNet:
    """An :class:`AirbenchNet` with its block widths multiplied by ``width`` (rounded, ≥ 1).

    Examples
    --------
    >>> net = airbench(10, width=0.5)
    >>> [g.conv2.out_channels for g in net.layers]
    [32, 128, 128]
    """
    width = check_positive(width, "width")
    return AirbenchNet(num_classes, [max(1, round(w * width)) for w in widths], **kw)  # type: ignore[arg-type]
