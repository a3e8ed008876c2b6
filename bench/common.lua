-- Shared by the scenario scripts: numbers each wrk thread (so each thread gets its own tenant and its own
-- slice of pre-created orders) and prints one JSON line run.py reads: throughput, latency percentiles,
-- HTTP >= 400 responses and socket errors, plus how far each thread walked its id list.
local M = {}

local threads = {}

function M.setup(thread)
  thread:set("index", #threads)
  threads[#threads + 1] = thread
end

-- The lines of a file (one order id per line), for the scenarios that walk pre-created orders.
function M.lines(path)
  local items = {}
  for line in io.lines(path) do
    if line ~= "" then items[#items + 1] = line end
  end
  return items
end

function M.done(summary, latency, requests)
  local issued, available = 0, 0
  for _, thread in ipairs(threads) do
    issued = issued + (thread:get("issued") or 0)
    available = available + (thread:get("available") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "mean_us": %.1f, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "issued": %d, "available": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, issued, available))
end

return M
