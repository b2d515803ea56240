"""virolbi: ViRoLBI inverse-scale-space total-variation smoothing for robust image classifiers.

Reference implementation of Zhou et al., "Robust Network Learning via Inverse Scale Variational
Sparsification" (2024).
"""

from virolbi.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
