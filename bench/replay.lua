-- POST /orders repeating keys that were answered already, so every response is a replay (200,
-- Idempotent-Replayed: true). args: key prefix, number of keys per tenant, tenant prefix.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

local prefix, keys, tenant, n = "", 1, "", 0
issued = 0

function init(args)
  prefix = args[1]
  keys = tonumber(args[2])
  tenant = args[3] .. wrk.thread:get("index")
end

function request()
  n = n + 1
  issued = n
  return wrk.format("POST", "/orders", {
    ["X-Tenant-Id"] = tenant,
    ["Idempotency-Key"] = prefix .. (n % keys),
    ["Content-Type"] = "application/json",
  }, "{}")
end
