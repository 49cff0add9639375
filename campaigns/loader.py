"""Reading campaign files: YAML in, a :class:`~campaigns.model.CampaignSet` out, or every problem.

The loader reads with ruamel.yaml's round-trip loader (which keeps the line and
column of every key and value), checks the structure with the declarations of
:mod:`campaigns.schema`, then the meaning (a dwell trigger needs a dwell time,
an end after its start, ids unique, placeholders known, fences and tags that
exist when fences are given). Problems are collected, not raised one by one:
:class:`~campaigns.errors.CampaignFileError` carries them all.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

import campaigns._convert as _convert
from campaigns._templates import Fillable, check_texts
from campaigns.errors import CampaignError, CampaignFileError
from campaigns.model import (
    DEFAULT_MAX_EVENT_AGE_S,
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
)
from campaigns.schema import CAMPAIGN_FILE, INVALID, At, Context, Loaded

PathLike = str | os.PathLike[str]


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.allow_duplicate_keys = False
    return y


def parse_file(
    path: PathLike, fences: Mapping[str, FenceInfo] | None = None, *, zones: Iterable[str] | None = None,
    partial: bool = False,
) -> tuple[CampaignSet | None, list[CampaignError]]:
    """Read one file: ``(campaign set, [])`` or ``(None, problems)`` (see :func:`parse_text`)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [CampaignError(f"not UTF-8 text: {exc.reason}", source=source)]
    return parse_text(text, source=source, fences=fences, zones=zones, partial=partial)


def parse_text(
    text: str, *, source: str = "<campaigns>", fences: Mapping[str, FenceInfo] | None = None,
    zones: Iterable[str] | None = None, partial: bool = False,
) -> tuple[CampaignSet | None, list[CampaignError]]:
    """Read campaigns from YAML text: ``(campaign set, [])`` or ``(None, problems)``.

    ``zones`` (the zone names of a beacon registry) enables the check of beacon triggers' zones. With
    ``partial``, a file with problems still gives the set of its good campaigns (``validate`` checks
    their ids across files)."""
    ctx = Context(source)
    ctx.zones = None if zones is None else frozenset(zones)
    try:
        node = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        started = exc.context_mark
        context = exc.context
        if context and started is not None and started is not mark:
            context = f"{context} (opened at line {started.line + 1}, column {started.column + 1})"
        what = " ".join(str(p) for p in (context, exc.problem) if p)
        if "duplicate key" in str(exc):
            what = f"duplicate key: {exc.problem}" if exc.problem else "duplicate key"
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        return None, [CampaignError(f"bad YAML: {what}", source=source, line=line, col=col)]
    except YAMLError as exc:
        return None, [CampaignError(f"bad YAML: {exc}", source=source)]
    if node is None:
        return None, [CampaignError("the file is empty: expected a mapping with 'campaigns:'", source=source, line=1, col=1)]
    root = CAMPAIGN_FILE.load(node, At(1, 1, ""), ctx)
    if root is INVALID:
        return None, ctx.problems
    campaign_set = _build(root, ctx, fences)
    if ctx.problems:
        return (campaign_set if partial else None), ctx.problems
    return campaign_set, []


