"""virolbi: ViRoLBI inverse-scale-space total-variation smoothing for robust image classifiers.

Reference implementation of Zhou et al., "Robust Network Learning via Inverse Scale Variational
Sparsification" (2024).
"""

from virolbi.errors import InputError, UnreachedLevelWarning
from virolbi.smoother import ViRoLBI, image_path, smooth
from virolbi.store import open_smoothed

__version__ = "0.1.0"
__all__ = ["InputError", "UnreachedLevelWarning", "ViRoLBI", "image_path", "open_smoothed", "smooth",
           "__version__"]
