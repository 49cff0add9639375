"""The public API: ``__all__`` sorted, complete and importable."""

from __future__ import annotations

import campaigns
import campaigns.dispatch


def test_all_is_sorted_and_exported() -> None:
    for module in (campaigns, campaigns.dispatch):
        names = module.__all__
        assert names == sorted(names)
        for name in names:
            assert hasattr(module, name), name


def test_every_public_class_and_function_is_in_all() -> None:
    for module in (campaigns, campaigns.dispatch):
        defined = {
            n for n, v in vars(module).items()
            if not n.startswith("_") and callable(v) and getattr(v, "__module__", "").startswith(module.__name__ + ".")
        }
        assert defined <= set(module.__all__), defined - set(module.__all__)


def test_campaigns_imports_nothing_of_proximity_but_events() -> None:
    import ast
    from pathlib import Path

    root = Path(campaigns.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.startswith("proximity"):
                    assert name == "proximity.events", f"{path.name} imports {name}"
