"""The background advance loop under a Redis failure between its save and its campaign decisions: the
exit events of the pass are kept by the worker and decided on the next pass, so their offers are not
lost (decisions are keyed by offer id: a decision that half ran is not taken twice)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from proximity.errors import StoreUnavailable
from proximity.service.config import ServiceConfig
from proximity.service.host import EngineHost
from proximity.service.metrics import ServiceMetrics
from tests.proximity import _faults as F


def _host(tmp_path: Path) -> EngineHost:
    paths = F.write_scenario(tmp_path)
    host = EngineHost(ServiceConfig(rate_limit=0, engine={"gps_debounce_s": 60}), ServiceMetrics())
    for kind in ("fences", "campaigns"):
        text = paths[kind].read_text()
        host.apply(kind, host.validate(kind, text, "application/yaml", str(paths[kind])))
    return host


def _visit(host: EngineHost, t0: float) -> None:
    _, lon, lat = F.STORES[0]
    rows = [{"device_id": "dev-1", "lon": lon + F.SIZE / 2, "lat": lat + F.SIZE / 2, "accuracy_m": 8.0,
             "ts": t0 + 10 * k} for k in range(8)]  # the default profile enters by the eighth fix inside
    result, accepted, _ = host.process_pings(rows, time.time())
    assert accepted == 8 and [e.kind for e in result.events] == ["enter"]


def test_exit_offers_of_a_pass_whose_decisions_failed_come_with_the_next_pass(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    host = _host(tmp_path)
    t0 = time.time() - 3600
    _visit(host, t0)
    rules = host.campaigns
    decide = rules.decide
    calls: list[int] = []

    def fail_once(events: Any, devices: Any, now: float) -> Any:
        calls.append(len(events))
        if len(calls) == 1:
            raise StoreUnavailable("Redis away (injected)", retry_after_s=1.0)
        return decide(events, devices, now)

    monkeypatch.setattr(rules, "decide", fail_once)
    with pytest.raises(StoreUnavailable):
        host.advance(t0 + 1000)  # the exit is saved, its decision fails
    again = host.advance(t0 + 1001)  # nothing new is due: the kept exit is decided now
    assert [e.kind for e in again.events] == ["exit"]
    assert [o.campaign_id for o in again.offers] == ["come-back"]
    assert host.advance(t0 + 1002).events == []  # once
    host.engine.store.close()


def test_a_pass_without_failure_decides_its_own_events(tmp_path: Path) -> None:
    host = _host(tmp_path)
    t0 = time.time() - 3600
    _visit(host, t0)
    result = host.advance(t0 + 1000)
    assert [e.kind for e in result.events] == ["exit"] and [o.campaign_id for o in result.offers] == ["come-back"]
