"""The public API: ``__all__`` is sorted (isort style, as ruff's RUF022), complete and importable."""

from __future__ import annotations

import beacons


def test_all_is_sorted_and_resolves() -> None:
    names = beacons.__all__
    assert len(set(names)) == len(names)
    consts = [n for n in names if n.isupper()]
    classes = [n for n in names if n[0].isupper() and not n.isupper()]
    funcs = [n for n in names if n[0].islower()]
    assert names == sorted(consts) + sorted(classes) + sorted(funcs)
    for name in names:
        assert getattr(beacons, name) is not None


def test_public_names_are_exported() -> None:
    public = {n for n, v in vars(beacons).items()
              if not n.startswith("_") and getattr(v, "__module__", "").startswith("beacons")}
    assert public <= set(beacons.__all__), public - set(beacons.__all__)
