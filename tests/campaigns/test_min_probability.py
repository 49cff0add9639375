"""``trigger.min_probability``: only events at least that likely fire; declared once in the schema."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from campaigns import CampaignFileError, CampaignRules, FenceInfo, loads_campaigns
from campaigns.schema import json_schema
from proximity.events import Device, Event

FENCES = {"cafe": FenceInfo.create("cafe", "Café", ["coffee"], {"timezone": "Europe/Paris"})}
MON_10 = dt.datetime(2026, 3, 9, 10, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
YAML = """
campaigns:
  - id: sure
    trigger: {on: enter, fences: [cafe], min_probability: 0.9}
    offer: {title: "Welcome"}
"""


def decide(probability: float | None) -> list[str]:
    rules = CampaignRules(loads_campaigns(YAML, fences=FENCES), FENCES)
    e = Event(kind="enter", device_id="d1", fence_id="cafe", ts=MON_10, probability=probability)
    return [o.campaign_id for o in rules.decide([e], {"d1": Device("d1")}, MON_10)]


def test_only_events_at_least_that_likely_fire() -> None:
    assert decide(0.95) == ["sure"]
    assert decide(0.9) == ["sure"]
    assert decide(0.89) == []
    assert decide(None) == []  # an event without a probability cannot show it is sure enough


def test_default_is_every_event() -> None:
    rules = CampaignRules(loads_campaigns(YAML.replace(", min_probability: 0.9", ""), fences=FENCES), FENCES)
    e = Event(kind="enter", device_id="d1", fence_id="cafe", ts=MON_10, probability=0.01)
    assert [o.campaign_id for o in rules.decide([e], {"d1": Device("d1")}, MON_10)] == ["sure"]


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "high", "true"])
def test_out_of_range_is_a_located_problem(bad: str) -> None:
    with pytest.raises(CampaignFileError) as err:
        loads_campaigns(YAML.replace("0.9", bad), fences=FENCES)
    assert "min_probability must be a probability from 0 to 1" in err.value.report()
    assert ":4:" in err.value.report()  # the line of the trigger


def test_json_schema_declares_it() -> None:
    trig = json_schema()
    text = str(trig)
    assert "min_probability" in text and "'maximum': 1" in text
