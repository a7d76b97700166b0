"""Every state change of the shared store as one Lua script, run atomically by Redis.

Time is always Redis's own (`TIME`), never a relay's clock, so relays with skewed clocks agree on
due times, leases and the rate limit. Redis 7 replicates a script's effects, so `TIME` in a
writing script is allowed and replicas see the same values.

Layout. Every key starts with `{<namespace>}` (P below): one hash tag, so in a Redis Cluster all
of a namespace lives in one slot and a script may touch any of its keys. Keys that depend on data
(an event's hash, a tenant's sets) are built inside the scripts from P; P's key
`{ns}:sched` is passed as KEYS[1] so a cluster-aware client routes the call to that slot.

  P:e:<event_id>    HASH  t tenant, s state, n attempts this round, a accepted (ms), k ordering
                          key, b the stored request (payload, headers, target), h attempts (JSON
                          lines), o lease token, f failed at (ms), y dead-letter reason
  P:t:<tenant>:due  ZSET  events waiting, by due time (score = ms * 1000 + sequence: FIFO
                          within a millisecond); first attempts and retries alike
  P:t:<tenant>:lease ZSET events being delivered, by lease deadline (ms); ZCARD = in flight
  P:t:<tenant>:dead ZSET  dead letters by failed_at (ms), ties by event id
  P:t:<tenant>:lim  HASH  token bucket (tk, ta), breaker (bf failures, bt trips, bo open until,
                          bp the probe's event), endpoint (es state, ec cause, er reason, el
                          since, fs failing since, pa next probe, ep the probe's event)
  P:t:<tenant>:stats HASH total, delivered, failed, rt (waiting after a failed attempt),
                          rms/resp (answered attempts), claimed (taken over)
  P:t:<tenant>:okb  HASH  ordering key -> the event that holds it (`ordering: fifo`)
  P:sched           ZSET  tenant -> when it may next have work (ms); relays pick the lowest
  P:dead            ZSET  every tenant's dead letters, by failed_at (the unfiltered listing)
  P:done            ZSET  settled events (delivered, purged) kept for idempotency and status,
                          trimmed by age (the idempotency window) and count
  P:tenants         SET   tenants that ever had an event
  P:seq, P:tok      STRING counters (due-score sequence, lease tokens)

State letters: q queued, r retrying (waiting after a failed attempt), d delivering (leased),
x dead, D delivered, P purged.
"""

from __future__ import annotations

# Shared prologue: Redis's clock in milliseconds, and key helpers.
_PRELUDE = """
local P = ARGV[1]
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)
local function ekey(id) return P .. ':e:' .. id end
local function tkey(tid, name) return P .. ':t:' .. tid .. ':' .. name end
-- Lower the tenant's place in the scheduler to when its first waiting event is due.
local function wake(tid)
  local first = redis.call('ZRANGE', tkey(tid, 'due'), 0, 0, 'WITHSCORES')
  if first[2] then
    local at = math.max(now, math.floor(tonumber(first[2]) / 1000))
    redis.call('ZADD', KEYS[1], 'LT', at, tid)
  end
end
local function release_key(tid, id)
  local k = redis.call('HGET', ekey(id), 'k')
  if k and k ~= '' and redis.call('HGET', tkey(tid, 'okb'), k) == id then
    redis.call('HDEL', tkey(tid, 'okb'), k)
  end
end
"""

