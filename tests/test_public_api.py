"""Every package's public face: ``__all__`` is sorted, unique, importable and documented, and the examples
in the package docstrings run.

A name is documented when it has its own docstring (functions, classes, modules) or, for a constant,
when the package docstring or the defining module says what it is (a ``#:`` comment or a mention).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import subprocess
import sys
from types import ModuleType

import pytest

PACKAGES = ["proxbase", "geofence", "beacons", "proximity", "proximity.service", "campaigns",
            "campaigns.dispatch", "sim"]


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_unique_and_importable(name: str) -> None:
    pkg = importlib.import_module(name)
    names = list(pkg.__all__)
    assert names, f"{name} exports nothing"
    assert len(set(names)) == len(names), f"{name}.__all__ has duplicates"
    assert names == sorted(names, key=isort_key), f"{name}.__all__ is not sorted"
    for n in names:
        assert getattr(pkg, n) is not None, f"{name}.{n}"
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    assert set(names) <= set(namespace)


def _documented(pkg: ModuleType, name: str, obj: object) -> bool:
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj) or inspect.isbuiltin(obj):
        return bool(inspect.getdoc(obj))
    if callable(obj) and getattr(obj, "__doc__", None) and type(obj).__doc__ != obj.__doc__:
        return True
    home = [pkg]
    for mod in list(sys.modules.values()):
        if isinstance(mod, ModuleType) and mod.__name__.startswith(pkg.__name__.split(".")[0]) \
                and getattr(mod, name, None) is obj and mod is not pkg:
            home.append(mod)
    for mod in home:
        try:
            source = inspect.getsource(mod)
        except (OSError, TypeError):
            continue
        if "#: " in source and any(line.strip().startswith("#:") for line in _preceding(source, name)):
            return True
        if name in (mod.__doc__ or ""):
            return True
    return False


def _preceding(source: str, name: str) -> list[str]:
    """The comment lines right above ``name``'s assignment (or above the group of constants it belongs to)."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if line.startswith((f"{name} =", f"{name}:")):
            j = i - 1
            while j >= 0 and lines[j][:1].isupper() and " = " in lines[j]:  # a group of constants
                j -= 1
            out = []
            while j >= 0 and lines[j].lstrip().startswith("#"):
                out.append(lines[j])
                j -= 1
            return out
    return []


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_is_documented(name: str) -> None:
    pkg = importlib.import_module(name)
    assert inspect.getdoc(pkg), f"{name} has no docstring"
    missing = [n for n in pkg.__all__ if not _documented(pkg, n, getattr(pkg, n))]
    assert not missing, f"{name}: undocumented public names {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_package_docstring_examples_run(name: str) -> None:
    pkg = importlib.import_module(name)
    result = doctest.testmod(pkg, verbose=False, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_importing_campaigns_or_the_engine_does_not_load_redis() -> None:
    code = ("import sys, campaigns, proximity, proximity.engine, proximity.store; "
            "assert 'redis' not in sys.modules, sorted(m for m in sys.modules if m.startswith('redis'))[:3]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
