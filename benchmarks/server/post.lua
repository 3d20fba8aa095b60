-- wrk script: POST the JSON bodies of a file (one per line) in turn.
-- wrk -s post.lua URL -- BODIES_FILE ACCEPT [API_KEY]
local bodies = {}
local n, i = 0, 0

function init(args)
    for line in io.lines(args[1]) do
        n = n + 1
        bodies[n] = line
    end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Accept"] = args[2]
    if args[3] and args[3] ~= "" then
        wrk.headers["Authorization"] = "Bearer " .. args[3]
    end
end

function request()
    i = i % n + 1
    return wrk.format(nil, nil, nil, bodies[i])
end
