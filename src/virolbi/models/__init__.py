"""Backbones and the model registry (paper §4).

- :func:`create_model` / :func:`list_models` / :func:`register`: build a classifier by name
  (``"resnet18"`` with the CIFAR stem, ``"resnet50"``, ``"vit_tiny"``, ``"torchvision:<name>"``,
  ``"timm:<name>"``).
- :mod:`~virolbi.models.airbench`: :func:`airbench`, the fast CIFAR network (patch whitening,
  widths 64/256/256 × a width multiplier) that trains to ~90 % in minutes on a CPU; its 64-px
  variant ``"airbench64"`` (a fourth group) for Tiny-ImageNet-100.
- :mod:`~virolbi.models.resnet`: :func:`resnet18`, :func:`resnet50` with a width multiplier.
- :mod:`~virolbi.models.vit`: :func:`vit_tiny` with position-embedding resampling.
- :mod:`~virolbi.models.normalize`: :class:`Normalize`, :data:`DATASET_STATS`, :class:`NormalizedModel`.
- :mod:`~virolbi.models.pni`: :func:`add_weight_noise`, :func:`set_weight_noise` (PNI, He et al.
  2019: trainable Gaussian noise on the weights of every convolution, on at test time).
- :mod:`~virolbi.models.pretrained`: :func:`load_pretrained` from local files (``weights_only=True``).

Models from :func:`create_model` take float images ``(B, C, H, W)`` in [0, 1]; normalisation is
their first layer, so attacks and perturbations work in pixel space.
"""

from virolbi.models.airbench import AirbenchNet, PatchWhitening, airbench
from virolbi.models.normalize import (
    DATASET_STATS,
    Normalize,
    NormalizedModel,
    normalize,
    resolve_stats,
)
from virolbi.models.pni import add_weight_noise, set_weight_noise
from virolbi.models.pretrained import LoadResult, extract_state_dict, load_pretrained
from virolbi.models.registry import create_model, list_models, register
from virolbi.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50
from virolbi.models.vit import VisionTransformer, resample_pos_embed, vit_tiny

__all__ = [
    "AirbenchNet",
    "add_weight_noise",
    "set_weight_noise",
    "PatchWhitening",
    "airbench",
    "DATASET_STATS",
    "BasicBlock",
    "Bottleneck",
    "LoadResult",
    "Normalize",
    "NormalizedModel",
    "ResNet",
    "VisionTransformer",
    "create_model",
    "extract_state_dict",
    "list_models",
    "load_pretrained",
    "normalize",
    "register",
    "resample_pos_embed",
    "resnet18",
    "resnet50",
    "resolve_stats",
    "vit_tiny",
]
