-- GET /orders/{id} over this thread's pre-created orders (common.walk). args: id file prefix, tenant prefix.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

init, request = common.walk(function(id, tenant)
  return wrk.format("GET", "/orders/" .. id, { ["X-Tenant-Id"] = tenant })
end)
