"""Issue 15 items 7 and 9: stale events (``max_event_age``, live only), offers that expire (``expires_in``)
or wait (``delay``, cancelled by a return) in the memory and Redis outboxes, and templates that never
render empty unless allowed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns import CampaignFileError, CampaignRules, MemoryOutbox, loads_campaigns
from campaigns.backtest import new_report
from proximity.events import Device, Event

from .test_decider import FENCES, MON_10

DAY = 86400.0


def rules(yaml: str, **kw: Any) -> CampaignRules:
    return CampaignRules(loads_campaigns(yaml, fences=FENCES), FENCES, **kw)


def ev(kind: str = "enter", ts: float = MON_10, device: str = "d1", fence: str = "cafe") -> Event:
    return Event(kind=kind, device_id=device, fence_id=fence, ts=ts)  # type: ignore[arg-type]


def devs(device: str = "d1", **attrs: Any) -> dict[str, Device]:
    return {device: Device(device, attrs)}


ONE = """
campaigns:
  - id: coffee
    trigger: {on: enter, tags: [coffee]}
    offer: {title: "1 euro off at {store.name}"}
"""


def test_a_live_event_older_than_max_event_age_is_stale_and_a_backtest_is_not() -> None:
    live = rules(ONE, clock=lambda: MON_10 + 3 * DAY)
    report = new_report(live)
    live.on_decision = report.record
    (d,) = live.evaluate([ev()], devs(), MON_10)
    assert d.offer is None
    assert [(v.campaign_id, v.outcome) for v in d.verdicts] == [("coffee", "stale")]
    assert "3d old" in d.verdicts[0].reason and "max_event_age 10m" in d.verdicts[0].reason
    assert report.campaigns["coffee"].stale == 1 and report.campaigns["coffee"].offers == 0
    # within the default 10 minutes: an offer
    assert rules(ONE, clock=lambda: MON_10 + 599).decide([ev()], devs(), MON_10)
    # a campaign's own max_event_age
    relaxed = rules(ONE.replace("    offer:", "    max_event_age: 4d\n    offer:"), clock=lambda: MON_10 + 3 * DAY)
    assert relaxed.decide([ev()], devs(), MON_10)
    # the backtest's rules have no clock: events replay in simulated time, never stale
    assert rules(ONE).decide([ev()], devs(), MON_10 + 3 * DAY)


QUIET = """
defaults:
  timezone: Europe/Paris
  quiet_hours: {hours: "21:00-08:00", mode: hold}
campaigns:
  - id: thanks
    trigger: {on: exit, tags: [coffee]}
    offer: {title: "Thanks for coming", expires_in: 30m}
"""


def put_held(outbox: Any) -> Any:
    r = rules(QUIET, outbox=outbox)
    evening = MON_10 + 11.5 * 3600  # 21:30, in quiet hours until 08:00
    (offer,) = r.decide([ev("exit", evening)], devs(), evening)
    assert offer.deliver_after is not None and offer.expires_at == evening + 1800
    return offer


def test_a_held_offer_past_its_expiry_is_dropped_when_quiet_hours_end(outbox: Any) -> None:
    offer = put_held(outbox)
    assert outbox.claim("w", 10, now=offer.deliver_after + 1) == []
    assert outbox.drop_counts()["expired"] == 1
    assert outbox.pending() == 0


def test_a_queued_offer_past_its_expiry_is_dropped_and_one_in_time_is_delivered(outbox: Any) -> None:
    r = rules(ONE.replace("offer: {title: ", "offer: {expires_in: 5m, title: "), outbox=outbox)
    (late,) = r.decide([ev()], devs(), MON_10)
    (fresh,) = r.decide([ev(ts=MON_10 + 3600, device="d2")], devs("d2"), MON_10 + 3600)
    got = outbox.claim("w", 10, now=MON_10 + 3600 + 60)
    assert [e.offer.offer_id for e in got] == [fresh.offer_id]
    assert outbox.drop_counts() == {"expired": 1, "cancelled": 0}
    assert late.offer_id != fresh.offer_id


DELAYED = """
campaigns:
  - id: bye
    trigger: {on: exit, tags: [coffee]}
    offer: {title: "See you soon", delay: 20m}
