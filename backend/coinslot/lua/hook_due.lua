-- Moves the webhook deliveries whose retry is due from the schedule into the queue Stream.
-- KEYS[1]: the retry schedule (sorted set), KEYS[2]: the queue Stream; both under {hooks}.
-- ARGV[1]: now (ms), ARGV[2]: at most this many. Returns how many moved. Atomic, so two
-- processes never both move one delivery.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('XADD', KEYS[2], '*', 'd', member)
end
return #due
