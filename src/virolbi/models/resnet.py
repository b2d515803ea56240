r"""Residual networks: ResNet18 (CIFAR or ImageNet stem) and ResNet50, with a width multiplier.

A residual block computes :math:`y = \mathrm{ReLU}(F(x) + S(x))` with :math:`F` two 3×3 convolutions
(:class:`BasicBlock`) or a 1×1–3×3–1×1 bottleneck (:class:`Bottleneck`) and :math:`S` the identity or a
strided 1×1 projection [1]_. Four stages of ``64, 128, 256, 512`` base channels (times 4 at the
output of a bottleneck stage) follow a stem, then global average pooling and a linear classifier.

- ``stem="imagenet"``: 7×7 convolution, stride 2, then 3×3 max-pool, stride 2 (the original).
- ``stem="cifar"``: one 3×3 convolution, stride 1, no max-pool (paper §4's CIFAR ResNet18), the usual variant for
  32×32 images; the last stage then works on 4×4 maps.

``width`` multiplies every channel count (``max(1, round(c * width))``), so ``width=0.25`` gives a
network with about 1/16 of the parameters for the 2-core CPU configurations. Module and parameter
names follow ``torchvision.models.resnet``, so its state dicts load into ``resnet50(stem="imagenet")``
and ``resnet18(stem="imagenet")`` (see :func:`virolbi.models.load_pretrained`).

References
----------
.. [1] K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from virolbi.checks import check_positive, check_positive_int
from virolbi.errors import InputError

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50", "scaled_channels"]

_STEMS = ("cifar", "imagenet")


def scaled_channels(channels: int, width: float) -> int:
    """Channel count times the width multiplier, rounded to the nearest integer, at least 1.

    Examples
    --------
    >>> scaled_channels(64, 0.125), scaled_channels(64, 1 / 3), scaled_channels(64, 0.001)
    (8, 21, 1)
    """
    return max(1, int(round(channels * width)))


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    r"""Two 3×3 convolutions with a shortcut: :math:`\mathrm{ReLU}(BN(W_2\,\mathrm{ReLU}(BN(W_1 x))) + S x)`.

    Parameters
    ----------
    inplanes : int
        Input channels.
    planes : int
        Channels of both convolutions (the output has ``planes * expansion = planes`` channels).
    stride : int
        Stride of the first convolution (2 at the start of a down-sampling stage).
    downsample : nn.Module or None
        Shortcut projection :math:`S` when the shape changes; identity otherwise.

    Examples
    --------
    >>> BasicBlock(4, 4)(torch.rand(2, 4, 8, 8)).shape
    torch.Size([2, 4, 8, 8])
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    r"""1×1 reduce, 3×3 (strided), 1×1 expand (×4), with a shortcut (torchvision's "v1.5": the
    stride sits on the 3×3 convolution).

    Parameters
    ----------
    inplanes : int
        Input channels.
    planes : int
        Inner channels; the block outputs ``planes * 4``.
    stride : int
        Stride of the 3×3 convolution.
    downsample : nn.Module or None
        Shortcut projection when the shape changes; identity otherwise.

    Examples
    --------
    >>> Bottleneck(16, 4)(torch.rand(2, 16, 8, 8)).shape
    torch.Size([2, 16, 8, 8])
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A residual network: stem, four stages, global average pooling, linear classifier ``fc``.

    Parameters
    ----------
    block : type
        :class:`BasicBlock` or :class:`Bottleneck`.
    layers : sequence of 4 int
        Blocks per stage (``(2, 2, 2, 2)`` for ResNet18, ``(3, 4, 6, 3)`` for ResNet50).
    num_classes : int
        Outputs of the classifier (default 1000).
    width : float
        Channel multiplier (> 0, default 1); every convolution has ``max(1, round(c * width))``
        channels. Smaller is faster and weaker.
    stem : {"cifar", "imagenet"}
        ``"cifar"``: 3×3 conv stride 1, no max-pool (32×32 inputs); ``"imagenet"``: 7×7 conv stride 2
        and max-pool (224×224 inputs).
    zero_init_residual : bool
        Start the last BatchNorm of each block at zero, so each block starts as the identity.
    csc : bool or dict, optional
        SDNet-18 (Li et al. 2022): the CIFAR stem's convolution becomes a CSC layer
        (:class:`~virolbi.models.csc.CSCLayer`, as many 3×3 atoms as the stem has channels, λ 0.1,
        2 FISTA steps; a dict overrides its options), followed by the same BatchNorm and ReLU.
    cifs : bool or dict, optional
        CIFS (Yan et al. 2021): a :class:`~virolbi.models.cifs.CIFS` layer after each block of the
        last stage (a dict gives its options; the authors' mask scale 2 is the default).

    Notes
    -----
    Input: normalised float images ``(B, 3, H, W)`` of any size (the pooling is adaptive). The
    classifier is ``self.fc``; :meth:`forward_features` returns the map before pooling.

    Examples
    --------
    >>> net = ResNet(BasicBlock, (1, 1, 1, 1), num_classes=3, width=0.125).eval()
    >>> net(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 3])
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 num_classes: int = 1000, *, width: float = 1.0, stem: str = "imagenet",
                 zero_init_residual: bool = False, csc: bool | dict | None = None,
                 cifs: bool | dict | None = None) -> None:
        super().__init__()
        width = check_positive(width, "width")
        num_classes = _check_num_classes(num_classes)
        if stem not in _STEMS:
            raise InputError(f"stem must be one of {', '.join(_STEMS)}, got {stem!r}")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise InputError(f"layers must be 4 positive block counts, got {tuple(layers)}")
        self.stem = stem
        self.width = width
        self.inplanes = scaled_channels(64, width)
        if stem == "cifar":
            self.conv1 = _conv3x3(3, self.inplanes, stride=1)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        planes = [scaled_channels(c, width) for c in (64, 128, 256, 512)]
        self.layer1 = self._make_layer(block, planes[0], int(layers[0]), stride=1)
        self.layer2 = self._make_layer(block, planes[1], int(layers[1]), stride=2)
        self.layer3 = self._make_layer(block, planes[2], int(layers[2]), stride=2)
        self.layer4 = self._make_layer(block, planes[3], int(layers[3]), stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = planes[3] * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        self._add_sdnet_stem(csc)
        self._add_cifs(cifs, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _add_sdnet_stem(self, csc: bool | dict | None) -> None:
        if csc is None or csc is False:
            return
        if self.stem != "cifar":
            raise InputError("csc (the SDNet stem) needs stem='cifar' (a stride-1 3x3 stem)")
        from virolbi.models.csc import CSCLayer

        self.conv1 = CSCLayer(3, **{"atoms": self.conv1.out_channels,
                                    **({} if csc is True else dict(csc))})

    def _add_cifs(self, cifs: bool | dict | None, num_classes: int) -> None:
        from virolbi.models.cifs import CIFS, cifs_options

        options = cifs_options(cifs)
        self.cifs = None if options is None else nn.ModuleList(
            CIFS(self.num_features, num_classes, **options) for _ in self.layer4)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature map ``(B, num_features, h, w)`` before pooling (``h = H/8`` for the CIFAR
        stem, ``H/32`` for the ImageNet stem)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.cifs is None:
            return self.layer4(x)
        for block, select in zip(self.layer4, self.cifs):
            x = select(block(x))
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def _check_num_classes(num_classes: object) -> int:
    return check_positive_int(num_classes, "num_classes")


def resnet18(num_classes: int = 10, *, width: float = 1.0, stem: str = "cifar",
             zero_init_residual: bool = False, csc: bool | dict | None = None,
             cifs: bool | dict | None = None) -> ResNet:
    """ResNet18 (:class:`BasicBlock`, ``(2, 2, 2, 2)``), by default with the CIFAR stem (paper §4).

    Parameters
    ----------
    num_classes : int
        Classifier outputs (default 10).
    width : float
        Channel multiplier (default 1: 64–512 channels, 11,173,962 parameters for 10 classes).
    stem : {"cifar", "imagenet"}
        See :class:`ResNet` (default ``"cifar"``: 3×3 conv, stride 1, no max-pool).
    zero_init_residual : bool
        See :class:`ResNet`.
    csc, cifs : bool or dict, optional
        SDNet-18's CSC stem and CIFS on the last stage (see :class:`ResNet`).

    Examples
    --------
    >>> net = resnet18(10, width=0.125).eval()
    >>> net(torch.rand(1, 3, 32, 32)).shape, net.forward_features(torch.rand(1, 3, 32, 32)).shape
    (torch.Size([1, 10]), torch.Size([1, 64, 4, 4]))
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width=width, stem=stem,
                  zero_init_residual=zero_init_residual, csc=csc, cifs=cifs)


def resnet50(num_classes: int = 1000, *, width: float = 1.0, stem: str = "imagenet",
             zero_init_residual: bool = False) -> ResNet:
    """ResNet50 (:class:`Bottleneck`, ``(3, 4, 6, 3)``), by default with the ImageNet stem.

    With ``width=1``, ``stem="imagenet"`` and 1000 classes it has torchvision's 25,557,032
    parameters and the same names, so torchvision's ImageNet weights load for fine-tuning.

    Parameters
    ----------
    num_classes : int
        Classifier outputs (default 1000).
    width : float
        Channel multiplier (default 1).
    stem : {"cifar", "imagenet"}
        See :class:`ResNet` (default ``"imagenet"``).
    zero_init_residual : bool
        See :class:`ResNet`.

    Examples
    --------
    >>> net = resnet50(5, width=0.0625).eval()
    >>> net(torch.rand(1, 3, 64, 64)).shape, net.fc.in_features
    (torch.Size([1, 5]), 128)
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, width=width, stem=stem,
                  zero_init_residual=zero_init_residual)
