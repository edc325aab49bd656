-- Sends each bearer token of the file given after `--` once. With the thread count T as the next argument,
-- thread i sends tokens i, i+T, i+2T, ... and stops once all of its tokens were answered.
local requests, next_index, answered = {}, 1, 0
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end

init = function(args)
  local step, index = tonumber(args[2] or "1"), 0
  for line in io.lines(args[1]) do
    index = index + 1
    if (index - (id or 1)) % step == 0 then
      requests[#requests + 1] = wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. line })
    end
  end
end

request = function()
  local formatted = requests[math.min(next_index, #requests)]
  next_index = next_index + 1
  return formatted
end

response = function(status, headers, body)
  answered = answered + 1
  if answered >= #requests then wrk.thread:stop() end
end
