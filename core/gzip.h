/*
** gzip: zlib inflate for request bodies (bounded) and deflate for responses.
*/
#ifndef SHELFSYNC_GZIP_H
#define SHELFSYNC_GZIP_H

#include <stddef.h>

#define GZIP_ERR_DATA   -1   /* not gzip, or corrupt */
#define GZIP_ERR_LIMIT  -2   /* would inflate past the limit */
#define GZIP_ERR_NOMEM  -3

/*
** Inflates gzip (or zlib) data, stopping as soon as the output would pass limit, so a
** bomb costs at most limit bytes. On 0, *out (malloc'd, caller frees, NUL-terminated) and
** *outlen hold the result.
*/
int gzip_inflate(const char *in, size_t inlen, size_t limit, char **out, size_t *outlen);

/* Deflates into gzip format. On 0, *out is malloc'd (caller frees). */
int gzip_deflate(const char *in, size_t inlen, char **out, size_t *outlen);

#endif
