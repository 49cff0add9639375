"""The kernels' compile plumbing (proxbase/jit.py): where compiled code goes, what is compiled, what is said."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from numba.core.caching import NullCache
from numba.core.dispatcher import Dispatcher

import proxbase.jit as jit

ROOT = Path(__file__).resolve().parents[2]
KERNEL_MODULES = ["geofence._kernels", "proximity._kernels", "proximity._kernels_visit", "proximity._kernels_ids",
                  "beacons._kernels", "sim._kernels", "campaigns._kernels"]

# one small kernel (a full index would take a cold compile of every kernel per test)
KERNEL = """
from geofence import _kernels as K
print(K.lon_pieces(-181.0, -179.0).tolist())
"""
ANSWER = "[[-180.0,-179.0],[179.0,180.0]]"


def _compiled_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".nbi", ".nbc"))


def _run(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", jit.CACHE_ENV, "XDG_CACHE_HOME")}
    env.update({"PYTHONPATH": str(tmp_path / "site"), "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"),
                **extra})
    return env


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A copy of the geofence package (and proxbase, its base) as pip installs them: folders of their own,
    writable by their user."""
    site = tmp_path / "site"
    for package in ("geofence", "proxbase"):
        shutil.copytree(ROOT / package, site / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    return site


def test_compiled_code_is_cached_in_the_users_cache_never_in_the_package(installed: Path, tmp_path: Path) -> None:
    """pip install . then pip install -e . broke every command: numba's cache files left in
    site-packages/geofence/__pycache__ made the folder a namespace package shadowing the checkout."""
    env = _env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    for _ in range(2):  # the second run loads what the first one cached
        got = _run(KERNEL, env, tmp_path)
        assert got.returncode == 0, got.stderr
        assert got.stdout.replace(" ", "").strip() == ANSWER
    assert _compiled_files(installed) == []
    cached = _compiled_files(tmp_path / "xdg" / "proximity" / "numba")
    assert any(p.name.startswith("_kernels_grid.lon_pieces") for p in cached)


def test_proximity_cache_dir_wins_then_numbas_own(installed: Path, tmp_path: Path) -> None:
    ours, numbas = tmp_path / "ours", tmp_path / "numbas"
    got = _run(KERNEL, _env(tmp_path, PROXIMITY_CACHE_DIR=str(ours), NUMBA_CACHE_DIR=str(numbas)), tmp_path)
    assert got.returncode == 0, got.stderr
    assert _compiled_files(ours) and not numbas.exists() and _compiled_files(installed) == []
    got = _run(KERNEL, _env(tmp_path, NUMBA_CACHE_DIR=str(numbas)), tmp_path)
    assert got.returncode == 0, got.stderr
    assert _compiled_files(numbas)


def test_an_unwritable_cache_falls_back_to_the_temp_dir(installed: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    code = KERNEL + "import proxbase.jit as j; print(j.cache_dir())\n"
    got = _run(code, _env(tmp_path, PROXIMITY_CACHE_DIR=str(blocker / "cache")), tmp_path)
    assert got.returncode == 0, got.stderr
    fallback = tmp_path / "tmp" / f"proximity-numba-{os.getuid()}"
    assert got.stdout.split("\n")[1:3] == [str(fallback), ""]
    assert _compiled_files(fallback) and _compiled_files(installed) == []


def test_nothing_writable_compiles_in_the_process_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    monkeypatch.setenv(jit.CACHE_ENV, str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))
    assert jit._choose() is None
    monkeypatch.setattr(jit, "_chosen", [None])

    @jit.njit
    def twice(x):
        return 2 * x

    assert twice(21) == 42
    assert isinstance(twice._cache, NullCache)
    assert _compiled_files(Path(__file__).parent) == []


@pytest.mark.parametrize("module", KERNEL_MODULES)
def test_every_kernel_goes_through_the_plumbing(module: str) -> None:
    mod = importlib.import_module(module)
    kernels = {name: obj for name, obj in vars(mod).items() if isinstance(obj, Dispatcher)}
    assert kernels
    strays = sorted(name for name, obj in kernels.items() if not isinstance(obj, jit.Kernel))
    assert strays == [], f"{module}: use proxbase.jit.njit for {strays} (cache location, one compile per type)"


def test_a_constant_argument_compiles_no_second_specialisation() -> None:
    @jit.njit(cache=False)
    def scale(x, k):
        return x * k

    @jit.njit(cache=False)
    def by_two(x):
        return scale(x, 2)

    @jit.njit(cache=False)
    def by_k(x, k):
        return scale(x, k)

    assert by_two(3) == 6 and by_k(3, 5) == 15
    assert [str(s) for s in scale.signatures] == ["(int64, int64)"]


def test_compiled_says_whether_a_kernel_has_machine_code_yet() -> None:
    @jit.njit(cache=False)
    def twice(x):
        return 2 * x

    assert not jit.compiled(twice)
    assert twice(2) == 4
    assert jit.compiled(twice)
    assert not jit.compiled(twice.py_func)  # (what a kernel is under NUMBA_DISABLE_JIT: its numpy twin runs)


def test_inline_is_refused() -> None:
    with pytest.raises(TypeError, match="inline"):
        jit.njit(inline="always")


def test_a_slow_first_compile_says_so_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(jit, "SLOW_COMPILE_S", 0.0)

    @jit.njit(cache=False)
    def add_one(x):
        return x + 1

    assert add_one(1) == 2
    assert add_one(2) == 3  # compiled: no second line
    err = capsys.readouterr().err
    assert err.count("proximity: compiling") == 1
    assert "add_one" in err and "first run only" in err


def test_a_slow_compile_in_a_log_says_it_is_still_going(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(jit, "SLOW_COMPILE_S", 0.0)
    monkeypatch.setattr(jit, "STILL_EVERY_S", 0.001)  # stderr is captured here: not a terminal

    @jit.njit(cache=False)
    def add_two(x):
        return x + 2

    assert add_two(1) == 3
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("proximity: compiling ") and "add_two" in lines[0]
    assert len(lines) > 1 and all(line.startswith("proximity: still compiling ") for line in lines[1:])


def test_a_kernel_recompiles_when_a_sibling_kernels_module_changes(installed: Path, tmp_path: Path) -> None:
    """numba checks only the kernel's own file; a callee in another ``_kernels*.py`` of the package is
    compiled into it, so an edit there (or an upgrade) must recompile it. The compile log says which."""
    log = tmp_path / "compiles.log"
    env = _env(tmp_path, PROXIMITY_CACHE_DIR=str(tmp_path / "cache"), **{jit.COMPILE_LOG_ENV: str(log)})

    def run() -> str:
        log.unlink(missing_ok=True)
        got = _run(KERNEL, env, tmp_path)
        assert got.returncode == 0, got.stderr
        assert got.stdout.replace(" ", "").strip() == ANSWER
        hows = {line.split("\t")[0]: line.split("\t")[3] for line in log.read_text().splitlines()}
        return hows["geofence._kernels_grid.lon_pieces"]

    assert run() == "compiled"
    assert run() == "cache"
    sibling = installed / "geofence" / "_kernels_geometry.py"
    sibling.write_text(sibling.read_text() + "\n# edited\n")
    assert run() == "compiled"
    assert run() == "cache"
