-- GET /orders (one page of the default size) for one tenant, from the first page or from a cursor.
-- A static request: wrk builds it once. args: path with query, tenant.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
setup, done = common.setup, common.done

function init(args)
  wrk.method = "GET"
  wrk.path = args[1]
  wrk.headers["X-Tenant-Id"] = args[2]
end
