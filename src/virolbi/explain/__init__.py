"""Seeing why it works (the paper's Figures 1b, 2, 3, 5): spectral statistics of the smoothed
images (:mod:`.spectra`)."""

from virolbi.explain.spectra import RINGS, difference_spectrum, removed_energy_table, ring_masks

__all__ = ["RINGS", "difference_spectrum", "removed_energy_table", "ring_masks"]
