/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tiny CBOR writer that multipart-core (RFC 8710) needs: one definite
 * array of alternating unsigned integers (content formats) and byte strings.
 */
#include "server.h"

#include <stdlib.h>
#include <string.h>

/* Major type (3 bits) and argument, shortest form (RFC 8949 §3). */
static size_t head(uint8_t *p, unsigned major, uint64_t v)
{
    uint8_t mt = (uint8_t)(major << 5);
    if (v < 24) {
        p[0] = mt | (uint8_t)v;
        return 1;
    }
    if (v <= 0xff) {
        p[0] = mt | 24;
        p[1] = (uint8_t)v;
        return 2;
    }
    if (v <= 0xffff) {
        p[0] = mt | 25;
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)v;
        return 3;
    }
    if (v <= 0xffffffffu) {
        p[0] = mt | 26;
        p[1] = (uint8_t)(v >> 24);
        p[2] = (uint8_t)(v >> 16);
        p[3] = (uint8_t)(v >> 8);
        p[4] = (uint8_t)v;
        return 5;
    }
    p[0] = mt | 27;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (uint8_t)(v >> (56 - 8 * i));
    return 9;
}

int srv_cbor_multipart(const struct srv_part *parts, size_t n, uint8_t **out, size_t *out_len)
{
    size_t cap = 9, i, used;
    uint8_t *buf;

    for (i = 0; i < n; i++) {
        if (parts[i].len > SIZE_MAX / 2 - cap - 18)
            return -1;
        cap += 9 + 9 + parts[i].len;
    }
    buf = malloc(cap);
    if (buf == NULL)
        return -1;
    used = head(buf, 4, 2 * (uint64_t)n); /* array */
    for (i = 0; i < n; i++) {
        used += head(buf + used, 0, parts[i].cf);  /* unsigned integer */
        used += head(buf + used, 2, parts[i].len); /* byte string */
        if (parts[i].len > 0)
            memcpy(buf + used, parts[i].data, parts[i].len);
        used += parts[i].len;
    }
    *out = buf;
    *out_len = used;
    return 0;
}
