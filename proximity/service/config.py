"""The service's settings: one dataclass, read from a YAML file and/or command-line options.

``proximity serve --config service.yaml`` reads a mapping with the same names as
the fields of :class:`ServiceConfig` (dashes or underscores), for example::

    port: 8080
    fences: /etc/proximity/fences.geojson
    campaigns: /etc/proximity/campaigns.yaml
    redis: redis://127.0.0.1:6379/0
    max_batch: 1000
    rate_limit: 100

Command-line options given explicitly win over the file. Problems are reported
as ``file:line:col: message`` with a did-you-mean for unknown keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from proximity.errors import ValidationError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_path(name: str) -> Path:
    """A bundled example file (``fences.geojson``, ``campaigns.yaml``, ``beacons.yaml``, ...)."""
    return EXAMPLES / name


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``proximity serve`` can be told. Defaults are the embedded demo's."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: GeoJSON fences, YAML campaigns, YAML beacon registry; watched and hot-reloaded.
    fences: str | None = None
    campaigns: str | None = None
    beacons: str | None = None
    #: Use the bundled example fences, campaigns and registry for what is not given.
    demo: bool = False
    #: Key file (``name:scopes:sha256`` lines); keys from ``$PROXIMITY_API_KEYS`` are added.
    keys: str | None = None
    #: Shared state; ``None`` is the embedded default (everything in memory).
    redis: str | None = None
    redis_prefix: str = "proximity"
    #: Redis Cluster: ``None`` follows the server (a cluster node's URL gives a cluster client), ``True``
    #: runs the cluster protocol (every script inside one hash slot) on whatever ``redis`` is.
    #: In a file, ``redis: {url: ..., cluster: true, prefix: ...}`` sets the three at once.
    redis_cluster: bool | None = None
    #: With Redis Cluster: the device groups (hash tags) the presence state is spread over; ``None``: the
    #: store's default (32, or ``$PROXIMITY_REDIS_GROUPS``). Fixed for a prefix once written (see the README's
    #: "Choosing ``groups``"). ``redis: {groups: N}`` in a file.
    redis_groups: int | None = None
    workers: int = 1
    #: Most rows in one ``/v1/pings`` batch and one ``/v1/scans`` batch (413 beyond).
    max_batch: int = 1000
    max_scan_rows: int = 5000
    #: Most bytes of a request body, after gunzip too (413 beyond).
    max_body_bytes: int = 1 << 20
    #: Requests per second per key (token bucket; 0 disables) and the burst allowed. With
    #: ``redis`` the bucket is in Redis, shared by every worker.
    rate_limit: float = 100.0
    rate_burst: float = 200.0
    #: Ingest batches per second per device of a key, and the burst: a batch is charged to each device
    #: it carries (see :mod:`proximity.service.ratelimit`). 0 disables it; ``rate_limit: 0`` disables both.
    device_rate_limit: float = 1.0
    device_rate_burst: float = 20.0
    #: Pings or sightings more than this many seconds in the future are rejected.
    max_skew_s: float = 300.0
    #: How long a ``batch_id``'s response is kept for replay.
    idempotency_ttl_s: float = 86400.0
    #: Seconds between checks of the watched files (and of the Redis config version).
    reload_interval_s: float = 2.0
    #: Seconds between ``engine.advance(now)`` calls (debounce exits, TTL expiry).
    advance_interval_s: float = 1.0
    #: Due devices one advance call runs at most; a pass with more due (a wave of exits: a mall closing, a
    #: fleet back after an outage) makes further calls 2 ms apart, the requests' engine calls between them.
    advance_max_devices: int = 500
    #: Seconds a graceful shutdown waits for in-flight batches and the outbox.
    shutdown_timeout_s: float = 30.0
    #: Seconds a connection has to deliver a request's line and headers, from its opening or from the
    #: previous answer (a client that trickles headers or sends nothing is disconnected; idle
    #: keep-alive connections close after it too), and seconds a request's body has to arrive
    #: once its headers did (408, connection closed).
    header_timeout_s: float = 15.0
    body_timeout_s: float = 30.0
    #: Connections one worker serves at once; one more is answered 503 (``Retry-After: 1``) and
    #: closed at once, before its request is read (see :mod:`proximity.service.guard`).
    max_connections: int = 1000
    #: Messages buffered per live feed client before the oldest are dropped.
    feed_queue: int = 1000
    #: Threads the engine's compiled kernels (fence matching) use in each worker. One per
    #: worker is the default: scale out with ``workers``. Kernels that fan out over more
    #: threads than the machine has free cores stall on their barriers under load (the
    #: HTTP benchmark measured 30x fewer pings/s with 2 threads than with 1 on 2 busy cores).
    engine_threads: int = 1
    #: Concurrent ``/v1/pings`` requests share one engine call (:mod:`proximity.service.coalesce`), at most
    #: ``coalesce_max_pings`` pings a call; ``false`` runs each request alone.
    coalesce: bool = True
    coalesce_max_pings: int = 500
    #: Under load (requests coming faster than one a window), a call waits up to this long after its first
    #: request for others to join it; a request after a quiet spell never waits. 0 (the default): no
    #: window, a call starts as soon as the engine is free (1-2 ms cut the CPU per request by 18-28 % at a
    #: steady 2,500-2,800 requests/s, and added 1-2 ms to the median and more to the p99: README).
    coalesce_window_ms: float = 0.0
    #: A ``/v1/pings`` call runs on the event loop's own thread when the engine thread is idle (two thread
    #: hand-offs and the threads' turns with the GIL saved: 10-20 % of a worker's CPU). With Redis state only
    #: while Redis has answered fast for ``INLINE_CALM_S`` (a call on the loop holds it for its round trips:
    #: see :meth:`EngineHost.run_here`); ``false``: every call on the engine thread.
    inline_calls: bool = True
    #: Offer delivery besides the live feed: a webhook URL (secret from the named
    #: environment variable) and/or a JSONL file.
    webhook_url: str | None = None
    webhook_secret_env: str = "PROXIMITY_WEBHOOK_SECRET"
    offers_file: str | None = None
    #: One log line per request (logger ``proximity.access``: method, path, status, duration, bytes, key name;
    #: never the key itself). ``false`` turns it off.
    access_log: bool = True
    #: ``true`` when the service is fed a past log (the simulation's ``--via http``): campaigns then judge no
    #: event stale by its age (no ``max_event_age``), as a backtest does. Live services keep ``false``.
    replay: bool = False
    #: Extra settings passed to the engine (``EngineConfig`` fields).
    engine: Mapping[str, Any] = field(default_factory=dict)
    #: Beacon ranging settings (keyword arguments of ``beacons.ProximityTracker``: ``filter``,
    #: ``window_s``, ``trim``, ``thresholds``, ``path_loss_exponent``, ...).
    tracker: Mapping[str, Any] = field(default_factory=dict)
    #: The console's map: a raster tile URL template (``https://tiles.example/{z}/{x}/{y}.png``, Web
    #: Mercator) drawn under the fences, and its attribution; ``None`` draws on a plain background.
    console_tile_url: str | None = None
    console_tile_attribution: str | None = None
    #: With the embedded demo: replay the bundled day of pings and sightings in a loop at this many
    #: times real time (0: off), so the console's map moves.
    replay_demo: float = 0.0

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        if not 0 <= self.port <= 65535:
            problems.append(("port", f"port must be 0-65535, not {self.port}"))
        for name in ("workers", "max_batch", "max_scan_rows", "max_body_bytes", "feed_queue",
                     "engine_threads", "coalesce_max_pings", "max_connections", "advance_max_devices"):
            if getattr(self, name) < 1:
                problems.append((name, f"{name} must be at least 1, not {getattr(self, name)}"))
        for name in ("rate_limit", "rate_burst", "device_rate_limit", "device_rate_burst", "max_skew_s",
                     "idempotency_ttl_s"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                problems.append((name, f"{name} must be a finite number >= 0, not {v}"))
        for name in ("reload_interval_s", "advance_interval_s", "shutdown_timeout_s", "header_timeout_s",
                     "body_timeout_s"):
            v = getattr(self, name)
            if not math.isfinite(v) or v <= 0:
                problems.append((name, f"{name} must be a finite number > 0, not {v}"))
        if not math.isfinite(self.coalesce_window_ms) or not 0 <= self.coalesce_window_ms <= 50:
            problems.append(("coalesce_window_ms",
                             f"coalesce_window_ms must be 0 (no window) to 50, not {self.coalesce_window_ms}"))
        if not math.isfinite(self.replay_demo) or not 0 <= self.replay_demo <= 10_000:
            problems.append(("replay_demo", f"replay_demo must be 0 (off) to 10000 times real time, not {self.replay_demo}"))
        if self.console_tile_url is not None and not all(p in self.console_tile_url for p in ("{z}", "{x}", "{y}")):
            problems.append(("console_tile_url", "console_tile_url must contain {z}, {x} and {y}"))
        for rate, burst in (("rate_limit", "rate_burst"), ("device_rate_limit", "device_rate_burst")):
            if getattr(self, rate) > 0 and getattr(self, burst) < 1:
                problems.append((burst, f"{burst} must be at least 1 when {rate} is set"))
        if self.redis_groups is not None and not 1 <= self.redis_groups <= 16384:
            problems.append(("redis_groups", f"redis_groups must be 1 to 16384, not {self.redis_groups}"))
        if self.workers > 1 and not self.redis:
            problems.append(("workers", "more than one worker needs shared state: give --redis URL"))
        if not self.redis_prefix or any(c in self.redis_prefix for c in " {}"):
            problems.append(("redis_prefix", "redis_prefix must be non-empty, without spaces or braces"))
        problems += _settings_problems("engine", self.engine) + _settings_problems("tracker", self.tracker)
        if problems:
            name, message = problems[0]
            raise ValidationError(message, field=name)

    @property
    def uses_demo(self) -> bool:
        return self.demo

    def environment_problems(self, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
        """What the environment lacks for this configuration, as ``(field, message)``: ``serve`` checks it
        before it binds its port (a worker would otherwise exit after "listening")."""
        env = os.environ if environ is None else environ
        if self.webhook_url and not env.get(self.webhook_secret_env):
            return [("webhook_secret_env", f"--webhook-url needs the webhooks' signing secret in the environment "
                                           f"variable {self.webhook_secret_env}; set it (export "
                                           f"{self.webhook_secret_env}=...) or drop --webhook-url")]
        return []

    def resolved_paths(self) -> dict[str, Path | None]:
        """The fences/campaigns/beacons files to load (bundled examples for the demo)."""
        out: dict[str, Path | None] = {}
        for kind, example in (("fences", "fences.geojson"), ("campaigns", "campaigns.yaml"),
                              ("beacons", "beacons.yaml")):
            given = getattr(self, kind)
            if given:
                out[kind] = Path(given)
            elif self.demo and example_path(example).is_file():
                out[kind] = example_path(example)
            else:
                out[kind] = None
        return out

    def replace(self, **changes: Any) -> ServiceConfig:
        return dataclasses.replace(self, **changes)

    def engine_settings(self, **fixed: Any) -> dict[str, Any]:
        """``engine:`` as keyword arguments of ``EngineConfig``, with ``fixed`` settings winning."""
        return {**dict(self.engine), **fixed}

    def tracker_settings(self) -> dict[str, Any]:
        """``tracker:`` as keyword arguments of ``beacons.ProximityTracker`` (YAML lists become tuples)."""
        return tracker_kwargs(self.tracker)


def tracker_kwargs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Tracker settings from YAML as ``ProximityTracker`` keyword arguments (``thresholds`` a tuple)."""
    return {k: tuple(v) if k == "thresholds" and isinstance(v, list) else v for k, v in settings.items()}


