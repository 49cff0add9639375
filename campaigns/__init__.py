"""Campaigns: YAML rules, schedules, audiences, atomic caps, an outbox and dispatch.

Presence events (:class:`proximity.events.Event`) go in; offers come out,
never more than the caps allow, never twice, never lost::

    from campaigns import CampaignRules, MemoryLimiter, MemoryOutbox, load_campaigns
    rules = CampaignRules(load_campaigns("campaigns.yaml", fences), fences,
                          limiter=MemoryLimiter(), outbox=MemoryOutbox())
    engine = Engine(index, rules=rules)

Adapters for shared state (one Redis or a Redis Cluster): :class:`RedisLimiter`,
:class:`RedisOutbox` and :class:`AsyncRedisOutbox`. They are imported on first use, so
``import campaigns`` does not import redis.
What offers did (imported on demand: they load the compiled kernels): :mod:`campaigns.experiments`
(holdouts, variants), :func:`campaigns.report.lift_report` (conversions and lift over arrays),
:mod:`campaigns.counters` / :mod:`campaigns.redis_counters` (a service's report from counters).
Dispatch: :mod:`campaigns.dispatch`. Replay of logs: :mod:`campaigns.backtest`.
"""

from typing import TYPE_CHECKING, Any

from campaigns.decider import CampaignRules, Decision, Verdict
from campaigns.errors import CampaignError, CampaignFileError, DeliveryError, StoreUnavailable
from campaigns.limiter import CapCheck, Grant, Limiter, MemoryLimiter
from campaigns.loader import load_campaigns, loads_campaigns, parse_file, parse_text
from campaigns.model import (
    Audience,
    Campaign,
    CampaignSet,
    Cap,
    Condition,
    Conversion,
    Defaults,
    Experiment,
    FenceInfo,
    Limits,
    OfferTemplate,
    QuietHours,
    Schedule,
    Trigger,
    Variant,
    fence_infos,
)
from campaigns.offers import Offer
from campaigns.outbox import DeadLetter, MemoryOutbox, Outbox, OutboxEntry
from campaigns.schema import json_schema

if TYPE_CHECKING:
    from campaigns.redis_limiter import RedisLimiter
    from campaigns.redis_outbox import AsyncRedisOutbox, RedisOutbox

_LAZY = {"RedisLimiter": "campaigns.redis_limiter", "RedisOutbox": "campaigns.redis_outbox",
         "AsyncRedisOutbox": "campaigns.redis_outbox"}


def __getattr__(name: str) -> Any:
    """The Redis adapters, imported on first use (redis is needed only by them)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'campaigns' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncRedisOutbox",
    "Audience",
    "Campaign",
    "CampaignError",
    "CampaignFileError",
    "CampaignRules",
    "CampaignSet",
    "Cap",
    "CapCheck",
    "Condition",
    "Conversion",
    "DeadLetter",
    "Decision",
    "Defaults",
    "DeliveryError",
    "Experiment",
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
    "StoreUnavailable",
    "Trigger",
    "Variant",
    "Verdict",
    "fence_infos",
    "json_schema",
    "load_campaigns",
    "loads_campaigns",
    "parse_file",
    "parse_text",
]