"""


def test_a_delayed_offer_waits_and_is_cancelled_when_the_device_comes_back(outbox: Any) -> None:
    r = rules(DELAYED, outbox=outbox)
    (gone,) = r.decide([ev("exit", MON_10, "d1")], devs("d1"), MON_10)
    (stays,) = r.decide([ev("exit", MON_10, "d2")], devs("d2"), MON_10)
    assert gone.deliver_after == MON_10 + 1200 and gone.delayed
    assert outbox.claim("w", 10, now=MON_10 + 600) == []  # not due yet
    # d1 comes back 10 minutes later: its delayed offer is cancelled; another store's enter cancels nothing
    r.evaluate([ev("enter", MON_10 + 600, "d1")], devs("d1"), MON_10 + 600)
    r.evaluate([ev("enter", MON_10 + 600, "d2", fence="mall")], devs("d2"), MON_10 + 600)
    got = outbox.claim("w", 10, now=MON_10 + 1201)
    assert [e.offer.offer_id for e in got] == [stays.offer_id]
    assert outbox.drop_counts()["cancelled"] == 1
    assert outbox.pending() == 1  # the claimed one, until acked


def test_the_enters_of_one_batch_cancel_in_event_order(outbox: Any) -> None:
    """A Redis outbox cancels a batch's enters in one go before deciding; an enter whose device and store
    had an earlier event in the batch still cancels in its turn, as one event at a time does."""
    r = rules(DELAYED, outbox=outbox)
    r.decide([ev("exit", MON_10, "d3")], devs("d3"), MON_10)  # an earlier batch: d3's delayed offer
    batch = [ev("enter", MON_10 + 60, "d3"),  # d3 is back: its offer goes (nothing before it in the batch)
             ev("exit", MON_10 + 60, "d1"), ev("enter", MON_10 + 120, "d1"),  # d1 leaves and is back: cancelled
             ev("exit", MON_10 + 120, "d2"), ev("enter", MON_10 + 180, "d2", fence="mall")]  # another store
    offers = r.decide(batch, {**devs("d1"), **devs("d2"), **devs("d3")}, MON_10 + 180)
    assert [o.device_id for o in offers] == ["d1", "d2"]
    got = outbox.claim("w", 10, now=MON_10 + 3600)
    assert [e.offer.device_id for e in got] == ["d2"]
    assert outbox.drop_counts()["cancelled"] == 2


def test_a_device_back_after_the_delay_cancels_nothing() -> None:
    box = MemoryOutbox()
    r = rules(DELAYED, outbox=box)
    (offer,) = r.decide([ev("exit", MON_10)], devs(), MON_10)
    r.evaluate([ev("enter", MON_10 + 1300)], devs(), MON_10 + 1300)
    assert [e.offer.offer_id for e in box.claim("w", 10, now=MON_10 + 1300)] == [offer.offer_id]
    assert box.drop_counts()["cancelled"] == 0


# ------------------------------------------------------------------------------------------ templates

def test_fallbacks_fill_missing_values_and_an_empty_substitution_is_never_sent() -> None:
    yaml = """
campaigns:
  - id: hi
    trigger: {on: enter, tags: [coffee]}
    offer: {title: "Hi {device.first_name|there}, floor {store.floor}"}
