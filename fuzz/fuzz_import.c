/*
** fuzz_import: a library file (POST /api/import) as the server reads it, up to the
** database: host.upload's sniffing and streaming reader (gzip inflated as it reads, yajl
** keeping only the importers' fields) or the CSV/TSV reader, the format sniffing, every
** importer in lua/importers/ and the sync validation (import_file.prepare). A refusal
** must be an intentional HTTP error below 500; anything else aborts.
*/
#include <stdint.h>

#include "fuzz_lua.h"

/* host.modules comes from the VM's script snapshot in the server; here it lists lua/<dir>/
   (sorted, as the server's is). The byte cap is lowered so a gzip bomb costs a few steps. */
static const char *INIT =
    "function host.modules(dir)\n"
    "  local names, p = {}, assert(io.popen('ls lua/' .. dir))\n"
    "  for f in p:lines() do\n"
    "    local n = f:match('^([%w_]+)%.lua$')\n"
    "    if n then names[#names + 1] = dir .. '.' .. n end\n"
    "  end\n"
    "  p:close()\n"
    "  table.sort(names)\n"
    "  return names\n"
    "end\n"
    "host.config.import_file_max_bytes = 1048576\n"
    "local import_file = require('import_file')\n"
    "assert(#import_file.importers >= 5, 'the importers did not load')\n"
    "local OPTS = { {}, { source = 'LIBRARY' }, { source = 'WISHLIST' } }\n"
    "function fuzz(file)\n"
    "  local opts = OPTS[#file % 3 + 1]\n"
    "  opts.marketplace = 'us'\n"
    "  local ok, err = pcall(import_file.prepare, file, 1, #file, opts)\n"
    "  if not ok and (type(err) ~= 'table' or type(err.status) ~= 'number' or err.status >= 500) then\n"
    "    error('unexpected refusal: ' .. tostring(type(err) == 'table' and err.message or err), 0)\n"
    "  end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_call(INIT, data, size);
    return 0;
}
