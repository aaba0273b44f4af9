-- Ends one webhook delivery's turn in the queue: acknowledges and deletes its Stream entry and, when
-- it failed and may be tried again, schedules the retry — in one step, so a crash cannot both lose
-- the retry and drop the entry.
-- KEYS[1]: the queue Stream, KEYS[2]: the retry schedule; both under {hooks}.
-- ARGV[1]: the consumer group, ARGV[2]: the entry id, ARGV[3]: the retry ('' for none), ARGV[4]: when due (ms).
-- Returns 1 if the entry was still pending here (0: another consumer took it over and answers for it).
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  if ARGV[3] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
end
return acked
