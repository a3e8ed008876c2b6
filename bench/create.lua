-- POST /orders with a fresh Idempotency-Key on every request; one tenant per wrk thread.
-- args: run id (makes keys unique across runs on a reused database), tenant prefix.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

local prefix, tenant, n = "", "", 0
issued = 0

function init(args)
  local index = wrk.thread:get("index")
  prefix = args[1] .. "-" .. index .. "-"
  tenant = args[2] .. index
end

function request()
  n = n + 1
  issued = n
  return wrk.format("POST", "/orders", {
    ["X-Tenant-Id"] = tenant,
    ["Idempotency-Key"] = prefix .. n,
    ["Content-Type"] = "application/json",
  }, "{}")
end
