/*
** fuzz_route: a request target from the first byte: the raw-target checks
** (http_frame_check_target), the server's %-decoding of the path (web_static_unescape, the
** unescape callback it gives libmicrohttpd) and the router's match against every real route file. A target must be refused, or
** matched to a route, or answered not_found / method_not_allowed: never an error.
*/
#include <microhttpd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/http_frame.h"
#include "../core/web_static.h"
#include "fuzz_lua.h"

static const char *INIT =
    "local router = require('router').new()\n"
    "local p = io.popen('ls routes/*.lua')\n"
    "for file in p:lines() do\n"
    "  for _, route in ipairs(dofile(file)) do router:add(route) end\n"
    "end\n"
    "p:close()\n"
    "local METHODS = {'GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'}\n"
    "function fuzz(path)\n"
    "  local method = METHODS[#path % #METHODS + 1]\n"
    "  local route, why = router:match(method, path)\n"
    "  if route == nil and why ~= 'not_found' and why ~= 'method_not_allowed' then\n"
    "    error('router answered ' .. tostring(why), 0)\n"
    "  end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *target = malloc(size + 1);
    if (!target)
        return 0;
    memcpy(target, data, size);
    target[size] = '\0';
    struct http_frame_limits lim = {8192, 200, 32768, 100};
    struct http_frame_verdict v;
    if (strlen(target) == size && http_frame_check_target(target, &lim, &v) == 0) {
        char *q = strchr(target, '?');
        if (q)
            *q = '\0';
        size_t n = web_static_unescape(NULL, NULL, target);
        if (memchr(target, '\0', n))
            abort();            /* a NUL survived the %00 check */
        fuzz_lua_call(INIT, (const unsigned char *)target, n);
    }
    free(target);
    return 0;
}
