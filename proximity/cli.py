"""The ``proximity`` command.

Each command group (``fences``, ``beacons``, ``campaigns``, ``gateway``, ``serve``,
``sim``) is one module in :mod:`proximity.commands` with a
``register(subparsers)`` function; the function it sets as the parser's
``run`` default returns the exit code.

Errors that carry a location (any of the project's validation errors) are
printed as ``file:line:col: message`` on stderr with exit code 2; the user never
sees a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

import proximity.commands as commands
from proximity.errors import describe

EXIT_OK = 0
EXIT_INVALID = 2


class _Version(argparse.Action):
    """``--version``: the line is computed when asked for (it imports numba), not for every command."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        print(version_line())
        parser.exit()


def version_line() -> str:
    """``proximity 0.1.0 (/path/to/proximity; Python 3.11.7; numba 0.60.0; kernel cache DIR)``."""
    import platform

    import numba

    from proxbase.jit import cache_dir
    from proximity import __version__

    here = os.path.dirname(os.path.abspath(commands.__path__[0]))
    return (f"proximity {__version__} ({here}; Python {platform.python_version()}; numba {numba.__version__}; "
            f"kernel cache {cache_dir() or 'off: no writable directory'})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proximity",
        description="BLE beacon and geofencing proximity engine.",
    )
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the version, where the package is imported from and the kernel cache; exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    try:
        return int(run(args) or 0)
    except BrokenPipeError:
        # the reader went away (`... | head`): stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (ValueError, OSError) as exc:
        # ValueError covers every validation error of the project (they all subclass it).
        print(f"error: {describe(exc)}" if not getattr(exc, "source", None) else describe(exc), file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
