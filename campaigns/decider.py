"""From presence events to offers: the engine's ``Rules``.

For each event: find the campaigns whose trigger matches (kind, place, beacon
zone and proximity), keep those that are active, in schedule and whose
audience includes the device, order them by priority (then file order), apply
quiet hours, and ask the limiter, highest priority first, for every cap that
applies to that campaign; the first campaign whose caps allow it issues the
event's one offer. The offer is written to the outbox (when one is given)
before it is returned.

Every step is recorded in a :class:`Decision` with one :class:`Verdict` per
matched campaign saying why it did or did not fire.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from campaigns.experiments import HOLDOUT, arm, offer_for
from campaigns.limiter import CapCheck, Grant, Limiter, MemoryLimiter, day_start, ttl_for, window_start
from campaigns.model import PROXIMITY_RANK, Audience, Campaign, CampaignSet, FenceInfo, fence_infos, render
from campaigns.offers import Offer, cancel_key, offer_id
from campaigns.schedule import quiet_until, schedule_refusal
from proximity.events import Device, Event

Outcome = Literal["offer", "held", "holdout", "blocked", "dropped", "outranked", "paused", "schedule", "audience",
                  "stale", "template_empty"]
EXPOSED: frozenset[str] = frozenset({"offer", "held", "holdout"})
"""The outcomes that expose a device to a campaign (its conversions are counted from them)."""


class OutboxWriter(Protocol):
    def put(self, offer: Offer) -> bool: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why one matched campaign did or did not fire for one event."""

    campaign_id: str
    outcome: Outcome
    reason: str
    cap: str | None = None
    variant: str | None = None
    """The device's arm of the campaign's experiment: ``"holdout"``, a variant id, or ``None``."""

    def to_dict(self) -> dict[str, Any]:
        out = {"campaign_id": self.campaign_id, "outcome": self.outcome, "reason": self.reason}
        if self.cap is not None:
            out["cap"] = self.cap
        if self.variant is not None:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    """What happened to one event: the offer (if any) and a verdict per matched campaign."""

    event: Event
    offer: Offer | None
    verdicts: tuple[Verdict, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event.to_dict(),
            "offer_id": self.offer.offer_id if self.offer else None,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    def explain(self) -> str:
        """Human-readable lines, one per matched campaign."""
        head = f"{self.event.kind} {self.event.device_id} @ {self.event.place} ts={self.event.ts:.0f}"
        if not self.verdicts:
            return f"{head}: no campaign matches"
        return "\n".join([head, *(f"  {v.campaign_id}: {v.outcome}: {v.reason}" for v in self.verdicts)])


@dataclass
class _Tables:
    campaigns: tuple[Campaign, ...]
    campaign_set: CampaignSet
    fences: dict[str, FenceInfo]
    order: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Ask:
    """An eligible campaign of an event: refused without asking (quiet hours drop, empty template), a holdout
    (``offer`` None: caps read, a mirror taken), or an offer whose caps are to be asked for."""

    campaign: Campaign
    refusal: Verdict | None
    oid: str = ""
    checks: list[CapCheck] = field(default_factory=list)
    offer: Offer | None = None
    hold_until: float | None = None
    variant: str | None = None


@dataclass(slots=True)
class _Plan:
    """What deciding an event needs besides the caps (see ``CampaignRules._plan``)."""

    event: Event
    matched: list[Campaign]
    verdicts: dict[str, Verdict]
    asks: list[_Ask]
    zone: Any  # where a held offer's local time is told
    holdout: bool = False


class CampaignRules:
    """Campaigns as the engine's ``Rules``: ``dwell_thresholds()`` and ``decide(events, devices, now)``.

    ``limiter`` defaults to a :class:`MemoryLimiter`; ``outbox`` (optional)
    receives every offer before ``decide`` returns it; ``on_decision`` is called
    with each :class:`Decision`, ``on_decisions`` once with all the decisions of one
    ``decide`` (with those made so far when a later one fails); the last ``keep`` decisions stay in
    :attr:`recent`. :meth:`replace` swaps campaigns and fences atomically (hot
    reload) while keeping the caps.

    ``clock`` (a live service's wall clock) makes events older than their campaign's
    ``max_event_age`` stale: no offer, the verdict says ``stale``. Without it (backtests,
    which replay in simulated time) no event is stale. An enter of a device at a fence
    cancels its delayed offers there (``outbox.cancel``, when the outbox has one).

    ``batch`` (:class:`campaigns.redis_offers.RedisOffers`, for a limiter and an outbox on one
    single Redis) asks for the caps and writes the offers of all the events of one ``decide`` in
    one round trip, in event order: the same answers as one event at a time.
    """

    def __init__(
        self,
        campaigns: CampaignSet,
        fences: Mapping[str, FenceInfo] | Iterable[Any] | None = None,
        *,
        limiter: Limiter | None = None,
        outbox: OutboxWriter | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        on_decisions: Callable[[list[Decision]], None] | None = None,
        batch: Any = None,
        keep: int = 1000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.clock = clock
        self.limiter: Limiter = limiter if limiter is not None else MemoryLimiter()
        self.outbox = outbox
        self.on_decision = on_decision
        self.on_decisions = on_decisions
        self.batch = batch
        self.recent: deque[Decision] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._tables = self._make_tables(campaigns, fences)

    @staticmethod
    def _make_tables(campaigns: CampaignSet, fences: Any) -> _Tables:
        if fences is None:
            infos: dict[str, FenceInfo] = {}
        elif isinstance(fences, Mapping):
            infos = {k: v if isinstance(v, FenceInfo) else FenceInfo.from_fence(v) for k, v in fences.items()}
        else:
            infos = fence_infos(fences)
        order = {c.id: i for i, c in enumerate(campaigns.campaigns)}
        return _Tables(campaigns.campaigns, campaigns, infos, order)

    def replace(self, campaigns: CampaignSet, fences: Any = None) -> None:
        """Swap in new campaigns (and fences, when given); caps already consumed stay consumed."""
        tables = self._make_tables(campaigns, fences if fences is not None else self._tables.fences)
        with self._lock:
            self._tables = tables

    @property
    def campaigns(self) -> CampaignSet:
        return self._tables.campaign_set

    @property
    def fences(self) -> Mapping[str, FenceInfo]:
        """The fences the campaigns are matched against (id -> :class:`FenceInfo`)."""
        return self._tables.fences

    # ----------------------------------------------------------------- Rules

    def dwell_thresholds(self) -> dict[str, list[float]]:
        """Fence id (or ``"*"``) -> the dwell times (s) that active dwell campaigns need."""
        t = self._tables
        out: dict[str, set[float]] = {}
        for c in t.campaigns:
            if c.status != "active" or c.trigger.on != "dwell" or c.trigger.dwell_s is None:
                continue
            if c.trigger.fences is not None:
                targets: Iterable[str] = [
                    f for f in c.trigger.fences
                    if c.trigger.tags is None or (f in t.fences and t.fences[f].tags & c.trigger.tags)
                ]
            elif c.trigger.tags is not None and t.fences:
                targets = [f.id for f in t.fences.values() if f.tags & c.trigger.tags]
            else:
                targets = ["*"]
            for fid in targets:
                out.setdefault(fid, set()).add(float(c.trigger.dwell_s))
        return {k: sorted(v) for k, v in sorted(out.items())}

    def decide(self, events: Sequence[Event], devices: Mapping[str, Device], now: float) -> list[Offer]:
        return [d.offer for d in self.evaluate(events, devices, now) if d.offer is not None]

    # --------------------------------------------------------------- explain

    def evaluate(
        self, events: Sequence[Event], devices: Mapping[str, Device], now: float, *, dry_run: bool = False
    ) -> list[Decision]:
        """One :class:`Decision` per event. With ``dry_run`` nothing is consumed or written:
        the verdicts say what would happen (caps are read, not taken)."""
        tables = self._tables
        out: list[Decision] = []
        cancel = None if dry_run else getattr(self.outbox, "cancel", None)
        batch = None if dry_run or self.outbox is None else self.batch
        early, held = self._cancel_early(events) if cancel is not None else (set(), [])
        if held and not getattr(batch, "takes_cancels", False):
            self.outbox.cancel_many(held)  # type: ignore[union-attr]
            held = []
        # else: the early cancels go with the first call of the batch (or alone before anything else)
        queue: list[_Plan] = []  # planned, waiting for the batch's one round trip

        def send_held() -> None:
            if held:
                self.outbox.cancel_many(held[:])  # type: ignore[union-attr]
                held.clear()

        def record(decision: Decision) -> None:
            if not dry_run:
                self.recent.append(decision)
                if self.on_decision is not None:
                    self.on_decision(decision)
            out.append(decision)

        def flush() -> None:
            asks = [[(a.oid, a.checks, p.event.ts, a.offer) for a in p.asks if a.offer is not None] for p in queue]
            grants = batch.run(asks, held[:]) if held else batch.run(asks)  # type: ignore[union-attr]
            held.clear()
            for plan, got in zip(queue, grants, strict=True):
                record(self._settle(tables, plan, _replay(got), False))
            queue.clear()

        try:
            for i, event in enumerate(events):
                device = devices.get(event.device_id) or Device(event.device_id)
                plan = self._plan(tables, event, device)
                inline = cancel is not None and i not in early and event.kind == "enter" and event.zone is None
                if batch is not None and not inline and not plan.holdout:
                    queue.append(plan)
                    continue
                if queue:
                    flush()
                send_held()
                if inline:
                    cancel(cancel_key(event.device_id, event.fence_id), event.ts)  # type: ignore[misc]
                record(self._settle(tables, plan, self._ask_dry if dry_run else self._ask, dry_run))
            if queue:
                flush()
            send_held()
        except BaseException:
            with contextlib.suppress(Exception):  # the cancels that were due before anything else
                send_held()
            if out and not dry_run and self.on_decisions is not None:
                with contextlib.suppress(Exception):  # what was decided is recorded, as far as it can be
                    self.on_decisions(out)
            raise
        if out and not dry_run and self.on_decisions is not None:
            self.on_decisions(out)
        return out

    def _cancel_early(self, events: Sequence[Event]) -> tuple[set[int], list[tuple[str, float]]]:
        """What to cancel before the loop, in one call (an outbox with ``cancel_many``): the delayed offers that
        the enters of ``events`` cancel when no earlier event of theirs has the same device and fence (an
        earlier one may put a delayed offer that the enter cancels: that enter cancels in its turn). Returns
        the indexes of those enters and the ``(cancel key, time)`` to cancel before anything else is written."""
        if getattr(self.outbox, "cancel_many", None) is None:
            return set(), []
        seen: set[tuple[str, str]] = set()
        early: dict[str, tuple[int, float]] = {}
        for i, e in enumerate(events):
            pair = (e.device_id, e.fence_id)
            if e.kind == "enter" and e.zone is None and pair not in seen:
                early[cancel_key(*pair)] = (i, e.ts)
            seen.add(pair)
        return {i for i, _ in early.values()}, [(key, ts) for key, (_, ts) in early.items()]

    def explain(self, event: Event, device: Device | None = None) -> Decision:
        """What would happen to ``event`` now, without consuming any cap."""
        return self.evaluate([event], {event.device_id: device or Device(event.device_id)}, event.ts, dry_run=True)[0]

    # -------------------------------------------------------------- internals

    def _matches(self, c: Campaign, event: Event, fence: FenceInfo | None) -> bool:
        trig = c.trigger
        if trig.on == "beacon":
            if event.kind != "enter" or event.zone is None:
                return False
            if trig.zones is not None and event.zone not in trig.zones:
                return False
            if trig.proximity is not None:
                rank = PROXIMITY_RANK.get(event.proximity or "unknown")
                if rank is None or rank > PROXIMITY_RANK[trig.proximity]:
                    return False
        else:
            if event.kind != trig.on or event.zone is not None:
                return False
            if trig.on == "dwell" and (trig.dwell_s is None or not math.isclose(event.dwell_s, trig.dwell_s, abs_tol=1e-6)):
                return False
        if trig.min_probability > 0 and (event.probability is None or event.probability < trig.min_probability):
            return False
        if trig.fences is not None and event.fence_id not in trig.fences:
            return False
        return not (trig.tags is not None and (fence is None or not (fence.tags & trig.tags)))

    def _plan(self, t: _Tables, event: Event, device: Device) -> _Plan:
        """Everything about ``event`` that needs no cap: the matched campaigns, the verdicts of those that are
        not eligible, and the eligible ones in order (each with its caps and rendered offer, or its refusal)."""
        fence = t.fences.get(event.fence_id)
        defaults = t.campaign_set.defaults
        device_zone = _zone(device.timezone)
        store_zone = fence.timezone if fence is not None else None
        plan = _Plan(event, [c for c in t.campaigns if self._matches(c, event, fence)], {}, [],
                     device_zone or store_zone or defaults.timezone or ZoneInfo("UTC"))
        if not plan.matched:
            return plan
        eligible: list[Campaign] = []
        age = None if self.clock is None else self.clock() - event.ts
        for c in plan.matched:
            if c.status != "active":
                plan.verdicts[c.id] = Verdict(c.id, "paused", "campaign is paused")
                continue
            if age is not None and age > c.max_event_age_s:
                plan.verdicts[c.id] = Verdict(c.id, "stale", f"the event's evidence is {_human(round(age))} old "
                                                             f"(max_event_age {_human(c.max_event_age_s)})")
                continue
            zone = c.schedule.timezone or store_zone or device_zone or defaults.timezone
            why = schedule_refusal(c.schedule, event.ts, zone, fence)
            if why is not None:
                plan.verdicts[c.id] = Verdict(c.id, "schedule", why)
                continue
            why = _audience_refusal(c.audience, device)
            if why is not None:
                plan.verdicts[c.id] = Verdict(c.id, "audience", why)
                continue
            eligible.append(c)
        eligible.sort(key=lambda c: (-c.priority, t.order[c.id]))
        local_zone = device_zone or store_zone or defaults.timezone
        for c in eligible:
            # quiet hours at the time the offer would go out: the event's, or the event's plus the delay
            send_at = event.ts + (c.offer.delay_s or 0.0)
            quiet = defaults.quiet_hours
            hold_until = None if quiet is None else quiet_until(quiet, send_at, local_zone)
            if quiet is not None and hold_until is not None and quiet.mode == "drop":
                plan.asks.append(_Ask(c, Verdict(c.id, "dropped", "quiet hours (mode drop)")))
                continue
            oid = offer_id(c.id, event.device_id, event.place, event.kind, event.ts, event.dwell_s)
            checks = self._checks(c, event, local_zone, defaults)
            variant = arm(c, event.device_id) if c.experiment is not None else None
            if variant == HOLDOUT:
                plan.asks.append(_Ask(c, None, oid, checks))
                plan.holdout = True
                continue
            empty: list[str] = []
            rendered = self._render(c, event, device, fence, oid, hold_until, variant, empty)
            if empty and not c.offer.allow_empty:
                names = ", ".join(f"{{{n}}}" for n in dict.fromkeys(empty))
                plan.asks.append(_Ask(c, Verdict(c.id, "template_empty", f"no value for {names} (no fallback; "
                                                                          "offer.allow_empty is false)",
                                                 variant=variant)))
                continue
            plan.asks.append(_Ask(c, None, oid, checks, rendered, hold_until, variant))
        return plan

    def _ask(self, a: _Ask) -> Grant:
        """One candidate's caps taken, and its offer written to the outbox when they had room."""
        assert a.offer is not None
        grant = self.limiter.acquire(a.oid, a.checks, a.offer.ts)
        if grant.ok and self.outbox is not None:
            self.outbox.put(a.offer)
        return grant

    def _ask_dry(self, a: _Ask) -> Grant:
        assert a.offer is not None
        return self._peek(a.checks, a.offer.ts)

    def _settle(self, t: _Tables, plan: _Plan, ask: Callable[[_Ask], Grant], dry_run: bool) -> Decision:
        """The decision of a plan: its candidates in order, each asked for its caps (``ask``) until one fires."""
        event, verdicts = plan.event, plan.verdicts
        offer: Offer | None = None
        taken: Verdict | None = None  # the verdict that took the event's one slot (an offer or a holdout)
        for a in plan.asks:
            c = a.campaign
            if taken is not None:
                verdicts[c.id] = Verdict(c.id, "outranked", (
                    f"{taken.campaign_id} fired (at most one offer per event)" if taken.outcome != "holdout"
                    else f"{taken.campaign_id} held this device out (its control group gets no offer for the event)"))
                continue
            if a.refusal is not None:
                verdicts[c.id] = a.refusal
                continue
            if a.offer is None:
                verdicts[c.id] = taken = self._holdout(c, a.oid, a.checks, event.ts, dry_run)
                if taken.outcome != "holdout":
                    taken = None
                continue
            grant = ask(a)
            if not grant.ok:
                verdicts[c.id] = Verdict(c.id, "blocked", f"cap {grant.blocked_by} reached ({grant.used} used)",
                                         grant.blocked_by, a.variant)
                continue
            offer = a.offer
            if a.hold_until is not None:
                local = dt.datetime.fromtimestamp(a.hold_until, plan.zone)
                verdicts[c.id] = Verdict(c.id, "held", f"quiet hours: held until {local.isoformat(timespec='minutes')}",
                                         variant=a.variant)
            else:
                delayed = f" (delayed {_human(c.offer.delay_s)})" if c.offer.delay_s is not None else ""
                verdicts[c.id] = Verdict(c.id, "offer", "fired" + delayed + (
                    " (already issued: same offer id)" if grant.duplicate else ""), variant=a.variant)
            taken = verdicts[c.id]
        ordered = tuple(verdicts[c.id] for c in sorted(plan.matched, key=lambda c: (-c.priority, t.order[c.id])))
        return Decision(event, offer, ordered)

    def _holdout(self, c: Campaign, oid: str, checks: list[CapCheck], now: float, dry_run: bool) -> Verdict:
        """A held-out device passes the same caps as a treated one (read, not taken), then a ledger of its
        own mirrors the campaign's per-device caps and cooldown, so it is exposed as often as it would have
        been offered. No real cap is used: the device's other offers and the campaign's budget are untouched."""
        grant = self._peek(checks, now)
        if grant.ok:
            mirror = [
                dataclasses.replace(chk, name="holdout:" + chk.name) for chk in checks
                if chk.scope == "device" and chk.name.startswith((f"c:{c.id}:", f"cd:{c.id}:"))
            ]
            grant = self._peek(mirror, now) if dry_run else self.limiter.acquire(oid, mirror, now)
        if not grant.ok:
            return Verdict(c.id, "blocked", f"cap {grant.blocked_by} reached ({grant.used} used)", grant.blocked_by, HOLDOUT)
        return Verdict(c.id, "holdout", "control group: no offer (every check passed; no cap used)", variant=HOLDOUT)

    def _peek(self, checks: Sequence[CapCheck], now: float) -> Grant:
        for chk in checks:
            used = self.limiter.usage(chk, now)
            if used >= chk.limit:
                return Grant(False, blocked_by=chk.label, used=used)
        return Grant(True)

    @staticmethod
    def _checks(c: Campaign, event: Event, zone: ZoneInfo | None, defaults: Any) -> list[CapCheck]:
        now = event.ts
        dev = event.device_id
        checks: list[CapCheck] = []
        for i, cap in enumerate(c.limits.per_device):
            checks.append(CapCheck(
                label=f"per_device {cap.label}", scope="device", scope_id=dev,
                name=f"c:{c.id}:{i}:{cap.kind}:{cap.window_s:g}", limit=cap.max,
                since=window_start(cap, now, zone), ttl_s=ttl_for(cap),
            ))
        for i, cap in enumerate(defaults.per_device):
            checks.append(CapCheck(
                label=f"global per_device {cap.label}", scope="device", scope_id=dev,
                name=f"g:{i}:{cap.kind}:{cap.window_s:g}", limit=cap.max,
                since=window_start(cap, now, zone), ttl_s=ttl_for(cap),
            ))
        if c.limits.cooldown_s is not None:
            checks.append(CapCheck(
                label=f"cooldown {_human(c.limits.cooldown_s)} at {event.fence_id}", scope="device", scope_id=dev,
                name=f"cd:{c.id}:{event.fence_id}", limit=1,
                since=now - c.limits.cooldown_s, ttl_s=c.limits.cooldown_s,
            ))
        budget_zone = c.schedule.timezone or defaults.timezone
        if c.limits.budget_total is not None:
            checks.append(CapCheck(
                label=f"budget total {c.limits.budget_total}", scope="campaign", scope_id=c.id,
                name="total", limit=c.limits.budget_total, since=-math.inf, ttl_s=0.0,
            ))
        if c.limits.budget_per_day is not None:
            checks.append(CapCheck(
                label=f"budget per_day {c.limits.budget_per_day}", scope="campaign", scope_id=c.id,
                name="day", limit=c.limits.budget_per_day, since=day_start(now, budget_zone), ttl_s=2 * 86400.0 + 3600.0,
            ))
        return checks

    @staticmethod
    def _render(
        c: Campaign, event: Event, device: Device, fence: FenceInfo | None, oid: str, hold_until: float | None,
        variant: str | None = None, empty: list[str] | None = None,
    ) -> Offer:
        values: dict[str, Any] = {
            "store.id": event.fence_id,
            "store.name": fence.name if fence is not None else event.fence_id,
            "device.id": device.device_id,
            "zone": event.zone,
            "campaign.id": c.id,
            "campaign.name": c.name,
            "dwell_min": round(event.dwell_s / 60.0),
        }
        if fence is not None:
            for k, v in fence.properties.items():
                values.setdefault(f"store.{k}", v)
        for k, v in device.attrs.items():
            values.setdefault(f"device.{k}", v)
        tpl = offer_for(c, variant)
        delay = c.offer.delay_s
        if delay is not None:  # hold_until: the end of the quiet hours the delayed send falls in, if any
            hold_until = max(event.ts + delay, hold_until or 0.0)
        expires = None if c.offer.expires_in_s is None else event.ts + c.offer.expires_in_s
        return Offer(
            offer_id=oid,
            campaign_id=c.id,
            device_id=event.device_id,
            fence_id=event.fence_id,
            zone=event.zone,
            ts=event.ts,
            title=render(tpl.title, values, empty),
            body=None if tpl.body is None else render(tpl.body, values, empty),
            deep_link=None if tpl.deep_link is None else render(tpl.deep_link, values, empty),
            data={k: render(v, values, empty) if isinstance(v, str) else v for k, v in tpl.data.items()},
            trigger=c.trigger.on,
            priority=c.priority,
            deliver_after=hold_until,
            variant=variant,
            expires_at=expires,
            delayed=delay is not None,
        )


def _replay(grants: Sequence[Grant]) -> Callable[[_Ask], Grant]:
    """An ``ask`` that answers with grants already obtained (a batch's), in order."""
    it = iter(grants)
    return lambda _a: next(it)


def _audience_refusal(audience: Audience, device: Device) -> str | None:
    if device.opted_out or _flag(device.attrs.get("opt_out")):
        return "audience: device opted out"
    raw = device.attrs.get("segments") or ()
    segments = {raw} if isinstance(raw, str) else {str(s) for s in raw}
    if audience.any_segments is not None and not (segments & audience.any_segments):
        return f"audience: in none of the segments {sorted(audience.any_segments)}"
    if audience.all_segments is not None and not audience.all_segments <= segments:
        return f"audience: not in segments {sorted(audience.all_segments - segments)}"
    if audience.none_segments is not None and segments & audience.none_segments:
        return f"audience: in excluded segments {sorted(segments & audience.none_segments)}"
    for name, cond in audience.attributes.items():
        if not cond.test(device.attrs.get(name)):
            return f"audience: attribute {name}={device.attrs.get(name)!r} does not match"
    return None


def _flag(value: Any) -> bool:
    """An ``opt_out`` attribute: JSON ``true`` or, from a CSV or a form, a text like ``true``, ``1``, ``yes``."""
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "y", "on"}
    return value is True or (isinstance(value, int) and value == 1)


_ZONES: dict[str, ZoneInfo | None] = {}


def _zone(name: str | None) -> ZoneInfo | None:
    """A device's zone; an unknown name counts as no zone (devices send what they send)."""
    if not name:
        return None
    if name not in _ZONES:
        try:
            _ZONES[name] = ZoneInfo(name)
        except (ValueError, KeyError, OSError):
            _ZONES[name] = None
    return _ZONES[name]


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
