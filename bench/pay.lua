-- POST /orders/{id}/payments over this thread's pre-created confirmed orders, one request each (common.walk),
-- the order id as its Idempotency-Key. args: id file prefix, tenant prefix.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

init, request = common.walk(function(id, tenant)
  return wrk.format("POST", "/orders/" .. id .. "/payments", {
    ["X-Tenant-Id"] = tenant,
    ["Idempotency-Key"] = "pay-" .. id,
  })
end)