# ARGV: P, tenant, then (event_id, ordering key or "", stored request) per event.
# Returns, per event in order: "" when stored now, else the state letter it already has.
ACCEPT = (
    _PRELUDE
    + """
local tid = ARGV[2]
local count = (#ARGV - 2) / 3
local seq = redis.call('INCRBY', P .. ':seq', count) - count
local out = {}
local new = 0
local due = tkey(tid, 'due')
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local ek = ekey(id)
  local st = redis.call('HGET', ek, 's')
  if st then
    out[#out + 1] = st
  else
    seq = seq + 1
    redis.call('HSET', ek, 't', tid, 's', 'q', 'n', 0, 'a', now, 'k', ARGV[i + 1], 'b', ARGV[i + 2])
    redis.call('ZADD', due, now * 1000 + (seq % 1000), id)
    new = new + 1
    out[#out + 1] = ''
  end
end
if new > 0 then
  redis.call('HINCRBY', tkey(tid, 'stats'), 'total', new)
  redis.call('ZADD', KEYS[1], 'LT', now, tid)
  redis.call('SADD', P .. ':tenants', tid)
end
return out
"""
)

# ARGV: P, k, hold_ms. The k tenants whose time has come, lowest score first; each is pushed
# hold_ms ahead so other relays pick other tenants meanwhile (its claim sets the real score).
# Returns {earliest score left or -1, tenant...}.
PICK = (
    _PRELUDE
    + """
local k, hold = tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, k)
for _, tid in ipairs(ids) do
  redis.call('ZADD', KEYS[1], now + hold, tid)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local out = {first[2] and tonumber(first[2]) - now or -1}
for _, tid in ipairs(ids) do out[#out + 1] = tid end
return out
"""
)

