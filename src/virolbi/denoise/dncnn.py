r"""DnCNN (Zhang et al., TIP 2017): a residual denoiser, :math:`f(y) = y - R(y)` with :math:`R` a
stack of 3×3 convolutions (first: conv + ReLU; middle: conv + BatchNorm + ReLU; last: conv) that
predicts the noise. The thesis's DnCNN-B has 17–20 layers of 64 channels; depth and width are
parameters here so that a smaller one trains on CPUs."""

from __future__ import annotations

from torch import Tensor, nn

from virolbi.errors import InputError

__all__ = ["DnCNN"]


class DnCNN(nn.Module):
    """Residual denoiser with ``depth`` convolutions of ``width`` channels.

    Examples
    --------
    >>> import torch
    >>> DnCNN(depth=5, width=16)(torch.rand(2, 1, 20, 20)).shape
    torch.Size([2, 1, 20, 20])
    """

    def __init__(self, depth: int = 17, width: int = 64, channels: int = 1) -> None:
        super().__init__()
        if depth < 3 or width < 1:
            raise InputError(f"DnCNN needs depth >= 3 and width >= 1, got {depth}, {width}")
        self.depth, self.width, self.channels = int(depth), int(width), int(channels)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.residual = nn.Sequential(*layers)

    def forward(self, y: Tensor) -> Tensor:
        return y - self.residual(y)