def load_campaigns(
    paths: PathLike | Sequence[PathLike], fences: Mapping[str, FenceInfo] | Iterable[Any] | None = None
) -> CampaignSet:
    """Load one or more campaign files into one set; raises :class:`CampaignFileError` with every problem.

    ``fences`` (``{id: FenceInfo}`` or ``geofence.Fence`` objects) enables the
    checks of fence ids, tags and store placeholders.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    infos = _fence_map(fences)
    sets, problems = [], []
    for path in items:
        cs, errs = parse_file(path, infos)
        problems.extend(errs)
        if cs is not None:
            sets.append(cs)
    if not problems:
        merged, errs = merge(sets)
        problems.extend(errs)
        if not problems:
            return merged
    raise CampaignFileError(problems)


def loads_campaigns(text: str, *, source: str = "<campaigns>", fences: Any = None) -> CampaignSet:
    """Load campaigns from YAML text; raises :class:`CampaignFileError` with every problem."""
    cs, problems = parse_text(text, source=source, fences=_fence_map(fences))
    if problems or cs is None:
        raise CampaignFileError(problems)
    return cs


def merge(sets: Sequence[CampaignSet]) -> tuple[CampaignSet, list[CampaignError]]:
    """One set from several files: ids must stay unique and at most one file may hold ``defaults``."""
    problems: list[CampaignError] = []
    seen: dict[str, Campaign] = {}
    campaigns: list[Campaign] = []
    defaults = Defaults()
    defaults_from: str | None = None
    for cs in sets:
        for c in cs.campaigns:
            if c.id in seen:
                first = seen[c.id]
                problems.append(CampaignError(
                    f"duplicate campaign id {c.id!r} (first defined at {first.source}:{first.line}:{first.col})",
                    source=c.source, line=c.line, col=c.col, field="id",
                ))
                continue
            seen[c.id] = c
            campaigns.append(c)
        if cs.defaults != Defaults():
            if defaults_from is not None:
                problems.append(CampaignError(
                    f"defaults are already set in {defaults_from}; keep them in one file",
                    source=cs.sources[0] if cs.sources else None, field="defaults",
                ))
            defaults, defaults_from = cs.defaults, (cs.sources[0] if cs.sources else "?")
    sources = tuple(s for cs in sets for s in cs.sources)
    return CampaignSet(tuple(campaigns), defaults, sources), problems


def _fence_map(fences: Any) -> dict[str, FenceInfo] | None:
    if fences is None:
        return None
    if isinstance(fences, Mapping):
        return {str(k): v if isinstance(v, FenceInfo) else FenceInfo.from_fence(v) for k, v in fences.items()}
    out: dict[str, FenceInfo] = {}
    for f in fences:
        info = f if isinstance(f, FenceInfo) else FenceInfo.from_fence(f)
        out[info.id] = info
    return out


# ------------------------------------------------------------------ building


def _build(root: Loaded, ctx: Context, fences: Mapping[str, FenceInfo] | None) -> CampaignSet:
    defaults = _defaults(root.get("defaults"), ctx)
    campaigns: list[Campaign] = []
    seen: dict[str, At] = {}
    for item in root.get("campaigns") or []:
        if item is INVALID:
            continue
        cid, duplicate = item.get("id"), False
        if isinstance(cid, str) and cid in seen:  # reported even when the campaign has other problems
            ctx.problem(item.where("id"), f"duplicate campaign id {cid!r} (first defined at line {seen[cid].line})")
            duplicate = True
        elif isinstance(cid, str):
            seen[cid] = item.where("id")
        c = _campaign(item, ctx, fences, defaults)
        if c is not None and not duplicate:
            campaigns.append(c)
    return CampaignSet(tuple(campaigns), defaults, (ctx.source,))


def _caps(value: Any, at: At, ctx: Context) -> tuple[Cap, ...]:
    if value is None or value is INVALID:
        return ()
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if item is INVALID or any(item.get(k) is INVALID for k in ("max", "window", "kind")):
            continue
        kind: Any = item.get("kind") or "rolling"
        window = float(item["window"])
        if kind == "calendar" and window % 86400 != 0:
            ctx.problem(item.where("window"), f"{item.where('window').path}: a calendar window counts whole days (like '1d' or '7d'), not {window:g} s")
            continue
        out.append(Cap(max=int(item["max"]), window_s=window, kind=kind))
    return tuple(out)


def _defaults(node: Any, ctx: Context) -> Defaults:
    if node is None or node is INVALID:
        return Defaults()
    limits = node.get("limits")
    per_device = _caps(limits.get("per_device"), limits.where("per_device"), ctx) if limits else ()
    quiet = None
    q = node.get("quiet_hours")
    if q and q.get("hours") is not INVALID and q.get("days") is not INVALID and q.get("mode") is not INVALID:
        quiet = QuietHours(windows=q["hours"], days=q.get("days"), mode=q.get("mode") or "hold")
    zone = node.get("timezone")
    return Defaults(timezone=zone or None, per_device=per_device, quiet_hours=quiet)


def _campaign(
    node: Loaded, ctx: Context, fences: Mapping[str, FenceInfo] | None, defaults: Defaults
) -> Campaign | None:
    problems_before = len(ctx.problems)
    cid: Any = node.get("id")
    trigger = _trigger(node.get("trigger"), ctx, fences)
    schedule = _schedule(node.get("schedule"), ctx)
    audience = _audience(node.get("audience"), ctx)
    offer_node = node.get("offer")
    allow_empty = bool(offer_node and offer_node is not INVALID and offer_node.get("allow_empty"))
    fill = Fillable(trigger, audience, allow_empty)
    offer = _offer(offer_node, ctx, fences, fill)
    limits = _limits(node.get("limits"), ctx)
    experiment = _experiment(node.get("experiment"), ctx, fences, offer, fill)
    conversion = _conversion(node.get("conversion"), ctx, fences)
    if schedule is not None and schedule.opening_hours and fences is not None and trigger is not None:
        targets = _target_fences(trigger, fences)
        closed = sorted(f.id for f in targets if f.opening is None)
        if targets and len(closed) == len(targets):
            ctx.problem(node["schedule"].where("opening_hours"),
                        f"{node['schedule'].where('opening_hours').path}: none of the campaign's fences has an 'opening_hours' property")
    if (
        len(ctx.problems) > problems_before
        or trigger is None
        or offer is None
        or any(v is INVALID for v in (cid, node.get("status"), node.get("priority"), node.get("max_event_age")))
    ):
        return None  # the problems are recorded (here or while reading the structure)
    return Campaign(
        id=cid,
        name=str(node.get("name") or cid),
        status=node.get("status") or "active",
        priority=int(node.get("priority") or 0),
        trigger=trigger,
        schedule=schedule or Schedule(),
        audience=audience or Audience(),
        offer=offer,
        limits=limits or Limits(),
        experiment=experiment,
        conversion=conversion or Conversion(),
        max_event_age_s=float(node.get("max_event_age") or DEFAULT_MAX_EVENT_AGE_S),
        source=ctx.source,
        line=node.where("id").line,
        col=node.where("id").col,
    )


def _target_fences(trigger: Trigger, fences: Mapping[str, FenceInfo]) -> list[FenceInfo]:
    return [
        f for f in fences.values()
        if (trigger.fences is None or f.id in trigger.fences) and (trigger.tags is None or f.tags & trigger.tags)
    ]


def _trigger(node: Any, ctx: Context, fences: Mapping[str, FenceInfo] | None) -> Trigger | None:
    if node is None or node is INVALID:
        return None
    on = node["on"]
    path = node.at.path
    ok = not any(v is INVALID for v in node.values())
    if on is INVALID:
        return None
    if on == "dwell" and node.get("dwell") is None:
        ctx.problem(node.key_at.get("on", node.at), f"{path}: a dwell trigger needs 'dwell' (a duration like '10m')")
        ok = False
    if on != "dwell" and node.get("dwell") is not None:
        ctx.problem(node.key_at["dwell"], f"{path}.dwell only applies to 'on: dwell' (this trigger is 'on: {on}')")
        ok = False
    for key in ("zones", "proximity"):
        if on != "beacon" and node.get(key) is not None and node.get(key) is not INVALID:
            ctx.problem(node.key_at[key], f"{path}.{key} only applies to 'on: beacon' (this trigger is 'on: {on}')")
            ok = False
    if not _known_places(node, ctx, fences):
        ok = False
    if ctx.zones is not None:
        known = sorted(ctx.zones)
        for i, zone in enumerate(v for v in (node.get("zones") or []) if v is not INVALID):
            if zone not in ctx.zones:
                close = difflib.get_close_matches(zone, known, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f" (known zones: {', '.join(known) or 'none'})"
                ctx.problem(_item_at(node, "zones", i), f"{path}.zones[{i}]: no beacon of the registry has the zone {zone!r}{hint}")
                ok = False
    if not ok:
        return None
    return Trigger(
        on=on,
        fences=frozenset(node["fences"]) if node.get("fences") else None,
        tags=frozenset(node["tags"]) if node.get("tags") else None,
        dwell_s=node.get("dwell"),
        zones=frozenset(node["zones"]) if node.get("zones") else None,
        proximity=node.get("proximity"),
        min_probability=node.get("min_probability") or 0.0,
    )


def _known_places(node: Loaded, ctx: Context, fences: Mapping[str, FenceInfo] | None) -> bool:
    """Whether the ``fences`` and ``tags`` lists under ``node`` name fences that exist (each unknown one is a problem)."""
    if fences is None:
        return True
    ok = True
    path = node.at.path
    known_tags = sorted({t for f in fences.values() for t in f.tags})
    for i, fid in enumerate(v for v in (node.get("fences") or []) if v is not INVALID):
        if fid not in fences:
            close = difflib.get_close_matches(fid, list(fences), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            ctx.problem(_item_at(node, "fences", i), f"{path}.fences[{i}]: unknown fence id {fid!r}{hint}")
            ok = False
    for i, tag in enumerate(v for v in (node.get("tags") or []) if v is not INVALID):
        if tag not in known_tags:
            close = difflib.get_close_matches(tag, known_tags, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known tags: {', '.join(known_tags)})"
            ctx.problem(_item_at(node, "tags", i), f"{path}.tags[{i}]: no fence has the tag {tag!r}{hint}")
            ok = False
    return ok


def _experiment(
    node: Any, ctx: Context, fences: Mapping[str, FenceInfo] | None, base: OfferTemplate | None, fill: Fillable
) -> Experiment | None:
    if node is None or node is INVALID:
        return None
    ok = not any(v is INVALID for v in node.values())
    variants: list[Variant] = []
    seen: dict[str, At] = {}
    for item in node.get("variants") or ():
        if item is INVALID:
            continue
        vid, over = item.get("id"), item.get("offer")
        if isinstance(vid, str):
            if vid == "holdout":
                ctx.problem(item.where("id"), f"{item.where('id').path}: 'holdout' names the control group; give the variant another id")
                ok = False
            elif vid in seen:
                ctx.problem(item.where("id"), f"{item.where('id').path}: variant {vid!r} is listed twice (first at line {seen[vid].line})")
                ok = False
            seen[vid] = item.where("id")
        offer = _variant_offer(over, ctx, fences, base, fill)
        if offer is None or any(v is INVALID for v in item.values()):
            ok = False
            continue
        variants.append(Variant(id=vid, weight=float(item["weight"]), offer=offer))
    if not ok:
        return None
    return Experiment(holdout=float(node.get("holdout") or 0.0), variants=tuple(variants),
                      salt=str(node.get("salt") or ""))


def _variant_offer(
    node: Any, ctx: Context, fences: Mapping[str, FenceInfo] | None, base: OfferTemplate | None, fill: Fillable
) -> OfferTemplate | None:
    """The campaign's offer with the fields the variant replaces (``data``: keys added or replaced)."""
    if node is INVALID:
        return None
    if node is None:
        return base
    data = check_texts(node, ctx, fences, fill)
    if base is None or INVALID in node.values() or data is INVALID or (data and INVALID in data.values()):
        return None
    return OfferTemplate(
        title=str(node["title"]) if node.get("title") is not None else base.title,
        body=str(node["body"]) if node.get("body") is not None else base.body,
        deep_link=str(node["deep_link"]) if node.get("deep_link") is not None else base.deep_link,
        data=MappingProxyType({**base.data, **dict(data or {})}),
        expires_in_s=base.expires_in_s,
        delay_s=base.delay_s,
        allow_empty=base.allow_empty,
    )