def _settings_problems(name: str, settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Check ``engine:`` (``EngineConfig``) or ``tracker:`` (``ProximityTracker``) settings by building one."""
    if not settings:
        return []
    try:
        if name == "engine":
            from proximity.engine import EngineConfig

            EngineConfig(**settings)
        else:
            from beacons import ProximityTracker

            ProximityTracker(None, **tracker_kwargs(settings))  # type: ignore[arg-type]
    except TypeError as exc:
        text = str(exc)
        bad = text.split("'")[1] if "unexpected keyword argument" in text and "'" in text else None
        if bad is None:
            return [(name, f"{name}: {text}")]
        if name == "engine":
            from proximity.engine import EngineConfig

            known = [f.name for f in fields(EngineConfig) if f.name != "clock"]
        else:
            import inspect

            from beacons import ProximityTracker

            known = [p for p in inspect.signature(ProximityTracker).parameters if p != "registry"]
        close = difflib.get_close_matches(bad, known, n=1)
        return [(name, f"{name}: unknown setting {bad!r}" + (f"; did you mean {close[0]!r}?" if close else ""))]
    except (ValueError, KeyError) as exc:
        return [(name, f"{name}: {exc}")]
    return []


_FIELDS = {f.name: f for f in fields(ServiceConfig)}
_TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,), "port": (int,), "fences": (str,), "campaigns": (str,), "beacons": (str,),
    "demo": (bool,), "keys": (str,), "redis": (str,), "redis_prefix": (str,),
    "redis_cluster": (bool,), "redis_groups": (int,), "workers": (int,),
    "max_batch": (int,), "max_scan_rows": (int,), "max_body_bytes": (int,), "rate_limit": (int, float),
    "rate_burst": (int, float), "device_rate_limit": (int, float), "device_rate_burst": (int, float),
    "max_skew_s": (int, float), "idempotency_ttl_s": (int, float),
    "reload_interval_s": (int, float), "advance_interval_s": (int, float), "advance_max_devices": (int,),
    "shutdown_timeout_s": (int, float), "header_timeout_s": (int, float), "body_timeout_s": (int, float),
    "max_connections": (int,), "feed_queue": (int,), "engine_threads": (int,),
    "coalesce": (bool,), "coalesce_max_pings": (int,), "coalesce_window_ms": (int, float), "inline_calls": (bool,), "webhook_url": (str,),
    "webhook_secret_env": (str,), "offers_file": (str,), "access_log": (bool,), "replay": (bool,),
    "engine": (dict, Mapping),
    "tracker": (dict, Mapping), "console_tile_url": (str,), "console_tile_attribution": (str,),
    "replay_demo": (int, float),
}


def _where(data: Any, key: str) -> tuple[int | None, int | None]:
    lc = getattr(data, "lc", None)
    if lc is None:
        return None, None
    try:
        line, col = lc.key(key)
    except (KeyError, TypeError, AttributeError):
        return None, None
    return line + 1, col + 1


_REDIS_KEYS = {"url": "redis", "cluster": "redis_cluster", "prefix": "redis_prefix", "groups": "redis_groups"}


def _expand_redis(data: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """``redis: {url, cluster, prefix, groups}`` becomes ``redis``, ``redis_cluster``, ``redis_prefix`` and
    ``redis_groups``."""
    block = data.get("redis")
    if not isinstance(block, Mapping):
        return data
    line, col = _where(data, "redis")
    out = {k: v for k, v in data.items() if k != "redis"}
    for key, value in block.items():
        name = _REDIS_KEYS.get(str(key))
        if name is None:
            raise ValidationError(f"redis: unknown setting {key!r} (url, cluster, prefix, groups)", source=source,
                                  line=line, col=col, field=f"redis.{key}")
        if name in out:
            raise ValidationError(f"redis.{key} and {name} both given", source=source, line=line, col=col,
                                  field=name)
        out[name] = value
    if "redis" not in out:
        raise ValidationError("redis: the url is missing", source=source, line=line, col=col, field="redis.url")
    return out


def config_from_mapping(data: Mapping[str, Any], *, source: str = "<config>", base_dir: Path | None = None,
                        **overrides: Any) -> ServiceConfig:
    """A :class:`ServiceConfig` from a mapping (e.g. parsed YAML with line numbers), then ``overrides``."""
    if not isinstance(data, Mapping):
        raise ValidationError("the service configuration must be a mapping of settings", source=source,
                              line=1, col=1)
    values: dict[str, Any] = {}
    data = _expand_redis(data, source)
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        line, col = _where(data, raw_key)
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValidationError(f"unknown setting {raw_key!r}{hint}", source=source, line=line, col=col,
                                  field=str(raw_key))
        types = _TYPES[key]
        ok = (value is None and _FIELDS[key].default is None) or (
            isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        )
        if not ok:
            names = " or ".join(t.__name__ for t in types)
            raise ValidationError(f"{key} must be {names}, not {type(value).__name__}", source=source,
                                  line=line, col=col, field=key)
        if key in ("fences", "campaigns", "beacons", "keys", "offers_file") and value and base_dir:
            value = str((base_dir / value).resolve()) if not os.path.isabs(value) else value
        if key in ("engine", "tracker"):
            value = dict(value)
        values[key] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServiceConfig(**values)
    except ValidationError as exc:
        line, col = _where(data, exc.field) if exc.field is not None and exc.field in data else (None, None)
        raise ValidationError(exc.message, source=source, line=line, col=col, field=exc.field) from None


def load_config(path: str | os.PathLike[str], **overrides: Any) -> ServiceConfig:
    """Read a YAML (or JSON) service configuration file."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    p = Path(path)
    text = p.read_text(encoding="utf-8")
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ValidationError(
            str(exc.problem or exc), source=str(p),
            line=None if mark is None else mark.line + 1, col=None if mark is None else mark.column + 1,
        ) from None
    return config_from_mapping(data if data is not None else {}, source=str(p), base_dir=p.parent, **overrides)


__all__ = ["EXAMPLES", "ServiceConfig", "config_from_mapping", "example_path", "load_config"]
