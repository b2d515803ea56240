"""Smoothed copies of a dataset at scale: sharded, resumable, spread over processes or a Ray
cluster, read memory-mapped (``virolbi smooth-dataset``, :func:`open_smoothed`).

- :mod:`.manifest`: the store's format (what was smoothed, how, which shards are done),
- :mod:`.source`: the source's identity and the images of a shard,
- :mod:`.worker`: one shard's image paths (the unit every engine runs),
- :mod:`.engines` / :mod:`.ray_engine`: the ``local`` and ``ray`` engines,
- :mod:`.build`: the driver (:func:`build_store`), :mod:`.reader`: :func:`open_smoothed`.
"""

from virolbi.store.build import ENGINES, BuildReport, StoreRepairWarning, build_store
from virolbi.store.manifest import SMOOTHER_CODE_VERSION
from virolbi.store.reader import SmoothedStore, open_smoothed
from virolbi.store.source import dataset_fingerprint, source_identity

__all__ = ["ENGINES", "BuildReport", "SMOOTHER_CODE_VERSION", "SmoothedStore",
           "StoreRepairWarning", "build_store", "dataset_fingerprint", "open_smoothed",
           "source_identity"]
