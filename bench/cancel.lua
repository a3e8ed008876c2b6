-- POST /orders/{id}/cancel over this thread's pre-created confirmed orders (version 2), one request each
-- (common.walk). args: id file prefix, tenant prefix.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

init, request = common.walk(function(id, tenant)
  return wrk.format("POST", "/orders/" .. id .. "/cancel", {
    ["X-Tenant-Id"] = tenant,
    ["If-Match"] = '"2"',
  })
end)
