"""``python -m benchmarks all|PART [args...]``: run one part, or every part in turn within a time budget."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

from benchmarks._common import describe_machine

#: run order for ``all``, with the arguments ``all`` gives each part (the whole stays under 10 minutes)
PARTS: dict[str, list[str]] = {
    "matching": [],
    "engine": [],
    "http": ["--quick", "--redis", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), "--workers", "2"],
    "scaling": ["--quick"],
    "redis_memory": ["--redis", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), "--devices", "2000"],
    "report": [],
    "firstrun": ["--rounds", "1"],
}

USAGE = f"""usage: python -m benchmarks all [--full] | {{{','.join(PARTS)}}} [args...]

  all        every part in turn, each in its own process: matching (1M pings) and
             the engine (1M devices) at full size, http and scaling at their quick
             sizes, about 6 minutes in all; --full: every part at its full size
  PART       one part; `python -m benchmarks PART --help` for its options
Results go to benchmarks/results/PART.json."""


def run_all(full: bool) -> int:
    print(f"# python -m benchmarks all on {describe_machine()}", flush=True)
    failed: list[str] = []
    t_all = time.perf_counter()
    for part, quick_args in PARTS.items():
        args = [] if full else quick_args
        print(f"\n## {part} {' '.join(args)}".rstrip(), flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "benchmarks", part, *args])
        print(f"## {part}: exit {rc}, {time.perf_counter() - t:.0f} s", flush=True)
        if rc != 0:
            failed.append(part)
    print(f"\n# all parts done in {time.perf_counter() - t_all:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    part, rest = argv[0], argv[1:]
    if part == "all":
        return run_all(full="--full" in rest)
    if part not in PARTS:
        print(f"error: unknown part {part!r}; choose from all, {', '.join(PARTS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{part}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
