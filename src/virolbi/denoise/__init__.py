"""Gray-scale image denoising and its robustness (Yan's thesis, chapter 2).

- :mod:`.data`: Train400, Set12 and BSD68 from the shared archive; random training patches.
- :mod:`.dncnn`: :class:`DnCNN`, the residual denoiser (depth and width a parameter).
- :mod:`.obsatk`: :func:`obsatk`, the observation-based zero-mean attack (Algorithm 1, Eq. 2.1–2.2).
- :mod:`.train`: :func:`train_denoiser`, normal training and hybrid adversarial training (HAT, Eq. 2.3).
- :mod:`.evaluate`: :func:`psnr_table`, the thesis's Table 2.1 / 2.2 layout, ViRoLBI as a denoiser.
"""

from virolbi.denoise.dncnn import DnCNN
from virolbi.denoise.obsatk import obsatk, project_zero_mean_l2

__all__ = ["DnCNN", "obsatk", "project_zero_mean_l2"]
