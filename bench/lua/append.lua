-- POST one ~28-token text message per request, cycling over the contexts.
function request()
  return append_request(next_context())
end
