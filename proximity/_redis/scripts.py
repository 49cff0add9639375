"""The Lua scripts of the Redis state store, and the Python half of their argument protocol.

Every code a script reads or writes has a name on both sides: the Lua ``local``
at the top of each script and the constant of the same name here.

- ``SAVE`` compare-and-sets device states on their version and moves each
  device's score in the due set in the same atomic step. Per device it takes a
  *head* (``"<expected version>"``, then optionally :data:`UNDUE` or
  ``" <due time>"``), a *value* (the new ``"<version>|<state>"``,
  :data:`DELETE` or :data:`KEEP`), a journal entry and a *track* (the beacon
  filters' new state, :data:`DELETE` or :data:`KEEP`); it replies one byte per
  device, :data:`WON` or :data:`LOST`.
- ``LOAD`` reads many state keys at once: their sizes and their bytes.
- ``PLACES`` hands out shared integer ids for place keys.

The store decides what to do with each device as a bit set (:data:`DROP`,
:data:`SET_DUE`, :data:`TOUCH`); :func:`save_args` turns those into heads and
values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# value codes of SAVE (its Lua locals of the same names)
DELETE = b""  # value: delete the device's state key
KEEP = b"="  # value: leave the device's state as it is (only its due time changes)
UNDUE = b" -"  # head suffix: remove the device from the due set
WON, LOST = ord("1"), ord("0")  # reply byte per device: the compare-and-set ran / another process wrote first

# what the store does with a device it saves (bits of one flag per device)
DROP = 1  # delete its state (no visit left, or forgotten) and take it off the due set
SET_DUE = 2  # write its due time (a new visit, or ``advance`` refreshing it)
TOUCH = 4  # state unchanged, but ``advance`` refreshes its due time


SAVE = """
-- SAVE: compare-and-set device states on their version; keep the due set and the filter states in step.
-- KEYS[1]    the due set (sorted set: device id -> earliest time advance has work for it)
-- KEYS[2]    the batch's journal (hash: device id -> its transitions in this batch), when ARGV[3] > 0
-- KEYS[3..]  the devices' state keys, "<prefix>:{<device id>}:st", then the filter state keys
--            "<prefix>:{<device id>}:tr" of the devices that have a TRACK (ARGV[4] = '1': every device,
--            in order) or else of the devices whose VALUE is DELETE (in order)
-- ARGV[1]    the state keys' TTL in milliseconds
-- ARGV[2]    the byte length of "<prefix>" (the device id is cut out of its key)
-- ARGV[3]    the journal's TTL in milliseconds (0: no journal)
-- ARGV[4]    '1': every device has a TRACK (a batch of sightings), else none has
-- then per device a HEAD, a VALUE, an ENTRY and (ARGV[4] = '1') a TRACK:
--   HEAD   "<expected version>" then nothing (due set untouched), UNDUE (take the device off the due set)
--          or " <time>" (the device's score in the due set)
--   VALUE  "<expected version + 1>|<state>" (write), DELETE (delete the key, and its filter state)
--          or KEEP (leave it)
--   ENTRY  the device's journal entry, written with its state (ignored without a journal)
--   TRACK  the device's new filter state (write), DELETE (delete it) or KEEP (leave it)
-- reply: one byte per device, WON (the version was the expected one: done) or LOST (nothing changed)
local DELETE, KEEP, UNDUE, WON, LOST = '', '=', ' -', '1', '0'
local ttl, skip, jttl = ARGV[1], tonumber(ARGV[2]) + 3, tonumber(ARGV[3])
local tracked = ARGV[4] == '1'
local per = 3
if tracked then per = 4 end
local n = (#ARGV - 4) / per
local t = n + 2  -- the last filter state key used
local out = {}
local journaled = false
for d = 1, n do
  local i = d + 2
  local j = (d - 1) * per + 5
  local want, due = string.match(ARGV[j], '^(%d+)(.*)$')
  want = tonumber(want)
  local value = ARGV[j + 1]
  local track = KEEP
  local tkey = nil
  if tracked then track = ARGV[j + 3] end
  if tracked or value == DELETE then
    t = t + 1
    tkey = KEYS[t]
  end
  local write = value ~= DELETE and value ~= KEEP
  local cur
  if write then
    cur = redis.call('SET', KEYS[i], value, 'PX', ttl, 'GET')  -- the common case: one call
  else
    cur = redis.call('GET', KEYS[i])
  end
  local v = 0
  if cur then v = tonumber(string.match(cur, '^(%d+)|')) or 0 end
  if v ~= want and write then  -- lost the race: put the winner's state back
    if cur then
      redis.call('SET', KEYS[i], cur, 'PX', ttl)
    else
      redis.call('DEL', KEYS[i])
    end
  end
  if v == want then
    if value == DELETE then
      if cur then redis.call('DEL', KEYS[i]) end
      track = DELETE
    end
    if track == DELETE then
      redis.call('DEL', tkey)
    elseif track ~= KEEP then
      redis.call('SET', tkey, track, 'PX', ttl)
    end
    local name = string.sub(KEYS[i], skip, -5)  -- "<prefix>:{" .. name .. "}:st"
    if due ~= '' then
      if due == UNDUE then
        redis.call('ZREM', KEYS[1], name)
      else
        redis.call('ZADD', KEYS[1], string.sub(due, 2), name)
      end
    end
    if jttl > 0 then
      redis.call('HSET', KEYS[2], name, ARGV[j + 2])
      journaled = true
    end
    out[#out + 1] = WON
  else
    out[#out + 1] = LOST
  end
end
if journaled then redis.call('PEXPIRE', KEYS[2], jttl) end
return table.concat(out)
"""

LOAD = """
-- LOAD: the values of KEYS; reply {"<size>,<size>,...", all values concatenated} (size 0: no key)
local sizes, values = {}, {}
for a = 1, #KEYS, 4000 do  -- MGET, 4000 keys a call at most (unpack's limit is about 8000)
  local got = redis.call('MGET', unpack(KEYS, a, math.min(a + 3999, #KEYS)))
  for k = 1, #got do
    local v = got[k]
    if v then
      sizes[a + k - 1] = #v
      values[#values + 1] = v
    else
      sizes[a + k - 1] = 0
    end
  end
end
return {table.concat(sizes, ','), table.concat(values)}
"""

PLACES = """
-- PLACES: KEYS[1] hash place key -> id, KEYS[2] the id counter; reply the id of each ARGV (new ones made)
local out = {}
for i = 1, #ARGV do
  local id = redis.call('HGET', KEYS[1], ARGV[i])
  if not id then
    id = redis.call('INCR', KEYS[2]) - 1
    redis.call('HSET', KEYS[1], ARGV[i], id)
  end
  out[i] = tonumber(id)
end
return out
"""


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA-1 (for ``EVALSHA``)."""

    src: str

    @cached_property
    def sha(self) -> bytes:
        return hashlib.sha1(self.src.encode()).hexdigest().encode()

    def evalsha(self, keys: Sequence[bytes], args: Sequence[bytes]) -> bytes:
        """The packed ``EVALSHA`` command, in one join (redis-py packs argument by argument, which costs
        more than the script itself for batches of thousands of devices)."""
        return pack([b"EVALSHA", self.sha, b"%d" % len(keys), *keys, *args])

    def evalsha_encoded(self, keys: Sequence[bytes], args: Sequence[bytes], encoded: bytes, n_encoded: int) -> bytes:
        """:meth:`evalsha` whose arguments end with ``n_encoded`` already in the protocol (``encoded``)."""
        head = pack([b"EVALSHA", self.sha, b"%d" % len(keys), *keys, *args])
        count = 3 + len(keys) + len(args)
        return b"*%d" % (count + n_encoded) + head[len(b"*%d" % count) :] + encoded


def pack(parts: Sequence[bytes]) -> bytes:
    """One command in the Redis protocol."""
    return b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%b\r\n" % (len(x), x) for x in parts])


def save_args(save: np.ndarray, flags: np.ndarray, version: np.ndarray, due: np.ndarray,
              body: bytes, start: np.ndarray, end: np.ndarray) -> tuple[list[bytes], list[bytes]]:
    """SAVE's head and value for each device index in ``save``: ``flags`` (:data:`DROP` | :data:`SET_DUE` |
    :data:`TOUCH`), the ``version`` loaded, the ``due`` time, and the new body ``body[start:end]``."""
    heads, values = [], []
    f_l, ver, due_l, s_l, e_l = flags.tolist(), version.tolist(), due.tolist(), start.tolist(), end.tolist()
    for i in save.tolist():
        f = f_l[i]
        if f & DROP:
            heads.append(b"%d%b" % (ver[i], UNDUE))
            values.append(DELETE)
        else:
            heads.append(b"%d %r" % (ver[i], due_l[i]) if f & (SET_DUE | TOUCH) else b"%d" % ver[i])
            values.append(KEEP if f & TOUCH else b"%d|%b" % (ver[i] + 1, body[s_l[i] : e_l[i]]))
    return heads, values


SAVE_SCRIPT, LOAD_SCRIPT, PLACES_SCRIPT = Script(SAVE), Script(LOAD), Script(PLACES)

__all__ = ["DELETE", "DROP", "KEEP", "LOAD", "LOAD_SCRIPT", "LOST", "PLACES", "PLACES_SCRIPT", "SAVE",
           "SAVE_SCRIPT", "SET_DUE", "TOUCH", "UNDUE", "WON", "Script", "pack", "save_args"]
