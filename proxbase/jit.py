"""Compile plumbing for the project's numba kernels (``njit`` replaces numba's in every ``_kernels.py``).

- **Where compiled code is cached**: never next to the sources. An installed package's folder
  (site-packages) is often not the user's to write, and a ``__pycache__`` of numba files left
  there outlives ``pip uninstall`` and turns the folder into a namespace package that shadows an
  editable install of the same project. The cache lives in ``$PROXIMITY_CACHE_DIR``, else numba's
  own ``$NUMBA_CACHE_DIR``, else ``$XDG_CACHE_HOME/proximity/numba`` (``~/.cache/proximity/numba``);
  when that is not writable, in the temp dir; when nothing is, kernels are compiled in each
  process and nothing is written.
- **When a cache is stale**: numba checks only the kernel's own source file, but a kernel compiled
  with its callees from sibling modules (``geofence/_kernels_*.py``) carries their old code too.
  So a kernel's cache entry is keyed on every ``_kernels*.py`` file of its package (name, mtime,
  size): editing or upgrading any of them recompiles the package's kernels.
- **What is compiled**: a kernel is compiled on its first call, for the plain types of its
  arguments. A kernel called from another kernel with a constant (``f(x, 0)``, ``f(a, True)``)
  is compiled for ``int64`` / ``bool``, not once more for each constant's literal type, as numba
  does by default. No kernel is inlined at numba's IR level (LLVM still inlines across kernels):
  copying and retyping the IR of small helpers at every call site cost most of a first compile.
- **What the user sees**: a first compile that takes more than ``SLOW_COMPILE_S`` prints one
  line on stderr naming the kernel and the cache (and, in a log, one every ``STILL_EVERY_S``).

It lives in ``proxbase`` (which every package may import, ``geofence`` and ``beacons`` included) so
that one file serves them all; ``import proxbase`` alone does not import numba, only this module does.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
from numba.core.registry import CPUDispatcher
from numba.core.types.misc import unliteral

#: environment variable naming the cache directory of compiled kernels
CACHE_ENV = "PROXIMITY_CACHE_DIR"
#: a compile step slower than this (seconds) prints one line on stderr ($PROXIMITY_SLOW_COMPILE_S; inf: never)
SLOW_COMPILE_S = float(os.environ.get("PROXIMITY_SLOW_COMPILE_S") or 2.0)
#: ... and, when stderr is not a terminal, one more every this many seconds until it is done
STILL_EVERY_S = 5.0

_lock = threading.RLock()
_chosen: list[str | None] = []  # [directory] once decided
_depth = threading.local()


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def cache_dir() -> str | None:
    """The directory compiled kernels are cached in (decided once per process), or None: no caching."""
    with _lock:
        if not _chosen:
            _chosen.append(_choose())
        return _chosen[0]


def _choose() -> str | None:
    given = os.environ.get(CACHE_ENV) or os.environ.get("NUMBA_CACHE_DIR")
    if given:
        wanted = Path(given).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        wanted = (Path(xdg) if xdg else Path.home() / ".cache") / "proximity" / "numba"
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    for path in (wanted, Path(tempfile.gettempdir()) / f"proximity-numba-{uid}"):
        if _writable(path):
            return str(path)
    return None


#: environment variable naming a file that gets one line per compile (``kernel<TAB>self s<TAB>total s<TAB>how``)
COMPILE_LOG_ENV = "PROXIMITY_COMPILE_LOG"


class Kernel(CPUDispatcher):
    """numba's CPU dispatcher, compiled for plain types and saying so when a first compile is slow."""

    def compile(self, sig: Any) -> Any:
        log = os.environ.get(COMPILE_LOG_ENV)
        if not log:
            return super().compile(sig)
        # CPU seconds of this thread, less those of the kernels compiled inside (their own lines)
        stack = _depth.__dict__.setdefault("children", [])
        hits = sum(self._cache_hits.values())
        known = len(self.overloads)
        t = time.thread_time()
        stack.append(0.0)
        try:
            return super().compile(sig)
        finally:
            inner = stack.pop()
            total = time.thread_time() - t
            if stack:
                stack[-1] += total
            how = "cache" if sum(self._cache_hits.values()) > hits else "compiled"
            if len(self.overloads) > known:  # not a signature already there
                func = self.py_func
                with _lock, open(log, "a", encoding="utf-8") as fh:
                    fh.write(f"{func.__module__}.{func.__qualname__}\t{total - inner:.3f}\t{total:.3f}\t{how}\n")

    def get_call_template(self, args: Any, kws: Any) -> Any:
        # called while typing another kernel: compile for int64, not Literal[int](0)
        args = tuple(unliteral(a) for a in args)
        kws = {k: unliteral(v) for k, v in kws.items()}
        return super().get_call_template(args, kws)

    def _compile_for_args(self, *args: Any, **kws: Any) -> Any:
        with _announce(self):
            return super()._compile_for_args(*args, **kws)


