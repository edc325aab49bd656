-- Sends each bearer token of the file given after `--` once. With the thread count T as the next argument,
-- thread i sends tokens i, i+T, i+2T, ... (once.lua) and stops once all of its tokens were answered.
local once = dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "once.lua")
local answered = 0
setup, request = once.setup, once.request

init = function(args)
  once.load(args[1], tonumber(args[2] or "1"), function(line)
    return { ["Authorization"] = "Bearer " .. line }
  end)
end

response = function(status, headers, body)
  answered = answered + 1
  if answered >= #once.requests then wrk.thread:stop() end
end
