/*
** fuzz_upload: host.upload.json's streaming reader on its own, where fuzz_import cannot
** reach: every keep mode (whole items, a keep tree), the depth and values-per-item caps,
** and the 64 KiB chunk boundary falling anywhere in the document. Input: byte 1 picks the
** options, bytes 2-3 where the boundary falls, the rest is the document. Oracles: the
** items (and the error code, if any) are the same with the boundary inside the document
** as without it, and an error is sticky (next() repeats it).
*/
#include <stdint.h>

#include "fuzz_lua.h"

static const char *INIT =
    "local upload = host.upload\n"
    "local CHUNK = 65536\n"
    "local TREE = { asin = true, title = true, authors = { name = true, asin = true },\n"
    "               series = { title = true, sequence = true }, product = { asin = true } }\n"
    "local function read(s, opts)\n"
    "  local r, out = upload.json(s, 1, #s, opts), {}\n"
    "  while true do\n"
    "    local key, item, code = r:next()\n"
    "    if code then\n"
    "      local _, item2, code2 = r:next()\n"
    "      if code2 ~= code or item2 ~= item then error('the error is not sticky', 0) end\n"
    "      out.code = code\n"
    "      return out\n"
    "    end\n"
    "    if item == nil then return out end\n"
    "    out[#out + 1] = { key or '', item }\n"
    "  end\n"
    "end\n"
    "local function same(a, b)\n"
    "  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "function fuzz(input)\n"
    "  if #input < 4 then return end\n"
    "  local sel, at = input:byte(1), (input:byte(2) << 8 | input:byte(3))\n"
    "  local doc = input:sub(4)\n"
    "  local opts = { keep = sel & 1 ~= 0 and TREE or nil, depth = sel & 2 ~= 0 and 4 or 64,\n"
    "                 values = sel & 4 ~= 0 and 8 or 100000, limit = 1 << 20 }\n"
    "  local whole = read(doc, opts)\n"
    "  if doc:byte(1) == 0x1f then return end   -- gzip: padding would unmake it\n"
    "  local k = at % #doc + 1                     -- the chunk ends after doc's k-th byte\n"
    "  local split = read(string.rep(' ', CHUNK - k) .. doc, opts)\n"
    "  if not same(whole, split) then\n"
    "    error('the items differ with the chunk boundary after byte ' .. k, 0)\n"
    "  end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_call(INIT, data, size);
    return 0;
}
