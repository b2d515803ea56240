"""Training augmentation of the CIFAR recipe: random crop with zero padding and horizontal flip.

Also the airbench variant: a 2-pixel translation with *reflect* padding (``mode="reflect"``) and
*alternating* flips (:func:`alternating_flips`): each image is flipped at random in the first
epoch and then every other epoch the other way, so every image is seen both ways in any two
consecutive epochs.

Batched and seeded: the crop offsets and flips of a whole batch come from one
:class:`torch.Generator`, so a batch is augmented the same way whatever process (DDP rank) or
run (resume) computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from virolbi.errors import InputError

__all__ = ["random_crop_flip", "sample_crop_flip", "apply_crop_flip", "alternating_flips",
           "RandomCropFlip"]

PAD_MODES = ("zeros", "reflect")


def sample_crop_flip(batch: int, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw per-image crop offsets ``(dy, dx)`` in ``[0, 2·padding]`` and flip flags (CPU tensors)."""
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    flips = (torch.rand(batch, generator=generator) < 0.5) if flip else torch.zeros(batch, dtype=torch.bool)
    return dy, dx, flips


def alternating_flips(base: torch.Tensor, epoch: int) -> torch.Tensor:
    """Flip flags at ``epoch`` (0-based) from per-image random flags ``base`` (drawn once):
    ``base`` in even epochs, its complement in odd ones.

    Examples
    --------
    >>> base = torch.tensor([True, False])
    >>> alternating_flips(base, 0).tolist(), alternating_flips(base, 1).tolist()
    ([True, False], [False, True])
    """
    return base ^ bool(epoch % 2)


def apply_crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor,
                    padding: int = 4, mode: str = "zeros") -> torch.Tensor:
    """Crop ``x`` (padded by ``padding`` with zeros or by reflection, ``mode``) at the given
    offsets and flip where ``flips``."""
    b, _, h, w = x.shape
    if mode not in PAD_MODES:
        raise InputError(f"padding mode must be one of {', '.join(PAD_MODES)}, got {mode!r}")
    if padding:
        x = F.pad(x, (padding, padding, padding, padding),
                  mode="constant" if mode == "zeros" else "reflect")
    dev = x.device
    rows = dy.to(dev)[:, None] + torch.arange(h, device=dev)[None, :]          # (B, H)
    cols = dx.to(dev)[:, None] + torch.arange(w, device=dev)[None, :]          # (B, W)
    cols = torch.where(flips.to(dev)[:, None], cols.flip(1), cols)
    bidx = torch.arange(b, device=dev)[:, None, None]
    out = x.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]      # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per image of a batch.

    Each image is padded with ``padding`` zeros on every side, an ``H × W`` window is cut at a
    uniformly random offset, and with probability 1/2 it is mirrored left–right: the standard
    CIFAR augmentation (``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` in torchvision).

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, H, W)``, uint8 or float; the output has the same dtype and device.
    padding : int
        Zero padding on each side (default 4); 0 disables the crop.
    flip : bool
        Random horizontal flip (default True).
    generator : torch.Generator, optional
        CPU generator for the offsets and flips (reproducible augmentation).

    Examples
    --------
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> g = torch.Generator().manual_seed(0)
    >>> random_crop_flip(x, padding=0, flip=False, generator=g).equal(x)
    True
    >>> random_crop_flip(x, padding=1, generator=g).shape
    torch.Size([1, 1, 4, 4])
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"random_crop_flip expects a tensor (B, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise InputError(f"padding must be a non-negative integer, got {padding!r}")
    dy, dx, flips = sample_crop_flip(x.shape[0], padding, flip, generator)
    return apply_crop_flip(x, dy, dx, flips, padding)


class RandomCropFlip(torch.nn.Module):
    """Module form of :func:`random_crop_flip` (identity in eval mode).

    Examples
    --------
    >>> aug = RandomCropFlip(padding=2).eval()
    >>> x = torch.rand(2, 3, 8, 8)
    >>> aug(x).equal(x)
    True
    """

    def __init__(self, padding: int = 4, flip: bool = True,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.padding, self.flip, self.generator = padding, flip, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return random_crop_flip(x, self.padding, self.flip, self.generator)