def _conversion(node: Any, ctx: Context, fences: Mapping[str, FenceInfo] | None) -> Conversion | None:
    if node is None or node is INVALID:
        return None
    visit = node.get("visit")
    ok = not any(v is INVALID for v in node.values())
    if visit is not None and visit is not INVALID:
        ok = _known_places(visit, ctx, fences) and ok and INVALID not in visit.values()
    if not ok:
        return None
    return Conversion(
        within_s=float(node["within"]),
        fences=frozenset(visit["fences"]) if visit and visit.get("fences") else None,
        tags=frozenset(visit["tags"]) if visit and visit.get("tags") else None,
        min_dwell_s=float(node.get("min_dwell") or 0.0),
        min_probability=float(node.get("min_probability") or 0.0),
    )


def _item_at(node: Loaded, key: str, i: int) -> At:
    """The location of item ``i`` of the list under ``key`` (ruamel keeps it on the raw list)."""
    raw = getattr(node, "raw", None)
    base = node.where(key)
    seq = raw.get(key) if raw is not None else None
    lc = getattr(seq, "lc", None)
    if lc is not None:
        try:
            line, col = lc.item(i)
            return At(line + 1, col + 1, f"{base.path}[{i}]")
        except (KeyError, IndexError, TypeError):
            pass
    return base


