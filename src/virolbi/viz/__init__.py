"""Figures: the image path of the smoother (paper Fig. 1a / Fig. 6)."""

from virolbi.viz.path_figure import FIGURE_SUFFIXES, plot_image_path, save_figure

__all__ = ["plot_image_path", "save_figure", "FIGURE_SUFFIXES"]
