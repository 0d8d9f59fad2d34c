-- 80 % window reads, 20 % appends (every fifth request), cycling over the contexts.
function request()
  local path = next_context()
  if counter % 5 == 0 then
    return append_request(path)
  end
  return read_request(path)
end