def _schedule(node: Any, ctx: Context) -> Schedule | None:
    if node is None or node is INVALID:
        return None
    other_problems = any(v is INVALID for k, v in node.items() if k not in ("start", "end"))
    if node.get("timezone") is INVALID:
        return None  # start and end without an offset cannot be read
    zone = node.get("timezone")
    times: dict[str, float] = {}
    for key in ("start", "end"):
        value = node.get(key)
        if value is None:
            continue
        try:
            times[key] = _convert.parse_datetime(value, zone)
        except ValueError as exc:
            ctx.problem(node.where(key), f"{node.where(key).path}: {exc}")
    if "start" in times and "end" in times and times["end"] <= times["start"]:
        ctx.problem(node.where("end"), f"{node.where('end').path}: the end ({node['end']}) is not after the start ({node['start']})")
        return None
    if other_problems or len(times) != sum(node.get(k) is not None for k in ("start", "end")):
        return None
    return Schedule(
        start=times.get("start"),
        end=times.get("end"),
        days=node.get("days"),
        hours=node.get("hours"),
        timezone=zone,
        opening_hours=bool(node.get("opening_hours")),
    )


def _audience(node: Any, ctx: Context) -> Audience | None:
    if node is None or node is INVALID:
        return None
    seg: Any = node.get("segments") or {}
    conditions: dict[str, Condition] = {}
    for name, cond in (node.get("attributes") or {}).items():
        if cond is INVALID or INVALID in cond.values():
            continue
        lo, hi = cond.get("min"), cond.get("max")
        if lo is not None and hi is not None and lo > hi:
            ctx.problem(cond.where("max"), f"{cond.where('max').path}: max ({hi:g}) is below min ({lo:g}): no device can match")
            continue
        one_of = cond.get("in")
        if cond.get("equals") is not None and one_of is not None and cond["equals"] not in one_of:
            ctx.problem(cond.where("equals"), f"{cond.where('equals').path}: {cond['equals']!r} is not in the 'in' list: no device can match")
            continue
        conditions[name] = Condition(equals=cond.get("equals"), one_of=tuple(one_of) if one_of is not None else None, min=lo, max=hi)
    if seg is INVALID:
        return None
    sets: dict[str, frozenset[str] | None] = {
        k: (frozenset(v) if v and v is not INVALID else None) for k, v in seg.items()
    }
    required, excluded = sets.get("all"), sets.get("none")
    if required and excluded and required & excluded:
        both = ", ".join(sorted(required & excluded))
        ctx.problem(seg.where("none"), f"{seg.where('none').path}: {both} is both required (all) and excluded (none)")
    return Audience(
        any_segments=sets.get("any"),
        all_segments=sets.get("all"),
        none_segments=sets.get("none"),
        attributes=MappingProxyType(conditions),
    )


