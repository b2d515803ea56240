"""``virolbi reproduce TABLE``: one of the paper's tables, end to end and resumable.

Examples::

    virolbi reproduce table1 --pretrained        # the shipped weights: evaluation only
    virolbi reproduce all                        # trains what is missing, then every table
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "reproduce"
HELP = "reproduce the paper's tables (train or load shipped weights, evaluate, write the table)"
RERUN = "the same command continues from the last finished epoch and evaluation batch"

DEFAULT_PLAN = "configs/reproduce/cifar10_fast.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table1 ... table5 (those in the plan), or all")
    parser.add_argument("--plan", default=DEFAULT_PLAN, help="the reproduction plan (YAML)")
    parser.add_argument("--pretrained", action="store_true",
                        help="use the shipped weights (virolbi weights list) instead of training")
    parser.add_argument("--work-dir", default="runs/reproduce",
                        help="trainings and evaluations (resumable state) go here")
    parser.add_argument("--output-dir", default=None,
                        help="where <table>.md/.json/.png go (default: <work-dir>/tables)")
    parser.add_argument("--eval-images", type=int, default=None,
                        help="override the plan's numbers of evaluation images (stratified), "
                             "every table's included")
    parser.add_argument("--write-only", action="store_true",
                        help="compute nothing: write the tables from the evaluations already in "
                             "--work-dir (models not evaluated yet are left out, and named)")


def _refuse_empty_tables(plan, tables: list[str], work: Path) -> None:
    """--write-only computes nothing: a table with no evaluation in --work-dir is refused (all
    checked before any table is written) rather than written as a header without a column."""
    from virolbi.errors import InputError
    from virolbi.reproduce.tables import tables_without_cells

    empty = tables_without_cells(plan, tables, work)
    if empty:
        raise InputError(f"--write-only: --work-dir {work} holds no evaluation for "
                         f"{', '.join(empty)}, so there is nothing to write; run without "
                         "--write-only first to compute it")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from virolbi.errors import InputError
    from virolbi.reproduce import load_plan, run_tables

    plan = load_plan(args.plan)
    if args.eval_images is not None:
        if args.eval_images < 10:
            raise InputError(f"--eval-images must be at least 10, got {args.eval_images}")
        plan = dataclasses.replace(plan, eval_images=args.eval_images, tables={
            k: dataclasses.replace(t, eval_images=None) for k, t in plan.tables.items()})
    tables = list(plan.tables) if args.table == "all" else [args.table]
    from virolbi.io import check_output_dir

    work = check_output_dir(args.work_dir, "--work-dir")
    out = check_output_dir(args.output_dir, "--output-dir") if args.output_dir else work / "tables"
    if args.write_only:
        _refuse_empty_tables(plan, tables, work)
    paths = run_tables(plan, tables, work, out, pretrained=args.pretrained,
                       write_only=args.write_only)
    for table, path in paths.items():
        print(f"{table}: {path}")
    return 0
