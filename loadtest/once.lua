-- What tokens_once.lua and dpop_once.lua share: each thread takes its share of a file's lines (with the thread
-- count T, thread i takes lines i, i+T, i+2T, ...), formats one request per line in init, and sends each once, in
-- order. A thread that runs out sends its last request again. Load it with `dofile(here .. "once.lua")`, `here`
-- the folder of the script wrk runs (wrk's package.path is not that folder).
local once = { requests = {} }
local counter, next_index = 0, 1

once.setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end

-- This thread's share of the lines of `path`, with `step` threads in all: `headers(line)` is each request's.
once.load = function(path, step, headers)
  local index = 0
  for line in io.lines(path) do
    index = index + 1
    if (index - (id or 1)) % step == 0 then
      once.requests[#once.requests + 1] = wrk.format("GET", wrk.path, headers(line))
    end
  end
end

once.request = function()
  local formatted = once.requests[math.min(next_index, #once.requests)]
  next_index = next_index + 1
  return formatted
end

return once
