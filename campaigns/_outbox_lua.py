"""The Lua scripts of the Redis outbox (:mod:`campaigns.redis_outbox`), one module of their own: the key
layout and the fencing protocol they implement are described there. Each script touches the keys of one
shard (one hash slot)."""

from __future__ import annotations

# put(stream, held, ids, heldbody, id, body, after, now, ttl, exp): 1 when the offer is new (held by quiet hours
# or delay when ``after`` is set, else on the stream), 0 when its id was put within ``ttl`` s
PUT_FN = """
local function put(stream, held, ids, heldbody, id, body, after, now, ttl, exp)
  if redis.call('ZADD', ids, 'NX', now, id) == 0 then
    return 0
  end
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', '(' .. (now - ttl))
  if after ~= '' then
    redis.call('ZADD', held, after, id)
    redis.call('HSET', heldbody, id, body)
  else
    redis.call('XADD', stream, '*', 'id', id, 'offer', body, 'exp', exp)
  end
  return 1
end
"""

# KEYS: stream, held, ids, heldbody; ARGV: id, body, after, now, ttl, exp
_PUT = PUT_FN + """
return put(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6])
"""

# KEYS: held, heldbody, drops; ARGV: now, then offer ids: drop those still held and not due by now
_CANCEL = """
local n = 0
for i = 2, #ARGV do
  local due = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if due and tonumber(due) > tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[3], 'cancelled', n) end
return n
"""

# remember(key, member, ttl): a delayed offer in its cancel key's index, kept at least ttl s
REMEMBER_FN = """
local function remember(key, member, ttl)
  redis.call('SADD', key, member)
  if redis.call('TTL', key) < tonumber(ttl) then redis.call('EXPIRE', key, ttl) end
end
"""

# KEYS: a delayed index; ARGV: member, ttl (s) or '' to take the members (and delete the index)
_DELAYED = REMEMBER_FN + """
if ARGV[1] == '' then
  local members = redis.call('SMEMBERS', KEYS[1])
  redis.call('DEL', KEYS[1])
  return members
end
remember(KEYS[1], ARGV[1], ARGV[2])
return {}
"""

# KEYS: stream, held, heldbody, done, drops; ARGV: group, consumer, count, min_idle_ms, now, promote_limit
_CLAIM = """
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
local now = tonumber(ARGV[5])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5], 'LIMIT', 0, tonumber(ARGV[6]))
for _, id in ipairs(due) do
  local body = redis.call('HGET', KEYS[3], id)
  if body then
    local exp = cjson.decode(body)['expires_at']
    if type(exp) == 'number' and exp <= now then
      redis.call('HINCRBY', KEYS[5], 'expired', 1)
    else
      redis.call('XADD', stream, '*', 'id', id, 'offer', body, 'exp', type(exp) == 'number' and tostring(exp) or '')
    end
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
local out = {}
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
local function take(entry, deliveries)
  local fields = entry[2]
  if not fields then return end
  local oid = field(fields, 'id')
  local exp = tonumber(field(fields, 'exp') or '')
  local expired = deliveries == 1 and exp ~= nil and exp <= now
  if expired or (oid and redis.call('ZSCORE', KEYS[4], oid)) then
    redis.call('XACK', stream, group, entry[1])
    redis.call('XDEL', stream, entry[1])
    if expired then redis.call('HINCRBY', KEYS[5], 'expired', 1) end
    return
  end
  out[#out + 1] = {entry[1], field(fields, 'offer'), deliveries}
end
local cursor = '0-0'
for _ = 1, 10 do
  local reply = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], cursor, 'COUNT', count - #out)
  for _, entry in ipairs(reply[2]) do
    local p = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
    take(entry, p[1] and p[1][4] or 1)
  end
  cursor = reply[1]
  if cursor == '0-0' or #out >= count then break end
end
if #out < count then
  local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out, 'STREAMS', stream, '>')
  if got then
    for _, entry in ipairs(got[1][2]) do take(entry, 1) end
  end
end
return out
"""

# KEYS: stream; ARGV: group, consumer, then (entry id, deliveries) pairs
_RENEW = """
local out = {}
for i = 3, #ARGV, 2 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] and tonumber(p[1][4]) == tonumber(ARGV[i + 1]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# KEYS: stream, done; ARGV: group, entry id, offer id, now, ttl
_ACK = """
local now = tonumber(ARGV[4])
local first = redis.call('ZADD', KEYS[2], 'NX', now, ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[5])))
return first
"""

# KEYS: stream, dead; ARGV: group, entry id, offer JSON, reason, attempts
_DEAD = """
redis.call('XADD', KEYS[2], '*', 'offer', ARGV[3], 'reason', ARGV[4], 'attempts', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""


__all__ = ["PUT_FN", "REMEMBER_FN"]
