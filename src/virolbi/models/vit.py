r"""Vision Transformer [1]_: ViT-tiny (patch 16, 224×224, dim 192, depth 12, 3 heads, MLP 768).

The image is cut into :math:`N = (H/p)(W/p)` patches, each linearly embedded; a learned class token is
prepended and a learned position embedding added,

.. math:: z_0 = [x_\mathrm{cls};\, x_p^1 E;\, \dots;\, x_p^N E] + E_\mathrm{pos},

then ``depth`` pre-norm blocks
:math:`z' = z + \mathrm{MSA}(\mathrm{LN}(z))`, :math:`z = z' + \mathrm{MLP}(\mathrm{LN}(z'))`, and the
classifier reads the final, normalised class token. Names and shapes follow timm's
``vit_tiny_patch16_224`` (5,717,416 parameters for 1000 classes), so its weights load for fine-tuning.

When the input's patch grid differs from the one the model was built for, the position embedding is
resampled bicubically (:func:`resample_pos_embed`) — at every forward pass and when loading a
checkpoint made at another resolution. For 32×32 images, build with ``image_size=32, patch_size=4``.

References
----------
.. [1] A. Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
   Scale", ICLR 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from virolbi.checks import check_positive_int
from virolbi.errors import InputError

__all__ = ["Attention", "Block", "PatchEmbed", "VisionTransformer", "resample_pos_embed",
           "vit_tiny"]


def _positive_int(value: object, name: str) -> int:
    return check_positive_int(value, name)


def _pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return _positive_int(value[0], name), _positive_int(value[1], name)
    v = _positive_int(value, name)
    return v, v


def resample_pos_embed(pos_embed: Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                       num_prefix_tokens: int = 1) -> Tensor:
    r"""Resample a learned position embedding to another patch grid (bicubic, as in timm).

    Parameters
    ----------
    pos_embed : Tensor
        ``(1, P + h*w, D)``: ``P`` prefix (class) tokens, then the grid embedding row by row.
    new_grid, old_grid : (int, int)
        Target ``(h', w')`` and current ``(h, w)`` patch grids.
    num_prefix_tokens : int
        ``P``, kept unchanged (default 1, the class token).

    Returns
    -------
    Tensor
        ``(1, P + h'*w', D)``, same dtype and device; differentiable.

    Examples
    --------
    >>> pe = torch.ones(1, 1 + 4 * 4, 8)
    >>> out = resample_pos_embed(pe, (6, 6), (4, 4))
    >>> tuple(out.shape), bool(torch.allclose(out, torch.ones(()), atol=1e-6))
    ((1, 37, 8), True)
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    h, w = old_grid
    if grid.shape[1] != h * w:
        raise InputError(f"position embedding has {grid.shape[1]} grid tokens, expected {h}x{w}")
    dim = grid.shape[-1]
    grid = grid.reshape(1, h, w, dim).permute(0, 3, 1, 2)
    work = grid if grid.dtype in (torch.float32, torch.float64) else grid.float()
    grid = F.interpolate(work, size=tuple(new_grid), mode="bicubic", align_corners=False,
                         antialias=bool(new_grid[0] < h or new_grid[1] < w)).to(pos_embed.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([prefix, grid], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping ``p×p`` patches, linearly embedded by a strided convolution ``proj``.

    Examples
    --------
    >>> PatchEmbed((4, 4), 3, 8)(torch.rand(2, 3, 16, 12)).shape  # 4 x 3 patches
    torch.Size([2, 12, 8])
    """

    def __init__(self, patch_size: tuple[int, int], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        ph, pw = self.patch_size
        if x.shape[-2] % ph or x.shape[-1] % pw:
            raise InputError(f"image size {x.shape[-2]}x{x.shape[-1]} must be a multiple of the "
                             f"patch size {ph}x{pw}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    r"""Multi-head self-attention: :math:`\mathrm{softmax}(QK^\top/\sqrt{d})V` per head, with one
    ``qkv`` projection (rows ordered q, k, v, like ``nn.MultiheadAttention.in_proj_weight``) and an
    output projection ``proj``.

    Examples
    --------
    >>> Attention(12, num_heads=3)(torch.rand(2, 5, 12)).shape
    torch.Size([2, 5, 12])
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise InputError(f"embed_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Examples
    --------
    >>> Block(12, num_heads=2, mlp_dim=24)(torch.rand(2, 5, 12)).shape
    torch.Size([2, 5, 12])
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0,
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_drop=attn_dropout, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, mlp_dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Vision Transformer with a class token and a learned position embedding.

    Parameters
    ----------
    image_size : int or (int, int)
        Size the position embedding is built for (default 224). Other sizes that are multiples of
        the patch size also work: the embedding is resampled (bicubic) on the fly.
    patch_size : int or (int, int)
        Patch side ``p`` (default 16; 4 suits 32×32 images).
    num_classes : int
        Classifier outputs (default 1000).
    embed_dim, depth, num_heads, mlp_dim : int
        Token width (192), number of blocks (12), attention heads (3), MLP hidden width (768).
    dropout, attn_dropout : float
        Dropout after the embedding / in the MLP and projections, and on attention weights (0).
    in_chans : int
        Input channels (3).

    Notes
    -----
    Input: normalised float images ``(B, in_chans, H, W)``, ``H`` and ``W`` multiples of ``p``.
    The classifier is ``self.head``; :meth:`forward_features` returns the normalised tokens.

    Examples
    --------
    >>> vit = VisionTransformer(32, 8, num_classes=4, embed_dim=12, depth=1, num_heads=2, mlp_dim=24)
    >>> vit(torch.rand(2, 3, 32, 32)).shape, vit(torch.rand(2, 3, 48, 40)).shape
    (torch.Size([2, 4]), torch.Size([2, 4]))
    """

    def __init__(self, image_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 16,
                 num_classes: int = 1000, *, embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, mlp_dim: int = 768, dropout: float = 0.0,
                 attn_dropout: float = 0.0, in_chans: int = 3) -> None:
        super().__init__()
        self.image_size = _pair(image_size, "image_size")
        self.patch_size = _pair(patch_size, "patch_size")
        for name, v in (("num_classes", num_classes), ("embed_dim", embed_dim), ("depth", depth),
                        ("num_heads", num_heads), ("mlp_dim", mlp_dim), ("in_chans", in_chans)):
            _positive_int(v, name)
        if self.image_size[0] % self.patch_size[0] or self.image_size[1] % self.patch_size[1]:
            raise InputError(f"image_size {self.image_size} must be a multiple of patch_size "
                             f"{self.patch_size}")
        self.grid_size = (self.image_size[0] // self.patch_size[0],
                          self.image_size[1] // self.patch_size[1])
        self.num_prefix_tokens = 1
        self.num_features = embed_dim
        self.patch_embed = PatchEmbed(self.patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1],
                                                  embed_dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_dim, dropout, attn_dropout)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Tokens after the final LayerNorm, ``(B, 1 + N, embed_dim)``; index 0 is the class token."""
        tokens = self.patch_embed(x)
        grid = (x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1])
        pos = resample_pos_embed(self.pos_embed, grid, self.grid_size, self.num_prefix_tokens)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.pos_drop(torch.cat([cls, tokens], dim=1) + pos)
        return self.norm(self.blocks(tokens))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x)[:, 0])


def vit_tiny(num_classes: int = 1000, *, image_size: int | tuple[int, int] = 224,
             patch_size: int | tuple[int, int] = 16, depth: int = 12, **kw: object) -> VisionTransformer:
    """ViT-tiny: patch 16, 224×224, dim 192, depth 12, 3 heads, MLP 768 (timm ``vit_tiny_patch16_224``).

    Parameters
    ----------
    num_classes : int
        Classifier outputs (default 1000).
    image_size, patch_size : int or (int, int)
        Defaults 224 and 16; e.g. ``image_size=32, patch_size=4`` for CIFAR.
    depth : int
        Number of blocks (default 12; smaller for quick tests).
    **kw
        Any other :class:`VisionTransformer` argument (``embed_dim``, ``num_heads``, ``mlp_dim``,
        ``dropout``, ``attn_dropout``).

    Examples
    --------
    >>> vit = vit_tiny(10, image_size=32, patch_size=8, depth=1).eval()
    >>> vit(torch.rand(1, 3, 32, 32)).shape, vit.pos_embed.shape
    (torch.Size([1, 10]), torch.Size([1, 17, 192]))
    """
    return VisionTransformer(image_size, patch_size, num_classes, depth=depth, **kw)  # type: ignore[arg-type]
