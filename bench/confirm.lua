-- PATCH /orders/{id}/confirm over this thread's pre-created draft orders (version 1), one request each
-- (common.walk). args: id file prefix, tenant prefix.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

local body = '{"totalCents": 1999}'

init, request = common.walk(function(id, tenant)
  return wrk.format("PATCH", "/orders/" .. id .. "/confirm", {
    ["X-Tenant-Id"] = tenant,
    ["If-Match"] = '"1"',
    ["Content-Type"] = "application/json",
  }, body)
end)
