-- POST /orders with line items and a fresh Idempotency-Key on every request.
-- args: run id, tenant (a trailing "-" gets the thread index: a tenant per thread), product id file (likewise),
-- lines per order. Each order takes distinct products drawn at random from the file, one unit each.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

local prefix, tenant, products, lines, n = "", "", {}, 1, 0
issued = 0

local function per_thread(value, index)
  if value:sub(-1) == "-" then return value .. index end
  return value
end

function init(args)
  local index = wrk.thread:get("index")
  prefix = args[1] .. "-" .. index .. "-"
  tenant = per_thread(args[2], index)
  products = common.lines(per_thread(args[3], index))
  lines = tonumber(args[4])
  math.randomseed(index + 1)
end

function request()
  n = n + 1
  issued = n
  local chosen, items = {}, {}
  while #items < lines do
    local id = products[math.random(#products)]
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
