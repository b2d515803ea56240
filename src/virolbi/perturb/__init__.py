"""Perturbations for the robustness evaluation (paper §4.1-4.4).

- :mod:`~virolbi.perturb.noise`: the CIFAR-10-C noise corruptions (:func:`corrupt`, :data:`CORRUPTIONS`,
  :data:`SEVERITY_PARAMS`, :class:`Corruption`).
- :mod:`~virolbi.perturb.blur`: Gaussian blur, the paper's Blur baseline (:func:`gaussian_blur`).
- :mod:`~virolbi.perturb.resolution`: down- then nearest up-sampling (:func:`low_resolution`).
- :mod:`~virolbi.perturb.frequency`: low/high split in the centred FFT (:func:`frequency_split`).
- :mod:`~virolbi.perturb.cifar_c`: write CIFAR-10-C style ``.npy`` files (:func:`write_cifar_c`).

Every function takes float images ``(B, C, H, W)`` in [0, 1] and returns the same shape on the same
device with the same dtype.
"""

from virolbi.perturb.blur import GaussianBlur, blur_params_for, gaussian_blur, gaussian_kernel1d
from virolbi.perturb.cifar_c import write_cifar_c
from virolbi.perturb.frequency import FrequencyFilter, frequency_split, low_pass_mask
from virolbi.perturb.noise import (
    CORRUPTIONS,
    SEVERITY_PARAMS,
    Corruption,
    corrupt,
    gaussian_noise,
    impulse_noise,
    quantize_uint8,
    shot_noise,
    speckle_noise,
)
from virolbi.perturb.resolution import LowResolution, low_resolution

__all__ = [
    "CORRUPTIONS",
    "SEVERITY_PARAMS",
    "Corruption",
    "FrequencyFilter",
    "GaussianBlur",
    "LowResolution",
    "blur_params_for",
    "corrupt",
    "frequency_split",
    "gaussian_blur",
    "gaussian_kernel1d",
    "gaussian_noise",
    "impulse_noise",
    "low_pass_mask",
    "low_resolution",
    "quantize_uint8",
    "shot_noise",
    "speckle_noise",
    "write_cifar_c",
]
