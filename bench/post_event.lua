-- wrk script: POST one new daily_check.recorded event per request (fresh event_id and check_id).
-- Sends the headers given to wrk with -H (the API key) too: wrk.format uses only the table passed.
local counties = {"513431", "513432", "510722", "511602", "513433", "510726"}
local n = 0

local function uuid4()
  local template = "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"
  return (template:gsub("[xy]", function(c)
    local v = (c == "x") and math.random(0, 0xf) or math.random(8, 0xb)
    return string.format("%x", v)
  end))
end

local threads = 0

setup = function(thread)
  -- seed from the clock once per run: a second run must not replay the first run's ids
  if threads == 0 then math.randomseed(os.time()) end
  threads = threads + 1
  thread:set("seed", math.random(1, 2^31) + threads)
end

local headers = {}

init = function(args)
  math.randomseed(seed or os.time())
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Content-Type"] = "application/json"
end

request = function()
  n = n + 1
  local id = uuid4()
  local body = string.format(
    '{"event_id":"%s","type":"daily_check.recorded","schema_version":1,' ..
    '"occurred_at":"2026-06-01T09:00:00+08:00","region_code":"%s","source":"bench",' ..
    '"payload":{"check_id":"B-%s","kind":"registry_accuracy","items_checked":50,"items_failed":1}}',
    id, counties[n % #counties + 1], id)
  return wrk.format("POST", "/v1/events", headers, body)
end
