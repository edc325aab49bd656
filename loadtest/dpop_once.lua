-- Sends DPoP requests: `Authorization: DPoP <token>` with the token given after `--`, and each proof of the file
-- given next once, as the `DPoP` header. With the thread count T as the third argument, thread i sends proofs
-- i, i+T, i+2T, ... (once.lua). Requests are formatted once, in init, and there is no `response` function (see
-- tokens.lua). Size the file for the whole run: a thread that runs out sends its last proof again, which the
-- server refuses as a replay, so running out shows as non-2xx responses.
local once = dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "once.lua")
setup, request = once.setup, once.request

init = function(args)
  local authorization = "DPoP " .. args[1]
  once.load(args[2], tonumber(args[3] or "1"), function(line)
    return { ["Authorization"] = authorization, ["DPoP"] = line }
  end)
end