# ARGV: P, tenant, relay id, max events, lease ms, max_in_flight, rate per second (0: none),
# fifo (1/0), probe interval ms.
# Takes over expired leases, then claims what the tenant's fleet-wide limits allow now, and sets
# the tenant's place in the scheduler. Returns {taken over, next (ms from now, -1 none), then
# (event_id, token, attempts this round, stored request, probe "" | "B" breaker | "E" endpoint,
# accepted at ms)...}.
CLAIM = (
    _PRELUDE
    + """
local tid, relay = ARGV[2], ARGV[3]
local max_n, lease_ms, mif = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local rate, fifo, probe_ms = tonumber(ARGV[7]), ARGV[8] == '1', tonumber(ARGV[9])
local due, lease, lim, okb = tkey(tid, 'due'), tkey(tid, 'lease'), tkey(tid, 'lim'), tkey(tid, 'okb')

-- 1. Leases that ran out: their relay stopped answering. Back in line, counted.
local reclaimed = 0
for _, id in ipairs(redis.call('ZRANGE', lease, '-inf', now, 'BYSCORE', 'LIMIT', 0, 100)) do
  redis.call('ZREM', lease, id)
  local ek = ekey(id)
  if redis.call('HGET', ek, 's') == 'd' then
    local n = tonumber(redis.call('HGET', ek, 'n')) or 0
    redis.call('HSET', ek, 's', n > 0 and 'r' or 'q')
    redis.call('HDEL', ek, 'o')
    redis.call('ZADD', due, now * 1000, id)
    reclaimed = reclaimed + 1
  end
  if redis.call('HGET', lim, 'bp') == id then redis.call('HDEL', lim, 'bp') end
  if redis.call('HGET', lim, 'ep') == id then redis.call('HDEL', lim, 'ep') end
end
if reclaimed > 0 then redis.call('HINCRBY', tkey(tid, 'stats'), 'claimed', reclaimed) end

-- 2. How many may start now: fleet-wide in-flight, endpoint, breaker, token bucket.
local L = redis.call('HMGET', lim, 'bo', 'bp', 'es', 'ec', 'pa', 'ep', 'tk', 'ta')
local room = math.min(max_n, mif - redis.call('ZCARD', lease))
local gate = nil
local probe = ''
local bo = tonumber(L[1]) or 0
if L[3] == 'disabled' then
  local pa = tonumber(L[5]) or 0
  if L[4] == 'failing' and not L[6] and pa <= now then
    room = math.min(room, 1)
    probe = 'E'
  else
    room = 0
    gate = (L[4] == 'failing' and not L[6]) and pa or now + 60000
  end
elseif L[2] then
  room = 0
  gate = now + 1000
elseif bo > now then
  room = 0
  gate = bo
elseif bo > 0 then
  room = math.min(room, 1)
  probe = 'B'
end
local tokens = nil
if rate > 0 and room > 0 then
  local cap = math.max(1, rate)
  tokens = math.min(cap, (tonumber(L[7]) or cap) + (now - (tonumber(L[8]) or now)) * rate / 1000)
  if tokens < 1 then
    room = 0
    gate = now + math.ceil((1 - tokens) * 1000 / rate)
  else
    room = math.min(room, math.floor(tokens))
  end
end

-- 3. Claim from the head of the line (with fifo: skipping keys held by an earlier event).
local out = {reclaimed, -1}
local taken = 0
if room > 0 then
  local limit = fifo and 200 or room
  for _, id in ipairs(redis.call('ZRANGE', due, '-inf', now * 1000 + 999, 'BYSCORE', 'LIMIT', 0, limit)) do
    if taken >= room then break end
    local ek = ekey(id)
    local ok = true
    if fifo then
      local k = redis.call('HGET', ek, 'k') or ''
      local holder = redis.call('HGET', okb, k)
      if holder and holder ~= id then
        ok = false
      else
        redis.call('HSET', okb, k, id)
      end
    end
    if ok then
      redis.call('ZREM', due, id)
      redis.call('ZADD', lease, now + lease_ms, id)
      local tok = relay .. ':' .. redis.call('INCR', P .. ':tok')
      redis.call('HSET', ek, 's', 'd', 'o', tok)
      local f = redis.call('HMGET', ek, 'n', 'b', 'a')
      out[#out + 1] = id
      out[#out + 1] = tok
      out[#out + 1] = tonumber(f[1]) or 0
      out[#out + 1] = f[2] or ''
      out[#out + 1] = probe
      out[#out + 1] = tonumber(f[3]) or now
      taken = taken + 1
      if probe == 'B' then redis.call('HSET', lim, 'bp', id) end
      if probe == 'E' then redis.call('HSET', lim, 'ep', id, 'pa', now + probe_ms) end
    end
  end
  if tokens ~= nil then
    local left = tokens - taken
    redis.call('HSET', lim, 'tk', left, 'ta', now)
    if left < 1 and not gate then gate = now + math.ceil((1 - left) * 1000 / rate) end
  end
end

-- 4. The tenant's next place in the scheduler, from everything this script can see.
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
local fl = redis.call('ZRANGE', lease, 0, 0, 'WITHSCORES')
local lease_at = fl[2] and tonumber(fl[2]) or nil
local nxt = nil
if first[2] then
  local fd = math.floor(tonumber(first[2]) / 1000)
  if gate then
    nxt = gate
  elseif fd > now then
    nxt = fd
  elseif taken > 0 and taken == max_n then
    nxt = now  -- more is due: back of the line behind the tenants already waiting
  else
    nxt = now + 5000  -- due but held (in-flight limit, fifo keys): a settle wakes it sooner
  end
  if lease_at and lease_at < nxt then nxt = lease_at end
elseif lease_at then
  nxt = lease_at
end
if nxt then
  redis.call('ZADD', KEYS[1], nxt, tid)
  out[2] = nxt - now
else
  redis.call('ZREM', KEYS[1], tid)
end
return out
"""
)

