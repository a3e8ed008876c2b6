-- POST /webhooks/payments: valid Standard Webhooks deliveries signed beforehand (bench/payments.py), one per
-- pending payment, each line of this thread's file "webhook-id TAB timestamp TAB signature TAB body".
-- args: delivery file prefix (the thread index is appended).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

local deliveries, n = {}, 0

function init(args)
  for _, line in ipairs(common.lines(args[1] .. wrk.thread:get("index"))) do
    local id, timestamp, signature, body = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.+)$")
    deliveries[#deliveries + 1] = wrk.format("POST", "/webhooks/payments", {
      ["webhook-id"] = id,
      ["webhook-timestamp"] = timestamp,
      ["webhook-signature"] = signature,
      ["Content-Type"] = "application/json",
    }, body)
  end
  available = #deliveries
end

function request()
  n = n + 1
  issued = n
  return deliveries[(n - 1) % #deliveries + 1]
end
