-- Debit a wallet for one item and grant it, atomically, on keys of one wallet only.
-- KEYS: 1 wallet hash, 2 owned hash, 3 purchases hash, 4 ledger list, 5 idempotency record
-- ARGV: 1 now_ms, 2 generation, 3 site, 4 item, 5 price, 6 currency, 7 tab_limit,
--       8 purchase_id, 9 idempotency body digest ('' = no key), 10 idempotency ttl (s),
--       11 the purchase record (JSON), 12 the ledger entry's JSON without its seq and balance, from
--       its first key on ('"at":...}'), 13 tab_granted ('1' when the site's per-IP tab quota allowed
--       it), 14 price the reader was shown ('' = not named)
-- The caller writes the records' JSON: cjson here cost Redis more than all the script's commands.
-- Field names are joined from coinslot.keyspace's constants, defined in front of this script (coinslot.scripts).
-- Returns {status, ...}: see coinslot/unlocks.py for the meaning of each status.
local now, gen = ARGV[1], ARGV[2]
local site, item, price, currency = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local tab_limit, purchase_id, digest = tonumber(ARGV[7]), ARGV[8], ARGV[9]

local w = redis.call('HMGET', KEYS[1], 'currency', 'balance', 'gen', 'frozen', 'seq')
if not w[1] then return {'no-wallet'} end
if w[3] ~= gen then return {'stale'} end
local balance = tonumber(w[2])

if digest ~= '' then
  local rec = redis.call('GET', KEYS[5])
  if rec then
    local r = cjson.decode(rec)
    if r.digest ~= digest then return {'idem-conflict'} end
    return {'replay', r.purchase_id, r.charged, r.balance}
  end
end

if w[1] ~= currency then return {'currency', w[1]} end

local owned = site .. OWNED_FIELD_SEPARATOR .. item  -- keyspace.owned_field
local charged = 0
local pid = redis.call('HGET', KEYS[2], owned)
if pid then
  pid = string.match(pid, '^[^|]*')
  -- The same request run again (its reply was lost): report what that run charged.
  if pid == purchase_id then charged = price end
else
  if ARGV[14] ~= '' and tonumber(ARGV[14]) ~= price then return {'price-changed'} end
  if w[4] == '1' then return {'frozen', balance} end
  if balance - price < 0 then
    if balance - price < -tab_limit then return {'insufficient', balance} end
    local tab = TAB_FIELD_PREFIX .. site  -- keyspace.tab_field
    if ARGV[13] ~= '1' and redis.call('HEXISTS', KEYS[1], tab) == 0 then
      return {'tab-quota', balance}
    end
    redis.call('HSET', KEYS[1], tab, now)
  end
  pid = purchase_id
  charged = price
  balance = balance - price
  local seq = (tonumber(w[5]) or 0) + 1  -- read above: one HSET writes it with the balance
  redis.call('HSET', KEYS[1], 'balance', balance, 'seq', seq)
  -- Its first entry: the wallet holds something now, so it no longer expires as an empty one.
  if seq == 1 then redis.call('PERSIST', KEYS[1]) end
  redis.call('HSET', KEYS[2], owned, pid)
  redis.call('HSET', KEYS[3], pid, ARGV[11])
  redis.call('RPUSH', KEYS[4], '{"seq":' .. seq .. ',"balance":' .. balance .. ',' .. ARGV[12])
end

if digest ~= '' then
  redis.call('SET', KEYS[5], cjson.encode({
    digest = digest, purchase_id = pid, charged = charged, balance = balance}), 'EX', ARGV[10])
end
return {'ok', pid, charged, balance}
