"""Hot reload of fences, campaigns and the beacon registry, on one worker or many.

A configuration *document* is the text of one kind (``fences``, ``campaigns``,
``beacons``) with its media type, SHA-256 and a version number. Documents change
in two ways:

- a watched file changes (polled by mtime, size and content hash, every
  ``interval`` seconds: no inotify dependency, works on every file system);
- an admin ``PUT /v1/<kind>``.

Either way the server validates the new text *before* anything is replaced (a
bad file is logged with ``file:line:col`` and the old configuration stays), then
hands it to a :class:`ConfigChannel`:

- :class:`MemoryChannel` (embedded default): the version is a counter in the
  process and the document is applied at once;
- :class:`RedisChannel`: one Lua script compares the document's hash with the
  stored one and, when it differs, increments ``<prefix>:config:<kind>:version``
  and stores the text in ``<prefix>:config:<kind>``; the worker then publishes the
  new version on ``<prefix>:config`` (on a cluster the root is ``{<prefix>:config}``:
  one slot, sharded pub/sub, see :mod:`proximity.service.pubsub`). Every worker subscribes and loads the newer version; the
  same check also runs on every poll, so a worker that missed a message (pub/sub
  is fire-and-forget) catches up within one interval. Workers that watch the
  same file all see its change; the hash comparison makes the first one win and
  the rest no-ops.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proximity.service.errors import redis_unavailable
from proximity.service.pubsub import messages, publish, tagged

log = logging.getLogger("proximity.service.reload")

KINDS: tuple[str, ...] = ("fences", "campaigns", "beacons")


@dataclass(frozen=True, slots=True)
class ConfigDoc:
    """One version of one kind of configuration."""

    kind: str
    text: str
    media_type: str
    version: int
    sha256: str
    origin: str  # a file path, "PUT /v1/<kind>" or "redis"

    @staticmethod
    def digest(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FileWatcher:
    """Tells when a file's content changed, by polling ``mtime``, size and (on a change of those) its hash."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stat: tuple[int, int] | None = None
        self._sha: str | None = None

    def _stat_now(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def prime(self, text: str) -> None:
        """Remember the content just loaded so the first poll does not report it again."""
        self._stat = self._stat_now()
        self._sha = ConfigDoc.digest(text)

    def poll(self) -> str | None:
        """The file's new text when it changed since the last call, else ``None``."""
        stat = self._stat_now()
        if stat is None or stat == self._stat:
            return None
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.error("%s: cannot read: %s", self.path, exc)
            return None
        self._stat = stat
        sha = ConfigDoc.digest(text)
        if sha == self._sha:
            return None
        self._sha = sha
        return text


class ConfigChannel:
    """Where configuration versions live and how workers hear of them (interface)."""

    async def publish(self, kind: str, text: str, media_type: str, origin: str) -> ConfigDoc:
        raise NotImplementedError

    async def latest(self, kind: str) -> ConfigDoc | None:
        raise NotImplementedError

    async def listen(self, notify: Callable[[str], Awaitable[None]]) -> None:
        """Call ``notify(kind)`` whenever another worker published; runs until cancelled."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


class MemoryChannel(ConfigChannel):
    """One process: versions count up from 1 per kind."""

    def __init__(self) -> None:
        self._docs: dict[str, ConfigDoc] = {}

    async def publish(self, kind: str, text: str, media_type: str, origin: str) -> ConfigDoc:
        sha = ConfigDoc.digest(text)
        current = self._docs.get(kind)
        if current is not None and current.sha256 == sha:
            return current
        doc = ConfigDoc(kind, text, media_type, (current.version + 1) if current else 1, sha, origin)
        self._docs[kind] = doc
        return doc

    async def latest(self, kind: str) -> ConfigDoc | None:
        return self._docs.get(kind)


_PUBLISH_LUA = """
-- the version; negative when it is new (the caller announces it: on a cluster a script cannot publish
-- on a sharded channel of another node's choosing, so one code path publishes outside)
local cur = redis.call('HGET', KEYS[1], 'sha256')
if cur == ARGV[1] then
  return tonumber(redis.call('HGET', KEYS[1], 'version'))
end
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'sha256', ARGV[1], 'text', ARGV[2], 'media_type', ARGV[3],
           'origin', ARGV[4], 'version', v)
return -v
"""


class RedisChannel(ConfigChannel):
    """Versions, documents and notifications in Redis (see the module docstring)."""

    def __init__(self, client: Any, prefix: str, *, cluster: bool = False) -> None:
        self._client = client  # redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster
        self.prefix = prefix
        self.cluster = cluster
        self.channel = tagged(prefix, "config", cluster)  # keys and channel share the tag: one slot
        from proxbase.redis_script import register_script  # redis only where it is used
        self._script = register_script(client, _PUBLISH_LUA)

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisChannel:
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2), prefix)

    def _keys(self, kind: str) -> list[str]:
        return [f"{self.channel}:{kind}", f"{self.channel}:{kind}:version"]

    async def publish(self, kind: str, text: str, media_type: str, origin: str) -> ConfigDoc:
        sha = ConfigDoc.digest(text)
        with redis_unavailable("configuration channel"):
            version = int(await self._script(keys=self._keys(kind), args=[sha, text, media_type, origin]))
            if version < 0:
                version = -version
                await publish(self._client, self.channel, f"{kind}:{version}", self.cluster)
        doc = await self.latest(kind)
        if doc is None or doc.version != version:  # a newer one landed in between: report ours
            return ConfigDoc(kind, text, media_type, version, sha, origin)
        return doc

    async def latest(self, kind: str) -> ConfigDoc | None:
        with redis_unavailable("configuration channel"):
            raw = await self._client.hgetall(self._keys(kind)[0])
        if not raw:
            return None
        d = {k.decode(): v.decode("utf-8") for k, v in raw.items()}
        return ConfigDoc(kind, d["text"], d["media_type"], int(d["version"]), d["sha256"], d.get("origin", "redis"))

    async def listen(self, notify: Callable[[str], Awaitable[None]]) -> None:
        async for data in messages(self._client, self.channel, self.cluster):
            kind = data.decode().split(":", 1)[0]
            if kind in KINDS:
                await notify(kind)

    async def close(self) -> None:
        await self._client.aclose()


#: ``validate(kind, text, media_type, source) -> parsed`` raises a located ValueError when the text is bad.
Validate = Callable[[str, str, str, str], Any]
#: ``apply(doc, parsed)`` makes a validated document the one in force.
Apply = Callable[[ConfigDoc, Any], Awaitable[None]]


class Reloader:
    """Keeps the worker's configuration at the channel's latest valid version."""

    def __init__(self, channel: ConfigChannel, validate: Validate, apply: Apply, *, interval: float = 2.0,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.channel = channel
        self.validate = validate
        self.apply = apply
        self.interval = interval
        self.on_error = on_error
        self.loaded: dict[str, ConfigDoc] = {}
        self.watchers: dict[str, FileWatcher] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, kind: str, path: str | os.PathLike[str]) -> None:
        self.watchers[kind] = FileWatcher(path)

    async def submit(self, kind: str, text: str, media_type: str, origin: str) -> tuple[ConfigDoc, Any]:
        """Validate ``text`` (raises, changing nothing, when bad), publish it and apply it here."""
        parsed = self.validate(kind, text, media_type, origin)
        doc = await self.channel.publish(kind, text, media_type, origin)
        async with self._lock:
            current = self.loaded.get(kind)
            if current is None or doc.version > current.version:
                await self.apply(doc, parsed)
                self.loaded[kind] = doc
        return doc, parsed

    async def refresh(self, kind: str) -> bool:
        """Load the channel's latest version of ``kind`` when it is newer than ours."""
        latest = await self.channel.latest(kind)
        current = self.loaded.get(kind)
        if latest is None or (current is not None and latest.version <= current.version):
            return False
        async with self._lock:
            current = self.loaded.get(kind)
            if current is not None and latest.version <= current.version:
                return False
            if current is not None and current.sha256 == latest.sha256:
                self.loaded[kind] = latest
                return False
            try:
                parsed = self.validate(kind, latest.text, latest.media_type, latest.origin)
            except ValueError as exc:  # published by an older worker with other rules: keep ours
                self._report(kind, exc)
                self.loaded[kind] = latest
                return False
            await self.apply(latest, parsed)
            self.loaded[kind] = latest
            return True

    def _report(self, kind: str, exc: BaseException) -> None:
        from proximity.errors import describe

        log.error("%s not reloaded: %s", kind, describe(exc))
        if self.on_error is not None:
            self.on_error(kind, exc)

    async def poll_once(self) -> None:
        """One round: watched files first, then the channel's versions."""
        for kind, watcher in list(self.watchers.items()):
            text = watcher.poll()
            if text is None:
                continue
            try:
                await self.submit(kind, text, media_type_for(watcher.path), str(watcher.path))
                log.info("%s reloaded from %s", kind, watcher.path)
            except ValueError as exc:
                self._report(kind, exc)
        for kind in KINDS:
            await self.refresh(kind)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away for a moment: try again next round
                log.warning("configuration poll failed: %s", exc)

    async def _listen_loop(self) -> None:
        while True:
            try:
                await self.channel.listen(self.refresh_quietly)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("configuration channel lost (%s); retrying", exc)
                await asyncio.sleep(min(self.interval, 1.0))

    async def refresh_quietly(self, kind: str) -> None:
        try:
            await self.refresh(kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("reload of %s failed: %s", kind, exc)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._poll_loop(), name="reload-poll"),
                       asyncio.create_task(self._listen_loop(), name="reload-listen")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a subscription stuck closing its connection must not hold the shutdown
            done, _ = await asyncio.wait(self._tasks, timeout=5.0)
            for task in done:  # retrieve what it ended with (cancelled, or an error already logged)
                task.cancelled() or task.exception()
        self._tasks = []


def media_type_for(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".geojson", ".json"):
        return "application/json"
    if suffix in (".yaml", ".yml"):
        return "application/yaml"
    return "text/plain"


__all__ = [
    "KINDS",
    "ConfigChannel",
    "ConfigDoc",
    "FileWatcher",
    "MemoryChannel",
    "RedisChannel",
    "Reloader",
    "media_type_for",
]
