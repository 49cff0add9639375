"""Events in, offers out: matching, priority, audiences, quiet hours, caps, explanations."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from campaigns import CampaignRules, FenceInfo, MemoryOutbox, loads_campaigns
from proximity.events import Device, Event

PARIS = ZoneInfo("Europe/Paris")
FENCES = {
    "cafe": FenceInfo.create("cafe", "Café Lune", ["coffee"], {"timezone": "Europe/Paris", "floor": 2,
                             "opening_hours": {"mon-sat": "07:00-19:00"}}),
    "mall": FenceInfo.create("mall", "Galerie", ["mall"], {"timezone": "Europe/Paris"}),
    "shop": FenceInfo.create("shop", "Épicerie", ["grocery", "mall"], {"timezone": "Europe/Paris"}),
}


def at(*args: int) -> float:
    return dt.datetime(*args, tzinfo=PARIS).timestamp()


MON_10 = at(2026, 3, 9, 10, 0)


def rules(yaml: str, **kw: Any) -> CampaignRules:
    return CampaignRules(loads_campaigns(yaml, fences=FENCES), FENCES, **kw)


def ev(kind: str = "enter", fence: str = "cafe", ts: float = MON_10, device: str = "d1", **kw: Any) -> Event:
    return Event(kind=kind, device_id=device, fence_id=fence, ts=ts, **kw)  # type: ignore[arg-type]


def dev(device: str = "d1", **attrs: Any) -> dict[str, Device]:
    tz = attrs.pop("tz", None)
    opted = attrs.pop("opted_out", False)
    return {device: Device(device, attrs, tz, opted)}


BASIC = """
campaigns:
  - id: coffee
    priority: 10
    trigger: {on: enter, tags: [coffee]}
    offer:
      title: "Hi {device.first_name|there}, welcome to {store.name} (floor {store.floor})"
      body: "{campaign.name} at {store.id}"
      data: {d: "{dwell_min} min", n: 3}
  - id: any-enter
    priority: 1
    trigger: {on: enter}
    offer: {title: "Any store"}
  - id: paused
    status: paused
    priority: 99
    trigger: {on: enter}
    offer: {title: paused}
"""


def test_one_offer_per_event_from_the_highest_priority() -> None:
    r = rules(BASIC)
    (d,) = r.evaluate([ev()], dev(first_name="Ana"), MON_10)
    assert d.offer is not None and d.offer.campaign_id == "coffee"
    assert d.offer.title == "Hi Ana, welcome to Café Lune (floor 2)"
    assert d.offer.body == "coffee at cafe"
    assert dict(d.offer.data) == {"d": "0 min", "n": 3}
    assert [(v.campaign_id, v.outcome) for v in d.verdicts] == [("paused", "paused"), ("coffee", "offer"), ("any-enter", "outranked")]
    # a second event at another store: only the generic campaign matches
    (d2,) = r.evaluate([ev(fence="mall", ts=MON_10 + 5)], dev(), MON_10)
    assert d2.offer is not None and d2.offer.campaign_id == "any-enter"


def test_offer_ids_are_stable_per_event_and_campaign() -> None:
    a = rules(BASIC).decide([ev()], dev(), MON_10)
    b = rules(BASIC).decide([ev()], dev(), MON_10)
    c = rules(BASIC).decide([ev(ts=MON_10 + 1)], dev(), MON_10)
    assert a[0].offer_id == b[0].offer_id != c[0].offer_id


def test_triggers_dwell_exit_and_beacon() -> None:
    r = rules("""
campaigns:
  - id: dwell10
    trigger: {on: dwell, dwell: 10m, fences: [mall]}
    offer: {title: "{dwell_min} minutes"}
  - id: bye
    trigger: {on: exit, tags: [grocery]}
    offer: {title: bye}
  - id: till
    trigger: {on: beacon, zones: [checkout], proximity: near}
    offer: {title: "zone {zone}"}
