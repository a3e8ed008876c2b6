-- Shared by the scenario scripts: numbers each wrk thread (so each thread gets its own tenant and its own
-- slice of pre-created orders) and prints one JSON line sampling.py reads: throughput, latency percentiles,
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

-- The request and init functions of a scenario that walks this thread's own list of pre-created orders,
-- one id per request, so no two requests (in flight or not) touch the same order: every write finds the
-- version its If-Match names and succeeds. `build(id, tenant)` returns the request for one order.
-- The script's args: id file prefix (the thread index is appended), tenant prefix (likewise).
-- Past the end of the list the walk wraps around: fine for reads, and counted (issued > available) for the
-- writes, whose repeats would be 409s.
function M.walk(build)
  local ids, tenant, n = {}, "", 0
  local function init(args)
    local index = wrk.thread:get("index")
    ids = M.lines(args[1] .. index)
    tenant = args[2] .. index
    available = #ids
  end
  local function request()
    n = n + 1
    issued = n
    return build(ids[(n - 1) % #ids + 1], tenant)
  end
  return init, request
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
