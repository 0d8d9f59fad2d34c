-- GET the LLM window, cycling over the contexts.
function request()
  return read_request(next_context())
end
