"""The paper's CIFAR-10 / ResNet18 figures (Zhou et al. 2024, Tables 1–5 and 8), beside which every
reproduced cell is shown. Pairs are (without, with) test-time preprocessing (smoothing at 0.6; the
Blur model: its own blur)."""

from __future__ import annotations

__all__ = ["PAPER"]

#: table -> row key -> procedure -> figure (a pair where the paper gives without/with preprocessing).
PAPER: dict[str, dict[str, dict[str, object]]] = {
    "table1": {   # noise, mean over severities 1-5
        "gaussian_noise": {"vanilla": (45.90, 72.57), "blur": (11.57, 61.91),
                           "tv_layer": (49.97, 76.15), "fixed": (23.91, 75.34),
                           "iterative": (33.20, 78.46)},
        "shot_noise": {"vanilla": (59.08, 76.34), "blur": (13.48, 70.14), "tv_layer": (62.14, 78.39),
                       "fixed": (33.41, 83.93), "iterative": (42.39, 83.69)},
        "impulse_noise": {"vanilla": (51.43, 51.30), "blur": (14.16, 56.18),
                          "tv_layer": (58.75, 59.15), "fixed": (34.08, 69.51),
                          "iterative": (35.62, 71.86)},
    },
    "table2": {   # "8/255" and "16/255", epsilon "on normalised images", attack FGSM/PGD
        "8/255": {"vanilla": (37.95, 49.45), "blur": (3.66, 60.22), "fixed": (21.04, 62.72),
                  "iterative": (18.67, 60.39)},
        "16/255": {"vanilla": (23.97, 42.27), "blur": (5.10, 25.91), "fixed": (11.37, 48.51),
                   "iterative": (12.87, 45.51)},
    },
    "table3": {   # low resolution, nearest down/up-sampling, no preprocessing
        "1/4": {"vanilla": 23.33, "blur": 29.69, "fixed": 30.00, "iterative": 32.00},
        "1/2": {"vanilla": 38.50, "blur": 33.03, "fixed": 41.12, "iterative": 48.68},
    },
    "table4": {   # frequency components, radius 6, no preprocessing
        "high": {"vanilla": 41.05, "blur": 17.94, "fixed": 20.93, "iterative": 11.08},
        "low": {"vanilla": 47.37, "blur": 93.14, "fixed": 73.29, "iterative": 73.63},
    },
    "table8": {   # Appendix G: eps = 8/255, attack not stated; (without, with) smoothing. The paper's
        # "Adv Training [41]" is PGD adversarial training: shown beside our fast AT and PGD AT;
        # its AWP is on PGD training (ours: on fast AT).
        "8/255": {"fast_at": 43.50, "pgd_at": 43.50, "sat": 55.81, "awp": 55.30,
                  "pni": (41.07, 51.21), "tv_layer": (43.57, 53.25), "fixed": (37.23, 51.19),
                  "iterative": (35.31, 44.79)},
    },
    "table5": {   # clean accuracy, mean ± std over runs
        "clean": {"fixed0.4": (85.24, 1.69), "fixed0.5": (92.47, 1.53), "fixed0.6": (93.82, 0.68),
                  "fixed0.7": (94.53, 0.27), "fixed0.8": (94.78, 0.24), "fixed0.9": (95.38, 0.14),
                  "vanilla": (95.29, 0.06), "iterative": (94.54, 0.14)},
    },
}