""")
    events = [
        ev("dwell", "mall", dwell_s=300.0),
        ev("dwell", "mall", MON_10 + 1, dwell_s=600.0),
        ev("exit", "shop", MON_10 + 2),
        ev("exit", "cafe", MON_10 + 3),
        ev("enter", "shop", MON_10 + 4, zone="checkout", source="beacon", proximity="far"),
        ev("enter", "shop", MON_10 + 5, zone="checkout", source="beacon", proximity="immediate"),
        ev("enter", "shop", MON_10 + 6, zone="entrance", source="beacon", proximity="immediate"),
        ev("dwell", "mall", MON_10 + 7, zone="checkout", source="beacon", dwell_s=600.0),
    ]
    offers = r.decide(events, dev(), MON_10)
    assert [(o.campaign_id, o.title) for o in offers] == [("dwell10", "10 minutes"), ("bye", "bye"), ("till", "zone checkout")]
    assert offers[2].place == "shop#checkout"
    assert r.dwell_thresholds() == {"mall": [600.0]}


def test_dwell_thresholds_by_tag_and_wildcard() -> None:
    r = rules("""
campaigns:
  - id: a
    trigger: {on: dwell, dwell: 5m, tags: [mall]}
    offer: {title: a}
  - id: b
    trigger: {on: dwell, dwell: 15m}
    offer: {title: b}
  - id: c
    status: paused
    trigger: {on: dwell, dwell: 45m}
    offer: {title: c}
""")
    assert r.dwell_thresholds() == {"*": [900.0], "mall": [300.0], "shop": [300.0]}


def test_audience_segments_attributes_and_opt_out() -> None:
    r = rules("""
campaigns:
  - id: vip
    trigger: {on: enter}
    audience:
      segments: {any: [gold, silver], none: [staff]}
      attributes: {age: {min: 18, max: 30}, lang: {in: [fr, en]}, app: {equals: ios}}
    offer: {title: vip}
""")
    ok = {"segments": ["gold"], "age": 20, "lang": "fr", "app": "ios"}
    cases = [
        (ok, None),
        ({**ok, "segments": ["bronze"]}, "in none of the segments"),
        ({**ok, "segments": ["gold", "staff"]}, "excluded segments"),
        ({**ok, "age": 31}, "attribute age=31"),
        ({**ok, "age": "old"}, "attribute age='old'"),
        ({**ok, "lang": "de"}, "attribute lang"),
        ({k: v for k, v in ok.items() if k != "app"}, "attribute app=None"),
    ]
    for attrs, why in cases:
        (d,) = r.evaluate([ev()], dev(**attrs), MON_10)
        if why is None:
            assert d.offer is not None
        else:
            assert d.offer is None and why in d.verdicts[0].reason, (attrs, d.verdicts)
    (d,) = r.evaluate([ev()], dev(opted_out=True, **ok), MON_10)
    assert d.offer is None and d.verdicts[0].reason == "audience: device opted out"
    # the opt_out attribute (JSON true, or a text from a CSV column or a form) is respected too
    for flag, refused in ((True, True), ("true", True), ("1", True), ("Yes", True), ("false", False), ("", False), (0, False)):
        (d,) = r.evaluate([ev()], dev(opt_out=flag, **ok), MON_10)
        assert (d.offer is None) == refused, flag
        assert (d.verdicts[0].reason == "audience: device opted out") == refused


def test_schedule_uses_the_stores_zone_then_the_devices() -> None:
    r = rules("""
campaigns:
  - id: morning
    trigger: {on: enter}
    schedule: {hours: "09:00-11:00", days: mon-fri}
    offer: {title: m}
""")
    unknown = FenceInfo.create("far", "Far away")
    r.replace(r.campaigns, {**FENCES, "far": unknown})
    # 10:00 in Paris: the Paris store is in schedule
    assert r.decide([ev(fence="cafe")], dev(), MON_10)
    # a store without a zone: the device's zone decides (10:00 Paris = 05:00 New York)
    (d,) = r.evaluate([ev(fence="far", ts=MON_10 + 1)], dev(tz="America/New_York"), MON_10)
    assert d.offer is None and "outside hours" in d.verdicts[0].reason and "America/New_York" in d.verdicts[0].reason
    # neither: UTC (09:00 UTC, in schedule)
    assert r.decide([ev(fence="far", ts=MON_10 + 2)], dev(), MON_10)


def test_quiet_hours_hold_and_drop() -> None:
    text = """
