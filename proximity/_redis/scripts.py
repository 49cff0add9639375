"""The Lua scripts of the Redis state store, and the Python half of their argument protocol.

Every code a script reads or writes has a name on both sides: the Lua ``local``
at the top of each script and the constant of the same name here.

- ``SAVE`` compare-and-sets device states on their version and moves each
  device's score in the due set in the same atomic step. Its arguments are a
  few blobs whatever the number of devices (see
  :func:`proximity._redis.codec.save_blobs`): a fixed-size record per device
  (expected version, due time, :data:`DROP` / :data:`SET_DUE` / :data:`TOUCH`
  flags, byte lengths) and the new states, journal entries and beacon filter
  states concatenated; the script slices them with ``struct.unpack`` and
  ``string.sub``. It replies one byte per device, :data:`WON` or :data:`LOST`.
  The keys stay in ``KEYS`` (one per device, plus its ``:tr`` key where it is
  written), so every call is correct on Redis Cluster.
- ``LOAD`` reads many state keys at once: their sizes (binary) and their bytes, in one string.
- ``PLACES`` hands out shared integer ids for place keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from proxbase.resp import bulk, pack

WON, LOST = ord("1"), ord("0")  # reply byte per device: the compare-and-set ran / another process wrote first

# what the store does with a device it saves (bits of its FLAGS byte; SAVE's Lua locals of the same names)
DROP = 1  # delete its state (no visit left, or forgotten) and take it off the due set
SET_DUE = 2  # write its due time (a new visit, or ``advance`` refreshing it)
TOUCH = 4  # state unchanged, but ``advance`` refreshes its due time


SAVE = """
-- SAVE: compare-and-set device states on their version; keep the due set and the filter states in step.
-- KEYS[1]    the due set (sorted set: device id -> earliest time advance has work for it)
-- KEYS[2]    the batch's journal (hash: device id -> its transitions in this batch), when ARGV[3] > 0
-- KEYS[3..]  the devices' state keys (".../<device id>...:st", see proximity._redis.layout), then their
--            filter state keys (the same ending in ":tr") of the devices that have a TRACK (ARGV[4] = '1':
--            every device, in order) or else of the devices whose FLAGS have DROP (in order)
-- ARGV[1]    the state keys' TTL in milliseconds
-- ARGV[2]    "<first> <last>": the device id is string.sub(state key, first, last) (the same place in
--            every state key of one call)
-- ARGV[3]    the journal's TTL in milliseconds (0: no journal)
-- ARGV[4]    '1': every device has a TRACK (a batch of sightings), else none has
-- ARGV[5]    HEADS: per device one fixed-size record (codec.SAVE_HEAD, HEAD bytes, little-endian):
--            the expected version and the due time (doubles), FLAGS (a byte: DROP, SET_DUE, TOUCH), and
--            the byte lengths of its STATE, its ENTRY and its TRACK (unsigned 32-bit)
-- ARGV[6]    the STATEs, concatenated: each device's new state (without "<version>|")
-- ARGV[7]    the ENTRYs, concatenated: each device's journal entry, written with its state
-- ARGV[8]    the TRACKs, concatenated: each device's new filter state (empty: delete it)
-- per device: DROP deletes its state and filter state and takes it off the due set; TOUCH keeps its state
-- and sets its due time; otherwise "<version + 1>|<STATE>" is written, and with SET_DUE its due time.
-- reply: one byte per device, WON (the version was the expected one: done) or LOST (nothing changed)
local DROP, SET_DUE, TOUCH, WON, LOST, HEAD = 1, 2, 4, '1', '0', 29
local ttl, jttl = ARGV[1], tonumber(ARGV[3])
local first, last = string.match(ARGV[2], '^(%d+) (%-?%d+)$')
first, last = tonumber(first), tonumber(last)
local tracked = ARGV[4] == '1'
local heads, states, entries, tracks = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local n = #heads / HEAD
local t = n + 2  -- the last filter state key used
local at, s, e, k = 1, 1, 1, 1  -- where the next record, STATE, ENTRY and TRACK start
local out = {}
local journaled = false
for d = 1, n do
  local key = KEYS[d + 2]
  local want, due, flags, slen, elen, tlen
  want, due, flags, slen, elen, tlen, at = struct.unpack('<ddBI4I4I4', heads, at)
  local drop = bit.band(flags, DROP) ~= 0
  local touch = bit.band(flags, TOUCH) ~= 0
  local write = not drop and not touch
  local track = nil  -- nil: leave the filter state as it is
  local tkey = nil
  if tracked then
    track = string.sub(tracks, k, k + tlen - 1)
    k = k + tlen
  end
  if tracked or drop then
    t = t + 1
    tkey = KEYS[t]
  end
  local cur
  if write then  -- the common case: one call
    cur = redis.call('SET', key, string.format('%d|', want + 1) .. string.sub(states, s, s + slen - 1),
                     'PX', ttl, 'GET')
  else
    cur = redis.call('GET', key)
  end
  s = s + slen
  local v = 0
  if cur then v = tonumber(string.match(cur, '^(%d+)|')) or 0 end
  if v ~= want and write then  -- lost the race: put the winner's state back
    if cur then
      redis.call('SET', key, cur, 'PX', ttl)
    else
      redis.call('DEL', key)
    end
  end
  if v == want then
    if drop then
      if cur then redis.call('DEL', key) end
      track = ''
    end
    if track == '' then
      redis.call('DEL', tkey)
    elseif track then
      redis.call('SET', tkey, track, 'PX', ttl)
    end
    local name = string.sub(key, first, last)
    if drop then
      redis.call('ZREM', KEYS[1], name)
    elseif bit.band(flags, SET_DUE + TOUCH) ~= 0 then
      redis.call('ZADD', KEYS[1], string.format('%.17g', due), name)
    end
    if jttl > 0 then
      redis.call('HSET', KEYS[2], name, string.sub(entries, e, e + elen - 1))
      journaled = true
    end
    out[#out + 1] = WON
  else
    out[#out + 1] = LOST
  end
  e = e + elen
end
if journaled then redis.call('PEXPIRE', KEYS[2], jttl) end
return table.concat(out)
"""

LOAD = """
-- LOAD: the values of KEYS; reply one string: per key its size (4 bytes, unsigned little-endian; 0: no
-- key), then the values concatenated
local sizes, values = {}, {}
for a = 1, #KEYS, 4000 do  -- MGET, 4000 keys a call at most (unpack's limit is about 8000)
  local got = redis.call('MGET', unpack(KEYS, a, math.min(a + 3999, #KEYS)))
  for k = 1, #got do
    local v = got[k]
    if v then
      sizes[a + k - 1] = struct.pack('<I4', #v)
      values[#values + 1] = v
    else
      sizes[a + k - 1] = '\\0\\0\\0\\0'
    end
  end
end
return table.concat(sizes) .. table.concat(values)
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

    def evalsha_encoded(self, n_keys: int, keys: bytes, args: Sequence[bytes]) -> bytes:
        """The packed ``EVALSHA`` command of ``n_keys`` keys already in the protocol (``keys``, see :func:`bulk`),
        in one join (redis-py packs argument by argument, which costs more than the script itself for batches
        of thousands of devices)."""
        return (b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$%d\r\n%d\r\n" % (
            3 + n_keys + len(args), self.sha, len(b"%d" % n_keys), n_keys) + keys
                + b"".join([b"$%d\r\n%b\r\n" % (len(x), x) for x in args]))


SAVE_SCRIPT, LOAD_SCRIPT, PLACES_SCRIPT = Script(SAVE), Script(LOAD), Script(PLACES)

__all__ = ["DROP", "LOAD", "LOAD_SCRIPT", "LOST", "PLACES", "PLACES_SCRIPT", "SAVE", "SAVE_SCRIPT", "SET_DUE",
           "TOUCH", "WON", "Script", "bulk", "pack"]
