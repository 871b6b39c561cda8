"""What a cluster keeps in Redis, and the Lua scripts that change it (each one atomic).

The names are documented in docs/cluster.md. Every script that changes a channel's members
takes the channel's next event number and publishes the event in the same step, so every
node sees one numbered stream of changes per channel. Records on a channel's pub/sub
channel (fields separated by 0x1f):

- ``J seq node uid announce token can_send alias``: a member joined (token: the joining
  node's own number for the join, empty for a re-registration);
- ``L seq uid uid ...``: members left;
- ``M 0x1f message``: an HTTP push to a channel its node does not serve (the push script);

and on a node's own channel ``M`` (other nodes' messages for its members, several channels
to a record: see ``_cluster_calls``), ``D uid message channel`` (a direct message) or ``P n``
(the node's ping to itself).
"""

from __future__ import annotations

import hashlib

__all__ = ["SCRIPTS", "channel_keys", "key_digest", "node_keys"]


def channel_keys(name: str) -> tuple[bytes, bytes, bytes, bytes]:
    """Redis names for channel ``name``: members hash, keys hash, counter, pub/sub channel.

    The braces are a Redis Cluster hash tag: all four live in one slot.
    """
    tag = b"{" + name.encode() + b"}"
    return b"rc:m:" + tag, b"rc:k:" + tag, b"rc:s:" + tag, b"rc:c:" + tag


def node_keys(node: str) -> tuple[bytes, bytes, bytes]:
    """Redis names for ``node``: heartbeat, its channel set, its direct-message channel."""
    raw = node.encode()
    return b"rc:n:" + raw, b"rc:o:" + raw, b"rc:d:" + raw


def key_digest(key: str | None) -> bytes:
    """What Redis keeps of an ephemeral key: its SHA-256 (hex), never the key itself."""
    return b"" if key is None else hashlib.sha256(key.encode()).hexdigest().encode()


# Each script is one atomic decision. '\31' is the unit separator (0x1f) in Lua.
_JOIN = """
local m, k, s, o = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local uid, node, announce, alias, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jd, sd, snap, reserved, pub, name = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
if redis.call('HEXISTS', m, uid) == 1 then return {'taken'} end
local can_send = 1
local stored = {false, false}
if reserved == '0' then
  if redis.call('EXISTS', m) == 0 then
    redis.call('DEL', k)
    if jd ~= '' then redis.call('HSET', k, 'j', jd) end
    if sd ~= '' then redis.call('HSET', k, 's', sd) end
    stored = {jd, sd}
  else
    stored = redis.call('HMGET', k, 'j', 's')
    if stored[1] and stored[1] ~= jd then return {'key'} end
    if stored[2] and stored[2] ~= sd then can_send = 0 end
  end
end
local snapshot = {}
if snap == '1' then snapshot = redis.call('HGETALL', m) end
local seq = redis.call('INCR', s)
redis.call('PERSIST', s)
local u = '\\31'
redis.call('HSET', m, uid, node .. u .. seq .. u .. announce .. u .. alias)
redis.call('SADD', o, name)
local head = 'J' .. seq .. u .. node .. u .. uid .. u .. announce .. u .. token .. u .. can_send
redis.call('PUBLISH', pub, head .. u .. alias)
return {'ok', seq, can_send, stored[1] or '', stored[2] or '', snapshot}
"""

_LEAVE = """
local m, k, s, o = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local node, pub, last, name = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local mark = node .. '\\31'
local gone = {}
for i = 5, #ARGV do
  local value = redis.call('HGET', m, ARGV[i])
  if value and string.sub(value, 1, #mark) == mark then
    redis.call('HDEL', m, ARGV[i])
    gone[#gone + 1] = ARGV[i]
  end
end
if #gone > 0 then
  local seq = redis.call('INCR', s)
  redis.call('PUBLISH', pub, 'L' .. seq .. '\\31' .. table.concat(gone, '\\31'))
end
if redis.call('EXISTS', m) == 0 then
  redis.call('DEL', k)
  redis.call('PEXPIRE', s, 86400000)
end
if last == '1' then redis.call('SREM', o, name) end
return #gone
"""