class _announce:
    """Around the outermost compile of a thread: a line on stderr once it has taken SLOW_COMPILE_S, then,
    when stderr is not a terminal (a log, ``| tee``), one every STILL_EVERY_S until it is done."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.done = threading.Event()
        self.watcher: threading.Thread | None = None

    def __enter__(self) -> None:
        depth = getattr(_depth, "n", 0)
        _depth.n = depth + 1
        if depth == 0 and math.isfinite(SLOW_COMPILE_S):
            self.watcher = threading.Thread(target=self._watch, name="proximity-compile-progress", daemon=True)
            self.watcher.start()

    def __exit__(self, *exc: object) -> None:
        _depth.n -= 1
        if self.watcher is not None:
            self.done.set()
            self.watcher.join()  # its lines, if any, are out before the kernel runs

    def _watch(self) -> None:
        if self.done.wait(SLOW_COMPILE_S):
            return
        func = self.kernel.py_func
        name = f"{func.__module__}.{func.__qualname__}"
        where = cache_dir()
        cached = f"cached in {where}" if where else "not cached: no writable cache directory"
        _say(f"proximity: compiling {name} for this machine (first run only; {cached}) ...")
        if _terminal():
            return
        waited = SLOW_COMPILE_S
        while not self.done.wait(STILL_EVERY_S):
            waited += STILL_EVERY_S
            _say(f"proximity: still compiling {name} ({waited:.0f} s)")


def _terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _siblings_stamp(func: Callable[..., Any]) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime in ns, size) of every ``_kernels*.py`` in the folder of ``func``'s module."""
    source = getattr(sys.modules.get(func.__module__), "__file__", None)
    if not source:
        return ()
    stamps = []
    for path in sorted(Path(source).parent.glob("_kernels*.py")):
        try:
            st = path.stat()
        except OSError:
            continue
        stamps.append((path.name, st.st_mtime_ns, st.st_size))
    return tuple(stamps)


def compiled(kernel: Any) -> bool:
    """Whether ``kernel`` (made by :func:`njit`) has machine code in this process: compiled, or loaded from
    the kernel cache by a first call. A small batch's numpy twin of a kernel (there so that a first run
    compiles less) steps aside for the kernel then, which is faster on every batch after."""
    return bool(getattr(kernel, "overloads", None))  # (not `signatures`: a list built on every call)


def njit(fn: Callable[..., Any] | None = None, *, cache: bool = True, **options: Any) -> Any:
    """``numba.njit`` for the package's kernels: cached in :func:`cache_dir`, see the module's doc.

    ``inline`` is refused: see the module's doc. Other numba options (``parallel``, ``fastmath``,
    ``nogil``, ...) are passed on.
    """
    if "inline" in options:
        raise TypeError("njit: kernels are not inlined at numba's IR level (see proxbase/jit.py)")

    def wrap(func: Callable[..., Any]) -> Any:
        if numba.config.DISABLE_JIT:
            return func
        targetoptions = {"nopython": True, "no_cfunc_wrapper": True, **options}
        disp = Kernel(py_func=func, locals={}, targetoptions=targetoptions)
        where = cache_dir() if cache else None
        if where:
            with _lock:
                saved = numba.config.CACHE_DIR
                numba.config.CACHE_DIR = where  # read once, when the kernel's cache is made
                try:
                    disp.enable_caching()
                finally:
                    numba.config.CACHE_DIR = saved
                index = disp._cache._cache_file
                index._source_stamp = (index._source_stamp, _siblings_stamp(func))
        return disp

    return wrap(fn) if fn is not None else wrap
