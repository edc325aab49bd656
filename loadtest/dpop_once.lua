-- Sends DPoP requests: `Authorization: DPoP <token>` with the token given after `--`, and each proof of the file
-- given next once, as the `DPoP` header. With the thread count T as the third argument, thread i sends proofs
-- i, i+T, i+2T, ... Requests are formatted once, in init, and there is no `response` function (see tokens.lua).
-- Size the file for the whole run: a thread that runs out sends its last proof again, which the server refuses
-- as a replay, so running out shows as non-2xx responses.
local requests, next_index = {}, 1
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end

init = function(args)
  local authorization, step, index = "DPoP " .. args[1], tonumber(args[3] or "1"), 0
  for line in io.lines(args[2]) do
    index = index + 1
    if (index - (id or 1)) % step == 0 then
      requests[#requests + 1] = wrk.format("GET", wrk.path, { ["Authorization"] = authorization, ["DPoP"] = line })
    end
  end
end

request = function()
  local formatted = requests[math.min(next_index, #requests)]
  next_index = next_index + 1
  return formatted
end
