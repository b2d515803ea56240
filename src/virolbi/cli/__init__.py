"""The ``virolbi`` command line: argument parsing only, the work is done by the library.

Every sub-command is one module in this package that defines

- ``COMMAND``: its name (``virolbi COMMAND ...``),
- ``HELP``: a one-line description,
- ``add_arguments(parser)``: fills its :class:`argparse.ArgumentParser`,
- ``run(args) -> int``: does the work and returns the exit code,
- optionally ``RERUN``: what running it again after a failure does (e.g. "a rerun continues from
  the last finished batch"), for commands that resume; said after a full disk.

Modules are discovered, so adding a command never touches this file. Bad user input (an
:class:`~virolbi.errors.InputError`, a missing or unreadable file) becomes one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import pkgutil
import sys
from types import ModuleType

from virolbi import __version__
from virolbi.errors import InputError

EXIT_USAGE = 2


def _command_modules() -> list[ModuleType]:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "COMMAND"):
            modules.append(module)
    return modules


#: The conventions every sub-command follows (shown by ``virolbi --help``).
CONVENTIONS = ("Every command: --output-dir DIR for a folder of results, --output FILE for a "
               "single file (a figure), --report FILE for a JSON report; --device auto|cpu|cuda|"
               "cuda:N (default auto: CUDA when there is one); --limit N = N images as even as "
               "possible over the classes, drawn with --seed; output paths are checked before "
               "any work; bad input gives one line on stderr and exit status 2.")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command module."""
    parser = argparse.ArgumentParser(
        prog="virolbi",
        description="ViRoLBI: inverse-scale-space total-variation smoothing for robust classifiers "
                    "(Zhou et al. 2024).",
        epilog=CONVENTIONS)
    parser.add_argument("--version", action="version", version=f"virolbi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.COMMAND, help=module.HELP, description=module.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _rerun=getattr(module, "RERUN", None))
    return parser


#: errno values of a write that failed for lack of room: no space, quota, file-size limit; and
#: EIO, which :func:`virolbi.io.atomic_path` gives a failed PyTorch write.
_FILE_SYSTEM_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def fail(command: str, message: str) -> int:
    """Print one error line for ``command`` and return the usage exit code."""
    print(f"virolbi {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _disk_full_message(err: OSError, rerun: str | None) -> str:
    """A full disk (or quota, or file-size limit) while writing, in one line naming the file:
    atomic writes have removed their temporaries, so nothing half-written is left. ``rerun`` is
    the command's own word on what running it again does (its ``RERUN``), when it resumes."""
    where = f" writing {err.filename}" if getattr(err, "filename", None) else ""
    after = f"; {rerun}" if rerun else ""
    return (f"{err.strerror or err}{where}: free some space and run it again (finished outputs "
            f"are kept{after})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``virolbi`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except InputError as err:
        return fail(args.command, str(err))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        name = err.filename if getattr(err, "filename", None) else ""
        return fail(args.command, f"{err.strerror or err}: {name}".rstrip(": "))
    except OSError as err:
        if err.errno not in _FILE_SYSTEM_FULL:
            raise
        return fail(args.command, _disk_full_message(err, args._rerun))
    except KeyboardInterrupt:
        print(f"virolbi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