defaults:
  quiet_hours: {hours: "21:00-08:00", mode: %s}
campaigns:
  - id: c
    trigger: {on: enter}
    offer: {title: c}
    limits: {per_device: {max: 1, window: 1d}}
"""
    late = at(2026, 3, 9, 22, 30)
    outbox = MemoryOutbox()
    r = rules(text % "hold", outbox=outbox)
    (d,) = r.evaluate([ev(ts=late, fence="mall")], dev(tz="Europe/Paris"), late)
    assert d.offer is not None and d.offer.deliver_after == at(2026, 3, 10, 8, 0)
    assert d.verdicts[0].outcome == "held" and "08:00" in d.verdicts[0].reason
    assert outbox.claim("w", now=late) == []  # held in the outbox until the quiet window ends
    assert [e.offer.offer_id for e in outbox.claim("w", now=at(2026, 3, 10, 8, 0))] == [d.offer.offer_id]

    r = rules(text % "drop")
    (d,) = r.evaluate([ev(ts=late, fence="mall")], dev(tz="Europe/Paris"), late)
    assert d.offer is None and d.verdicts[0].outcome == "dropped"
    # a dropped offer consumed no cap: the next morning it fires
    assert r.decide([ev(ts=at(2026, 3, 10, 9, 0), fence="mall")], dev(tz="Europe/Paris"), late)


CAPPED = """
defaults:
  limits: {per_device: {max: 3, window: 24h}}
campaigns:
  - id: hi
    priority: 5
    trigger: {on: enter, tags: [coffee]}
    offer: {title: hi}
    limits:
      per_device: {max: 1, window: 1d, kind: calendar}
  - id: lo
    trigger: {on: enter}
    offer: {title: lo}
    limits:
      cooldown: 1h
      budget: {total: 4, per_day: 3}
