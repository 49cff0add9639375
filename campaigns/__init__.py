"""Campaigns: YAML rules, schedules, audiences, atomic caps, an outbox and dispatch.

Presence events (:class:`proximity.events.Event`) go in; offers come out,
never more than the caps allow, never twice, never lost::

    from campaigns import CampaignRules, MemoryLimiter, MemoryOutbox, load_campaigns
    rules = CampaignRules(load_campaigns("campaigns.yaml", fences), fences,
                          limiter=MemoryLimiter(), outbox=MemoryOutbox())
    engine = Engine(index, rules=rules)

Adapters for shared state: :class:`RedisLimiter`, :class:`RedisOutbox`.
Dispatch: :mod:`campaigns.dispatch`. Replay of logs: :mod:`campaigns.backtest`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from campaigns.decider import CampaignRules, Decision, Verdict
from campaigns.errors import CampaignError, CampaignFileError, DeliveryError
from campaigns.limiter import CapCheck, Grant, Limiter, MemoryLimiter
from campaigns.loader import load_campaigns, loads_campaigns, parse_file, parse_text
from campaigns.model import (
    Audience,
    Campaign,
    CampaignSet,
    Cap,
    Condition,
    Defaults,
    FenceInfo,
    Limits,
    OfferTemplate,
    QuietHours,
    Schedule,
    Trigger,
    fence_infos,
)
from campaigns.offers import Offer
from campaigns.outbox import DeadLetter, MemoryOutbox, Outbox, OutboxEntry
from campaigns.schema import json_schema

if TYPE_CHECKING:
    from campaigns.redis_limiter import RedisLimiter
    from campaigns.redis_outbox import RedisOutbox

# the Redis adapters are imported when first used: ``import campaigns`` does not load redis
_LAZY = {"RedisLimiter": "campaigns.redis_limiter", "RedisOutbox": "campaigns.redis_outbox"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'campaigns' has no attribute {name!r}")


__all__ = [
    "Audience",
    "Campaign",
    "CampaignError",
    "CampaignFileError",
    "CampaignRules",
    "CampaignSet",
    "Cap",
    "CapCheck",
    "Condition",
    "DeadLetter",
    "Decision",
    "Defaults",
    "DeliveryError",
    "FenceInfo",
    "Grant",
    "Limiter",
    "Limits",
    "MemoryLimiter",
    "MemoryOutbox",
    "Offer",
    "OfferTemplate",
    "Outbox",
    "OutboxEntry",
    "QuietHours",
    "RedisLimiter",
    "RedisOutbox",
    "Schedule",
    "Trigger",
    "Verdict",
    "fence_infos",
    "json_schema",
    "load_campaigns",
    "loads_campaigns",
    "parse_file",
    "parse_text",
]
