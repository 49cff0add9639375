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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proximity",
        description="BLE beacon and geofencing proximity engine.",
    )
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
