-- Walks this thread's own list of pre-created orders, one id per request, so no two requests (in flight
-- or not) touch the same order: every confirm and close finds the version its If-Match names and succeeds.
-- args: mode (get | confirm | close), id file prefix (the thread index is appended), tenant prefix.
-- Past the end of the list the walk wraps around: fine for get, and counted (issued > available) for the
-- writes, whose repeats would be 409s.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

local mode, ids, tenant, n = "get", {}, "", 0
issued, available = 0, 0

function init(args)
  local index = wrk.thread:get("index")
  mode = args[1]
  ids = common.lines(args[2] .. index)
  tenant = args[3] .. index
  available = #ids
end

local confirm_body = '{"totalCents": 1999}'

function request()
  n = n + 1
  issued = n
  local id = ids[(n - 1) % #ids + 1]
  if mode == "get" then
    return wrk.format("GET", "/orders/" .. id, { ["X-Tenant-Id"] = tenant })
  elseif mode == "confirm" then
    return wrk.format("PATCH", "/orders/" .. id .. "/confirm", {
      ["X-Tenant-Id"] = tenant,
      ["If-Match"] = '"1"',
      ["Content-Type"] = "application/json",
    }, confirm_body)
  else
    return wrk.format("POST", "/orders/" .. id .. "/close", {
      ["X-Tenant-Id"] = tenant,
      ["If-Match"] = '"2"',
    })
  end
end