"""
    r = rules(yaml)
    assert r.decide([ev()], devs(first_name="Ana"), MON_10)[0].title == "Hi Ana, floor 2"
    assert r.decide([ev(ts=MON_10 + 1)], devs(first_name=""), MON_10)[0].title == "Hi there, floor 2"
    # a store without the property: no offer, the decision says why, and the backtest counts it
    report = new_report(r)
    r.on_decision = report.record
    shop = {**FENCES, "cafe": FENCES["cafe"].__class__.create("cafe", "Café", ["coffee"], {})}
    r.replace(r.campaigns, shop)
    (d,) = r.evaluate([ev(ts=MON_10 + 2)], devs(), MON_10)
    assert d.offer is None and [v.outcome for v in d.verdicts] == ["template_empty"]
    assert "{store.floor}" in d.verdicts[0].reason
    assert report.campaigns["hi"].template_empty == 1
    # ... unless the campaign allows it
    allowed = rules(yaml.replace("offer: {", "offer: {allow_empty: true, "))
    allowed.replace(allowed.campaigns, shop)
    assert allowed.decide([ev()], devs(), MON_10)[0].title == "Hi there, floor "


@pytest.mark.parametrize(("trigger", "title", "message"), [
    ("{on: enter}", "{zone} welcome", "{zone} is only filled on beacon triggers (this trigger is 'on: enter')"),
    ("{on: enter}", "Hi {device.first_name}", "{device.first_name} may render empty"),
    ("{on: exit}", "x", None),
    ("{on: beacon, zones: [checkout]}", "at the {zone}", None),
    ("{on: enter}", "Hi {device.first_name|there}", None),
    ("{on: enter}", "Hi {device.id}", None),
])
def test_validate_flags_placeholders_the_trigger_cannot_fill(trigger: str, title: str, message: str | None) -> None:
    yaml = f'campaigns:\n  - id: a\n    trigger: {trigger}\n    offer: {{title: "{title}"}}\n'
    if message is None:
        loads_campaigns(yaml)
        return
    with pytest.raises(CampaignFileError) as info:
        loads_campaigns(yaml)
    (p,) = info.value.problems
    assert message in p.message and (p.line, p.field) == (4, "campaigns[0].offer.title")
    assert p.col == 21 + title.index("{")  # the placeholder's own column (after the quote at 20)


def test_an_audience_that_requires_the_attribute_or_allow_empty_makes_a_device_placeholder_fine() -> None:
    base = 'campaigns:\n  - id: a\n    trigger: {on: enter}\n    offer: {title: "Hi {device.first_name}"%s}\n'
    loads_campaigns(base % ", allow_empty: true")
    loads_campaigns(base.replace("    offer:", "    audience: {attributes: {first_name: {in: [Ana, Bo]}}}\n    offer:") % "")


def test_the_json_schema_documents_the_new_fields() -> None:
    import jsonschema

    from campaigns import json_schema

    schema = json_schema()
    campaign = schema["properties"]["campaigns"]["items"]
    offer = campaign["properties"]["offer"]["properties"]
    assert "stale" in campaign["properties"]["max_event_age"]["description"]
    assert "Default 10m" in campaign["properties"]["max_event_age"]["description"]
    assert {"expires_in", "delay", "allow_empty"} <= set(offer)
    assert all(offer[k]["description"] for k in ("expires_in", "delay", "allow_empty"))
    variant_offer = campaign["properties"]["experiment"]["properties"]["variants"]["items"]["properties"]["offer"]
    assert "delay" not in variant_offer["properties"]  # variants replace texts, not timing
    doc = {"campaigns": [{"id": "a", "trigger": {"on": "exit"}, "max_event_age": "15m",
                          "offer": {"title": "Hi {device.first_name|there}", "expires_in": "30m", "delay": 1200,
                                    "allow_empty": False}}]}
    jsonschema.Draft202012Validator(schema).validate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({"campaigns": [{**doc["campaigns"][0], "max_event_age": "soon"}]})


_TEXT = st.text(alphabet="abc xyz", max_size=6)


@given(value=st.one_of(st.none(), _TEXT), fallback=_TEXT, prefix=_TEXT, suffix=_TEXT)
def test_a_fallback_renders_exactly_when_the_value_is_missing_or_empty(value: str | None, fallback: str, prefix: str,
                                                                       suffix: str) -> None:
    from campaigns.model import render

    values = {} if value is None else {"device.first_name": value}
    empty: list[str] = []
    with_fallback = render(f"{prefix}{{device.first_name|{fallback}}}{suffix}", values, empty)
    assert with_fallback == prefix + (value if value else fallback.strip()) + suffix and empty == []
    without = render(f"{prefix}{{device.first_name}}{suffix}", values, empty)
    assert without == prefix + (value or "") + suffix
    assert empty == ([] if value else ["device.first_name"])


def test_a_delayed_offer_meets_the_quiet_hours_of_its_send_time() -> None:
    yaml = QUIET.replace("expires_in: 30m", "delay: 20m")
    evening = MON_10 + 10 * 3600 + 50 * 60  # 20:50: not quiet yet, but 21:10 is
    (offer,) = rules(yaml).decide([ev("exit", evening)], devs(), evening)
    assert offer.deliver_after == MON_10 + DAY - 2 * 3600  # Tuesday 08:00, the end of the quiet hours
    (d,) = rules(yaml.replace("mode: hold", "mode: drop")).evaluate([ev("exit", evening)], devs(), evening)
    assert d.offer is None and [v.outcome for v in d.verdicts] == ["dropped"]
    morning = MON_10 - 2 * 3600 - 30 * 60  # 07:30, quiet; sent at 07:50, still quiet: held until 08:00
    (early,) = rules(yaml).decide([ev("exit", morning)], devs(), morning)
    assert early.deliver_after == MON_10 - 2 * 3600
    (late,) = rules(yaml).decide([ev("exit", MON_10)], devs(), MON_10)  # 10:00: sent at 10:20
    assert late.deliver_after == MON_10 + 1200
