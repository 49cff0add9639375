"""``GET /v1/campaigns/{id}/report`` on two real ``proximity serve`` workers sharing one real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.proximity import _serve_workers as sw

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EXPERIMENT = """\
campaigns:
  - id: welcome
    trigger: {on: enter, tags: [shop]}
    offer: {title: "Welcome to {store.name}"}
    limits:
      per_device: {max: 1, window: 1d}
    experiment:
      holdout: 50%
      variants: [{id: a}, {id: b}]
    conversion:
      visit: {tags: [shop]}
      within: 1h
"""


def counts(body: dict) -> dict:
    return {(r["level"], r["variant"], r["store"]): (r["exposed"], r["converted"], r["holdout_exposed"],
                                                      r["holdout_converted"]) for r in body["lift"]}


def test_two_workers_on_redis_report_what_one_process_reports(tmp_path: Path, redis_url: str,
                                                              redis_prefix: str) -> None:
    paths = sw.write_scenario(tmp_path)
    paths["campaigns"].write_text(EXPERIMENT)
    batches = sw.ping_batches(time.time())  # every device: outside, shop A, outside, shop B
    with sw.workers(paths, 2, redis=redis_url, prefix=redis_prefix, timeout=240) as urls:
        events, offers = sw.play(urls, batches)
        answers = [sw.request(u, "GET", "/v1/campaigns/welcome/report?min_exposed=1") for u in urls]
        assert sw.request(urls[0], "GET", "/v1/campaigns/nope/report")[0] == 404
        status, body = sw.request(urls[1], "GET", "/v1/campaigns/welcome/report?min_exposed=0")
        assert status == 400 and body["field"] == "min_exposed"
    assert [s for s, _ in answers] == [200, 200]
    shared = answers[0][1]
    assert answers[1][1] == shared  # both workers answer from the same counters
    top = shared["lift"][0]
    assert top["level"] == "campaign" and top["campaign_id"] == "welcome"
    entered = {e[0] for e in events if e[1] == "enter"}
    assert top["exposed"] + top["holdout_exposed"] == len(entered) == 24  # once per device (cap 1/day)
    assert top["exposed"] == len({o[0] for o in offers}) and top["holdout_exposed"] > 0
    # every device goes on to the second shop: each exposure converts, treated and held out alike
    assert (top["converted"], top["holdout_converted"]) == (top["exposed"], top["holdout_exposed"])
    assert {r["variant"] for r in shared["lift"] if r["level"] == "variant"} == {"a", "b"}
    assert "lift_ci" in top and top["status"] == "not significant"
    with sw.workers(paths, 1, timeout=240) as urls:
        sw.play(urls, batches)
        status, single = sw.request(urls[0], "GET", "/v1/campaigns/welcome/report?min_exposed=1")
    assert status == 200 and counts(single) == counts(shared)
