-- Picks a bearer token per request from the file given after `--`: at random, or with "sequential" and the
-- thread count as further arguments, each token once in turn (thread i sends tokens i, i+T, i+2T, ...;
-- a thread stops once all of its tokens were answered).
local tokens, mode, next_index, step, share, answered = {}, "random", 1, 1, 0, 0
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end

init = function(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  mode = args[2] or "random"
  math.randomseed(os.time() + (id or 0))
  next_index, step = id or 1, tonumber(args[3] or "1")
  share = math.floor((#tokens - next_index) / step) + 1
end

request = function()
  local token
  if mode == "sequential" then
    token = tokens[math.min(next_index, #tokens)]
    next_index = next_index + step
  else
    token = tokens[math.random(#tokens)]
  end
  return wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. token })
end

response = function(status, headers, body)
  answered = answered + 1
  if mode == "sequential" and answered >= share then wrk.thread:stop() end
end