def _offer(node: Any, ctx: Context, fences: Mapping[str, FenceInfo] | None, fill: Fillable) -> OfferTemplate | None:
    if node is None or node is INVALID:
        return None
    data = check_texts(node, ctx, fences, fill)
    if INVALID in node.values() or data is INVALID or (data and INVALID in data.values()):
        return None
    return OfferTemplate(
        title=str(node["title"]),
        body=None if node.get("body") is None else str(node["body"]),
        deep_link=None if node.get("deep_link") is None else str(node["deep_link"]),
        data=MappingProxyType(dict(data or {})),
        expires_in_s=node.get("expires_in"),
        delay_s=node.get("delay"),
        allow_empty=bool(node.get("allow_empty")),
    )


def _limits(node: Any, ctx: Context) -> Limits | None:
    if node is None or node is INVALID:
        return None
    per_device = _caps(node.get("per_device"), node.where("per_device"), ctx)
    budget: Any = node.get("budget") or {}
    total = per_day = None
    if budget is not INVALID:
        total, per_day = budget.get("total"), budget.get("per_day")
        if isinstance(total, int) and isinstance(per_day, int) and per_day > total:
            ctx.problem(budget.where("per_day"), f"{budget.where('per_day').path}: per_day ({per_day}) is above total ({total})")
    if INVALID in node.values() or budget is INVALID or (budget and INVALID in budget.values()):
        return None
    return Limits(
        per_device=per_device,
        cooldown_s=node.get("cooldown"),
        budget_total=total,
        budget_per_day=per_day,
    )
