-- POST /orders with line items and a fresh Idempotency-Key on every request.
-- args: run id, tenant (a trailing "-" gets the thread index: a tenant per thread), product id file (likewise),
-- lines per order, and optionally tenants per thread T: then each request is of the next of the thread's T
-- tenants in turn (the tenant and file names get "-0" .. "-<T-1>" after the thread's index). Each order takes
-- distinct products drawn at random from its tenant's file, one unit each.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

local prefix, tenants, products, lines, n = "", {}, {}, 1, 0
issued = 0

local function per_thread(value, index)
  if value:sub(-1) == "-" then return value .. index end
  return value
end

function init(args)
  local index = wrk.thread:get("index")
  prefix = args[1] .. "-" .. index .. "-"
  lines = tonumber(args[4])
  local count = tonumber(args[5] or "0")
  if count == 0 then
    tenants[1], products[1] = per_thread(args[2], index), common.lines(per_thread(args[3], index))
  else
    for k = 0, count - 1 do
      tenants[k + 1] = per_thread(args[2], index) .. "-" .. k
      products[k + 1] = common.lines(per_thread(args[3], index) .. "-" .. k)
    end
  end
  math.randomseed(index + 1)
end

function request()
  n = n + 1
  issued = n
  local which = n % #tenants + 1
  local tenant, own = tenants[which], products[which]
  local chosen, items = {}, {}
  while #items < lines do
    local id = own[math.random(#own)]
    if not chosen[id] then
      chosen[id] = true
      items[#items + 1] = '{"productId":"' .. id .. '","quantity":1}'
    end
  end
  return wrk.format("POST", "/orders", {
    ["X-Tenant-Id"] = tenant,
    ["Idempotency-Key"] = prefix .. n,
    ["Content-Type"] = "application/json",
  }, '{"items":[' .. table.concat(items, ",") .. ']}')
end
