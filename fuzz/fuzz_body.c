/*
** fuzz_body: the import's request body path as the server runs it: gzip inflate (bounded,
** as http_server.c does), JSON decode, then the sync payload's validation
** (sync_import.prepare). A refusal must be an intentional HTTP error (a table with a
** status); anything else would be a 500 in production and aborts here.
*/
#include <stdint.h>
#include <stdlib.h>

#include "../core/gzip.h"
#include "fuzz_lua.h"

static const char *INIT =
    "local json = require('json')\n"
    "local sync = require('sync_import')\n"
    "function fuzz(text)\n"
    "  local body = json.decode(text)\n"
    "  if body == nil then return end\n"
    "  local ok, err = pcall(sync.prepare, body)\n"
    "  if not ok and (type(err) ~= 'table' or type(err.status) ~= 'number' or err.status >= 500) then\n"
    "    error('unexpected refusal: ' .. tostring(type(err) == 'table' and err.message or err), 0)\n"
    "  end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *out;
    size_t outlen;
    /* Input that is gzip goes through inflate; anything else is taken as the JSON itself. */
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        if (gzip_inflate((const char *)data, size, 1 << 20, &out, &outlen) != 0)
            return 0;
        fuzz_lua_call(INIT, (const unsigned char *)out, outlen);
        free(out);
        return 0;
    }
    fuzz_lua_call(INIT, data, size);
    return 0;
}
