-- csv: RFC 4180 reading for library files (audible-cli, Libation, ALE exports).
--
--   local rows = csv.reader(text, {max_columns = n})
--   for row, line in rows do ... end     -- row: array of cells; line: where the row starts
--   if rows.error then ... end           -- "line 12: ..." when the text broke off
--
-- Quoted fields may hold the delimiter, "" and line breaks; CRLF, LF and a UTF-8 byte
-- order mark are accepted; the delimiter (tab, ";" or ",") is the one the header line
-- uses most. Blank lines are skipped. Cells are not trimmed.
local _M = {}

local find, sub, byte, gsub, format = string.find, string.sub, string.byte, string.gsub,
  string.format
local ipairs, setmetatable = ipairs, setmetatable
local concat = table.concat

local QUOTE, CR, LF = 34, 13, 10

-- The delimiter the first line uses most (outside quotes, roughly: a header has few).
local function sniff(text, start)
  local eol = find(text, "[\r\n]", start) or #text + 1
  local line = sub(text, start, eol - 1)
  local best, most = ",", 0
  for _, d in ipairs({ "\t", ";", "," }) do
    local _, n = gsub(line, d, "")
    if n > most then best, most = d, n end
  end
  return best
end

-- A quoted field starting at the quote at i: its text and the position after it.
local function quoted(text, i, line)
  local parts, n, pos = {}, 0, i + 1
  while true do
    local q = find(text, '"', pos, true)
    if not q then return nil, line end
    n = n + 1
    parts[n] = sub(text, pos, q - 1)
    if byte(text, q + 1) == QUOTE then
      n = n + 1
      parts[n] = '"'
      pos = q + 2
    else
      local cell = concat(parts)
      local _, breaks = gsub(cell, "\n", "")
      return cell, line + breaks, q + 1
    end
  end
end

function _M.reader(text, opts)
  local max_columns = opts and opts.max_columns or 1000
  local pos = 1
  if sub(text, 1, 3) == "\239\187\191" then pos = 4 end
  local delim = sniff(text, pos)
  local stop = "[" .. (delim == "\t" and "\t" or delim) .. "\r\n]"
  local len, line = #text, 1
  local state = {}

  local function fail(msg)
    state.error = format("line %d: %s", line, msg)
    return nil
  end

  local function next_row()
    -- skip blank lines
    while pos <= len do
      local c = byte(text, pos)
      if c == CR or c == LF then
        if c == LF then line = line + 1 end
        pos = pos + 1
      else
        break
      end
    end
    if pos > len or state.error then return nil end
    local row, n, first_line = {}, 0, line
    while true do
      local cell
      if byte(text, pos) == QUOTE then
        local after
        cell, line, after = quoted(text, pos, line)
        if not cell then return fail("a quoted field is never closed") end
        pos = after
        -- text after the closing quote up to the delimiter belongs to the cell (lenient)
        local a = find(text, stop, pos)
        if a ~= pos then
          local e = (a or len + 1) - 1
          cell = cell .. sub(text, pos, e)
          pos = e + 1
        end
      else
        local a = find(text, stop, pos)
        local e = (a or len + 1) - 1
        cell = sub(text, pos, e)
        pos = e + 1
      end
      n = n + 1
      if n > max_columns then
        line = first_line
        return fail(format("more than %d columns", max_columns))
      end
      row[n] = cell
      local c = byte(text, pos)
      if c == nil then break end
      pos = pos + 1
      if c == CR then
        if byte(text, pos) == LF then pos = pos + 1 end
        line = line + 1
        break
      elseif c == LF then
        line = line + 1
        break
      end
    end
    return row, first_line
  end

  setmetatable(state, { __call = function() return next_row() end })
  state.delimiter = delim
  return state
end

return _M