# ARGV: P, tenant, event_id, token, verdict (ok | retry | dead | held | release), attempt JSON
# or "", retry delay ms, dead reason, answered (1/0), response ms, endpoint health (ok | gone |
# fail | none), breaker threshold, breaker base ms, breaker cap ms, breaker enabled (1/0),
# disable_after ms, probe interval ms, idempotency window ms, settled kept at most,
# max_in_flight, free slots worth waking the tenant for.
# Per event, 20 ARGV from the tenant on, any number of events a call. Returns per event
# ("stale", "", "") when its lease was taken over, else ("ok", endpoint change or "", reason).
SETTLE = (
    _PRELUDE
    + """
local function settle_one(o)
  local tid, id, tok, verdict = ARGV[o + 0], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
  local att, delay, reason = ARGV[o + 4], tonumber(ARGV[o + 5]), ARGV[o + 6]
  local answered, rms, health = ARGV[o + 7] == '1', tonumber(ARGV[o + 8]), ARGV[o + 9]
  local threshold, base, cap = tonumber(ARGV[o + 10]), tonumber(ARGV[o + 11]), tonumber(ARGV[o + 12])
  local cb_on = ARGV[o + 13] == '1'
  local disable_after, probe_ms = tonumber(ARGV[o + 14]), tonumber(ARGV[o + 15])
  local window, keep = tonumber(ARGV[o + 16]), tonumber(ARGV[o + 17])
  local mif, wake_room = tonumber(ARGV[o + 18]), tonumber(ARGV[o + 19])
  local ek = ekey(id)
  if redis.call('HGET', ek, 'o') ~= tok then return {'stale', '', ''} end
  local due, lim, stats = tkey(tid, 'due'), tkey(tid, 'lim'), tkey(tid, 'stats')
  redis.call('ZREM', tkey(tid, 'lease'), id)
  redis.call('HDEL', ek, 'o')
  local was_probe = redis.call('HGET', lim, 'bp') == id
  if was_probe then redis.call('HDEL', lim, 'bp') end
  if redis.call('HGET', lim, 'ep') == id then redis.call('HDEL', lim, 'ep') end
  local n = tonumber(redis.call('HGET', ek, 'n')) or 0
  if verdict == 'release' or verdict == 'held' then
    redis.call('HSET', ek, 's', n > 0 and 'r' or 'q')
    redis.call('ZADD', due, now * 1000, id)
    wake(tid)
    return {'ok', '', ''}
  end
  if att ~= '' then
    local h = redis.call('HGET', ek, 'h')
    redis.call('HSET', ek, 'h', h and (h .. '\\n' .. att) or att)
  end
  redis.call('HINCRBY', ek, 'n', 1)
  if answered then
    redis.call('HINCRBYFLOAT', stats, 'rms', rms)
    redis.call('HINCRBY', stats, 'resp', 1)
  end
  if verdict == 'ok' then
    redis.call('HSET', ek, 's', 'D')
    redis.call('HDEL', ek, 'b')
    redis.call('ZADD', P .. ':done', now, id)
    redis.call('HINCRBY', stats, 'delivered', 1)
    if n > 0 then redis.call('HINCRBY', stats, 'rt', -1) end
    release_key(tid, id)
  elseif verdict == 'retry' then
    redis.call('HSET', ek, 's', 'r')
    redis.call('ZADD', due, (now + delay) * 1000, id)
    if n == 0 then redis.call('HINCRBY', stats, 'rt', 1) end
  else
    redis.call('HSET', ek, 's', 'x', 'f', now, 'y', reason)
    redis.call('ZADD', tkey(tid, 'dead'), now, id)
    redis.call('ZADD', P .. ':dead', now, id)
    redis.call('HINCRBY', stats, 'failed', 1)
    if n > 0 then redis.call('HINCRBY', stats, 'rt', -1) end
    release_key(tid, id)
  end

  -- Breaker and endpoint state (SPEC §11), shared by every relay.
  local change, why = '', ''
  local E = redis.call('HMGET', lim, 'es', 'fs', 'ec')
  local es = E[1] or 'enabled'
  if health == 'ok' then
    redis.call('HDEL', lim, 'bf', 'bt', 'bo', 'fs')
    if es ~= 'enabled' then
      change, why = 'enabled', (es == 'disabled') and 'probe delivered' or 'delivered'
    end
  elseif health == 'gone' then
    redis.call('HDEL', lim, 'bf', 'bt', 'bo')
    if not (es == 'disabled' and E[3] == 'gone') then
      change, why = 'disabled', 'endpoint answered 410 Gone'
      redis.call('HSET', lim, 'ec', 'gone')
    end
  elseif health == 'fail' then
    local bf = redis.call('HINCRBY', lim, 'bf', 1)
    local bo = tonumber(redis.call('HGET', lim, 'bo')) or 0
    local opened = false
    if cb_on and not (bo > now and not was_probe) and (was_probe or bf >= threshold) then
      local trips = tonumber(redis.call('HGET', lim, 'bt')) or 0
      local cool = math.min(math.max(base, 50) * (2 ^ trips), cap)
      redis.call('HSET', lim, 'bo', now + math.floor(cool), 'bt', trips + 1)
      opened = true
    end
    local fs = tonumber(E[2])
    if not fs then
      fs = now
      redis.call('HSET', lim, 'fs', now)
    end
    if es ~= 'disabled' then
      if now - fs >= disable_after then
        change, why = 'disabled', 'failing continuously for ' .. (disable_after / 1000) .. 's'
        redis.call('HSET', lim, 'ec', 'failing', 'pa', now + probe_ms)
      elseif opened and es == 'enabled' then
        change, why = 'failing', 'circuit breaker opened'
      end
    end
  end
  if change ~= '' then
    redis.call('HSET', lim, 'es', change, 'er', why, 'el', now)
    if change == 'enabled' then redis.call('HDEL', lim, 'ec', 'pa') end
    if change ~= 'disabled' then redis.call('HDEL', lim, 'ep') end
  end

  -- Settled events are kept for idempotency and /events/{id} within the window, up to `keep`.
  local done = P .. ':done'
  for _, old in ipairs(redis.call('ZRANGE', done, '-inf', now - window, 'BYSCORE', 'LIMIT', 0, 50)) do
    redis.call('DEL', ekey(old))
    redis.call('ZREM', done, old)
  end
  local extra = redis.call('ZCARD', done) - keep
  if extra > 0 then
    for _, old in ipairs(redis.call('ZRANGE', done, 0, math.min(extra, 50) - 1)) do
      redis.call('DEL', ekey(old))
      redis.call('ZREM', done, old)
    end
  end
  -- At the fleet's in-flight limit, each settle frees one slot: waking the tenant for every one
  -- would make every relay claim one event at a time. Wake it once enough slots are free.
  if mif - redis.call('ZCARD', tkey(tid, 'lease')) >= wake_room then wake(tid) end
  return {'ok', change, why}
end

-- Many settles in one call (the relay batches those that finish together): 20 ARGV each.
local out = {}
for o = 2, #ARGV, 20 do
  local r = settle_one(o)
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = r[3]
end
return out
"""
)

