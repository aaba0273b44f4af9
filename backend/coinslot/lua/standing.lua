-- What the card shows a reader about one item: one round trip on the hot path's pipelined
-- connection (coinslot.pipe), and the one write a read may make: a pass that serves is marked used.
-- KEYS: 1 wallet hash, 2 owned hash, 3 purchases hash, 4 ledger list
-- ARGV: 1 owned_field(site, item), 2 pass_field(site), 3 cap_field(site), 4 now_ms, 5 'pass' when
--       the item is itself a pass (which no pass covers), 6 the token's generation
-- Returns {currency, balance, generation, budget, owned value, pass value, cap value, undos,
--          the receipt of the purchase that owns the item, that purchase's ledger line}, false for
--          what is absent.
local w = redis.call('HMGET', KEYS[1], 'currency', 'balance', 'gen', BUDGET_FIELD, ARGV[2], ARGV[3], UNDOS_FIELD)
local now = tonumber(ARGV[4])
local held = redis.call('HGET', KEYS[2], ARGV[1])
local ends = held and string.match(held, '^[^|]*|(%d+)')
if ends and tonumber(ends) <= now then held = false end
local receipt = held and redis.call('HGET', KEYS[3], string.match(held, '^[^|]*')) or false
local line = false
-- The receipt names the purchase's line (coinslot.ledger); one written before that holds it all.
local seq = receipt and (tonumber(receipt) or tonumber(string.match(receipt, '"seq":(%d+)')))
if seq then line = redis.call('LINDEX', KEYS[4], seq - 1) end
if not held and w[5] and ARGV[5] ~= 'pass' and w[3] == ARGV[6] then
  -- The card opens a covered item with no click: the pass has served, and can no longer be undone
  -- (its receipt says so, as in unlock.lua).
  local pass_ends, pass_id, used = string.match(w[5], '^(%d+)|([^|]*)|(%d)$')
  if tonumber(pass_ends) > now and used ~= '1' then
    redis.call('HSET', KEYS[1], ARGV[2], pass_ends .. '|' .. pass_id .. '|1')
    local rec = redis.call('HGET', KEYS[3], pass_id)
    if rec then
      local r = cjson.decode(rec)
      r.served_at = now
      redis.call('HSET', KEYS[3], pass_id, cjson.encode(r))
    end
  end
end
return {w[1], w[2], w[3], w[4] or false, held or false, w[5] or false, w[6] or false, w[7] or false, receipt, line}
