"""Move cluster-mode presence state from the per-device key layout of earlier versions to the grouped one
(see :mod:`proximity._redis.layout`)::

    python -m proximity._redis.migrate redis://node-1:6379/0 --prefix proximity --groups 32
"""

from __future__ import annotations

import argparse
from typing import Any

from proximity._redis.cluster import SLOTS, close, connect, slot_tags
from proximity._redis.layout import GROUPS, Layout
from proximity.errors import StateError


def migrate(r: Any, layout: Layout, batch: int = 1000) -> dict[str, int]:
    """Move the presence state of ``layout.prefix`` from the per-device cluster layout to ``layout``
    (grouped) and write the marker; the client ``r`` may be a ``RedisCluster`` or a plain Redis. Each key
    keeps its TTL; a due entry moves to its group's due set. Run it with no worker writing; it can be run
    again after an interruption (what moved is not found again). Returns counts."""
    if not layout.cluster:
        raise ValueError("the per-device layout is still the single-Redis one: nothing to migrate")
    got = r.get(layout.key)
    if got is not None and got != layout.marker:
        raise StateError(f"{layout.key} says {got!r}: not the per-device layout")
    head = layout.prefix.encode() + b":{"
    nodes = r.get_primaries() if hasattr(r, "get_primaries") else [None]
    moved = due = 0
    for node in nodes:
        client = r.get_redis_connection(node) if node is not None else r
        found = [k for k in client.scan_iter(match=head + b"*}:st", count=1000) if not layout.is_grouped_key(k)]
        for i in range(0, len(found), batch):
            old = found[i: i + batch]
            names = [k[len(head): -4].decode() for k in old]
            new, _ = layout.state_keys(names)
            pipe = r.pipeline(transaction=False)
            for k in old:
                for key in (k, k[:-2] + b"tr"):
                    pipe.get(key)
                    pipe.pttl(key)
            got_values = pipe.execute()
            pipe = r.pipeline(transaction=False)
            for j, (k, n) in enumerate(zip(old, new, strict=True)):
                for m, (src, dst) in enumerate(((k, n), (k[:-2] + b"tr", n[:-2] + b"tr"))):
                    value, ttl = got_values[4 * j + 2 * m], got_values[4 * j + 2 * m + 1]
                    if value is not None:
                        pipe.set(dst, value, px=ttl if ttl > 0 else None)
                        pipe.delete(src)
            pipe.execute()
            moved += len(old)
    tags = slot_tags()
    for s in range(SLOTS):
        key = b"%b:due:{%b}" % (layout.prefix.encode(), tags[s])
        entries = r.zrange(key, 0, -1, withscores=True)
        if not entries:
            continue
        names = [m.decode() for m, _ in entries]
        _, slots = layout.state_keys(names)
        pipe = r.pipeline(transaction=False)
        for (member, score), slot in zip(entries, slots.tolist(), strict=True):
            target = b"%b:due:{%b}" % (layout.prefix.encode(), tags[slot])
            if target != key:
                pipe.zadd(target, {member: score})
                pipe.zrem(key, member)
                due += 1
        pipe.execute()
    r.set(layout.key, layout.marker)
    return {"states": moved, "due_entries_moved": due}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proximity._redis.migrate",
                                 description="Move cluster-mode presence state to the grouped key layout.")
    ap.add_argument("url", help="a cluster node's URL (or a Redis run in cluster mode)")
    ap.add_argument("--prefix", default="proximity")
    ap.add_argument("--groups", type=int, default=GROUPS)
    args = ap.parse_args(argv)
    r = connect(args.url, True)
    try:
        print(migrate(r, Layout(args.prefix, True, args.groups)))
    finally:
        close(r)
    return 0


__all__ = ["main", "migrate"]

if __name__ == "__main__":
    raise SystemExit(main())
