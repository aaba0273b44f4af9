-- Debit a wallet for one item and grant it, atomically, on keys of one wallet only.
-- KEYS: 1 wallet hash, 2 owned hash, 3 purchases hash, 4 ledger list, 5 idempotency record,
--       6 the wallet's counter of unlock attempts in this window (coinslot.ratelimit)
-- ARGV: 1 now_ms, 2 generation, 3 site, 4 item, 5 price, 6 currency, 7 tab_limit,
--       8 purchase_id, 9 idempotency body digest ('' = no key), 10 idempotency ttl (s),
--       11 what the receipt holds beside the sequence number, as JSON members ('"expires_at":..' or
--       ''), 12 tab_granted ('1' when the site's per-IP tab quota allowed it), 13 price the reader
--       was shown ('' = not named), 14 unlock attempts allowed per window, 15 the counter's ttl (s),
--       16 'pass' when the item is a pass ('archived' when it is off sale: only what the wallet
--       holds is granted), 17 the end of a pass bought now (ms, '' for an item),
--       18 the site's daily cap (0 = none), 19 the site's day ('' without a cap), 20 when that day ends
-- A purchase writes its facts once, in its ledger line; its receipt is that line's sequence number
-- and the little more (coinslot.ledger). No cjson on the way: it cost Redis more than all the
-- script's commands.
-- Field names are joined from coinslot.keyspace's constants, defined in front of this script (coinslot.scripts).
-- Returns {status, ...}: see coinslot/unlocks.py for the meaning of each status.
local now, gen = tonumber(ARGV[1]), ARGV[2]
local site, item, price, currency = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local tab_limit, purchase_id, digest = tonumber(ARGV[7]), ARGV[8], ARGV[9]
local pass_field, cap_field = PASS_FIELD_PREFIX .. site, CAP_FIELD_PREFIX .. site  -- keyspace's

local w = redis.call('HMGET', KEYS[1], 'currency', 'balance', 'gen', 'frozen', 'seq', pass_field, cap_field,
  DAILY_LIMIT_FIELD)
if not w[1] then return {'no-wallet'} end
if w[3] ~= gen then return {'stale'} end
local balance = tonumber(w[2])

local attempts = redis.call('INCR', KEYS[6])
if attempts == 1 then redis.call('EXPIRE', KEYS[6], ARGV[15]) end
if attempts > tonumber(ARGV[14]) then return {'rate-limited'} end

if digest ~= '' then
  local rec = redis.call('GET', KEYS[5])
  if rec then
    local r = cjson.decode(rec)
    if r.digest ~= digest then return {'idem-conflict'} end
    return {'replay', r.purchase_id, r.charged, r.balance, r['until'], r.access}
  end
end

if w[1] ~= currency then return {'currency', w[1]} end

-- What this request ends with: its status, the purchase (or grant) id, what it charged, until when
-- the access lasts ('' = for good) and why it is granted. Each way to a grant sets them and `done`.
local status, pid, charged, access_until, access = 'ok', purchase_id, 0, '', 'purchase'
local done = false

local owned = site .. OWNED_FIELD_SEPARATOR .. item  -- keyspace.owned_field
local held = redis.call('HGET', KEYS[2], owned)
if held then
  local id, rest = string.match(held, '^([^|]*)|?(.*)$')
  local ends = string.match(rest, '^%d+')
  if not ends or tonumber(ends) > now then
    pid, access_until, done = id, ends or '', true
    if string.sub(rest, -2) == '|c' then access = 'cap' end
    -- The same request run again (its reply was lost): report what that run charged.
    if pid == purchase_id then charged = price end
  end
  -- Otherwise a pass that ended, or a day's free access that ended: bought anew below.
end

local is_pass = ARGV[16] == 'pass'
if not done and w[6] and not is_pass then
  local ends, pass_id, used = string.match(w[6], '^(%d+)|([^|]*)|(%d)$')
  if tonumber(ends) > now then
    -- Under the pass nothing is bought. Once it served it can no longer be undone: its receipt says
    -- so (rarely written: once per pass), the field only spares reading the receipt again.
    if used ~= '1' then
      redis.call('HSET', KEYS[1], pass_field, ends .. '|' .. pass_id .. '|1')
      local rec = redis.call('HGET', KEYS[3], pass_id)
      if rec then
        local r = cjson.decode(rec)
        r.served_at = now
        redis.call('HSET', KEYS[3], pass_id, cjson.encode(r))
      end
    end
    status, pid, access_until, access, done = 'pass', pass_id, ends, 'pass', true
  end
end

if not done then
  if ARGV[16] == 'archived' then return {'archived'} end
  if ARGV[13] ~= '' and tonumber(ARGV[13]) ~= price then return {'price-changed'} end
  if w[4] == '1' then return {'frozen', balance} end

  -- Fare capping: charged = min(price, max(0, cap - spent today)); a pass counts but is never free.
  local cap, charge, cap_value = tonumber(ARGV[18]), price, nil
  if cap > 0 then
    local today = ARGV[19]
    local day, spent, free, earlier = string.match(w[7] or '', '^([^|]*)|(%d+)|(%d+)|(.*)$')
    spent, free, earlier = tonumber(spent) or 0, tonumber(free) or 0, earlier or ''
    if day ~= today then
      -- A purchase made on a day with free unlocks cannot be undone, so such days are kept: the
      -- last eight (days are 10 characters), more than a refund window (at most 7 days) can reach.
      if day and free > 0 then
        earlier = earlier == '' and day or string.sub(day .. ',' .. earlier, 1, 87)
      end
      spent, free = 0, 0
    end
    if not is_pass then charge = math.min(price, math.max(0, cap - spent)) end
    if charge == 0 and price > 0 then
      status, access_until, access, done = 'capfree', ARGV[20], 'cap', true
      redis.call('HSET', KEYS[2], owned, pid .. '|' .. access_until .. '|c')
      redis.call('HSET', KEYS[1], cap_field, today .. '|' .. spent .. '|' .. (free + 1) .. '|' .. earlier)
    else
      cap_value = today .. '|' .. (spent + charge) .. '|' .. free .. '|' .. earlier
    end
  end

  if not done then
    -- The wallet's own daily limit (unattended use), per UTC day: a wallet has no time zone. Only what
    -- is charged counts, so what is owned, under a pass or free under the cap is never refused here.
    local limit_value
    if w[8] and charge > 0 then
      local limit, day, spent = string.match(w[8], '^(%d+)|(%d*)|(%d*)$')
      local today = math.floor(now / 86400000)
      spent = tonumber(day) == today and tonumber(spent) or 0
      if spent + charge > tonumber(limit) then return {'daily-limit', balance, charge, tonumber(limit), spent} end
      limit_value = limit .. '|' .. today .. '|' .. (spent + charge)
    end
    if balance - charge < 0 then
      if balance - charge < -tab_limit then return {'insufficient', balance, charge} end
      local tab = TAB_FIELD_PREFIX .. site  -- keyspace.tab_field
      if ARGV[12] ~= '1' and redis.call('HEXISTS', KEYS[1], tab) == 0 then
        return {'tab-quota', balance, charge}
      end
      redis.call('HSET', KEYS[1], tab, ARGV[1])
    end
    charged = charge
    balance = balance - charge
    local seq = (tonumber(w[5]) or 0) + 1  -- read above: one HSET writes it with the balance
    if cap_value then
      redis.call('HSET', KEYS[1], 'balance', balance, 'seq', seq, cap_field, cap_value)
    else
      redis.call('HSET', KEYS[1], 'balance', balance, 'seq', seq)
    end
    if limit_value then redis.call('HSET', KEYS[1], DAILY_LIMIT_FIELD, limit_value) end
    -- Its first entry: the wallet holds something now, so it no longer expires as an empty one.
    if seq == 1 then redis.call('PERSIST', KEYS[1]) end
    local receipt = ARGV[11]
    if charge ~= price then
      -- The cap took part of the price (rare): the line says what was charged, the receipt the price.
      receipt = receipt == '' and '"price":' .. price or receipt .. ',"price":' .. price
    end
    receipt = receipt == '' and seq or '{"seq":' .. seq .. ',' .. receipt .. '}'
    local line = UNLOCK_LINE_TAG .. seq .. '|' .. balance .. '|' .. ARGV[1] .. '|' .. pid .. '|' .. site
      .. '|' .. item .. '|' .. currency .. '|' .. charge
    if is_pass then
      access_until = ARGV[17]
      redis.call('HSET', KEYS[2], owned, pid .. '|' .. access_until)
      -- The wallet's pass on the site is the one that lasts longest.
      local ends = w[6] and tonumber(string.match(w[6], '^%d+')) or 0
      if ends < tonumber(access_until) then
        redis.call('HSET', KEYS[1], pass_field, access_until .. '|' .. pid .. '|0')
      end
    else
      redis.call('HSET', KEYS[2], owned, pid)
    end
    redis.call('HSET', KEYS[3], pid, receipt)
    redis.call('RPUSH', KEYS[4], line)
  end
end

if digest ~= '' then
  redis.call('SET', KEYS[5], cjson.encode({digest = digest, purchase_id = pid, charged = charged,
    balance = balance, ['until'] = access_until, access = access}), 'EX', ARGV[10])
end
return {status, pid, charged, balance, access_until, access}
