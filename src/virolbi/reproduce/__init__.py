"""``virolbi reproduce``: the paper's tables from one command (train or load the shipped weights,
evaluate on the same images, write the table beside the paper's figures).

- :mod:`~virolbi.reproduce.plan`: the plan file (models and tables), ``configs/reproduce/``.
- :mod:`~virolbi.reproduce.runner`: the resumable steps.
- :mod:`~virolbi.reproduce.tables`: the tables (Markdown, JSON, PNG) with intervals and seed spread.
- :mod:`~virolbi.reproduce.paper`: the paper's figures.
"""

from virolbi.reproduce.plan import Plan, load_plan
from virolbi.reproduce.runner import run_tables

__all__ = ["Plan", "load_plan", "run_tables"]
