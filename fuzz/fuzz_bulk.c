/*
** fuzz_bulk: the sync body through host.bulk (core/bulk.c) with sync_rules.ITEM compiled,
** and the same bytes through lua-cjson + validate.lua in the same state: the two must agree
** (spec/support/bulk_diff.lua) on every element, problem and presence bit. An input that
** starts with '!' is wrapped as {"titles": [<rest>]}, so mutations reach the elements.
** host.bulk may answer "json" for a text only lua-cjson reads (0x10, NaN, raw control
** characters): the route hands those to cjson, so that is no disagreement.
*/
#include <stdint.h>

#include "fuzz_lua.h"

static const char *INIT =
    "package.path = './?.lua;' .. package.path\n"
    "local rules = require('sync_rules')\n"
    "local bulk_diff = require('spec.support.bulk_diff')\n"
    "local SPEC = assert(host.bulk.compile(rules.ITEM, { fields = bulk_diff.FIELDS,\n"
    "  blank = rules.PLACEHOLDERS, sent = 'asin', shapes = require('validate').shapes }))\n"
    "function fuzz(s)\n"
    "  if s:sub(1, 1) == '!' then s = '{\"titles\":[' .. s:sub(2) .. ']}' end\n"
    "  local problem = bulk_diff.compare(SPEC, s, 40, nil, nil, { cjson_only = true })\n"
    "  if problem then error(problem, 0) end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_call(INIT, data, size);
    return 0;
}
