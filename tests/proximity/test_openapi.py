"""The OpenAPI document matches the routes the app really registers, scope for scope."""

from __future__ import annotations

import json
from typing import Any

from proximity.service import create_app
from proximity.service.config import ServiceConfig
from proximity.service.openapi import HTTP_METHODS, openapi_spec, operations


def registered(app) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        out[(route.method, route.resource.canonical)] = getattr(route.handler, "scopes", "MISSING")
    return out


def test_spec_and_routes_agree_on_paths_methods_and_scopes() -> None:
    app = create_app(ServiceConfig(rate_limit=0))
    routes = registered(app)
    spec_ops = operations(openapi_spec())
    assert set(routes) == set(spec_ops), (
        f"only in the app: {sorted(set(routes) - set(spec_ops))}; only in the spec: "
        f"{sorted(set(spec_ops) - set(routes))}"
    )
    for key, op in spec_ops.items():
        scopes = routes[key]
        assert scopes != "MISSING", f"{key} has no @requires(...) scope"
        assert op["x-scopes"] == list(scopes), key
        if not scopes:
            assert op["security"] == []
        else:
            assert sorted(v for s in op["security"] for (v,) in s.values()) == sorted(2 * list(scopes)), key
            for status in ("401", "403", "429", "503"):
                assert status in op["responses"], (key, status)


def test_spec_is_json_and_every_ref_resolves() -> None:
    spec = openapi_spec()
    text = json.dumps(spec, allow_nan=False)
    refs = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"], ref
    op_ids = [op["operationId"] for op in operations(spec).values()]
    assert len(op_ids) == len(set(op_ids))
    for path, item in spec["paths"].items():
        for name in item:
            assert name in (*HTTP_METHODS, "parameters"), (path, name)
        if "{" in path:
            assert item["parameters"][0]["name"] in path
    assert "NaN" not in text


def test_openapi_json_mutation_does_not_leak() -> None:
    spec = openapi_spec()
    spec["paths"].clear()
    assert openapi_spec()["paths"]
