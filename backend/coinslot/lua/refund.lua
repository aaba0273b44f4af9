-- Give a wallet back what one purchase charged, and end what it granted, atomically (money rule 8).
-- KEYS: 1 wallet hash, 2 owned hash, 3 purchases hash, 4 ledger list
-- ARGV: 1 now_ms, 2 purchase id, 3 'reader' (the reader's own undo, under every rule) or
--       'publisher' (the site's goodwill: no window, not counted), 4 the token's generation
--       ('' for the publisher), 5 the site's refund window (ms), 6 undos allowed per period,
--       7 the period (ms), 8 the site the publisher speaks for ('' for the reader)
-- Returns {'ok', refunded, balance} | {'no-wallet'} | {'stale'} | {'unknown'} | {'already', at}
--       | {'window-closed', until} | {'limit', next_possible_ms} | {'pass-used'} | {'cap-day'}
-- Fields and accounts are coinslot.keyspace's, defined in front of this script (coinslot.scripts).
local now, pid, by = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local raw = redis.call('HGET', KEYS[3], pid)
if not raw then return {'unknown'} end
-- The receipt is the purchase's line number and what the line does not say (coinslot.ledger); the
-- facts are read from the line.
local stored = cjson.decode(raw)
if type(stored) == 'number' then stored = {seq = stored} end
local r = stored  -- a receipt written before receipts named their line holds the whole record
if stored.seq then
  local line = redis.call('LINDEX', KEYS[4], stored.seq - 1)
  r = {}
  r.at, r.ref, r.site, r.item, r.currency, r.charged = string.match(line or '',
    '^' .. UNLOCK_LINE_TAG .. '%d+|%-?%d+|(%d+)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(%d+)$')
  if r.ref ~= pid then return redis.error_reply('purchase ' .. pid .. ' has no ledger line') end
  r.at, r.charged = tonumber(r.at), tonumber(r.charged)
  r.day, r.served_at, r.refunded_at = stored.day, stored.served_at, stored.refunded_at
  r.kind = stored.expires_at and 'pass' or 'item'
end
if ARGV[8] ~= '' and r.site ~= ARGV[8] then return {'unknown'} end
local pass_f, cap_f = PASS_FIELD_PREFIX .. r.site, CAP_FIELD_PREFIX .. r.site
local w = redis.call('HMGET', KEYS[1], 'currency', 'balance', 'gen', 'seq', UNDOS_FIELD, pass_f, cap_f, 'frozen',
  DAILY_LIMIT_FIELD)
if not w[1] or not w[3] then return {'no-wallet'} end
if by == 'reader' and w[3] ~= ARGV[4] then return {'stale'} end
if r.refunded_at then return {'already', r.refunded_at} end

-- The reader's undos of the last period, oldest first.
local recent = {}
for at in string.gmatch(w[5] or '', '%d+') do
  if tonumber(at) > now - tonumber(ARGV[7]) then recent[#recent + 1] = at end
end
if by == 'reader' then
  local ends = r.at + tonumber(ARGV[5])
  if now >= ends then return {'window-closed', ends} end
  if #recent >= tonumber(ARGV[6]) then return {'limit', tonumber(recent[#recent - tonumber(ARGV[6]) + 1]) + tonumber(ARGV[7])} end
  if r.kind == 'pass' and r.served_at then return {'pass-used'} end
  if r.day then
    local day, free, earlier = string.match(w[7] or '', '^([^|]*)|%d+|(%d+)|(.*)$')
    if (day == r.day and tonumber(free) > 0) or string.find(',' .. (earlier or '') .. ',', ',' .. r.day .. ',', 1, true) then
      return {'cap-day'}
    end
  end
end

local amount = r.charged
local balance = tonumber(w[2]) + amount
local seq = tonumber(w[4]) + 1
local fields = {'balance', balance, 'seq', seq}
if by == 'reader' then
  recent[#recent + 1] = ARGV[1]
  fields[#fields + 1], fields[#fields + 2] = UNDOS_FIELD, table.concat(recent, ',')
end
if r.day then
  -- Money given back is no longer spent that day: the daily cap counts what the wallet paid.
  local day, spent, rest = string.match(w[7] or '', '^([^|]*)|(%d+)|(.*)$')
  if day == r.day then
    fields[#fields + 1], fields[#fields + 2] = cap_f, day .. '|' .. math.max(0, tonumber(spent) - amount) .. '|' .. rest
  end
end
if w[9] then
  -- Nor against the wallet's daily limit, on the UTC day of the purchase.
  local limit, day, spent = string.match(w[9], '^(%d+)|(%d*)|(%d*)$')
  if day ~= '' and tonumber(day) == math.floor(r.at / 86400000) then
    fields[#fields + 1] = DAILY_LIMIT_FIELD
    fields[#fields + 1] = limit .. '|' .. day .. '|' .. math.max(0, tonumber(spent) - amount)
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
-- A chargeback may have frozen the wallet below zero; money back that brings it to zero thaws it.
if w[8] == '1' and balance >= 0 then redis.call('HDEL', KEYS[1], 'frozen') end

-- The refund ends the ownership: what the purchase granted, unless something else grants it now.
local owned = r.site .. OWNED_FIELD_SEPARATOR .. r.item
local held = redis.call('HGET', KEYS[2], owned)
if held and string.match(held, '^[^|]*') == pid then redis.call('HDEL', KEYS[2], owned) end
if r.kind == 'pass' and w[6] and string.match(w[6], '^%d+|([^|]*)|') == pid then redis.call('HDEL', KEYS[1], pass_f) end

stored.refunded_at, stored.refunded_by = now, by
redis.call('HSET', KEYS[3], pid, cjson.encode(stored))
redis.call('RPUSH', KEYS[4], cjson.encode({seq = seq, at = now, kind = 'purchase-refund', ref = pid, site = r.site,
  item = r.item, currency = r.currency, balance = balance, by = by,
  postings = {{account = wallet_account(wallet_id_of(KEYS[1])), amount = amount},
              {account = site_revenue_account(r.site), amount = -amount}}}))
return {'ok', amount, balance}
