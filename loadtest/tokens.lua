-- Sends each request with a bearer token picked at random from the file given after `--`.
-- Requests are formatted once, in init, and there is no `response` function (with one, wrk hands every
-- response's headers and body to Lua): wrk shares the machine's cores with the server it drives, so the less
-- CPU it spends per request, the less it takes from the server.
local requests = {}

setup = function(thread)
  thread:set("seed", math.random(1, 1000000))
end

init = function(args)
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. line })
  end
  math.randomseed(os.time() + (seed or 0))
end

request = function()
  return requests[math.random(#requests)]
end
