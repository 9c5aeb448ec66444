/*
** bulk_format.c: validate.lua's FORMATS (date, datetime, http_url, uuid) and its parse_iso,
** ported exactly: the same texts are accepted and cleaned to the same bytes.
*/
#include <stdio.h>
#include <string.h>

#include "bulk_private.h"

static int isd(char c)
{
    return c >= '0' && c <= '9';
}
static int d2(const char *p)
{
    return (p[0] - '0') * 10 + (p[1] - '0');
}

static int valid_ymd(long y, long m, long d)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return 0;
    long dim = days[m - 1];
    if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        dim = 29;
    return d <= dim;
}

static long floor_div(long a, long b)
{
    long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static long floor_mod(long a, long b)
{
    return a - floor_div(a, b) * b;
}

static long days_from_civil(long y, long m, long d)
{
    if (m <= 2)
        y = y - 1;
    long era = floor_div(y >= 0 ? y : y - 399, 400);
    long yoe = y - era * 400;
    long mp = floor_mod(m + 9, 12);
    long doy = floor_div(153 * mp + 2, 5) + d - 1;
    long doe = yoe * 365 + floor_div(yoe, 4) - floor_div(yoe, 100) + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(long z, long *py, long *pm, long *pd)
{
    z = z + 719468;
    long era = floor_div(z >= 0 ? z : z - 146096, 146097);
    long doe = z - era * 146097;
    long yoe =
        floor_div(doe - floor_div(doe, 1460) + floor_div(doe, 36524) - floor_div(doe, 146096), 365);
    long y = yoe + era * 400;
    long doy = doe - (365 * yoe + floor_div(yoe, 4) - floor_div(yoe, 100));
    long mp = floor_div(5 * doy + 2, 153);
    long d = doy - floor_div(153 * mp + 2, 5) + 1;
    long m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y = y + 1;
    *py = y, *pm = m, *pd = d;
}

struct iso {
    long y, m, d, secs, offset;
    int has_time, has_offset;
    const char *frac;
    size_t flen;
};

static int parse_iso(const char *s, size_t n, struct iso *o)
{
    memset(o, 0, sizeof *o);
    if (n < 10 || !isd(s[0]) || !isd(s[1]) || !isd(s[2]) || !isd(s[3]) || s[4] != '-' ||
        !isd(s[5]) || !isd(s[6]) || s[7] != '-' || !isd(s[8]) || !isd(s[9]))
        return 0;
    o->y = d2(s) * 100 + d2(s + 2), o->m = d2(s + 5), o->d = d2(s + 8);
    if (!valid_ymd(o->y, o->m, o->d))
        return 0;
    const char *r = s + 10;
    size_t rn = n - 10, zoff;
    if (rn == 0)
        return 1;
    if (r[0] != 'T' && r[0] != 't' && r[0] != ' ')
        return 0;
    long hh, mi, ss;
    if (rn >= 9 && isd(r[1]) && isd(r[2]) && r[3] == ':' && isd(r[4]) && isd(r[5]) && r[6] == ':' &&
        isd(r[7]) && isd(r[8])) {
        hh = d2(r + 1), mi = d2(r + 4), ss = d2(r + 7);
        size_t p = 9;
        if (p < rn && r[p] == '.')
            p++;
        while (p < rn && isd(r[p]))
            p++;
        o->frac = r + 9, o->flen = p - 9;
        zoff = p;
    } else if (rn >= 6 && isd(r[1]) && isd(r[2]) && r[3] == ':' && isd(r[4]) && isd(r[5])) {
        hh = d2(r + 1), mi = d2(r + 4), ss = 0;
        o->frac = "", o->flen = 0;
        zoff = 6;
    } else {
        return 0;
    }
    if (hh > 23 || mi > 59 || ss > 59 || (o->flen == 1 && o->frac[0] == '.'))
        return 0;
    if (o->flen > 7)
        o->flen = 7;
    const char *z = r + zoff;
    size_t zn = rn - zoff;
    if (zn == 1 && (z[0] == 'Z' || z[0] == 'z')) {
        o->has_offset = 1;
    } else if (zn > 0) {
        long zh, zm;
        if (z[0] != '+' && z[0] != '-')
            return 0;
        if (zn == 6 && isd(z[1]) && isd(z[2]) && z[3] == ':' && isd(z[4]) && isd(z[5]))
            zh = d2(z + 1), zm = d2(z + 4);
        else if (zn == 5 && isd(z[1]) && isd(z[2]) && isd(z[3]) && isd(z[4]))
            zh = d2(z + 1), zm = d2(z + 3);
        else if (zn == 3 && isd(z[1]) && isd(z[2]))
            zh = d2(z + 1), zm = 0;
        else
            return 0;
        if (zh > 14 || zm > 59)
            return 0;
        o->has_offset = 1;
        o->offset = (zh * 60 + zm) * (z[0] == '-' ? -1 : 1);
    }
    o->has_time = 1;
    o->secs = hh * 3600 + mi * 60 + ss;
    return 1;
}

static const char DATE_MSG[] = "must be an ISO-8601 date (YYYY-MM-DD)";
static const char DATETIME_MSG[] = "must be an ISO-8601 date or date-time";

int bulk_format_date(const char *s, size_t n, char *out, const char **msg)
{
    struct iso o;
    int ok = parse_iso(s, n, &o);
    if (ok && n == 10) { /* YYYY-MM-DD: already clean */
        memcpy(out, s, n);
        return (int)n;
    }
    if (!ok) {
        *msg = DATE_MSG;
        return -1;
    }
    return snprintf(out, 64, "%04ld-%02ld-%02ld", o.y, o.m, o.d);
}

/* YYYY-MM-DDTHH:MM:SS.mmmZ: the form the datetime format cleans to (and what the extension
** sends), which parse_iso would give back unchanged. */
static int canonical_datetime(const char *s, size_t n)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (n != 24)
        return 0;
    for (size_t i = 0; i < 24; i++)
        if (shape[i] == 'd' ? !isd(s[i]) : s[i] != shape[i])
            return 0;
    return 1;
}

int bulk_format_datetime(const char *s, size_t n, char *out, const char **msg)
{
    struct iso o;
    if (canonical_datetime(s, n) && parse_iso(s, n, &o)) {
        memcpy(out, s, n);
        return (int)n;
    }
    if (!parse_iso(s, n, &o)) {
        *msg = DATETIME_MSG;
        return -1;
    }
    long y = o.y, mo = o.m, d = o.d, secs = o.secs;
    if (o.has_offset && o.offset != 0) {
        secs = secs - o.offset * 60;
        long days = days_from_civil(y, mo, d) + floor_div(secs, 86400);
        secs = floor_mod(secs, 86400);
        civil_from_days(days, &y, &mo, &d);
        if (y < 1 || y > 9999) {
            *msg = DATETIME_MSG;
            return -1;
        }
    }
    char frac[16];
    if (o.flen < 4) {
        /* "." .. sub(sub(frac, 2) .. "000", 1, 3) */
        char tail[8] = "";
        if (o.flen > 1)
            memcpy(tail, o.frac + 1, o.flen - 1);
        strcat(tail, "000");
        snprintf(frac, sizeof frac, ".%.3s", tail);
    } else {
        snprintf(frac, sizeof frac, "%.*s", (int)o.flen, o.frac);
    }
    return snprintf(out, 64, "%04ld-%02ld-%02ldT%02ld:%02ld:%02ld%sZ", y, mo, d, secs / 3600,
                    secs % 3600 / 60, secs % 60, frac);
}

/* ^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\0-\32\127][^\0-\32\127]*$ */
int bulk_format_http_url(const char *s, size_t n)
{
    size_t p = 4;
    if (n < 4 || (s[0] | 32) != 'h' || (s[1] | 32) != 't' || (s[2] | 32) != 't' ||
        (s[3] | 32) != 'p')
        return 0;
    if (p < n && (s[p] | 32) == 's')
        p++;
    if (n - p < 4 || memcmp(s + p, "://", 3))
        return 0;
    p += 3;
    unsigned char c = (unsigned char)s[p];
    if (c == '/' || c == '?' || c == '#')
        return 0;
    for (; p < n; p++) {
        c = (unsigned char)s[p];
        if (c <= 32 || c == 127)
            return 0;
    }
    return 1;
}

static int is_hex(char c)
{
    return isd(c) || ((c | 32) >= 'a' && (c | 32) <= 'f');
}

int bulk_format_uuid(const char *s, size_t n)
{
    if (n != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23 ? s[i] != '-' : !is_hex(s[i]))
            return 0;
    }
    return 1;
}