"""


def test_caps_bite_and_the_next_campaign_gets_its_chance() -> None:
    r = rules(CAPPED)
    d = r.evaluate([ev(ts=MON_10)], dev(), MON_10)[0]
    assert d.offer is not None and d.offer.campaign_id == "hi"
    d = r.evaluate([ev(ts=MON_10 + 60)], dev(), MON_10)[0]
    assert d.offer is not None and d.offer.campaign_id == "lo"  # hi is capped for the day: lo fires
    assert d.verdicts[0].outcome == "blocked" and d.verdicts[0].cap == "per_device 1/1d calendar"
    d = r.evaluate([ev(ts=MON_10 + 120)], dev(), MON_10)[0]
    assert d.offer is None and d.verdicts[1].cap == "cooldown 1h at cafe"
    d = r.evaluate([ev(fence="mall", ts=MON_10 + 180)], dev(), MON_10)[0]
    assert d.offer is not None  # the cooldown is per fence
    d = r.evaluate([ev(fence="shop", ts=MON_10 + 240)], dev(), MON_10)[0]
    assert d.offer is None and d.verdicts[0].cap == "global per_device 3/24h"
    # other devices: per-day budget 3 with 2 used
    d = r.evaluate([ev(fence="mall", ts=MON_10 + 300, device="d2")], dev("d2"), MON_10)[0]
    assert d.offer is not None and d.offer.campaign_id == "lo"
    d = r.evaluate([ev(fence="mall", ts=MON_10 + 360, device="d3")], dev("d3"), MON_10)[0]
    assert d.offer is None and d.verdicts[0].cap == "budget per_day 3"
    # the next day: budget total 4 allows one more
    tue = at(2026, 3, 10, 10, 0)
    assert [o.device_id for o in r.decide([ev(fence="mall", ts=tue, device="d3"), ev(fence="mall", ts=tue + 1, device="d4")], {}, tue)] == ["d3"]
    d = r.recent[-1]
    assert d.verdicts[0].cap == "budget total 4"


def test_explain_is_a_dry_run() -> None:
    r = rules(CAPPED)
    d = r.explain(ev(), Device("d1"))
    assert d.offer is not None and "hi" in d.explain()
    assert r.decide([ev()], dev(), MON_10)  # the dry run consumed nothing
    d = r.explain(ev(ts=MON_10 + 1), Device("d1"))
    assert d.verdicts[0].outcome == "blocked"
    assert "hi: blocked: cap per_device 1/1d calendar reached (1 used)" in d.explain()


def test_a_retried_decision_issues_the_same_offer_once() -> None:
    outbox = MemoryOutbox()
    r = rules(CAPPED, outbox=outbox)
    first = r.decide([ev()], dev(), MON_10)
    again = r.decide([ev()], dev(), MON_10)
    assert [o.offer_id for o in first] == [o.offer_id for o in again]
    assert outbox.pending() == 1
    assert "already issued" in r.recent[-1].verdicts[0].reason


def test_events_with_no_matching_campaign_and_unknown_fence() -> None:
    r = rules(BASIC)
    d = r.evaluate([ev("exit")], dev(), MON_10)[0]
    assert d.offer is None and d.verdicts == ()
    d = r.evaluate([ev(fence="nowhere")], dev(), MON_10)[0]
    assert d.offer is not None and d.offer.campaign_id == "any-enter"  # tags need a known fence


@pytest.mark.redis
def test_decider_on_redis_caps(redis_url: str, redis_prefix: str) -> None:
    from campaigns import RedisLimiter

    r = rules(CAPPED, limiter=RedisLimiter(redis_url, redis_prefix))
    got = [o.campaign_id for o in r.decide([ev(ts=MON_10 + i * 60) for i in range(3)], dev(), MON_10)]
    assert got == ["hi", "lo"]


def test_segments_all_needs_every_one() -> None:
    r = rules("""
campaigns:
  - id: both
    trigger: {on: enter}
    audience: {segments: {all: [gold, parent]}}
    offer: {title: both}
""")
    assert r.decide([ev()], dev(segments=["gold", "parent", "runner"]), MON_10)
    (d,) = r.evaluate([ev(ts=MON_10 + 1)], dev(segments=["gold"]), MON_10)
    assert d.offer is None and d.verdicts[0].reason == "audience: not in segments ['parent']"
    (d,) = r.evaluate([ev(ts=MON_10 + 2)], dev(segments="gold"), MON_10)  # one segment as a text
    assert d.offer is None and d.verdicts[0].outcome == "audience"


def test_the_stores_zone_wins_over_the_devices_for_schedules() -> None:
    r = rules("""
campaigns:
  - id: morning
    trigger: {on: enter}
    schedule: {hours: "09:00-11:00"}
    offer: {title: m}
""")
    # 10:00 in the Paris store is 05:00 on a phone set to New York: the store's time decides
    assert r.decide([ev(fence="cafe")], dev(tz="America/New_York"), MON_10)
    # an explicit schedule.timezone wins over both
    r = rules("""
campaigns:
  - id: morning
    trigger: {on: enter}
    schedule: {hours: "09:00-11:00", timezone: Asia/Tokyo}
    offer: {title: m}
""")
    (d,) = r.evaluate([ev(fence="cafe")], dev(), MON_10)
    assert d.offer is None and "Asia/Tokyo" in d.verdicts[0].reason


def test_quiet_hours_and_calendar_days_are_the_devices_local_time() -> None:
    text = """
defaults:
  quiet_hours: {hours: "22:00-07:00", mode: hold}
campaigns:
  - id: c
    trigger: {on: enter}
    offer: {title: c}
    limits: {per_device: {max: 1, window: 1d, kind: calendar}}
