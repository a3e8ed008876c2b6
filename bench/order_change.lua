-- POST /orders/{id}/<change> (close, cancel) over this thread's pre-created confirmed orders (version 2), one
-- request each (common.walk). args: id file prefix, tenant prefix, the change.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

local walk_init, walk_request = common.walk(function(id, tenant)
  return wrk.format("POST", "/orders/" .. id .. "/" .. change, {
    ["X-Tenant-Id"] = tenant,
    ["If-Match"] = '"2"',
  })
end)

function init(args)
  change = args[3]
  walk_init(args)
end

request = walk_request