_SYNC = """
local m, k, s, o = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local node, pub, jd, sd, name, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local u = '\\31'
local mark = node .. u
local last = 6 + 3 * count
if redis.call('EXISTS', m) == 0 then
  redis.call('DEL', k)
  if jd ~= '' then redis.call('HSET', k, 'j', jd) end
  if sd ~= '' then redis.call('HSET', k, 's', sd) end
end
-- this node's members now (triples), then the uids of its joins in flight (kept as they are)
local mine, keep = {}, {}
for i = 7, last, 3 do mine[ARGV[i]] = true end
for i = last + 1, #ARGV do keep[ARGV[i]] = true end
local all = redis.call('HGETALL', m)
local gone, conflicts = {}, {}
for i = 1, #all, 2 do
  local uid, value = all[i], all[i + 1]
  local ours = string.sub(value, 1, #mark) == mark
  if ours and not mine[uid] and not keep[uid] then
    redis.call('HDEL', m, uid)
    gone[#gone + 1] = uid
  elseif not ours and mine[uid] then
    mine[uid] = nil
    conflicts[#conflicts + 1] = uid
  end
end
if #gone > 0 then
  local seq = redis.call('INCR', s)
  redis.call('PUBLISH', pub, 'L' .. seq .. u .. table.concat(gone, u))
end
for i = 7, last, 3 do
  local uid = ARGV[i]
  if mine[uid] and redis.call('HEXISTS', m, uid) == 0 then
    local seq = redis.call('INCR', s)
    redis.call('HSET', m, uid, node .. u .. seq .. u .. ARGV[i + 1] .. u .. ARGV[i + 2])
    local head = 'J' .. seq .. u .. node .. u .. uid .. u .. ARGV[i + 1] .. u .. u .. '1'
    redis.call('PUBLISH', pub, head .. u .. ARGV[i + 2])
  end
end
if last < #ARGV or count > 0 then
  redis.call('SADD', o, name)
  redis.call('PERSIST', s)
else
  redis.call('SREM', o, name)
end
if redis.call('EXISTS', m) == 0 then
  redis.call('DEL', k)
  redis.call('PEXPIRE', s, 86400000)
end
local stored = redis.call('HMGET', k, 'j', 's')
return {tonumber(redis.call('GET', s) or '0'), conflicts, redis.call('HGETALL', m), stored[1] or '', stored[2] or ''}
"""

_PUSH = """
local n = redis.call('HLEN', KEYS[1])
if n > 0 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return n
"""

# Nodes whose heartbeat expired: their members leave every channel, announced like any leave.
_REAP = """
local reaped = 0
for _, node in ipairs(redis.call('SMEMBERS', 'rc:nodes')) do
  if redis.call('EXISTS', 'rc:n:' .. node) == 0 then
    local mark = node .. '\\31'
    for _, name in ipairs(redis.call('SMEMBERS', 'rc:o:' .. node)) do
      local tag = '{' .. name .. '}'
      local m, s = 'rc:m:' .. tag, 'rc:s:' .. tag
      local all = redis.call('HGETALL', m)
      local gone = {}
      for i = 1, #all, 2 do
        if string.sub(all[i + 1], 1, #mark) == mark then
          redis.call('HDEL', m, all[i])
          gone[#gone + 1] = all[i]
        end
      end
      if #gone > 0 then
        local seq = redis.call('INCR', s)
        redis.call('PUBLISH', 'rc:c:' .. tag, 'L' .. seq .. '\\31' .. table.concat(gone, '\\31'))
        reaped = reaped + #gone
      end
      if redis.call('EXISTS', m) == 0 then
        redis.call('DEL', 'rc:k:' .. tag)
        redis.call('PEXPIRE', s, 86400000)
      end
    end
    redis.call('DEL', 'rc:o:' .. node)
    redis.call('SREM', 'rc:nodes', node)
  end
end
return reaped
"""

#: The Lua scripts a transport registers, by the name a :class:`Call` gives.
SCRIPTS = {"join": _JOIN, "leave": _LEAVE, "sync": _SYNC, "push": _PUSH, "reap": _REAP}
