"""The live feed: events and offers fanned out to WebSocket clients, across workers over Redis pub/sub.

:class:`FeedHub` holds this worker's clients (each with a filter and a bounded
queue: a slow client loses its oldest messages, never blocks the service);
:class:`FeedBus` carries messages to every worker's hub. A message is encoded
once (:func:`proximity.service.codec.json_bytes`) and the same bytes go to every
client that wants it. ``GET /v1/events`` (:func:`live_feed`) is the route.

Some kinds (``positions``: every pinging device's newest position, the console's map)
cost a worker real work per batch and are only made while a client somewhere asks
for them (:meth:`FeedBus.watching`). With Redis, a worker whose hub has such a
client keeps ``<channel>:watch:<kind>`` alive (``SET ... PX``, refreshed every
``WATCH_REFRESH_S``, gone ``WATCH_TTL_S`` after its last client left) and
announces a new watcher on the feed channel at once; every worker reads the key
every ``WATCH_REFRESH_S``, so one that missed the announcement catches up within a
second.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from proxbase.tasks import cancel_and_wait
from proximity.service.auth import FEED_SUBPROTOCOL
from proximity.service.codec import clean, json_bytes, parse_json
from proximity.service.errors import ApiError
from proximity.service.metrics import ServiceMetrics
from proximity.service.pubsub import messages as pubsub_messages
from proximity.service.pubsub import publish, tagged

log = logging.getLogger("proximity.service.feed")

#: kinds made only while some client (of any worker) asks for them by name
ON_DEMAND: tuple[str, ...] = ("positions",)
WATCH_REFRESH_S = 1.0
WATCH_TTL_S = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class FeedFilter:
    """Which messages a live feed client wants; an empty set means any."""

    kinds: frozenset[str] = frozenset()
    fences: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()

    KINDS = frozenset({"enter", "dwell", "exit", "offer", "positions"})

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> FeedFilter:
        def split(name: str) -> frozenset[str]:
            values = [v for raw in query.getall(name, []) for v in raw.split(",")]  # type: ignore[attr-defined]
            return frozenset(v.strip() for v in values if v.strip())

        known = {"kind", "fence", "campaign", "device"}
        for name in query:
            if name == "key":
                raise ApiError(400, "the key is never taken from the URL (logs keep URLs): send X-API-Key, or from "
                                    "a browser the subprotocol proximity.key.<base64url of the key>", field="key",
                               reason="key_in_url")
            if name not in known:
                raise ApiError(400, f"unknown filter {name!r}; filters are kind, fence, campaign, device",
                               field=name, reason="bad_filter")
        kinds = split("kind")
        bad = sorted(kinds - cls.KINDS)
        if bad:
            raise ApiError(400, f"unknown kind {bad[0]!r}; kinds are dwell, enter, exit, offer, positions", field="kind",
                           reason="bad_filter")
        return cls(kinds, split("fence"), split("campaign"), split("device"))

    def accepts(self, msg: Mapping[str, Any]) -> bool:
        if msg.get("type") == "positions":  # devices' newest positions (the console's map): only on request
            return "positions" in self.kinds
        is_offer = msg.get("type") == "offer"
        kind = "offer" if is_offer else msg.get("kind")
        if self.kinds and kind not in self.kinds:
            return False
        if self.devices and msg.get("device_id") not in self.devices:
            return False
        if self.fences and msg.get("fence_id") not in self.fences:
            return False
        return not (self.campaigns and (not is_offer or msg.get("campaign_id") not in self.campaigns))


class FeedClient:
    def __init__(self, filt: FeedFilter, maxsize: int) -> None:
        self.filter = filt
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize)
        self.dropped = 0


class FeedHub:
    """Fans events and offers out to live feed clients; a slow client loses its oldest messages, never blocks."""

    def __init__(self, maxsize: int = 1000, metrics: ServiceMetrics | None = None) -> None:
        self.maxsize = maxsize
        self.metrics = metrics
        self.clients: set[FeedClient] = set()
        self.watched: Counter[str] = Counter()  # kind -> clients that asked for it by name
        #: called with each kind that a client asks for by name when no other client of this hub did
        self.on_watch: Callable[[str], None] | None = None

    def watches(self, kind: str) -> bool:
        """Whether a client of this hub asked for ``kind`` by name (safe to call from the engine thread)."""
        return self.watched[kind] > 0

    def subscribe(self, filt: FeedFilter) -> FeedClient:
        client = FeedClient(filt, self.maxsize)
        self.clients.add(client)
        new = [k for k in sorted(filt.kinds) if self.watched[k] <= 0]
        self.watched.update(filt.kinds)
        if self.on_watch is not None:
            for kind in new:
                self.on_watch(kind)
        if self.metrics:
            self.metrics.ws_clients.set(len(self.clients))
        return client

    def unsubscribe(self, client: FeedClient) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self.watched.subtract(client.filter.kinds)
        if self.metrics:
            self.metrics.ws_clients.set(len(self.clients))

    def deliver(self, messages: Iterable[Mapping[str, Any]]) -> None:
        if not self.clients:
            return
        for msg in messages:
            data: bytes | None = None
            for client in self.clients:
                if not client.filter.accepts(msg):
                    continue
                if data is None:
                    data = json_bytes(clean(dict(msg)))
                if client.queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        client.queue.get_nowait()
                    client.dropped += 1
                    if self.metrics:
                        self.metrics.ws_dropped.inc()
                client.queue.put_nowait(data)

    def close(self) -> None:
        for client in list(self.clients):
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(None)


class FeedBus:
    """Carries feed messages to the hub of every worker: directly in memory, or over Redis pub/sub."""

    def __init__(self, hub: FeedHub, client: Any = None, prefix: str = "proximity", *,
                 cluster: bool = False) -> None:
        self.hub = hub
        self._client = client
        self.cluster = cluster  # sharded pub/sub on one slot's shard
        self.channel = tagged(prefix, "feed", cluster)
        self._task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._announcing: set[asyncio.Task[None]] = set()
        self._outgoing: list[Mapping[str, Any]] = []  # published by the sender task, in order
        self._sender: asyncio.Task[None] | None = None
        #: on-demand kinds that some worker's client asks for (last read of the watch keys, or an announcement)
        self.remote: set[str] = set()
        if client is not None:
            hub.on_watch = self._announce

    def watching(self, kind: str) -> bool:
        """Whether a client of any worker asked for ``kind`` by name (cheap: no I/O; safe from any thread)."""
        return self.hub.watches(kind) or kind in self.remote

    def _watch_key(self, kind: str) -> str:
        return f"{self.channel}:watch:{kind}"

    def _announce(self, kind: str) -> None:
        """A client of this hub asked for an on-demand ``kind``: tell every worker now."""
        if kind not in ON_DEMAND:
            return
        task = asyncio.get_running_loop().create_task(self._mark(kind, announce=True))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _mark(self, kind: str, *, announce: bool = False) -> None:
        try:
            await self._client.set(self._watch_key(kind), b"1", px=int(WATCH_TTL_S * 1000))
            if announce:
                await publish(self._client, self.channel, json_bytes({"watch": kind}), self.cluster)
        except Exception as exc:  # the poll tries again
            log.warning("live feed: could not announce a %s watcher: %s", kind, exc)

    async def _watch(self) -> None:
        """Keep this hub's watch keys alive and learn which on-demand kinds any worker watches."""
        while True:
            try:
                for kind in ON_DEMAND:
                    if self.hub.watches(kind):
                        await self._mark(kind)
                        self.remote.add(kind)
                    elif await self._client.exists(self._watch_key(kind)):
                        self.remote.add(kind)
                    else:
                        self.remote.discard(kind)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep what was known; the next round tries again
                log.debug("live feed: watch keys not read: %s", exc)
            await asyncio.sleep(WATCH_REFRESH_S)

    async def publish(self, messages: Sequence[Mapping[str, Any]]) -> None:
        if not messages:
            return
        if self._client is None:
            self.hub.deliver(messages)
            return
        self._outgoing.extend(messages)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send(), name="feed-send")

    async def _send(self) -> None:
        """Publish what waits, in order, one message at a time: what the requests and deliveries of one turn
        of the event loop publish (a batch's events, a delivery pass's offers) goes in one message, and more
        under load."""
        await asyncio.sleep(0)
        while self._outgoing:
            messages, self._outgoing = self._outgoing, []
            try:
                await publish(self._client, self.channel, json_bytes(messages), self.cluster)  # NaN: null
            except Exception as exc:  # the feed is best effort; the batch itself already succeeded
                log.warning("live feed publish failed: %s", exc)
                self.hub.deliver(messages)

    async def _listen(self) -> None:
        while True:
            try:
                async for data in pubsub_messages(self._client, self.channel, self.cluster):
                    if data[:1] == b"{":  # an announcement (messages are lists): a worker has a new watcher
                        kind = parse_json(data).get("watch")
                        if kind in ON_DEMAND:
                            self.remote.add(kind)
                    elif self.hub.clients:  # no client on this worker: nothing to decode
                        self.hub.deliver(parse_json(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live feed subscription lost (%s); retrying", exc)
                await asyncio.sleep(1.0)

    def start(self) -> None:
        if self._client is not None:
            self._task = asyncio.create_task(self._listen(), name="feed-listen")
            self._watch_task = asyncio.create_task(self._watch(), name="feed-watch")

    async def stop(self) -> None:
        if self._sender is not None:  # what was published before the stop goes out (bounded)
            await asyncio.wait([self._sender], timeout=2.0)
        # bounded: a subscription stuck closing its connection must not hold the worker's shutdown
        await cancel_and_wait((self._task, self._watch_task, self._sender, *self._announcing), timeout=5.0)




async def serve_socket(request: web.Request, hub: FeedHub, sockets: set[web.WebSocketResponse]) -> web.StreamResponse:
    """A WebSocket that receives the feed's messages matching the request's filters until it closes."""
    filt = FeedFilter.from_query(request.query)
    ws = web.WebSocketResponse(heartbeat=30.0, protocols=(FEED_SUBPROTOCOL,))
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "this route is a WebSocket: connect with a WebSocket client", field="Upgrade",
                       reason="not_websocket")
    await ws.prepare(request)
    client = hub.subscribe(filt)
    sockets.add(ws)

    async def pump() -> None:
        while True:
            data = await client.queue.get()
            if data is None:
                return
            await ws.send_str(data.decode("utf-8"))

    sender = asyncio.create_task(pump())
    try:
        await ws.send_str(json.dumps({"type": "hello", "filter": {
            "kind": sorted(filt.kinds), "fence": sorted(filt.fences), "campaign": sorted(filt.campaigns),
            "device": sorted(filt.devices)}}))
        async for msg in ws:
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
    finally:
        await cancel_and_wait([sender])
        hub.unsubscribe(client)
        sockets.discard(ws)
        await ws.close()
    return ws


async def close_sockets(hub: FeedHub, sockets: set[web.WebSocketResponse]) -> None:
    """Shutdown: end every client's queue and close its socket."""
    hub.close()
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


__all__ = ["FeedBus", "FeedClient", "FeedFilter", "FeedHub", "close_sockets", "serve_socket"]
