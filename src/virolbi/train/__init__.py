"""Training procedures of the paper (§3.2), the trainer and data-parallel training.

- :func:`train` / :class:`TrainResult` / :class:`TrainConfig` (:mod:`.trainer`): SGD + cosine recipe,
  atomic per-epoch checkpoints, exact resume, CSV/JSON/TensorBoard metrics, DDP under torchrun.
- :mod:`.procedures`: :class:`Vanilla`, :class:`Blur`, :class:`Fixed`, :class:`Iterative` (Eq. 9),
  :func:`iterative_level`; fine-tuning = any of them with ``model.pretrained``.
- :mod:`.smoothed_cache`: :func:`smoothed_images`, the on-disk cache of smoothed datasets.
- :mod:`.config`: :func:`load_config` (YAML ``defaults:`` layering + ``key=value`` overrides).
- :mod:`.augment`: :func:`random_crop_flip`; :mod:`.ddp`: process-group helpers.
"""

from virolbi.train.augment import RandomCropFlip, random_crop_flip
from virolbi.train.config import DEFAULTS, PROCEDURES, load_config, resolve_config
from virolbi.train.procedures import (Blur, Fixed, Iterative, Procedure, Vanilla, build_procedure,
                                      iterative_level)
from virolbi.train.smoothed_cache import (SMOOTHER_CODE_VERSION, CacheRebuildWarning, SmoothedSet,
                                          smoothed_images)
from virolbi.train.trainer import TrainConfig, TrainResult, load_checkpoint, train

__all__ = ["train", "TrainResult", "TrainConfig", "load_checkpoint", "load_config",
           "resolve_config", "DEFAULTS", "PROCEDURES", "Procedure", "Vanilla", "Blur", "Fixed",
           "Iterative", "build_procedure", "iterative_level", "smoothed_images", "SmoothedSet",
           "CacheRebuildWarning", "SMOOTHER_CODE_VERSION", "random_crop_flip", "RandomCropFlip"]