# ARGV: P, event ids. Dead letters back in line with a fresh round; returns how many.
REPLAY = (
    _PRELUDE
    + """
local n = 0
local seq = redis.call('INCRBY', P .. ':seq', #ARGV) - #ARGV
for i = 2, #ARGV do
  local id = ARGV[i]
  local ek = ekey(id)
  if redis.call('HGET', ek, 's') == 'x' then
    local tid = redis.call('HGET', ek, 't')
    redis.call('ZREM', tkey(tid, 'dead'), id)
    redis.call('ZREM', P .. ':dead', id)
    redis.call('HSET', ek, 's', 'q', 'n', 0)
    redis.call('HDEL', ek, 'f', 'y')
    seq = seq + 1
    redis.call('ZADD', tkey(tid, 'due'), now * 1000 + (seq % 1000), id)
    -- An operator asked for delivery: the endpoint gets a fresh breaker.
    redis.call('HDEL', tkey(tid, 'lim'), 'bf', 'bt', 'bo', 'bp')
    redis.call('ZADD', KEYS[1], 'LT', now, tid)
    n = n + 1
  end
end
return n
"""
)

# ARGV: P, event ids. Dead letters deleted for good (kept as "purged" for idempotency).
PURGE = (
    _PRELUDE
    + """
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local ek = ekey(id)
  if redis.call('HGET', ek, 's') == 'x' then
    local tid = redis.call('HGET', ek, 't')
    redis.call('ZREM', tkey(tid, 'dead'), id)
    redis.call('ZREM', P .. ':dead', id)
    redis.call('HSET', ek, 's', 'P')
    redis.call('HDEL', ek, 'b')
    redis.call('ZADD', P .. ':done', now, id)
    n = n + 1
  end
end
return n
"""
)

