-- wrk script: Africa's Talking-style USSD sessions. Each thread keeps SLOTS logical sessions and
-- sends their steps round robin; every request carries the whole `text` path, as AT does.
-- Environment: SCENARIO (menu | send | receive), PHONES, PHONE_FIRST (national digits, e.g.
-- 711000000), PIN, AMOUNT, SLOTS, RUN (in every sessionId: a later run against the same server
-- must not repeat an earlier run's sessions, whose steps would be answered as replays).
local scenario = os.getenv("SCENARIO") or "menu"
local phones = tonumber(os.getenv("PHONES") or "1000")
local first = tonumber(os.getenv("PHONE_FIRST") or "711000000")
local pin = os.getenv("PIN") or "4821"
local amount = os.getenv("AMOUNT") or "1000"
local slots = tonumber(os.getenv("SLOTS") or "16")
local run = os.getenv("RUN") or "0"

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local sessions = {}
local counter = 0
local turn = 0
ok, bad, sent, refused = 0, 0, 0, 0

local function steps_for(phone_index)
  local recipient = "0" .. tostring(first + (phone_index + 1) % phones)
  if scenario == "send" then
    local a = "1*" .. recipient
    local b = a .. "*" .. amount
    return {"", "1", a, b, b .. "*1", b .. "*1*" .. pin}
  elseif scenario == "receive" then
    return {"", "2", "2*" .. amount}
  end
  return {""}
end

local function new_session()
  counter = counter + 1
  local phone_index = (tid * 7919 + counter * 31) % phones
  return {
    id = "bench-" .. scenario .. "-" .. run .. "-" .. tid .. "-" .. counter,
    phone = "%2B254" .. tostring(first + phone_index),
    steps = steps_for(phone_index),
    step = 1,
  }
end

function init(args)
  -- Independent callers are spread over the steps of their sessions. Started all at step 1, the
  -- sessions would march in lockstep (served first come, first served) and reach the expensive
  -- PIN step all at once, every cycle: a convoy real traffic does not make. So slot i starts its
  -- first session at step i (mod the session's length); from then on each slot keeps its phase.
  for i = 1, slots do
    sessions[i] = new_session()
    sessions[i].step = (i - 1) % #sessions[i].steps + 1
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  turn = turn % slots + 1
  local s = sessions[turn]
  local text = s.steps[s.step]:gsub("%*", "%%2A")
  local body = "sessionId=" .. s.id .. "&serviceCode=%2A384%2A123%23&networkCode=63902&phoneNumber="
      .. s.phone .. "&text=" .. text
  s.step = s.step + 1
  if s.step > #s.steps then sessions[turn] = new_session() end
  return wrk.format(nil, "/ussd", nil, body)
end

function response(status, headers, body)
  local head = body:sub(1, 4)
  if status == 200 and (head == "CON " or head == "END ") then ok = ok + 1 else bad = bad + 1 end
  if body:sub(1, 8) == "END Sent" then sent = sent + 1 end
  if body:sub(1, 16) == "END Insufficient" then refused = refused + 1 end
end

function done(summary, latency, requests)
  local totals = {ok = 0, bad = 0, sent = 0, refused = 0}
  for _, thread in ipairs(threads) do
    for key, _ in pairs(totals) do totals[key] = totals[key] + (thread:get(key) or 0) end
  end
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'WRK_JSON {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, '
      .. '"max_ms": %.3f, "socket_errors": %d, "ok": %d, "bad": %d, "sent": %d, "refused": %d}\n',
    summary.requests, seconds, summary.requests / seconds, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    totals.ok, totals.bad, totals.sent, totals.refused))
end