"""
    ny = ZoneInfo("America/New_York")
    # 22:30 at the Paris store is 17:30 in New York: not quiet for a New York phone
    late_paris = at(2026, 3, 9, 22, 30)
    (d,) = rules(text).evaluate([ev(ts=late_paris)], dev(tz="America/New_York"), late_paris)
    assert d.offer is not None and d.offer.deliver_after is None
    (d,) = rules(text).evaluate([ev(ts=late_paris)], dev(tz="Europe/Paris"), late_paris)
    assert d.offer is not None and d.offer.deliver_after == at(2026, 3, 10, 7, 0)
    # 09:00 in Paris is 04:00 in New York: held until 07:00 there
    paris_9 = at(2026, 3, 10, 9, 0)
    (d,) = rules(text).evaluate([ev(ts=paris_9)], dev(tz="America/New_York"), paris_9)
    assert d.offer is not None and d.offer.deliver_after == dt.datetime(2026, 3, 10, 7, 0, tzinfo=ny).timestamp()
    # the calendar day: 19:30 and 00:30 in Paris are one day in New York (14:30, 19:30), two days in Paris
    a, b = at(2026, 3, 9, 19, 30), at(2026, 3, 10, 0, 30)
    text = text.replace("quiet_hours: {hours: \"22:00-07:00\", mode: hold}", "timezone: UTC")
    for tz, second in (("America/New_York", False), ("Europe/Paris", True)):
        r = rules(text)
        assert r.decide([ev(ts=a)], dev(tz=tz), a)
        assert bool(r.decide([ev(ts=b)], dev(tz=tz), b)) == second, tz


def test_the_daily_budget_counts_days_in_the_campaigns_zone() -> None:
    text = """
%s
campaigns:
  - id: c
    trigger: {on: enter}
    offer: {title: c}
    limits: {budget: {per_day: 1}}
"""
    utc = ZoneInfo("UTC")
    a = dt.datetime(2026, 3, 9, 23, 0, tzinfo=utc).timestamp()  # 19:00 in New York
    b = dt.datetime(2026, 3, 10, 1, 0, tzinfo=utc).timestamp()  # 21:00 in New York, the next day in UTC
    for head, second in (("", True), ("defaults: {timezone: America/New_York}", False)):
        r = rules(text % head)
        assert r.decide([ev(ts=a, device="d1")], dev("d1", tz="Asia/Tokyo"), a)
        # another device, in another zone: the budget's day is the campaign's, not the device's
        assert bool(r.decide([ev(ts=b, device="d2")], dev("d2", tz="Asia/Tokyo"), b)) == second, head
    r = rules((text % "").replace("{per_day: 1}}", "{per_day: 1}}\n    schedule: {timezone: America/New_York}"))
    assert r.decide([ev(ts=a, device="d1")], dev("d1"), a)
    (d,) = r.evaluate([ev(ts=b, device="d2")], dev("d2"), b)
    assert d.offer is None and d.verdicts[0].cap == "budget per_day 1"


def test_attribute_conditions_read_texts_as_the_values_they_spell() -> None:
    """Attributes from a CSV column are texts: "3" equals 3, "true" is true, "25" is in a range; 1 is not true."""
    from campaigns import Condition

    assert Condition(equals=3).test("3") and Condition(equals=3).test(" 3.0 ") and Condition(equals=3).test(3)
    assert not Condition(equals=3).test("3a") and not Condition(equals=3).test("4")
    assert Condition(equals=True).test("true") and Condition(equals=True).test("True") and Condition(equals=True).test(True)
    assert not Condition(equals=True).test(1) and not Condition(equals=1).test(True) and not Condition(equals=True).test("yes")
    assert Condition(one_of=("fr", 2)).test("2") and Condition(one_of=("fr", 2)).test("fr") and not Condition(one_of=("fr", 2)).test("de")
    assert Condition(equals="3").test("3") and not Condition(equals="3").test(3)
    assert Condition(min=18).test("25") and not Condition(min=18).test("16") and not Condition(min=18).test(True)