# ARGV: P, tenant, "enable" | "disable" | "show". Returns {state, since ms, reason, change}.
ENDPOINT = (
    _PRELUDE
    + """
local tid, op = ARGV[2], ARGV[3]
local lim = tkey(tid, 'lim')
local E = redis.call('HMGET', lim, 'es', 'el', 'er', 'ec')
local es = E[1] or 'enabled'
local change = ''
if op == 'enable' then
  redis.call('HDEL', lim, 'fs')
  if es ~= 'enabled' then
    redis.call('HSET', lim, 'es', 'enabled', 'er', 'enabled by operator', 'el', now)
    redis.call('HDEL', lim, 'ec', 'pa', 'ep', 'bf', 'bt', 'bo', 'bp')
    change = 'enabled'
    redis.call('ZADD', KEYS[1], 'LT', now, tid)
  end
elseif op == 'disable' then
  if not (es == 'disabled' and E[4] == 'operator') then
    redis.call('HSET', lim, 'es', 'disabled', 'er', 'disabled by operator', 'el', now, 'ec', 'operator')
    change = 'disabled'
  end
end
local F = redis.call('HMGET', lim, 'es', 'el', 'er')
return {F[1] or 'enabled', F[2] or '0', F[3] or 'configured', change, es}
"""
)

# ARGV: P, retention ms, at most this many. Dead letters older than the retention (by Redis's
# clock) are purged, as the local journal's compaction does (--dead-letter-retention).
PRUNE = (
    _PRELUDE
    + """
local before = now - tonumber(ARGV[2])
local old = redis.call('ZRANGE', P .. ':dead', '-inf', before, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(old) do
  local ek = ekey(id)
  local tid = redis.call('HGET', ek, 't')
  redis.call('ZREM', P .. ':dead', id)
  if tid then redis.call('ZREM', tkey(tid, 'dead'), id) end
  redis.call('HSET', ek, 's', 'P')
  redis.call('HDEL', ek, 'b')
  redis.call('ZADD', P .. ':done', now, id)
end
return #old
"""
)

# ARGV: P, tenants. Puts each tenant with waiting events back in the scheduler at once: after a
# config change (a limit lifted, a tenant activated or added) its parked place is out of date.
WAKE = (
    _PRELUDE
    + """
for i = 2, #ARGV do wake(ARGV[i]) end
return #ARGV - 1
"""
)

# ARGV: P. Per tenant: {tenant, waiting, in flight, dead, oldest accepted ms or -1, breaker open
# (1/0), endpoint state}; for the gauges and --max-pending (one call a second, not per event).
COUNTS = (
    _PRELUDE
    + """
local out = {}
for _, tid in ipairs(redis.call('SMEMBERS', P .. ':tenants')) do
  local first = redis.call('ZRANGE', tkey(tid, 'due'), 0, 0)
  local oldest = -1
  if first[1] then oldest = tonumber(redis.call('HGET', ekey(first[1]), 'a')) or -1 end
  local L = redis.call('HMGET', tkey(tid, 'lim'), 'bo', 'bp', 'es')
  local open = ((tonumber(L[1]) or 0) > now or L[2]) and 1 or 0
  out[#out + 1] = {tid, redis.call('ZCARD', tkey(tid, 'due')), redis.call('ZCARD', tkey(tid, 'lease')),
    redis.call('ZCARD', tkey(tid, 'dead')), oldest, open, L[3] or 'enabled'}
end
return out
"""
)
