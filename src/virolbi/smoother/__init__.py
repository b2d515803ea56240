"""The ViRoLBI smoother (paper §3.1): LBI solvers, projections, image paths and the transform.

- :func:`smooth`, :func:`image_path`, :class:`ViRoLBI`: the public API (:mod:`.api`).
- :func:`lbi_path`: the batched driver and solvers (:mod:`.lbi`), returning a :class:`SmoothResult`.
- :func:`average_over_components`, :func:`project`: Eq. 6 / Prop. 1 (:mod:`.projection`).
- :mod:`.operators`: ``D``, ``Dᵀ``, the exact ``‖H‖₂`` and the DCT solver.
"""

from virolbi.smoother.api import DEFAULT_LEVELS, ViRoLBI, image_path, smooth
from virolbi.smoother.lbi import DEFAULT_SOLVER, SOLVERS, lbi_path
from virolbi.smoother.operators import hessian_norm, lbi_step_size
from virolbi.smoother.projection import (PROJECTIONS, average_over_components, component_labels,
                                         project)
from virolbi.smoother.result import SmoothResult

__all__ = ["smooth", "image_path", "ViRoLBI", "lbi_path", "SmoothResult", "average_over_components",
           "component_labels", "project", "hessian_norm", "lbi_step_size", "SOLVERS",
           "DEFAULT_SOLVER", "PROJECTIONS", "DEFAULT_LEVELS"]
